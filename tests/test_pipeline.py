"""Real processes in real shell pipelines: the entry points as a user runs them."""

import os
import signal
import subprocess
import time

import orjson


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
