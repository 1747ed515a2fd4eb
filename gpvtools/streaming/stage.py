"""The stage loop every command shares: read, validate, shard, resume, process, write, report.

A command builds a `Stage` (what to do with one record) and calls `run_command`; the loop and the
command boundary (errors to exit codes) live here, once; signals, sinks and messages in their own modules.
"""

import os
import signal
import sys
import traceback
from dataclasses import dataclass

from . import rejects as rejects_mod
from . import resume as resume_mod
from .errors import BadRecord, GpvError, UsageError
from .jsonl import ERROR_FIELD, iter_lines, open_input, parse_line, require_text
from .messages import Progress, note, plural
from .shard import parse_shard, shard_from_env, shard_of
from .signals import Interrupted, check_interrupted, forget_interrupted, interruptible
from .sinks import Sink, WholeSink

DOC_ID_FIELD = "doc_id"
EXIT_OK, EXIT_DATA, EXIT_USAGE, EXIT_PIPE = 0, 1, 2, 141


@dataclass
class StreamOptions:
    input: str
    output: str
    resume: bool
    on_error: str
    shard: object
    max_line_bytes: int
    quiet: bool
    verbose: bool
    rejects: str = None  # FILE for bad input lines, each set aside once (streaming/rejects.py)


@dataclass
class Entry:
    """One input line on its way through a stage."""

    line: int
    record: dict = None
    key: str = None
    error: BadRecord = None
    raw: bytes = None  # the line as read, kept only for a line that is no record (for --rejects)


class Stage:
    """What a command does to one record. Subclasses set `command` and override `process`."""

    command = "gpv"
    text_field = "text"
    id_field = "id"
    whole = False          # a WholeStage: output only once the input has ended, all or nothing
    passes_errors = True   # write error records from upstream on (False: a format with no place for them)

    def input_key(self, record, line):
        """The id that names this input; its outputs' ids grow from it."""
        if self.id_field not in record:
            return str(line)
        value = record[self.id_field]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise BadRecord(f"field '{self.id_field}' must be a string or a number", line, record)
        return str(value)

    def source_key(self, out):
        """Which input an output record came from (for --resume)."""
        return out["id"]

    def group_size(self, out):
        """How many output records its input produced (for --resume)."""
        return 1

    def validate(self, entry):
        if self.text_field is not None:
            require_text(entry.record, self.text_field, entry.line)

    def process(self, entry):
        """The output records for one valid input record."""
        raise NotImplementedError

    def map(self, entries):
        """(entry, outputs) in input order; outputs is None when entry.error is set.

        Stages that overlap work (concurrent requests, batches) override this and keep the order.
        """
        for entry in entries:
            if entry.error is None:
                try:
                    yield entry, self.process(entry)
                    continue
                except BadRecord as e:
                    entry.error = e if e.line is not None else BadRecord(e.message, entry.line, entry.record)
            yield entry, None

    def summary(self):
        """Lines for stderr at the end of a run (not shown with -q)."""
        return []

    def input_stream(self):
        """A binary stream of JSONL to read instead of INPUT, or None (a stage that makes its own input)."""
        return None

    def upstream_note(self, n):
        """The summary line for N error records from upstream."""
        return f"passed on {plural(n, 'error record')} from upstream"

    def close(self):
        """Free what the stage holds (models), in an order of its own: run_command calls it at the end.

        Left to the interpreter's exit, native objects (llama.cpp's model, its LoRA adapter, the batch
        contexts made from them) are freed in whatever order the garbage collector meets them, and a
        context freed after its adapter crashed a finished gpv-score now and then (munmap_chunk: invalid
        pointer, exit 134/139, after every record was written)."""


class WholeStage(Stage):
    """A stage whose output needs all of its input (an aggregate): process() takes each valid record in
    through add(), finish() gives the output once the input has ended, and -o FILE is replaced whole or
    not at all (--resume recomputes it). Shards, bad lines, signals and summaries are every stage's."""

    whole = True
    what = "the output"  # named in notes: "--resume: the output is all-or-nothing, ..."
    text_field = None

    def process(self, entry):
        self.add(entry)
        return []

    def add(self, entry):
        """Take one valid record in (raise BadRecord to refuse it)."""
        raise NotImplementedError

    def finish(self, n_lines):
        """The output, as bytes, once the input (N_LINES lines in all) has ended."""
        raise NotImplementedError


def error_record(stage, entry):
    """The record --on-error emit passes on: the input's own fields (nothing lost) plus what went wrong."""
    info = {"command": stage.command, "line": entry.line, "error": entry.error.message}
    record = entry.record if entry.record is not None else entry.error.record
    return {**(record or {}), ERROR_FIELD: info}


def derive(record, new_id, **fields):
    """A child record: its id first, then every field of its parent, then the stage's own fields."""
    child = {"id": new_id}
    child.update(record)
    child["id"] = new_id
    child.update(fields)
    return child


class _Run:
    """One run of a stage over its input: what it reads and writes to, what it has counted, and its notes."""

    def __init__(self, stage, opts):
        self.stage, self.opts = stage, opts
        self.counts = {"in": 0, "out": 0, "bad": 0, "skipped": 0, "passed": 0, "rejected": 0, "not_retried": 0,
                       "rejected_again": 0}
        self.shard = parse_shard(opts.shard) if opts.shard else shard_from_env()
        if self.shard and not opts.shard and not opts.quiet:
            self.note(f"shard {self.shard[0]}/{self.shard[1]} from the SLURM array variables")
        self.done = self._resume()
        self.stream = stage.input_stream()
        if self.stream is None:
            self.stream = open_input(opts.input)
            if opts.input == "-" and sys.stdin.isatty() and not opts.quiet:
                self.note("reading JSONL from standard input (Ctrl-D ends it)")
        self.rejects = rejects_mod.Rejects(opts.rejects, stage.command) if opts.rejects else None
        # With --resume an input set aside before counts as done (a whole stage redoes all, so it meets it again).
        self.set_aside = (set(self.rejects.seen) if self.rejects is not None and opts.resume and not stage.whole
                          else set())
        self.sink = WholeSink(opts.output) if stage.whole else Sink(opts.output, append=opts.resume)
        self.progress = Progress(stage.command, sys.stderr.isatty() and not opts.quiet)
        self.stopped = False

    def note(self, message):
        note(self.stage.command, message)

    def _resume(self):
        """The inputs --resume finds done in -o FILE (none for a whole stage, which recomputes FILE)."""
        stage, opts = self.stage, self.opts
        if opts.resume and stage.whole:
            if not opts.quiet:
                self.note(f"--resume: {stage.what} is all-or-nothing, so {opts.output} is recomputed "
                          f"from the whole input")
        elif opts.resume:
            state = resume_mod.prepare(opts.output, stage.source_key, stage.group_size)
            if not opts.quiet and (state.kept or state.removed):
                self.note(f"resuming {opts.output}: {plural(len(state.done), 'input')} done, "
                          f"{plural(state.kept, 'record')} kept, {state.removed} incomplete removed")
            return state.done
        return set()

    def finished(self, key):
        """Whether --resume finds KEY's input done (in the output, or set aside in --rejects FILE)."""
        if key in self.done:
            self.counts["skipped"] += 1
            return True
        if key in self.set_aside:
            self.counts["not_retried"] += 1
            return True
        return False

    def entries(self):
        """The input's lines as entries for the stage: error records from upstream passed on, other shards'
        and finished inputs left out, bad lines marked (with their key where --rejects needs one)."""
        stage, opts = self.stage, self.opts
        for line, raw in iter_lines(self.stream, opts.max_line_bytes):
            self.counts["in"] += 1
            entry = Entry(line)
            try:
                entry.record = parse_line(raw, line, opts.max_line_bytes)
                if ERROR_FIELD in entry.record:
                    self.counts["passed"] += 1
                    if stage.passes_errors:
                        self.sink.write([entry.record])
                    continue
                entry.key = stage.input_key(entry.record, line)
                shard_id = entry.record.get(DOC_ID_FIELD, entry.key)
                if self.shard and shard_of(shard_id, self.shard[1]) != self.shard[0]:
                    continue
                if self.finished(entry.key):
                    continue
                stage.validate(entry)
            except BadRecord as e:
                entry.error = e
                if self.rejects is not None and entry.key is None:  # no record, or no usable id
                    entry.key, entry.raw = rejects_mod.line_key(raw, line), raw
                    if self.finished(entry.key):
                        continue
            yield entry

    def bad(self, entry):
        """Deal with a bad line as --rejects or --on-error says; False when the run must stop."""
        if self.rejects is not None:
            if self.rejects.add(entry, entry.raw):
                self.counts["rejected"] += 1
                self.note(f"error: {entry.error} (set aside in {self.opts.rejects})")
            else:
                self.counts["rejected_again"] += 1
            return True
        self.counts["bad"] += 1
        if self.opts.on_error == "emit":
            self.sink.write([error_record(self.stage, entry)])
        self.note(f"error: {entry.error}")
        return self.opts.on_error != "fail"

    def loop(self):
        """Run the stage over the entries; the exit status. self.stopped: a bad line ended it (--on-error fail)."""
        counts = self.counts
        for entry, outputs in self.stage.map(self.entries()):
            if entry.error is not None:
                if not self.bad(entry):
                    self.stopped = True
                    return EXIT_DATA
                continue
            self.sink.write(outputs)
            counts["out"] += len(outputs)
            self.progress.update(counts["in"], counts["out"])
            check_interrupted()
        check_interrupted()
        if self.stage.whole:
            self.sink.write_bytes(self.stage.finish(counts["in"]))
            self.sink.commit()
        return EXIT_DATA if counts["bad"] else EXIT_OK

    def interrupted(self, e):
        """Say what an interruption left behind; the exit status."""
        signum = getattr(e, "signum", signal.SIGINT)
        forget_interrupted()  # told here, once: the command boundary must not report it again
        self.progress.close()
        to_file = self.opts.output not in (None, "-")
        n = self.counts["in"]
        if self.stage.whole:
            self.note(f"interrupted after {n} lines; {'nothing' if to_file else 'no result'} written "
                      f"({self.stage.what} is all-or-nothing)")
        else:
            self.note(f"interrupted after {n} lines; what was written is complete"
                      + ("; rerun with --resume to finish" if to_file else ""))
        return 128 + signum

    def close(self):
        self.progress.close()
        if not self.sink.to_stdout:
            self.sink.close()
        if self.rejects is not None:
            self.rejects.close()

    def summary(self):
        """The run's notes on stderr, unless -q."""
        counts, opts, stage = self.counts, self.opts, self.stage
        if opts.quiet:
            return
        if counts["skipped"]:
            self.note(f"{plural(counts['skipped'], 'input')} already done in {opts.output}")
        if counts["not_retried"]:
            self.note(f"{plural(counts['not_retried'], 'input')} set aside in {opts.rejects} before, "
                      f"not tried again")
        if counts["rejected"]:
            self.note(f"{plural(counts['rejected'], 'bad line')} set aside in {opts.rejects}")
        if counts["rejected_again"]:
            self.note(f"{plural(counts['rejected_again'], 'bad line')} already in {opts.rejects}, left out again")
        if counts["passed"]:
            self.note(stage.upstream_note(counts["passed"]))
        if counts["bad"]:
            verb = "skipped" if opts.on_error == "skip" else "passed on as error records"
            self.note(f"{plural(counts['bad'], 'bad line')} {verb}")
        for line in stage.summary():
            self.note(line)


def run_stage(stage, opts):
    """Run STAGE over opts.input; return the exit status."""
    if opts.resume and opts.output in (None, "-"):
        raise UsageError("--resume needs -o FILE")
    if opts.rejects == "-":
        raise UsageError("--rejects needs a FILE (stdout carries the output)")
    run = _Run(stage, opts)
    try:
        status = run.loop()
        if run.stopped:
            return status
    except (KeyboardInterrupt, Interrupted) as e:
        return run.interrupted(e)
    finally:
        run.close()
    run.summary()
    return status


def _quiet_broken_pipe():
    # The reader went away (`| head`): point stdout at /dev/null so the final flush cannot fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def guarded(command, verbose, work):
    """The command boundary: run WORK() -> exit status, turning every outcome into one.

    SIGTERM is turned into an exception here, as SIGINT is by Python, so that a command that is not a
    stage (gpv-train, gpv-validate) also unwinds, says "interrupted" and exits 143.
    """
    forget_interrupted()
    try:
        with interruptible():
            status = work()
            check_interrupted()
            sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
        status = EXIT_PIPE
    except UsageError as e:
        if verbose:
            traceback.print_exc()
        note(command, f"error: {e}")
        status = EXIT_USAGE
    except GpvError as e:
        if verbose:
            traceback.print_exc()
        note(command, f"error: {e}")
        status = EXIT_DATA
    except (KeyboardInterrupt, Interrupted) as e:
        note(command, "interrupted")
        status = 128 + getattr(e, "signum", signal.SIGINT)
    except Exception as e:  # a bug, or a library failing in a way we did not foresee
        if verbose:
            traceback.print_exc()
        note(command, f"error: {type(e).__name__}: {e} (rerun with -v for a traceback)")
        status = EXIT_DATA
    sys.exit(status)


def run_command(command, build_stage, opts):
    """Build the stage and run it over the input, behind the command boundary; then close the stage."""

    def work():
        stage = build_stage()
        try:
            return run_stage(stage, opts)
        finally:
            stage.close()

    guarded(command, opts.verbose, work)
