"""Where a stage's output goes: each input's records in one write (Sink), or a whole output at once (WholeSink)."""

import sys

from .atomic import AtomicFile, write_all
from .errors import GpvError
from .jsonl import dumps


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
