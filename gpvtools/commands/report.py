"""gpv-report: value profiles (and the perceptions behind them) as one self-contained HTML page or PNG charts."""

import sys

import click

from ..method import report as rep
from ..streaming.atomic import write_all, write_atomic
from ..streaming.jsonl import DEFAULT_MAX_LINE_BYTES
from ..streaming.stage import guarded, note, plural
from .common import CONTEXT_SETTINGS, verbosity

COMMAND = rep.COMMAND


class ReportCommand(click.Command):
    """Keeps the arguments it was given, so the page can show the command line that made it."""

    def parse_args(self, ctx, args):
        ctx.meta["gpv.argv"] = list(args)
        return super().parse_args(ctx, args)


def _write_html(report, output):
    data = rep.render_html(report).encode("utf-8")
    if output in (None, "-"):
        write_all(sys.stdout.buffer, data)
        sys.stdout.flush()
    else:
        write_atomic(output, data)  # a failed run leaves an earlier report whole


def _notes(evidence, upstream, png_paths, quiet):
    if quiet:
        return
    if upstream:
        note(COMMAND, f"left out {plural(upstream, 'error record')} from upstream in the profiles")
    if evidence is not None:
        if evidence.n_upstream:
            note(COMMAND, f"left out {plural(evidence.n_upstream, 'error record')} from upstream in the evidence")
        if evidence.n_unmatched:
            note(COMMAND, f"{evidence.n_unmatched} of {plural(evidence.n_read, 'evidence record')} belong to no "
                          f"profile's group; left out")
    if png_paths:
        note(COMMAND, f"wrote {plural(len(png_paths), 'PNG chart')} to {png_paths[0].parent}")


@click.command(name=COMMAND, cls=ReportCommand, context_settings=CONTEXT_SETTINGS)
@click.argument("input", default="-", metavar="[INPUT]")
@click.option("--evidence", metavar="FILE",
              help="Scored perceptions (gpv-score's output, .gz too) behind the profiles: each group's top "
                   "perceptions per value are shown beside its profile.")
@click.option("--text-field", default="perception", show_default=True, metavar="FIELD",
              help="Field of the evidence records holding the perception's text.")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True, metavar="K",
              help="Perceptions shown per group, value and direction (raised, lowered, at the mean).")
@click.option("--title", metavar="TEXT", help="The page's title  [default: Value profiles]")
@click.option("-o", "--output", metavar="FILE.html",
              help="Write the HTML page to FILE.html instead of stdout (replaced whole, or not at all).")
@click.option("--png", "png_dir", metavar="DIR",
              help="Write PNG charts into DIR (created; needs matplotlib). Without -o no HTML is written.")
@click.option("--max-line-bytes", type=click.IntRange(min=1), default=DEFAULT_MAX_LINE_BYTES, show_default=True,
              envvar="GPV_MAX_LINE_BYTES", help="Longer input lines are bad lines.")
@verbosity()
def main(input, evidence, text_field, top_k, title, output, png_dir, max_line_bytes, quiet, verbose):
    """Render value profiles as one self-contained HTML report, or as PNG charts.

    Reads gpv-aggregate's profiles (one record per group) and writes one HTML page: the
    instruments that measured them, a chart comparing the groups on every value (each mean with
    its 95% interval, mean +- 1.96 sd/sqrt(n)), Schwartz's circumplex when the ten basic values are
    there, and per group its fields, profile chart and table of values. The page loads nothing
    and runs no script (its charts are inline SVG), prints legibly, and is the same bytes for
    the same input.

    With --evidence, the scored perceptions are read once, as a stream, and matched to the
    profiles by the profiles' own group_by fields, the way gpv-aggregate grouped them. For every
    group and value the page shows the --top-k measured perceptions that raised the group's score
    (the highest above its mean) and those that lowered it (the lowest below), and the K most
    relevant of those scored exactly at the mean (a group of one perception), with their
    relevance, support, oppose and score and their perception, chunk and document ids; ties go
    by perception id, so the order of the evidence does not matter. Memory grows with groups x
    values x K, not with the number of perceptions. Evidence of groups not in the profiles is
    counted on stderr; error records from upstream are left out.

    A bad line in either file stops the report with the file, the line and the field named
    (exit status 1); nothing is written then.
    """
    argv = [COMMAND, *click.get_current_context().meta.get("gpv.argv", [])]

    def work():
        plt = rep.pyplot() if png_dir else None  # before reading: a missing matplotlib fails fast
        if input == "-" and sys.stdin.isatty() and not quiet:
            note(COMMAND, "reading profiles (JSONL) from standard input (Ctrl-D ends it)")
        profiles, upstream = rep.read_profiles(input, max_line_bytes)
        ev = None
        if evidence is not None:
            ev = rep.Evidence(profiles, top_k, text_field)
            ev.read(evidence, max_line_bytes)
        report = rep.Report(profiles, ev, title, argv, top_k)
        png_paths = rep.write_pngs(report, png_dir, plt) if png_dir else []
        if output not in (None, "-") or not png_dir:
            _write_html(report, output)
        _notes(ev, upstream, png_paths, quiet)
        return 0

    guarded(COMMAND, verbose, work)


main.man_sections = {
    "EXIT STATUS": (
        "0 when the report was written; 1 for a bad line in the profiles or the evidence, a file that cannot "
        "be read or written, or --png without matplotlib; 2 for a usage error; 130 or 143 when interrupted "
        "by SIGINT or SIGTERM (nothing written); 141 when the reader of stdout went away."
    ),
    "EXAMPLES": (
        "\b\n"
        "gpv-aggregate --by author scored.jsonl -o authors.jsonl\n"
        "gpv-report authors.jsonl --evidence scored.jsonl -o report.html\n"
        "gpv-report authors.jsonl --png charts/\n"
        "gpv-score perceptions.jsonl | gpv-aggregate --by author | gpv-report --title 'Authors' > report.html"
    ),
}


if __name__ == "__main__":
    main(prog_name="gpv-report")  # bin/gpv-report runs python -m: --help still says gpv-report
