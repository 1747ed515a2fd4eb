"""Relevance on human judgments: ROC AUC and F1 of p_rel on the Touché23-ValueEval dev split, side by side.

    python bench/touche.py [--old COMMIT] [--backend transformers] [--limit N]

The dev split is the fixed 20% of the Touché23-ValueEval training arguments (CC BY-SA 4.0; ../shared/data/
touche23) chosen by a hash of the argument id (gpvtools.method.training.data.touche_is_dev); gpv-train never
trains on it. Each argument's premise alone goes through `gpv-score --values schwartz`, and its p_rel for
each of the 10 basic values is compared with the human label (the 20 refined categories folded into
the 10, as the data's README says). Scorers, in one run:
  builtin     the built-in scorer in this checkout (gpvtools/data/builtin)
  old         the built-in scorer as shipped at --old COMMIT (its peft adapter, read with git show)
  dictionary  the Schwartz word list (../shared/data/dictionaries), relevance from word counts
Per value and macro-averaged: ROC AUC of p_rel against the label, and F1 of the method's decision
p_rel > 0.5 (the dictionary: ranked by its score, the share of words that are the value's, and relevant
when any is); for the built-in scorer also F1 at its shipped per-value thresholds (model.json, fitted on
this split). Rows go to stdout as a table; --json FILE keeps every figure.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from gpvtools.method.training import data as data_mod
from gpvtools.method.training.evaluation import relevance_report
from gpvtools.runtimes.models import builtin_gguf, builtin_scorer_card

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
TOUCHE = SHARED / "touche23" / "arguments-training.tsv"
LEXICON = SHARED / "dictionaries" / "schwartz-values-en.json"
OLD_COMMIT = "7d7ea36"  # the last commit with the ValueBench-only built-in scorer (4 epochs, 68.6% / 72.5%)
BIN = Path(sys.executable).parent


def old_adapter(commit, where):
    """The peft adapter shipped at COMMIT, written under WHERE."""
    adapter = Path(where) / "old-adapter"
    adapter.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        blob = subprocess.run(["git", "show", f"{commit}:gpvtools/data/builtin/adapter/{name}"], cwd=ROOT,
                              capture_output=True, check=True).stdout
        (adapter / name).write_bytes(blob)
    return adapter


def score(argv, inp):
    """{argument id: {value: p_rel}} from gpv-score ARGV over INP, and the seconds it took. The dictionary
    has no p_rel: its score (the share of the text's words that are the value's) ranks instead."""
    start = time.monotonic()
    out = subprocess.run([str(BIN / "gpv-score"), "-q", "--values", "schwartz", *argv, str(inp)],
                         capture_output=True, check=True).stdout
    spent = time.monotonic() - start
    return {r["id"]: {v: x.get("relevance", x["score"]) for v, x in r["values"].items()}
            for r in map(orjson.loads, out.splitlines())}, spent


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--touche", type=Path, default=TOUCHE)
    parser.add_argument("--old", default=OLD_COMMIT, help="commit of the old built-in scorer ('' to skip it)")
    parser.add_argument("--backend", default="transformers", help="gpv-score backend for the built-in scorers")
    parser.add_argument("--limit", type=int, default=0, help="only the first N dev arguments (a quick look)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    dev = data_mod.dev_split(data_mod.read(args.touche, "touche"))
    if args.limit:
        dev = dev[:args.limit]
    values = list(dev[0].labels)
    gold = {v: [j.labels[v] for j in dev] for v in values}
    print(f"Touché23-ValueEval dev split: {len(dev)} arguments (premises) x {len(values)} values, "
          f"{sum(map(sum, gold.values()))} positive pairs")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "dev.jsonl"
        inp.write_bytes(b"".join(orjson.dumps({"id": j.id, "perception": j.text}) + b"\n" for j in dev))
        runs = {"builtin": ["-b", args.backend]}
        if args.old:
            adapter = old_adapter(args.old, tmp)
            if args.backend == "transformers":
                runs[f"old ({args.old})"] = ["-b", "transformers", "-m", builtin_gguf(), "--adapter", str(adapter)]
            else:
                sys.exit("the old scorer is read through its peft adapter: --backend transformers")
        runs["dictionary"] = ["-b", "dictionary", "-m", str(LEXICON)]
        shipped = (builtin_scorer_card().get("thresholds") or {}).get("values")
        for name, argv in runs.items():
            p, spent = score(argv, inp)
            p_rel = {v: [p[j.id][v] for j in dev] for v in values}
            # The method's decision: p_rel > 0.5; the dictionary's: any of the value's words (score > 0)
            report = relevance_report(values, gold, p_rel, threshold=0.0 if name == "dictionary" else 0.5)
            if name == "builtin" and shipped:  # and at the thresholds gpv-score applies for it (model.json)
                at = relevance_report(values, gold, p_rel, threshold=shipped)
                report["macro_f1_shipped"] = at["macro_f1"]
                for v in values:
                    report["values"][v]["f1_shipped"] = at["values"][v]["f1"]
            report["seconds"] = round(spent, 1)
            results[name] = report
    names = list(results)
    print(f"{'value':<16}" + "".join(f"{n[:20]:>22}" for n in names))
    print(f"{'':<16}" + "".join(f"{'ROC AUC    F1':>22}" for _ in names))
    def cell(r):
        auc = "-" if r["roc_auc"] is None else f"{r['roc_auc']:.3f}"  # no positive (or no negative) here
        return f"{auc:>14}{r['f1']:>8.3f}"

    for v in values:
        print(f"{v:<16}" + "".join(cell(results[n]["values"][v]) for n in names)
              + f"   ({results[names[0]]['values'][v]['positives']} of {len(dev)})")
    print(f"{'macro':<16}" + "".join(f"{results[n]['macro_roc_auc']:>14.3f}{results[n]['macro_f1']:>8.3f}"
                                     for n in names))
    if "macro_f1_shipped" in results.get("builtin", {}):
        b = results["builtin"]
        print("built-in, F1 at its shipped per-value thresholds (fitted on this split, so in-sample): "
              + ", ".join(f"{v} {b['values'][v]['f1_shipped']:.3f}" for v in values)
              + f"; macro {b['macro_f1_shipped']:.3f}")
    print("seconds: " + ", ".join(f"{n} {results[n]['seconds']}" for n in names))
    if args.json:
        args.json.write_bytes(orjson.dumps({"dev_arguments": len(dev), "backend": args.backend, "results": results},
                                           option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
