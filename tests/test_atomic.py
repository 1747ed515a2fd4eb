"""gpvtools.streaming.atomic: whole or nothing, one temporary-file name, stale leftovers removed."""

import os
import socket
import subprocess
import sys

import pytest

from gpvtools.streaming import atomic
from gpvtools.streaming.errors import GpvError


def dead_pid():
    """The id of a process that has ended (and whose id no process reuses in this test's time)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def listing(directory):
    return sorted(p.name for p in directory.iterdir())


def test_bytes_and_text_replace_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    path.write_bytes(b"old")
    atomic.write_atomic(path, b"\x00new bytes")
    assert path.read_bytes() == b"\x00new bytes"
    atomic.write_atomic(path, "naïve text\n")
    assert path.read_bytes() == "naïve text\n".encode()
    assert listing(tmp_path) == ["out.json"]


def test_streamed_text_and_bytes(tmp_path):
    path = tmp_path / "out.txt"
    with atomic.AtomicFile(path, "w") as f:
        f.write("a\n")
        assert not path.exists()  # nothing under the final name until the block ends
        f.write("ü\n")
    assert path.read_text(encoding="utf-8") == "a\nü\n"
    with atomic.AtomicFile(path) as f:
        f.write(b"x")
    assert path.read_bytes() == b"x"
    assert listing(tmp_path) == ["out.txt"]


def test_the_temporary_file_is_named_beside_the_target_by_host_and_process(tmp_path):
    path = tmp_path / "agg.jsonl"
    out = atomic.AtomicFile(path)
    try:
        [tmp] = [p for p in tmp_path.iterdir()]
        assert tmp == out.tmp
        prefix = f".agg.jsonl.{socket.gethostname()}.{os.getpid()}."
        assert tmp.name.startswith(prefix) and tmp.name.endswith(".tmp")
    finally:
        out.discard()
    assert listing(tmp_path) == []


def test_a_failure_mid_write_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "report.json"
    path.write_bytes(b"earlier report\n")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic.AtomicFile(path) as f:
            f.write(b"half of a new rep")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"earlier report\n"
    assert listing(tmp_path) == ["report.json"]


def test_a_failure_in_a_path_writer_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"old model")
    with pytest.raises(GpvError, match="could not"):
        with atomic.atomic_path(path) as tmp:
            tmp.write_bytes(b"partial")
            raise GpvError("could not finish")
    assert path.read_bytes() == b"old model"
    assert listing(tmp_path) == ["model.gguf"]
    with atomic.atomic_path(path, perms=0o600) as tmp:
        tmp.write_bytes(b"new model")
    assert path.read_bytes() == b"new model" and (path.stat().st_mode & 0o777) == 0o600
    assert listing(tmp_path) == ["model.gguf"]


def test_a_killed_writer_leaves_the_old_file_intact(tmp_path):
    """A real SIGKILL between writes: the target is untouched and the next write cleans up after it."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"old\n")
    code = ("import os, sys\nfrom gpvtools.streaming.atomic import AtomicFile\n"
            "f = AtomicFile(sys.argv[1])\nf.write(b'partial')\nf.file.flush()\nos.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)])
    assert proc.returncode == -9
    [left] = [p for p in tmp_path.iterdir() if p.name != "out.jsonl"]
    assert left.read_bytes() == b"partial" and path.read_bytes() == b"old\n"
    atomic.write_atomic(path, b"new\n")
    assert listing(tmp_path) == ["out.jsonl"] and path.read_bytes() == b"new\n"


def test_stale_temporaries_of_dead_processes_on_this_host_are_removed_and_no_others(tmp_path):
    path = tmp_path / "a.b.jsonl"
    host = socket.gethostname()
    dead = tmp_path / f".a.b.jsonl.{host}.{dead_pid()}.0a1b2c3d.tmp"
    old_style = tmp_path / f".a.b.jsonl.{host}.{2 ** 22 + 1}.tmp"   # no token (earlier gpvtools): still ours
    running = tmp_path / f".a.b.jsonl.{host}.{os.getppid()}.0a1b2c3d.tmp"      # a live process's write
    mine = tmp_path / f".a.b.jsonl.{host}.{os.getpid()}.0a1b2c3d.tmp"          # another thread of this one
    elsewhere = tmp_path / f".a.b.jsonl.otherhost.{dead_pid()}.0a1b2c3d.tmp"  # cannot tell: keep
    other_file = tmp_path / f".other.jsonl.{host}.{dead_pid()}.0a1b2c3d.tmp"  # not this target's
    for p in (dead, old_style, running, mine, elsewhere, other_file):
        p.write_bytes(b"x")
    assert atomic.remove_stale(path) == 2
    assert listing(tmp_path) == sorted(p.name for p in (running, mine, elsewhere, other_file))
    atomic.write_atomic(path, b"{}\n")
    assert path.read_bytes() == b"{}\n"


def test_private_and_unsynced_writes(tmp_path):
    path = tmp_path / "entry.json"
    atomic.write_atomic(path, b"{}", perms=0o600, fsync=False)
    assert path.read_bytes() == b"{}" and (path.stat().st_mode & 0o777) == 0o600


def test_an_unwritable_directory_is_one_error_naming_the_file(tmp_path):
    path = tmp_path / "missing-dir" / "out.json"
    with pytest.raises(GpvError, match=f"cannot write {path}: No such file or directory"):
        atomic.write_atomic(path, b"x")
