"""Real processes in real shell pipelines: the entry points as a user runs them."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest


def sh(command, **kw):
    return subprocess.run(["bash", "-c", command], capture_output=True, **kw)


def test_closed_pipe_ends_quietly(posts_path):
    result = sh(f"set -o pipefail; gpv-chunk -t words {posts_path} | head -1; echo \"status ${{PIPESTATUS[0]}}\"")
    out = result.stdout.decode().splitlines()
    assert orjson.loads(out[0])["id"] == "1026164-34#c0"
    assert out[1] == "status 141"
    assert result.stderr == b""


def test_a_shell_pipeline_of_stages(posts_path):
    result = sh(f"head -5 {posts_path} | gpv-chunk -q | gpv-chunk -q -t words -n 20 | wc -l")
    assert result.returncode == 0 and int(result.stdout) > 5


def test_gzip_file_and_stdout_streaming(posts_path, tmp_path):
    gz = tmp_path / "posts.jsonl.gz"
    sh(f"head -3 {posts_path} | gzip > {gz}", check=True)
    a = sh(f"gpv-chunk -q -t words {gz}").stdout
    b = sh(f"head -3 {posts_path} | gpv-chunk -q -t words").stdout
    assert a == b != b""


def test_sigterm_stops_cleanly_with_complete_output(posts_path, tmp_path):
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(["gpv-chunk", str(posts_path), "-o", str(out)], stderr=subprocess.PIPE)
    # Signal it once it has written a whole record (and so is in its loop, its handler set), while it still
    # has work (the whole file takes it ~10 s): observed, not guessed from the clock.
    deadline = time.monotonic() + 120
    while not (out.exists() and b"\n" in out.read_bytes()):
        assert proc.poll() is None, f"gpv-chunk ended before the signal: {proc.stderr.read().decode()}"
        assert time.monotonic() < deadline, "gpv-chunk wrote nothing within 120 s"
        time.sleep(0.01)
    assert proc.poll() is None, "gpv-chunk finished before the signal"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert err.decode().endswith("what was written is complete; rerun with --resume to finish\n")
    records = [orjson.loads(x) for x in out.read_bytes().splitlines()]  # every line whole
    assert records and records[-1]["chunk"] == records[-1]["n_chunks"] - 1


def test_waiting_on_a_terminal_says_so():
    """With stdin a terminal and no INPUT, the command says it waits (script(1) gives it a pty)."""
    result = subprocess.run(["script", "-qec", "gpv-chunk -t words", "/dev/null"], input=b"\x04",
                            capture_output=True, timeout=30, env={**os.environ, "TERM": "dumb"})
    assert b"gpv-chunk: reading JSONL from standard input (Ctrl-D ends it)" in result.stdout


@pytest.mark.slow
def test_make_demo_reports_what_the_authors_wrote(tmp_path):
    """Issue 26: in `make demo` the built-in parser turned ben's "We should protect what we cannot replace"
    into its opposite plus an invention, and never parsed ana's new team-lead role or chloe's two
    statements. Every perception the demo scores must be something its author wrote (its span points into
    the chunk, and holds it), and each of those four statements must reach the scorer."""
    from .conftest import ROOT, read_jsonl

    demo = tmp_path / "demo"
    env = {**os.environ, "GPV_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "demo-posts", f"DEMO={demo}",
                           f"BIN={Path(sys.executable).parent}"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    scored = read_jsonl(demo / "scored.jsonl")
    assert {r["author"] for r in scored} == {"ana", "ben", "chloe"}
    for r in scored:
        start, end = r["span"]
        assert 0 <= start < end <= len(r["text"])
        said = " ".join(r["text"][start:end].split())
        if r["parse"] == "model":
            assert r["grounding"] >= 0.6
        else:
            assert r["perception"] == said
    for author, statement in (("ben", "We should protect what we cannot replace"),
                              ("ana", "my manager offered me the team lead role"),
                              ("chloe", "I want to decide for myself"),
                              ("chloe", "Everyone deserves to be treated equally")):
        assert any(statement.lower() in r["perception"].lower() for r in scored if r["author"] == author), statement
