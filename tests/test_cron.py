"""bin/gpv-cron: incremental runs over a growing corpus, as cron starts them.

Real commands throughout. The parser is gpv-parse's OpenAI-compatible client against DelayChatServer
(tests/servers.py: a real HTTP server that answers with the chunk's sentences and counts each distinct
request), so that a chunk sent to the parser twice is seen; the scorer is the dictionary backend. Each
day's profiles are compared with a from-scratch pipeline over all input so far, run against a second
server of its own.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from .conftest import ROOT, SHARED, assert_same_profiles, outside_env, read_jsonl as records
from .servers import DelayChatServer

LEXICON = str(SHARED / "data" / "dictionaries" / "schwartz-values-en.json")
SCRIPT = ROOT / "bin" / "gpv-cron"


@pytest.fixture
def env(tmp_path):
    return outside_env(GPV_CACHE_DIR=str(tmp_path / "cache"))


def stage_args(url, cache):
    return {"chunk": "-q -t words -n 120", "parse": f"-q --base-url {url} -j 4 --cache {cache}",
            "score": f"-q -m {LEXICON}", "aggregate": "--keep gender"}


def cron_argv(work, url, *inputs, extra=()):
    args = stage_args(url, work / "parse-cache")
    return [str(SCRIPT), "-d", str(work), "--by", "author", *(x for k, v in args.items() for x in (f"--{k}", v)),
            *extra, *map(str, inputs)]


def from_scratch(inputs, url, cache, env):
    a = stage_args(url, cache)
    text = b"".join(data + b"\n" * (not data.endswith(b"\n")) for data in (Path(f).read_bytes() for f in inputs))
    done = subprocess.run(f"gpv-chunk {a['chunk']} | gpv-parse {a['parse']} | gpv-score {a['score']} "
                          f"| gpv-aggregate -q --by author {a['aggregate']}", shell=True, input=text,
                          capture_output=True, env=env, check=True)
    return [orjson.loads(line) for line in done.stdout.splitlines()]


def days(posts_path, tmp_path):
    """Three days of input: posts.jsonl grows by appended posts each day, and each day after the first
    brings a file of its own, whose last line has no newline. Yields the day's input files, in the order a
    glob gives them."""
    lines = posts_path.read_bytes().splitlines()
    posts, seen = tmp_path / "in" / "posts.jsonl", 0
    posts.parent.mkdir()
    for day, (append, own) in enumerate([(12, 0), (6, 6), (6, 6)], 1):
        with open(posts, "ab") as f:
            f.write(b"".join(line + b"\n" for line in lines[seen:seen + append]))
        seen += append
        if own:
            (posts.parent / f"day{day}.jsonl").write_bytes(b"\n".join(lines[seen:seen + own]))
            seen += own
        yield day, sorted(posts.parent.glob("*.jsonl"))


@pytest.mark.slow
def test_three_days_of_growing_input_equal_a_full_run_and_no_chunk_is_parsed_twice(posts_path, tmp_path, env):
    work = tmp_path / "state"
    with DelayChatServer() as server, DelayChatServer() as reference:
        for day, inputs in days(posts_path, tmp_path):
            done = subprocess.run(cron_argv(work, server.url, *inputs), capture_output=True, env=env, timeout=300)
            assert done.returncode == 0, done.stderr.decode()
            want = from_scratch(inputs, reference.url, tmp_path / f"reference-cache-{day}", env)
            assert_same_profiles(records(work / "profiles.jsonl"), want)
            chunks = records(work / "chunks.jsonl")
            texts = {c["text"] for c in chunks}  # a text two posts share is one request, answered from the cache after
            # Every chunk text so far was asked about exactly once, over all the days' runs.
            assert len(server.answered) == len(texts) and set(server.answered.values()) == {1}, day
            assert len(list(work.glob("folded-*.jsonl"))) == 1
            print(f"\nday {day}: {len(inputs)} files, {len(chunks)} chunks ({len(texts)} texts) each parsed once, "
                  f"{len(want)} author profiles equal to a full run within 1e-12")
        # A run with nothing new asks nothing and leaves the profiles as they were.
        before = (work / "profiles.jsonl").read_bytes()
        done = subprocess.run(cron_argv(work, server.url, *inputs), capture_output=True, env=env, timeout=300)
        assert done.returncode == 0 and b"0 new scored records" in done.stderr, done.stderr.decode()
        assert (work / "profiles.jsonl").read_bytes() == before
        assert set(server.answered.values()) == {1}


@pytest.mark.slow
def test_two_runs_started_at_once_do_not_overlap(posts_path, tmp_path, env):
    inputs = [tmp_path / "posts.jsonl"]
    inputs[0].write_bytes(b"\n".join(posts_path.read_bytes().splitlines()[:12]) + b"\n")
    with DelayChatServer(delay=0.02) as server, DelayChatServer() as reference:
        want = from_scratch(inputs, reference.url, tmp_path / "reference-cache", env)
        work = tmp_path / "refusing"
        runs = [subprocess.Popen(cron_argv(work, server.url, *inputs), stderr=subprocess.PIPE, env=env)
                for _ in range(2)]
        outcomes = sorted((p.wait(timeout=300), p.stderr.read().decode()) for p in runs)
        assert [code for code, _ in outcomes] == [0, 75], outcomes
        assert outcomes[1][1] == f"gpv-cron: another run holds {work}/lock; nothing done\n"
        assert_same_profiles(records(work / "profiles.jsonl"), want)

        work = tmp_path / "waiting"
        runs = [subprocess.Popen(cron_argv(work, server.url, *inputs, extra=["--wait"]), stderr=subprocess.PIPE,
                                 env=env) for _ in range(2)]
        outcomes = sorted((p.wait(timeout=300), p.stderr.read().decode()) for p in runs)
        assert [code for code, _ in outcomes] == [0, 0], outcomes
        assert sorted(err.split(";")[0] for _, err in outcomes)[0] == "gpv-cron: 0 new scored records"
        assert_same_profiles(records(work / "profiles.jsonl"), want)
        ids = [r["id"] for r in records(work / "scored.jsonl")]
        assert len(ids) == len(set(ids))


@pytest.mark.slow
def test_a_run_killed_mid_parse_is_finished_by_the_next(posts_path, tmp_path, env):
    inputs = [tmp_path / "posts.jsonl"]
    inputs[0].write_bytes(b"\n".join(posts_path.read_bytes().splitlines()[:12]) + b"\n")
    work = tmp_path / "state"
    with DelayChatServer(delay=0.05) as server, DelayChatServer() as reference:
        run = subprocess.Popen(cron_argv(work, server.url, *inputs), stderr=subprocess.DEVNULL, env=env,
                               start_new_session=True)
        deadline = time.monotonic() + 120
        while not (work / "perceptions.jsonl").exists() or (work / "perceptions.jsonl").stat().st_size < 2000:
            assert run.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.01)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        assert not (work / "profiles.jsonl").exists()
        asked = dict(server.answered)
        done = subprocess.run(cron_argv(work, server.url, *inputs), capture_output=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr.decode()
        assert_same_profiles(records(work / "profiles.jsonl"), from_scratch(inputs, reference.url,
                                                                            tmp_path / "reference-cache", env))
        # The killed run's parses are kept (its output) or cached: only requests in flight at the kill, at most
        # -j 4, may have been answered to a client already dead and be asked again.
        assert asked and sum(n - 1 for n in server.answered.values()) <= 4
        ids = [r["id"] for r in records(work / "scored.jsonl")]
        assert len(ids) == len(set(ids))


def test_usage_errors(tmp_path, env):
    for argv, message in [([], b"give at least one INPUT file"),
                          ([str(tmp_path / "nope.jsonl")], b"cannot read"),
                          (["--bogus", "x"], b"unknown option --bogus")]:
        done = subprocess.run([str(SCRIPT), *argv], capture_output=True, env=env)
        assert done.returncode == 2 and done.stderr.startswith(b"gpv-cron: error: ") and message in done.stderr
    helptext = subprocess.run([str(SCRIPT), "--help"], capture_output=True, env=env)
    assert helptext.returncode == 0 and helptext.stdout.startswith(b"Usage: gpv-cron")
