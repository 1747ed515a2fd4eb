"""Shared fixtures. The data sets live in ../shared beside the checkout (never in the package)."""

import os
import sys
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
