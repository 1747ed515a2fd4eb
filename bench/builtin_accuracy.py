"""Held-out accuracy of the built-in scorer, measured with gpv-score itself on both CPU backends.

    python bench/builtin_accuracy.py [--valuebench PATH] [--backends llama-cpp,transformers]

The held-out examples are rebuilt from ValueBench (../shared) with the split the built-in model was
trained with (its 50 held-out values and seed, in gpvtools/data/builtin/model.json): for each
held-out item, relevance "yes" for its own value and "no" for a drawn other held-out value, and
valence support/oppose from its agreement. Each item text goes through `gpv-score --values
@heldout-values --valence all`; accuracy is read off the labelled pairs.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

from gpvtools.scoring import RELEVANCE
from gpvtools.training import data as data_mod
from gpvtools.training.ship import BUILTIN_DIR

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "valuebench" / "value_orientation.csv"


def heldout_examples(valuebench):
    card = orjson.loads((BUILTIN_DIR / "model.json").read_bytes())
    dataset = data_mod.read(valuebench, "valuebench")
    _, test = data_mod.split(dataset, card["heldout_values"], card["seed"])
    return card, test


def score(backend, texts, values_file, workdir):
    inp = Path(workdir) / "items.jsonl"
    inp.write_bytes(b"".join(orjson.dumps({"id": str(i), "perception": t}) + b"\n" for i, t in enumerate(texts)))
    cmd = ["gpv-score", "-q", "-b", backend, "--values", f"@{values_file}", "--valence", "all", str(inp)]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return [orjson.loads(line)["values"] for line in out.splitlines()]


def accuracy(examples, results_by_text):
    counts = {}
    for e in examples:
        r = results_by_text[e.text][e.value]
        if e.task == RELEVANCE:
            predicted = "yes" if r["relevance"] > 0.5 else "no"
        else:
            predicted = max(("support", "oppose", "either"), key=lambda k: r[k])
        ok, n = counts.get(e.task, (0, 0))
        counts[e.task] = (ok + (predicted == e.label), n + 1)
    return {task: (ok / n, n) for task, (ok, n) in counts.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--valuebench", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--backends", default="llama-cpp,transformers")
    args = parser.parse_args()
    card, examples = heldout_examples(args.valuebench)
    texts = list(dict.fromkeys(e.text for e in examples))
    print(f"built-in scorer: {card['base']}")
    print(f"held-out: {len(card['heldout_values'])} values, {len(texts)} items, {len(examples)} labelled pairs")
    decisions = {}
    with tempfile.TemporaryDirectory() as tmp:
        values_file = Path(tmp) / "values.txt"
        values_file.write_text("\n".join(card["heldout_values"]) + "\n", encoding="utf-8")
        print(f"{'backend':<14} {'relevance':>10} {'valence':>10}")
        for backend in args.backends.split(","):
            results = dict(zip(texts, score(backend, texts, values_file, tmp)))
            acc = accuracy(examples, results)
            decisions[backend] = [results[t][v]["relevance"] > 0.5 for t in texts for v in card["heldout_values"]]
            print(f"{backend:<14} {acc['relevance'][0]:>9.1%} {acc['valence'][0]:>9.1%}   "
                  f"(n = {acc['relevance'][1]} and {acc['valence'][1]})")
    if len(decisions) == 2:
        a, b = decisions.values()
        same = sum(x == y for x, y in zip(a, b)) / len(a)
        print(f"same relevance decision on both backends: {same:.1%} of {len(a)} (item, value) pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
