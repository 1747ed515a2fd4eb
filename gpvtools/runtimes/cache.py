"""A response cache on disk: one small JSON file per request, written atomically, readable only by its owner.

The key is a hash of what determines the answer (model, messages, parameters), never of credentials,
so a re-run or a resumed run pays nothing for a request it has made before.
"""

import hashlib
import os
from pathlib import Path

import orjson

from ..streaming.atomic import write_atomic


def default_dir():
    """$GPV_CACHE_DIR, else $XDG_CACHE_HOME/gpvtools, else ~/.cache/gpvtools."""
    if os.environ.get("GPV_CACHE_DIR"):
        return Path(os.environ["GPV_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpvtools"


def request_key(payload):
    """A stable hex digest of a JSON-able request description."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


class ResponseCache:
    """get(key) -> dict or None; put(key, dict). Safe across threads and processes (atomic renames)."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, key):
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key):
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None  # a foreign or damaged file: ask again and overwrite it
        return value if isinstance(value, dict) else None

    def put(self, key, value):
        path = self._path(key)
        path.parent.mkdir(exist_ok=True, mode=0o700)
        # No fsync: the rename makes an entry whole or absent for any process killed at any moment;
        # after a power loss a lost entry only means asking again.
        write_atomic(path, orjson.dumps(value), perms=0o600, fsync=False)

    def __len__(self):
        return sum(1 for _ in self.dir.glob("??/*.json"))
