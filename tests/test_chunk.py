"""gpv-chunk on the real blog posts, and its token counters."""

import orjson
import pytest

from gpvtools.commands import chunk
from gpvtools.method.chunking import Chunker, make_counter
from gpvtools.streaming.errors import GpvError

from .conftest import dev_module


@pytest.fixture(scope="module")
def builtin_chunks(posts_path):
    from click.testing import CliRunner

    result = CliRunner().invoke(chunk.main, ["-q", str(posts_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def posts(posts_path):
    return [orjson.loads(line) for line in posts_path.read_bytes().splitlines()]


@pytest.mark.slow
def test_posts_become_bounded_chunks(builtin_chunks, posts):
    counter = make_counter("builtin")
    assert len(builtin_chunks) > len(posts)
    for c in builtin_chunks:
        assert 0 < c["tokens"] <= 250
        assert counter(c["text"]) == c["tokens"]  # the same counter, recounted
        assert c["text"].strip()
    assert len({c["id"] for c in builtin_chunks}) == len(builtin_chunks)


def test_chunks_keep_fields_offsets_and_order(builtin_chunks, posts):
    by_doc = {}
    for c in builtin_chunks:
        by_doc.setdefault(c["doc_id"], []).append(c)
    assert list(by_doc) == [p["id"] for p in posts]
    for post in posts:
        pieces = by_doc[post["id"]]
        assert [c["chunk"] for c in pieces] == list(range(len(pieces)))
        for c in pieces:
            assert c["id"] == f"{post['id']}#c{c['chunk']}" and c["n_chunks"] == len(pieces)
            assert post["text"][c["start"]:c["end"]] == c["text"]
            for field in ("author", "gender", "age", "industry", "sign", "date"):
                assert c[field] == post[field]
        # nothing but whitespace is lost between chunks
        covered = "".join(post["text"][a["end"]:b["start"]] for a, b in zip(pieces, pieces[1:]))
        assert not covered.strip()


def test_words_counter_and_overlap(posts):
    text = posts[0]["text"]
    plain = Chunker(make_counter("words"), 40).split(text)
    overlapped = Chunker(make_counter("words"), 40, overlap=0.25).split(text)
    assert all(t <= 40 for _, _, _, t in plain + overlapped)
    assert len(overlapped) > len(plain)
    # neighbouring overlapped chunks share text
    assert any(b[1] < a[2] for a, b in zip(overlapped, overlapped[1:]))


def test_empty_text_gives_a_note_not_a_chunk(invoke):
    result = invoke(chunk.main, ["-t", "words"], b'{"id": "e", "text": " \\n\\t"}\n{"id": "f", "text": "Hi."}\n')
    assert result.exit_code == 0
    assert [orjson.loads(line)["id"] for line in result.stdout.splitlines()] == ["f#c0"]
    assert result.stderr == ("gpv-chunk: line 1: text of 'e' is empty or blank; no chunk\n"
                             "gpv-chunk: 1 document without text\n")
    quiet = invoke(chunk.main, ["-t", "words", "-q"], b'{"id": "e", "text": ""}\n')
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")


def test_missing_ids_become_line_numbers_and_other_fields_work(invoke):
    data = b'{"body": "One two three."}\n{"body": "Four."}\n'
    result = invoke(chunk.main, ["-t", "words", "--text-field", "body"], data)
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [(r["id"], r["doc_id"], r["body"]) for r in records] == [
        ("1#c0", "1", "One two three."), ("2#c0", "2", "Four.")]


def test_id_field_of_wrong_type(invoke):
    result = invoke(chunk.main, ["-t", "words"], b'{"id": [1], "text": "x"}\n')
    assert result.exit_code == 1
    assert result.stderr == "gpv-chunk: error: line 1: field 'id' must be a string or a number\n"


def test_hugging_face_tokenizer_json(tmp_path, posts):
    tokenizers = dev_module("tokenizers")
    # A real (tiny) BPE tokenizer trained here, saved as tokenizer.json like a model directory holds.
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.train_from_iterator([p["text"] for p in posts[:50]],
                            tokenizers.trainers.BpeTrainer(vocab_size=500, special_tokens=["[UNK]"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    counter = make_counter(str(tmp_path))
    pieces = Chunker(counter, 60).split(posts[1]["text"])
    assert pieces and all(counter(t) == n <= 60 for t, _, _, n in pieces)


def test_gguf_path_counts_like_builtin():
    from gpvtools.runtimes.models import builtin_gguf

    text = "Values guide what people choose."
    assert make_counter(builtin_gguf())(text) == make_counter("builtin")(text) > 0


@pytest.mark.parametrize("spec, message", [
    ("nonesuch", "tokenizer: 'nonesuch' is not builtin, words, tiktoken:NAME, nor an existing file or directory"),
    ("tiktoken:klingon", "tokenizer: unknown tiktoken encoding 'klingon'"),
])
def test_bad_tokenizer_specs(spec, message):
    with pytest.raises(GpvError) as e:
        make_counter(spec)
    assert str(e.value).startswith(message)


def test_uncached_tiktoken_says_so_instead_of_hanging(tmp_path, monkeypatch, invoke):
    dev_module("tiktoken")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    result = invoke(chunk.main, ["-t", "tiktoken:cl100k_base"], b'{"text": "a"}\n')
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"gpv-chunk: error: tokenizer: tiktoken encoding 'cl100k_base' is not cached in {tmp_path}")


def test_not_a_gguf_file(tmp_path, invoke):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a model")
    result = invoke(chunk.main, ["-t", str(fake)], b'{"text": "a"}\n')
    assert result.exit_code == 1
    assert result.stderr == f"gpv-chunk: error: model {fake} is not a GGUF file\n"
