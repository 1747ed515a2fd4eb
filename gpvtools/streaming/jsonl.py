"""JSONL in and out: line framing with bounded memory, record validation, orjson encoding, and Records, the one
reader of a whole JSONL file.

Every JSONL input is read here, by one of two readers with one framing (iter_lines) and one parse
(parse_line): the stage loop (streaming/stage.py), which applies --on-error, --rejects and --resume to each
line, and Records, for a command or library call that reads a file whole (gpv-validate, gpv-report, gpv-train's
JSONL data). Both follow one policy: a blank line is a bad line like any other; an error record from an
upstream stage (a record with ERROR_FIELD) is never taken as data (a stage passes it on, Records leaves it
out and counts it); a bad line is an error naming its line."""

import gzip
import io
import sys

import orjson

from .errors import BadRecord, GpvError

ERROR_FIELD = "_gpv_error"  # what --on-error emit adds to a bad line's record: the error, its command and line
GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024
_SKIP_BLOCK = 1 << 20
# orjson reads 1,024 levels of nesting but writes only 254: a deeper record could be read and never written.
MAX_DEPTH = 254


class TooLong:
    """Marks a line longer than the limit; only its size is kept, never its bytes."""

    __slots__ = ("size",)

    def __init__(self, size):
        self.size = size


def open_input(path):
    """A binary stream for PATH ('-' is stdin); gzip is detected by its magic bytes, not the name."""
    if path == "-":
        raw = sys.stdin.buffer
        if not hasattr(raw, "peek"):
            raw = io.BufferedReader(raw)
    else:
        try:
            raw = open(path, "rb")
        except OSError as e:
            raise GpvError(f"cannot read {path}: {e.strerror}") from None
    if raw.peek(2)[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return raw


def iter_lines(stream, max_bytes=DEFAULT_MAX_LINE_BYTES):
    """Yield (line number, bytes without the newline) or (line number, TooLong).

    A line over `max_bytes` is skipped block by block, so a 50 MB line costs 1 MB of memory.
    """
    lineno = 0
    while True:
        try:
            line = stream.readline(max_bytes + 1)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise GpvError(f"line {lineno + 1}: cannot read input: {e}") from None
        if not line:
            return
        lineno += 1
        if line.endswith(b"\n"):
            line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
            yield lineno, line
            continue
        if len(line) <= max_bytes:  # last line without a newline
            yield lineno, line
            return
        size = len(line)
        while True:
            block = stream.readline(_SKIP_BLOCK)
            size += len(block)
            if not block or block.endswith(b"\n"):
                break
        yield lineno, TooLong(size - (1 if block.endswith(b"\n") else 0))


def json_kind(value):
    """How an error message names the JSON type of VALUE: "a string", "a number", "an array", "an object",
    "null", "true" or "false"."""
    if isinstance(value, bool) or value is None:
        return orjson.dumps(value).decode()
    return {str: "a string", int: "a number", float: "a number", list: "an array", dict: "an object"}.get(
        type(value), type(value).__name__)


def parse_line(raw, lineno, max_bytes=DEFAULT_MAX_LINE_BYTES):
    """One line's bytes to a dict, or BadRecord naming the line and what is wrong."""
    if isinstance(raw, TooLong):
        raise BadRecord(f"line is {raw.size} bytes, over the limit of {max_bytes} (--max-line-bytes)", lineno)
    if not raw.strip():
        raise BadRecord("empty line", lineno)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as u:
            raise BadRecord(f"invalid UTF-8 at byte {u.start + 1}", lineno) from None
        raise BadRecord(f"invalid JSON: {e.msg} at column {e.colno}", lineno) from None
    if not isinstance(value, dict):
        raise BadRecord(f"expected a JSON object, got {json_kind(value)}", lineno)
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _too_deep(value):  # counting brackets is cheap
        raise BadRecord(f"JSON nested deeper than {MAX_DEPTH} levels", lineno)
    return value


def _too_deep(value):
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def require_text(record, field, lineno):
    """The string in `field`, or BadRecord saying it is missing or of the wrong type."""
    if field not in record:
        raise BadRecord(f"field '{field}' is missing", lineno, record)
    value = record[field]
    if not isinstance(value, str):
        raise BadRecord(f"field '{field}' must be a string, got {json_kind(value)}", lineno, record)
    return value


def dumps(record):
    """One record as a JSONL line (bytes, newline included)."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


class Records:
    """(line number, record) of the JSONL file PATH ('-': standard input; gzip is read as such), for a reader
    that takes a file whole. Error records from upstream are left out and counted in `upstream_errors`; a
    bad line raises BadRecord naming the line (the caller names the file: `path`). Iterable once per open."""

    def __init__(self, path, max_line_bytes=DEFAULT_MAX_LINE_BYTES):
        self.path, self.max_line_bytes = path, max_line_bytes
        self.upstream_errors = 0

    @property
    def name(self):
        """The input as messages name it."""
        return "standard input" if self.path == "-" else str(self.path)

    def __iter__(self):
        stream = open_input(self.path)
        try:
            for line, raw in iter_lines(stream, self.max_line_bytes):
                record = parse_line(raw, line, self.max_line_bytes)
                if ERROR_FIELD in record:
                    self.upstream_errors += 1
                    continue
                yield line, record
        finally:
            if self.path != "-":
                stream.close()
