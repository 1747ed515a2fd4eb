"""gpv-score's openai backend through network and server faults, against the real llama-cpp-python server.

The server is llama-cpp-python's own OpenAI-compatible server with the built-in SmolLM2 GGUF (--logits_all,
as gpv-score needs); in front of it, tests/servers.py's FaultProxy, a real HTTP proxy that serves the next
fault of its list instead of forwarding a POST /completions: 429 with Retry-After: 1, 500, 503, a TCP reset,
a 200 whose body is not JSON, a 200 with no body. Each faulted request is not forwarded, so the server sees
exactly the requests of a clean run; the output must be byte for byte the clean run's.
"""

import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from .conftest import outside_env
from .servers import FaultProxy

PERCEPTIONS = [{"id": "a#c0#p0", "doc_id": "a", "perception": "I help my neighbours every week."}]
# One record on two values: relevance and valence requests both, plus gpv-score's start-up (the labels' first
# tokens by echo, the echo convention's probe) — about 15 completions, 15-40 s on one thread here.
ARGS = ["-b", "openai", "--values", "Benevolence,Power", "-j", "1", "--batch-size", "1", "--retries", "8",
        "--timeout", "120"]
# Spread over start-up and scoring; None forwards the request untouched.
FAULTS = ["429", None, "500", None, None, "reset", None, None, "503", None, "malformed", None, "empty"]


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
    assert forwarded(proxy) == forwarded(clean_proxy)
    assert len(proxy.requests) == clean_sent + len([f for f in FAULTS if f])
