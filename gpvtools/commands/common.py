"""What every command's click interface shares: help settings, the stream options, the text options, and
help that groups each backend's own options under a heading of its own.

The stage loop itself (gpvtools.streaming.stage) knows nothing of click; this is where options become
its settings.
"""

import re
from dataclasses import dataclass, fields

import click

from ..runtimes.chat import ChatSettings, LlamaChatSettings
from ..runtimes.server import ServerSettings
from ..streaming.jsonl import DEFAULT_MAX_LINE_BYTES
from ..streaming.stage import StreamOptions

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
# An option whose help starts "llama-cpp: …" belongs to that backend; --help lists it under its heading.
BACKEND_PREFIX = re.compile(r"^(llama-cpp|transformers|openai): ")


class Command(click.Command):
    """A click command whose --help lists the backends' own options apart, each under its backend's name,
    and which keeps its arguments as given (ctx.meta["gpv.argv"]: the command line gpv-report shows)."""

    def parse_args(self, ctx, args):
        ctx.meta["gpv.argv"] = list(args)
        return super().parse_args(ctx, args)

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


def stream_options(f):
    """INPUT, -o, --resume, --on-error, --shard, --max-line-bytes, -q, -v: the same in every stage."""

    @click.argument("input", default="-", metavar="[INPUT]")
    @click.option("-o", "--output", default="-", metavar="FILE", help="Write JSONL to FILE instead of stdout.")
    @click.option("--resume", is_flag=True,
                  help="Keep the records already complete in -o FILE, repair a torn end, and do only the rest.")
    @click.option("--on-error", type=click.Choice(["fail", "skip", "emit"]), default="fail", show_default=True,
                  envvar="GPV_ON_ERROR",
                  help="On a bad line: stop; report it and go on; or pass an error record on. "
                       "Either way a bad line makes the exit status 1.")
    @click.option("--shard", metavar="K/N", envvar="GPV_SHARD",
                  help="Keep only documents whose id hashes to K mod N (stable across stages and machines). "
                       "Default: from SLURM_ARRAY_TASK_ID/_MIN/_COUNT when in a SLURM array job.")
    @click.option("--max-line-bytes", type=click.IntRange(min=1), default=DEFAULT_MAX_LINE_BYTES, show_default=True,
                  envvar="GPV_MAX_LINE_BYTES", help="Longer input lines are bad lines.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress, notes or summary on stderr (errors still).")
    @click.option("-v", "--verbose", is_flag=True, envvar="GPV_DEBUG",
                  help="Tracebacks for errors (also GPV_DEBUG=1).")
    def wrapper(*args, input, output, resume, on_error, shard, max_line_bytes, quiet, verbose, **kwargs):
        opts = StreamOptions(input, output, resume, on_error, shard, max_line_bytes, quiet, verbose)
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


@dataclass
class ChatOptions:
    """The options every stage that asks a chat model shares (gpv-parse, gpv-elicit), as click gives them."""

    cache: str | None
    no_cache: bool
    api_key: str | None
    concurrency: int
    timeout: float
    retries: int
    backoff: float
    seed: int | None
    n_ctx: int
    threads: int | None
    n_gpu_layers: int
    repeat_penalty: float

    def settings(self, model, backend, base_url, explicit):
        """The chat model's settings, for MODEL and BACKEND at BASE_URL (EXPLICIT: given on the command line)."""
        return ChatSettings(
            model=model, backend=backend,
            server=ServerSettings(base_url=base_url, api_key=self.api_key, timeout=self.timeout,
                                  retries=self.retries, backoff=self.backoff, explicit=explicit),
            llama_cpp=LlamaChatSettings(n_ctx=self.n_ctx, threads=self.threads, n_gpu_layers=self.n_gpu_layers,
                                        repeat_penalty=self.repeat_penalty),
            cache_dir=self.cache, use_cache=not self.no_cache)


def chat_options(inputs, repeat_penalty=1.2, repeat_help="penalty on repeated tokens (small models loop "
                                                                "without it)."):
    """The options of a stage that asks a chat model: cache, key, concurrency, retries, local model settings.
    INPUTS names what -j keeps in flight. The command receives them as one `chat` (ChatOptions)."""
    options = [
        click.option("--cache", metavar="DIR", envvar="GPV_PARSE_CACHE",
                     help="Response cache directory  [default: $GPV_CACHE_DIR, $XDG_CACHE_HOME/gpvtools or "
                          "~/.cache/gpvtools, then /chat]"),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the response cache."),
        click.option("--seed", type=int, help="Sampling seed, for servers that take one."),
        click.option("--api-key", envvar="OPENAI_API_KEY", metavar="KEY", show_envvar=True,
                     help="openai: API key (a local server needs none)."),
        click.option("-j", "--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
                     help=f"openai: {inputs} in flight at once; llama-cpp: {inputs} decoded together as the "
                          f"sequences of one context, each with --n-ctx cells (output stays in input order)."),
        click.option("--timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
                     help="openai: seconds per request."),
        click.option("--retries", type=click.IntRange(min=0), default=6, show_default=True,
                     help="openai: retries on timeouts, connection failures, malformed answers, 429 and 5xx, "
                          "with exponential backoff and jitter (a Retry-After header is obeyed)."),
        click.option("--backoff", type=click.FloatRange(min=0), default=1.0, show_default=True, metavar="SECONDS",
                     help="openai: the first retry's wait; each further retry doubles it (at most 60 s)."),
        click.option("--n-ctx", type=click.IntRange(min=256), default=4096, show_default=True,
                     help="llama-cpp: context length."),
        click.option("--threads", type=click.IntRange(min=1), help="llama-cpp: CPU threads  [default: half the cores]"),
        click.option("--n-gpu-layers", type=int, default=0, show_default=True,
                     help="llama-cpp: layers offloaded to a GPU when the build has one (-1: all)."),
        click.option("--repeat-penalty", type=click.FloatRange(min=1.0), default=repeat_penalty, show_default=True,
                     help=f"llama-cpp: {repeat_help}"),
    ]
    names = [f.name for f in fields(ChatOptions)]

    def decorate(f):
        def wrapper(*args, **kwargs):
            chat = ChatOptions(**{name: kwargs.pop(name) for name in names})
            return f(*args, chat=chat, **kwargs)

        wrapper.__name__, wrapper.__doc__ = f.__name__, f.__doc__
        # The options decorated onto F so far (those below this decorator) stay the command's.
        wrapper.__click_params__ = list(getattr(f, "__click_params__", []))
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate
