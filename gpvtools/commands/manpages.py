"""Man pages rendered from the click commands themselves, so --help and man(1) never disagree.

    python -m gpvtools.commands.manpages man/      # regenerate man/gpv-*.1
"""

import importlib
import inspect
import sys
from pathlib import Path

import click

from .. import __version__

COMMANDS = ["chunk", "parse", "score", "train", "aggregate", "validate", "elicit", "report", "slurm", "cron"]

COMMON_SECTIONS = {
    "EXIT STATUS": (
        "0 when every input line was processed or set aside in --rejects FILE; 1 when a line was bad "
        "(whatever --on-error said) or the run failed; 2 for a usage error; 130 or 143 when interrupted by "
        "SIGINT or SIGTERM (what was written is complete: rerun with --resume); 141 when the reader of stdout "
        "went away."
    ),
    "ENVIRONMENT": lambda cmd: environment(cmd),
}
# Read by the runtimes rather than by an option: named on the pages of the commands that use them.
CACHE_VARIABLES = (
    "GPV_CACHE_DIR: the cache directory (replies, float32 model copies), else "
    "$XDG_CACHE_HOME/gpvtools, else ~/.cache/gpvtools."
)


def environment(cmd):
    """The ENVIRONMENT section, from the command's own options: every variable that sets one, and the
    variables its runtimes read."""
    commands = list(cmd.commands.values()) if isinstance(cmd, click.Group) else [cmd]
    options = {}
    for c in [cmd, *commands]:
        for param in c.params:
            if isinstance(param, click.Option) and param.envvar and param.name != "verbose":
                envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)
                for var in envvars:
                    options.setdefault(var, max(param.opts, key=len))
    parts = [f"{var}: the default of {option}." for var, option in options.items()]
    parts.append("GPV_DEBUG=1: tracebacks, as -v.")
    if any(p.name == "shard" for c in [cmd, *commands] for p in c.params):
        parts.append("SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_COUNT: the default --shard "
                     "inside a SLURM array job.")
    if cmd.name in ("gpv-parse", "gpv-elicit", "gpv-score"):
        parts.append(CACHE_VARIABLES)
    return " ".join(parts)


def command(name):
    return importlib.import_module(f"gpvtools.commands.{name}").main


def _escape(text):
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def _paragraphs(text):
    """click's help text as roff: blank lines start paragraphs; a \\b paragraph keeps its lines."""
    out = []
    for para in inspect.cleandoc(text).split("\n\n"):
        if para.startswith("\b\n"):
            out += [".PP", ".nf", _escape(para[2:]), ".fi"]
        else:
            out += [".PP", _escape(" ".join(line.strip() for line in para.split("\n")))]
    return out


def summary(cmd):
    """The NAME line's description: the first sentence of the help, lower-cased, no full stop."""
    first = inspect.cleandoc(cmd.help).split("\n")[0].rstrip(".")
    return first[0].lower() + first[1:]


def _options(cmd, ctx):
    lines = []
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record and record[1]:
            lines += [".TP", f".B {_escape(record[0])}", _escape(record[1])]
    return lines


def _subcommands(group, ctx):
    """A click group's subcommands, each a subsection with its usage, help and options."""
    lines = [".SH COMMANDS"]
    for name in group.list_commands(ctx):
        sub = group.get_command(ctx, name)
        sub_ctx = click.Context(sub, info_name=name, parent=ctx, **sub.context_settings)
        lines += [f".SS {_escape(f'{group.name} {name}')}", ".PP",
                  f".B {_escape(f'{group.name} {name}')}", _escape(" ".join(sub.collect_usage_pieces(sub_ctx)))]
        lines += _paragraphs(sub.help or "")
        lines += _options(sub, sub_ctx)
    return lines


def render(cmd):
    ctx = click.Context(cmd, info_name=cmd.name, **cmd.context_settings)
    name = cmd.name
    lines = [
        f'.TH {name.upper()} 1 "" "gpvtools {__version__}" "gpvtools manual"',
        ".SH NAME",
        f"{_escape(name)} \\- {_escape(summary(cmd))}",
        ".SH SYNOPSIS",
        f".B {_escape(name)}",
        _escape(" ".join(cmd.collect_usage_pieces(ctx))),
        ".SH DESCRIPTION",
        *_paragraphs(cmd.help),
        ".SH OPTIONS",
    ]
    lines += _options(cmd, ctx)
    if isinstance(cmd, click.Group):
        lines += _subcommands(cmd, ctx)
    # A command's own sections come first; it may replace a common one (a group of reports has no --resume).
    sections = dict(getattr(cmd, "man_sections", {}))
    for title, body in COMMON_SECTIONS.items():
        sections.setdefault(title, body)
    for title, body in sections.items():
        if callable(body):
            body = body(cmd) if title in COMMON_SECTIONS and body is COMMON_SECTIONS[title] else body()
        lines += [f".SH {title}", *_paragraphs(body)]
    others = [f"{command(n).name}(1)" for n in COMMANDS if command(n).name != name]
    if others:
        lines += [".SH SEE ALSO", _escape(", ".join(others))]
    return "\n".join(lines) + "\n"


def write_pages(directory):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        cmd = command(name)
        (directory / f"{cmd.name}.1").write_text(render(cmd), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and sys.argv[1].startswith("-")):
        sys.exit("usage: python -m gpvtools.commands.manpages [DIRECTORY]  (default: man)")
    write_pages(sys.argv[1] if len(sys.argv) > 1 else "man")
