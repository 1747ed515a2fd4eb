"""gpv-aggregate: group means by hand, exactness, order independence, merging shards, errors, a real pipeline."""

import math
import random
import re
import subprocess
from fractions import Fraction

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpvtools.commands import aggregate
from gpvtools.method.aggregation import Moments
from gpvtools.method.values import system
from tests.conftest import SHARED

SCORER = "test:hand"


def perception(pid, author, scores, **extra):
    values = {name: {"relevance": 0.9 if s is not None else 0.1, "score": s} for name, s in scores.items()}
    return {"id": pid, "doc_id": pid.split("#")[0], "author": author, **extra, "values": values, "scorer": SCORER}


def jsonl(records):
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def lines(stdout):
    return [orjson.loads(line) for line in stdout.splitlines()]


# Author x has three perceptions, y one.
#   x: A = 0.25, 0.75, -0.25 -> mean 0.25; deviations 0, 0.5, -0.5 -> M2 0.5, variance 0.25, sd 0.5
#      B = null, 0.5, null   -> n 1, mean 0.5, sd null (one score)
#      C = -0.25, -0.75, null -> mean -0.5; deviations 0.25, -0.25 -> M2 0.125, variance 0.125, sd sqrt(0.125)
#   y: A = 1.0 -> n 1; B, C never measured -> null, n 0
HAND = [
    perception("d1#c0", "x", {"A": 0.25, "B": None, "C": -0.25}, gender="f"),
    perception("d2#c0", "y", {"A": 1.0, "B": None, "C": None}, gender="m"),
    perception("d1#c1", "x", {"A": 0.75, "B": 0.5, "C": -0.75}, gender="f"),
    perception("d3#c0", "x", {"A": -0.25, "B": None, "C": None}, gender="f"),
]
HAND_OUT = [
    {"id": "x", "author": "x", "n_perceptions": 3,
     "values": {"A": {"score": 0.25, "n": 3, "sd": 0.5}, "B": {"score": 0.5, "n": 1, "sd": None},
                "C": {"score": -0.5, "n": 2, "sd": math.sqrt(0.125)}},
     "scorer": SCORER, "group_by": ["author"]},
    {"id": "y", "author": "y", "n_perceptions": 1,
     "values": {"A": {"score": 1.0, "n": 1, "sd": None}, "B": {"score": None, "n": 0, "sd": None},
                "C": {"score": None, "n": 0, "sd": None}},
     "scorer": SCORER, "group_by": ["author"]},
]


def test_hand_computed_means_counts_and_sds(invoke):
    result = invoke(aggregate.main, ["--by", "author"], jsonl(HAND))
    assert result.exit_code == 0, result.stderr
    assert lines(result.stdout) == HAND_OUT
    assert result.stderr == "gpv-aggregate: aggregated 4 records into 2 groups\n"


def test_min_evidence_nulls_thin_values_but_keeps_n(invoke):
    result = invoke(aggregate.main, ["--by", "author", "--min-evidence", "2", "-q"], jsonl(HAND))
    x, y = lines(result.stdout)
    assert x["values"]["A"] == {"score": 0.25, "n": 3, "sd": 0.5}
    assert x["values"]["B"] == {"score": None, "n": 1, "sd": None}   # one measurement < 2
    assert y["values"]["A"] == {"score": None, "n": 1, "sd": None}


def test_default_groups_by_doc_id_and_falls_back_to_id(invoke):
    # d1 has two perceptions (d1#c0, d1#c1); a record without doc_id is grouped by its id.
    bare = {"id": "whole-doc", "values": {"A": {"score": 0.5}, "B": {"score": None}, "C": {"score": None}},
            "scorer": SCORER}
    result = invoke(aggregate.main, ["-q"], jsonl(HAND + [bare]))
    out = lines(result.stdout)
    assert [r["id"] for r in out] == ["d1", "d2", "d3", "whole-doc"]
    assert [r["n_perceptions"] for r in out] == [2, 1, 1, 1]
    assert out[0]["values"]["A"] == {"score": 0.5, "n": 2, "sd": math.sqrt(0.125)}  # 0.25, 0.75
    assert out[3]["doc_id"] == "whole-doc" and out[3]["group_by"] == ["doc_id"]


def test_several_by_fields_keep_and_sorting(invoke):
    records = [perception("a#0", "x", {"A": 0.5}, age=30), perception("b#0", "y", {"A": 0.25}, age=4),
               perception("c#0", "x", {"A": -0.5}, age=4), perception("d#0", "x", {"A": 0.5}, age=30, lang="en")]
    result = invoke(aggregate.main, ["--by", "age,author", "--keep", "lang"], jsonl(records))
    out = lines(result.stdout)
    # numbers sort numerically (4 before 30), then by author; id joins the by-values with '|'
    assert [(r["id"], r["age"], r["author"], r["lang"], r["n_perceptions"]) for r in out] == [
        ("4|x", 4, "x", None, 1), ("4|y", 4, "y", None, 1), ("30|x", 30, "x", None, 2)]
    # lang: in 30|x one record has 'en', the other none -> differs; absent in both 4|… groups
    assert result.stderr.splitlines()[1:] == [
        "gpv-aggregate: --keep lang: differs within 1 group; null there",
        "gpv-aggregate: --keep lang: absent in 2 groups; null there",
    ]


def test_keep_copies_a_field_constant_within_the_group(invoke):
    result = invoke(aggregate.main, ["--by", "author", "--keep", "gender", "-q"], jsonl(HAND))
    assert [(r["author"], r["gender"]) for r in lines(result.stdout)] == [("x", "f"), ("y", "m")]
    assert list(lines(result.stdout)[0]) == ["id", "author", "gender", "n_perceptions", "values", "scorer",
                                            "group_by"]


def test_csv_and_tsv_are_wide_tables(invoke):
    result = invoke(aggregate.main, ["--by", "author", "-f", "csv", "-q"], jsonl(HAND))
    assert result.stdout == (
        "id,author,n_perceptions,scorer,A,B,C,A.n,B.n,C.n,A.sd,B.sd,C.sd\n"
        f"x,x,3,{SCORER},0.25,0.5,-0.5,3,1,2,0.5,,{math.sqrt(0.125)}\n"
        f"y,y,1,{SCORER},1.0,,,1,0,0,,,\n")
    tsv = invoke(aggregate.main, ["--by", "author", "-f", "tsv", "-q"], jsonl(HAND))
    assert tsv.stdout.splitlines()[1].split("\t")[:5] == ["x", "x", "3", SCORER, "0.25"]


def test_higher_order_is_the_mean_of_basic_group_scores(invoke):
    names = system("schwartz")
    scores = dict.fromkeys(names)
    scores.update({"Universalism": 0.25, "Benevolence": 0.75,          # Self-Transcendence (0.25+0.75)/2 = 0.5
                   "Achievement": 0.5, "Hedonism": 0.25,               # Self-Enhancement (0.5+0.25)/2, Power null
                   "Self-Direction": -0.5, "Stimulation": 0.5})        # Openness (-0.5+0.5+0.25)/3 = 0.25/3
    result = invoke(aggregate.main, ["--by", "author", "--higher-order", "-q"],
                    jsonl([perception("p#0", "x", scores)]))
    values = lines(result.stdout)[0]["values"]
    assert list(values)[-4:] == ["Self-Transcendence", "Self-Enhancement", "Openness to Change", "Conservation"]
    assert values["Self-Transcendence"] == {"score": 0.5, "n": 2, "sd": None, "n_basic": 2}
    assert values["Self-Enhancement"] == {"score": 0.375, "n": 2, "sd": None, "n_basic": 2}
    assert values["Openness to Change"]["score"] == pytest.approx(0.25 / 3, rel=1e-15)
    assert values["Openness to Change"]["n_basic"] == 3
    assert values["Conservation"] == {"score": None, "n": 0, "sd": None, "n_basic": 0}


def test_higher_order_needs_the_schwartz_values(invoke):
    result = invoke(aggregate.main, ["--by", "author", "--higher-order"], jsonl(HAND))
    assert result.exit_code == 2
    assert result.stderr.startswith("gpv-aggregate: error: --higher-order needs the 10 Schwartz basic values; "
                                    "the input lacks Universalism, Benevolence, ")
    assert result.stdout == ""


# --- exactness and order ------------------------------------------------------------------------

def random_perceptions(n, n_groups, seed, names=("A", "B", "C")):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        g = rng.randrange(n_groups)
        scores = {v: (None if rng.random() < 0.3 else rng.uniform(-1, 1)) for v in names}
        out.append(perception(f"g{g}#p{i}", f"author{g}", scores))
    return out


def test_shuffled_and_sorted_input_give_identical_bytes(invoke):
    records = random_perceptions(600, 23, seed=1)
    by_group = sorted(records, key=lambda r: r["author"])
    shuffled = records[:]
    random.Random(2).shuffle(shuffled)
    outs = {invoke(aggregate.main, ["--by", "author", "-q"], jsonl(r)).stdout for r in (records, by_group, shuffled)}
    assert len(outs) == 1 and outs != {""}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(-1, 1, allow_nan=False), st.floats(-1e6, 1e6, allow_nan=False)),
                min_size=1, max_size=40))
def test_moments_are_correctly_rounded_and_agree_with_numpy(xs):
    m = Moments()
    for x in xs:
        if x is not None:
            m.add(x)
    measured = [x for x in xs if x is not None]
    assert m.n == len(measured)
    if not measured:
        assert m.mean() is None and m.sd() is None
        return
    exact_mean = sum(map(Fraction, measured)) / len(measured)
    assert m.mean() == float(exact_mean)                        # one correct rounding of the exact mean
    assert m.mean() == pytest.approx(np.mean(measured), rel=1e-9, abs=1e-9)
    if len(measured) < 2:
        assert m.sd() is None
        return
    exact_var = sum((Fraction(x) - exact_mean) ** 2 for x in measured) / (len(measured) - 1)
    assert m.sd() == math.sqrt(float(exact_var))
    assert m.sd() == pytest.approx(np.std(measured, ddof=1), rel=1e-7, abs=1e-9)


def test_no_cancellation_where_naive_sums_of_squares_fail():
    # 1e8 + {0, 1, 2}: naive (Σx² - (Σx)²/n)/(n-1) in doubles gives 0 or garbage; the exact answer is 1.
    m = Moments()
    for x in (1e8, 1e8 + 1, 1e8 + 2):
        m.add(x)
    assert (m.mean(), m.sd()) == (1e8 + 1, 1.0)


# --- merging shards ----------------------------------------------------------------------------

def test_merge_of_shard_aggregates_equals_the_whole(invoke, tmp_path):
    records = random_perceptions(500, 17, seed=3)
    data = jsonl(records)
    whole = lines(invoke(aggregate.main, ["--by", "author", "-q"], data).stdout)
    shards = [invoke(aggregate.main, ["--by", "author", "--shard", f"{k}/4", "-q"], data).stdout.encode()
              for k in range(4)]
    assert all(shards) and sum(len(s.splitlines()) for s in shards) >= len(whole)  # authors span shards
    merged = invoke(aggregate.main, ["--merge"], b"".join(shards))
    assert merged.exit_code == 0, merged.stderr
    assert merged.stderr.endswith(f"merged {sum(len(s.splitlines()) for s in shards)} aggregate records into "
                                  f"{len(whole)} groups\n")
    merged_records = lines(merged.stdout)
    assert [r["id"] for r in merged_records] == [r["id"] for r in whole]
    for m, w in zip(merged_records, whole):
        assert m["n_perceptions"] == w["n_perceptions"] and m["group_by"] == ["author"]
        for name, wv in w["values"].items():
            mv = m["values"][name]
            assert mv["n"] == wv["n"]
            for key in ("score", "sd"):
                if wv[key] is None:
                    assert mv[key] is None
                else:
                    assert mv[key] == pytest.approx(wv[key], rel=1e-12, abs=1e-15)
    # the order of the shards does not matter, to the last bit
    backwards = invoke(aggregate.main, ["--merge"], b"".join(reversed(shards)))
    assert backwards.stdout == merged.stdout


def test_shards_are_the_same_documents_as_every_other_stage_keeps(invoke):
    """gpv-aggregate --shard K/N keeps exactly the documents gpv-chunk --shard K/N keeps: one shard key.

    The keys cover each way a record names its document: doc_id, a string id, a number id (int and
    float), no id at all (its line number), and an id that is no key (a bad line in every stage)."""
    from gpvtools.commands import chunk

    def record(i):
        r = {"author": f"a{i}", "text": "Honesty matters.", "scorer": SCORER, "values": {"A": {"score": 0.5}}}
        kind = i % 5
        if kind == 0:
            r.update(id=f"s{i}#c0", doc_id=f"doc{i}")
        elif kind == 1:
            r["id"] = f"s{i}"
        elif kind == 2:
            r["id"] = i
        elif kind == 3:
            r["id"] = i + 0.5
        return r

    data = jsonl(record(i) for i in range(60)) + b'{"id": true, "author": "bad", "values": {}}\n'
    seen = []
    for k in range(3):
        args = ["--shard", f"{k}/3", "--on-error", "skip", "-q"]
        chunked = invoke(chunk.main, ["-t", "words", *args], data)
        aggregated = invoke(aggregate.main, ["--by", "author", *args], data)
        assert chunked.exit_code == aggregated.exit_code == 1  # the bad id, in both, in every shard
        assert chunked.stderr == aggregated.stderr.replace("gpv-aggregate", "gpv-chunk")
        kept_by_chunk = sorted(r["author"] for r in lines(chunked.stdout))
        kept_by_aggregate = sorted(r["author"] for r in lines(aggregated.stdout))
        assert kept_by_chunk == kept_by_aggregate != []
        seen += kept_by_aggregate
    assert sorted(seen) == sorted(f"a{i}" for i in range(60))  # every document in exactly one shard


def test_merge_keeps_higher_order_values(invoke):
    names = system("schwartz")
    rng = random.Random(5)
    records = [perception(f"d{i}#0", f"a{i % 3}", {v: rng.choice([None, 0.25, -0.5, 0.75]) for v in names})
               for i in range(30)]
    whole = lines(invoke(aggregate.main, ["--by", "author", "--higher-order", "-q"], jsonl(records)).stdout)
    halves = [invoke(aggregate.main, ["--by", "author", "--higher-order", "--shard", f"{k}/2", "-q"],
                     jsonl(records)).stdout.encode() for k in range(2)]
    merged = lines(invoke(aggregate.main, ["--merge", "-q"], b"".join(halves)).stdout)
    assert [r["id"] for r in merged] == [r["id"] for r in whole] == ["a0", "a1", "a2"]
    for m, w in zip(merged, whole):
        for name in ("Self-Transcendence", "Conservation"):
            assert m["values"][name]["n"] == w["values"][name]["n"]
            assert m["values"][name]["n_basic"] == w["values"][name]["n_basic"]
            assert m["values"][name]["score"] == pytest.approx(w["values"][name]["score"], rel=1e-12)


def test_merge_can_pool_by_a_coarser_field(invoke):
    # authors x and y, pooled into one group: A's scores 0.25, 0.75, -0.25 and 1.0 -> mean 0.4375
    aggregates = invoke(aggregate.main, ["--by", "author,scorer", "-q"], jsonl(HAND)).stdout.encode()
    result = invoke(aggregate.main, ["--merge", "--by", "scorer", "-q"], aggregates)
    (pooled,) = lines(result.stdout)
    assert pooled["n_perceptions"] == 4 and pooled["values"]["A"]["n"] == 4
    assert pooled["values"]["A"]["score"] == 0.4375
    # sd of 0.25, 0.75, -0.25, 1.0: deviations -0.1875, 0.3125, -0.6875, 0.5625, squared 0.03515625,
    # 0.09765625, 0.47265625, 0.31640625 -> M2 0.921875, variance 0.921875/3
    assert pooled["values"]["A"]["sd"] == pytest.approx(math.sqrt(0.921875 / 3), rel=1e-15)


def test_merge_refuses_what_it_cannot_pool(invoke):
    thin = invoke(aggregate.main, ["--by", "author", "--min-evidence", "2", "-q"], jsonl(HAND)).stdout
    result = invoke(aggregate.main, ["--merge"], thin)
    assert result.exit_code == 1
    assert result.stderr == ("gpv-aggregate: error: line 1: values.B has n = 1 but no score (made with "
                             "--min-evidence?); merge aggregates made with --min-evidence 1 and give "
                             "--min-evidence to the merge\n")
    result = invoke(aggregate.main, ["--merge"], jsonl(HAND))
    assert result.stderr == ("gpv-aggregate: error: line 1: not an aggregate record: field 'n_perceptions' is "
                             "missing (--merge combines gpv-aggregate's output)\n")
    aggregated = invoke(aggregate.main, ["--by", "author", "-q"], jsonl(HAND)).stdout
    result = invoke(aggregate.main, ["--by", "author"], aggregated)
    assert result.stderr == ("gpv-aggregate: error: line 1: this is an aggregate record (it has 'group_by'); "
                             "combine aggregates with --merge\n")


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    ({"id": "q", "author": "x"}, "line 2: field 'values' is missing"),
    ({"id": "q", "author": "x", "values": [1]}, "line 2: field 'values' must be an object, got an array"),
    ({"id": "q", "author": "x", "values": {"A": 0.5, "B": {"score": 1}, "C": {"score": 1}}},
     "line 2: values.A must be an object, got a number"),
    ({"id": "q", "author": "x", "values": {"A": {"relevance": 0.2}, "B": {"score": 1}, "C": {"score": 1}}},
     "line 2: values.A has no 'score'"),
    ({"id": "q", "author": "x", "values": {"A": {"score": "high"}, "B": {"score": 1}, "C": {"score": 1}}},
     "line 2: values.A.score must be a number or null, got a string"),
    ({"id": "q", "author": "x", "values": {"A": {"score": True}, "B": {"score": 1}, "C": {"score": 1}}},
     "line 2: values.A.score must be a number or null, got true"),
    ({"id": "q", "author": "x", "scorer": SCORER, "values": {"A": {"score": 1}, "D": {"score": 1}}},
     "line 2: its values differ from line 1's: missing B, C; extra D (--mixed-values union aggregates the union)"),
    ({"id": "q", "author": "x", "scorer": "other:model", "values": {"A": {"score": 1}, "B": {"score": 1},
                                                                   "C": {"score": 1}}},
     "line 2: group 'x' mixes instruments: other:model here, test:hand on line 1; --mixed-instruments pools them"),
    ({"id": "q", "values": {"A": {"score": 1}, "B": {"score": 1}, "C": {"score": 1}}},
     "line 2: field 'author' is missing (grouping by --by author; --missing-group skip or null to go on)"),
    ({"id": "q", "author": ["x"], "values": {}},
     "line 2: field 'author' must be a string, a number, a boolean or null to group by, got an array"),
])
def test_bad_records_name_line_and_field_and_nothing_is_written(invoke, bad, message):
    result = invoke(aggregate.main, ["--by", "author"], jsonl([HAND[0], bad, HAND[1]]))
    assert result.exit_code == 1
    assert result.stderr == f"gpv-aggregate: error: {message}\n"
    assert result.stdout == ""  # all-or-nothing


def test_skip_leaves_bad_records_out_and_says_so(invoke):
    bad = {"id": "q", "author": "x", "values": {"A": {"score": "high"}, "B": {"score": 1}, "C": {"score": 1}}}
    result = invoke(aggregate.main, ["--by", "author", "--on-error", "skip"], jsonl([HAND[0], bad, *HAND[1:]]))
    assert result.exit_code == 1
    assert lines(result.stdout) == HAND_OUT  # the bad record changed nothing
    assert result.stderr.splitlines() == [
        "gpv-aggregate: error: line 2: values.A.score must be a number or null, got a string",
        "gpv-aggregate: 1 bad line skipped",
        "gpv-aggregate: aggregated 4 records into 2 groups",
    ]


def test_missing_group_skip_and_null(invoke):
    orphan = {"id": "q", "values": {"A": {"score": 0.5}, "B": {"score": None}, "C": {"score": None}},
              "scorer": SCORER}
    skipped = invoke(aggregate.main, ["--by", "author", "--missing-group", "skip"], jsonl(HAND + [orphan]))
    assert skipped.exit_code == 0
    assert lines(skipped.stdout) == HAND_OUT
    assert skipped.stderr.splitlines() == [
        "gpv-aggregate: aggregated 4 records into 2 groups",
        "gpv-aggregate: 1 record without --by field(s) author skipped (--missing-group skip)"]
    grouped = invoke(aggregate.main, ["--by", "author", "--missing-group", "null"], jsonl(HAND + [orphan]))
    out = lines(grouped.stdout)
    assert [(r["id"], r["author"]) for r in out] == [("null", None), ("x", "x"), ("y", "y")]
    assert out[0]["values"]["A"] == {"score": 0.5, "n": 1, "sd": None}
    assert "1 record without --by field(s) author grouped under null (--missing-group null)" in grouped.stderr


def test_mixed_values_union_counts_absent_as_unmeasured(invoke):
    other = perception("d9#0", "x", {"A": 0.5, "D": -1.0})
    result = invoke(aggregate.main, ["--by", "author", "--mixed-values", "union"], jsonl(HAND + [other]))
    assert result.exit_code == 0
    x = lines(result.stdout)[0]
    assert list(x["values"]) == ["A", "B", "C", "D"]
    assert x["values"]["A"]["n"] == 4 and x["values"]["A"]["score"] == 0.3125  # (0.25+0.75-0.25+0.5)/4
    assert x["values"]["D"] == {"score": -1.0, "n": 1, "sd": None}
    assert lines(result.stdout)[1]["values"]["D"] == {"score": None, "n": 0, "sd": None}
    assert result.stderr.splitlines()[-1] == (
        "gpv-aggregate: mixed value sets (3 values in 4 records, 2 values in 1 record); aggregated the union of "
        "4 values, a value absent from a record counting as unmeasured there")


def test_upstream_error_records_pass_first_and_are_not_aggregated(invoke):
    upstream = {"id": "u", "author": "x", "_gpv_error": {"command": "gpv-score", "line": 3, "error": "boom"}}
    result = invoke(aggregate.main, ["--by", "author"], jsonl([HAND[0], upstream, *HAND[1:]]))
    assert result.exit_code == 0
    assert lines(result.stdout) == [upstream, *HAND_OUT]
    csv = invoke(aggregate.main, ["--by", "author", "-f", "csv"], jsonl([upstream, *HAND]))
    assert "gpv-aggregate: 1 error record from upstream left out: a csv table has no place for them" in csv.stderr
    emit = invoke(aggregate.main, ["--by", "author", "-f", "csv", "--on-error", "emit"], jsonl(HAND))
    assert (emit.exit_code, emit.stderr) == (2, ("gpv-aggregate: error: --on-error emit needs --format jsonl: a csv "
                                                "table has no place for error records\n"))


def test_output_file_is_replaced_whole_or_not_at_all(invoke, tmp_path):
    out = tmp_path / "agg.jsonl"
    out.write_text("earlier\n")
    bad = invoke(aggregate.main, ["--by", "author", "-o", str(out)], jsonl(HAND) + b"{oops\n")
    assert bad.exit_code == 1 and out.read_text() == "earlier\n"
    good = invoke(aggregate.main, ["--by", "author", "-o", str(out), "--resume"], jsonl(HAND))
    assert good.exit_code == 0 and good.stdout == ""
    assert lines(out.read_text()) == HAND_OUT
    assert good.stderr.startswith(f"gpv-aggregate: --resume: an aggregate is all-or-nothing, so {out} is "
                                  f"recomputed from the whole input\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agg.jsonl"]  # no temporary file left


def test_reserved_by_fields_are_usage_errors(invoke):
    result = invoke(aggregate.main, ["--by", "values"], jsonl(HAND))
    assert (result.exit_code, result.stderr) == (
        2, "gpv-aggregate: error: --by cannot name 'values': aggregate records use that field themselves\n")


# --- a real pipeline ---------------------------------------------------------------------------

def test_real_posts_through_chunk_score_aggregate_and_validate(posts_path, tmp_path):
    lexicon = SHARED / "data" / "dictionaries" / "schwartz-values-en.json"
    head = b"".join(posts_path.read_bytes().splitlines(keepends=True)[:5])
    (tmp_path / "posts.jsonl").write_bytes(head)
    posts = lines(head)
    pipeline = (f"gpv-chunk -q -t words {tmp_path / 'posts.jsonl'} | tee {tmp_path / 'chunks.jsonl'}"
                f" | gpv-score -q -m {lexicon} --text-field text"
                f" | gpv-aggregate -q --by author --keep gender -o {tmp_path / 'authors.jsonl'}")
    subprocess.run(pipeline, shell=True, check=True, capture_output=True)
    chunks = lines((tmp_path / "chunks.jsonl").read_bytes())
    authors = lines((tmp_path / "authors.jsonl").read_bytes())
    expected_authors = sorted({p["author"] for p in posts})
    assert [a["id"] for a in authors] == expected_authors
    assert sum(a["n_perceptions"] for a in authors) == len(chunks)
    gender = {p["author"]: p["gender"] for p in posts}
    for a in authors:
        assert a["gender"] == gender[a["author"]]
        assert re.fullmatch(r"dictionary:schwartz-values-en\.json@[0-9a-f]{16}", a["scorer"])
        assert a["instrument"]["id"] == a["scorer"].rsplit("@", 1)[1]
        assert set(a["values"]) == set(system("schwartz"))
        for v in a["values"].values():  # the dictionary scores every chunk: every value measured in each
            assert v["n"] == a["n_perceptions"] and 0 <= v["score"] <= 1

    predictive = subprocess.run(["gpv-validate", "predictive", "--field", "gender", str(tmp_path / "authors.jsonl")],
                                check=True, capture_output=True)
    report = orjson.loads(predictive.stdout)
    assert report["groups"] == sorted(set(gender.values()))
    counts = [sum(1 for a in authors if a["gender"] == g) for g in report["groups"]]
    assert report["n_individuals"] == counts
    for name, r in report["values"].items():
        means = [np.mean([a["values"][name]["score"] for a in authors if a["gender"] == g])
                 for g in report["groups"]]
        assert r["mean"] == pytest.approx(means, rel=1e-12)
        assert r["difference"] == pytest.approx(means[0] - means[1], rel=1e-9, abs=1e-15)

    construct = subprocess.run(["gpv-validate", "construct", "--permutations", "199", "--plot",
                                str(tmp_path / "mds.png"), str(tmp_path / "authors.jsonl")],
                               check=True, capture_output=True)
    report = orjson.loads(construct.stdout)
    names = report["values"]
    assert sorted(names) == sorted(system("schwartz")) and report["n_individuals"] == len(authors)
    sim = np.array([[report["similarity"][a][b] for b in names] for a in names])
    assert np.allclose(sim, sim.T) and np.all(np.diag(sim) == 1) and np.all(sim <= 1 + 1e-12)
    assert np.all(sim >= 0)  # dictionary scores are never negative
    assert len(report["mds"]["coordinates"]) == 10 and 0 <= report["mds"]["stress1"] < 1
    fit = report["circumplex"]
    assert -1 <= fit["rho_angular"] <= 1 and 1 / 200 <= fit["p_angular"] <= 1
    assert (tmp_path / "mds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
