"""--resume: complete work is kept, torn and partial work is redone, nothing is duplicated."""

import random
import signal
import subprocess
import sys
import time

import orjson
import pytest

from gpvtools.commands import chunk
from gpvtools.streaming import resume
from gpvtools.streaming.errors import GpvError


def chunk_recs(doc, n):
    return [{"id": f"{doc}#c{i}", "doc_id": doc, "chunk": i, "n_chunks": n} for i in range(n)]


def write(path, records, tail=b""):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + tail)


def src(r):
    return r["id"].rsplit("#c", 1)[0]


def test_torn_last_line_and_partial_last_group_are_cut(tmp_path):
    path = tmp_path / "out.jsonl"
    good = chunk_recs("a", 2) + chunk_recs("b", 1)
    write(path, good + chunk_recs("c", 3)[:2], tail=b'{"id": "c#c2", "doc')
    state = resume.prepare(str(path), src, lambda r: r["n_chunks"])
    assert state.done == {"a", "b"} and (state.kept, state.removed) == (3, 3)
    assert [orjson.loads(x) for x in path.read_bytes().splitlines()] == good


def test_error_records_are_dropped_and_retried(tmp_path):
    path = tmp_path / "out.jsonl"
    err = {"id": "x", "_gpv_error": {"line": 2, "error": "boom"}}
    write(path, chunk_recs("a", 1) + [err] + chunk_recs("b", 2))
    state = resume.prepare(str(path), src, lambda r: r["n_chunks"])
    assert state.done == {"a", "b"}
    assert [orjson.loads(x) for x in path.read_bytes().splitlines()] == chunk_recs("a", 1) + chunk_recs("b", 2)


def test_a_damaged_middle_is_refused_not_destroyed(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": "a#c0", "n_chunks": 1}\nGARBAGE\n{"id": "b#c0", "n_chunks": 1}\n')
    before = path.read_bytes()
    with pytest.raises(GpvError) as e:
        resume.prepare(str(path), src, lambda r: r["n_chunks"])
    assert str(e.value) == f"{path}: line 2 is not valid JSON; refusing to resume onto a damaged file"
    assert path.read_bytes() == before


def test_resuming_onto_a_directory_is_a_clear_error(tmp_path, invoke):
    """Seen with gpv-slurm: a directory where the output goes raised IsADirectoryError, told as a bug."""
    (tmp_path / "out.jsonl").mkdir()
    result = invoke(chunk.main, ["-t", "words", "-o", str(tmp_path / "out.jsonl"), "--resume"], b'{"id": "a", "text": "x"}\n')
    assert result.exit_code == 1
    assert result.stderr == f"gpv-chunk: error: cannot resume onto {tmp_path / 'out.jsonl'}: it is not a regular file\n"


def test_resume_via_the_command_skips_done_documents(tmp_path, invoke):
    docs = b"".join(orjson.dumps({"id": f"d{i}", "text": f"Text number {i}."}) + b"\n" for i in range(5))
    out = tmp_path / "out.jsonl"
    full = invoke(chunk.main, ["-t", "words", "-q"], docs).stdout.encode()
    lines = full.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2]) + lines[2][:9])  # two done, the third torn
    result = invoke(chunk.main, ["-t", "words", "-o", str(out), "--resume"], docs)
    assert result.exit_code == 0
    assert out.read_bytes() == full
    assert result.stderr == ("gpv-chunk: resuming " + str(out) + ": 2 inputs done, 2 records kept, 1 incomplete removed\n"
                             "gpv-chunk: 2 inputs already done in " + str(out) + "\n")


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_one_clean_run(posts_path, tmp_path):
    """Kill a real gpv-chunk process (default tokenizer, ~10 s of work) 5 times, resume each time."""
    clean = tmp_path / "clean.jsonl"
    subprocess.run([sys.executable, "-m", "gpvtools.commands.chunk", "-q", str(posts_path), "-o", str(clean)],
                   check=True)
    out = tmp_path / "out.jsonl"
    rng = random.Random(20261128)
    cmd = [sys.executable, "-m", "gpvtools.commands.chunk", "-q", str(posts_path), "-o", str(out), "--resume"]
    total = clean.read_bytes().count(b"\n")
    # Each run is killed once its output holds a drawn number of records more than the last kill left, so
    # every kill lands on a running process that has made progress in that run, however slow the machine
    # (the wait ends on the file's growth, with a generous deadline, not on the clock). Five runs take at
    # most a third of the records between them, leaving the rest to the last.
    step = total // 15
    assert step >= 1
    records = []
    for _ in range(5):
        before = records[-1] if records else 0
        target = before + rng.randint(1, step)
        proc = subprocess.Popen(cmd)
        deadline = time.monotonic() + 120
        while not (out.exists() and out.read_bytes().count(b"\n") >= target):
            assert proc.poll() is None, f"gpv-chunk ended before it was killed (status {proc.returncode})"
            assert time.monotonic() < deadline, f"no progress past {before} records within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL  # it was running when killed
        records.append(out.read_bytes().count(b"\n"))
    assert records[-1] < total, records  # the last run still had work to do
    subprocess.run(cmd, check=True)
    assert out.read_bytes() == clean.read_bytes()
    ids = [orjson.loads(x)["id"] for x in out.read_bytes().splitlines()]
    assert len(ids) == len(set(ids))
