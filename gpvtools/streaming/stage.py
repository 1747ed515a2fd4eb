"""The stage loop every command shares: read, validate, shard, resume, process, write, report.

A command builds a `Stage` (what to do with one record) and calls `run_command`; everything
about streams, errors, signals and exit codes lives here, once.
"""

import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass

from . import rejects as rejects_mod
from . import resume as resume_mod
from .atomic import AtomicFile, write_all
from .errors import BadRecord, GpvError, UsageError
from .jsonl import dumps, iter_lines, open_input, parse_line, require_text
from .shard import parse_shard, shard_from_env, shard_of

ERROR_FIELD = resume_mod.ERROR_FIELD
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


class Interrupted(Exception):
    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_pending = []  # the first SIGINT/SIGTERM of this command, kept in case its exception was swallowed
# Python functions that native code calls back while it computes (llama.cpp's log callback, which
# llama-cpp-python sets at import): an exception raised in one is printed by ctypes ("Exception ignored
# on calling ctypes callback function", with a traceback) and dropped, so a signal that lands there is
# only remembered, and check_interrupted() raises it at the next record.
NATIVE_CALLBACKS = ("llama_cpp/_logger.py",)


def _in_native_callback(frame, depth=4):
    while frame is not None and depth > 0:
        if frame.f_code.co_filename.replace(os.sep, "/").endswith(NATIVE_CALLBACKS):
            return True
        frame, depth = frame.f_back, depth - 1
    return False


def _raise_interrupted(signum, frame):
    if not _pending:
        _pending.append(signum)
    if _in_native_callback(frame):
        return
    raise Interrupted(signum)


def check_interrupted():
    """Raise Interrupted for a signal that came but whose exception never reached us.

    A signal handler raises in whatever Python code runs at that moment; when that is a ctypes callback
    (llama.cpp calls its Python log callback from inside a decode), ctypes prints "Exception ignored"
    and goes on, and without this the command would finish as if no signal had come. Called between
    records and at the command boundary.
    """
    if _pending:
        raise Interrupted(_pending[0])


@contextlib.contextmanager
def interruptible():
    """SIGINT and SIGTERM raise Interrupted in the main thread for the block, and are remembered.

    SIGINT is taken over only where Python's own handler has it (a SIGINT ignored by the parent, as for
    a background job, stays ignored).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_interrupted)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        old[signal.SIGINT] = signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_held():
    """Hold SIGINT and SIGTERM back until the block ends, then deliver the first that came.

    For writes that a library does in native code with Python callbacks (torch.save): an exception
    raised inside one of them comes back as that library's own RuntimeError, not as an interruption,
    so the command would exit 1 with an error instead of 130/143 with "interrupted". Main thread only
    (signal handlers live there); elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came = []
    old = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if came:
            signal.raise_signal(came[0])


class Progress:
    """A one-line counter on stderr, redrawn at most 4 times a second, only on a terminal."""

    def __init__(self, command, enabled):
        self.command, self.enabled, self.last = command, enabled, 0.0

    def update(self, n_in, n_out, force=False):
        now = time.monotonic()
        if self.enabled and (force or now - self.last > 0.25):
            self.last = now
            sys.stderr.write(f"\r{self.command}: {n_in} in, {n_out} out")
            sys.stderr.flush()

    def close(self):
        if self.enabled and self.last:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


class Sink:
    """Writes each input's outputs in one write and flushes, so pipelines stream and kills tear little."""

    def __init__(self, path, append):
        self.to_stdout = path in (None, "-")
        if self.to_stdout:
            self.f = sys.stdout.buffer
        else:
            try:
                self.f = open(path, "ab" if append else "wb")
            except OSError as e:
                raise GpvError(f"cannot write {path}: {e.strerror}") from None

    def write(self, records):
        if records:
            write_all(self.f, b"".join(dumps(r) for r in records))
            self.f.flush()

    def close(self):
        if not self.to_stdout:
            self.f.close()


class WholeSink(Sink):
    """stdout as written, or FILE through a temporary file that commit() renames into place (all or nothing)."""

    def __init__(self, path):
        self.to_stdout = path in (None, "-")
        self.atomic = None if self.to_stdout else AtomicFile(path)
        self.f = sys.stdout.buffer if self.to_stdout else self.atomic.file

    def write_bytes(self, data):
        if data:
            write_all(self.f, data)  # one big write to a closed pipe would drop the error
            self.f.flush()

    def commit(self):
        if self.atomic is not None:
            self.atomic.commit()

    def close(self):
        if self.atomic is not None:
            self.atomic.discard()  # after commit() a no-op; else FILE stays as it was


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


def plural(n, word, words=None):
    return f"{n} {word if n == 1 else words or word + 's'}"


def note(command, message):
    """One line on stderr, "COMMAND: MESSAGE"; what the terminal cannot encode is escaped, not fatal."""
    line = f"{command}: {message}\n"
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr.write(line.encode(encoding, "backslashreplace").decode(encoding, "replace"))
    sys.stderr.flush()


def run_stage(stage, opts):
    """Run STAGE over opts.input; return the exit status."""
    if opts.resume and opts.output in (None, "-"):
        raise UsageError("--resume needs -o FILE")
    if opts.rejects == "-":
        raise UsageError("--rejects needs a FILE (stdout carries the output)")
    shard = parse_shard(opts.shard) if opts.shard else shard_from_env()
    if shard and not opts.shard and not opts.quiet:
        note(stage.command, f"shard {shard[0]}/{shard[1]} from the SLURM array variables")
    done = set()
    if opts.resume and stage.whole:
        if not opts.quiet:
            note(stage.command, f"--resume: {stage.what} is all-or-nothing, so {opts.output} is recomputed "
                                f"from the whole input")
    elif opts.resume:
        state = resume_mod.prepare(opts.output, stage.source_key, stage.group_size)
        done = state.done
        if not opts.quiet and (state.kept or state.removed):
            note(stage.command, f"resuming {opts.output}: {plural(len(done), 'input')} done, "
                                f"{plural(state.kept, 'record')} kept, {state.removed} incomplete removed")
    stream = stage.input_stream()
    if stream is None:
        stream = open_input(opts.input)
        if opts.input == "-" and sys.stdin.isatty() and not opts.quiet:
            note(stage.command, "reading JSONL from standard input (Ctrl-D ends it)")
    rejects = rejects_mod.Rejects(opts.rejects, stage.command) if opts.rejects else None
    # With --resume an input set aside before counts as done (a whole stage redoes all, so it meets it again).
    set_aside = set(rejects.seen) if rejects is not None and opts.resume and not stage.whole else set()
    sink = WholeSink(opts.output) if stage.whole else Sink(opts.output, append=opts.resume)
    progress = Progress(stage.command, sys.stderr.isatty() and not opts.quiet)
    counts = {"in": 0, "out": 0, "bad": 0, "skipped": 0, "passed": 0, "rejected": 0, "not_retried": 0,
              "rejected_again": 0}

    def finished(key):
        """Whether --resume finds KEY's input done (in the output, or set aside in --rejects FILE)."""
        if key in done:
            counts["skipped"] += 1
            return True
        if key in set_aside:
            counts["not_retried"] += 1
            return True
        return False

    def entries():
        for line, raw in iter_lines(stream, opts.max_line_bytes):
            counts["in"] += 1
            entry = Entry(line)
            try:
                entry.record = parse_line(raw, line, opts.max_line_bytes)
                if ERROR_FIELD in entry.record:
                    counts["passed"] += 1
                    if stage.passes_errors:
                        sink.write([entry.record])
                    continue
                entry.key = stage.input_key(entry.record, line)
                shard_id = entry.record.get(DOC_ID_FIELD, entry.key)
                if shard and shard_of(shard_id, shard[1]) != shard[0]:
                    continue
                if finished(entry.key):
                    continue
                stage.validate(entry)
            except BadRecord as e:
                entry.error = e
                if rejects is not None and entry.key is None:  # no record, or no usable id
                    entry.key, entry.raw = rejects_mod.line_key(raw, line), raw
                    if finished(entry.key):
                        continue
            yield entry

    status = EXIT_OK
    try:
        for entry, outputs in stage.map(entries()):
            if entry.error is not None and rejects is not None:
                if rejects.add(entry, entry.raw):
                    counts["rejected"] += 1
                    note(stage.command, f"error: {entry.error} (set aside in {opts.rejects})")
                else:
                    counts["rejected_again"] += 1
                continue
            if entry.error is not None:
                counts["bad"] += 1
                if opts.on_error == "emit":
                    sink.write([error_record(stage, entry)])
                note(stage.command, f"error: {entry.error}")
                if opts.on_error == "fail":
                    return EXIT_DATA
                continue
            sink.write(outputs)
            counts["out"] += len(outputs)
            progress.update(counts["in"], counts["out"])
            check_interrupted()
        check_interrupted()
        if stage.whole:
            sink.write_bytes(stage.finish(counts["in"]))
            sink.commit()
        if counts["bad"]:
            status = EXIT_DATA
    except (KeyboardInterrupt, Interrupted) as e:
        signum = getattr(e, "signum", signal.SIGINT)
        _pending.clear()  # told here, once: the command boundary must not report it again
        progress.close()
        to_file = opts.output not in (None, "-")
        if stage.whole:
            note(stage.command, f"interrupted after {counts['in']} lines; "
                                f"{'nothing' if to_file else 'no result'} written ({stage.what} is all-or-nothing)")
        else:
            note(stage.command, f"interrupted after {counts['in']} lines; what was written is complete"
                                + ("; rerun with --resume to finish" if to_file else ""))
        return 128 + signum
    finally:
        progress.close()
        if not sink.to_stdout:
            sink.close()
        if rejects is not None:
            rejects.close()
    if not opts.quiet:
        if counts["skipped"]:
            note(stage.command, f"{plural(counts['skipped'], 'input')} already done in {opts.output}")
        if counts["not_retried"]:
            note(stage.command, f"{plural(counts['not_retried'], 'input')} set aside in {opts.rejects} before, "
                                f"not tried again")
        if counts["rejected"]:
            note(stage.command, f"{plural(counts['rejected'], 'bad line')} set aside in {opts.rejects}")
        if counts["rejected_again"]:
            note(stage.command, f"{plural(counts['rejected_again'], 'bad line')} already in {opts.rejects}, "
                                f"left out again")
        if counts["passed"]:
            note(stage.command, stage.upstream_note(counts["passed"]))
        if counts["bad"]:
            verb = "skipped" if opts.on_error == "skip" else "passed on as error records"
            note(stage.command, f"{plural(counts['bad'], 'bad line')} {verb}")
        for line in stage.summary():
            note(stage.command, line)
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
    _pending.clear()
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
