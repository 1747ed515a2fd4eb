"""Writing a file whole or not at all: a temporary file beside it, fsync, then one rename into place.

Every writer in gpvtools that replaces a file goes through here, so temporary files have one name,
`.NAME.HOST.PID.TOKEN.tmp` in NAME's directory. The host and process id let a later run tell a
temporary file that a killed run left behind (its process is gone) from one another run is still
writing; each write removes such leftovers of its own target, on its own host only (a shared file
system may hold files of running processes elsewhere).

    write_atomic(path, data)                  # bytes or str, all at once
    with AtomicFile(path) as f: f.write(...)  # streamed; renamed into place when the block ends
    with atomic_path(path) as tmp: ...        # for a library that writes to a path itself
"""

import contextlib
import glob
import io
import os
import secrets
import socket
from pathlib import Path

from .errors import GpvError

SUFFIX = ".tmp"


def _host():
    return socket.gethostname() or "host"


def temp_prefix(path):
    """What every temporary file of PATH made on this host starts with."""
    path = Path(path)
    return f".{path.name}.{_host()}."


def temp_path(path):
    """A fresh temporary path for PATH: same directory, so the rename stays on one file system."""
    path = Path(path)
    return path.with_name(f"{temp_prefix(path)}{os.getpid()}.{secrets.token_hex(4)}{SUFFIX}")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale(path):
    """Remove this host's temporary files of PATH whose process is gone; return how many."""
    path = Path(path)
    prefix = temp_prefix(path)
    removed = 0
    for old in path.parent.glob(f"{glob.escape(prefix)}*{SUFFIX}"):
        pid = old.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                old.unlink()
                removed += 1
    return removed


def _create(tmp, perms):
    # O_EXCL: never write through a file (or link) someone else put there.
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), perms)


def _fsync_dir(directory):
    # The rename itself reaches the disk only when the directory does (POSIX; Windows has no such fd).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_all(f, data):
    """Write all of DATA to binary file F and return its length.

    A buffered write that fails part-way (a full disk, a closed pipe) returns the count written and drops
    the error; the next write raises it. So keep writing until it is all written or an error is raised.
    """
    view = memoryview(data).cast("B")
    total = len(view)
    while view:
        view = view[f.write(view):]
    return total


class _WholeWriter(io.BufferedWriter):
    def write(self, data):
        return write_all(super(), data)


def _cannot(path, e):
    return GpvError(f"cannot write {path}: {e.strerror or e}")


class AtomicFile:
    """A file object for PATH whose contents appear under PATH only on commit().

    mode "wb" (default) or "w" (UTF-8 text). perms are the new file's permission bits before the
    umask (0o666, as open() gives; 0o600 for private files). fsync=False skips the fsyncs where a
    file lost to a power cut costs nothing (a cache entry): the rename still makes it whole or absent.
    As a context manager it commits when the block ends normally and discards on an exception.
    """

    def __init__(self, path, mode="wb", *, perms=0o666, fsync=True, newline=None):
        if mode not in ("w", "wb"):
            raise ValueError(f"AtomicFile mode must be 'w' or 'wb', not {mode!r}")
        self.path, self.fsync = Path(path), fsync
        remove_stale(self.path)
        self.tmp = temp_path(self.path)
        try:
            fd = _create(self.tmp, perms)
        except OSError as e:
            raise _cannot(self.path, e) from None
        self.file = _WholeWriter(io.FileIO(fd, "wb"))
        if mode == "w":
            self.file = io.TextIOWrapper(self.file, encoding="utf-8", newline=newline, write_through=True)

    def write(self, data):
        return self.file.write(data)

    def commit(self):
        """Make the written contents PATH's, in one rename."""
        if self.tmp is None:
            return
        try:
            self.file.flush()
            if self.fsync:
                os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.discard()
            raise _cannot(self.path, e) from None
        self.tmp = None
        if self.fsync:
            _fsync_dir(self.path.parent)

    def discard(self):
        """Drop what was written; PATH stays as it was. Harmless after commit()."""
        if self.tmp is None:
            return
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()
        self.tmp = None

    def __enter__(self):
        return self.file

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.discard()
        return False


def write_atomic(path, data, *, perms=0o666, fsync=True):
    """Replace PATH with DATA (bytes, or str written as UTF-8), whole or not at all."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with AtomicFile(path, "wb", perms=perms, fsync=fsync) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_path(path, *, perms=0o666, fsync=True):
    """Yield a temporary path for a writer that takes a path (a C library); rename it to PATH on success.

    The temporary file exists (empty) when the block starts; the writer may replace or truncate it.
    """
    path = Path(path)
    remove_stale(path)
    tmp = temp_path(path)
    try:
        os.close(_create(tmp, perms))
    except OSError as e:
        raise _cannot(path, e) from None
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if perms != 0o666:  # the writer may have made the file anew, with its own permissions
            os.chmod(tmp, perms)
        os.replace(tmp, path)
    except OSError as e:
        raise _cannot(path, e) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()  # gone after the rename; this removes it after a failure
    if fsync:
        _fsync_dir(path.parent)

