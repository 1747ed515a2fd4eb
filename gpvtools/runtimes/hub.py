"""Models named on the Hugging Face Hub, the way llama.cpp and Ollama take them.

    hf:OWNER/REPO:QUANT[@REVISION]   the repository's GGUF of that quantisation (split GGUFs whole)
    hf:OWNER/REPO/FILE[@REVISION]    that file, exactly
    hf:OWNER/REPO[@REVISION]         its only GGUF (a GGUF option), or the model directory (transformers)

(`hf://`, `hf.co/` and `huggingface.co/` are taken for `hf:`; the transformers backend also takes a bare
OWNER/NAME that is no local path.) Files go into huggingface_hub's own cache ($HF_HUB_CACHE), so
transformers and the `hf` CLI see them, and each is checked against the hub's hash: an LFS file's SHA-256,
a small file's git blob id. A download cut short is kept beside its blob and resumed by the next run
(huggingface_hub itself resumes only within one call). With HF_HUB_OFFLINE=1, or when the hub cannot be
reached, a reference resolves from the cache without a network call.
"""

import hashlib
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..streaming.errors import GpvError, MissingDependency, UsageError
from .identity import SPLIT, file_digest, listing_identity, remember_digest, sha256_file

PREFIXES = ("huggingface.co/", "hf.co/", "hf://", "hf:")
_NAME = r"(?![^/:@]*(?:--|\.\.))[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"  # no "--" or "..", ≤ 96
_REFERENCE = re.compile(rf"(?P<repo>{_NAME}/{_NAME})(?:/(?P<file>[^@:]+))?(?::(?P<quant>[A-Za-z0-9._-]+))?"
                        r"(?:@(?P<revision>[^@\s]+))?")
_BARE = re.compile(rf"(?P<repo>{_NAME}/{_NAME})(?:@(?P<revision>[^@\s]+))?")
_COMMIT = re.compile(r"[0-9a-f]{40}")
# Weights in formats neither backend loads from a model directory: left out of its download.
_OTHER_WEIGHTS = (".gguf", ".pth", ".pt", ".ckpt", ".h5", ".msgpack", ".onnx", ".ot", ".tflite", ".pkl", ".npz")


@dataclass(frozen=True)
class Reference:
    text: str  # as the user gave it
    repo: str
    file: str | None = None
    quant: str | None = None
    revision: str | None = None


def parse(spec, *, bare=False):
    """The Reference SPEC names, or None when it names none. BARE: take OWNER/NAME[@REV] without a prefix
    (the transformers backend's hub ids; the caller has checked no such path exists)."""
    spec = str(spec)
    body = next((spec[len(p):] for p in PREFIXES if spec.lower().startswith(p)), None)
    if body is None:
        m = _BARE.fullmatch(spec) if bare else None
        return Reference(spec, m["repo"], revision=m["revision"]) if m else None
    body = body.lstrip("/")
    m = _REFERENCE.fullmatch(body)
    if not m:
        raise UsageError(f"{spec}: not a hub reference; expected hf:OWNER/REPO:QUANT, hf:OWNER/REPO/FILE or "
                         "hf:OWNER/REPO, each with an optional @REVISION")
    if m["file"] and m["quant"]:
        raise UsageError(f"{spec}: give :QUANT or /FILE, not both")
    return Reference(spec, m["repo"], m["file"], m["quant"], m["revision"])


def is_reference(spec):
    return spec is not None and str(spec).lower().startswith(PREFIXES)


def is_hub_model(spec, *, bare=False):
    """Whether SPEC names a model on the hub: a reference, or (BARE) an OWNER/NAME that is no local path."""
    return is_reference(spec) or (bare and not Path(str(spec)).exists() and parse(spec, bare=True) is not None)


@dataclass
class Entry:
    """A file of a repository at one commit: its path in the repository, size and the hub's hashes."""

    name: str
    size: int | None = None
    sha256: str | None = None  # an LFS file's
    blob_id: str | None = None  # git's blob id (SHA-1 of "blob SIZE\\0" + bytes), for a file not in LFS


@dataclass
class Resolved:
    """What a reference names: the repository's commit and the chosen files, local once fetched."""

    reference: Reference
    commit: str
    files: list  # [Entry], a split GGUF's parts in order
    directory: bool  # a model directory (transformers) rather than one file or one split GGUF
    snapshot: Path = None  # the cache's snapshot folder of the commit
    digests: dict = field(default_factory=dict)  # name -> SHA-256 (of the bytes where local, else the hub's)
    checked: set = field(default_factory=set)  # names whose bytes were checked against the hub's hash

    @property
    def name(self):
        """What it is shown by: the file's name, or the repository's for a folder (as a clone is named)."""
        return self.reference.repo.split("/")[1] if self.directory else Path(self.files[0].name).name

    @property
    def path(self):
        """The local path a loader takes: the snapshot folder, or the (first) file."""
        return str(self.snapshot if self.directory else self.snapshot / self.files[0].name)

    def identity(self):
        """The card's content identity, as identity.path_identity gives it for the same local file or folder
        (a folder is named by the repository's name)."""
        if self.directory:
            return listing_identity(self.name, self._listing(), directory=True)
        if len(self.files) == 1:
            only = self.files[0]
            return {"file": Path(only.name).name, "bytes": only.size, "sha256": self.digests[only.name]}
        return listing_identity(Path(self.files[0].name).name, self._listing(), directory=False)

    def _listing(self):
        return [(Path(e.name).name if not self.directory else e.name, e.size, self.digests[e.name])
                for e in self.files]

    def source(self):
        """Where it came from, for the card beside the id: the reference, repository, commit and files."""
        return {"reference": self.reference.text, "repo": self.reference.repo, "revision": self.commit,
                "files": [{"file": e.name, "bytes": e.size, "sha256": self.digests.get(e.name),
                           "hub_hash": "lfs-sha256" if e.sha256 else ("git-blob-id" if e.blob_id else None),
                           "checked": e.name in self.checked} for e in self.files]}


@dataclass(frozen=True)
class Fetch:
    """How downloads report: SAY(message) a line per file (None: silent), BARS a progress bar on stderr."""

    say: object = None
    bars: bool = False


_resolved = {}  # (reference text, directory, fetched) -> Resolved, for this process


def resolve(spec, *, directory=False, fetch=True, report=Fetch(), bare=False):
    """The Resolved of hub reference SPEC (see parse); DIRECTORY: OWNER/REPO without :QUANT or /FILE means the
    model directory rather than its only GGUF. FETCH: download what is not in the cache (else only metadata,
    and the small files whose SHA-256 the hub does not give)."""
    ref = parse(spec, bare=bare)
    if ref is None:
        raise UsageError(f"{spec}: not a hub reference")
    for key in ((ref.text, directory, True), (ref.text, directory, fetch)):
        if key in _resolved:
            return _resolved[key]
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise MissingDependency(f"{ref.text} (a hub reference)", "huggingface_hub", "cpu") from None
    hub = _Hub(ref, report)
    found = hub.resolve(directory, fetch)
    _resolved[ref.text, directory, fetch] = found
    return found


def cache_root():
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _offline():
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _storage(repo):
    return cache_root() / ("models--" + repo.replace("/", "--"))


def _size(n):
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


class _Hub:
    """One reference's resolution: metadata from the hub (or the cache), the files chosen, fetched, checked."""

    def __init__(self, ref, report):
        self.ref, self.report = ref, report

    def say(self, message):
        if self.report.say is not None:
            self.report.say(message)

    def resolve(self, directory, fetch):
        if _offline():
            found = self._from_cache(directory, why="HF_HUB_OFFLINE=1 forbids fetching it")
        else:
            try:
                found = self._from_hub(directory)
            except _Unreachable as e:
                found = self._from_cache(directory, why=f"the hub cannot be reached ({e})")
                self.say(f"{self.ref.text}: the hub cannot be reached ({e}); using the cached {found.commit[:12]}")
        try:
            for entry in found.files:
                if fetch or entry.sha256 is None:  # --describe fetches only what the hub gives no SHA-256 of
                    self._fetch(found, entry)
                self._check(found, entry)
            if all((found.snapshot / e.name).exists() for e in found.files):
                self._write_ref(found)
        except OSError as e:  # the cache: not writable, full, gone
            raise GpvError(f"{self.ref.text}: the Hugging Face cache ({cache_root()}): {e}") from None
        return found

    def _write_ref(self, found):
        """refs/REVISION names the commit, as huggingface_hub records it, once every file is in the cache
        (so that an offline run finds the revision only whole)."""
        from ..streaming.atomic import write_atomic

        if self.ref.revision and _COMMIT.fullmatch(self.ref.revision):
            return
        ref_file = _storage(self.ref.repo) / "refs" / (self.ref.revision or "main")
        if ref_file.is_file() and ref_file.read_text().strip() == found.commit:
            return
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(ref_file, found.commit, fsync=False)

    # --- metadata -----------------------------------------------------------------------------------------------------

    def _from_hub(self, directory):
        from huggingface_hub import HfApi

        ref = self.ref
        try:
            info = HfApi().model_info(ref.repo, revision=ref.revision, files_metadata=True)
        except Exception as e:  # noqa: BLE001 — mapped to one line, or to the cache where the hub is away
            raise _hub_error(ref, e, "its model info") from None
        entries = [Entry(s.rfilename, s.lfs.size if s.lfs else s.size, s.lfs.sha256 if s.lfs else None,
                         None if s.lfs else s.blob_id) for s in info.siblings or ()]
        files, is_dir = self._choose(entries, directory, f"{ref.repo}@{info.sha[:12]}")
        return Resolved(ref, info.sha, files, is_dir, _storage(ref.repo) / "snapshots" / info.sha)

    def _from_cache(self, directory, why):
        ref = self.ref
        storage = _storage(ref.repo)
        commit = ref.revision if ref.revision and _COMMIT.fullmatch(ref.revision) else None
        if commit is None:
            ref_file = storage / "refs" / (ref.revision or "main")
            commit = ref_file.read_text().strip() if ref_file.is_file() else None
        snapshot = storage / "snapshots" / commit if commit else None
        if snapshot is None or not snapshot.is_dir():
            raise GpvError(f"{ref.text} is not in the Hugging Face cache ({cache_root()}) and {why}")
        entries = []
        for path in sorted(p for p in snapshot.rglob("*") if p.is_file()):
            name = path.relative_to(snapshot).as_posix()
            target = os.path.basename(os.readlink(path)) if path.is_symlink() else ""
            entries.append(Entry(name, path.stat().st_size, target if len(target) == 64 else None,
                                 target if len(target) == 40 else None))
        try:
            files, is_dir = self._choose(entries, directory, f"the cached {ref.repo}@{commit[:12]}")
        except UsageError as e:
            raise GpvError(f"{e}; {why}") from None
        missing = _missing_shards(snapshot, files) if is_dir else []
        if missing:
            raise GpvError(f"{ref.text}: the cached {ref.repo}@{commit[:12]} lacks {', '.join(missing)} and {why}")
        return Resolved(ref, commit, files, is_dir, snapshot)

    def _choose(self, entries, directory, where):
        """(files, is a directory) that the reference picks from ENTRIES, a listing of WHERE."""
        ref = self.ref
        if ref.file:
            match = [e for e in entries if e.name == ref.file.strip("/")]
            if not match:
                raise UsageError(f"{ref.text}: {where} has no file {ref.file}; {_listing(entries)}")
            return self._with_parts(match[0], entries), False
        ggufs = _gguf_groups(entries)
        if ref.quant:
            pattern = re.compile(rf"(?<![a-z0-9]){re.escape(ref.quant.lower())}(?![a-z0-9_])")
            match = [g for g in ggufs if pattern.search(Path(g[0].name).name.lower())]
            if len(match) != 1:
                what = "no GGUF" if not match else f"{len(match)} GGUFs"
                names = ", ".join(g[0].name for g in (match or ggufs)) or "none"
                raise UsageError(f"{ref.text}: {what} of quantisation {ref.quant} in {where} (its GGUFs: {names}); "
                                 f"name one with hf:{ref.repo}/FILE")
            return match[0], False
        if directory:
            kept = _model_files(entries)
            if not any(Path(e.name).name in ("config.json", "adapter_config.json") for e in kept):
                hint = (f"; it holds GGUFs ({', '.join(g[0].name for g in ggufs)}): name one with :QUANT or /FILE"
                        if ggufs else "")
                raise UsageError(f"{ref.text}: {where} is no transformers model or peft adapter (no config.json)"
                                 f"{hint}")
            return kept, True
        if len(ggufs) != 1:
            names = ", ".join(g[0].name for g in ggufs) or "none"
            raise UsageError(f"{ref.text}: {where} holds {len(ggufs)} GGUFs ({names}); name one with :QUANT or "
                             "/FILE")
        return ggufs[0], False

    @staticmethod
    def _with_parts(entry, entries):
        """ENTRY, or every part of the split GGUF whose first part it is."""
        m = SPLIT.fullmatch(entry.name)
        if not m or int(m["part"]) != 1:
            return [entry]
        for group in _gguf_groups(entries):
            if group[0].name == entry.name:
                return group
        return [entry]

    # --- bytes --------------------------------------------------------------------------------------------------------

    def _fetch(self, found, entry):
        """Download ENTRY into the cache unless it is there; a partial download is resumed."""
        pointer = found.snapshot / entry.name
        if pointer.exists():
            return
        if _offline():
            raise GpvError(f"{self.ref.text}: {entry.name} is not in the Hugging Face cache ({cache_root()}) and "
                           "HF_HUB_OFFLINE=1 forbids fetching it")
        from huggingface_hub import constants
        from huggingface_hub.utils import WeakFileLock

        etag = entry.sha256 or entry.blob_id
        storage = _storage(self.ref.repo)
        blob = storage / "blobs" / etag
        locks = Path(constants.HF_HUB_CACHE) / ".locks" / storage.name
        locks.mkdir(parents=True, exist_ok=True)
        blob.parent.mkdir(parents=True, exist_ok=True)
        # Another run fetching the blob (an array job's tasks) holds the lock: wait, then use its file.
        # huggingface_hub's lock: group-writable, and a soft lock where the file system has no flock.
        with WeakFileLock(locks / f"{etag}.lock"):
            if not blob.exists():
                self._download(found, entry, blob)
            pointer.parent.mkdir(parents=True, exist_ok=True)
            if not pointer.exists():
                try:
                    pointer.symlink_to(os.path.relpath(blob, pointer.parent))
                except OSError:  # no symlinks here: a copy, as huggingface_hub makes
                    import shutil

                    shutil.copyfile(blob, pointer)

    def _download(self, found, entry, blob):
        """ENTRY's bytes into BLOB through BLOB.incomplete, resumed from what an earlier run left there."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        url = hf_hub_url(self.ref.repo, entry.name, revision=found.commit)
        headers = build_hf_headers()
        try:  # inside the lock: a signed download URL is fresh when it is used
            meta = get_hf_file_metadata(url, headers=headers)
        except Exception as e:  # noqa: BLE001
            raise _hub_error(self.ref, e, entry.name, cached=False) from None
        if urlsplit(meta.location).netloc != urlsplit(url).netloc:
            headers.pop("authorization", None)  # a CDN's signed URL: the token stays with the hub
        size = meta.size or entry.size
        part = blob.with_name(f"{blob.name}.incomplete")
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have > size:  # not a prefix of this file: start over
            part.unlink()
            have = 0
        resumed = f", resuming at {_size(have)}" if have else ""
        self.say(f"fetching {entry.name} ({_size(size) if size else 'size unknown'}) for {self.ref.text} "
                 f"from {self.ref.repo}@{found.commit[:12]}{resumed}")
        start = time.monotonic()
        try:
            with open(part, "ab") as f:
                http_get(meta.location, f, resume_size=have, headers=headers, expected_size=size,
                         displayed_filename=Path(entry.name).name, tqdm_class=_bar_class(self.report.bars))
        except Exception as e:  # noqa: BLE001 — the network's errors, the hub's; the part is kept for the next run
            if getattr(getattr(e, "response", None), "status_code", None) == 416:  # the range is past its end
                part.unlink(missing_ok=True)
            kept = part.stat().st_size if part.exists() else 0
            raise GpvError(f"{self.ref.text}: the download of {entry.name} stopped at {_size(kept)}: "
                           f"{_first_line(e)}; run again to resume it") from None
        digest = _verify(part, entry, self.ref, found)
        os.replace(part, blob)
        remember_digest(blob, digest)
        self.say(f"fetched {entry.name}: {_size(blob.stat().st_size - have)} in {time.monotonic() - start:.1f} s")

    def _check(self, found, entry):
        """Record ENTRY's SHA-256 from its bytes where it is local (checked against the hub's hashes), else
        from the hub's LFS hash (--describe without a download)."""
        pointer = found.snapshot / entry.name
        if not pointer.exists():
            found.digests[entry.name] = entry.sha256
            return
        if entry.size is None:
            entry.size = pointer.stat().st_size
        digest = file_digest(pointer)
        expected = _mismatch(entry, pointer, digest)
        if expected:
            blob = pointer.resolve()
            for path in (pointer, blob):
                path.unlink(missing_ok=True)
            raise GpvError(f"{self.ref.text}: {entry.name} from {self.ref.repo}@{found.commit[:12]} has SHA-256 "
                           f"{digest[:16]}…, not the hub's {expected[:16]}…: a corrupt copy, removed from the cache "
                           "(run again to fetch it anew)")
        found.digests[entry.name] = digest
        if entry.sha256 or entry.blob_id:
            found.checked.add(entry.name)


class _Unreachable(Exception):
    pass


def _verify(part, entry, ref, found):
    """SHA-256 of the downloaded PART, checked against the hub's hash; a mismatch deletes it."""
    digest = sha256_file(part)
    expected = _mismatch(entry, part, digest)
    if expected:
        part.unlink(missing_ok=True)
        raise GpvError(f"{ref.text}: {entry.name} from {ref.repo}@{found.commit[:12]} arrived with SHA-256 "
                       f"{digest[:16]}…, not the hub's {expected[:16]}…: not kept (run again to fetch it anew)")
    return digest


def _mismatch(entry, path, digest):
    """The hub's hash of ENTRY where the file at PATH (SHA-256 DIGEST) does not match it, else None."""
    if entry.sha256 and digest != entry.sha256:
        return entry.sha256
    if entry.blob_id and _git_blob_id(path) != entry.blob_id:
        return f"git blob {entry.blob_id}"
    return None


def _git_blob_id(path):
    """git's id of a file's bytes: SHA-1 of b"blob SIZE\\0" and the bytes (what the hub lists for a file
    kept in git rather than LFS)."""
    size = os.path.getsize(path)
    h = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _gguf_groups(entries):
    """Each GGUF of ENTRIES as [its files]: one, or a split GGUF's parts in order (all of them present).
    Multimodal projectors (mmproj-…) are no model."""
    out, splits = [], {}
    for e in entries:
        base = Path(e.name).name.lower()
        if not base.endswith(".gguf") or base.startswith("mmproj"):
            continue
        m = SPLIT.fullmatch(e.name)
        if m:
            splits.setdefault((m["stem"], m["count"]), []).append((int(m["part"]), e))
        else:
            out.append([e])
    for (_, count), parts in splits.items():
        parts.sort(key=lambda p: p[0])
        if [p for p, _ in parts] == list(range(1, int(count) + 1)):
            out.append([e for _, e in parts])
    return sorted(out, key=lambda g: g[0].name)


def _model_files(entries):
    """The files of a model directory a loader needs: the top level but hidden files and weights in formats
    not loaded (.bin too where safetensors are there; Mistral's consolidated.safetensors where the
    transformers shards are there too)."""
    top = [e for e in entries if "/" not in e.name and not e.name.startswith(".")]
    safetensors = [e.name for e in top if e.name.endswith(".safetensors")]
    sharded = any(not n.startswith("consolidated") for n in safetensors)
    return [e for e in top if not e.name.lower().endswith(_OTHER_WEIGHTS)
            and not (safetensors and e.name.endswith(".bin"))
            and not (sharded and e.name.startswith("consolidated") and e.name.endswith(".safetensors"))]


def _missing_shards(snapshot, files):
    """The weight files a cached model directory's index names that are not there (a cut download)."""
    import json

    names = {e.name for e in files}
    missing = []
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if index in names:
            try:
                wanted = set(json.loads((snapshot / index).read_text()).get("weight_map", {}).values())
            except (OSError, ValueError, AttributeError):
                continue
            missing += sorted(w for w in wanted if not (snapshot / w).exists())
    return missing


def _listing(entries):
    names = [e.name for e in entries]
    shown = ", ".join(names[:20]) + (f", … ({len(names)} files)" if len(names) > 20 else "")
    return f"its files: {shown or 'none'}"


def _endpoint():
    from huggingface_hub import constants

    return constants.ENDPOINT


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _connection_error(e):
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"ConnectError", "ConnectTimeout", "TimeoutException", "NetworkError", "ConnectionError",
                         "RemoteProtocolError"})


def _hub_error(ref, e, what, cached=True):
    """The one-line error for exception E of the hub while asking for WHAT about REF; where the hub is away
    (no connection, a 5xx, a 429 rate limit) and CACHED, an _Unreachable the caller answers from the cache."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, HFValidationError):
        return UsageError(f"{ref.text}: {_first_line(e)}")
    if isinstance(e, GatedRepoError) or status == 403:
        return GpvError(f"{ref.text}: {ref.repo} is gated: accept its terms on the hub and set HF_TOKEN")
    if isinstance(e, RevisionNotFoundError):
        return UsageError(f"{ref.text}: {ref.repo} has no revision {ref.revision!r}")
    if isinstance(e, RemoteEntryNotFoundError):
        return UsageError(f"{ref.text}: {ref.repo} has no file {what}")
    if isinstance(e, RepositoryNotFoundError):
        return UsageError(f"{ref.text}: no repository {ref.repo} on {_endpoint()} (or it is private: set HF_TOKEN)")
    away = _connection_error(e) or (status is not None and (status >= 500 or status == 429))
    reason = f"HTTP {status}" if status else _first_line(e)
    if away and cached:
        return _Unreachable(reason)
    return GpvError(f"{ref.text}: the hub did not give {what}: {reason}")


def _bar_class(enabled):
    """A tqdm class for huggingface_hub's http_get: a bar on stderr where ENABLED, else none."""
    from tqdm import tqdm

    class Bar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            super().__init__(*args, disable=not enabled, file=sys.stderr, **kwargs)

    return Bar
