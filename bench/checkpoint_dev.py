"""A gpv-train checkpoint, mid-run, against the shipped built-in scorer on Touché dev premises.

    python bench/checkpoint_dev.py build/train-all [--limit 300] [--threads 1]

A long training run on a CPU takes hours; this says early whether it is on its way to beat the model it
would replace. It loads the run's base and LoRA configuration (DIR/report.json is not written yet, so
the configuration is given by the options of the run's command, recorded in DIR/split.json), copies the
adapter weights of DIR/checkpoint/state.pt into it, and scores relevance on --limit premises of the
Touché dev split (a seeded draw; 0: all 1,105) with it and with the shipped built-in adapter, in one
process. Prints each one's macro ROC AUC on the same premises, and the checkpoint's step.
"""

import argparse
import random
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOUCHE = ROOT.parent / "shared" / "data" / "touche23" / "arguments-training.tsv"
sys.path.insert(0, str(ROOT))

from gpvtools.method.training import data as data_mod  # noqa: E402
from gpvtools.method.training.evaluation import evaluate_judged  # noqa: E402
from gpvtools.method.training.trainer import TrainConfig, prepare  # noqa: E402


def option(words, name, default, kind):
    return kind(words[words.index(name) + 1]) if name in words else default


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import orjson
    import torch

    torch.set_num_threads(args.threads)
    from gpvtools.method.scoring.hf import TransformersScorer, load_model
    from gpvtools.runtimes.models import builtin_gguf, builtin_scorer_files

    words = shlex.split(orjson.loads((args.run / "split.json").read_bytes())["command"])
    dev = data_mod.dev_split(data_mod.read(TOUCHE, "touche"))
    if args.limit:
        dev = random.Random(args.seed).sample(dev, args.limit)
    state = torch.load(args.run / "checkpoint" / "state.pt", map_location="cpu", weights_only=True)
    cfg = TrainConfig(lora_r=option(words, "--lora-r", 16, int), lora_alpha=option(words, "--lora-alpha", 32, int),
                      lora_layers=option(words, "--lora-layers", 0, int))
    model, tokenizer, name = load_model(builtin_gguf(), "cpu", "float32")
    model = prepare(model, cfg, quantized=False)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(trainable) == set(state["weights"]), "the checkpoint's adapter does not fit this configuration"
    for n, tensor in state["weights"].items():
        trainable[n].data.copy_(tensor)
    model.eval()
    checkpoint = evaluate_judged(TransformersScorer(name, name="checkpoint", loaded=(model, tokenizer)), dev)
    shipped = TransformersScorer(builtin_gguf(), name="builtin", adapter=builtin_scorer_files()["adapter"])
    builtin = evaluate_judged(shipped, dev)
    print(f"{len(dev)} dev premises; checkpoint at step {state['step']}: macro ROC AUC "
          f"{checkpoint['macro_roc_auc']:.4f} (F1 at 0.5 {checkpoint['macro_f1']:.4f}); shipped built-in: "
          f"{builtin['macro_roc_auc']:.4f} ({builtin['macro_f1']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
