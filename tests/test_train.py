"""gpv-train: bad data stops before any training; a tiny real run yields an adapter both backends use."""

import csv

import numpy as np
import orjson
import pytest

from gpvtools.commands import score, train
from gpvtools.method.scoring import LABELS, RELEVANCE, VALENCE
from gpvtools.method.training import data, evaluation, trainer
from gpvtools.runtimes.models import builtin_gguf
from tests.conftest import SHARED, cuda_missing, require

VALUEBENCH = SHARED / "data" / "valuebench" / "value_orientation.csv"
TOUCHE = SHARED / "data" / "touche23"


def touche_subset(tmp, n, name="mini"):
    """The first N Touché arguments and their labels, as arguments-NAME.tsv beside labels-NAME.tsv."""
    for kind in ("arguments", "labels"):
        lines = (TOUCHE / f"{kind}-training.tsv").read_text(encoding="utf-8").splitlines()
        (tmp / f"{kind}-{name}.tsv").write_text("\n".join(lines[:n + 1]) + "\n", encoding="utf-8")
    return tmp / f"arguments-{name}.tsv"


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
    """A few real LoRA steps on SmolLM2 over a ValueBench subset plus Touché arguments. The resumed run's
    result carries `scored`: what each backend's label_probs was asked and answered while the report was made
    ([(backend, task, pairs, probabilities)]), which the report's figures are recomputed from."""
    from click.testing import CliRunner

    from gpvtools.method.scoring.hf import TransformersScorer
    from gpvtools.method.scoring.llama import LlamaCppScorer

    tmp = tmp_path_factory.mktemp("train")
    lines = VALUEBENCH.read_text(encoding="utf-8").splitlines()
    subset = tmp / "vb.csv"
    subset.write_text("\n".join(lines[:121]) + "\n", encoding="utf-8")  # header + 120 items
    out = tmp / "out"
    args = tiny_args(subset, out) + [str(touche_subset(tmp, 40))]
    first = CliRunner().invoke(train.main, args + ["--max-steps", "2"], catch_exceptions=False)
    assert first.exit_code == 0, first.stderr
    scored = []
    with pytest.MonkeyPatch.context() as mp:
        for backend, cls in (("transformers", TransformersScorer), ("llama-cpp", LlamaCppScorer)):
            def kept(self, task, pairs, backend=backend, label_probs=cls.label_probs):  # as it is, and noted
                probs = label_probs(self, task, pairs)
                scored.append((backend, task, [tuple(p) for p in pairs], np.array(probs, copy=True)))
                return probs

            mp.setattr(cls, "label_probs", kept)
        resumed = CliRunner().invoke(train.main, args + ["--max-steps", "4", "--resume"], catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.stderr
    resumed.scored = scored
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
    assert report["training"]["final_loss"] > 0 and report["training"]["examples_per_s"] > 0
    # the command of the run that wrote split.json (the resumed one), less what changes nothing of the result
    assert split["command"].startswith("gpv-train ") and "--max-steps 4" in split["command"]
    assert "--resume" not in split["command"]
    # The Touché arguments' dev split is written out, never trains, and is evaluated on every value
    dev = [orjson.loads(x) for x in (out / "dev.jsonl").read_bytes().splitlines()]
    assert dev and split["dev_texts"] == len(dev)
    assert all(data.touche_is_dev(d["id"]) for d in dev)
    assert report["dev"]["transformers"]["values"].keys() == set(data.TOUCHE_FOLD.values())
    assert 0 <= report["dev"]["transformers"]["macro_roc_auc"] <= 1


def test_the_report_s_accuracy_and_roc_auc_are_those_of_heldout_and_dev_jsonl(tiny_run):
    """Each accuracy in the report, recomputed here from the labels in heldout.jsonl and what the backend
    answered for exactly those examples in that order; each ROC AUC from the labels in dev.jsonl and the
    p_rel of each text and value, by scikit-learn."""
    from sklearn.metrics import roc_auc_score

    out, _, resumed = tiny_run
    report = orjson.loads(resumed.stdout)
    held = [orjson.loads(x) for x in (out / "heldout.jsonl").read_bytes().splitlines()]

    def answered(backend, task, pairs):
        found = [probs for b, t, p, probs in resumed.scored if (b, t, p) == (backend, task, pairs)]
        assert len(found) == 1, f"{backend} {task}: asked {len(found)} times for these pairs"
        assert len(found[0]) == len(pairs)
        return found[0]

    for backend in ("transformers", "llama-cpp"):
        assert report["heldout"][backend].keys() == {RELEVANCE, VALENCE}
        for task in (RELEVANCE, VALENCE):
            rows = [h for h in held if h["task"] == task]
            probs = answered(backend, task, [(h["text"], h["value"]) for h in rows])
            if task == RELEVANCE:
                predicted = ["yes" if p[0] > 0.5 else "no" for p in probs]
            else:
                predicted = [LABELS[VALENCE][int(np.argmax(p))] for p in probs]
            correct = sum(h["label"] == p for h, p in zip(rows, predicted, strict=True))
            got = report["heldout"][backend][task]
            assert rows and got["n"] == len(rows)
            assert got["accuracy"] == round(correct / len(rows), 4), (backend, task)
    dev = [orjson.loads(x) for x in (out / "dev.jsonl").read_bytes().splitlines()]
    values = list(dev[0]["labels"])
    p_rel = answered("transformers", RELEVANCE, [(d["text"], v) for d in dev for v in values])[:, 0].reshape(
        len(dev), len(values))
    got = report["dev"]["transformers"]
    assert list(got["values"]) == values
    aucs = []
    for k, v in enumerate(values):
        gold = [d["labels"][v] for d in dev]
        if len(set(gold)) < 2:  # no ROC curve without both kinds
            assert got["values"][v]["roc_auc"] is None, v
            continue
        aucs.append(roc_auc_score(gold, p_rel[:, k]))
        assert got["values"][v]["roc_auc"] == pytest.approx(aucs[-1], abs=5e-5), v
    assert aucs and got["macro_roc_auc"] == pytest.approx(np.mean(aucs), abs=1e-4)


@pytest.mark.slow
def test_resume_after_the_last_step_evaluates_and_keeps_the_final_loss(tiny_run):
    """A run interrupted after training resumes straight into the evaluation; the checkpoint carries the
    recent losses, so the report's final loss is the finished run's, not missing."""
    from click.testing import CliRunner

    out, _, resumed = tiny_run
    split = orjson.loads((out / "split.json").read_bytes())
    args = tiny_args(split["data"][0], out) + split["data"][1:] + ["--max-steps", "4", "--resume"]
    again = CliRunner().invoke(train.main, args, catch_exceptions=False)
    assert again.exit_code == 0, again.stderr
    assert "resuming at step 4/4" in again.stderr
    before, after = orjson.loads(resumed.stdout), orjson.loads(again.stdout)
    assert after["training"]["final_loss"] == before["training"]["final_loss"]
    assert after["heldout"]["transformers"] == before["heldout"]["transformers"]


@pytest.mark.slow
def test_trained_adapter_is_used_by_gpv_score_on_both_backends(tiny_run, invoke):
    """Each backend scored with and without the adapter. What must be shown is that each loaded it and that it
    does the same there: so the adapter must move each backend's scores by more than the two backends then
    differ, and move them alike. llama.cpp runs on the float32 copy (--precision f32): with the Q4_1 kernels
    the bases alone differ by ~0.03 on average (test_score_backends.py), more than a 4-step adapter moves
    anything, and a backend that ignored the adapter could not be told from one that used it."""
    out, _, _ = tiny_run
    records = b"".join(orjson.dumps({"id": str(i), "perception": t}) + b"\n" for i, t in enumerate(
        ["I always help my family first.", "Winning matters more than anything.", "I enjoy a quiet routine."]))
    base = builtin_gguf()
    runs = {
        "llama-cpp": invoke(score.main, ["-m", base, "--precision", "f32", "--adapter", str(out / "adapter.gguf"),
                                         "--values", "vsm"], records),
        "llama-cpp plain": invoke(score.main, ["-m", base, "--precision", "f32", "--values", "vsm"], records),
        "transformers": invoke(score.main, ["-m", base, "-b", "transformers", "--adapter", str(out / "adapter"),
                                            "--values", "vsm"], records),
        "transformers plain": invoke(score.main, ["-m", base, "-b", "transformers", "--values", "vsm"], records),
    }
    for name, run in runs.items():
        assert run.exit_code == 0, (name, run.stderr)
    p = {name: np.array([v["relevance"] for r in map(orjson.loads, run.stdout.splitlines())
                         for v in r["values"].values()]) for name, run in runs.items()}
    moved = {b: p[b] - p[f"{b} plain"] for b in ("llama-cpp", "transformers")}  # what the adapter did
    backends = np.abs(p["llama-cpp"] - p["transformers"]).mean()
    print(f"\nmean |Δp_rel|: adapter on llama-cpp {np.abs(moved['llama-cpp']).mean():.5f}, on transformers "
          f"{np.abs(moved['transformers']).mean():.5f}; between the backends with it {backends:.5f}, without it "
          f"{np.abs(p['llama-cpp plain'] - p['transformers plain']).mean():.5f}; between the two moves "
          f"{np.abs(moved['llama-cpp'] - moved['transformers']).mean():.5f}")
    # Measured: the adapter moves p_rel by 0.081 on average on both backends, which then differ by 0.0003.
    # Each backend loaded it: had one not, the backends would differ by the adapter's whole move (a ratio of
    # 1), and by half of it (a ratio of 2) had it applied half the adapter; 4 leaves neither through.
    for b in moved:
        assert np.abs(moved[b]).mean() > 4 * backends, b
    # and it did the same in both: the two moves differ by under a quarter of their size (half an adapter in
    # one backend would make them differ by half)
    assert np.abs(moved["llama-cpp"] - moved["transformers"]).mean() < 0.25 * np.abs(moved["transformers"]).mean()


@pytest.mark.slow
def test_gguf_lora_export_matches_peft_on_a_strong_random_adapter(tmp_path, monkeypatch):
    """A random LoRA on q and k, exported to GGUF, must move llama.cpp as it moves peft.

    q and k are where the export must permute lora_b's rows as llama.cpp's conversion permutes the
    weights; the same export without the permutation is the control that shows the test can fail.
    """
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    from gpvtools.method.scoring.hf import TransformersScorer, load_model
    from gpvtools.method.scoring.llama import LlamaCppScorer
    from gpvtools.method.training import gguf_export

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
    require("no-cuda", None if cuda_missing() else "a GPU is present: QLoRA is exercised by test_qlora_on_cuda instead")
    result = invoke(train.main, [str(prism_csv), "-o", str(tmp_path / "o"), "--holdout", "0", "--load-in-4bit",
                                 "--base", "org/model"])
    assert result.exit_code == 1
    assert result.stderr.endswith("gpv-train: error: --load-in-4bit needs a CUDA GPU (bitsandbytes); "
                                  "none is available here\n")


def test_qlora_of_a_gguf_base_is_a_usage_error(tmp_path, invoke, prism_csv):
    # transformers quantizes no model it loads from a GGUF file (transformers 5.25 raises a ValueError on a GPU)
    result = invoke(train.main, [str(prism_csv), "-o", str(tmp_path / "o"), "--holdout", "0", "--load-in-4bit"])
    assert result.exit_code == 2
    assert result.stderr.endswith("gpv-train: error: --load-in-4bit cannot load a GGUF file: transformers quantizes "
                                  "a Hugging Face model directory or hub id; give one, or score the GGUF with "
                                  "-b llama-cpp\n")


def test_qlora_on_cuda(tmp_path, invoke, prism_csv):
    require("cuda", cuda_missing() and f"{cuda_missing()}: the QLoRA path of gpv-train was not run")
    from tests.test_score import float_model_dir  # the built-in base as a directory: QLoRA cannot load a GGUF

    base = float_model_dir(tmp_path / "base")
    result = invoke(train.main, [str(prism_csv), "-o", str(tmp_path / "o"), "--holdout", "1", "--load-in-4bit",
                                 "--base", str(base), "--max-steps", "2", "--batch-size", "2", "--no-gguf"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "o" / "adapter" / "adapter_model.safetensors").exists()


# --- Touché data, packing, class weights, ROC AUC -----------------------------------------------------------------

def test_touche_arguments_fold_into_the_ten_values_and_split_by_id(tmp_path):
    path = touche_subset(tmp_path, 60)
    for either in (path, tmp_path / "labels-mini.tsv"):  # either file finds the other
        assert data.detect_format(either) == "touche"
    judged = data.read(tmp_path / "labels-mini.tsv").judged
    assert len(judged) == 60
    rows = {r["Argument ID"]: r for r in csv.DictReader(open(TOUCHE / "labels-training.tsv", encoding="utf-8"),
                                                         delimiter="\t")}
    premises = {r["Argument ID"]: r["Premise"] for r in csv.DictReader(
        open(TOUCHE / "arguments-training.tsv", encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE)}
    for j in judged:
        assert j.text == premises[j.id].strip()
        row = rows[j.id]
        assert j.labels["Security"] == max(int(row["Security: personal"]), int(row["Security: societal"]))
        assert j.labels["Universalism"] == max(int(row[f"Universalism: {k}"])
                                               for k in ("concern", "nature", "tolerance", "objectivity"))
        assert j.labels["Hedonism"] == int(row["Hedonism"])
        assert len(j.labels) == 10
    dev = data.dev_split(data.Dataset([], [], judged))
    assert dev == [j for j in judged if data.touche_is_dev(j.id)] and 0 < len(dev) < 60
    train_examples, test_examples = data.split(data.Dataset([], [], judged), [], seed=0)
    assert not test_examples
    assert len(train_examples) == 10 * (60 - len(dev))
    assert not {e.text for e in train_examples} & {j.text for j in dev}


def test_the_dev_split_is_a_fifth_of_touche_and_no_dev_premise_trains():
    judged = data.read(TOUCHE / "arguments-training.tsv").judged
    dev = data.dev_split(data.Dataset([], [], judged))
    assert abs(len(dev) / len(judged) - 0.2) < 0.01
    train_examples, _ = data.split(data.Dataset([], [], judged), [], seed=0)
    dev_texts = {j.text for j in dev}
    assert not any(e.text in dev_texts for e in train_examples)
    # Some premises recur under another id on both sides of the split: those are dropped from training
    assert len({e.text for e in train_examples}) < len({j.text for j in judged if not data.touche_is_dev(j.id)})


@pytest.mark.parametrize("name, labels, message", [
    ("nolabels", None, "{path}: Touché data needs its arguments and labels TSVs side by side "
                       "(arguments-NAME.tsv and labels-NAME.tsv); missing {labels}"),
    ("badcell", "2", "{labels}: row 2: column 'Stimulation' must be 0 or 1, not '2'"),
])
def test_bad_touche_data_names_the_file_row_and_column(tmp_path, invoke, name, labels, message):
    path = touche_subset(tmp_path, 3, name)
    labels_path = tmp_path / f"labels-{name}.tsv"
    if labels is None:
        labels_path.unlink()
    else:
        lines = labels_path.read_text().splitlines()
        header, first = lines[0].split("\t"), lines[1].split("\t")
        first[header.index("Stimulation")] = labels
        labels_path.write_text("\n".join([lines[0], "\t".join(first)] + lines[2:]) + "\n")
    result = invoke(train.main, [str(path), "-o", str(tmp_path / "out"), "--holdout", "0", "--format", "touche"])
    assert result.exit_code == 1
    assert result.stderr == f"gpv-train: error: {message.format(path=path, labels=labels_path)}\n"


def test_class_weights_are_inverse_frequency_within_each_task():
    E = data.Example
    examples = ([E("t", "v", "relevance", "yes")] * 1 + [E("t", "v", "relevance", "no")] * 3
                + [E("t", "v", "valence", "support")] * 2 + [E("t", "v", "valence", "oppose")] * 1)
    w = trainer.class_weights(examples, balance=True)
    assert w == {("relevance", "yes"): 2.0, ("relevance", "no"): 4 / 6, ("valence", "support"): 0.75,
                 ("valence", "oppose"): 1.5}
    # each label's examples weigh in equally, and a task's weights average 1 over its examples
    assert 1 * w[("relevance", "yes")] == 3 * w[("relevance", "no")]
    assert trainer.class_weights(examples, balance=False) == dict.fromkeys(w, 1.0)


def test_roc_auc_and_f1_by_hand_and_against_scikit_learn():
    from sklearn.metrics import f1_score, roc_auc_score

    # Positives 0.9, 0.4, 0.4 against negatives 0.4, 0.1: 0.9 wins both pairs (2); each positive 0.4 ties
    # the 0.4 (a half) and beats the 0.1 (1.5 each): 5 of the 6 pairs.
    labels, scores = [1, 1, 1, 0, 0], [0.9, 0.4, 0.4, 0.4, 0.1]
    assert evaluation.roc_auc(labels, scores) == pytest.approx(5 / 6)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 2)  # ties too
    assert evaluation.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert evaluation.f1(labels, scores > 0.5) == pytest.approx(f1_score(labels, scores > 0.5))
    assert evaluation.roc_auc([1, 1], [0.2, 0.3]) is None


@pytest.mark.slow
def test_packed_rows_give_the_unpacked_logits():
    """One row per text with every value's suffix under the tree mask computes, for each suffix, what the
    suffix's own row computes (float32, no autocast): the packing changes the cost, not the model."""
    import torch

    from gpvtools.method.scoring import LABELS, first_label_tokens
    from gpvtools.method.scoring.hf import cache_kwarg, load_model

    model, tok, _ = load_model(builtin_gguf(), "cpu", "float32")
    model = trainer.prepare(model, trainer.TrainConfig(lora_r=4, lora_layers=4), quantized=False)
    label_ids = {t: first_label_tokens(lambda x: tok(x)["input_ids"], t) for t in LABELS}
    E = data.Example
    examples = [E(text, value, "relevance", "yes") for text in ("I help my neighbours.", "Rules keep us safe and "
                "everyone should follow them, always.") for value in ("Benevolence", "Power", "Self-Direction")]
    examples.append(E("I help my neighbours.", "Tradition", "valence", "support"))
    encoded = trainer.encode(tok, examples, label_ids)
    rows, judged = trainer.pack(examples, encoded)
    assert judged == [False] * 3
    assert [len(r[1]) for r in rows] == [3, 3, 1]
    with torch.no_grad():
        packed = trainer.packed_logits(model, torch, rows, 0, "cpu")
        single = torch.cat([trainer.label_logits(model, torch, [e], 0, "cpu", cache_kwarg(model)) for e in encoded])
    assert packed.shape == single.shape
    assert torch.allclose(packed, single, atol=1e-3), float((packed - single).abs().max())


def test_judged_rows_take_turns_so_each_is_seen_judged_epochs_times():
    judged = [False] * 5 + [True] * 40
    seen = [0] * len(judged)
    for epoch in range(4):
        rows = trainer.epoch_rows(judged, 0.5, seed=7, epoch=epoch)
        assert len(rows) == len(set(rows)) == 5 + 20
        for i in rows:
            seen[i] += 1
    assert seen == [4] * 5 + [2] * 40
    assert sorted(trainer.epoch_rows(judged, 1.0, seed=7, epoch=3)) == list(range(45))
    # the loss weights count a judged example at its share of the epochs
    E = data.Example
    examples = [E("a", "v", "relevance", "yes")] * 2 + [E("b", "v", "relevance", "no", judged=True)] * 4
    assert trainer.class_weights(examples, True, 0.5) == {("relevance", "yes"): 1.0, ("relevance", "no"): 1.0}


def test_ship_writes_a_card_with_the_data_the_command_and_every_figure(tiny_run, tmp_path):
    from gpvtools.method.training.ship import ship

    out, _, resumed = tiny_run
    report = orjson.loads(resumed.stdout)
    dest = ship(out, tmp_path / "builtin")
    card = orjson.loads((dest / "model.json").read_bytes())
    assert "ValueBench" in card["data"] and "Touché23-ValueEval" in card["data"]
    assert card["command"].startswith("gpv-train ") and "--holdout 2" in card["command"]
    assert card["heldout_accuracy"] == report["heldout"] and card["dev_relevance"] == report["dev"]
    assert card["dev_texts"] == len((out / "dev.jsonl").read_bytes().splitlines())
    assert card["training"] == orjson.loads((out / "report.json").read_bytes())["training"]
    assert (dest / "adapter.gguf").read_bytes() == (out / "adapter.gguf").read_bytes()


def test_the_time_left_of_a_resumed_run_counts_only_its_own_steps(capsys, monkeypatch):
    # resumed at step 1380 of 3474, 40 steps done in 6 minutes: 2054 steps left at 9 s each
    bar = trainer.Progress(3474, True, every=20, first=1380)
    monkeypatch.setattr(trainer.time, "monotonic", lambda: bar.start + 360.0)
    bar.update(1420, 0.5)
    assert capsys.readouterr().err.strip() == "gpv-train: step 1420/3474  loss 0.5000  6.0 min, ~308.1 min left"
