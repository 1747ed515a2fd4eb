"""gpv-parse -j N with the in-process GGUF: N chunks decoded together get the replies of one at a time.

Real components only: the built-in SmolLM2-135M GGUF through llama-cpp-python, its create_chat_completion
(the one-at-a-time path, -j 1) as the reference, and the batched path (runtimes/batching.py). Short real
chunks (the first 60 tokens' worth of pieces of two blog posts), a small context and max_tokens keep the
time down. The batched path's logits match the single path's bit for bit (bench/parse.py --builtin
counts replies over 64 full chunks), so every reply must be the same here.
"""

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest

from gpvtools.method import parsing
from gpvtools.runtimes.chat import ChatSettings, LlamaChat, LlamaChatSettings, build_chat_model, with_jobs
from gpvtools.runtimes.models import builtin_gguf
from gpvtools.streaming.errors import BadRecord

from .conftest import chunk_posts

N_CTX = 1024  # the parsing prompt is about 420 tokens with a 60-token chunk
PARAMS = {"schema": parsing.schema(20, 400), "temperature": 0.0, "max_tokens": 96, "seed": None}


def jsonl(records):
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def messages(text):
    return parsing.messages(text, None, None, "author", None)


@pytest.fixture(scope="module")
def short_chunks(posts_path):
    """Six real chunks: the first three 60-token chunks of the first two blog posts."""
    return chunk_posts(posts_path, 60, 2, 3)


@pytest.fixture(scope="module")
def models():
    """The built-in model one request at a time, and decoding up to 4 together."""
    one = LlamaChat(builtin_gguf(), n_ctx=N_CTX, n_threads=1, repeat_penalty=1.2)
    many = LlamaChat(builtin_gguf(), n_ctx=N_CTX, n_threads=1, repeat_penalty=1.2, parallel=4)
    yield one, many
    one.close()
    many.close()


@pytest.fixture(scope="module")
def reference(models, short_chunks):
    one, _ = models
    return [one.chat(messages(c["text"]), **PARAMS)[0] for c in short_chunks]


def ask_together(model, texts):
    """MODEL's reply to each text (or its BadRecord), all asked at once from as many threads."""

    def ask(text):
        try:
            return model.chat(messages(text), **PARAMS)[0]
        except BadRecord as e:
            return e

    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        return list(pool.map(ask, texts))


def test_j_sets_the_sequences_decoded_together():
    settings = ChatSettings(llama_cpp=LlamaChatSettings(n_ctx=N_CTX, threads=1), use_cache=False)
    single = build_chat_model(with_jobs(settings, 1))
    assert single.concurrency == 1 and single.batched is None and single.ahead == 0
    single.close()
    batched = build_chat_model(with_jobs(settings, 3))
    assert batched.concurrency == 3 and batched.batched.n_seq == 3
    assert batched.ahead > batched.concurrency  # requests queue up behind a long reply
    batched.close()


@pytest.mark.slow
def test_batched_replies_equal_one_at_a_time(models, short_chunks, reference):
    _, many = models
    batched = ask_together(many, [c["text"] for c in short_chunks[:4]])
    differing = [i for i, (a, b) in enumerate(zip(reference, batched)) if a.text != b.text]
    for i in differing:
        print(f"chunk {i}: one at a time {reference[i].text!r}\n          batched {batched[i].text!r}")
    assert not differing
    assert len({r.text for r in batched}) == len(batched)  # each chunk its own reply: the check can fail
    assert [r.completion_tokens for r in batched] == [r.completion_tokens for r in reference[:4]]
    assert [r.prompt_tokens for r in batched] == [r.prompt_tokens for r in reference[:4]]
    assert many.batched.most > 1  # the requests were decoded together, not in turn


@pytest.mark.slow
def test_a_prompt_too_long_fails_alone(models, short_chunks, reference, posts_path):
    one, many = models
    long_text = " ".join(orjson.loads(line)["text"] for line in posts_path.read_bytes().splitlines()[:8])
    with pytest.raises(BadRecord) as alone:
        one.chat(messages(long_text), **PARAMS)
    assert f"exceed context window of {N_CTX}" in alone.value.message
    # Chunks the batched model has not seen: one it has answered would have its whole prompt in the cells
    # already, and its last prompt token evaluated again alone, which llama.cpp computes another way.
    got = ask_together(many, [short_chunks[4]["text"], long_text, short_chunks[5]["text"]])
    assert isinstance(got[1], BadRecord) and got[1].message == alone.value.message
    assert [got[0].text, got[2].text] == [reference[4].text, reference[5].text]


@pytest.mark.slow
def test_gpv_parse_j3_gives_the_j1_output_and_resumes_from_the_cache(short_chunks, tmp_path):
    chunks = short_chunks[:3]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI")}
    env["GPV_CACHE_DIR"] = str(tmp_path / "cache")
    base = ["gpv-parse", "--backend", "llama-cpp", "--threads", "1", "--n-ctx", str(N_CTX), "--max-tokens", "96"]

    def run(*args):
        done = subprocess.run([*base, *args], input=jsonl(chunks), capture_output=True, env=env)
        assert done.returncode == 0, done.stderr.decode()
        return done

    single = run("-j", "1", "--no-cache")
    out = tmp_path / "perceptions.jsonl"
    batched = run("-j", "3", "-o", str(out))
    assert out.read_bytes() == single.stdout
    # a reply that cannot be used is asked for again, so a chunk may take more than one request
    sent = re.search(rb"(\d+) requests: \1 sent, 0 answered from the cache", single.stderr)
    assert sent and int(sent[1]) >= len(chunks), single.stderr.decode()
    assert b"%s requests: %s sent, 0 answered from the cache" % (sent[1], sent[1]) in batched.stderr
    # Keep the first chunk's perceptions and half of the next line, as a killed run leaves them.
    records = out.read_bytes().splitlines(keepends=True)
    kept = [r for r in records if orjson.loads(r)["id"].startswith(chunks[0]["id"] + "#")]
    assert kept and len(kept) < len(records)
    out.write_bytes(b"".join(kept) + records[len(kept)][:20])
    resumed = run("-j", "3", "-o", str(out), "--resume")
    assert out.read_bytes() == single.stdout
    again = re.search(rb"(\d+) requests: 0 sent, \1 answered from the cache", resumed.stderr)
    assert again and len(chunks) - 1 <= int(again[1]) < int(sent[1]), resumed.stderr.decode()
