"""gpv-train: fine-tune a scorer (a ValueLlama) on labelled value data (paper App. A)."""

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import orjson

from ..method import values as values_mod
from ..streaming.atomic import write_atomic
from ..streaming.errors import GpvError, MissingDependency, UsageError
from ..runtimes.models import BUILTIN, builtin_gguf
from ..streaming.stage import guarded, note
from .common import CONTEXT_SETTINGS
from ..method.training import data as data_mod
from ..method.training.trainer import (DEFAULT_TARGETS, TrainConfig, config_dict, evaluate, evaluate_judged, prepare,
                                train)


def _values_list(spec):
    if spec is None:
        return None
    if spec.startswith("@"):
        return [v.strip() for v in Path(spec[1:]).read_text(encoding="utf-8").splitlines() if v.strip()]
    return [v.strip() for v in spec.split(",") if v.strip()]


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


@dataclass(frozen=True)
class TrainOptions:
    """gpv-train's command line, typed: what run() reads."""

    data: tuple
    output: str
    base: str
    format: str
    holdout: int
    holdout_values: str | None
    keep_values: str | None
    seed: int
    epochs: float
    batch_size: int
    accumulation: int
    lr: float
    lora_r: int
    lora_alpha: int
    lora_layers: int
    targets: str
    full: bool
    load_in_4bit: bool
    device: str
    no_bf16: bool
    threads: int | None
    save_every: int
    max_steps: int
    judged_epochs: float | None
    no_pack: bool
    no_balance: bool
    no_dev_eval: bool
    resume: bool
    merge: bool
    no_gguf: bool
    quiet: bool
    verbose: bool
    command: str


def run(o):
    """Train as O (a TrainOptions) says; checks all the data before a model is loaded."""
    out = Path(o.output)
    quiet = o.quiet

    def say(message):
        if not quiet:
            note("gpv-train", message)

    # Everything about the data is checked before a model is loaded or a step is taken.
    dataset = data_mod.merge([data_mod.read(p, o.format) for p in o.data])
    keep = values_mod.resolve(o.keep_values) if o.keep_values else []
    holdout = data_mod.choose_holdout(dataset, o.holdout, o.seed, keep, _values_list(o.holdout_values))
    train_examples, test_examples = data_mod.split(dataset, holdout, o.seed)
    dev = data_mod.dev_split(dataset)
    if not train_examples:
        raise GpvError("no training example is left after holding out the held-out values")
    out.mkdir(parents=True, exist_ok=True)
    data_mod.write_jsonl(out / "heldout.jsonl", test_examples)
    if dev:
        data_mod.write_judged(out / "dev.jsonl", dev)
    write_atomic(out / "split.json", orjson.dumps(
        {"heldout_values": holdout, "seed": o.seed, "train_examples": len(train_examples),
         "heldout_examples": len(test_examples), "dev_texts": len(dev),
         "dev_rule": f"Touché argument ids whose sha256's first 8 hex digits are 0 mod {data_mod.TOUCHE_DEV_SHARE}",
         "data": [str(p) for p in o.data], "command": o.command},
        option=orjson.OPT_INDENT_2))
    say(f"{len(train_examples)} training examples; {len(holdout)} values held out "
        f"({len(test_examples)} held-out examples in {out / 'heldout.jsonl'})"
        + (f"; {len(dev)} judged texts in the dev split ({out / 'dev.jsonl'}), never trained on" if dev else ""))

    from ..method.scoring.hf import TransformersScorer, load_model

    if o.threads:
        try:
            import torch
        except ImportError:
            raise MissingDependency("gpv-train", "torch", "cuda") from None
        torch.set_num_threads(o.threads)

    base = builtin_gguf() if o.base == BUILTIN else o.base
    model, tokenizer, base_name = load_model(base, o.device, "float32" if o.device != "cuda" else "auto",
                                             load_in_4bit=o.load_in_4bit)
    cfg = TrainConfig(epochs=o.epochs, batch_size=o.batch_size, accumulation=o.accumulation,
                      learning_rate=o.lr, lora_r=o.lora_r, lora_alpha=o.lora_alpha,
                      lora_layers=o.lora_layers,
                      targets=tuple(o.targets.split(",")), full=o.full, seed=o.seed, bf16=not o.no_bf16,
                      save_every=o.save_every, max_steps=o.max_steps, pack=not o.no_pack,
                      balance=not o.no_balance, judged_epochs=o.judged_epochs)
    model = prepare(model, cfg, quantized=o.load_in_4bit)
    stats = train(model, tokenizer, train_examples, cfg, out, resume=o.resume, progress=not quiet)
    report = {"base": str(base), "config": config_dict(cfg), "training": stats, "heldout_values": holdout}
    if cfg.full:
        model.save_pretrained(out / "model", safe_serialization=True)
        tokenizer.save_pretrained(out / "model")
    else:
        model.save_pretrained(out / "adapter", safe_serialization=True)
        report["adapter"] = str(out / "adapter")
        if not o.no_gguf:
            from peft import get_peft_model_state_dict

            from ..method.training.gguf_export import export_lora

            export_lora(get_peft_model_state_dict(model), model.config, cfg.lora_alpha, out / "adapter.gguf")
            report["gguf_adapter"] = str(out / "adapter.gguf")
        if o.merge:
            merged = model.merge_and_unload()
            merged.save_pretrained(out / "merged", safe_serialization=True)
            tokenizer.save_pretrained(out / "merged")
            model = merged
            report["merged"] = str(out / "merged")
    say("evaluating on the held-out values")
    scorer = TransformersScorer(base_name, name="trained", loaded=(model, tokenizer))
    report["heldout"] = {"transformers": evaluate(scorer, test_examples)} if test_examples else {}
    if dev and not o.no_dev_eval:
        say(f"evaluating relevance on the {len(dev)} dev texts")
        report["dev"] = {"transformers": evaluate_judged(scorer, dev)}
    if report.get("gguf_adapter") and str(base).endswith(".gguf"):
        from ..method.scoring.llama import LlamaCppScorer

        lcpp = LlamaCppScorer(base, lora_path=report["gguf_adapter"])
        if test_examples:
            report["heldout"]["llama-cpp"] = evaluate(lcpp, test_examples)
        lcpp.close()
    write_atomic(out / "report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    sys.stdout.buffer.write(orjson.dumps(report) + b"\n")
    return 0


@click.command(name="gpv-train", context_settings=CONTEXT_SETTINGS)
@click.argument("data", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Where the adapter, its GGUF, the held-out split, checkpoints and report.json go.")
@click.option("--base", default=BUILTIN, show_default=True, envvar="GPV_TRAIN_BASE", metavar="MODEL",
              help="Base model: builtin (SmolLM2-135M GGUF), a .gguf file, a Hugging Face directory or hub id.")
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
@click.option("-q", "--quiet", is_flag=True, help="No progress or notes on stderr.")
@click.option("-v", "--verbose", is_flag=True, envvar="GPV_DEBUG", help="Tracebacks for errors.")
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
    options = dict(params, data=tuple(params["data"]), command=command_line(click.get_current_context()))
    options["format"] = options.pop("fmt")
    o = TrainOptions(**options)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def work():
        if o.full and o.load_in_4bit:
            raise UsageError("--full and --load-in-4bit exclude each other")
        return run(o)

    guarded("gpv-train", o.verbose, work)


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
    "EXIT STATUS": (
        "0 when training finished and its report was written; 1 when the data are unusable (the file, line "
        "and field are named) or the run failed; 2 for a usage error; 130 or 143 when interrupted by SIGINT "
        "or SIGTERM (the last checkpoint is whole: rerun with --resume); 141 when the reader of stdout went "
        "away."
    ),
}


if __name__ == "__main__":
    main(prog_name="gpv-train")  # bin/gpv-train runs python -m: --help still says gpv-train
