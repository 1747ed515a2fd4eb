"""Resuming onto an output file: keep complete work, drop what a kill left half-written.

Every output record names its source (the input record it came from) and how many records
that source produced. A source is done when all of its records stand in the file. What is not
done — a torn last line, a source with records missing, error records — is removed, by a
truncation when it all lies at the end (the usual case after a kill), else by an atomic rewrite.
"""

import os
from dataclasses import dataclass

import orjson

from .atomic import AtomicFile
from .errors import GpvError
from .jsonl import ERROR_FIELD


@dataclass
class ResumeState:
    done: set
    kept: int = 0
    removed: int = 0


def _lines(path):
    """(offset, line bytes with newline) for each line of PATH."""
    offset = 0
    with open(path, "rb") as f:
        for line in f:
            yield offset, line
            offset += len(line)


def _parse(path, lineno, line, is_last):
    """The record, or None for a torn last line."""
    if not line.endswith(b"\n"):
        return None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        if is_last:
            return None
        raise GpvError(f"{path}: line {lineno} is not valid JSON; refusing to resume onto a damaged file") from None
    if not isinstance(record, dict):
        raise GpvError(f"{path}: line {lineno} is not a JSON object; refusing to resume onto it")
    return record


def prepare(path, source_key, group_size):
    """Repair PATH in place and return which sources are done.

    source_key(record) -> str and group_size(record) -> int come from the stage.
    """
    if not os.path.exists(path):
        return ResumeState(done=set())
    if not os.path.isfile(path):
        raise GpvError(f"cannot resume onto {path}: it is not a regular file")
    size = os.path.getsize(path)
    counts, expected = {}, {}
    lineno = 0
    for lineno, (offset, line) in enumerate(_lines(path), 1):
        record = _parse(path, lineno, line, offset + len(line) == size)
        if record is None or ERROR_FIELD in record:
            continue
        try:
            key = source_key(record)
            n = group_size(record)
        except (KeyError, TypeError, ValueError):
            raise GpvError(
                f"{path}: line {lineno} lacks the fields that name its source; was it written by this command?"
            ) from None
        counts[key] = counts.get(key, 0) + 1
        expected[key] = n
    done = {key for key, count in counts.items() if count == expected[key]}

    def keep(record):
        return record is not None and ERROR_FIELD not in record and source_key(record) in done

    # Second pass: find the first line to drop and whether anything kept follows it.
    first_drop, kept_after_drop, kept, removed = None, False, 0, 0
    for lineno, (offset, line) in enumerate(_lines(path), 1):
        if keep(_parse(path, lineno, line, offset + len(line) == size)):
            kept += 1
            kept_after_drop = kept_after_drop or first_drop is not None
        else:
            removed += 1
            first_drop = offset if first_drop is None else first_drop
    if first_drop is not None and not kept_after_drop:
        with open(path, "r+b") as f:
            f.truncate(first_drop)
            os.fsync(f.fileno())
    elif first_drop is not None:
        with AtomicFile(path) as out:
            for lineno, (offset, line) in enumerate(_lines(path), 1):
                if keep(_parse(path, lineno, line, offset + len(line) == size)):
                    out.write(line)
    return ResumeState(done=done, kept=kept, removed=removed)
