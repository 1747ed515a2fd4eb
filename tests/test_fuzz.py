"""Fuzzing every stage's input: whatever comes in ends as a record or a one-line error, never a traceback.

Hypothesis draws JSONL inputs that mix valid records with broken lines (random bytes, invalid UTF-8,
non-objects, deep nesting, NaN and Infinity literals, lone surrogates, NUL bytes, wrong types, missing
fields, error records from upstream) and runs each stage in-process. Every input line gets a unique
key (its id, or its line number), so each output can be traced back to the line it came from:

- the exit status is 0, 1 or 2, and stderr never holds a traceback;
- with --on-error emit every line is accounted for: an output record derived from it, an error record
  naming its line, or (gpv-chunk, gpv-parse) a documented empty result; nothing else comes out and no
  id repeats;
- with --on-error skip the output is emit's minus its error records, and stderr names exactly the lines
  that emit turned into error records.

Then a few hand-written extremes: a 50 MB line, nesting 10,000 deep, a 20 MB text under the limit.
`pytest -s tests/test_fuzz.py` prints the number of cases run.
"""

import collections
import math
import re

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpvtools.commands import aggregate, chunk, parse, score, validate
from gpvtools.streaming.resume import ERROR_FIELD

from .conftest import SHARED

LEXICON = str(SHARED / "data" / "dictionaries" / "schwartz-values-en.json")
EXAMPLES = 400  # per property; each runs the stage twice (emit and skip)
CASES = collections.Counter()
LINES = collections.Counter()  # input lines fuzzed, and how they ended (emit runs of the record stages)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])  # invoke keeps no state
ERROR_LINE = re.compile(r"^(gpv-[a-z]+(?: [a-z]+)?): error: line (\d+): ")
INT_ID_BASE = 1_000_000  # integer ids live far from line numbers, so their keys never collide


@pytest.fixture(scope="module", autouse=True)
def count_cases():
    yield
    total = sum(CASES.values())
    detail = ", ".join(f"{name} {n}" for name, n in sorted(CASES.items()))
    print(f"\nfuzz: {total} cases run ({detail}); record stages' lines: {LINES['in']} in, "
          f"{LINES['output']} gave records, {LINES['error']} error records, {LINES['empty']} documented empty, {LINES['upstream']} upstream errors passed on")


# --- strategies ----------------------------------------------------------------------------------------------

JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
WORDS = st.sampled_from(["I", "value", "honesty", "and", "my", "family", "deeply", "power", "is", "nothing",
                         "we", "help", "others", "every", "day", "tradition", "matters", "friends", "win"])
SENTENCE = st.lists(WORDS, min_size=3, max_size=12).map(lambda ws: " ".join(ws).capitalize() + ".")
PROSE = st.lists(SENTENCE, min_size=1, max_size=8).map(" ".join)
# Any text at all: control characters, NULs, other scripts, blank; never a surrogate (orjson cannot write one).
ANY_TEXT = st.text(max_size=300) | st.sampled_from(["", "   ", "\n\n", "\x00", "a\x00b", "\u200b", "🙂" * 50])
SCORE = st.none() | st.floats(-1, 1) | st.sampled_from([0.0, -0.0, 5e-324, 1.0, -1.0, 1e308, 2, "0.5", True, [0.5]])
VALUE_NAMES = st.sampled_from(["Power", "Benevolence", "Tradition"])


def json_line(obj):
    return orjson.dumps(obj)


@st.composite
def id_field(draw):
    """(how the id is given, a function of the line number giving the record's id field or None)."""
    kind = draw(st.sampled_from(["absent", "string", "int", "float", "bad"]))
    bad = draw(st.sampled_from([[1], {"x": 1}, True, None]))
    return kind, {"absent": lambda n: None, "string": lambda n: f"L{n}", "int": lambda n: INT_ID_BASE + n,
                  "float": lambda n: INT_ID_BASE + n + 0.5, "bad": lambda n: bad}[kind]


def key_of(kind, line):
    """The key a stage names a line's outputs by (None: the id itself is bad)."""
    return {"absent": str(line), "string": f"L{line}", "int": str(INT_ID_BASE + line),
            "float": str(INT_ID_BASE + line + 0.5), "bad": None}[kind]


@st.composite
def broken_line(draw):
    """A line that is not a usable record at all, as bytes without a newline."""
    kind = draw(st.sampled_from(["bytes", "utf8", "nonobject", "deep", "literal", "surrogate", "nul", "blank",
                                 "truncated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=80)).replace(b"\n", b" ")
    if kind == "utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80\x80"]))
        return b'{"text": "caf' + bad + b'"}'
    if kind == "nonobject":
        return json_line(draw(JSON_SCALARS | st.lists(JSON_SCALARS, max_size=3)))
    if kind == "deep":
        depth = draw(st.integers(1, 3000))
        inner = draw(st.sampled_from([(b"[" * depth, b"]" * depth), (b'{"a":' * depth, b"}" * depth)]))
        return b'{"id": "deep", "text": ' + inner[0] + b"1" + inner[1] + b"}"
    if kind == "literal":
        return b'{"text": "x", "score": ' + draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400",
                                                                   b"nan", b"undefined"])) + b"}"
    if kind == "surrogate":
        return b'{"text": "' + draw(st.sampled_from([b"\\ud800", b"\\udfff", b"a\\ud83d", b"\\ud83d\\u0041"])) + b'"}'
    if kind == "nul":
        return b'{"text": "a' + b"\x00" * draw(st.integers(1, 3)) + b'b"}'
    if kind == "blank":
        return draw(st.sampled_from([b"", b" ", b"\t", b"\r", b" \r"]))
    good = json_line({"id": "t", "text": "I value honesty."})
    return good[: draw(st.integers(1, len(good) - 1))]


def upstream_error(line):
    return json_line({"id": f"U{line}", "fuzz_line": line,
                      ERROR_FIELD: {"command": "gpv-upstream", "line": 1, "error": "boom"}})


@st.composite
def text_record(draw, field, huge=300):
    """An object for a text stage: a good record, one with odd text, or one with the field wrong or missing.

    "huge" repeats some prose HUGE times. gpv-parse gets less: each perception record carries its chunk's
    text, so its output grows with the square of an (unchunked) text's length.
    """
    kind, make_id = draw(id_field())
    text_kind = draw(st.sampled_from(["prose", "any", "huge", "wrong", "missing"]))
    text = {"prose": PROSE, "any": ANY_TEXT, "huge": PROSE.map(lambda p: p * huge),
            "wrong": JSON_SCALARS.filter(lambda v: not isinstance(v, str)) | st.lists(JSON_SCALARS),
            "missing": st.none()}[text_kind]
    text = draw(text)
    extra = draw(st.dictionaries(st.sampled_from(["author", "gender", "n", "meta"]), JSON_VALUES, max_size=2))

    def make(line):
        record = dict(extra)
        if (i := make_id(line)) is not None or kind == "bad":
            record["id"] = i
        if text_kind != "missing":
            record[field] = text
        return json_line(record), key_of(kind, line)

    return make


@st.composite
def scored_record(draw):
    """An object for gpv-aggregate / gpv-validate: scored values, often odd; ids unique per line."""
    kind, make_id = draw(id_field())
    names = draw(st.lists(VALUE_NAMES, min_size=0, max_size=3, unique=True))
    values = {n: draw(st.fixed_dictionaries({"relevance": st.floats(0, 1), "score": SCORE}) |
                      JSON_VALUES) for n in names}
    odd = draw(st.sampled_from([None, "values-missing", "values-wrong", "scorer-wrong", "group_by"]))
    scorer = draw(st.sampled_from(["x:y", "x:y", "x:z", 7, None]))
    gender = draw(st.sampled_from(["m", "f", None, 3]))
    wrong_values = draw(JSON_SCALARS | st.lists(JSON_SCALARS))

    def make(line):
        record = {"gender": gender, "scorer": scorer, "values": values}
        if (i := make_id(line)) is not None or kind == "bad":
            record["id"] = i
        if odd == "values-missing":
            del record["values"]
        elif odd == "values-wrong":
            record["values"] = wrong_values
        elif odd == "scorer-wrong":
            del record["scorer"]
        elif odd == "group_by":
            record.update(group_by=["id"], n_perceptions=1)
        return json_line(record), key_of(kind, line)

    return make


@st.composite
def jsonl_input(draw, record):
    """(input bytes, {line: key or None}, {line: 'record' | 'broken' | 'upstream'})."""
    makers = draw(st.lists(st.one_of(record.map(lambda m: ("record", m)),
                                     broken_line().map(lambda b: ("broken", b)),
                                     st.just(("upstream", None))), max_size=12))
    lines, keys, kinds = [], {}, {}
    for n, (kind, what) in enumerate(makers, 1):
        if kind == "record":
            data, keys[n] = what(n)
        elif kind == "upstream":
            data, keys[n] = upstream_error(n), None
        else:
            data, keys[n] = what, str(n)
        kinds[n] = kind
        lines.append(data)
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    # The last line may lack its newline, unless it is empty (then it would be no line at all).
    data = ending.join(lines) + (ending if lines and (not lines[-1] or draw(st.booleans())) else b"")
    return data, keys, kinds


# --- the properties --------------------------------------------------------------------------------------------

def run(invoke, command, args, data):
    result = invoke(command, args, data)
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    for line in result.stderr.splitlines():
        assert line.startswith(f"{command.name}: "), line
    return result


def records(stdout):
    return [orjson.loads(line) for line in stdout.split("\n") if line]  # not splitlines: U+0085 is data


def input_line(data, n):
    """Line N (from 1) of the input bytes, without its ending (records are JSON: no raw newline inside)."""
    line = data.split(b"\n")[n - 1]
    return line[:-1] if line.endswith(b"\r") else line


def error_lines(stderr, command):
    found = []
    for line in stderr.splitlines():
        m = ERROR_LINE.match(line)
        if m and m.group(1) == command:
            found.append(int(m.group(2)))
    return found


def check_emit_and_skip(invoke, command, args, data, keys, kinds, source_of, empty_ok=lambda r, n: False):
    """Run with emit and with skip; return the emit run's (outputs, error lines, lines without output)."""
    emit = run(invoke, command, args + ["--on-error", "emit"], data)
    skip = run(invoke, command, args + ["--on-error", "skip"], data)
    out = records(emit.stdout)
    errors = [r for r in out if ERROR_FIELD in r and r[ERROR_FIELD]["command"] == command.name]
    upstream = [r for r in out if ERROR_FIELD in r and r[ERROR_FIELD]["command"] == "gpv-upstream"]
    made = [r for r in out if ERROR_FIELD not in r]
    err_lines = [r[ERROR_FIELD]["line"] for r in errors]
    assert len(err_lines) == len(set(err_lines))
    assert sorted(r["fuzz_line"] for r in upstream) == [n for n, k in kinds.items() if k == "upstream"]
    # Each output names the line it came from; none is orphaned or repeated.
    key_line = {}
    for n, key in keys.items():
        for k in {key, str(n)} - {None}:
            key_line.setdefault(k, n)
    ids = [r["id"] for r in made]
    assert len(ids) == len(set(ids)), "duplicate output ids"
    produced = collections.Counter()
    for r in made:
        source = source_of(r)
        assert source in key_line, f"output {r['id']!r} from no input line"
        produced[key_line[source]] += 1
    assert not set(produced) & set(err_lines), "a line gave both output and an error record"
    silent = [n for n in keys if n not in produced and n not in err_lines and kinds[n] != "upstream"]
    # Lines without an output or an error record must be ones the stage may leave empty.
    for n in silent:
        assert kinds[n] == "record" and empty_ok(emit, n), f"line {n} was dropped silently"
    assert emit.exit_code == (1 if err_lines else 0)
    LINES.update(**{"in": len(keys), "output": len(produced), "error": len(err_lines), "empty": len(silent),
                     "upstream": len(upstream)})
    # skip: the same records, the error records left out, and each bad line named on stderr.
    assert skip.exit_code == emit.exit_code
    assert skip.stdout.encode() == b"".join(orjson.dumps(r) + b"\n" for r in out if r not in errors)
    assert sorted(error_lines(skip.stderr, command.name)) == sorted(err_lines)
    return made, err_lines, silent


@pytest.mark.slow
@FUZZ
@given(jsonl_input(text_record("text")))
def test_fuzz_chunk(invoke, case):
    data, keys, kinds = case
    CASES["gpv-chunk"] += 1

    def blank(result, n):  # documented: blank text gives no chunk and a note naming the line
        return f"gpv-chunk: line {n}: text of " in result.stderr

    made, _, _ = check_emit_and_skip(invoke, chunk.main, ["-t", "words", "-n", "20"], data, keys, kinds,
                                     lambda r: r["id"][: -len(f"#c{r['chunk']}")], blank)
    for r in made:
        assert 0 <= r["chunk"] < r["n_chunks"] and 0 < r["tokens"] <= 20


@pytest.mark.slow
@FUZZ
@given(jsonl_input(text_record("text", huge=10)))
def test_fuzz_parse_sentences(invoke, case):
    data, keys, kinds = case
    CASES["gpv-parse"] += 1

    def no_sentence(result, n):
        """Documented: --backend sentences makes every sentence a perception (a piece of fewer than three
        words joins its neighbour), so only a string text (a missing or wrong one is an error) without a
        letter or digit gives none."""
        text = orjson.loads(input_line(data, n)).get("text")
        return isinstance(text, str) and re.search(r"[^\W_]", text) is None

    made, _, silent = check_emit_and_skip(invoke, parse.main, ["--backend", "sentences"], data, keys, kinds,
                                          lambda r: r["id"][: -len(f"#p{r['perception_index']}")], no_sentence)
    # The chunks left without perceptions are exactly those the summary counts.
    emit = run(invoke, parse.main, ["--backend", "sentences", "--on-error", "emit"], data)
    if made or silent:
        assert f"; {len(silent)} without any" in emit.stderr
    for r in made:
        assert r["perception"].strip() and r["perception_index"] < r["n_perceptions"]
        start, end = r["span"]  # the perception is its chunk's text at its span, as it stands
        assert r["perception"] == " ".join(r["text"][start:end].split()) and r["parse"] == "sentence"


@pytest.mark.slow
@FUZZ
@given(jsonl_input(text_record("text")))
def test_fuzz_score_dictionary(invoke, case):
    data, keys, kinds = case
    CASES["gpv-score"] += 1
    made, _, _ = check_emit_and_skip(invoke, score.main, ["-m", LEXICON, "--text-field", "text"], data, keys,
                                     kinds, lambda r: r["id"])
    for r in made:
        for entry in r["values"].values():
            assert entry["score"] is None or 0 <= entry["score"] <= 1


@pytest.mark.slow
@FUZZ
@given(jsonl_input(scored_record()))
def test_fuzz_aggregate(invoke, case):
    data, keys, kinds = case
    CASES["gpv-aggregate"] += 1
    emit = run(invoke, aggregate.main, ["--on-error", "emit"], data)
    skip = run(invoke, aggregate.main, ["--on-error", "skip"], data)
    out = records(emit.stdout)
    errors = [r[ERROR_FIELD]["line"] for r in out if ERROR_FIELD in r and r[ERROR_FIELD]["command"] == "gpv-aggregate"]
    upstream = [r for r in out if ERROR_FIELD in r and r[ERROR_FIELD]["command"] == "gpv-upstream"]
    groups = [r for r in out if ERROR_FIELD not in r]
    # Every line is an error record, an upstream error passed on, or counted in exactly one group.
    n_upstream = sum(k == "upstream" for k in kinds.values())
    assert len(upstream) == n_upstream
    assert len(errors) + n_upstream + sum(g["n_perceptions"] for g in groups) == len(keys)
    assert len(set(errors)) == len(errors)
    for g in groups:
        for entry in g["values"].values():
            assert set(entry) == {"score", "n", "sd"}
            assert entry["score"] is None or (math.isfinite(entry["score"]) and entry["n"] >= 1)
    assert emit.exit_code == (1 if errors else 0) == skip.exit_code
    assert sorted(error_lines(skip.stderr, "gpv-aggregate")) == sorted(errors)
    assert skip.stdout == "".join(orjson.dumps(r).decode() + "\n" for r in out
                                  if not (ERROR_FIELD in r and r[ERROR_FIELD]["command"] == "gpv-aggregate"))
    if groups:  # and the groups merge back into themselves
        again = run(invoke, aggregate.main, ["--merge"], "".join(orjson.dumps(g).decode() + "\n" for g in groups))
        assert again.exit_code == 0, again.stderr
        assert records(again.stdout) == groups


@FUZZ
@given(jsonl_input(scored_record()), st.sampled_from([["stability"], ["predictive", "--field", "gender"]]))
def test_fuzz_validate(invoke, case, check):
    data, _, _ = case
    CASES["gpv-validate"] += 1
    result = invoke(validate.main, check, data)
    assert result.exit_code in (0, 1, 2) and "Traceback" not in result.stderr
    name = f"gpv-validate {check[0]}"
    if result.exit_code == 0:
        assert isinstance(orjson.loads(result.stdout), dict)
    else:
        assert result.stdout == ""
        errors = [line for line in result.stderr.splitlines() if line.startswith(f"{name}: error: ")]
        assert len(errors) == 1, result.stderr


# --- hand-written extremes ---------------------------------------------------------------------------------------

GOOD = b'{"id": "g", "text": "I value honesty and my family deeply."}'
TEXT_STAGES = [
    pytest.param(chunk.main, ["-t", "words"], id="gpv-chunk"),
    pytest.param(parse.main, ["--backend", "sentences"], id="gpv-parse"),
    pytest.param(score.main, ["-m", LEXICON, "--text-field", "text"], id="gpv-score"),
]


@pytest.mark.parametrize("command, args", TEXT_STAGES)
@pytest.mark.parametrize("bad, message", [
    (b'{"text": "' + b"x" * (50 * 1024 * 1024) + b'"}', "line is 52428812 bytes, over the limit of 16777216"),
    (b'{"text": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "invalid JSON: depth limit exceeded"),
    (b'{"text": "x", "meta": ' + b"[" * 300 + b"]" * 300 + b"}", "JSON nested deeper than 254 levels"),
    (b'{"text": NaN}', "invalid JSON: "),
    (b'{"text": Infinity}', "invalid JSON: "),
    (b'{"text": "\\ud800"}', "invalid JSON: "),
    (b'{"text": "a\x00b"}', "invalid JSON: "),
    (b'{"text": "\xed\xa0\x80"}', "invalid UTF-8 at byte 11"),
    (b"\x00" * 100, "invalid JSON: "),
])
def test_extremes_are_one_line_errors(invoke, command, args, bad, message):
    result = invoke(command, args, GOOD + b"\n" + bad + b"\n" + GOOD.replace(b'"g"', b'"h"') + b"\n")
    CASES["extremes"] += 1
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{command.name}: error: line 2: {message}"), result.stderr[:300]
    assert result.stderr.count("\n") == 1
    assert [r["id"].split("#")[0] for r in records(result.stdout)][:1] == ["g"]  # the line before was written
    assert "h" not in {r["id"].split("#")[0] for r in records(result.stdout)}


@pytest.mark.parametrize("command, args", TEXT_STAGES)
def test_escaped_nul_and_odd_text_are_data(invoke, command, args):
    text = "I value \u0000 honesty. \u202e Family matters to me deeply! \ufeff\U0001f642 ok."
    result = invoke(command, args, orjson.dumps({"id": "n", "text": text}) + b"\n")
    CASES["extremes"] += 1
    assert (result.exit_code, "Traceback" in result.stderr) == (0, False), result.stderr
    assert records(result.stdout)


def test_chunk_splits_a_20_mb_text_under_the_limit(invoke):
    text = ("I value honesty and my family deeply. " * 550_000)[: 20 * 1024 * 1024]
    data = orjson.dumps({"id": "big", "text": text}) + b"\n"
    result = invoke(chunk.main, ["-t", "words", "--max-line-bytes", str(32 * 1024 * 1024)], data)
    CASES["extremes"] += 1
    assert result.exit_code == 0, result.stderr
    out = records(result.stdout)
    assert len(out) == out[0]["n_chunks"] and all(r["tokens"] <= 250 for r in out)
    assert " ".join(text[r["start"]:r["end"]] for r in out).split() == text.split()
