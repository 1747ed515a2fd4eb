"""Held-out accuracy of the built-in scorer, measured with gpv-score itself on both CPU backends.

    python bench/builtin_accuracy.py [--valuebench PATH] [--backends llama-cpp,transformers]

The held-out examples are rebuilt from ValueBench (../shared) with the split the built-in model was
trained with (its 50 held-out values and seed, in gpvtools/data/builtin/model.json): for each
held-out item, relevance "yes" for its own value and "no" for a drawn other held-out value, and
valence support/oppose from its agreement. Each item goes through `gpv-score --values-field gold
--valence all`, scored on exactly its labelled values; accuracy is read off those pairs, and for
valence the balanced accuracy (the mean of the support and oppose recalls) and the oppose recall.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

from gpvtools.method.training import data as data_mod
from gpvtools.method.training.ship import BUILTIN_DIR
from gpvtools.method.validation import accuracy as validation_accuracy

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "valuebench" / "value_orientation.csv"


def heldout_examples(valuebench):
    card = orjson.loads((BUILTIN_DIR / "model.json").read_bytes())
    dataset = data_mod.read(valuebench, "valuebench")
    _, test = data_mod.split(dataset, card["heldout_values"], card["seed"])
    return card, test


def score(backend, gold, workdir):
    """{text: {value: result}} from gpv-score, each text scored on its own labelled values."""
    inp = Path(workdir) / "items.jsonl"
    inp.write_bytes(b"".join(orjson.dumps({"id": str(i), "perception": t, "gold": v}) + b"\n"
                             for i, (t, v) in enumerate(gold.items())))
    cmd = ["gpv-score", "-q", "-b", backend, "--values-field", "gold", "--valence", "all", str(inp)]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return {r["perception"]: r["values"] for r in map(orjson.loads, out.splitlines())}


def accuracy(examples, results_by_text):
    """{task: (accuracy, n)}, decided and counted by gpv-validate accuracy's own functions."""
    items = ((i, {"value": e.value, "task": e.task, "label": e.label, "values": results_by_text[e.text]})
             for i, e in enumerate(examples, 1))
    decisions = validation_accuracy.labelled_decisions(items)
    labels = {"relevance": validation_accuracy.RELEVANCE_LABELS, "valence": validation_accuracy.VALENCE_LABELS}
    return {task: validation_accuracy.summary(gold, decided, labels[task])
            for task, (gold, decided) in decisions.items()}


def recall(s, label):
    row = s["confusion"][label]
    return row[label], sum(row.values())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--valuebench", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--backends", default="llama-cpp,transformers")
    args = parser.parse_args()
    card, examples = heldout_examples(args.valuebench)
    gold = {}
    for e in examples:
        gold.setdefault(e.text, []).append(e.value)
    gold = {t: list(dict.fromkeys(v)) for t, v in gold.items()}
    print(f"built-in scorer: {card['base']}")
    print(f"held-out: {len(card['heldout_values'])} values, {len(gold)} items, {len(examples)} labelled examples")
    decisions = {}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'backend':<14} {'relevance':>10} {'valence':>10} {'balanced':>10} {'oppose recall':>14}")
        for backend in args.backends.split(","):
            results = score(backend, gold, tmp)
            acc = accuracy(examples, results)
            decisions[backend] = [results[t][v]["relevance"] > 0.5 for t, vs in gold.items() for v in vs]
            val = acc["valence"]
            (hit_s, n_s), (hit_o, n_o) = recall(val, "support"), recall(val, "oppose")
            print(f"{backend:<14} {acc['relevance']['accuracy']:>9.1%} {val['accuracy']:>9.1%} "
                  f"{(hit_s / n_s + hit_o / n_o) / 2:>9.1%} {hit_o:>8}/{n_o:<5}  "
                  f"(n = {acc['relevance']['n']} and {val['n']})")
    if len(decisions) == 2:
        a, b = decisions.values()
        same = sum(x == y for x, y in zip(a, b)) / len(a)
        print(f"same relevance decision on both backends: {same:.1%} of {len(a)} (item, value) pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
