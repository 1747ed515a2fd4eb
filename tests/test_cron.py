"""gpv-cron: incremental runs over a growing corpus, as cron starts them.

Real commands throughout, each run a subprocess as cron would start it. The slow tests parse with gpv-parse's
OpenAI-compatible client against DelayChatServer (tests/servers.py: a real HTTP server that answers with the
chunk's sentences and counts each distinct request), so that a chunk sent to the parser twice is seen; the
fast ones parse with the sentences backend (no model). The scorer is the dictionary backend. Profiles are
compared with a from-scratch pipeline over the same input (run against a second server of its own).
"""

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from .conftest import ROOT, SHARED, assert_same_profiles, outside_env
from .conftest import read_jsonl as records
from .servers import DelayChatServer

LEXICON = str(SHARED / "data" / "dictionaries" / "schwartz-values-en.json")
EXAMPLES = ROOT / "examples" / "posts.jsonl"  # 6 posts of 3 authors
CRON = [sys.executable, "-m", "gpvtools.commands.cron"]  # what the gpv-cron console script runs
# No model: the parse cuts each chunk into sentences.
SENTENCES = {"chunk": "-q -t words", "parse": "-q --backend sentences", "score": f"-q -m {LEXICON}"}
# The poison record: a document whose text is a number fails gpv-chunk the same way every time.
POISON = b'{"id":"poison","author":"zed","text":123}'


@pytest.fixture
def env(tmp_path):
    return outside_env(GPV_CACHE_DIR=str(tmp_path / "cache"))


def stage_args(url, cache):
    return {"chunk": "-q -t words -n 120", "parse": f"-q --base-url {url} -j 4 --cache {cache}",
            "score": f"-q -m {LEXICON}", "aggregate": "--keep gender"}


def cron_argv(work, args, *inputs, extra=()):
    return [*CRON, "-d", str(work), "--by", "author", *(x for k, v in args.items() for x in (f"--{k}", v)),
            *extra, *map(str, inputs)]


def from_scratch(data, args, env):
    """The profiles of a pipeline over DATA (bytes of JSONL) from scratch, with the stages' ARGS."""
    done = subprocess.run(f"gpv-chunk {args['chunk']} | gpv-parse {args['parse']} | gpv-score {args['score']} "
                          f"| gpv-aggregate -q --by author {args.get('aggregate', '')}", shell=True, input=data,
                          capture_output=True, env=env, check=True)
    return [orjson.loads(line) for line in done.stdout.splitlines()]


def joined(inputs):
    """The input files one after another, as gpv-cron reads them (a missing last newline added)."""
    return b"".join(data + b"\n" * (not data.endswith(b"\n")) for data in (Path(f).read_bytes() for f in inputs))


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
        args = stage_args(server.url, work / "parse-cache")
        for day, inputs in days(posts_path, tmp_path):
            done = subprocess.run(cron_argv(work, args, *inputs), capture_output=True, env=env, timeout=300)
            assert done.returncode == 0, done.stderr.decode()
            want = from_scratch(joined(inputs), stage_args(reference.url, tmp_path / f"reference-cache-{day}"), env)
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
        done = subprocess.run(cron_argv(work, args, *inputs), capture_output=True, env=env, timeout=300)
        assert done.returncode == 0 and b"0 new scored records" in done.stderr, done.stderr.decode()
        assert (work / "profiles.jsonl").read_bytes() == before
        assert set(server.answered.values()) == {1}
        assert not (work / "rejected.jsonl").exists()


def test_a_poison_record_is_set_aside_once_and_holds_nothing_back(tmp_path, env):
    """The issue's three nights, run as cron would: with a PATH that lacks this Python's entry points, from a
    directory of its own. Night 2 brings two good posts, the poison record (its text a number: gpv-chunk refuses
    it) and a post without an author (gpv-aggregate --by author refuses its scores). Nights 2 and 3 bring every
    other document into the profiles, equal to a from-scratch run without the two; each refused record is in
    rejected.jsonl once, with its error, and night 3 does not try it again. Fixed and re-admitted, the poison
    record comes in; the authorless post comes in with --missing-group null."""
    lines = EXAMPLES.read_bytes().splitlines()
    anon = b'{"id":"anon","text":"I help my family every day. Power means little to me."}'
    folder, work = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    rejected = work / "rejected.jsonl"
    bare = {**env, "PATH": "/usr/bin:/bin"}

    def night(*extra, args=SENTENCES):
        done = subprocess.run(cron_argv(work, args, *sorted(folder.glob("*.jsonl")), extra=extra),
                              capture_output=True, env=bare, cwd=tmp_path, timeout=300)
        return done.returncode, done.stderr.decode()

    def want(*good, args=SENTENCES):
        return from_scratch(b"".join(line + b"\n" for line in good), args, env)

    (folder / "1.jsonl").write_bytes(b"\n".join(lines[:3]) + b"\n")
    code, err = night()
    assert code == 0, err
    assert_same_profiles(records(work / "profiles.jsonl"), want(*lines[:3]))

    (folder / "2.jsonl").write_bytes(b"\n".join([*lines[3:5], POISON, anon]) + b"\n")
    code, err = night()
    assert code == 1, err
    assert (f"gpv-chunk: error: line 6: field 'text' must be a string, got a number (set aside in {rejected})\n"
            in err), err
    assert f"gpv-cron: error: 3 records set aside by this run in {rejected} (3 there in all)" in err
    assert_same_profiles(records(work / "profiles.jsonl"), want(*lines[:5]))
    aside = records(rejected)
    assert [(r["_gpv_error"]["command"], r["_gpv_error"]["key"]) for r in aside] == [
        ("gpv-chunk", "poison"), ("gpv-aggregate", "anon#c0#p0"), ("gpv-aggregate", "anon#c0#p1")]
    first = aside[0]
    assert first["_gpv_error"]["error"] == "field 'text' must be a string, got a number"
    assert {k: v for k, v in first.items() if k != "_gpv_error"} == orjson.loads(POISON)
    assert aside[1]["_gpv_error"]["error"].startswith("field 'author' is missing")
    before = rejected.read_bytes()

    (folder / "3.jsonl").write_bytes(lines[5])  # no newline at the end
    code, err = night()
    assert code == 0, err
    assert "must be a string" not in err and "is missing" not in err  # neither was tried again
    assert f"gpv-cron: 3 records set aside by earlier runs in {rejected}, not tried again" in err
    assert rejected.read_bytes() == before
    assert_same_profiles(records(work / "profiles.jsonl"), want(*lines[:6]))

    # Fixed in its file and re-admitted, the poison record is tried again and comes in.
    fixed = POISON.replace(b"123", b'"I want power and control over everything I do."')
    (folder / "2.jsonl").write_bytes((folder / "2.jsonl").read_bytes().replace(POISON, fixed))
    code, err = night("--readmit", "poison")
    assert code == 0, err
    assert f"gpv-cron: --readmit: 1 record of poison taken back from {rejected}, to be tried again" in err
    assert [r["_gpv_error"]["key"] for r in records(rejected)] == ["anon#c0#p0", "anon#c0#p1"]
    assert_same_profiles(records(work / "profiles.jsonl"), want(*lines[:5], fixed, lines[5]))
    assert "zed" in {r["id"] for r in records(work / "profiles.jsonl")}

    # What gpv-aggregate set aside comes back by totalling again; with --missing-group null it is grouped.
    null = {**SENTENCES, "aggregate": "--missing-group null"}
    code, err = night("--readmit", "anon", args=null)
    assert code == 0, err
    assert "totalling" in err and records(rejected) == []
    assert_same_profiles(records(work / "profiles.jsonl"), want(*lines[:5], fixed, anon, lines[5], args=null))
    assert records(work / "profiles.jsonl")[0]["author"] is None


def test_a_stage_argument_with_spaces_reaches_the_stage_intact(tmp_path, env):
    """--parse '--subject "Jane Doe"' gives gpv-parse the two words --subject and Jane Doe (split on spaces,
    it would get '"Jane' and 'Doe"', a stray argument, and refuse)."""
    inputs = tmp_path / "posts.jsonl"
    inputs.write_bytes(b"\n".join(EXAMPLES.read_bytes().splitlines()[:2]) + b"\n")
    work = tmp_path / "state"
    with DelayChatServer() as server:
        args = {**SENTENCES, "parse": f'-q --base-url {server.url} --subject "Jane Doe"'}
        done = subprocess.run(cron_argv(work, args, inputs), capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    perceptions = records(work / "perceptions.jsonl")
    assert perceptions and {p["subject"] for p in perceptions} == {"Jane Doe"}


def blocked_on_lock(proc, lock):
    """Wait until PROC holds LOCK open and sleeps: gpv-cron opens the lock file right before flock(), so it
    is then waiting for the lock."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the waiting run ended"
        fds = Path(f"/proc/{proc.pid}/fd")
        try:
            opened = any(os.readlink(fds / fd) == str(lock) for fd in os.listdir(fds))
            state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            opened, state = False, None
        if opened and state == "S":
            return
        time.sleep(0.01)
    raise AssertionError("the run did not come to wait for the lock")


def test_a_run_finding_the_lock_held_does_nothing_or_waits(tmp_path, env):
    """The test holds DIR/lock itself (flock, as a run in progress does): a run exits 75 and touches nothing;
    with --wait it waits, and runs once the lock is free."""
    inputs = tmp_path / "posts.jsonl"
    inputs.write_bytes(EXAMPLES.read_bytes())
    work = tmp_path / "state"
    work.mkdir()
    lock = work / "lock"
    with open(lock, "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        done = subprocess.run(cron_argv(work, SENTENCES, inputs), capture_output=True, env=env, timeout=300)
        assert done.returncode == 75, done.stderr.decode()
        assert done.stderr.decode() == f"gpv-cron: another run holds {work}/lock; nothing done\n"
        assert os.listdir(work) == ["lock"]
        waiting = subprocess.Popen(cron_argv(work, SENTENCES, inputs, extra=["--wait"]), stderr=subprocess.PIPE,
                                   env=env)
        blocked_on_lock(waiting, lock)
        assert os.listdir(work) == ["lock"]
    assert waiting.wait(timeout=300) == 0, waiting.stderr.read().decode()
    waiting.stderr.close()
    assert_same_profiles(records(work / "profiles.jsonl"), from_scratch(inputs.read_bytes(), SENTENCES, env))
    ids = [r["id"] for r in records(work / "scored.jsonl")]
    assert ids and len(ids) == len(set(ids))


@pytest.mark.slow
def test_a_run_killed_mid_parse_is_finished_by_the_next(posts_path, tmp_path, env):
    inputs = [tmp_path / "posts.jsonl"]
    inputs[0].write_bytes(b"\n".join(posts_path.read_bytes().splitlines()[:12]) + b"\n")
    work = tmp_path / "state"
    with DelayChatServer(delay=0.05) as server, DelayChatServer() as reference:
        args = stage_args(server.url, work / "parse-cache")
        run = subprocess.Popen(cron_argv(work, args, *inputs), stderr=subprocess.DEVNULL, env=env,
                               start_new_session=True)
        deadline = time.monotonic() + 120
        while not (work / "perceptions.jsonl").exists() or (work / "perceptions.jsonl").stat().st_size < 2000:
            assert run.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.01)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        assert not (work / "profiles.jsonl").exists()
        asked = dict(server.answered)
        done = subprocess.run(cron_argv(work, args, *inputs), capture_output=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr.decode()
        assert_same_profiles(records(work / "profiles.jsonl"),
                             from_scratch(joined(inputs), stage_args(reference.url, tmp_path / "reference-cache"), env))
        # The killed run's parses are kept (its output) or cached: only requests in flight at the kill, at most
        # -j 4, may have been answered to a client already dead and be asked again.
        assert asked and sum(n - 1 for n in server.answered.values()) <= 4
        ids = [r["id"] for r in records(work / "scored.jsonl")]
        assert len(ids) == len(set(ids))


def test_usage_errors(tmp_path, env):
    for argv, message in [([], "give at least one INPUT file"),
                          ([str(tmp_path / "nope.jsonl")], "cannot read"),
                          (["--parse", "--subject 'Jane", str(EXAMPLES)], "No closing quotation"),
                          (["--score", "-o x.jsonl", str(EXAMPLES)], "--score: -o is set by gpv-cron itself")]:
        done = subprocess.run([*CRON, "-d", str(tmp_path / "state"), *argv], capture_output=True, env=env)
        err = done.stderr.decode()
        assert done.returncode == 2 and err.startswith("gpv-cron: error: ") and message in err, err
    done = subprocess.run([*CRON, "--bogus", "x"], capture_output=True, env=env)
    assert done.returncode == 2 and b"No such option '--bogus'" in done.stderr
    assert not (tmp_path / "state").exists()
    done = subprocess.run([*CRON, "-d", str(tmp_path / "state"), "--readmit", "nobody", str(EXAMPLES)],
                          capture_output=True, env=env)
    assert done.returncode == 2 and done.stderr.decode() == (
        f"gpv-cron: error: --readmit nobody: nothing with that id is set aside in {tmp_path}/state/rejected.jsonl\n")
    assert os.listdir(tmp_path / "state") == ["lock"]
    # bin/gpv-cron, the checkout's shim, runs the same command.
    helptext = subprocess.run([str(ROOT / "bin" / "gpv-cron"), "--help"], capture_output=True, env=env)
    assert helptext.returncode == 0 and helptext.stdout.startswith(b"Usage: gpv-cron"), helptext.stderr
    assert b"--subject \"Jane Doe\"" in helptext.stdout
