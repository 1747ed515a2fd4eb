"""gpv-score --values-field and --valence all: per-record value lists, for evaluating labelled pairs."""

import orjson

from gpvtools.commands import score
from gpvtools.runtimes.models import builtin_gguf


def test_each_record_is_scored_on_its_own_values(invoke):
    data = (b'{"id": "a", "perception": "I pray every day.", "gold": ["Tradition", "Power"]}\n'
            b'{"id": "b", "perception": "I want to win.", "gold": "Achievement"}\n')
    result = invoke(score.main, ["-m", builtin_gguf(), "--values-field", "gold", "--valence", "all"], data)
    assert result.exit_code == 0, result.stderr
    a, b = map(orjson.loads, result.stdout.splitlines())
    assert list(a["values"]) == ["Tradition", "Power"] and list(b["values"]) == ["Achievement"]
    for r in (a, b):
        for v in r["values"].values():  # valence everywhere; a score only where relevant and polar
            assert {"relevance", "support", "oppose", "either", "score"} <= set(v)
            if v["relevance"] <= 0.5:
                assert v["score"] is None


def test_a_bad_values_field_names_line_and_field(invoke):
    data = b'{"id": "a", "perception": "x", "gold": ["Power"]}\n{"id": "b", "perception": "y", "gold": 3}\n'
    result = invoke(score.main, ["-m", builtin_gguf(), "--values-field", "gold"], data)
    assert result.exit_code == 1
    assert result.stderr == "gpv-score: error: line 2: field 'gold' must be a value name or a list of them\n"
    assert [orjson.loads(x)["id"] for x in result.stdout.splitlines()] == ["a"]
    both = invoke(score.main, ["-m", builtin_gguf(), "--values-field", "gold", "--values", "vsm"], data)
    assert both.exit_code == 2
    assert both.stderr == "gpv-score: error: --values and --values-field exclude each other\n"
