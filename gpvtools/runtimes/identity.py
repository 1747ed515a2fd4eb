"""What a model or adapter is, by its bytes: SHA-256 digests of its files, each computed once.

A file's digest is cached in $GPV_CACHE_DIR/digests.json under its resolved path, keyed by its size and
modification time, so a 5 GB GGUF is read once, not on every run; a file that changes in place (another
size or mtime) is read again. Two files with the same name and size but different bytes get different
digests. The cache is a convenience: where it cannot be written, digests are computed each run.
"""

import hashlib
import os
from pathlib import Path

import orjson

from ..streaming.atomic import write_atomic
from .cache import default_dir

CACHE_NAME = "digests.json"
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
        h = hashlib.sha256()
        with open(source, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
        digest = h.hexdigest()
        entries = _load()  # another run may have added entries meanwhile
        entries[str(source)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        _save(entries)
    _memo[key] = digest
    return digest


def _files_of(directory):
    """Every regular file under DIRECTORY, as sorted relative paths, leaving out hidden ones (.git, .cache)."""
    root = Path(directory)
    found = []
    for base, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(base, f).relative_to(root) for f in files if not f.startswith("."))
    return sorted(found, key=lambda p: p.as_posix())


def path_identity(path):
    """{"file", "bytes", "sha256"} of a file, or {"dir", "files", "bytes", "sha256"} of a directory, whose
    digest is that of the list of its files' relative paths and digests."""
    p = Path(path)
    if p.is_file():
        return {"file": p.name, "bytes": p.stat().st_size, "sha256": file_digest(p)}
    files = _files_of(p)
    listing = "".join(f"{f.as_posix()}\0{file_digest(p / f)}\n" for f in files)
    return {"dir": p.resolve().name, "files": len(files), "bytes": sum((p / f).stat().st_size for f in files),
            "sha256": hashlib.sha256(listing.encode()).hexdigest()}


def hub_identity(repo_id):
    """{"hub_id", "revision"}: the revision is the commit of the copy in the Hugging Face cache, or null
    when there is none to read (the model is fetched at load time, at the hub's current revision)."""
    revision = None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
        if isinstance(found, str):
            revision = Path(found).parent.name  # .../snapshots/<commit>/config.json
    except Exception:  # no huggingface_hub, or a cache it cannot read: the revision stays unknown
        pass
    return {"hub_id": repo_id, "revision": revision}


def digest_of(obj, n=16):
    """A short stable digest of a JSON-able object (keys sorted)."""
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:n]
