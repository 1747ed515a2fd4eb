"""What a model or adapter is, by its bytes: SHA-256 digests of its files, each computed once.

A file's digest is cached in $GPV_CACHE_DIR/digests.json under its resolved path, keyed by its size and
modification time, so a 5 GB GGUF is read once, not on every run; a file that changes in place (another
size or mtime) is read again. Two files with the same name and size but different bytes get different
digests. The cache is a convenience: where it cannot be written, digests are computed each run.
"""

import hashlib
import os
import re
from pathlib import Path

import orjson

from ..streaming.atomic import write_atomic
from .cache import default_dir

CACHE_NAME = "digests.json"
SPLIT = re.compile(r"(?P<stem>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf", re.IGNORECASE)
CHUNK = 1 << 20
_memo = {}  # this process's digests: (path, size, mtime_ns) -> hex


def _cache_path():
    return default_dir() / CACHE_NAME


def _load():
    try:
        data = orjson.loads(_cache_path().read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(entries):
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Two runs saving at once: the last rename wins and the other's new entry is computed again next time.
        write_atomic(path, orjson.dumps(entries, option=orjson.OPT_SORT_KEYS), perms=0o600, fsync=False)
    except OSError:
        pass


def sha256_file(path):
    """The SHA-256 (hex) of the bytes of the file at PATH, read now."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def file_digest(path):
    """The SHA-256 (hex) of the file at PATH, from the cache when its size and mtime are unchanged."""
    source = Path(path).resolve()
    stat = source.stat()
    key = (str(source), stat.st_size, stat.st_mtime_ns)
    if key in _memo:
        return _memo[key]
    entries = _load()
    entry = entries.get(str(source))
    if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns \
            and isinstance(entry.get("sha256"), str):
        digest = entry["sha256"]
    else:
        digest = sha256_file(source)
        _record(source, stat, digest)
    _memo[key] = digest
    return digest


def _record(source, stat, digest):
    """Keep DIGEST for the file SOURCE as STAT found it, in the cache file."""
    entries = _load()  # another run may have added entries meanwhile
    entries[str(source)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    _save(entries)


def remember_digest(path, digest):
    """Record DIGEST as the SHA-256 of the file at PATH, computed while it was written (a download)."""
    source = Path(path).resolve()
    stat = source.stat()
    _memo[str(source), stat.st_size, stat.st_mtime_ns] = digest
    _record(source, stat, digest)


def split_parts(path):
    """The parts of the split GGUF whose first part is PATH (NAME-00001-of-0000N.gguf), all present; else
    [PATH]."""
    p = Path(path)
    m = SPLIT.fullmatch(p.name)
    if not m or int(m["part"]) != 1:
        return [p]
    count = int(m["count"])
    parts = [p.with_name(f"{m['stem']}-{i:05d}-of-{m['count']}.gguf") for i in range(1, count + 1)]
    return parts if all(q.is_file() for q in parts) else [p]


def listing_identity(name, files, *, directory):
    """The identity of several files as one: FILES is [(relative path, bytes, SHA-256)]; the digest is that of
    the list of their paths and digests. DIRECTORY: a folder ("dir", "files"), else a split GGUF ("file",
    "parts")."""
    listing = "".join(f"{rel}\0{digest}\n" for rel, _, digest in files)
    head = {"dir": name, "files": len(files)} if directory else {"file": name, "parts": len(files)}
    return {**head, "bytes": sum(size for _, size, _ in files), "sha256": hashlib.sha256(listing.encode()).hexdigest()}


def _files_of(directory):
    """Every regular file under DIRECTORY, as sorted relative paths, leaving out hidden ones (.git, .cache)."""
    root = Path(directory)
    found = []
    for base, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(base, f).relative_to(root) for f in files if not f.startswith("."))
    return sorted(found, key=lambda p: p.as_posix())


def path_identity(path):
    """{"file", "bytes", "sha256"} of a file, {"file", "parts", "bytes", "sha256"} of a split GGUF (named by
    its first part), or {"dir", "files", "bytes", "sha256"} of a directory, whose digest is that of the list of
    its files' relative paths and digests."""
    p = Path(path)
    if p.is_file():
        parts = split_parts(p)
        if len(parts) == 1:
            return {"file": p.name, "bytes": p.stat().st_size, "sha256": file_digest(p)}
        return listing_identity(p.name, [(q.name, q.stat().st_size, file_digest(q)) for q in parts], directory=False)
    files = _files_of(p)
    return listing_identity(p.resolve().name, [(f.as_posix(), (p / f).stat().st_size, file_digest(p / f))
                                               for f in files], directory=True)


def digest_of(obj, n=16):
    """A short stable digest of a JSON-able object (keys sorted)."""
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:n]
