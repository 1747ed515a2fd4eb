"""Bad input records set aside in a file of their own (--rejects FILE), each once, with its error.

An unattended run cannot stop for good on one record that fails the same way every time, nor try it
again every night. A stage given --rejects appends each bad input, with what went wrong, to FILE and
goes on; with --resume an input already set aside there (by the same command) counts as done, so it
is not tried again until its line is removed from FILE (gpv-cron --readmit does that).

A line of FILE is the input record with the error beside it, as --on-error emit writes it, plus the
key the stage knows the input by and the time:

    {...the record's fields..., "_gpv_error": {"command", "line", "key", "error", "time"}}

An input line that is no record (invalid JSON or UTF-8) keeps its text in "raw" and is known by the
SHA-256 of its bytes; one over --max-line-bytes (whose bytes are never kept) by its line number, as a
record without an id is.
"""

import hashlib
import os
import time

from .atomic import AtomicFile, write_all
from .errors import BadRecord, GpvError
from .jsonl import ERROR_FIELD, TooLong, dumps, iter_lines, parse_line

UNBOUNDED = 1 << 62


def line_key(raw, line):
    """The key of an input line that is no usable record: its bytes' digest (its line number when too long)."""
    if isinstance(raw, TooLong):
        return str(line)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def read(path):
    """The records set aside in PATH (a missing file holds none). This file is the stages' own state, not
    input: a line that is no set-aside record (torn by a kill) is passed over, not an error."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return []
    except OSError as e:
        raise GpvError(f"cannot read {path}: {e.strerror}") from None
    out = []
    with f:
        for line, raw in iter_lines(f, UNBOUNDED):  # a set-aside record holds its input line, of any length
            try:
                record = parse_line(raw, line, UNBOUNDED)
            except BadRecord:
                continue
            if isinstance(record.get(ERROR_FIELD), dict):
                out.append(record)
    return out


def keys(records, command):
    """The keys of the inputs COMMAND set aside."""
    return {str(r[ERROR_FIELD].get("key")) for r in records if r[ERROR_FIELD].get("command") == command}


class Rejects:
    """FILE opened for one stage's bad inputs: `seen` holds the keys its command set aside already."""

    def __init__(self, path, command):
        if os.path.isdir(path):
            raise GpvError(f"cannot write rejects to {path}: it is a directory")
        self.path, self.command = path, command
        self.seen = keys(read(path), command)
        self.f = None

    def add(self, entry, raw=None):
        """Set ENTRY (an input line with its error) aside; False when its key is in the file already."""
        if entry.key in self.seen:
            return False
        error = entry.error
        info = {"command": self.command, "line": entry.line, "key": entry.key, "error": error.message,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        record = entry.record if entry.record is not None else error.record
        if record is None and isinstance(raw, bytes):
            info["raw"] = raw.decode("utf-8", "backslashreplace")
        line = dumps({**(record or {}), ERROR_FIELD: info})
        if self.f is None:
            try:
                self.f = open(self.path, "ab")
            except OSError as e:
                raise GpvError(f"cannot write {self.path}: {e.strerror}") from None
            # A line a killed run left without its newline must not swallow this one.
            if self.f.tell() and not _ends_with_newline(self.path):
                line = b"\n" + line
        write_all(self.f, line)
        self.f.flush()
        self.seen.add(entry.key)
        return True

    def close(self):
        if self.f is not None:
            self.f.close()


def _ends_with_newline(path):
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def readmit(path, wanted):
    """Remove from PATH every record set aside whose key or doc_id is in WANTED; return those removed."""
    records = read(path)
    gone = [r for r in records if str(r[ERROR_FIELD].get("key")) in wanted or r.get("doc_id") in wanted]
    if gone:
        with AtomicFile(path) as out:
            for r in records:
                if not any(r is g for g in gone):
                    out.write(dumps(r))
    return gone
