"""Shared fixtures. The data sets live in ../shared beside the checkout (never in the package)."""

import functools
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

os.environ["HF_HUB_OFFLINE"] = "1"  # a hub lookup would hang ~48 s without network
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Subprocess tests run the installed entry points (gpv-chunk, …) of the Python running the tests.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GPV_SHARED", ROOT.parent / "shared"))
POSTS = SHARED / "data" / "blogs" / "posts-dev.jsonl"


# --- what a test needs from the machine, and whether it may skip without it --------------------------------------
# A test that cannot run here for want of a part of the system skips through require(PART, WHY), and only so.
# GPV_REQUIRE (a comma-separated list of these parts, or "all": every part but those marked below) makes such
# a test fail instead, with WHY; .ci/run sets GPV_REQUIRE=all, so that "not here" cannot pass for "broken"
# (docs/development.md). Under GPV_REQUIRE any other skip (pytest.skip, a skipif mark, importorskip) fails
# too, so a skip added later cannot hide a failure without naming what it lacks.
PARTS = {
    "chromium": "Chromium, chromedriver and selenium (tests/browser.py: gpv-report's HTML in a real browser)",
    "slurm": "SLURM's daemons and clients and munge, run as root (tests/slurmcluster.py)",
    "index": "the package index pip is configured with (tests/test_core_install.py fetches the core dependencies)",
    "dev": "a package of the dev extra (pip install -e '.[dev]')",
    "cuda": "a CUDA GPU, seen by torch (the CUDA tests); not in all: CI has none",
    "no-cuda": "no CUDA GPU (the tests that a GPU option is refused without one); not in all",
}
NOT_IN_ALL = {"cuda", "no-cuda"}
# Read once, here: test modules take GPV_* variables out of os.environ so that commands run in-process do not see
# the caller's settings (test_score.py's clean_env), and the policy must outlast that.
GPV_REQUIRE = os.environ.get("GPV_REQUIRE", "")


def required_parts(value=None):
    """The parts GPV_REQUIRE (or VALUE) asks for; a name that is no part is a usage error."""
    value = GPV_REQUIRE if value is None else value
    names = {name.strip() for name in value.split(",") if name.strip()}
    unknown = sorted(names - set(PARTS) - {"all"})
    if unknown:
        raise pytest.UsageError(f"GPV_REQUIRE={value}: {', '.join(unknown)} not among the parts "
                                f"{', '.join(sorted(PARTS))} (or all)")
    return (names - {"all"}) | (set(PARTS) - NOT_IN_ALL if "all" in names else set())


def require(part, missing):
    """The test needs PART; MISSING says why it is not here (None or "" when it is). Skips the test, naming
    the part, or fails it with MISSING where GPV_REQUIRE asks for PART."""
    __tracebackhide__ = True  # the skip or failure is reported at the caller's line
    if part not in PARTS:
        raise ValueError(f"require: {part!r} is not a part (tests/conftest.py PARTS)")
    if not missing:
        return
    if part in required_parts():
        pytest.fail(f"{part} is missing, and GPV_REQUIRE={GPV_REQUIRE} requires it: {missing}",
                    pytrace=False)
    skip = pytest.skip.Exception(f"{part} not here: {missing}")
    skip.gpv_part = part  # what pytest_runtest_makereport lets pass under GPV_REQUIRE
    raise skip


def dev_module(name):
    """import NAME, a package of the dev extra; require("dev", …) when it is not installed."""
    __tracebackhide__ = True
    try:
        return importlib.import_module(name)
    except ImportError as e:
        require("dev", f"{name} cannot be imported ({e}): pip install -e '.[dev]'")


def cuda_missing():
    """Why the CUDA tests cannot run here (no torch, no GPU), or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    return None if torch.cuda.is_available() else "no CUDA GPU here"


def pytest_configure(config):
    required_parts()  # a misspelt part stops the run before any test, not after an hour of them


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if (report.skipped and not hasattr(report, "wasxfail") and call.excinfo is not None
            and not hasattr(call.excinfo.value, "gpv_part") and GPV_REQUIRE):
        report.outcome = "failed"
        report.longrepr = (f"skipped ({call.excinfo.value.msg}), and GPV_REQUIRE={GPV_REQUIRE} "
                           "allows only the skips of tests/conftest.py's require(PART, WHY), which name "
                           "the part that is missing")
    return report


# --- whether a process waits for input -------------------------------------------------------------------------

def _proc_state(pid):
    """(the state letter of /proc/PID/stat, the fields of /proc/PID/syscall) of PID's main thread."""
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state, Path(f"/proc/{pid}/syscall").read_text().split()


@functools.cache
def read_syscall():
    """read(2)'s number as /proc/PID/syscall shows it (0 on x86-64, 63 on arm64, 3 on others), found here: that
    of a child that waits in os.read(0, 1) on an empty pipe (asleep, in a call on fd 0, twice 20 ms apart)."""
    child = subprocess.Popen([sys.executable, "-S", "-c", "import os; os.read(0, 1)"], stdin=subprocess.PIPE)
    try:
        deadline, seen = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            try:
                state, call = _proc_state(child.pid)
            except OSError as e:
                pytest.fail(f"cannot read /proc/{child.pid}/syscall, which these tests need: {e}", pytrace=False)
            number = call[0] if state == "S" and len(call) > 1 and call[1] == "0x0" and call[0].isdigit() else None
            if number is not None and number == seen:
                return int(number)
            seen = number
            time.sleep(0.02)
        pytest.fail("a child waiting in os.read(0, 1) never showed a read in /proc/PID/syscall", pytrace=False)
    finally:
        child.kill()
        child.wait()


def waits_in_read(pid, fd=0):
    """Whether process PID's main thread sleeps in read(FD, …): a stage reading its input that has nothing to
    do until more comes."""
    try:
        state, call = _proc_state(pid)
    except OSError:
        return False
    return state == "S" and call[:2] == [str(read_syscall()), hex(fd)]


def outside_env(**extra):
    """os.environ without GPV_*, OPENAI_* and SLURM_* variables, plus EXTRA: a command's environment as
    outside any run or array job. PATH keeps this Python's entry points first (set above)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPV_", "OPENAI_", "SLURM_"))}
    env.update(extra)
    return env


def read_jsonl(path):
    return [orjson.loads(line) for line in Path(path).read_bytes().splitlines()]


def assert_same_record(got, want, tol, where="record"):
    """GOT equals WANT: the same keys, strings, counts and flags, and every float within TOL."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{where}: {got!r} != {want!r}"
        for k in want:
            assert_same_record(got[k], want[k], tol, f"{where}.{k}")
    elif isinstance(want, float):
        assert isinstance(got, float) and abs(got - want) <= tol, f"{where}: {got} != {want} (tolerance {tol})"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def assert_same_profiles(got, want, tol=1e-12):
    """Profiles (gpv-aggregate's output) equal: the same ids in the same order, and each profile equal as
    assert_same_record has it, scores and sds within TOL (a merge pools sums, then divides)."""
    assert [r["id"] for r in got] == [r["id"] for r in want] and want
    for g, w in zip(got, want):
        assert_same_record(g, w, tol, f"profile {w['id']}")


@pytest.fixture(scope="session")
def posts_path():
    if not POSTS.exists():
        pytest.fail(f"{POSTS} is missing: the tests need ../shared beside the checkout (or GPV_SHARED)")
    return POSTS


@pytest.fixture
def invoke():
    """Run a click command in-process; stdout and stderr come back separately."""

    def run(command, args, input=b""):
        if isinstance(input, str):
            input = input.encode()
        return CliRunner().invoke(command, args, input=input, catch_exceptions=False)

    return run


# Perceptions for the scoring tests: real sentences from the blog posts, picked the same way every run.
import re  # noqa: E402

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def blog_sentences(path, n, per_post=2, min_words=5, max_words=40):
    """The first N distinct sentences of MIN..MAX words, at most PER_POST from each post, in file order.

    bench/score.py imports this, so the benchmark scores the perceptions the tests do.
    """
    out, seen = [], set()
    for line in Path(path).read_bytes().splitlines():
        taken = 0
        for sentence in SENTENCE_END.split(orjson.loads(line)["text"]):
            sentence = " ".join(sentence.split())
            if min_words <= len(sentence.split()) <= max_words and sentence not in seen and taken < per_post:
                seen.add(sentence)
                out.append(sentence)
                taken += 1
                if len(out) == n:
                    return out
    return out


def chunk_posts(posts_path, tokens, posts, per_post, keep=()):
    """The first PER_POST chunks of TOKENS built-in tokens of each of the first POSTS blog posts, as
    gpv-chunk records (id, doc_id, the post's KEEP fields, text)."""
    from gpvtools.method.chunking import Chunker, make_counter

    chunker = Chunker(make_counter("builtin"), tokens, 0)
    out = []
    for line in posts_path.read_bytes().splitlines()[:posts]:
        post = orjson.loads(line)
        for k, (text, *_) in enumerate(chunker.split(post["text"])[:per_post]):
            out.append({"id": f"{post['id']}#c{k}", "doc_id": post["id"], **{f: post[f] for f in keep}, "text": text})
    return out


@pytest.fixture(scope="session")
def sentences(posts_path):
    """200 perception-sized sentences from the blog posts (tests take the first k)."""
    found = blog_sentences(posts_path, 200)
    assert len(found) == 200
    return found


# Fixtures that load or train a real model once per module: every test that uses one is slow too, so
# that `make test-fast` (pytest -m "not slow") never pays for them. Tests slow in their own right carry
# @pytest.mark.slow where they are defined.
HEAVY_FIXTURES = {"llama_server", "llama_run", "hf_batches", "llama", "llama_rel", "llama_by_precision", "hf", "hf_rel", "server",
                  "bos_gguf", "tiny_run", "builtin_chunks", "core"}


def pytest_collection_modifyitems(items):
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """The base URL of llama-cpp-python's own OpenAI-compatible server on 127.0.0.1, serving the built-in
    GGUF with logits for every token (what gpv-score's openai backend reads), one per test module."""
    from .servers import start_llama_server, stop_server

    proc, url, log = start_llama_server(tmp_path_factory.mktemp("server") / "server.log", "--logits_all", "true",
                                        threads=1)
    yield url
    stop_server(proc, log)
