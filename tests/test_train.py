"""gpv-train: bad data stops before any training; a tiny real run yields an adapter both backends use."""

import csv

import numpy as np
import orjson
import pytest

from gpvtools.commands import score, train
from gpvtools.models import builtin_gguf
from tests.conftest import SHARED

VALUEBENCH = SHARED / "data" / "valuebench" / "value_orientation.csv"


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def prism_csv(tmp_path):
    """A small file in ValuePrism's relevance/valence format (the real data set is gated)."""
    rows = [
        ("Helping a stranger carry groceries", "Value", "Kindness", "Yes"),
        ("Helping a stranger carry groceries", "Value", "Wealth", "No"),
        ("Helping a stranger carry groceries", "Value", "Kindness", "Supports"),
        ("Lying to a friend to avoid a party", "Value", "Honesty", "Yes"),
        ("Lying to a friend to avoid a party", "Value", "Honesty", "Opposes"),
        ("Lying to a friend to avoid a party", "Value", "Punctuality", "No"),
        ("Taking a day off to rest", "Value", "Productivity", "Either"),
        ("Taking a day off to rest", "Value", "Well-being", "Supports"),
    ]
    return write_csv(tmp_path / "prism.csv", ["situation", "vrd", "text", "label"], rows)


@pytest.mark.parametrize("name, content, message", [
    ("cols.csv", "question,answer\nA,B\n",
     "{path}: unknown columns question, answer; expected ValueBench's questionnaire,item,value,agreement or "
     "ValuePrism's situation,vrd,text,label (or a .jsonl of text,value,task,label)"),
    ("empty.csv", "questionnaire,item,value,agreement\n", "the training data holds no example"),
    ("agree.csv", "questionnaire,item,value,agreement\nQ,I like it,Joy,2\n",
     "{path}: row 2: agreement must be 1 or -1, not '2'"),
    ("prism.csv", "situation,vrd,text,label\nS,Value,Joy,Maybe\n",
     "{path}: row 2: label 'Maybe' is neither a relevance label (yes/no, 1/0) nor a valence label "
     "(supports/opposes/either)"),
    ("labels.jsonl", '{"text": "t", "value": "Joy", "task": "relevance", "label": "support"}\n',
     "{path}: line 1: label 'support' is outside the relevance task's labels (yes, no)"),
    ("task.jsonl", '{"text": "t", "value": "Joy", "task": "stance", "label": "yes"}\n',
     "{path}: line 1: task 'stance' is not relevance or valence"),
])
def test_bad_data_is_reported_before_training(tmp_path, invoke, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    result = invoke(train.main, [str(path), "-o", str(tmp_path / "out"), "--holdout", "0"])
    assert result.exit_code == 1
    assert result.stderr == f"gpv-train: error: {message.format(path=path)}\n"
    assert not (tmp_path / "out" / "adapter").exists()


@pytest.mark.parametrize("base, status, message", [
    ("/nope/model.gguf", 2, "model /nope/model.gguf does not exist"),  # a usage error, as in gpv-score
    ("{tmp}", 1, "model {tmp} is not a Hugging Face model directory (no config.json)"),
])
def test_a_base_that_cannot_be_loaded(tmp_path, invoke, prism_csv, base, status, message):
    base = base.format(tmp=tmp_path)
    result = invoke(train.main, [str(prism_csv), "-o", str(tmp_path / "out"), "--holdout", "0", "--base", base])
    assert result.exit_code == status
    assert result.stderr.endswith(f"gpv-train: error: {message.format(tmp=tmp_path)}\n")
    assert not (tmp_path / "out" / "checkpoint").exists()


def test_holdout_too_large(tmp_path, invoke, prism_csv):
    result = invoke(train.main, [str(prism_csv), "-o", str(tmp_path / "out"), "--holdout", "99"])
    assert result.exit_code == 1
    assert result.stderr == "gpv-train: error: cannot hold out 99 values: only 6 can be held out\n"


def tiny_args(data, out):
    return [str(data), "-o", str(out), "--holdout", "2", "--seed", "3", "--batch-size", "4",
            "--accumulation", "1", "--lora-r", "4", "--save-every", "2"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A few real LoRA steps on SmolLM2 over a ValueBench subset plus a ValuePrism-format file."""
    from click.testing import CliRunner

    tmp = tmp_path_factory.mktemp("train")
    lines = VALUEBENCH.read_text(encoding="utf-8").splitlines()
    subset = tmp / "vb.csv"
    subset.write_text("\n".join(lines[:121]) + "\n", encoding="utf-8")  # header + 120 items
    out = tmp / "out"
    args = tiny_args(subset, out)
    first = CliRunner().invoke(train.main, args + ["--max-steps", "2"], catch_exceptions=False)
    assert first.exit_code == 0, first.stderr
    resumed = CliRunner().invoke(train.main, args + ["--max-steps", "4", "--resume"], catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.stderr
    return out, first, resumed


def test_tiny_run_writes_adapter_gguf_split_and_report(tiny_run):
    out, first, resumed = tiny_run
    for path in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter.gguf",
                 "heldout.jsonl", "split.json", "report.json", "checkpoint/state.pt"):
        assert (out / path).exists(), path
    assert (out / "adapter.gguf").read_bytes()[:4] == b"GGUF"
    report = orjson.loads(resumed.stdout)
    assert report == orjson.loads((out / "report.json").read_bytes())
    assert report["training"]["steps"] == 4
    split = orjson.loads((out / "split.json").read_bytes())
    assert len(split["heldout_values"]) == 2
    held = [orjson.loads(x) for x in (out / "heldout.jsonl").read_bytes().splitlines()]
    assert held and {h["value"] for h in held if h["label"] == "yes"} <= set(split["heldout_values"])
    for backend in ("transformers", "llama-cpp"):
        for task in ("relevance", "valence"):
            assert 0 <= report["heldout"][backend][task]["accuracy"] <= 1
    assert "resuming at step 2/4" in resumed.stderr
    assert report["training"]["final_loss"] > 0


def test_resume_after_the_last_step_evaluates_and_keeps_the_final_loss(tiny_run):
    """A run interrupted after training resumes straight into the evaluation; the checkpoint carries the
    recent losses, so the report's final loss is the finished run's, not missing."""
    from click.testing import CliRunner

    out, _, resumed = tiny_run
    split = orjson.loads((out / "split.json").read_bytes())
    args = tiny_args(split["data"][0], out) + ["--max-steps", "4", "--resume"]
    again = CliRunner().invoke(train.main, args, catch_exceptions=False)
    assert again.exit_code == 0, again.stderr
    assert "resuming at step 4/4" in again.stderr
    before, after = orjson.loads(resumed.stdout), orjson.loads(again.stdout)
    assert after["training"]["final_loss"] == before["training"]["final_loss"]
    assert after["heldout"]["transformers"] == before["heldout"]["transformers"]


def test_trained_adapter_is_used_by_gpv_score_on_both_backends(tiny_run, invoke):
    out, _, _ = tiny_run
    records = b"".join(orjson.dumps({"id": str(i), "perception": t}) + b"\n" for i, t in enumerate(
        ["I always help my family first.", "Winning matters more than anything.", "I enjoy a quiet routine."]))
    base = builtin_gguf()
    lcpp = invoke(score.main, ["-m", base, "--adapter", str(out / "adapter.gguf"), "--values", "vsm"], records)
    hf = invoke(score.main, ["-m", base, "-b", "transformers", "--adapter", str(out / "adapter"),
                             "--values", "vsm"], records)
    plain = invoke(score.main, ["-m", base, "--values", "vsm"], records)
    assert lcpp.exit_code == hf.exit_code == plain.exit_code == 0, lcpp.stderr + hf.stderr
    p = [np.array([v["relevance"] for r in map(orjson.loads, x.stdout.splitlines()) for v in r["values"].values()])
         for x in (lcpp, hf, plain)]
    assert np.abs(p[0] - p[1]).mean() < 0.05          # the same adapter through GGUF and peft
    assert np.abs(p[0] - p[2]).max() > 1e-4           # and it changed the model


def test_gguf_lora_export_matches_peft_on_a_strong_random_adapter(tmp_path, monkeypatch):
    """A random LoRA on q and k, exported to GGUF, must move llama.cpp as it moves peft.

    q and k are where the export must permute lora_b's rows as llama.cpp's conversion permutes the
    weights; the same export without the permutation is the control that shows the test can fail.
    """
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    from gpvtools.scoring.hf import TransformersScorer, load_model
    from gpvtools.scoring.llama import LlamaCppScorer
    from gpvtools.training import gguf_export

    torch.manual_seed(0)
    model, tok, _ = load_model(builtin_gguf(), "cpu")
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                  target_modules=["q_proj", "k_proj"]))
    with torch.no_grad():  # peft's random B is tiny; make the adapter change the model clearly
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    state = get_peft_model_state_dict(peft_model)
    pairs = [(s, v) for s in ("I help my neighbours.", "Power is what I want.", "I pray every day.",
                              "I like new things.") for v in ("Benevolence", "Power", "Tradition", "Security")]
    merged = peft_model.merge_and_unload()
    with_peft = TransformersScorer("x", loaded=(merged, tok)).label_probs("relevance", pairs)[:, 0]
    gguf_export.export_lora(state, merged.config, 8, tmp_path / "right.gguf")
    monkeypatch.setattr(gguf_export, "_PERMUTED", set())
    gguf_export.export_lora(state, merged.config, 8, tmp_path / "unpermuted.gguf")
    right, wrong = (LlamaCppScorer(builtin_gguf(), lora_path=str(tmp_path / f)).label_probs("relevance", pairs)[:, 0]
                    for f in ("right.gguf", "unpermuted.gguf"))
    # Measured here: 0.025 against 0.147; the bases alone differ by ~0.03 (Q4_1 kernels vs dequantised).
    assert np.abs(right - with_peft).mean() < 0.05
    assert np.abs(wrong - with_peft).mean() > 2 * np.abs(right - with_peft).mean()


def test_qlora_needs_cuda(tmp_path, invoke, prism_csv):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: QLoRA is exercised by test_qlora_on_cuda instead")
    result = invoke(train.main, [str(prism_csv), "-o", str(tmp_path / "o"), "--holdout", "0", "--load-in-4bit"])
    assert result.exit_code == 1
    assert result.stderr.endswith("gpv-train: error: --load-in-4bit needs a CUDA GPU (bitsandbytes); "
                                  "none is available here\n")


def test_qlora_on_cuda(tmp_path, invoke, prism_csv):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here: the QLoRA path of gpv-train was not run")
    result = invoke(train.main, [str(prism_csv), "-o", str(tmp_path / "o"), "--holdout", "1", "--load-in-4bit",
                                 "--max-steps", "2", "--batch-size", "2", "--no-gguf"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "o" / "adapter" / "adapter_model.safetensors").exists()
