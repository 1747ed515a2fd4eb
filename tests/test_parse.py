"""gpv-parse: the reply's validation, the cache, concurrency in order, faults, kills and resume, real models.

Servers (tests/servers.py): llama-cpp-python's own OpenAI-compatible server with the SmolLM2 GGUF, a
fault-injecting HTTP proxy in front of a server, and a chat server that answers after a fixed delay with
the sentences of the chunk (deterministic, so runs can be compared byte for byte).
"""

import hashlib
import os
import random
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from gpvtools.commands import parse
from gpvtools.method import parsing
from gpvtools.runtimes.cache import ResponseCache, request_key
from gpvtools.runtimes.models import builtin_gguf
from gpvtools.streaming.errors import BadRecord

from .conftest import chunk_posts
from .servers import DelayChatServer, FaultProxy, GatedChatServer, start_llama_server, stop_server

CHUNKS = [
    {"id": "a#c0", "doc_id": "a", "author": "ann", "text": "I help my neighbours every week. Family comes first for me."},
    {"id": "a#c1", "doc_id": "a", "author": "ann", "text": "Short one."},  # no sentence of 4 words: no perceptions
    {"id": "b#c0", "doc_id": "b", "author": "bob", "text": "Winning the match meant everything to me today."},
    {"id": "c#c0", "doc_id": "c", "author": "cy", "text": "I love trying new food. Travel keeps my mind open. So fun!"},
]


def jsonl(records):
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def lines(text):
    return [orjson.loads(line) for line in text.splitlines()]


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


def remote(url, cache_dir, *extra):
    return ["--base-url", url, "--cache", str(cache_dir), "--backoff", "0.05", *extra]


# --- the reply ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, expected", [
    ('{"perceptions": ["Loves dogs", "  Values  honesty "]}', ["Loves dogs", "Values honesty"]),
    ('```json\n{"perceptions": ["Loves dogs"]}\n```', ["Loves dogs"]),
    ('Sure! Here it is: {"perceptions": ["Loves dogs"]} Hope this helps.', ["Loves dogs"]),
    ('{"perceptions": []}', []),
    ('{"perceptions": ["", "  ", "x"]}', ["x"]),
])
def test_replies_that_are_read(reply, expected):
    assert parsing.read_perceptions(reply) == expected


@pytest.mark.parametrize("reply, message", [
    ("", "the model's reply is empty"),
    ("I cannot help with that.",
     'the model\'s reply is not JSON (Expecting value at character 0): "I cannot help with that."'),
    ('{"perceptions": ["a", ',
     'the model\'s reply is not JSON (Expecting value at character 21): "{\\"perceptions\\": [\\"a\\","'),
    ('{"ideas": ["x"]}', 'the model\'s reply has no "perceptions" list: "{\\"ideas\\": [\\"x\\"]}"'),
    ('["x"]', 'the model\'s reply has no "perceptions" list: "[\\"x\\"]"'),
    ('{"perceptions": "x"}', '"perceptions" in the model\'s reply is not a list of strings: '
                             '"{\\"perceptions\\": \\"x\\"}"'),
    ('{"perceptions": [1, 2]}', '"perceptions" in the model\'s reply is not a list of strings: '
                                '"{\\"perceptions\\": [1, 2]}"'),
])
def test_replies_that_are_errors(reply, message):
    with pytest.raises(parsing.BadReply) as e:
        parsing.read_perceptions(reply)
    assert e.value.message == message
    assert isinstance(e.value, BadRecord)  # where nothing asks again, a reply's fault is its chunk's error


def test_a_raw_newline_inside_a_string_is_read_not_called_not_json():
    """SmolLM2 wrote this (issue 26): a newline inside a JSON string, which strict JSON refuses. It was
    rejected as "not JSON" with an excerpt that showed valid JSON; it is read now, and an excerpt shows
    such characters escaped."""
    reply = '{"perceptions": ["The above text is based on the following JSON data: \n", " "]}'
    assert parsing.read_perceptions(reply) == ["The above text is based on the following JSON data:"]
    assert parsing.excerpt("a\tb\nc") == '"a\\tb\\nc"'


def test_clean_drops_repeats_and_copies_of_the_example_only_where_the_text_lacks_them():
    example = parsing.EXAMPLE_PERCEPTIONS[0]
    found = ["Values family", "values family", example, "Cares for neighbours"]
    assert parsing.clean(found, "A text about my family and neighbours.") == (
        ["Values family", "Cares for neighbours"], 1, 1)
    # a chunk that really is about Don Bosco keeps it
    kept, _, echoes = parsing.clean([example], "Back in Don Bosco, happy meeting classmates from the novitiate.")
    assert (kept, echoes) == ([example], 0)


def test_prompt_is_the_papers_and_the_subject_variant_names_the_subject():
    system = parsing.system_prompt()
    assert system.startswith("[Background]\nHuman values are the core beliefs")
    assert "target the value of the measurement subject (the author)." in system
    assert 'Your response: {"perceptions": ["Feeling happy to be back in Don Bosco' in system
    named = parsing.system_prompt("Ada")
    assert "measurement subject (Ada)" in named and "parse it into Ada's perceptions" in named
    assert '{"perceptions": []}' in named
    assert parsing.messages("Hi there.")[1] == {"role": "user", "content": 'Text: "Hi there."'}


def test_sentences_backend_splits_on_sentence_ends(invoke):
    text = 'I like tea. "Really, I do!" she said. Ok? Fine then, go on.'
    result = invoke(parse.main, ["--backend", "sentences"], jsonl([{"id": "t", "text": text}]))
    assert [r["perception"] for r in lines(result.stdout)] == [
        "I like tea.", '"Really, I do!" she said. Ok?', "Fine then, go on."]  # "Ok?" alone joins its neighbour


# --- the cache ------------------------------------------------------------------------------------------------

def test_cache_files_are_private_atomic_and_keyed_without_credentials(tmp_path):
    cache = ResponseCache(tmp_path / "c")
    key = request_key({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert cache.get(key) is None
    cache.put(key, {"text": "hello"})
    assert cache.get(key) == {"text": "hello"}
    files = list((tmp_path / "c").rglob("*.json"))
    assert len(files) == 1 and not list((tmp_path / "c").rglob("*.tmp"))
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o700
    files[0].write_bytes(b"{torn")  # a damaged entry is a miss, not a crash
    assert cache.get(key) is None


def test_api_key_never_reaches_the_cache_or_stderr(invoke, tmp_path, cache_dir):
    secret = "sk-test-0123456789abcdef"
    with DelayChatServer() as server:
        result = invoke(parse.main, remote(server.url, cache_dir, "--api-key", secret), jsonl(CHUNKS[:1]))
    assert result.exit_code == 0
    assert secret not in result.stderr and secret not in result.stdout
    for path in cache_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes()


# --- against a server -------------------------------------------------------------------------------------------

def test_records_from_a_server(invoke, cache_dir):
    with DelayChatServer() as server:
        result = invoke(parse.main, remote(server.url, cache_dir), jsonl(CHUNKS))
    assert result.exit_code == 0, result.stderr
    out = lines(result.stdout)
    assert [r["id"] for r in out] == ["a#c0#p0", "a#c0#p1", "a#c1#p0", "b#c0#p0", "c#c0#p0", "c#c0#p1"]
    first = out[0]
    card = first.pop("parser_instrument")
    assert first == {"id": "a#c0#p0", "doc_id": "a", "author": "ann", "text": CHUNKS[0]["text"],
                     "perception": "I help my neighbours every week", "perception_index": 0, "n_perceptions": 2,
                     "span": [0, 31], "parse": "model", "grounding": 1.0,
                     "parser": f"openai:delay-model@{card['id']}"}
    assert card["backend"] == "openai" and card["model"] == {"name": "delay-model"}
    assert re.fullmatch(r"[0-9a-f]{16}", card["id"]) and card["prompt"].startswith("sha256:")
    assert all(r["parser_instrument"] == card for r in out[1:])
    # The server finds no perception in "Short one."; the author said it, so it is filled in as it stands.
    assert (out[2]["perception"], out[2]["parse"], out[2]["span"]) == ("Short one.", "sentence", [0, 10])
    # The delay server counts words as tokens: the chunks have 11 + 2 + 8 + 12 = 33 words, its JSON
    # answers 12 + 2 + 9 + 11 = 34 (e.g. '{"perceptions": []}' is 2).
    assert result.stderr.splitlines() == [
        "gpv-parse: 4 chunks parsed into 6 perceptions; 0 without any",
        "gpv-parse: of the perceptions, 5 the model's (each found in its chunk), 1 sentence no perception of the "
        "model's covered, 0 from chunks that fell back",
        "gpv-parse: 4 requests: 4 sent, 0 answered from the cache, 0 retries, 0 failed; tokens sent 33, "
        "received 34",
    ]


def test_a_second_run_is_answered_from_the_cache(invoke, cache_dir):
    with DelayChatServer() as server:
        first = invoke(parse.main, remote(server.url, cache_dir), jsonl(CHUNKS))
        second = invoke(parse.main, remote(server.url, cache_dir), jsonl(CHUNKS))
        answered = dict(server.answered)
    assert first.stdout == second.stdout
    assert sorted(answered.values()) == [1, 1, 1, 1]
    assert "4 requests: 0 sent, 4 answered from the cache" in second.stderr
    # a different prompt is a different request
    with DelayChatServer() as server:
        third = invoke(parse.main, remote(server.url, cache_dir, "--subject", "Ann"), jsonl(CHUNKS))
        assert len(server.answered) == 4
    assert all(r["subject"] == "Ann" for r in lines(third.stdout))


def test_concurrency_keeps_input_order(invoke, cache_dir):
    chunks = [{"id": f"d{i}", "text": f"Sentence number {i} is here. And another one for {i} too."}
              for i in range(40)]
    # The server answers nothing until 8 requests are held at once, so any answer proves -j 8 keeps 8 in
    # flight (no clock in the verdict); its peak proves it never keeps more.
    with GatedChatServer(delay=0.01, jitter=0.2, deadline=120) as server:
        server.gate = 8
        result = invoke(parse.main, remote(server.url, cache_dir, "-j", "8", "--no-cache"), jsonl(chunks))
        held, peak, timed_out = server.held_at_once, server.peak, server.gate_timed_out
    assert result.exit_code == 0, result.stderr
    ids = [r["id"] for r in lines(result.stdout)]
    assert ids == [f"d{i}#p{k}" for i in range(40) for k in (0, 1)]
    assert held >= 8 and not timed_out and peak == 8, (held, peak, timed_out)


def test_subject_field_must_be_a_name(invoke, cache_dir):
    with DelayChatServer() as server:
        result = invoke(parse.main, remote(server.url, cache_dir, "--subject-field", "who"),
                        jsonl([{"id": "x", "text": "I like it a lot.", "who": ""}]))
    assert result.exit_code == 1
    assert result.stderr == "gpv-parse: error: line 1: field 'who' (the subject) must be a non-empty string\n"


def test_unreachable_server_stops_the_run(invoke, cache_dir):
    from .servers import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    result = invoke(parse.main, remote(url, cache_dir, "--retries", "1", "-m", "m"), jsonl(CHUNKS[:1]))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"gpv-parse: error: cannot reach the server at {url} (after 1 retries)")


# --- faults, through a real proxy -------------------------------------------------------------------------------

@pytest.mark.slow
def test_faults_are_retried_and_change_nothing(invoke, cache_dir, tmp_path):
    with DelayChatServer() as server:
        clean = invoke(parse.main, remote(server.url, tmp_path / "clean-cache"), jsonl(CHUNKS))
        faults = ["429", "500", "reset", "malformed", "empty", "503", "timeout"]
        with FaultProxy(server.url, faults, hold=2.0) as proxy:
            result = invoke(parse.main, remote(proxy.url, cache_dir, "-j", "1", "--timeout", "0.5", "--retries", "8"),
                            jsonl(CHUNKS))
            log = list(proxy.log)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == clean.stdout
    assert [what for _, _, what in log][:7] == faults
    assert "7 retries, 0 failed" in result.stderr
    # the 429 said Retry-After: 1, and the retry waited for it
    assert log[1][0] - log[0][0] >= 1.0


def test_a_chunk_whose_server_keeps_failing_is_handled_by_on_error(invoke, cache_dir):
    with DelayChatServer() as server, FaultProxy(server.url, ["500", "500", "empty-content"]) as proxy:
        fail = invoke(parse.main, remote(proxy.url, cache_dir, "--retries", "1"), jsonl(CHUNKS[:1]))
        assert fail.exit_code == 1
        assert fail.stderr.splitlines()[0] == (
            "gpv-parse: error: line 1: the server answered 500: injected 500 (gave up after 1 retries) (id 'a#c0')")
        assert fail.stdout == ""
        # An empty reply is a reply that cannot be used: it is asked for again (hotter), and not cached.
        again = invoke(parse.main, remote(proxy.url, cache_dir, "-j", "1"), jsonl(CHUNKS[:2]))
    assert again.exit_code == 0, again.stderr
    out = lines(again.stdout)
    assert [(r["id"], r["parse"]) for r in out] == [("a#c0#p0", "model"), ("a#c0#p1", "model"),
                                                    ("a#c1#p0", "sentence")]
    assert "1 reply asked for again; 0 chunks fell back to their sentences" in again.stderr
    with DelayChatServer() as server:
        cached = invoke(parse.main, remote(server.url, cache_dir, "-j", "1"), jsonl(CHUNKS[:2]))
        assert len(server.answered) == 1  # the greedy request: only the sampled answer was cached
    assert cached.exit_code == 0 and lines(cached.stdout)[0]["id"] == "a#c0#p0"


@pytest.mark.slow
def test_killed_and_resumed_equals_one_clean_run_and_sends_no_chunk_twice(tmp_path):
    chunks = [{"id": f"d{i}", "doc_id": f"d{i}", "text": " ".join(
        f"Sentence {k} of document {i} is here." for k in range(i % 4))} for i in range(60)]
    source = tmp_path / "chunks.jsonl"
    source.write_bytes(jsonl(chunks))
    env = {**os.environ, "GPV_CACHE_DIR": str(tmp_path / "cache")}
    with DelayChatServer(delay=0.05, jitter=0.1) as server:
        args = ["gpv-parse", "--base-url", server.url, "-j", "4", str(source)]
        clean = subprocess.run(args + ["--no-cache"], capture_output=True, env=env, check=True).stdout
        answered_clean = sum(server.answered.values())
        server.answered.clear()
        out = tmp_path / "out.jsonl"
        rng = random.Random(7)
        total = clean.count(b"\n")
        step = total // 15  # five runs take at most a third of the records, leaving work to the last
        written = 0
        for _ in range(5):
            # Killed once it has written a drawn number of records more than the last kill left: every kill
            # lands on a running process that made progress in that run, however slow the machine (the wait
            # ends on the file's growth, with a generous deadline, not on the clock).
            target = written + rng.randint(1, step)
            proc = subprocess.Popen(args + ["-o", str(out), "--resume", "-q"], env=env)
            deadline = time.monotonic() + 120
            while not (out.exists() and out.read_bytes().count(b"\n") >= target):
                assert proc.poll() is None, f"gpv-parse ended before it was killed (status {proc.returncode})"
                assert time.monotonic() < deadline, f"no progress past {written} records within 120 s"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert proc.returncode == -signal.SIGKILL  # it was running when killed
            written = out.read_bytes().count(b"\n")
        assert written < total
        subprocess.run(args + ["-o", str(out), "--resume", "-q"], env=env, check=True)
        answered, abandoned = dict(server.answered), server.abandoned
        # Whatever reached the cache is never asked for again: a whole new run sends nothing.
        again = subprocess.run(args + ["-o", str(tmp_path / "again.jsonl")], env=env, capture_output=True,
                               check=True)
    print(f"\n{abandoned} requests abandoned by killed runs, {sum(answered.values())} answered")
    assert out.read_bytes() == clean
    asked = sum(bool(c["text"]) for c in chunks)  # a blank chunk needs no request
    assert asked == 45 and answered_clean == asked
    # Every chunk was answered, and again only where a kill came between the answer and its cache entry
    # (at most the 4 in flight per kill); requests whose run was killed while they waited do not count.
    assert len(answered) == asked and sum(answered.values()) - asked <= 5 * 4
    assert f"{asked} requests: 0 sent, {asked} answered from the cache" in again.stderr.decode()
    assert (tmp_path / "again.jsonl").read_bytes() == clean


# --- real models ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    proc, url, log = start_llama_server(tmp_path_factory.mktemp("server") / "server.log", n_ctx=4096)
    yield url
    stop_server(proc, log)


@pytest.fixture(scope="module")
def blog_chunks(posts_path):
    """Real chunks: the first two 250-token chunks of the first two blog posts."""
    return chunk_posts(posts_path, 250, 2, 2, keep=("author", "gender"))


def check_perceptions(out, chunks):
    assert out, "no perception at all"
    by_chunk = {c["id"]: c for c in chunks}
    for r in out:
        chunk_id, _, k = r["id"].rpartition("#p")
        chunk = by_chunk[chunk_id]
        assert {f: r[f] for f in chunk if f != "id"} == {f: v for f, v in chunk.items() if f != "id"}
        assert isinstance(r["perception"], str) and r["perception"].strip()
        assert int(k) == r["perception_index"] < r["n_perceptions"]


@pytest.mark.slow
def test_real_server_parses_blog_chunks_through_a_faulty_proxy(invoke, llama_server, blog_chunks, cache_dir):
    faults = ["429", "reset", "malformed"]
    with FaultProxy(llama_server, faults) as proxy:
        result = invoke(parse.main, remote(proxy.url, cache_dir, "-j", "2", "--max-tokens", "400"),
                        jsonl(blog_chunks))
    assert result.exit_code == 0, result.stderr
    out = lines(result.stdout)
    check_perceptions(out, blog_chunks)
    # llama-cpp-python's server refuses json_schema; the schema then goes with json_object
    assert "refused response_format json_schema" in result.stderr
    assert "3 retries, 0 failed" in result.stderr
    print(f"\n{len(blog_chunks)} blog chunks -> {len(out)} perceptions: {[r['perception'] for r in out]}")


@pytest.mark.slow
def test_builtin_model_parses_offline_in_process(blog_chunks, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI")}
    env["GPV_CACHE_DIR"] = str(tmp_path / "cache")
    result = subprocess.run(["gpv-parse", "-m", "builtin", "--threads", "1", "--max-tokens", "400"],
                            input=jsonl(blog_chunks[:2]),
                            capture_output=True, env=env)
    assert result.returncode == 0, result.stderr.decode()
    out = lines(result.stdout)
    check_perceptions(out, blog_chunks)
    assert all(r["parser"] == f"llama-cpp:SmolLM2-135M-Instruct.Q4_1.gguf@{r['parser_instrument']['id']}"
               for r in out)
    card = out[0]["parser_instrument"]
    assert card["model"]["sha256"] == hashlib.sha256(Path(builtin_gguf()).read_bytes()).hexdigest()
    assert card["prompt"].startswith("sha256:") and card["params"]["temperature"] == 0.0
