"""gpv-score's openai backend through network and server faults, against the real llama-cpp-python server.

The server is llama-cpp-python's own OpenAI-compatible server with the built-in SmolLM2 GGUF (--logits_all,
as gpv-score needs); in front of it, tests/servers.py's FaultProxy, a real HTTP proxy that serves the next
fault of its list instead of forwarding a POST /completions: 429 with Retry-After: 1, 429 with Retry-After:
86400 (cut to --max-retry-wait), 500, 503, a TCP reset, a 200 whose body is not JSON, a 200 with no body. Each
faulted request is not forwarded, so the server sees exactly the requests of a clean run; the output must be
byte for byte the clean run's.

Then the transport's options: one definition, one default each, for gpv-score, gpv-parse and gpv-elicit; and a
server asking to wait a day (Retry-After: 86400), through gpv-parse against the DelayChatServer stand-in, which
is waited on no longer than --max-retry-wait.
"""

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import click
import orjson
import pytest

from gpvtools.commands import elicit, parse, score
from gpvtools.runtimes.server import ServerSettings

from .conftest import outside_env
from .servers import DelayChatServer, FaultProxy

PERCEPTIONS = [{"id": "a#c0#p0", "doc_id": "a", "perception": "I help my neighbours every week."}]
# One record on two values: relevance and valence requests both, plus gpv-score's start-up (the labels' first
# tokens by echo, the echo convention's probe) — about 15 completions, 15-40 s on one thread here.
ARGS = ["-b", "openai", "--values", "Benevolence,Power", "-j", "1", "--batch-size", "1", "--retries", "8",
        "--timeout", "120", "--max-retry-wait", "1"]
# Spread over start-up and scoring; None forwards the request untouched.
FAULTS = ["429", None, "500", None, "429-day", "reset", None, None, "503", None, "malformed", None, "empty"]


def gpv(name):
    return str(Path(sys.executable).parent / f"gpv-{name}")


def jsonl(records):
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


@pytest.fixture
def env(tmp_path):
    return outside_env(GPV_CACHE_DIR=str(tmp_path / "cache"))


def score_through(proxy, env):
    return subprocess.run([gpv("score"), *ARGS, "--base-url", proxy.url], input=jsonl(PERCEPTIONS),
                          capture_output=True, env=env, timeout=600)


def forwarded(proxy):
    """The requests the upstream server answered (faulted ones never reach it), by digest, as a multiset."""
    return Counter(digest for _, digest, what in proxy.log if what.startswith("forwarded"))


@pytest.mark.slow
def test_faults_on_completions_are_retried_and_the_output_is_the_clean_runs(llama_server, env):
    with FaultProxy(llama_server) as clean_proxy:
        clean = score_through(clean_proxy, env)
    assert clean.returncode == 0, clean.stderr.decode()
    assert clean_proxy.injected == {} and all(what == "forwarded 200" for _, _, what in clean_proxy.log)
    clean_sent = len(clean_proxy.requests)
    assert clean_sent >= len(FAULTS), f"only {clean_sent} completions: the faults would not all be served"

    with FaultProxy(llama_server, FAULTS) as proxy:
        faulty = score_through(proxy, env)
    err = faulty.stderr.decode()
    print(f"\nclean run: {clean_sent} completions; faulted run: {len(proxy.requests)} requests, "
          f"faults served {proxy.injected}\nstderr of the faulted run:\n{err}")
    assert faulty.returncode == 0, err
    assert "Traceback" not in err
    # every fault was really served, on /completions (the proxy faults nothing else here)
    assert proxy.faults == [] and proxy.injected == {f: 1 for f in FAULTS if f}
    assert all(path.endswith("/v1/completions") for path, _ in proxy.requests)
    assert faulty.stdout == clean.stdout
    out = [orjson.loads(line) for line in faulty.stdout.splitlines()]
    assert [r["id"] for r in out] == ["a#c0#p0"] and set(out[0]["values"]) == {"Benevolence", "Power"}
    # each faulted request was sent again, and the server got exactly the clean run's requests: nothing lost,
    # nothing asked twice once answered
    log = proxy.log
    for i, (when, digest, what) in enumerate(log):
        if what in FAULTS:
            retry = next((t for t, d, w in log[i + 1:] if d == digest), None)
            assert retry is not None, f"the request that got {what} was never sent again"
            if what == "429":  # Retry-After: 1 is obeyed
                assert retry - when >= 1.0, f"retried {retry - when:.2f} s after a 429 with Retry-After: 1"
            if what == "429-day":  # Retry-After: 86400 is cut to --max-retry-wait 1
                assert 1.0 <= retry - when < 30, f"retried {retry - when:.2f} s after a 429 with Retry-After: 86400"
    assert (f"gpv-score: the server at {proxy.url} asked to wait 86400 s (Retry-After); waiting 1 s "
            f"(--max-retry-wait)\n") in err
    assert forwarded(proxy) == forwarded(clean_proxy)
    assert len(proxy.requests) == clean_sent + len([f for f in FAULTS if f])


# --- the transport's options, and a server asking to wait a day --------------------------------------------------

TRANSPORT = ["base_url", "api_key", "timeout", "retries", "backoff", "max_retry_wait"]
COMMANDS = {"gpv-score": score.main, "gpv-parse": parse.main, "gpv-elicit questions": elicit.main.commands["questions"],
            "gpv-elicit ask": elicit.main.commands["ask"]}


def transport_of(command):
    """The transport options of COMMAND, each as click describes it (name, flags, type, default, help, env)."""
    return {p.name: p.to_info_dict() for p in command.params if p.name in TRANSPORT}


def test_every_command_that_talks_to_a_server_has_the_same_transport_options():
    score_options = transport_of(score.main)
    assert list(score_options) == TRANSPORT
    for name, command in COMMANDS.items():
        options = transport_of(command)
        # gpv-elicit ask has no --base-url: each --subject names its server
        expected = {k: v for k, v in score_options.items() if k != "base_url" or name != "gpv-elicit ask"}
        assert options == expected, name
    # one default each, and the transport's own: a ServerSettings made without the options behaves the same
    defaults = ServerSettings()
    for field in ("timeout", "retries", "backoff", "max_retry_wait"):
        assert score_options[field]["default"] == getattr(defaults, field), field
    # and --help says so in each command
    for name, command in COMMANDS.items():
        with click.Context(command, info_name=name) as ctx:
            text = " ".join(command.get_help(ctx).split())
        assert "--timeout SECONDS" in text and "[default: 120.0; x>=0.1]" in text, name
        assert "[default: 6; x>=0]" in text and "[default: 300.0; x>=0]" in text, name


CHUNKS = [{"id": "a#c0", "doc_id": "a", "text": "I help my neighbours every week. Family comes first for me."},
          {"id": "b#c0", "doc_id": "b", "text": "Winning the match meant everything to me today."}]


def parse_through(url, env, *args, timeout=60):
    """gpv-parse on CHUNKS through the server at URL. TIMEOUT: a run that waits out a day's Retry-After fails
    the test by running over, instead of hanging it."""
    return subprocess.run([gpv("parse"), "--base-url", url, "-j", "1", "--no-cache", *args], input=jsonl(CHUNKS),
                          capture_output=True, env=env, timeout=timeout)


def test_a_day_long_retry_after_is_cut_to_max_retry_wait_and_logged(env):
    with DelayChatServer() as server:
        clean = parse_through(server.url, env)
        assert clean.returncode == 0, clean.stderr.decode()
        with FaultProxy(server.url, ["429-day"]) as proxy:
            start = time.monotonic()
            result = parse_through(proxy.url, env, "--max-retry-wait", "1")
            took = time.monotonic() - start
            log = list(proxy.log)
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert result.stdout == clean.stdout and result.stdout
    assert proxy.injected == {"429-day": 1}
    assert (f"gpv-parse: the server at {proxy.url} asked to wait 86400 s (Retry-After); waiting 1 s "
            f"(--max-retry-wait)\n") in err
    # the 429's request was sent again after the cut wait: at least 1 s, far from a day
    when, digest, what = log[0]
    retry = next(t for t, d, _ in log[1:] if d == digest)
    assert what == "429-day" and 1.0 <= retry - when < 30, retry - when
    assert took < 45, took
    assert "1 retries, 0 failed" in err


def test_a_server_that_keeps_asking_for_a_day_stops_the_run(env, tmp_path):
    with DelayChatServer() as server, FaultProxy(server.url, ["429-day"] * 3) as proxy:
        out = tmp_path / "perceptions.jsonl"
        result = parse_through(proxy.url, env, "--max-retry-wait", "0.2", "--retries", "2", "-q", "-o", str(out))
    err = result.stderr.decode()
    # not the chunk's fault, so not --on-error's: the run stops, to be resumed, and says why
    assert result.returncode == 1, err
    assert proxy.injected == {"429-day": 3}
    assert err == (f"gpv-parse: error: the server at {proxy.url} still asks to wait 86400 s (Retry-After) after 2 "
                   f"retries, longer than --max-retry-wait 0.2 s: the server answered 429: injected 429\n")
    # -q: the waits were not logged (the error is)
    assert "asked to wait" not in err
    assert out.read_bytes() == b""
