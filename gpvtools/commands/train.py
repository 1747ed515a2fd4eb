"""gpv-train: fine-tune a scorer (a ValueLlama) on labelled value data (paper App. A)."""

import os
import shlex
import sys

import click
import orjson

from ..method.training.pipeline import TrainingSettings, fine_tune
from ..method.training.trainer import DEFAULT_TARGETS, TrainConfig
from ..runtimes.models import BUILTIN
from ..streaming.errors import UsageError
from ..streaming.stage import guarded
from .common import CONTEXT_SETTINGS, logger, verbosity


def command_line(ctx):
    """The command as given: gpv-train, then every parameter set on the command line but those that change
    nothing of the result (--resume, --quiet, --verbose): the recipe, to run again."""
    words = ["gpv-train"]
    for param in ctx.command.params:
        if param.name in ("resume", "quiet", "verbose") or \
                ctx.get_parameter_source(param.name) != click.core.ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if isinstance(param, click.Argument):
            words += [str(v) for v in value]
        elif param.is_flag:
            words.append(max(param.opts, key=len))
        else:
            words += [max(param.opts, key=len), str(value)]
    return shlex.join(words)


def settings_from(p, command):
    """TrainingSettings from gpv-train's parameters P; COMMAND is the command line split.json records."""
    config = TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], accumulation=p["accumulation"],
                         learning_rate=p["lr"], lora_r=p["lora_r"], lora_alpha=p["lora_alpha"],
                         lora_layers=p["lora_layers"], targets=tuple(p["targets"].split(",")), full=p["full"],
                         seed=p["seed"], bf16=not p["no_bf16"], save_every=p["save_every"],
                         max_steps=p["max_steps"], pack=not p["no_pack"], balance=not p["no_balance"],
                         judged_epochs=p["judged_epochs"])
    return TrainingSettings(config=config, base=p["base"], format=p["fmt"], holdout=p["holdout"],
                            holdout_values=p["holdout_values"], keep_values=p["keep_values"],
                            load_in_4bit=p["load_in_4bit"], device=p["device"], threads=p["threads"],
                            resume=p["resume"], merge=p["merge"], gguf=not p["no_gguf"],
                            dev_eval=not p["no_dev_eval"], command=command)


@click.command(name="gpv-train", context_settings=CONTEXT_SETTINGS)
@click.argument("data", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Where the adapter, its GGUF, the held-out split, checkpoints and report.json go.")
@click.option("--base", default=BUILTIN, show_default=True, envvar="GPV_TRAIN_BASE", metavar="MODEL",
              help="Base model: builtin (SmolLM2-135M GGUF), a .gguf file, a Hugging Face directory, or a hub "
                   "reference (hf:OWNER/REPO:QUANT, hf:OWNER/REPO, OWNER/NAME; @REVISION optional).")
@click.option("--format", "fmt", type=click.Choice(["auto", "valuebench", "valueprism", "touche", "jsonl"]),
              default="auto", show_default=True, help="Format of DATA (auto: from the header or the .jsonl suffix).")
@click.option("--holdout", type=click.IntRange(min=0), default=50, show_default=True,
              help="Values held out, with all their items, for evaluation (paper: 50).")
@click.option("--holdout-values", metavar="LIST|@FILE", help="Hold out exactly these values instead of drawing.")
@click.option("--keep-values", metavar="SPEC", help="Values never held out (a system name or list, as gpv-score's "
                                                      "--values).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the split, negatives and training.")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="Passes over the training examples (paper: 4).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Examples per forward pass.")
@click.option("--accumulation", type=click.IntRange(min=1), default=2, show_default=True,
              help="Forward passes per optimizer step: the effective batch is batch-size × accumulation "
                   "(paper: 128).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-4, show_default=True,
              help="Peak learning rate (linear warm-up over 5% of steps, then linear decay).")
@click.option("--lora-r", type=click.IntRange(min=1), default=16, show_default=True, help="LoRA rank.")
@click.option("--lora-alpha", type=click.IntRange(min=1), default=32, show_default=True, help="LoRA alpha.")
@click.option("--lora-layers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Adapt only the last N layers (0: all); training is faster as backward stops below them.")
@click.option("--targets", default=",".join(DEFAULT_TARGETS), show_default=True,
              help="Module names LoRA adapts.")
@click.option("--full", is_flag=True, help="Full fine-tuning instead of LoRA (writes DIR/model).")
@click.option("--load-in-4bit", is_flag=True,
              help="QLoRA: the base in 4-bit NF4 via bitsandbytes (CUDA; a Hugging Face directory or hub id as "
                   "--base, not a GGUF).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--no-bf16", is_flag=True, help="Train in float32 instead of bf16 autocast.")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads for torch [default: torch's]; 1 is best when other work shares the cores.")
@click.option("--save-every", type=click.IntRange(min=1), default=20, show_default=True,
              help="Optimizer steps between checkpoints (DIR/checkpoint).")
@click.option("--max-steps", type=click.IntRange(min=0), default=0, help="Stop after this many optimizer steps.")
@click.option("--judged-epochs", type=click.FloatRange(min=0, min_open=True), metavar="E",
              help="Passes over the judged texts (Touché) in all, when fewer than --epochs: each epoch takes "
                   "its turn of them [default: as many as --epochs].")
@click.option("--no-pack", is_flag=True, help="One row per example instead of one per text and task (slower; "
                                             "for models that take no 4-D attention mask).")
@click.option("--no-balance", is_flag=True, help="Plain loss instead of weighting each label of a task by its "
                                                "inverse frequency.")
@click.option("--no-dev-eval", is_flag=True, help="Skip the evaluation on the dev split of judged texts.")
@click.option("--resume", is_flag=True, help="Go on from DIR/checkpoint after an interruption.")
@click.option("--merge", is_flag=True, help="Also write the base with the adapter merged in (DIR/merged).")
@click.option("--no-gguf", is_flag=True, help="Do not write the GGUF LoRA adapter (DIR/adapter.gguf).")
@verbosity("progress or notes")
def main(**params):
    """Fine-tune a scorer on the relevance and valence tasks.

    Reads labelled value data — ValueBench's CSV (questionnaire,item,value,agreement), ValuePrism's
    relevance or valence CSV (situation,vrd,text,label), Touché23-ValueEval's arguments TSV (its labels
    TSV beside it), or JSONL of text,value,task,label — and builds the two tasks as the paper does:
    relevance pairs each item with its own value ("yes") and with as many other values ("no"); valence
    labels an item "support" (agreement +1) or "oppose" (-1). A Touché argument's premise is judged on
    the 10 basic Schwartz values (its 20 categories folded; Face and Humility left out): every pair is a
    relevance example. The prompts are exactly gpv-score's. --holdout values and all their items never
    enter training; they are written to DIR/heldout.jsonl. A fixed 20% of the Touché arguments (by a
    hash of the id) never trains either: DIR/dev.jsonl. The model's accuracy on the held-out values and
    its relevance ROC AUC and F1 on the dev split go to DIR/report.json and stdout.

    Each text's examples of one task are packed into one row (a prefix tree, as gpv-score's
    transformers backend evaluates it), so a text judged on 10 values costs about one forward pass; the
    loss weighs each label of a task by its inverse frequency.

    Training is LoRA on the label token's loss (QLoRA with --load-in-4bit on CUDA, or --full), with
    checkpoints in DIR/checkpoint so that --resume goes on after an interruption. The result is a peft
    adapter (DIR/adapter), its GGUF LoRA form for llama.cpp (DIR/adapter.gguf, to apply on the base
    GGUF: gpv-score -m BASE.gguf --adapter DIR/adapter.gguf) and, with --merge, a merged model.
    """
    settings = settings_from(params, command_line(click.get_current_context()))
    quiet = params["quiet"]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def work():
        if params["full"] and params["load_in_4bit"]:
            raise UsageError("--full and --load-in-4bit exclude each other")
        report = fine_tune(params["data"], params["output"], settings, say=logger("gpv-train", quiet),
                           progress=not quiet)
        sys.stdout.buffer.write(orjson.dumps(report) + b"\n")
        return 0

    guarded("gpv-train", params["verbose"], work)


def builtin_scorer_text():
    from ..runtimes.models import builtin_scorer_card

    card = builtin_scorer_card()
    made = (f"with this command on a 2-core CPU (ValueBench's value_orientation.csv and Touché23-ValueEval's "
            f"arguments-training.tsv, with labels-training.tsv beside it): {card['command']}"
            if card.get("command") else "with gpv-train on a 2-core CPU")
    return (f"gpv-score's default model was made {made}, then python -m gpvtools.method.training.ship DIR. An "
            f"interrupted run goes on with the same command and --resume. Its base, data, split and measured "
            f"accuracy are in gpv-score(1), THE BUILT-IN MODEL.")


main.man_sections = {
    "THE BUILT-IN SCORER": lambda: builtin_scorer_text(),
    "EXAMPLES": (
        "\b\n"
        "gpv-train value_orientation.csv -o build/mine --threads 2\n"
        "gpv-train value_orientation.csv arguments-training.tsv --keep-values all -o build/all --judged-epochs 3\n"
        "gpv-train value_orientation.csv arguments-training.tsv --keep-values all -o build/all --judged-epochs 3 "
        "--resume\n"
        "gpv-score --adapter build/mine/adapter.gguf --values schwartz perceptions.jsonl"
    ),
    "EXIT STATUS": (
        "0 when training finished and its report was written; 1 when the data are unusable (the file, line "
        "and field are named) or the run failed; 2 for a usage error; 130 or 143 when interrupted by SIGINT "
        "or SIGTERM (the last checkpoint is whole: rerun with --resume); 141 when the reader of stdout went "
        "away."
    ),
}


if __name__ == "__main__":
    main(prog_name="gpv-train")  # bin/gpv-train runs python -m: --help still says gpv-train
