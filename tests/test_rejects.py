"""--rejects FILE, every stage's: a bad input line is set aside in FILE once, with its error, and with --resume
is not tried again until its line is removed (docs/conventions.md). Run in-process against each stage."""

import orjson
import pytest

from gpvtools.commands import aggregate, chunk, parse, score

from .conftest import SHARED, read_jsonl

LEXICON = str(SHARED / "data" / "dictionaries" / "schwartz-values-en.json")
# (command, args that make it fast and offline); each reads the text of {"id", "text"} records.
STREAMING = [
    pytest.param((chunk.main, ["-t", "words"]), id="gpv-chunk"),
    pytest.param((parse.main, ["--backend", "sentences"]), id="gpv-parse"),
    pytest.param((score.main, ["-m", LEXICON, "--text-field", "text"]), id="gpv-score"),
]
BROKEN = b'{"id": "d3", "text": '  # no record: known by its bytes' digest


def lines(*records):
    return b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in records)


@pytest.mark.parametrize("stage", STREAMING)
def test_a_bad_line_is_set_aside_once_and_not_tried_again_until_removed(stage, invoke, tmp_path):
    command, args = stage
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejected.jsonl"
    good = [{"id": "d1", "text": "I help my family every day."}, {"id": "d4", "text": "Power means little to me."}]
    bad = {"id": "d2", "text": 5}
    data = lines(good[0], bad, BROKEN, good[1])
    argv = [*args, "-o", str(out), "--resume", "--rejects", str(rejects)]

    first = invoke(command, argv, data)
    assert first.exit_code == 0, first.stderr  # set aside is accounted for, not a failure
    name = command.name
    assert f"{name}: error: line 2: field 'text' must be a string, got a number (set aside in {rejects})\n" in first.stderr
    assert f"{name}: 2 bad lines set aside in {rejects}\n" in first.stderr
    produced = out.read_bytes()
    assert {r.get("doc_id", r["id"]) for r in read_jsonl(out)} == {"d1", "d4"}
    aside = read_jsonl(rejects)
    assert [r["_gpv_error"]["key"] for r in aside] == ["d2", aside[1]["_gpv_error"]["key"]]
    assert {k: v for k, v in aside[0].items() if k != "_gpv_error"} == bad
    assert aside[0]["_gpv_error"] | {"time": None} == {
        "command": name, "line": 2, "key": "d2", "error": "field 'text' must be a string, got a number", "time": None}
    assert aside[1]["_gpv_error"]["raw"] == BROKEN.decode() and aside[1]["_gpv_error"]["key"].startswith("sha256:")
    assert aside[1]["_gpv_error"]["error"].startswith("invalid JSON")

    # Resumed: neither is tried again, nothing is written twice.
    before = rejects.read_bytes()
    again = invoke(command, argv, data)
    assert again.exit_code == 0, again.stderr
    assert "error" not in again.stderr and f"{name}: 2 inputs set aside in {rejects} before, not tried again\n" in again.stderr
    assert rejects.read_bytes() == before and out.read_bytes() == produced

    # Fixed, and its line removed from FILE: d2 is tried again and comes in; the broken line stays aside.
    fixed = {"id": "d2", "text": "I want control over everything."}
    rejects.write_bytes(before.split(b"\n", 1)[1])
    readmitted = invoke(command, argv, lines(good[0], fixed, BROKEN, good[1]))
    assert readmitted.exit_code == 0, readmitted.stderr
    assert {r.get("doc_id", r["id"]) for r in read_jsonl(out)} == {"d1", "d2", "d4"}
    assert [r["_gpv_error"]["key"] for r in read_jsonl(rejects)] == [aside[1]["_gpv_error"]["key"]]


@pytest.mark.parametrize("stage", STREAMING)
def test_without_rejects_a_bad_line_still_makes_the_exit_status_1(stage, invoke, tmp_path):
    # The control: the same input, skipped instead of set aside, fails the run, and --resume tries it again.
    command, args = stage
    argv = [*args, "-o", str(tmp_path / "out.jsonl"), "--resume", "--on-error", "skip"]
    data = lines({"id": "d1", "text": "I help my family every day."}, {"id": "d2", "text": 5})
    for _ in range(2):
        result = invoke(command, argv, data)
        assert result.exit_code == 1 and "line 2: field 'text' must be a string" in result.stderr


def test_a_whole_stage_leaves_a_set_aside_record_out_and_writes_it_once(invoke, tmp_path):
    scored = {"id": "d1#c0#p0", "doc_id": "d1", "values": {"Power": {"score": 0.5}}, "scorer": "x:y"}
    bad = {"id": "d2#c0#p0", "doc_id": "d2", "values": 7, "scorer": "x:y"}
    out, rejects = tmp_path / "agg.jsonl", tmp_path / "rejected.jsonl"
    argv = ["-o", str(out), "--resume", "--rejects", str(rejects)]
    first = invoke(aggregate.main, argv, lines(scored, bad))
    assert first.exit_code == 0, first.stderr
    assert [r["id"] for r in read_jsonl(out)] == ["d1"]
    second = invoke(aggregate.main, argv, lines(scored, bad))
    assert second.exit_code == 0 and f"gpv-aggregate: 1 bad line already in {rejects}, left out again" in second.stderr
    assert [r["id"] for r in read_jsonl(out)] == ["d1"]
    assert [r["_gpv_error"]["key"] for r in read_jsonl(rejects)] == ["d2#c0#p0"]


def test_a_torn_last_line_in_the_file_does_not_swallow_the_next(invoke, tmp_path):
    rejects = tmp_path / "rejected.jsonl"
    rejects.write_bytes(b'{"id": "x", "_gpv_error": {"comm')  # a run killed mid-write
    result = invoke(chunk.main, ["-t", "words", "--rejects", str(rejects)], lines({"id": "d2", "text": 5}))
    assert result.exit_code == 0, result.stderr
    torn, line = rejects.read_bytes().split(b"\n", 1)
    assert torn == b'{"id": "x", "_gpv_error": {"comm' and orjson.loads(line)["_gpv_error"]["key"] == "d2"


def test_rejects_to_stdout_is_a_usage_error(invoke):
    result = invoke(chunk.main, ["-t", "words", "--rejects", "-"], b"")
    assert result.exit_code == 2 and result.stderr == "gpv-chunk: error: --rejects needs a FILE (stdout carries the output)\n"
