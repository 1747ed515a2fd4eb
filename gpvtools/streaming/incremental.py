"""One incremental run of the pipeline over a growing corpus (gpv-cron): new documents only, running totals.

Only documents that no earlier run finished are chunked, parsed and scored: each stage resumes onto its
own file in the state directory. Their aggregates are merged into the running totals (gpv-aggregate
--merge), so the profiles equal a run over all input from scratch. A record that fails, at any stage, is
set aside once in DIR/rejected.jsonl (the stages' --rejects) and holds nothing else back. An exclusive
flock on DIR/lock keeps two runs apart.

The stages run as `python -m gpvtools.commands.STAGE` with this interpreter, so the PATH cron gives
does not matter; they inherit the lock, so it is held as long as any of them runs.
"""

import fcntl
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import rejects as rejects_mod
from .errors import GpvError, UsageError
from .messages import note, plural

COMMAND = "gpv-cron"
EXIT_OK, EXIT_DATA, EXIT_LOCKED = 0, 1, 75
# What the run sets on every stage itself; a stage argument that sets one would break the state directory.
OWN_OPTIONS = ("-o", "--output", "--resume", "--rejects")
_BLOCK = 1 << 20


@dataclass
class CronSettings:
    dir: Path
    inputs: list
    by: str = "doc_id"
    chunk: list = field(default_factory=list)      # extra arguments of gpv-chunk, one word each
    parse: list = field(default_factory=list)
    score: list = field(default_factory=list)
    aggregate: list = field(default_factory=list)  # of every gpv-aggregate
    profiles: list = field(default_factory=list)   # of the last gpv-aggregate --merge only
    output: str = None                             # the profiles; default DIR/profiles.jsonl
    wait: bool = False
    readmit: list = field(default_factory=list)    # ids whose records set aside are tried again


class StageFailed(Exception):
    def __init__(self, stage, status):
        super().__init__(stage, status)
        self.stage, self.status = stage, status


def check_stage_arguments(name, words):
    """Refuse the options the run sets itself (-o, --resume, --rejects) among a stage's arguments."""
    for word in words:
        option = word[:2] if word.startswith("-o") else word.split("=", 1)[0]  # -oFILE, --output=FILE
        if option in OWN_OPTIONS:
            raise UsageError(f"--{name}: {option} is set by gpv-cron itself (the stages write into -d DIR)")


def _env():
    """The stages' environment: a checkout's own code when gpv-cron runs from one (bin/gpv-cron)."""
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").exists() and (root / "gpvtools").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    return env


class Runner:
    """Runs the stages, each a child process of this interpreter holding the lock's descriptor too."""

    def __init__(self, lock_fd):
        self.lock_fd, self.env = lock_fd, _env()

    def run(self, stage, args, feed=None, stdin=None):
        """Run gpvtools.commands.STAGE ARGS; FEED: [(path, offset)] written to its stdin one after another, a
        missing last newline added (else STDIN: a file object). Raise StageFailed on a non-zero status."""
        argv = [sys.executable, "-m", f"gpvtools.commands.{stage}", *args]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if feed is not None else (stdin or subprocess.DEVNULL),
                                env=self.env, pass_fds=(self.lock_fd,))
        try:
            if feed is not None:
                try:
                    _write_inputs(proc.stdin, feed)
                    proc.stdin.close()
                except BrokenPipeError:  # the stage ended early: its status says why
                    pass
            status = proc.wait()
        except BaseException:
            # Interrupted (SIGTERM to this process alone): the stage ends too, and says what it finished.
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
            raise
        finally:
            if proc.stdin is not None and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
        if status != 0:
            raise StageFailed(f"gpv-{stage}", 128 - status if status < 0 else status)


def _write_inputs(pipe, feed):
    for path, offset in feed:
        last = b"\n"
        with open(path, "rb") as f:
            f.seek(offset)
            while block := f.read(_BLOCK):
                pipe.write(block)
                last = block[-1:]
        if last != b"\n":  # the next file's first line must not run on from this one's last
            pipe.write(b"\n")


def _lock(path, wait):
    """The lock's descriptor, held; None when another run holds it and WAIT is false."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _totals(directory):
    """(offset, path) of the newest DIR/folded-OFFSET.jsonl, or (0, None)."""
    best = (0, None)
    for path in directory.glob("folded-*.jsonl"):
        n = path.name[len("folded-"):-len(".jsonl")]
        if n.isdigit() and (best[1] is None or int(n) > best[0]):
            best = (int(n), path)
    return best


def _ends_a_record(path, offset, size):
    """Whether OFFSET bytes into PATH (SIZE bytes) end a line."""
    if offset > size:
        return False
    if offset == 0:
        return True
    with open(path, "rb") as f:
        f.seek(offset - 1)
        return f.read(1) == b"\n"


def _count_lines(path, offset):
    n = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while block := f.read(_BLOCK):
            n += block.count(b"\n")
    return n


def _readmit(rejected, wanted):
    """Take the records of WANTED out of REJECTED; whether one of them was set aside by gpv-aggregate."""
    records = rejects_mod.read(rejected)
    for key in wanted:
        if not any(str(r[rejects_mod.ERROR_FIELD].get("key")) == key or r.get("doc_id") == key for r in records):
            raise UsageError(f"--readmit {key}: nothing with that id is set aside in {rejected}")
    gone = rejects_mod.readmit(rejected, set(wanted))
    note(COMMAND, f"--readmit: {plural(len(gone), 'record')} of {', '.join(wanted)} taken back from {rejected}, "
                  f"to be tried again")
    return any(r[rejects_mod.ERROR_FIELD].get("command") == "gpv-aggregate" for r in gone)


def run(s):
    """One run; returns the exit status (75: another run holds the lock)."""
    if not s.inputs:
        raise UsageError("give at least one INPUT file (see --help)")
    for path in s.inputs:
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise UsageError(f"cannot read {path}")
    for name in ("chunk", "parse", "score", "aggregate", "profiles"):
        check_stage_arguments(name, getattr(s, name))
    d = Path(s.dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GpvError(f"cannot make {d}: {e.strerror}") from None
    fd = _lock(d / "lock", s.wait)
    if fd is None:
        note(COMMAND, f"another run holds {d}/lock; nothing done")
        return EXIT_LOCKED
    try:
        return _run_locked(s, d, Runner(fd))
    except StageFailed as e:
        note(COMMAND, f"error: {e.stage} ended with status {e.status}; the profiles were not brought up to date "
                      f"(the next run goes on from what was finished)")
        return e.status
    finally:
        os.close(fd)


def _run_locked(s, d, runner):
    rejected = d / "rejected.jsonl"
    retotal = _readmit(rejected, s.readmit) if s.readmit else False
    before = len(rejects_mod.read(rejected))
    aside = ["--rejects", str(rejected)]

    # 1-3: the stages, each resuming onto its own file: only inputs without complete output are worked on.
    runner.run("chunk", [*s.chunk, "-o", str(d / "chunks.jsonl"), "--resume", *aside],
               feed=[(path, 0) for path in s.inputs])
    runner.run("parse", [*s.parse, str(d / "chunks.jsonl"), "-o", str(d / "perceptions.jsonl"), "--resume", *aside])
    runner.run("score", [*s.score, str(d / "perceptions.jsonl"), "-o", str(d / "scored.jsonl"), "--resume", *aside])

    # 4: the totals. DIR/folded-OFFSET.jsonl holds the aggregates (minimum evidence 1, so they can be pooled) of
    # scored.jsonl's first OFFSET bytes. Records are only ever appended there after a run that got this far (a
    # resume removes only what an unfinished run left, all of it past OFFSET), so the new records are the bytes
    # after OFFSET. The file's name carries OFFSET, so the totals and their extent change in one rename.
    scored = d / "scored.jsonl"
    size = scored.stat().st_size
    offset, totals = _totals(d)
    if totals is not None and not _ends_a_record(scored, offset, size):
        note(COMMAND, f"{scored} no longer ends a record at byte {offset} (was it edited?): totalling it all again")
        offset, totals = 0, None
    if retotal and totals is not None:
        note(COMMAND, f"a record taken back was set aside by gpv-aggregate: totalling {scored} all again")
        offset, totals = 0, None
    new = _count_lines(scored, offset)
    by = ["-q", "--by", s.by]
    if totals is None or new > 0:
        fresh = d / "new-aggregates.jsonl"
        with open(scored, "rb") as f:
            f.seek(offset)
            # Only this aggregate sets records aside: a merge that fails (options changed between runs) stops.
            runner.run("aggregate", [*by, *s.aggregate, *aside, "-o", str(fresh)], stdin=f)
        folded = d / f"folded-{size}.jsonl"
        runner.run("aggregate", [*by, "--merge", *s.aggregate, "-o", str(folded)],
                   feed=[(p, 0) for p in (totals, fresh) if p is not None])
        fresh.unlink()
        for old in d.glob("folded-*.jsonl"):
            if old != folded:
                old.unlink()
        totals = folded

    # 5: the profiles, from the totals, with the final options (a minimum of evidence applies only here).
    output = s.output or str(d / "profiles.jsonl")
    runner.run("aggregate", [*by, "--merge", *s.aggregate, *s.profiles, str(totals), "-o", output])
    note(COMMAND, f"{plural(new, 'new scored record')}; {plural(_count_lines(output, 0), 'line')} of profiles "
                  f"in {output}")

    after = len(rejects_mod.read(rejected))
    if after > before:
        note(COMMAND, f"error: {plural(after - before, 'record')} set aside by this run in {rejected} "
                      f"({after} there in all): fix the input, then --readmit ID")
        return EXIT_DATA
    if after:
        note(COMMAND, f"{plural(after, 'record')} set aside by earlier runs in {rejected}, not tried again "
                      f"(--readmit ID tries one)")
    return EXIT_OK
