"""gpv-score: perception-level value measurement (paper §3.2, App. A)."""

import sys

import click

from ..method import values as values_mod
from ..method.scoring.backends import (
    SCORERS,
    LlamaCppSettings,
    OpenAISettings,
    ScorerSettings,
    TransformersSettings,
    build_scorer,
    instrument,
    tag,
)
from ..runtimes.models import BUILTIN
from ..streaming.errors import BadRecord, UsageError
from ..streaming.messages import note
from ..streaming.stage import Stage, derive, run_command
from .common import (
    CONTEXT_SETTINGS,
    Command,
    fetch_report,
    local_model_options,
    logger,
    stream_options,
    text_options,
    transport_options,
    with_options,
)

RESULT_FIELD = "values"


class ScoreStage(Stage):
    command = "gpv-score"

    def __init__(self, scorer, value_names, text_field, id_field, batch_size, values_field=None, card=None):
        self.scorer, self.values = scorer, value_names
        self.text_field, self.id_field, self.batch_size = text_field, id_field, batch_size
        self.values_field = values_field
        self.card = card
        self.tag = tag(card) if card is not None else f"{scorer.backend}:{scorer.name}"

    def close(self):
        self.scorer.close()

    def validate(self, entry):
        super().validate(entry)
        if self.values_field is not None:
            own = entry.record.get(self.values_field)
            if isinstance(own, str):
                own = [own]
            if not isinstance(own, list) or not own or not all(isinstance(v, str) and v for v in own):
                raise BadRecord(f"field '{self.values_field}' must be a value name or a list of them", entry.line,
                                entry.record)

    def _outputs(self, entry, result):
        fields = {RESULT_FIELD: result, "scorer": self.tag}
        if self.card is not None:
            fields["instrument"] = self.card
        return [derive(entry.record, entry.key, **fields)]

    def _values_of(self, entry):
        if self.values_field is None:
            return self.values
        own = entry.record[self.values_field]
        return [own] if isinstance(own, str) else list(dict.fromkeys(own))

    def _measure(self, batch):
        """Score a batch; a bad record in it is found by scoring one at a time and marked on its entry."""
        if self.values_field is None:
            texts = [e.record[self.text_field] for e in batch]
            try:
                return dict(zip(map(id, batch), self.scorer.measure(texts, self.values)))
            except BadRecord:
                if len(batch) == 1:
                    raise
        results = {}
        for entry in batch:
            try:
                results[id(entry)] = self.scorer.measure([entry.record[self.text_field]], self._values_of(entry))[0]
            except BadRecord as e:
                entry.error = BadRecord(e.message, entry.line, entry.record)
        return results

    def map(self, entries):
        pending = []

        def flush():
            valid = [e for e in pending if e.error is None]
            try:
                results = self._measure(valid) if valid else {}
            except BadRecord as e:  # a batch of one
                valid[0].error = BadRecord(e.message, valid[0].line, valid[0].record)
                results = {}
            for entry in pending:
                yield entry, (self._outputs(entry, results[id(entry)]) if entry.error is None else None)
            pending.clear()

        for entry in entries:
            pending.append(entry)
            if sum(e.error is None for e in pending) >= self.batch_size:
                yield from flush()
        yield from flush()


def _list_values(ctx, param, value):
    if value and not ctx.resilient_parsing:
        click.echo(values_mod.listing())
        ctx.exit(0)


@click.command(name="gpv-score", cls=Command, context_settings=CONTEXT_SETTINGS)
@text_options("perception")
@click.option("--values", "values_spec", metavar="SPEC", envvar="GPV_VALUES",
              help="Value system (schwartz, vsm, lvi, nfcc, all), a comma list of values, or @FILE with one "
                   "value a line.  [default: schwartz; for a lexicon, its categories]")
@click.option("--values-field", metavar="FIELD",
              help="Score each record on the values named in its own FIELD (a name or a list) instead of --values.")
@click.option("--list-values", is_flag=True, expose_value=False, is_eager=True, callback=_list_values,
              help="Print the built-in value systems and exit.")
@click.option("--describe", is_flag=True,
              help="Print the instrument card of --model (with --adapter, --precision, …) as JSON and exit, "
                   "scoring nothing: what every scored record carries as \"instrument\".")
@click.option("-m", "--model", default=BUILTIN, show_default=True, envvar="GPV_MODEL", metavar="MODEL",
              help="builtin, a .gguf file, a Hugging Face model directory, a hub reference (hf:OWNER/REPO:QUANT, "
                   "hf:OWNER/REPO/FILE, hf:OWNER/REPO, each @REVISION optional; or OWNER/NAME for transformers), "
                   "a model name on the --base-url server, or a lexicon (.json, .dic) for the dictionary backend.")
@click.option("-b", "--backend", type=click.Choice(("auto", *SCORERS)), default="auto", show_default=True,
              envvar="GPV_BACKEND", help="auto: picked from --model (.gguf, hf:…:QUANT, builtin: llama-cpp; "
                                          ".json/.dic: dictionary; --base-url: openai; else transformers).")
@click.option("--adapter", metavar="PATH", help="LoRA adapter: a peft directory (transformers) or a GGUF "
                                                  "LoRA file (llama-cpp), or a hub reference to one.")
@click.option("--valence", "valence_mode", type=click.Choice(["relevant", "all"]), default="relevant",
              show_default=True, help="Compute valence for relevant pairs only (the method), or for all pairs "
                                      "(to evaluate a model's valence task; scores stay null where irrelevant).")
@click.option("--thresholds", default="auto", show_default=True, envvar="GPV_THRESHOLDS", metavar="SPEC",
              help="Where relevance is decided: p_rel above the value's threshold. auto: the built-in model's "
                   "own per-value thresholds (fitted on human judgments, model.json) when it scores in-process, "
                   "else 0.5 (the paper's; a --base-url server's model too); builtin: those, for any backend (a "
                   "server serving the built-in model); none: 0.5; a number for every value; or a "
                   "JSON file of {value: threshold} (others 0.5).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Records scored together (each backend also batches the values of a record).")
@click.option("--device", default="auto", show_default=True, help="transformers: auto, cpu, cuda, cuda:N.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True, help="transformers: weights' type (auto: bfloat16 on CUDA, float32 on CPU).")
@click.option("--load-in-4bit", is_flag=True, help="transformers: 4-bit NF4 weights via bitsandbytes (CUDA).")
@click.option("--load-in-8bit", is_flag=True, help="transformers: 8-bit weights via bitsandbytes (CUDA).")
@with_options(local_model_options(64, "; a longer prompt is a bad record"))
@click.option("--precision", type=click.Choice(["auto", "native", "f32"]), default="auto", show_default=True,
              help="llama-cpp: native computes with the GGUF's quantized kernels (which quantize activations "
                   "to 8 bits); f32 computes on a float32 copy of the same weights, made once in the cache "
                   "(32 bits for each 4 to 8 of the file's, so 4-8x its size), with a float32 KV cache, as "
                   "transformers does: the two backends then agree. auto: f32 for the built-in model, native "
                   "for a --model.")
@click.option("--no-batch", is_flag=True,
              help="llama-cpp: evaluate the prompts one after another, each in its own call (slower; the "
                   "reference the batched path is checked against).")
@click.option("--no-prefix-cache", is_flag=True,
              help="llama-cpp: evaluate every prompt from scratch, one at a time (slowest; for checking that "
                   "sharing changes nothing).")
@transport_options
@click.option("--top-logprobs", type=click.IntRange(1, 20), default=20, show_default=True,
              help="openai: top-k log-probabilities asked for; a label outside them is asked for by echo.")
@click.option("-j", "--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
              help="openai: requests in flight.")
@stream_options
def main(stream, transport, text_field, id_field, values_spec, values_field, describe, model, backend, adapter,
         valence_mode, thresholds, batch_size, device, dtype, load_in_4bit, load_in_8bit, n_ctx, threads, n_gpu_layers,
         precision, no_batch, no_prefix_cache, top_logprobs, concurrency):
    """Measure the values in each record's text: relevance, valence and score per value.

    Reads perception records (the text in --text-field, default perception; any text record will do)
    and writes each record back with a "values" object holding, for every value of the value system:

    \b
      relevance  p_rel = P(yes) / (P(yes) + P(no)) under the relevance prompt
      support, oppose, either
                 the valence distribution, computed only where p_rel > t
      score      P(support) - P(oppose), in [-1, 1], when p_rel > t and valence's
                 most likely label is support or oppose; otherwise null (unmeasured)

    where t is the value's threshold: the paper's 0.5, or with the built-in model its own per-value
    thresholds (--thresholds; the card names them).

    and "scorer" (BACKEND:MODEL@ID) and "instrument", the card of what measured: backend, model and
    adapter by content (SHA-256), calibration, prompt templates' version, threshold, precision and the
    gpvtools version, and nothing of how the run was invoked, so a resumed or sharded run writes what
    an uninterrupted one does. ID is a digest of the parts that make the numbers (everything but the
    version); --describe prints the card. The dictionary
    backend writes count, words and score = count/words instead. Without --model the built-in model
    scores offline on the CPU.

    A hub reference (hf:QuantFactory/ValueLlama-3-8B-GGUF:Q4_K_M) is fetched into huggingface_hub's
    cache (a line per file on stderr, a progress bar on a terminal), each file checked against the
    hub's SHA-256, a cut download resumed by the next run, and reused offline (HF_HUB_OFFLINE=1); the
    card's "source" names the reference, the commit and each file's SHA-256, beside the ID (the same
    bytes from a local path are the same instrument). --describe resolves it from metadata alone.
    """
    server = transport.server(log=logger("gpv-score", stream.quiet))
    settings = ScorerSettings(
        model=model, backend=backend, adapter=adapter, thresholds=thresholds, valence_all=valence_mode == "all",
        batch_size=batch_size, backends={
            "llama-cpp": LlamaCppSettings(n_ctx=n_ctx, threads=threads, n_gpu_layers=n_gpu_layers,
                                          precision=precision, prefix_cache=not no_prefix_cache, batched=not no_batch),
            "transformers": TransformersSettings(device=device, dtype=dtype, load_in_4bit=load_in_4bit,
                                                 load_in_8bit=load_in_8bit,
                                                 progress=sys.stderr.isatty() and not stream.quiet),
            "openai": OpenAISettings(server=server, top_logprobs=top_logprobs, concurrency=concurrency)},
        fetch=fetch_report(logger("gpv-score", stream.quiet)))

    if describe:
        import orjson

        from ..streaming.stage import guarded

        def show():
            card = instrument(settings)
            sys.stdout.buffer.write(orjson.dumps(card, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
            return 0

        guarded("gpv-score", stream.verbose, show)

    def build():
        if values_field and values_spec:  # before a model is loaded
            raise UsageError("--values and --values-field exclude each other")
        scorer = build_scorer(settings)
        warn = None if stream.quiet else (lambda message: note("gpv-score", f"note: {message}"))
        if scorer.backend == "dictionary":
            names = values_mod.resolve(values_spec, warn) if values_spec else list(scorer.lexicon)
            scorer.check_values(names)
        else:
            names = values_mod.resolve(values_spec or "schwartz", warn)
        card = instrument(settings, scorer)
        return ScoreStage(scorer, names, text_field, id_field, batch_size, values_field, card)

    run_command("gpv-score", build, stream)


def builtin_model_text():
    """The man page's account of the built-in scorer, read from the card that ships with it."""
    from ..runtimes.models import builtin_scorer_card

    card = builtin_scorer_card()
    cfg, acc = card["config"], card["heldout_accuracy"]
    rel, val = acc["transformers"]["relevance"], acc["transformers"]["valence"]
    support = sum(n for k, n in val["confusion"].items() if k.startswith("support->"))
    oppose = val["n"] - support

    def pct(x):
        return f"{100 * x:.1f}%"

    def valence(confusion):  # balanced accuracy (the mean of the two labels' recalls) and "oppose" recall
        hits = confusion.get("support->support", 0), confusion.get("oppose->oppose", 0)
        return (f"balanced {pct((hits[0] / support + hits[1] / oppose) / 2)}, \"oppose\" recall "
                f"{hits[1]}/{oppose}")

    shown = {"llama-cpp": "llama-cpp with the GGUF's Q4_1 kernels"}
    measured = "; ".join(f"{shown.get(backend, backend)}: relevance {pct(a['relevance']['accuracy'])}, valence "
                         f"{pct(a['valence']['accuracy'])} ({valence(a['valence']['confusion'])})"
                         for backend, a in acc.items())
    dev = card.get("dev_relevance", {}).get("transformers")
    judged = (
        f" Relevance on human judgments: on the dev split of Touché23-ValueEval ({card['dev_texts']} arguments' "
        f"premises never trained on, each judged by crowd annotators on the 10 basic values) p_rel ranks the "
        f"human \"relevant\" labels at a macro ROC AUC of {dev['macro_roc_auc']:.3f} over the 10 values, and "
        f"p_rel > 0.5 reaches a macro F1 of {dev['macro_f1']:.3f} (per value in model.json; bench/touche.py "
        f"re-measures it beside the previous built-in model and the word-count dictionary)."
        if dev else "")
    fitted = card.get("thresholds")
    if fitted:
        shown = ", ".join(f"{v} {t:.2f}" for v, t in fitted["values"].items())
        judged += (f" Relevance is decided at the model's own threshold for each value ({shown}), each fitted for F1 "
                   f"on that split: macro F1 {fitted['macro_f1_fitted']:.3f} there, {fitted['macro_f1_crossfit']:.3f} "
                   f"where each half of the split is decided at thresholds fitted on the other half (what to expect "
                   f"on new text of its kind), against {fitted['macro_f1_at_0.5']:.3f} at 0.5; --thresholds none "
                   f"decides at the paper's 0.5 instead.")
    command = f" Reproduce it with: {card['command']}, then python -m gpvtools.method.training.ship DIR." \
        if card.get("command") else ""
    return (
        f"With no --model, gpv-score uses a small ValueLlama trained with gpv-train on a CPU. Base: {card['base']}. "
        f"Adapter: LoRA r={cfg['lora_r']}, alpha={cfg['lora_alpha']} on {', '.join(cfg['targets'])} of "
        + (f"the last {cfg['lora_layers']} layers" if cfg["lora_layers"] else "every layer")
        + f", {card['training']['steps']} steps, learning rate {cfg['learning_rate']:g}, "
        f"seed {card['seed']}"
        + (", each label of a task weighted by its inverse frequency in the loss" if cfg.get("balance") else "")
        + f"; shipped as a GGUF LoRA (llama-cpp) and a peft adapter (transformers) in gpvtools/data/builtin, "
        f"whose model.json records all of this. Data: {card['data']} ({card['train_examples']} training "
        f"examples).{command} Held out: {len(card['heldout_values'])} ValueBench values, none of them in the "
        f"four built-in systems, listed in model.json, with all their items ({card['heldout_examples']} "
        f"examples: {rel['n']} relevance, half of them \"yes\", and {val['n']} valence, "
        f"{pct(support / val['n'])} of them \"support\"). Accuracy on them, as gpv-train measured it after "
        f"training (bench/builtin_accuracy.py re-measures it through gpv-score): {measured}. Chance is 50% for "
        f"relevance; always answering \"support\" gets {pct(support / val['n'])} of valence.{judged} This is "
        f"short of the paper's ValueLlama-3-8B (90.0% and 91.5% on its held-out values): the built-in model "
        f"measures coarsely. For research-grade results use ValueLlama-3-8B (-m Value4AI/ValueLlama-3-8B on a "
        f"GPU, or one of its GGUF quantisations on a CPU), or train a larger base with gpv-train."
    )


main.man_sections = {
    "HOW PROBABILITIES ARE READ": (
        "The prompts are byte for byte the two templates ValueLlama was trained on (paper App. A, Prompt 1), "
        "each ending with \"Output:\" and a newline. The model's next-token distribution after the prompt is "
        "read at the first token of each label word (yes, no; support, oppose, either) as the model's "
        "tokenizer splits the label in that position, i.e. right after the prompt's final newline; the "
        "labels' probabilities are then renormalised over the label set, as the released method does. "
        "With the openai backend the first token of each label is learnt from the server by echoing a "
        "prompt with the label. A label token missing from the top log-probabilities is asked for the same "
        "way where the server's echo follows OpenAI's convention (vLLM; llama.cpp's server for a model "
        "with a BOS token), which is checked once at start-up against a completion's own log-probability; "
        "otherwise (llama-cpp-python's server for a model without BOS, whose echo is one token off) the "
        "top log-probabilities are widened tenfold until the label is among them. Nothing is guessed."
    ),
    "PRECISION": (
        "With a quantized GGUF, llama.cpp multiplies the quantized weights by activations it quantizes to 8 "
        "bits, while transformers dequantizes the same file to float32; on a pair whose p_rel lies near 0.5 "
        "the two can decide relevance differently. --precision f32 has llama.cpp dequantize the weights once "
        "into a float32 copy (kept in $GPV_CACHE_DIR/models, 4-8 times the file's size, since each weight of "
        "4 to 8 bits becomes 32) and compute on it, keys and values in float32 too (llama.cpp keeps them in "
        "float16 otherwise, and a GGUF LoRA should be float32 for the same reason: gpv-train writes it so), so "
        "both backends give the same numbers up to rounding. It is the default (auto) for the built-in model, "
        "whose copy is 515 MiB; a --model keeps its own kernels (native) unless asked."
    ),
    "SPEED": (
        "llama-cpp gives every prompt a KV stream of its own whose cells sit where a context of its own "
        "would put them: each task's header is evaluated once per run into a stream and copied to a "
        "record's work stream, the sentence evaluated there once and copied to one stream per value, and the "
        "values' suffixes evaluated together, one llama_decode call for the suffixes of each length. Each token "
        "is then computed as it is one prompt at a time, so the results equal --no-batch's (identical on the "
        "Q4_1 kernels, within float32 rounding at --precision f32) and do not depend on --batch-size or on "
        "where a --resume began. A prompt longer than a stream (256 cells) is scored one at a time. "
        "--no-batch evaluates one prompt after another, reusing the prefix it shares with the one before, "
        "which equals scoring from scratch (--no-prefix-cache). "
        "transformers keeps the task header's KV cache and runs a batch of records in "
        "one pass, each record's row holding its sentence followed by all its values' suffixes, each suffix "
        "positioned and masked as if it followed the sentence alone (a prefix tree flattened into a row); "
        "only the suffixes' last positions are projected onto the vocabulary. Valence is only computed for "
        "relevant pairs. "
        "For large corpora point --base-url at a vLLM server with prefix caching."
    ),
    "THE BUILT-IN MODEL": lambda: builtin_model_text(),
    "EXAMPLES": (
        "\b\n"
        "gpv-score --values vsm perceptions.jsonl > scored.jsonl\n"
        "gpv-score -m ValueLlama-3-8B.Q4_K_M.gguf --values schwartz perceptions.jsonl\n"
        "gpv-score -m Value4AI/ValueLlama-3-8B --load-in-4bit --values all perceptions.jsonl\n"
        "gpv-score --base-url http://127.0.0.1:8000/v1 -m valuellama perceptions.jsonl\n"
        "gpv-score -m schwartz-values-en.json --text-field text posts.jsonl"
    ),
}


if __name__ == "__main__":
    main(prog_name="gpv-score")  # bin/gpv-score runs python -m: --help still says gpv-score
