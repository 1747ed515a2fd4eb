"""gpv-aggregate: value profiles of groups (individuals) from perception-level scores (paper §3.3)."""

import csv
import io

import click
import orjson

from ..method.aggregation import Aggregator
from ..streaming.errors import UsageError
from ..streaming.jsonl import dumps
from ..streaming.lists import comma_list
from ..streaming.messages import plural
from ..streaming.stage import WholeStage, run_command
from .common import CONTEXT_SETTINGS, from_command_line, stream_options

COMMAND = "gpv-aggregate"


class AggregateStage(WholeStage):
    """Folds each record into an Aggregator; writes its groups, as JSONL or a wide table, at the end."""

    command = COMMAND
    what = "an aggregate"

    def __init__(self, aggregator, fmt, on_error):
        if fmt != "jsonl" and on_error == "emit":
            raise UsageError(f"--on-error emit needs --format jsonl: a {fmt} table has no place for error records")
        self.aggregator, self.fmt = aggregator, fmt
        self.passes_errors = fmt == "jsonl"
        self.n_lines = 0

    def add(self, entry):
        self.aggregator.add(entry.record, entry.line)

    def finish(self, n_lines):
        self.n_lines = n_lines
        if self.fmt == "jsonl":
            return b"".join(dumps(r) for r in self.aggregator.records())
        if not n_lines:
            return b""
        return table_bytes(list(self.aggregator.records()), self.aggregator.by or [], self.aggregator.keep,
                           "," if self.fmt == "csv" else "\t")

    def upstream_note(self, n):
        if self.passes_errors:
            return super().upstream_note(n)
        return f"{plural(n, 'error record')} from upstream left out: a {self.fmt} table has no place for them"

    def summary(self):
        if not self.n_lines:
            return []
        agg = self.aggregator
        verb, what = ("merged", "aggregate record") if agg.merge else ("aggregated", "record")
        return [f"{verb} {plural(agg.n_records, what)} into {plural(len(agg.groups), 'group')}", *agg.summary()]


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return orjson.dumps(value).decode()


def table_bytes(records, by, keep, delimiter):
    """Aggregate records as a wide CSV/TSV table: group columns, then a score, an n and an sd column per value."""
    names = list(records[0]["values"]) if records else []
    header = ["id", *by, *keep, "n_perceptions", "scorer", *names, *(f"{n}.n" for n in names),
              *(f"{n}.sd" for n in names)]
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    for r in records:
        v = r["values"]
        writer.writerow([_cell(x) for x in (
            r["id"], *(r[f] for f in by), *(r[f] for f in keep), r["n_perceptions"], r["scorer"],
            *(v[n]["score"] for n in names), *(v[n]["n"] for n in names), *(v[n]["sd"] for n in names))])
    return buf.getvalue().encode("utf-8")


@click.command(name=COMMAND, context_settings=CONTEXT_SETTINGS)
@click.option("--by", default="doc_id", show_default=True, metavar="FIELD[,FIELD…]",
              help="Group by these fields; one output record per distinct combination. doc_id falls back to a "
                   "record's id when absent (a document scored whole). With --merge the default is the "
                   "aggregates' own group_by.")
@click.option("--keep", default="", metavar="FIELD[,FIELD…]",
              help="Copy these fields (gender, age, …) from each group's records; null where they differ "
                   "within a group or are absent (counted on stderr).")
@click.option("--missing-group", type=click.Choice(["error", "skip", "null"]), default="error", show_default=True,
              help="A record without a --by field: a bad line; left out (counted on stderr); or grouped under null.")
@click.option("--min-evidence", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="A value's score (and sd) is null in a group with fewer than K measured perceptions of it.")
@click.option("--higher-order", is_flag=True,
              help="Add Schwartz's four higher-order values, each the unweighted mean of its basic values' "
                   "group scores (needs the 10 Schwartz values).")
@click.option("--merge", is_flag=True,
              help="Combine aggregate records (of shards) into the aggregates of their union: pooled n, mean "
                   "and sd, exact to rounding.")
@click.option("--mixed-values", type=click.Choice(["error", "union"]), default="error", show_default=True,
              help="Records scored on different value sets: a bad line; or aggregate the union (a value "
                   "absent from a record counts as unmeasured there).")
@click.option("--mixed-instruments", is_flag=True,
              help="Pool records scored by different instruments (another model, adapter, precision, prompts, "
                   "…; see gpv-score --describe) instead of refusing them; each group lists the instruments "
                   "it pooled. Without it, different instruments need --by scorer.")
@click.option("-f", "--format", "fmt", type=click.Choice(["jsonl", "csv", "tsv"]), default="jsonl",
              show_default=True, help="jsonl records, or a wide table (a column per value's score, n and sd).")
@stream_options
def main(stream, by, keep, missing_group, min_evidence, higher_order, merge, mixed_values, mixed_instruments, fmt):
    """Aggregate perception-level value scores into one value profile per group.

    Reads scored records (gpv-score's output: "values": {VALUE: {..., "score": w or null}}; the
    dictionary backend's {"count", "words", "score"} alike) and writes one record per group of
    --by (default doc_id), the paper's individual-level measurement (§3.3): the mean of the
    measured perception-level scores of each value.

    \b
      id            the group's --by values as text, joined by '|'
      <by fields>   the group's values of the --by fields, then the --keep fields
      n_perceptions records in the group
      values        {VALUE: {"score": mean or null, "n": measured perceptions,
                             "sd": sample sd or null}}; null when n is 0 or below
                    --min-evidence (sd also when n < 2)
      scorer        the scorer tag of the group's records (BACKEND:MODEL@ID)
      instrument    their instrument card (gpv-score --describe), or with
                    --mixed-instruments the list of those the group pooled
      group_by      the --by fields (--merge reads them)

    Records scored by different instruments (the card's id: model and adapter
    bytes, precision, prompts, threshold) are not pooled: a bad line, unless the
    groups keep them apart (--by scorer) or --mixed-instruments is given.

    Groups come out sorted by their --by values (null, booleans, numbers, then strings). The
    input may come in any order: the sums are kept exactly, so shuffled and sorted input give
    identical output, and memory grows with the number of groups, not of records. Error records
    from upstream are passed on first (jsonl), never aggregated. With -o FILE the output is
    written to a temporary file and renamed at the end, so a failed run leaves FILE as it was;
    --resume there simply recomputes FILE.

    --merge reads aggregate records instead (e.g. per-shard outputs) and pools them: n and
    n_perceptions add up, the mean and sd are those of all the perceptions together.
    """
    if merge:
        given = from_command_line("by")
        by_fields = comma_list(by) if given else None
    else:
        by_fields = comma_list(by)

    def build():
        aggregator = Aggregator(by_fields, keep=comma_list(keep), missing_group=missing_group,
                                min_evidence=min_evidence, higher_order=higher_order, merge=merge,
                                mixed_values=mixed_values, mixed_instruments=mixed_instruments)
        return AggregateStage(aggregator, fmt, stream.on_error)

    run_command(COMMAND, build, stream)


main.man_sections = {
    "HIGHER-ORDER VALUES": (
        "With --higher-order each group also gets Self-Transcendence (Universalism, Benevolence), "
        "Self-Enhancement (Achievement, Power, Hedonism), Openness to Change (Self-Direction, Stimulation, "
        "Hedonism) and Conservation (Security, Conformity, Tradition): the unweighted mean of the group "
        "scores of those of its basic values that have one (Hedonism counts in two). Their entries carry "
        "n (the basic values' measured perceptions added up), n_basic (how many basic values had a score) "
        "and sd null. --merge recomputes them from the merged basic values."
    ),
    "SHARDS": (
        "Aggregate each shard on its own and merge: every shard must be aggregated with the default "
        "--min-evidence 1 (a withheld score cannot be pooled); give --min-evidence to the merge instead. "
        "The merged records equal the aggregate of all shards' input to about 1e-16, relatively, and "
        "do not depend on the order of the shards."
    ),
    "EXAMPLES": (
        "\b\n"
        "gpv-score perceptions.jsonl | gpv-aggregate --by author --keep gender,age > authors.jsonl\n"
        "gpv-aggregate --by author --higher-order -f csv scored.jsonl -o authors.csv\n"
        "gpv-aggregate --by author --shard 3/16 scored.jsonl -o agg.3.jsonl\n"
        "cat agg.*.jsonl | gpv-aggregate --merge -o authors.jsonl\n"
        "gpv-aggregate --by author scored.jsonl | python -m gpvtools.commands.table id Power=values.Power.score"
    ),
}


if __name__ == "__main__":
    main(prog_name="gpv-aggregate")  # bin/gpv-aggregate runs python -m: --help still says gpv-aggregate
