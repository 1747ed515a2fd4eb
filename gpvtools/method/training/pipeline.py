"""gpv-train as one call: the data checked and split, a scorer trained, saved, exported and evaluated.

    from gpvtools.method.training.pipeline import TrainingSettings, fine_tune
    from gpvtools.method.training.trainer import TrainConfig

    report = fine_tune(["value_orientation.csv"], "build/mine",
                       TrainingSettings(holdout=2, config=TrainConfig(max_steps=2)))

Everything about the data is checked before a model is loaded; what is written under the output
directory is gpv-train(1)'s: heldout.jsonl, dev.jsonl, split.json, checkpoint/, adapter/ (or model/),
adapter.gguf, merged/, report.json.
"""

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ...runtimes import hub
from ...runtimes.models import BUILTIN, builtin_gguf
from ...streaming.atomic import write_atomic
from ...streaming.errors import GpvError, MissingDependency
from .. import values as values_mod
from . import data as data_mod
from . import evaluation, trainer


@dataclass(frozen=True)
class TrainingSettings:
    """Everything gpv-train needs besides its data and output directory; the training loop's own knobs
    (epochs, batch size, LoRA, checkpoints, steps) are CONFIG's, whose seed also seeds the split and the
    negatives."""

    config: trainer.TrainConfig = field(default_factory=trainer.TrainConfig)
    base: str = BUILTIN                # builtin, a .gguf file, a Hugging Face directory or hub id
    format: str = "auto"               # of the data: auto, valuebench, valueprism, touche, jsonl
    holdout: int = 50                  # values drawn to be held out, with all their items
    holdout_values: str | None = None  # "A,B" or "@FILE": hold out exactly these instead of drawing
    keep_values: str | None = None     # values never held out, as gpv-score's --values (values.resolve)
    load_in_4bit: bool = False         # QLoRA: the base in 4-bit NF4 (CUDA, not a GGUF base)
    device: str = "auto"               # auto, cpu, cuda, cuda:N
    threads: int | None = None         # torch's CPU threads; None: torch's own
    resume: bool = False               # go on from OUTPUT/checkpoint
    merge: bool = False                # also write the base with the adapter merged in (OUTPUT/merged)
    gguf: bool = True                  # write the GGUF LoRA adapter (OUTPUT/adapter.gguf)
    dev_eval: bool = True              # evaluate relevance on the dev split of judged texts
    command: str | None = None         # the command line split.json records (ship puts it on the card)


def _names(spec):
    if spec is None:
        return None
    if spec.startswith("@"):
        return [v.strip() for v in Path(spec[1:]).read_text(encoding="utf-8").splitlines() if v.strip()]
    return [v.strip() for v in spec.split(",") if v.strip()]


def fine_tune(data, output, settings=TrainingSettings(), *, say=None, progress=False):
    """Train a scorer on the files DATA into the directory OUTPUT as SETTINGS say; return the report (as
    OUTPUT/report.json holds it).

    SAY(message) gets the notes (counts, what is evaluated); PROGRESS draws the step line on stderr, as
    gpv-train does. A resumed run says where it resumes on stderr either way. Bad data raises GpvError
    before a model is loaded."""
    out = Path(output)
    cfg = settings.config
    say = say or (lambda message: None)

    dataset = data_mod.merge([data_mod.read(p, settings.format) for p in data])
    keep = values_mod.resolve(settings.keep_values) if settings.keep_values else []
    holdout = data_mod.choose_holdout(dataset, settings.holdout, cfg.seed, keep, _names(settings.holdout_values))
    train_examples, test_examples = data_mod.split(dataset, holdout, cfg.seed)
    dev = data_mod.dev_split(dataset)
    if not train_examples:
        raise GpvError("no training example is left after holding out the held-out values")
    out.mkdir(parents=True, exist_ok=True)
    data_mod.write_jsonl(out / "heldout.jsonl", test_examples)
    if dev:
        data_mod.write_judged(out / "dev.jsonl", dev)
    write_atomic(out / "split.json", orjson.dumps(
        {"heldout_values": holdout, "seed": cfg.seed, "train_examples": len(train_examples),
         "heldout_examples": len(test_examples), "dev_texts": len(dev),
         "dev_rule": f"Touché argument ids whose sha256's first 8 hex digits are 0 mod {data_mod.TOUCHE_DEV_SHARE}",
         "data": [str(p) for p in data], "command": settings.command},
        option=orjson.OPT_INDENT_2))
    say(f"{len(train_examples)} training examples; {len(holdout)} values held out "
        f"({len(test_examples)} held-out examples in {out / 'heldout.jsonl'})"
        + (f"; {len(dev)} judged texts in the dev split ({out / 'dev.jsonl'}), never trained on" if dev else ""))

    from ..scoring.hf import TransformersScorer, load_model

    if settings.threads:
        try:
            import torch
        except ImportError:
            raise MissingDependency("gpv-train", "torch", "cuda") from None
        torch.set_num_threads(settings.threads)

    base, source = builtin_gguf() if settings.base == BUILTIN else settings.base, None
    if hub.is_hub_model(base, bare=True):
        from ..scoring.hf import check_quantized

        check_quantized(base, settings.device, load_in_4bit=settings.load_in_4bit)  # before a fetch
        found = hub.resolve(base, directory=True, report=hub.Fetch(say=say), bare=True)
        base, source = found.path, found.source()
    model, tokenizer, base_name = load_model(base, settings.device,
                                             "float32" if settings.device != "cuda" else "auto",
                                             load_in_4bit=settings.load_in_4bit)
    model = trainer.prepare(model, cfg, quantized=settings.load_in_4bit)
    stats = trainer.train(model, tokenizer, train_examples, cfg, out, resume=settings.resume, progress=progress)
    report = {"base": str(base), **({"base_source": source} if source else {}), "config": trainer.config_dict(cfg),
              "training": stats, "heldout_values": holdout}
    if cfg.full:
        model.save_pretrained(out / "model", safe_serialization=True)
        tokenizer.save_pretrained(out / "model")
    else:
        model.save_pretrained(out / "adapter", safe_serialization=True)
        report["adapter"] = str(out / "adapter")
        if settings.gguf:
            from peft import get_peft_model_state_dict

            from .gguf_export import export_lora

            export_lora(get_peft_model_state_dict(model), model.config, cfg.lora_alpha, out / "adapter.gguf")
            report["gguf_adapter"] = str(out / "adapter.gguf")
        if settings.merge:
            merged = model.merge_and_unload()
            merged.save_pretrained(out / "merged", safe_serialization=True)
            tokenizer.save_pretrained(out / "merged")
            model = merged
            report["merged"] = str(out / "merged")
    say("evaluating on the held-out values")
    scorer = TransformersScorer(base_name, name="trained", loaded=(model, tokenizer))
    report["heldout"] = {"transformers": evaluation.evaluate(scorer, test_examples)} if test_examples else {}
    if dev and settings.dev_eval:
        say(f"evaluating relevance on the {len(dev)} dev texts")
        report["dev"] = {"transformers": evaluation.evaluate_judged(scorer, dev)}
    if report.get("gguf_adapter") and str(base).endswith(".gguf"):
        from ..scoring.llama import LlamaCppScorer

        lcpp = LlamaCppScorer(base, lora_path=report["gguf_adapter"])
        if test_examples:
            report["heldout"]["llama-cpp"] = evaluation.evaluate(lcpp, test_examples)
        lcpp.close()
    write_atomic(out / "report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report
