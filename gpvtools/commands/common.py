"""What every command's click interface shares: help settings, the stream options, the text options, and
help that groups each backend's own options under a heading of its own.

The stage loop itself (gpvtools.streaming.stage) knows nothing of click; this is where options become
its settings.
"""

import re
import sys
from dataclasses import dataclass, fields

import click

from ..runtimes.chat import ChatSettings, LlamaChatSettings
from ..runtimes.server import (
    DEFAULT_BACKOFF,
    DEFAULT_MAX_RETRY_WAIT,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    MAX_BACKOFF,
    ServerSettings,
)
from ..streaming.jsonl import DEFAULT_MAX_LINE_BYTES
from ..streaming.messages import note
from ..streaming.stage import StreamOptions

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
# An option whose help starts "llama-cpp: …" belongs to that backend; --help lists it under its heading.
BACKEND_PREFIX = re.compile(r"^(llama-cpp|transformers|openai): ")


class Command(click.Command):
    """A click command whose --help lists the backends' own options apart, each under its backend's name."""

    def format_options(self, ctx, formatter):
        groups = {"": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is None:
                continue
            name, text = record
            m = BACKEND_PREFIX.match(text)
            if m:
                groups.setdefault(m.group(1), []).append((name, text[m.end():]))
            else:
                groups[""].append(record)
        for backend, records in groups.items():
            if records:
                with formatter.section(f"{backend} options" if backend else "Options"):
                    formatter.write_dl(records)


def verbosity(silenced="notes", quiet=True):
    """-q (unless QUIET is False: a command with nothing to silence) and -v, the one definition every command
    uses: -q silences SILENCED on stderr, never an error; -v (or GPV_DEBUG=1) adds tracebacks to errors."""

    def decorate(f):
        f = click.option("-v", "--verbose", is_flag=True, envvar="GPV_DEBUG",
                         help="Tracebacks for errors (also GPV_DEBUG=1).")(f)
        if quiet:
            f = click.option("-q", "--quiet", is_flag=True, help=f"No {silenced} on stderr (errors still).")(f)
        return f

    return decorate


def stream_options(f):
    """INPUT, -o, --resume, --on-error, --rejects, --shard, --max-line-bytes, -q, -v: the same in every stage."""

    @click.argument("input", default="-", metavar="[INPUT]")
    @click.option("-o", "--output", default="-", metavar="FILE", help="Write JSONL to FILE instead of stdout.")
    @click.option("--resume", is_flag=True,
                  help="Keep the records already complete in -o FILE, repair a torn end, and do only the rest.")
    @click.option("--on-error", type=click.Choice(["fail", "skip", "emit"]), default="fail", show_default=True,
                  envvar="GPV_ON_ERROR",
                  help="On a bad line: stop; report it and go on; or pass an error record on. "
                       "Either way a bad line makes the exit status 1.")
    @click.option("--rejects", metavar="FILE",
                  help="Append each bad line instead, with its error, to FILE (once: one already there is not "
                       "written again) and go on; a line set aside there leaves the exit status 0. With --resume "
                       "an input set aside in FILE counts as done: remove its line to have it tried again.")
    @click.option("--shard", metavar="K/N", envvar="GPV_SHARD",
                  help="Keep only documents whose id hashes to K mod N (stable across stages and machines). "
                       "Default: from SLURM_ARRAY_TASK_ID/_MIN/_COUNT when in a SLURM array job.")
    @click.option("--max-line-bytes", type=click.IntRange(min=1), default=DEFAULT_MAX_LINE_BYTES, show_default=True,
                  envvar="GPV_MAX_LINE_BYTES", help="Longer input lines are bad lines.")
    @verbosity("progress, notes or summary")
    def wrapper(*args, input, output, resume, on_error, rejects, shard, max_line_bytes, quiet, verbose, **kwargs):
        opts = StreamOptions(input, output, resume, on_error, shard, max_line_bytes, quiet, verbose, rejects)
        return f(*args, stream=opts, **kwargs)

    # Not functools.wraps: click would follow __wrapped__ to f and skip the wrapper.
    wrapper.__name__, wrapper.__doc__ = f.__name__, f.__doc__
    return wrapper


def text_options(text_default="text"):
    """--text-field and --id-field, for stages that read a text."""

    def decorate(f):
        f = click.option("--id-field", default="id", show_default=True, metavar="FIELD",
                         help="Field holding the record's id; a record without it is named by its line number.")(f)
        return click.option("--text-field", default=text_default, show_default=True, metavar="FIELD",
                            help="Field holding the text.")(f)

    return decorate


def from_command_line(name):
    """Whether option NAME of the running command was given on the command line (not from the environment
    or its default)."""
    source = click.get_current_context().get_parameter_source(name)
    return source == click.core.ParameterSource.COMMANDLINE


def fetch_report(log):
    """How a hub reference's download reports: LOG's line per file (see logger), and a progress bar where
    stderr is a terminal; nothing under -q (LOG None)."""
    from ..runtimes.hub import Fetch

    return Fetch(say=log, bars=log is not None and sys.stderr.isatty())


def logger(command, quiet):
    """LOG(message): a line on stderr for COMMAND ("COMMAND: message"), or None under -q."""
    return None if quiet else (lambda message: note(command, message))


@dataclass
class TransportOptions:
    """How a stage talks to an OpenAI-compatible server (gpv-score's openai backend, gpv-parse, gpv-elicit), as
    click gives them: the options of transport_params(), defined there once for all three commands."""

    base_url: str | None  # None where the command has no --base-url (gpv-elicit ask: each subject names its own)
    explicit: bool  # --base-url came from the command line, not OPENAI_BASE_URL
    api_key: str | None
    timeout: float
    retries: int
    backoff: float
    max_retry_wait: float

    def server(self, log=None, base_url=None, explicit=None):
        """The ServerSettings (LOG: see logger()); BASE_URL and EXPLICIT stand in for --base-url's when given."""
        return ServerSettings(base_url=self.base_url if base_url is None else base_url, api_key=self.api_key,
                              timeout=self.timeout, retries=self.retries, backoff=self.backoff,
                              explicit=self.explicit if explicit is None else explicit,
                              max_retry_wait=self.max_retry_wait, log=log)


def transport_params(base_url=True):
    """The server options, the one definition gpv-score, gpv-parse and gpv-elicit share: --base-url (where
    BASE_URL), --api-key, --timeout, --retries, --backoff, --max-retry-wait. One default each
    (runtimes/server.py), the same wherever a request goes."""
    options = [
        click.option("--base-url", envvar="OPENAI_BASE_URL", metavar="URL",
                     help="openai: the server's /v1 URL (OpenAI, vLLM, llama.cpp's server, Ollama)."),
    ] if base_url else []
    return options + [
        click.option("--api-key", envvar="OPENAI_API_KEY", metavar="KEY", show_envvar=True,
                     help="openai: API key (a local server needs none)."),
        click.option("--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT, show_default=True,
                     metavar="SECONDS",
                     help="openai: seconds per request, the wait in the server's queue included. The default "
                          "is room for a 1,000-token reply at 10 tokens a second (a model served on a CPU); a "
                          "request that hangs costs no more."),
        click.option("--retries", type=click.IntRange(min=0), default=DEFAULT_RETRIES, show_default=True,
                     help="openai: retries on timeouts, connection failures, malformed answers, 429 and 5xx, "
                          "with exponential backoff and jitter, or after the server's Retry-After. The "
                          "default's waits (1, 2, 4 … 32 s, each times a random 0.5 to 1) ride out a server "
                          "restart of half a minute."),
        click.option("--backoff", type=click.FloatRange(min=0), default=DEFAULT_BACKOFF, show_default=True,
                     metavar="SECONDS",
                     help=f"openai: the first retry's wait; each further retry doubles it (at most "
                          f"{MAX_BACKOFF:g} s, and --max-retry-wait)."),
        click.option("--max-retry-wait", type=click.FloatRange(min=0), default=DEFAULT_MAX_RETRY_WAIT,
                     show_default=True, metavar="SECONDS",
                     help="openai: the longest wait before a retry. A server's Retry-After beyond it is cut to "
                          "it, with a line on stderr, so a server that asks for a day cannot stall an unattended "
                          "run; one still asking after --retries stops the run (rerun with --resume)."),
    ]


TRANSPORT_NAMES = [f.name for f in fields(TransportOptions) if f.name != "explicit"]


def take_transport(kwargs):
    """The TransportOptions of transport_params()' values, popped from a command's KWARGS."""
    values = {name: kwargs.pop(name, None) for name in TRANSPORT_NAMES}
    explicit = values["base_url"] is not None and from_command_line("base_url")
    return TransportOptions(explicit=explicit, **values)


def option_group(options, build):
    """Decorate a command with OPTIONS, whose values BUILD(kwargs) pops and turns into the keyword arguments
    it returns. The options decorated onto the command so far (those below this decorator) stay its own."""

    def decorate(f):
        def wrapper(*args, **kwargs):
            return f(*args, **build(kwargs), **kwargs)

        wrapper.__name__, wrapper.__doc__ = f.__name__, f.__doc__
        wrapper.__click_params__ = list(getattr(f, "__click_params__", []))
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


def local_model_options(min_ctx, ctx_note=""):
    """--n-ctx (at least MIN_CTX; CTX_NOTE said after it), --threads, --n-gpu-layers: a GGUF run in-process by
    llama.cpp, the one definition gpv-score, gpv-parse and gpv-elicit share."""
    return [
        click.option("--n-ctx", type=click.IntRange(min=min_ctx), default=4096, show_default=True,
                     help=f"llama-cpp: context length{ctx_note}."),
        click.option("--threads", type=click.IntRange(min=1), help="llama-cpp: CPU threads  [default: half the cores]"),
        click.option("--n-gpu-layers", type=int, default=0, show_default=True,
                     help="llama-cpp: layers offloaded to a GPU when the build has one (-1: all)."),
    ]


def with_options(options):
    """Decorate a command with OPTIONS, listed in --help in their order."""

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def transport_options(f):
    """--base-url and the rest of transport_params(), received as one `transport` (TransportOptions)."""
    return option_group(transport_params(), lambda kwargs: {"transport": take_transport(kwargs)})(f)


@dataclass
class ChatOptions:
    """The options every stage that asks a chat model shares (gpv-parse, gpv-elicit), as click gives them."""

    cache: str | None
    no_cache: bool
    concurrency: int
    seed: int | None
    n_ctx: int
    threads: int | None
    n_gpu_layers: int
    repeat_penalty: float
    transport: TransportOptions

    def settings(self, model, backend, log=None, **where):
        """The chat model's settings, for MODEL and BACKEND (LOG: see logger()); WHERE (base_url=, explicit=)
        names a server other than --base-url's."""
        return ChatSettings(
            model=model, backend=backend, server=self.transport.server(log, **where),
            llama_cpp=LlamaChatSettings(n_ctx=self.n_ctx, threads=self.threads, n_gpu_layers=self.n_gpu_layers,
                                        repeat_penalty=self.repeat_penalty),
            cache_dir=self.cache, use_cache=not self.no_cache, fetch=fetch_report(log))


def chat_options(inputs, *, cache_envvar, repeat_penalty=1.2,
                 repeat_help="penalty on repeated tokens (small models loop without it).", base_url=True):
    """The options of a stage that asks a chat model: the server's (transport_params(BASE_URL)), cache (its
    default from CACHE_ENVVAR), concurrency, local model settings. INPUTS names what -j keeps in flight. The
    command receives them as one `chat` (ChatOptions)."""
    options = [
        click.option("--cache", metavar="DIR", envvar=cache_envvar,
                     help="Response cache directory  [default: $GPV_CACHE_DIR, $XDG_CACHE_HOME/gpvtools or "
                          "~/.cache/gpvtools, then /chat]"),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the response cache."),
        click.option("--seed", type=int, help="Sampling seed, for servers that take one."),
        click.option("-j", "--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
                     help=f"openai: {inputs} in flight at once; llama-cpp: {inputs} decoded together as the "
                          f"sequences of one context, each with --n-ctx cells (output stays in input order)."),
        *local_model_options(256),
        click.option("--repeat-penalty", type=click.FloatRange(min=1.0), default=repeat_penalty, show_default=True,
                     help=f"llama-cpp: {repeat_help}"),
    ]
    names = [f.name for f in fields(ChatOptions) if f.name != "transport"]

    def build(kwargs):
        transport = take_transport(kwargs)
        return {"chat": ChatOptions(**{name: kwargs.pop(name) for name in names}, transport=transport)}

    return option_group(transport_params(base_url) + options, build)
