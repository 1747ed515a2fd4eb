"""The instrument named in every output: cards by content, --describe, and gpv-aggregate refusing to pool
records of different instruments."""

import hashlib
import os
import shutil
import subprocess

import orjson
import pytest

from gpvtools.commands import aggregate, score
from gpvtools.runtimes import identity
from gpvtools.runtimes.models import builtin_gguf

from .conftest import SHARED

LEXICON = SHARED / "data" / "dictionaries" / "schwartz-values-en.json"


def jsonl(records):
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def lines(data):
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GPV_CACHE_DIR", str(tmp_path / "cache"))
    identity._memo.clear()
    yield tmp_path / "cache"
    identity._memo.clear()


def twins(tmp_path, source, flip_at, letter=False):
    """Two copies of SOURCE with the same name and size, the second with one byte changed at FLIP_AT
    (to another lower-case letter with LETTER)."""
    a, b = tmp_path / "a" / source.name, tmp_path / "b" / source.name
    for p in (a, b):
        p.parent.mkdir()
        shutil.copyfile(source, p)
    data = bytearray(b.read_bytes())
    data[flip_at] = (ord("z") if data[flip_at] != ord("z") else ord("y")) if letter else data[flip_at] ^ 0x01
    b.write_bytes(bytes(data))
    assert a.stat().st_size == b.stat().st_size and a.read_bytes() != b.read_bytes()
    return a, b


def describe(invoke, *args):
    result = invoke(score.main, ["--describe", *args])
    assert (result.exit_code, result.stderr) == (0, ""), result.stderr
    return orjson.loads(result.stdout)


def test_two_ggufs_of_the_same_name_and_size_are_two_instruments(tmp_path, invoke):
    a, b = twins(tmp_path, __import__("pathlib").Path(builtin_gguf()), -1)  # the last byte: a weight
    card_a, card_b = (describe(invoke, "-m", str(p), "--precision", "native") for p in (a, b))
    assert card_a["id"] != card_b["id"]
    assert card_a["model"]["sha256"] == hashlib.sha256(a.read_bytes()).hexdigest()
    assert card_b["model"]["sha256"] == hashlib.sha256(b.read_bytes()).hexdigest()
    assert {k: v for k, v in card_a["model"].items() if k != "sha256"} == \
        {k: v for k, v in card_b["model"].items() if k != "sha256"} == \
        {"name": a.name, "file": a.name, "bytes": a.stat().st_size}
    assert (card_a["backend"], card_a["precision"], card_a["adapter"], card_a["threshold"]) == \
        ("llama-cpp", "native", None, 0.5)
    # Precision is part of the instrument; the built-in model's card names its adapter.
    assert describe(invoke, "-m", str(a), "--precision", "f32")["id"] != card_a["id"]
    builtin = describe(invoke)
    assert builtin["model"]["name"] == "builtin" and builtin["adapter"]["file"] == "adapter.gguf"
    assert builtin["precision"] == "f32" and builtin["prompts"].startswith("sha256:")


def test_a_digest_is_read_once_and_again_when_the_file_changes(tmp_path, cache_dir):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"x" * 1000)
    first = identity.file_digest(path)
    assert first == hashlib.sha256(b"x" * 1000).hexdigest()
    cached = orjson.loads((cache_dir / "digests.json").read_bytes())
    assert cached[str(path.resolve())]["sha256"] == first
    # Same size and mtime, other bytes: the cache answers without reading (this is what saves a 5 GB read).
    stat = path.stat()
    path.write_bytes(b"y" * 1000)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    identity._memo.clear()
    assert identity.file_digest(path) == first
    # A new mtime: read again.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    identity._memo.clear()
    assert identity.file_digest(path) == hashlib.sha256(b"y" * 1000).hexdigest()


def test_a_cache_that_cannot_be_written_costs_only_time(tmp_path, monkeypatch):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory would be")
    monkeypatch.setenv("GPV_CACHE_DIR", str(blocked))
    path = tmp_path / "m.bin"
    path.write_bytes(b"abc")
    assert identity.file_digest(path) == hashlib.sha256(b"abc").hexdigest()


def test_a_directory_is_named_by_its_files(tmp_path):
    d = tmp_path / "adapter"
    (d / "sub").mkdir(parents=True)
    (d / "adapter_config.json").write_text("{}")
    (d / "sub" / "w.bin").write_bytes(b"\0" * 10)
    (d / ".git").mkdir()
    (d / ".git" / "HEAD").write_text("ignored")
    first = identity.path_identity(d)
    assert (first["dir"], first["files"], first["bytes"]) == ("adapter", 2, 12)
    (d / "sub" / "w.bin").write_bytes(b"\1" * 10)
    identity._memo.clear()
    assert identity.path_identity(d)["sha256"] != first["sha256"]


def test_every_record_carries_the_card_and_nothing_of_the_invocation(invoke, monkeypatch):
    """The card is what --describe prints, and the same however the run was invoked (options given or taken
    from the environment, quiet or not, a secret key): a resumed or re-invoked run writes the same records."""
    data = jsonl([{"id": "d1", "author": "a", "text": "We help our family."}])
    result = invoke(score.main, ["-m", str(LEXICON), "--text-field", "text", "--api-key", "sk-secret-1"], data)
    assert result.exit_code == 0, result.stderr
    record = lines(result.stdout)[0]
    card = record["instrument"]
    assert record["scorer"] == f"dictionary:{LEXICON.name}@{card['id']}"
    assert card["model"]["sha256"] == hashlib.sha256(LEXICON.read_bytes()).hexdigest()
    assert "sk-secret" not in result.stdout
    assert card == describe(invoke, "-m", str(LEXICON))
    monkeypatch.setenv("GPV_MODEL", str(LEXICON))
    other = invoke(score.main, ["--text-field", "text", "-q"], data)
    assert other.stdout == result.stdout


def test_describe_of_a_missing_model_is_a_usage_error(invoke, tmp_path):
    result = invoke(score.main, ["--describe", "-m", str(tmp_path / "none.gguf")])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"gpv-score: error: model {tmp_path / 'none.gguf'} does not exist\n"


def scored_by_twin_lexicons(tmp_path, invoke):
    """The same posts scored by two lexicons of one name and size that differ in one byte."""
    text = LEXICON.read_bytes()
    a, b = twins(tmp_path, LEXICON, text.index(b'["') + 3, letter=True)  # a letter of the first word
    posts = [{"id": f"d{i}", "author": f"a{i % 2}", "text": t} for i, t in
             enumerate(["We help our family and friends.", "Power and wealth matter to them.",
                        "Tradition keeps us together.", "Adventure and fun every day."])]
    out = []
    for lexicon, part in ((a, posts[:2]), (b, posts[2:])):
        result = invoke(score.main, ["-m", str(lexicon), "--text-field", "text", "-q"], jsonl(part))
        assert result.exit_code == 0, result.stderr
        out += lines(result.stdout)
    assert out[0]["scorer"] != out[2]["scorer"] and out[0]["scorer"].split("@")[0] == out[2]["scorer"].split("@")[0]
    return out


def test_aggregate_refuses_to_pool_two_instruments(tmp_path, invoke):
    scored = scored_by_twin_lexicons(tmp_path, invoke)
    first, other = scored[0]["scorer"], scored[2]["scorer"]
    # a0 and a1 each have records of both instruments; and --by doc_id (groups of one) is refused too:
    # profiles of two instruments side by side are not comparable either.
    expected = {"author": f"line 3: group 'a0' mixes instruments: {other} here, {first} on line 1; "
                          f"--mixed-instruments pools them",
                "doc_id": f"line 3: scored by another instrument than line 1: {other} here, {first} there; "
                          f"--by scorer keeps them apart, --mixed-instruments pools them"}
    for by, message in expected.items():
        result = invoke(aggregate.main, ["--by", by], jsonl(scored))
        assert (result.exit_code, result.stdout) == (1, "")
        assert result.stderr == f"gpv-aggregate: error: {message}\n"
    apart = invoke(aggregate.main, ["--by", "author,scorer", "-q"], jsonl(scored))
    assert apart.exit_code == 0, apart.stderr
    groups = lines(apart.stdout)
    assert len(groups) == 4 and all(g["instrument"]["id"] == g["scorer"].split("@")[1] for g in groups)
    pooled = invoke(aggregate.main, ["--by", "author", "--mixed-instruments", "-q"], jsonl(scored))
    assert pooled.exit_code == 0, pooled.stderr
    for g in lines(pooled.stdout):
        assert [c["id"] for c in g["instrument"]] == [first.split("@")[1], other.split("@")[1]]
        assert g["scorer"] == f"{first} + {other}"


def test_merge_keeps_the_instrument_and_refuses_to_mix_them(tmp_path, invoke):
    scored = scored_by_twin_lexicons(tmp_path, invoke)
    parts = [invoke(aggregate.main, ["--by", "author", "-q"], jsonl(half)) for half in (scored[:2], scored[2:])]
    assert all(p.exit_code == 0 for p in parts)
    same = invoke(aggregate.main, ["--merge", "-q"], parts[0].stdout + parts[0].stdout)
    assert same.exit_code == 0 and all(g["instrument"] == scored[0]["instrument"] for g in lines(same.stdout))
    mixed = invoke(aggregate.main, ["--merge"], parts[0].stdout + parts[1].stdout)
    assert mixed.exit_code == 1 and "instrument" in mixed.stderr and mixed.stderr.count("\n") == 1
    pooled = invoke(aggregate.main, ["--merge", "--mixed-instruments", "-q"], parts[0].stdout + parts[1].stdout)
    assert pooled.exit_code == 0, pooled.stderr
    assert all(len(g["instrument"]) == 2 for g in lines(pooled.stdout))


@pytest.mark.slow
def test_two_gguf_twins_score_and_their_mixed_output_is_refused(tmp_path):
    """End to end with real scoring: the same name and size, one weight's byte apart, through gpv-score
    (llama.cpp in-process) and gpv-aggregate as shell commands."""
    a, b = twins(tmp_path, __import__("pathlib").Path(builtin_gguf()), -1)
    env = {**os.environ, "GPV_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    data = tmp_path / "p.jsonl"
    data.write_bytes(jsonl([{"id": f"p{i}", "author": "x", "perception": t} for i, t in
                            enumerate(["I always help my neighbours.", "Winning is all that counts."])]))
    outs = []
    for model in (a, b):
        proc = subprocess.run(["gpv-score", "-m", str(model), "--precision", "native", "--threads", "1",
                               "--values", "Benevolence,Power", str(data)], capture_output=True, env=env)
        assert proc.returncode == 0, proc.stderr.decode()
        outs.append(proc.stdout)
        described = subprocess.run(["gpv-score", "--describe", "-m", str(model), "--precision", "native"],
                                   capture_output=True, env=env, check=True)
        card = lines(proc.stdout)[0]["instrument"]
        assert card == orjson.loads(described.stdout)
    ids = [lines(o)[0]["instrument"]["id"] for o in outs]
    assert ids[0] != ids[1]
    proc = subprocess.run(["gpv-aggregate", "--by", "author"], input=outs[0] + outs[1], capture_output=True, env=env)
    assert (proc.returncode, proc.stdout) == (1, b"")
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and ids[0] in err and ids[1] in err, err
