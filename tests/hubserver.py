"""A stand-in for the Hugging Face Hub on 127.0.0.1, for the tests of hub references (runtimes/hub.py).

It is no copy of the Hub: it serves the few routes huggingface_hub reads, with the headers the Hub sends,
so that the real huggingface_hub client runs against it through HF_ENDPOINT:

- GET /api/models/OWNER/REPO[/revision/REV]: {"id", "sha", "siblings": [{"rfilename", "size", "blobId",
  "lfs": {"sha256", "size", "pointerSize"}}]}; 404 with X-Error-Code RepoNotFound or RevisionNotFound.
- HEAD/GET /OWNER/REPO/resolve/REV/PATH: X-Repo-Commit and ETag; an LFS file (.gguf, .safetensors) answers
  302 to /cdn/SHA256 on a second port (another host, as the Hub's CDN is) with X-Linked-Etag and
  X-Linked-Size; 404 with X-Error-Code EntryNotFound.
- GET /cdn/SHA256 with Range (206, Content-Range), on the second port only; a request carrying an
  Authorization header is refused (403), as a signed CDN URL must not be sent the user's token.

Faults, set per test: `cut[sha256] = n` sends the first n bytes of a file and drops the connection, then
answers 503 to any later request for it until cleared; `corrupt.add(sha256)` flips one byte of what it
sends. It counts what it served: `served[sha256]` bytes, `ranges[sha256]` the first byte of each GET,
`api_calls`, and `requests`, every request of any kind on either port.
"""

import hashlib
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")


@dataclass
class HubFile:
    path: Path  # where the bytes are
    size: int
    sha256: str
    blob_id: str  # git's: SHA-1 of b"blob SIZE\0" + bytes
    lfs: bool


def describe_file(path, lfs):
    h, g = hashlib.sha256(), hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            g.update(block)
    return HubFile(Path(path), os.path.getsize(path), h.hexdigest(), g.hexdigest(), lfs)


@dataclass
class Repo:
    commit: str
    files: dict  # name in the repository -> HubFile
    refs: dict = field(default_factory=dict)  # branch -> commit


class StandInHub:
    def __init__(self):
        self.repos = {}
        self.blobs = {}  # sha256 -> HubFile
        self.cut, self.corrupt = {}, set()
        self.served, self.ranges = {}, {}
        self.api_calls = self.requests = 0
        self.lock = threading.Lock()
        self.servers = []
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"hub": self, "role": role}))
            server.daemon_threads = True
            self.servers.append(server)
        self.url, self.cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in self.servers)
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in self.servers]

    def start(self):
        for thread in self.threads:
            thread.start()
        return self

    def stop(self):
        for server in self.servers:
            server.shutdown()
            server.server_close()

    def add_repo(self, repo_id, files):
        """Repository REPO_ID at a commit of its own holding FILES: {name in the repo: local path}."""
        described = {name: describe_file(path, name.endswith(LFS_SUFFIXES)) for name, path in files.items()}
        listing = "".join(f"{n}\0{f.sha256}\n" for n, f in sorted(described.items()))
        commit = hashlib.sha1(f"{repo_id}\0{listing}".encode()).hexdigest()
        self.repos[repo_id] = Repo(commit, described, {"main": commit})
        for f in described.values():
            self.blobs[f.sha256] = f
        return commit

    def reset_counts(self):
        with self.lock:
            self.served.clear()
            self.ranges.clear()
            self.api_calls = self.requests = 0


class _Handler(BaseHTTPRequestHandler):
    hub = None  # the StandInHub, set on a subclass per server
    role = "hub"  # or "cdn": the port that serves the LFS files' bytes
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._route(head=True)

    def do_GET(self):
        self._route(head=False)

    def _error(self, status, code=None):
        body = b'{"error": "stand-in hub: not found"}'
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, head):
        with self.hub.lock:
            self.hub.requests += 1
        path = self.path.split("?")[0]
        parts = [unquote(p) for p in path.split("/") if p]
        if self.role == "cdn":
            if len(parts) != 2 or parts[0] != "cdn":
                return self._error(404)
            if self.headers.get("Authorization"):
                return self._error(403)
            return self._cdn(parts[1], head)
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._api(parts[2] + "/" + parts[3], parts[4:])
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(parts[0] + "/" + parts[1], parts[3], "/".join(parts[4:]), head)
        return self._error(404)

    def _repo_at(self, repo_id, revision):
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return None, "RepoNotFound"
        commit = repo.refs.get(revision, revision)
        if commit != repo.commit:
            return None, "RevisionNotFound"
        return repo, None

    def _api(self, repo_id, rest):
        import json

        with self.hub.lock:
            self.hub.api_calls += 1
        revision = rest[1] if len(rest) >= 2 and rest[0] == "revision" else "main"
        repo, problem = self._repo_at(repo_id, revision)
        if repo is None:
            return self._error(404, problem)
        siblings = []
        for name, f in sorted(repo.files.items()):
            entry = {"rfilename": name, "size": f.size, "blobId": f.blob_id}
            if f.lfs:
                entry["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
            siblings.append(entry)
        body = json.dumps({"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False,
                           "siblings": siblings}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _resolve(self, repo_id, revision, name, head):
        repo, problem = self._repo_at(repo_id, revision)
        if repo is None:
            return self._error(404, problem)
        f = repo.files.get(name)
        if f is None:
            return self._error(404, "EntryNotFound")
        if f.lfs:  # the Hub sends LFS files from its CDN
            self.send_response(302)
            self.send_header("Location", f"{self.hub.cdn_url}/cdn/{f.sha256}")
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("X-Linked-Etag", f'"{f.sha256}"')
            self.send_header("X-Linked-Size", str(f.size))
            self.send_header("ETag", f'"{f.blob_id}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(200)
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("ETag", f'"{f.blob_id}"')
        self.send_header("Content-Length", str(f.size))
        self.end_headers()
        if not head:
            self.wfile.write(f.path.read_bytes())
        return None

    def _cdn(self, sha, head):
        f = self.hub.blobs.get(sha)
        if f is None:
            return self._error(404)
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[len("bytes="):].split("-")[0])
        with self.hub.lock:
            cut = self.hub.cut.get(sha)
            if cut == "done":
                refused = True
            else:
                refused = False
                if not head:
                    self.hub.ranges.setdefault(sha, []).append(start)
        if refused:
            return self._error(503)
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{f.size - 1}/{f.size}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{sha}"')
        self.send_header("Content-Length", str(f.size - start))
        self.end_headers()
        if head:
            return None
        end = f.size if cut is None else min(f.size, start + cut)
        with open(f.path, "rb") as src:
            src.seek(start)
            sent = start
            while sent < end:
                block = bytearray(src.read(min(1 << 20, end - sent)))
                if sha in self.hub.corrupt and sent == start:
                    block[len(block) // 2] ^= 0xFF
                try:
                    self.wfile.write(block)
                except OSError:
                    break
                sent += len(block)
                with self.hub.lock:
                    self.hub.served[sha] = self.hub.served.get(sha, 0) + len(block)
        if cut is not None:
            with self.hub.lock:
                self.hub.cut[sha] = "done"
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # the body stops short of its Content-Length
        return None
