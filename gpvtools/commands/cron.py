"""gpv-cron: one incremental run of the pipeline over a growing corpus, for cron."""

import shlex

import click

from ..streaming.errors import UsageError
from ..streaming.incremental import COMMAND, CronSettings, run
from ..streaming.stage import guarded
from .common import CONTEXT_SETTINGS, verbosity

STAGES = ("chunk", "parse", "score", "aggregate", "profiles")


def words(name, values):
    """A stage's arguments: each value split as a shell would, so quotes keep a word with spaces whole."""
    out = []
    for value in values:
        try:
            out += shlex.split(value)
        except ValueError as e:
            raise UsageError(f"--{name} {value!r}: {e}") from None
    return out


def stage_option(name, what):
    return click.option(f"--{name}", multiple=True, metavar="ARGS", help=f"Arguments for {what}.")


@click.command(name=COMMAND, context_settings=CONTEXT_SETTINGS)
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("-d", "--dir", "directory", default="gpv-cron", show_default=True, metavar="DIR",
              help="State directory: the stages' outputs, the totals, the profiles, rejected.jsonl and the lock.")
@click.option("--by", default="doc_id", show_default=True, metavar="FIELD[,FIELD...]",
              help="The groups profiled (gpv-aggregate --by).")
@stage_option("chunk", "gpv-chunk")
@stage_option("parse", "gpv-parse")
@stage_option("score", "gpv-score")
@stage_option("aggregate", "every gpv-aggregate (--keep, --missing-group)")
@stage_option("profiles", "the last gpv-aggregate --merge, which writes the profiles (--min-evidence, "
                          "--higher-order, -f csv)")
@click.option("-o", "--output", metavar="FILE",
              help="Where the profiles go, replaced whole  [default: DIR/profiles.jsonl]")
@click.option("--wait", is_flag=True, help="Wait for a run in progress to end instead of exiting 75.")
@click.option("--readmit", multiple=True, metavar="ID",
              help="Take the records of ID (a document's, or a chunk's or perception's id) out of "
                   "DIR/rejected.jsonl, so that this run tries them again; fix the input first. Repeatable.")
@verbosity(quiet=False)
def main(inputs, directory, by, chunk, parse, score, aggregate, profiles, output, wait, readmit, verbose):
    """Bring the value profiles of a growing corpus up to date.

    The documents of INPUT (files read in the order given, e.g. a glob of daily files; old files may
    have grown by appended documents) that no earlier run has finished are chunked, parsed and
    scored, each stage resuming onto its file in DIR, so finished work is never redone. The new
    scores are aggregated and merged into the totals kept in DIR, and the profiles
    (DIR/profiles.jsonl, or -o FILE) are rewritten whole (renamed into place). A run that is killed
    or fails leaves DIR as the next run needs it.

    A record that fails at any stage (a text that is a number, a line of broken JSON, a perception
    without the --by field) is set aside once, with its error, in DIR/rejected.jsonl, and everything
    else goes on into the profiles. Later runs do not try it again; --readmit ID takes it back once
    the input is fixed. A run that set records aside says how many on stderr and exits 1.

    --chunk, --parse, --score, --aggregate and --profiles pass arguments on to the stages. A value is
    split into words as a shell splits them, so a word with spaces is quoted inside it: --parse '-j 4
    --subject "Jane Doe"' gives gpv-parse the four words -j, 4, --subject and Jane Doe. Each may be
    given more than once; the words add up.

    Two runs never overlap: a second one started while the first holds DIR/lock (an flock, held by
    the stages too) exits with status 75 and does nothing, or waits with --wait. The stages run with
    this Python (python -m gpvtools.commands.STAGE), so cron's PATH does not matter.
    """

    def work():
        given = dict(zip(STAGES, (chunk, parse, score, aggregate, profiles)))
        settings = CronSettings(directory, list(inputs), by, **{n: words(n, v) for n, v in given.items()},
                                output=output, wait=wait, readmit=list(readmit))
        return run(settings)

    guarded(COMMAND, verbose, work)


main.man_sections = {
    "REJECTED RECORDS": (
        "Each stage runs with --rejects DIR/rejected.jsonl (see gpv-chunk(1)): an input it cannot use is "
        "appended there as one JSON line, the record with \"_gpv_error\": {\"command\", \"line\", \"key\", "
        "\"error\", \"time\"} (a line that is no JSON keeps its text in \"raw\"), and the stage goes on. "
        "Resuming, a stage counts an input set aside there as done, so it is not tried again night after "
        "night; the aggregate of the new scores sets aside a record it refuses (say one without the --by "
        "field) the same way. The run's note names how many records it set aside and the file, and the "
        "exit status is 1; later runs that set nothing new aside exit 0 and say how many wait there.\n\n"
        "To re-admit a record, fix it in the input (a document not yet worked on may be edited) and run "
        "with --readmit ID, ID being the document's id (or the key in the record's line): its lines leave "
        "rejected.jsonl and this run tries it again. Deleting the line by hand does the same when no run is "
        "going. A record gpv-aggregate had set aside is taken back by totalling scored.jsonl again."
    ),
    "FILES": (
        "\b\n"
        "DIR/chunks.jsonl         gpv-chunk's output (so perceptions.jsonl, scored.jsonl)\n"
        "DIR/folded-OFFSET.jsonl  the totals: aggregates of scored.jsonl's first OFFSET bytes\n"
        "DIR/profiles.jsonl       the profiles (or -o FILE)\n"
        "DIR/rejected.jsonl       the records set aside, each with its error\n"
        "DIR/lock                 held (flock) for the length of a run"
    ),
    "EXIT STATUS": (
        "0 when the profiles are up to date and no record was set aside; 1 when this run set records aside "
        "(the profiles are up to date without them) or a stage failed (after its own message; the next run "
        "finishes the job); 2 for a usage error; 75 when another run holds DIR/lock (nothing done); 130 or "
        "143 when interrupted by SIGINT or SIGTERM, or a stage's own status when it was."
    ),
    "ENVIRONMENT": (
        "The stages inherit the environment and read their own variables (GPV_MODEL, OPENAI_BASE_URL, "
        "OPENAI_API_KEY, ...: see their pages). PATH is not used to find them. GPV_DEBUG=1: tracebacks, as -v."
    ),
    "EXAMPLES": (
        "\b\n"
        "# crontab: every night at 2:00, over a directory of daily files\n"
        "0 2 * * *  gpv-cron -d /data/gpv --by author --parse '-j 4' /data/posts/*.jsonl 2>>/data/gpv/cron.log\n"
        "gpv-cron -d state --parse '--subject \"Jane Doe\" -m model.gguf' --score '-m words.json' diary.jsonl\n"
        "gpv-cron -d state --by author --profiles '--min-evidence 3 --higher-order' posts/*.jsonl\n"
        "gpv-cron -d state --readmit post-1183 posts/*.jsonl"
    ),
}


if __name__ == "__main__":
    main(prog_name=COMMAND)  # bin/gpv-cron runs python -m: --help still says gpv-cron
