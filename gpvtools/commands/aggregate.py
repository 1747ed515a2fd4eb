"""gpv-aggregate: value profiles of groups (individuals) from perception-level scores (paper §3.3)."""

import csv
import glob
import io
import os
import signal
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import click
import orjson

from ..method.aggregation import Aggregator
from ..streaming.errors import BadRecord, GpvError, UsageError
from ..streaming.jsonl import dumps, iter_lines, open_input, parse_line
from ..streaming.shard import parse_shard, shard_from_env, shard_of
from ..streaming.stage import (
    CONTEXT_SETTINGS,
    DOC_ID_FIELD,
    ERROR_FIELD,
    EXIT_DATA,
    EXIT_OK,
    Entry,
    Interrupted,
    Progress,
    _raise_interrupted,
    error_record,
    guarded,
    note,
    plural,
    stream_options,
)

COMMAND = "gpv-aggregate"


class AtomicOutput:
    """stdout, or FILE written through a temporary file beside it and renamed into place at the end.

    An aggregate is all-or-nothing: a failed or interrupted run leaves an earlier FILE as it was. The
    temporary file is named by host and process, so a later run can tell one that a SIGKILL left behind.
    """

    def __init__(self, path):
        self.path = None if path in (None, "-") else Path(path)
        if self.path is None:
            self.f, self.tmp = sys.stdout.buffer, None
            return
        host = socket.gethostname().replace(".", "_") or "host"
        self._remove_stale(host)
        self.tmp = self.path.with_name(f".{self.path.name}.{host}.{os.getpid()}.tmp")
        try:
            self.f = open(self.tmp, "wb")  # noqa: SIM115 - closed by commit() or discard()
        except OSError as e:
            raise GpvError(f"cannot write {path}: {e.strerror}") from None

    def _remove_stale(self, host):
        """Remove this host's temporary files of FILE whose process is gone (killed before it could)."""
        prefix = f".{self.path.name}.{host}."
        for old in self.path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
            pid = old.name[len(prefix):-len(".tmp")]
            if pid.isdigit() and not _alive(int(pid)):
                old.unlink(missing_ok=True)

    def write(self, data):
        self.f.write(data)

    def commit(self):
        if self.tmp is None:
            self.f.flush()
            return
        self.f.close()
        os.replace(self.tmp, self.path)
        self.tmp = None

    def discard(self):
        if self.tmp is not None:
            self.f.close()
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


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


def run_aggregate(opts, aggregator, fmt):
    """Fold the input into the aggregator, then write its records; returns the exit status."""
    if opts.resume and opts.output in (None, "-"):
        raise UsageError("--resume needs -o FILE")
    if fmt != "jsonl" and opts.on_error == "emit":
        raise UsageError(f"--on-error emit needs --format jsonl: a {fmt} table has no place for error records")
    shard = parse_shard(opts.shard) if opts.shard else shard_from_env()
    if shard and not opts.shard and not opts.quiet:
        note(COMMAND, f"shard {shard[0]}/{shard[1]} from the SLURM array variables")
    if opts.resume and not opts.quiet:
        note(COMMAND, f"--resume: an aggregate is all-or-nothing, so {opts.output} is recomputed from the whole input")
    stream = open_input(opts.input)
    if opts.input == "-" and sys.stdin.isatty() and not opts.quiet:
        note(COMMAND, "reading JSONL from standard input (Ctrl-D ends it)")
    out = AtomicOutput(opts.output)
    progress = Progress(COMMAND, sys.stderr.isatty() and not opts.quiet)
    stage = SimpleNamespace(command=COMMAND)
    counts = {"in": 0, "bad": 0, "passed": 0}
    old_term = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        for line, raw in iter_lines(stream, opts.max_line_bytes):
            counts["in"] += 1
            record = None
            try:
                record = parse_line(raw, line, opts.max_line_bytes)
                if ERROR_FIELD in record:
                    counts["passed"] += 1
                    if fmt == "jsonl":
                        out.write(dumps(record))
                    continue
                if shard:
                    shard_id = record.get(DOC_ID_FIELD, record.get("id", line))
                    if shard_of(shard_id, shard[1]) != shard[0]:
                        continue
                aggregator.add(record, line)
            except BadRecord as e:
                error = e if e.line is not None else BadRecord(e.message, line, record)
                counts["bad"] += 1
                if opts.on_error == "emit":
                    out.write(dumps(error_record(stage, Entry(line, record, error=error))))
                note(COMMAND, f"error: {error}")
                if opts.on_error == "fail":
                    return EXIT_DATA
            progress.update(counts["in"], len(aggregator.groups))
        if fmt == "jsonl":
            for record in aggregator.records():
                out.write(dumps(record))
        elif counts["in"]:
            out.write(table_bytes(list(aggregator.records()), aggregator.by or [], aggregator.keep,
                                  "," if fmt == "csv" else "\t"))
        out.commit()
    except (KeyboardInterrupt, Interrupted) as e:
        signum = getattr(e, "signum", signal.SIGINT)
        progress.close()
        written = "nothing written" if out.path is not None else "no aggregate written"
        note(COMMAND, f"interrupted after {counts['in']} lines; {written} (an aggregate is all-or-nothing)")
        return 128 + signum
    finally:
        signal.signal(signal.SIGTERM, old_term)
        progress.close()
        out.discard()
        if opts.input != "-":
            stream.close()
    if not opts.quiet and counts["in"]:
        if counts["passed"]:
            if fmt == "jsonl":
                note(COMMAND, f"passed on {plural(counts['passed'], 'error record')} from upstream")
            else:
                note(COMMAND, f"{plural(counts['passed'], 'error record')} from upstream left out: "
                              f"a {fmt} table has no place for them")
        if counts["bad"]:
            verb = "skipped" if opts.on_error == "skip" else "passed on as error records"
            note(COMMAND, f"{plural(counts['bad'], 'bad line')} {verb}")
        verb = "merged" if aggregator.merge else "aggregated"
        what = "aggregate record" if aggregator.merge else "record"
        note(COMMAND, f"{verb} {plural(aggregator.n_records, what)} into {plural(len(aggregator.groups), 'group')}")
        for line in aggregator.summary():
            note(COMMAND, line)
    return EXIT_DATA if counts["bad"] else EXIT_OK


def _fields(text):
    return [f.strip() for f in text.split(",") if f.strip()] if text else []


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
@click.option("-f", "--format", "fmt", type=click.Choice(["jsonl", "csv", "tsv"]), default="jsonl",
              show_default=True, help="jsonl records, or a wide table (a column per value's score, n and sd).")
@stream_options
def main(stream, by, keep, missing_group, min_evidence, higher_order, merge, mixed_values, fmt):
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
      scorer        the scorer of the group's records (a group may not mix scorers)
      group_by      the --by fields (--merge reads them)

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
        given = click.get_current_context().get_parameter_source("by") == click.core.ParameterSource.COMMANDLINE
        by_fields = _fields(by) if given else None
    else:
        by_fields = _fields(by)

    def work():
        aggregator = Aggregator(by_fields, _fields(keep), missing_group, min_evidence, higher_order, merge,
                                mixed_values)
        return run_aggregate(stream, aggregator, fmt)

    guarded(COMMAND, stream.verbose, work)


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
    main()
