"""Hub references (hf:OWNER/REPO:QUANT, hf:OWNER/REPO/FILE, @REVISION) for every model option, against a
stand-in hub on 127.0.0.1 (tests/hubserver.py) through the real huggingface_hub client (HF_ENDPOINT).

Each test has a Hugging Face cache of its own (HF_HUB_CACHE), so what one fetched never helps another,
but for the offline test, which reuses the cache a scoring run filled."""

import hashlib
import os
import shutil
import subprocess

import orjson
import pytest

from gpvtools.runtimes import hub as hubmod
from gpvtools.streaming.errors import UsageError

from .conftest import outside_env
from .hubserver import StandInHub

PERCEPTIONS = [{"id": i, "perception": p} for i, p in enumerate([
    "I want to decide for myself what I do with my life.",
    "Everyone deserves to be treated equally.",
    "We should protect the old orchard our grandparents planted.",
])]
INPUT = b"".join(orjson.dumps(r) + b"\n" for r in PERCEPTIONS)
DEAD_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing answers there


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def split_gguf(src, first, max_tensors):
    """SRC rewritten as a split GGUF (FIRST names it: NAME.gguf -> NAME-0000i-of-0000n.gguf), as llama.cpp's
    gguf-split makes one: the metadata in the first part, the tensors spread over the parts."""
    import gguf

    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(str(first), reader.fields["general.architecture"].contents(),
                             split_max_tensors=max_tensors)
    for f in reader.fields.values():
        if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF."):
            continue
        kind = f.types[0]
        writer.add_key_value(f.name, f.contents(), kind, sub_type=f.types[-1] if kind == gguf.GGUFValueType.ARRAY
                             else None)
    for t in reader.tensors:
        writer.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sorted(first.parent.glob(first.stem + "-*-of-*.gguf"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The files the stand-in serves: the built-in GGUF and LoRA, a split copy, a corrupt and two tiny ones."""
    from gpvtools.runtimes.models import builtin_gguf, builtin_scorer_files

    root = tmp_path_factory.mktemp("hubfiles")
    gguf_path = builtin_gguf()
    split = split_gguf(gguf_path, root / "smol-Q4_1.gguf", 150)
    assert len(split) == 2
    (root / "README.md").write_text("# smol\nThe built-in model, served by the stand-in hub.\n")
    (root / "bad.gguf").write_bytes(os.urandom(3 << 20))
    (root / "tiny-a.gguf").write_bytes(b"GGUF a")
    (root / "tiny-b.gguf").write_bytes(b"GGUF b")
    return {"gguf": gguf_path, "lora": builtin_scorer_files()["lora"], "split": split, "root": root}


@pytest.fixture(scope="module")
def hub(files):
    stand_in = StandInHub()
    stand_in.add_repo("test/smol-GGUF", {"smol-135m.Q4_1.gguf": files["gguf"], "smol-135m.Q8_0.gguf": files["gguf"],
                                         "README.md": files["root"] / "README.md"})
    stand_in.add_repo("test/split-GGUF", {p.name: p for p in files["split"]})
    stand_in.add_repo("test/smol-lora", {"adapter.gguf": files["lora"]})
    stand_in.add_repo("test/twins-GGUF", {"a.Q4_1.gguf": files["root"] / "tiny-a.gguf",
                                          "b.Q4_1.gguf": files["root"] / "tiny-b.gguf"})
    stand_in.add_repo("test/bad-GGUF", {"bad.Q4_1.gguf": files["root"] / "bad.gguf"})
    stand_in.start()
    yield stand_in
    stand_in.stop()


def hub_env(cache, endpoint, offline=False):
    # A token, as a user of a gated repository has one: the stand-in's CDN refuses a request that carries it.
    env = outside_env(HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(cache / "hf"), GPV_CACHE_DIR=str(cache / "gpv"),
                      HF_HUB_DISABLE_TELEMETRY="1", HF_TOKEN="hf_standin_token")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(name, None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def run(args, env, input=INPUT, command="gpv-score"):
    return subprocess.run([command, *args], input=input, env=env, capture_output=True, timeout=600)


def records(stdout):
    return [orjson.loads(line) for line in stdout.splitlines()]


def without_source(record):
    """A record with its card's "source" (where a hub reference resolved to) left out, as bytes."""
    record = dict(record, instrument={k: v for k, v in record["instrument"].items() if k != "source"})
    return orjson.dumps(record)


def one_line(stderr):
    lines = [line for line in stderr.decode().splitlines() if line.strip()]
    assert len(lines) == 1, stderr.decode()
    return lines[0]


# --- references, without a network ------------------------------------------------------------------------------------

def test_references_parse():
    ref = hubmod.parse("hf:QuantFactory/ValueLlama-3-8B-GGUF:Q4_K_M")
    assert (ref.repo, ref.quant, ref.file, ref.revision) == ("QuantFactory/ValueLlama-3-8B-GGUF", "Q4_K_M", None, None)
    ref = hubmod.parse("hf:o/r/sub/x.Q8_0.gguf@v1.0")
    assert (ref.repo, ref.file, ref.quant, ref.revision) == ("o/r", "sub/x.Q8_0.gguf", None, "v1.0")
    ref = hubmod.parse("hf.co/o/r:Q2_K@0123456789abcdef0123456789abcdef01234567")
    assert (ref.quant, ref.revision) == ("Q2_K", "0123456789abcdef0123456789abcdef01234567")
    assert hubmod.parse("hf://o/r").repo == "o/r"
    assert hubmod.parse("o/r", bare=True).repo == "o/r" and hubmod.parse("o/r") is None
    assert hubmod.parse("model.gguf") is None and hubmod.parse("./x/y/z", bare=True) is None
    for bad in ("hf:just-a-name", "hf:o/r/f.gguf:Q4_K_M", "hf:o/r:Q4 K"):
        with pytest.raises(UsageError):
            hubmod.parse(bad)


def test_a_quantisation_picks_one_gguf_and_a_split_one_whole():
    entries = [hubmod.Entry(n, 1, "0" * 64) for n in (
        "m.Q4_K_M.gguf", "m.Q4_K_S.gguf", "m.Q8_0-00001-of-00002.gguf", "m.Q8_0-00002-of-00002.gguf",
        "mmproj-m.Q8_0.gguf", "m.IQ2_XXS.gguf", "README.md")]
    pick = hubmod._Hub(hubmod.parse("hf:o/r:Q8_0"), hubmod.Fetch())
    assert [e.name for e in pick._choose(entries, False, "o/r")[0]] == ["m.Q8_0-00001-of-00002.gguf",
                                                                         "m.Q8_0-00002-of-00002.gguf"]
    pick = hubmod._Hub(hubmod.parse("hf:o/r:q4_k_m"), hubmod.Fetch())  # case does not matter
    assert [e.name for e in pick._choose(entries, False, "o/r")[0]] == ["m.Q4_K_M.gguf"]
    for quant, message in (("Q4_K", "no GGUF of quantisation Q4_K"), ("Q5_K_M", "no GGUF")):
        with pytest.raises(UsageError, match=message) as e:
            hubmod._Hub(hubmod.parse(f"hf:o/r:{quant}"), hubmod.Fetch())._choose(entries, False, "o/r")
        assert "m.Q4_K_M.gguf" in str(e.value) and "mmproj" not in str(e.value)  # it lists what there is
    with pytest.raises(UsageError, match="holds 4 GGUFs"):
        hubmod._Hub(hubmod.parse("hf:o/r"), hubmod.Fetch())._choose(entries, False, "o/r")


def test_a_local_split_gguf_is_named_by_all_its_parts(files):
    from gpvtools.runtimes.identity import path_identity

    first, second = files["split"]
    identity = path_identity(first)
    assert identity["file"] == first.name and identity["parts"] == 2
    assert identity["bytes"] == first.stat().st_size + second.stat().st_size
    listing = f"{first.name}\0{sha256(first)}\n{second.name}\0{sha256(second)}\n"
    assert identity["sha256"] == hashlib.sha256(listing.encode()).hexdigest()


# --- against the stand-in hub -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scored(hub, files, tmp_path_factory):
    """gpv-score on the built-in GGUF as a local file and as hf:test/smol-GGUF:Q4_1, in a cache of its own."""
    cache = tmp_path_factory.mktemp("cache")
    local = tmp_path_factory.mktemp("local") / "smol-135m.Q4_1.gguf"
    local.symlink_to(files["gguf"])
    env = hub_env(cache, hub.url)
    from_file = run(["-m", str(local), "--threads", "1"], env)
    assert from_file.returncode == 0, from_file.stderr.decode()
    hub.reset_counts()
    from_hub = run(["-m", "hf:test/smol-GGUF:Q4_1", "--threads", "1"], env)
    assert from_hub.returncode == 0, from_hub.stderr.decode()
    served = dict(hub.served)
    hub.reset_counts()
    again = run(["-m", "hf:test/smol-GGUF:Q4_1", "--threads", "1"], env)
    return {"cache": cache, "file": from_file, "hub": from_hub, "served": served, "again": again,
            "again_served": dict(hub.served), "again_api": hub.api_calls, "again_requests": hub.requests}


def test_a_hub_reference_scores_as_the_local_file_does(hub, files, scored):
    local, remote = records(scored["file"].stdout), records(scored["hub"].stdout)
    assert len(remote) == len(PERCEPTIONS)
    assert [without_source(r) for r in remote] == [without_source(r) for r in local]  # values, scorer, card id
    source = remote[0]["instrument"]["source"]["model"]
    assert source["reference"] == "hf:test/smol-GGUF:Q4_1" and source["repo"] == "test/smol-GGUF"
    assert source["revision"] == hub.repos["test/smol-GGUF"].commit
    digest = sha256(files["gguf"])
    assert source["files"] == [{"file": "smol-135m.Q4_1.gguf", "bytes": os.path.getsize(files["gguf"]),
                                "sha256": digest, "hub_hash": "lfs-sha256", "checked": True}]
    assert remote[0]["instrument"]["model"]["sha256"] == digest
    assert "source" not in local[0]["instrument"]
    # fetched once, with a line on stderr (no terminal here: no bar); the next run reads the cache
    assert scored["served"] == {digest: os.path.getsize(files["gguf"])}
    stderr = scored["hub"].stderr.decode()
    assert "fetching smol-135m.Q4_1.gguf (98.4 MB) for hf:test/smol-GGUF:Q4_1 from test/smol-GGUF@" in stderr
    assert scored["again"].returncode == 0 and scored["again"].stdout == scored["hub"].stdout
    assert scored["again_served"] == {} and "fetching" not in scored["again"].stderr.decode()
    assert scored["again_api"] == scored["again_requests"] == 1  # the model info; no HEAD, no download
    # huggingface_hub's own cache layout: transformers and the hf CLI find the file there
    snapshot = scored["cache"] / "hf" / "models--test--smol-GGUF" / "snapshots" / source["revision"]
    assert (snapshot / "smol-135m.Q4_1.gguf").resolve() == (scored["cache"] / "hf" / "models--test--smol-GGUF"
                                                            / "blobs" / digest)
    assert (scored["cache"] / "hf" / "models--test--smol-GGUF" / "refs" / "main").read_text() == source["revision"]


def test_offline_a_cached_reference_works_and_an_uncached_one_says_why(hub, scored):
    # a revision by a branch name with slashes, recorded in refs/ by a run online (the file is cached already)
    hub.repos["test/smol-GGUF"].refs["refs/pr/1"] = hub.repos["test/smol-GGUF"].commit
    online = run(["--describe", "-m", "hf:test/smol-GGUF:Q4_1@refs/pr/1"], hub_env(scored["cache"], hub.url),
                 input=b"")
    assert online.returncode == 0, online.stderr.decode()
    refs = scored["cache"] / "hf" / "models--test--smol-GGUF" / "refs"
    assert (refs / "refs" / "pr" / "1").read_text() == hub.repos["test/smol-GGUF"].commit
    # offline against the live stand-in: not one request reaches it
    env = hub_env(scored["cache"], hub.url, offline=True)
    hub.reset_counts()
    cached = run(["-m", "hf:test/smol-GGUF:Q4_1", "--threads", "1"], env)
    assert cached.returncode == 0, cached.stderr.decode()
    assert cached.stdout == scored["hub"].stdout
    assert "cannot be reached" not in cached.stderr.decode()
    at_branch = run(["--describe", "-m", "hf:test/smol-GGUF:Q4_1@refs/pr/1"], env, input=b"")
    assert at_branch.returncode == 0, at_branch.stderr.decode()
    assert orjson.loads(at_branch.stdout)["source"]["model"]["revision"] == hub.repos["test/smol-GGUF"].commit
    assert hub.requests == 0
    uncached = run(["-m", "hf:test/smol-GGUF:Q8_0", "--threads", "1"], env)
    assert uncached.returncode == 1 and uncached.stdout == b""
    line = one_line(uncached.stderr)
    assert "hf:test/smol-GGUF:Q8_0" in line and "HF_HUB_OFFLINE=1" in line, line
    assert hub.requests == 0
    # without the variable, a hub that cannot be reached falls back to the cache too
    fallback = run(["-m", "hf:test/smol-GGUF:Q4_1", "--threads", "1"], hub_env(scored["cache"], DEAD_ENDPOINT))
    assert fallback.returncode == 0 and fallback.stdout == scored["hub"].stdout, fallback.stderr.decode()
    assert "the hub cannot be reached" in fallback.stderr.decode()


def test_describe_resolves_metadata_only(hub, scored, tmp_path):
    hub.reset_counts()
    described = run(["--describe", "-m", "hf:test/smol-GGUF:Q4_1"], hub_env(tmp_path, hub.url), input=b"")
    assert described.returncode == 0, described.stderr.decode()
    card = orjson.loads(described.stdout)
    assert hub.served == {} and not (tmp_path / "hf" / "models--test--smol-GGUF" / "blobs").exists()
    scored_card = records(scored["hub"].stdout)[0]["instrument"]
    assert card["id"] == scored_card["id"] and card["model"] == scored_card["model"]
    assert card["source"]["model"]["revision"] == scored_card["source"]["model"]["revision"]
    assert card["source"]["model"]["files"][0]["checked"] is False  # the hub's hash, not yet the bytes'


def test_an_interrupted_download_resumes_where_it_stopped(hub, files, scored, tmp_path):
    digest, size = sha256(files["gguf"]), os.path.getsize(files["gguf"])
    env = hub_env(tmp_path, hub.url)
    out = tmp_path / "scores.jsonl"
    hub.reset_counts()
    hub.cut[digest] = 40 << 20  # 40 MiB, then the connection drops and the stand-in answers 503
    try:
        first = run(["-m", "hf:test/smol-GGUF:Q4_1", "--threads", "1", "-o", str(out)], env)
    finally:
        hub.cut.pop(digest, None)
    assert first.returncode == 1 and not out.exists() and first.stdout == b""
    assert "run again to resume it" in first.stderr.decode().splitlines()[-1]
    kept = list((tmp_path / "hf" / "models--test--smol-GGUF" / "blobs").glob("*.incomplete"))
    assert len(kept) == 1 and kept[0].stat().st_size == 40 << 20
    assert hub.served[digest] == 40 << 20
    hub.reset_counts()
    second = run(["-m", "hf:test/smol-GGUF:Q4_1", "--threads", "1", "-o", str(out)], env)
    assert second.returncode == 0, second.stderr.decode()
    assert hub.ranges[digest] == [40 << 20] and hub.served[digest] == size - (40 << 20)  # no byte fetched twice
    assert "resuming at 41.9 MB" in second.stderr.decode()
    assert out.read_bytes() == scored["hub"].stdout


def test_two_runs_fetching_one_file_at_once_download_it_once(hub, files, scored, tmp_path):
    digest, size = sha256(files["gguf"]), os.path.getsize(files["gguf"])
    env = hub_env(tmp_path, hub.url)
    hub.reset_counts()
    procs = [subprocess.Popen(["gpv-score", "-m", "hf:test/smol-GGUF:Q4_1", "--threads", "1"], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    outs = [p.communicate(INPUT, timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e.decode() for _, e in outs]
    assert [o for o, _ in outs] == [scored["hub"].stdout] * 2
    assert hub.served == {digest: size}  # one download; the other run waited for it
    assert sum("fetching " in e.decode() for _, e in outs) == 1


def test_bad_references_are_one_line_errors_and_write_nothing(hub, tmp_path):
    env = hub_env(tmp_path, hub.url)
    out = tmp_path / "scores.jsonl"
    cases = [
        ("hf:test/twins-GGUF:Q4_1", 2, "2 GGUFs of quantisation Q4_1"),
        ("hf:test/smol-GGUF:Q5_K_M", 2, "no GGUF of quantisation Q5_K_M"),
        ("hf:test/missing-GGUF:Q4_1", 2, "no repository test/missing-GGUF"),
        ("hf:test/smol-GGUF:Q4_1@v9", 2, "has no revision 'v9'"),
        ("hf:test/smol-GGUF/nothing.gguf", 2, "has no file nothing.gguf"),
        ("hf:test/smol--GGUF:Q4_1", 2, "not a hub reference"),
    ]
    for ref, status, message in cases:
        result = run(["-m", ref, "-o", str(out)], env)
        assert result.returncode == status, (ref, result.stderr.decode())
        line = one_line(result.stderr)
        assert line.startswith("gpv-score: error: ") and ref in line and message in line, line
        assert not out.exists() and result.stdout == b""
    bad = hub.repos["test/bad-GGUF"].files["bad.Q4_1.gguf"]
    hub.corrupt.add(bad.sha256)
    try:
        result = run(["-m", "hf:test/bad-GGUF:Q4_1", "-o", str(out)], env)
    finally:
        hub.corrupt.discard(bad.sha256)
    assert result.returncode == 1 and not out.exists()
    line = result.stderr.decode().splitlines()[-1]
    assert "not the hub's " + bad.sha256[:16] in line and "not kept" in line, line
    storage = tmp_path / "hf" / "models--test--bad-GGUF"
    assert not list(storage.glob("blobs/*")) and not list(storage.glob("snapshots/*/*"))


def test_a_corrupted_cached_file_is_caught_and_removed(hub, files, tmp_path):
    env = hub_env(tmp_path, hub.url)
    fetched = run(["--describe", "-m", "hf:test/smol-lora/adapter.gguf"], env, input=b"")
    assert fetched.returncode == 0
    ok = run(["-m", "hf:test/smol-GGUF:Q4_1", "--adapter", "hf:test/smol-lora", "--threads", "1"], env)
    assert ok.returncode == 0, ok.stderr.decode()
    blob = tmp_path / "hf" / "models--test--smol-lora" / "blobs" / sha256(files["lora"])
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    broken = run(["-m", "hf:test/smol-GGUF:Q4_1", "--adapter", "hf:test/smol-lora", "--threads", "1"], env)
    assert broken.returncode == 1 and broken.stdout == b""
    assert "a corrupt copy, removed from the cache" in one_line(broken.stderr)
    assert not blob.exists()
    again = run(["-m", "hf:test/smol-GGUF:Q4_1", "--adapter", "hf:test/smol-lora", "--threads", "1"], env)
    assert again.returncode == 0 and again.stdout == ok.stdout


def test_an_adapter_from_the_hub_scores_as_the_local_one(hub, files, tmp_path):
    env = hub_env(tmp_path, hub.url)
    local = tmp_path / "smol-135m.Q4_1.gguf"
    local.symlink_to(files["gguf"])
    from_file = run(["-m", str(local), "--adapter", files["lora"], "--threads", "1"], env)
    from_hub = run(["-m", "hf:test/smol-GGUF:Q4_1", "--adapter", "hf:test/smol-lora", "--threads", "1"], env)
    assert from_file.returncode == 0 and from_hub.returncode == 0, from_hub.stderr.decode()
    a, b = records(from_file.stdout), records(from_hub.stdout)
    assert [without_source(r) for r in a] == [without_source(r) for r in b]
    assert set(b[0]["instrument"]["source"]) == {"model", "adapter"}
    assert b[0]["instrument"]["source"]["adapter"]["files"][0]["file"] == "adapter.gguf"


def test_a_split_gguf_is_fetched_whole_and_scores_as_the_whole_file(hub, files, scored, tmp_path):
    env = hub_env(tmp_path, hub.url)
    result = run(["-m", "hf:test/split-GGUF:Q4_1", "--threads", "1"], env)
    assert result.returncode == 0, result.stderr.decode()
    got = records(result.stdout)
    want = records(scored["file"].stdout)
    assert [r["values"] for r in got] == [r["values"] for r in want]
    card = got[0]["instrument"]
    first, second = files["split"]
    assert card["model"]["file"] == first.name and card["model"]["parts"] == 2
    assert [f["file"] for f in card["source"]["model"]["files"]] == [first.name, second.name]
    from gpvtools.runtimes.identity import path_identity

    assert {k: v for k, v in card["model"].items() if k != "name"} == path_identity(first)
    assert result.stderr.decode().count("fetching ") == 2


@pytest.mark.slow
def test_gpv_parse_and_gpv_elicit_take_hub_references(hub, scored, tmp_path):
    env = hub_env(scored["cache"], hub.url)
    chunk = b'{"id": "c1", "text": "I want to decide for myself. Everyone deserves to be treated equally."}\n'
    parsed = run(["-m", "hf:test/smol-GGUF:Q4_1", "--threads", "1", "--no-cache"], env, input=chunk,
                 command="gpv-parse")
    assert parsed.returncode == 0, parsed.stderr.decode()
    local = run(["-m", files_path(scored), "--threads", "1", "--no-cache"], env, input=chunk, command="gpv-parse")
    assert local.returncode == 0, local.stderr.decode()
    a, b = records(parsed.stdout), records(local.stdout)
    assert [r["perception"] for r in a] == [r["perception"] for r in b] and a
    assert a[0]["parser_instrument"]["source"]["model"]["reference"] == "hf:test/smol-GGUF:Q4_1"
    assert a[0]["parser"] == b[0]["parser"]  # BACKEND:MODEL@ID: the same instrument
    question = b'{"id": "q1", "question": "What matters most to you?"}\n'
    asked = run(["ask", "--subject", "smol=hf:test/smol-GGUF:Q4_1", "--threads", "1", "--no-cache",
                 "--max-tokens", "16"], env, input=question, command="gpv-elicit")
    assert asked.returncode == 0, asked.stderr.decode()
    assert records(asked.stdout)[0]["subject"] == "smol"


def files_path(scored):
    """The Q4_1 file in the scored run's cache, by its snapshot path."""
    return str(next((scored["cache"] / "hf" / "models--test--smol-GGUF" / "snapshots").glob("*/smol-135m.Q4_1.gguf")))


@pytest.fixture(scope="module")
def hf_dir(files, tmp_path_factory):
    """A transformers model directory made from the built-in GGUF (transformers dequantises it), in bf16."""
    import torch
    import transformers

    out = tmp_path_factory.mktemp("hfdir") / "smol-hf"
    gguf = files["gguf"]
    kwargs = {"gguf_file": os.path.basename(gguf)}
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf), dtype=torch.bfloat16, quantization_config=transformers.GgufConfig(dequantize=True),
        **kwargs)
    tokenizer = transformers.AutoTokenizer.from_pretrained(os.path.dirname(gguf), **kwargs)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.slow
def test_the_transformers_backend_takes_a_hub_model_directory(hub, hf_dir, tmp_path):
    hub.add_repo("test/smol-hf", {p.name: p for p in hf_dir.iterdir()})
    env = hub_env(tmp_path, hub.url)
    args = ["-b", "transformers", "--device", "cpu", "--threads", "1"]
    hub.reset_counts()
    described = run([*args, "--describe", "-m", "hf:test/smol-hf"], env, input=b"")
    assert described.returncode == 0, described.stderr.decode()
    weights = hub.repos["test/smol-hf"].files["model.safetensors"]
    assert weights.sha256 not in hub.served  # the small files only: the weights' SHA-256 is the hub's
    from_dir = run([*args, "-m", str(hf_dir)], env)
    assert from_dir.returncode == 0, from_dir.stderr.decode()
    for ref in ("hf:test/smol-hf", "test/smol-hf"):
        from_hub = run([*args, "-m", ref], env)
        assert from_hub.returncode == 0, from_hub.stderr.decode()
        a, b = records(from_dir.stdout), records(from_hub.stdout)
        assert [without_source(r) for r in a] == [without_source(r) for r in b]
        source = b[0]["instrument"]["source"]["model"]
        assert source["revision"] == hub.repos["test/smol-hf"].commit and source["reference"] == ref
        assert {f["file"] for f in source["files"]} == {p.name for p in hf_dir.iterdir()}
        assert all(f["checked"] for f in source["files"])
        assert b[0]["instrument"]["id"] == orjson.loads(described.stdout)["id"]
    shutil.rmtree(tmp_path / "hf")
    offline = run([*args, "-m", "test/smol-hf"], hub_env(tmp_path, DEAD_ENDPOINT, offline=True))
    assert offline.returncode == 1 and "HF_HUB_OFFLINE=1" in one_line(offline.stderr)


@pytest.mark.slow
def test_gpv_train_takes_a_hub_reference_as_its_base(hub, scored, tmp_path):
    data = tmp_path / "labels.jsonl"
    rows = [{"text": "I help my neighbours.", "value": "Benevolence", "task": "relevance", "label": "yes"},
            {"text": "I help my neighbours.", "value": "Power", "task": "relevance", "label": "no"},
            {"text": "I help my neighbours.", "value": "Benevolence", "task": "valence", "label": "support"}]
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    out = tmp_path / "out"
    result = run([str(data), "-o", str(out), "--holdout", "0", "--base", "hf:test/smol-GGUF:Q4_1", "--max-steps",
                  "1", "--batch-size", "2", "--lora-r", "2", "--no-gguf", "--threads", "1"],
                 hub_env(scored["cache"], hub.url), input=b"", command="gpv-train")
    assert result.returncode == 0, result.stderr.decode()
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["base_source"]["revision"] == hub.repos["test/smol-GGUF"].commit
    assert report["base"].endswith("/smol-135m.Q4_1.gguf")
