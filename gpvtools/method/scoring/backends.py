"""The scorer registry: backend name -> how to build it, its own settings, and which models it claims.

A backend registers a builder with `@backend(name, settings=…, suffixes=…, names=…)` and what its instrument
is made of with `@card(name)`; gpv-score's --backend choices are this registry's names, in registration
order, and --backend auto picks by the claims (pick_backend). Each builder imports its own runtime, so
choosing the dictionary never loads llama.cpp or torch.

The instrument card names what makes the numbers: backend, model and adapter by content (SHA-256 of
their bytes, cached by path, size and mtime), calibration, prompt templates, threshold and precision.
Its id is a digest of exactly those; the gpvtools version is recorded beside them but left out of the id,
since it changes no number by itself.
"""

from dataclasses import dataclass, field, replace
from pathlib import Path

from ... import __version__
from ...runtimes import hub
from ...runtimes.identity import digest_of, path_identity
from ...runtimes.models import BUILTIN, builtin_scorer_files
from ...runtimes.server import ServerSettings
from ...streaming.errors import UsageError


@dataclass(frozen=True)
class LlamaCppSettings:
    n_ctx: int = 4096
    threads: int | None = None
    n_gpu_layers: int = 0
    precision: str = "auto"  # auto, native, f32
    prefix_cache: bool = True
    batched: bool = True  # False: one llama_decode call per prompt, the reference path (--no-batch)


@dataclass(frozen=True)
class TransformersSettings:
    device: str = "auto"
    dtype: str = "auto"
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    progress: bool = False  # a library's own loading bars, only where ours would show


@dataclass(frozen=True)
class OpenAISettings:
    server: ServerSettings = field(default_factory=ServerSettings)
    top_logprobs: int = 20
    concurrency: int = 4


@dataclass(frozen=True)
class ScorerSettings:
    """Everything gpv-score needs to build a scorer. BACKENDS holds each backend's own settings by its name
    (the class it registered); a backend not named there gets its defaults (options_of)."""

    model: str = BUILTIN
    backend: str = "auto"
    adapter: str | None = None
    thresholds: str = "auto"  # auto, builtin, a number, or a JSON file of {value: threshold} (resolve_thresholds)
    valence_all: bool = False  # valence for every pair, not only the relevant ones (--valence all)
    batch_size: int = 8
    backends: dict = field(default_factory=dict)
    fetch: hub.Fetch = field(default_factory=hub.Fetch)  # how a hub reference's download reports

    def options_of(self, name):
        """Backend NAME's own settings: as given, else its registered defaults."""
        given = self.backends.get(name)
        return given if given is not None else SCORERS[name].settings()


@dataclass(frozen=True)
class Backend:
    """A registered backend: BUILD(settings) -> Scorer; PARTS(settings, scorer or None) -> its card's fields
    (@card); SETTINGS, the class of its own knobs; the models --backend auto gives it: files ending in one of
    SUFFIXES, models named one of NAMES, a model on a --base-url server (REMOTE), or any other (FALLBACK: a
    directory or a hub id)."""

    name: str
    build: object
    settings: type = dict
    suffixes: tuple = ()
    names: tuple = ()
    remote: bool = False
    fallback: bool = False
    parts: object = None


SCORERS = {}


def backend(name, *, settings=dict, suffixes=(), names=(), remote=False, fallback=False):
    """Register BUILD(settings) -> Scorer under NAME, with what it claims (see Backend)."""

    def register(build):
        SCORERS[name] = Backend(name, build, settings, suffixes, names, remote, fallback)
        return build

    return register


def card(name):
    """Register PARTS(settings, scorer or None) -> the card's fields for backend NAME."""

    def register(parts):
        SCORERS[name] = replace(SCORERS[name], parts=parts)
        return parts

    return register


def prompts_id():
    """A version id of the prompt templates and label words: a digest of their exact text."""
    from . import LABELS, TEMPLATES

    return "sha256:" + digest_of({"templates": TEMPLATES, "labels": LABELS})


def resolve_thresholds(s):
    """{value: threshold} of settings S; {} means the paper's 0.5 for every value.

    auto: the built-in model's own, fitted on human judgments (model.json), when the built-in model scores
    in-process without another adapter; else none (a server's model is not known to be the built-in one).
    builtin: those, whatever scores (a server serving the built-in model). A number: that one for every
    value. Else a JSON file, {value: threshold} or a card's {"values": {value: threshold}}."""
    import math

    spec = s.thresholds
    if spec == "auto":  # a server's model is not known to be the built-in one, whatever -m says
        local = not SCORERS[pick_backend(s)].remote
        spec = "builtin" if s.model == BUILTIN and s.adapter is None and local else "none"
    if spec == "none":
        return {}
    if spec == "builtin":
        from ...runtimes.models import builtin_scorer_card

        found = (builtin_scorer_card().get("thresholds") or {}).get("values") or {}
    else:
        try:
            number = float(spec)
        except ValueError:
            number = None
        if number is not None:
            if not 0 < number < 1:
                raise UsageError(f"--thresholds {spec}: a threshold lies strictly between 0 and 1")
            return {"*": number}
        import orjson

        try:
            found = orjson.loads(Path(spec).read_bytes())
        except OSError as e:
            raise UsageError(f"--thresholds {spec}: {e.strerror}") from None
        except orjson.JSONDecodeError as e:
            raise UsageError(f"--thresholds {spec}: not JSON ({e})") from None
        if isinstance(found, dict) and isinstance(found.get("values"), dict):
            found = found["values"]
        if not isinstance(found, dict):
            raise UsageError(f"--thresholds {spec}: expected an object of value names and thresholds")
    for value, t in found.items():
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0 < t < 1:
            raise UsageError(f"--thresholds {spec}: the threshold of {value!r} must be a number strictly between "
                             "0 and 1")
    return {str(v): float(t) for v, t in found.items()}


def _gpv_parts(s, model, adapter, precision, source=None):
    from . import THRESHOLD

    own = resolve_thresholds(s)
    threshold = own.get("*", THRESHOLD) if set(own) <= {"*"} else {"default": THRESHOLD, "values": own}
    return {"model": model, "adapter": adapter, "calibration": None, "prompts": prompts_id(),
            "threshold": threshold, "precision": precision, "source": source}


def instrument(s, scorer=None):
    """The instrument card of settings S (with SCORER, the built scorer, where it resolved something).

    Computed from the settings and the files' bytes, without loading a model, so that --describe and a
    scoring run give the same card. It holds what makes the numbers and nothing of how the run was
    invoked (command line, output file, --resume, the server's address): a resumed, sharded or
    re-invoked run writes the same records as one uninterrupted run."""
    name = pick_backend(s)
    parts = {"backend": name, **SCORERS[name].parts(s, scorer)}
    source = parts.pop("source", None)  # where hub references resolved to: beside the id, not in it
    return {"id": digest_of(parts), **parts, **({"source": source} if source else {}), "gpvtools": __version__}


def tag(card):
    """BACKEND:NAME@ID: the short name records carry as "scorer" (groupable with gpv-aggregate --by scorer)."""
    model = card.get("model") or {}
    name = model.get("name") or model.get("file") or model.get("dir") or model.get("hub_id") or "?"
    return f"{card['backend']}:{name}@{card['id']}"


def pick_backend(s):
    """auto: the backend claiming the model file's suffix; else the remote one where a server URL is given
    (for a model that is no local file); else the one claiming the model's name; else the fallback.

    OPENAI_BASE_URL alone (often set for other tools) does not turn the built-in model into a remote one.
    """
    if s.backend != "auto":
        return s.backend
    suffix = _suffix(s.model)
    for entry in SCORERS.values():
        if suffix in entry.suffixes:
            return entry.name
    local = s.model == BUILTIN or Path(s.model).exists() or hub.is_reference(s.model)
    for entry in SCORERS.values():
        server = s.options_of(entry.name).server if entry.remote else None
        if server and server.base_url and (server.explicit or not local):
            return entry.name
    for entry in SCORERS.values():
        if s.model in entry.names:
            return entry.name
    return next(entry.name for entry in SCORERS.values() if entry.fallback)


def build_scorer(s):
    """The scorer SETTINGS describe."""
    name = pick_backend(s)
    if s.options_of("llama-cpp").precision != "auto" and name != "llama-cpp":
        raise UsageError(f"--precision is for the llama-cpp backend, not {name}")
    o = s.options_of("transformers")
    if o.load_in_4bit and o.load_in_8bit:
        raise UsageError("--load-in-4bit and --load-in-8bit exclude each other")
    if name == "dictionary":
        if s.thresholds not in ("auto", "none"):
            raise UsageError("--thresholds is for the GPV backends, not the dictionary")
        return SCORERS[name].build(s, None)
    from . import THRESHOLD, Decision

    thresholds = resolve_thresholds(s)  # before a model is loaded: a bad --thresholds is a usage error at once
    default = thresholds.pop("*", THRESHOLD)
    return SCORERS[name].build(s, Decision(thresholds, default, s.valence_all))


def _suffix(model):
    """The suffix of MODEL's file, a hub reference's too (:QUANT names a GGUF)."""
    if hub.is_reference(model):
        ref = hub.parse(model)
        return ".gguf" if ref.quant else Path(ref.file or "").suffix.lower()
    return Path(model).suffix.lower()


@dataclass
class _Part:
    """A model or adapter as the loader and the card see it: a local PATH (None before a hub reference's
    download: --describe), the NAME it is shown by, and the hub's Resolved where a reference named it."""

    path: str | None
    name: str | None = None
    resolved: object = None

    def identity(self):
        return self.resolved.identity() if self.resolved is not None else path_identity(self.path)


def _part(spec, s, *, directory, fetch, bare=False):
    """_Part of model or adapter SPEC: a hub reference resolved (and, with FETCH, downloaded), else the path.
    BARE: OWNER/NAME that is no local path is a hub id (transformers)."""
    if spec is None:
        return None
    if hub.is_hub_model(spec, bare=bare):
        found = hub.resolve(spec, directory=directory, fetch=fetch, report=s.fetch, bare=bare)
        return _Part(found.path if fetch or Path(found.path).exists() else None, found.name, found)
    return _Part(spec)


def _weights(s, kind, *, fetch=True):
    """(model, adapter) as _Parts, with the built-in model's files and hub references resolved; KIND: which
    adapter the built-in model takes (lora: a GGUF LoRA, adapter: a peft directory)."""
    directory = kind == "adapter"
    if s.model != BUILTIN:
        return (_part(s.model, s, directory=directory, fetch=fetch, bare=directory),
                _part(s.adapter, s, directory=directory, fetch=fetch))
    files = builtin_scorer_files()
    adapter = _part(s.adapter, s, directory=directory, fetch=fetch) or _Part(files[kind])
    return _Part(files["gguf"], BUILTIN), adapter


def _source(model, adapter):
    """The card's "source": where each hub reference resolved to (None without one)."""
    found = {k: p.resolved.source() for k, p in (("model", model), ("adapter", adapter))
             if p is not None and p.resolved is not None}
    return found or None


@backend("llama-cpp", settings=LlamaCppSettings, suffixes=(".gguf",), names=(BUILTIN,))
def _llama_cpp(s, decision):
    from ...runtimes.llama import dequantized
    from .llama import LlamaCppScorer

    model, adapter = _weights(s, "lora")
    if not Path(model.path).exists():
        raise UsageError(f"model {model.path} does not exist")
    o = s.options_of("llama-cpp")
    path, name = model.path, model.name
    f32 = _f32(s, name)
    if f32:
        name = name or Path(path).name
        path = dequantized(path)
    return LlamaCppScorer(path, name=name, n_ctx=o.n_ctx, n_threads=o.threads, n_gpu_layers=o.n_gpu_layers,
                          lora_path=adapter.path if adapter else None, reuse_cache=o.prefix_cache, batched=o.batched,
                          f32_cache=f32, decision=decision)


def _f32(s, name):
    o = s.options_of("llama-cpp")
    return o.precision == "f32" or (o.precision == "auto" and name == BUILTIN)


@card("llama-cpp")
def _llama_cpp_card(s, scorer):
    model, adapter = _weights(s, "lora", fetch=scorer is not None)
    if model.resolved is None and not Path(model.path).exists():
        raise UsageError(f"model {model.path} does not exist")
    if adapter and adapter.resolved is None and not Path(adapter.path).exists():
        raise UsageError(f"adapter {adapter.path} does not exist")
    return _gpv_parts(s, {"name": model.name or Path(model.path).name, **model.identity()},
                      adapter.identity() if adapter else None, "f32" if _f32(s, model.name) else "native",
                      _source(model, adapter))


@backend("transformers", settings=TransformersSettings, fallback=True)
def _transformers(s, decision):
    from .hf import TransformersScorer, check_quantized

    o = s.options_of("transformers")
    check_quantized(s.model, o.device, load_in_4bit=o.load_in_4bit, load_in_8bit=o.load_in_8bit)  # before a fetch
    model, adapter = _weights(s, "adapter")
    return TransformersScorer(model.path, name=model.name, device=o.device, dtype=o.dtype,
                              load_in_4bit=o.load_in_4bit, load_in_8bit=o.load_in_8bit,
                              adapter=adapter.path if adapter else None, batch_size=s.batch_size, progress=o.progress,
                              decision=decision)


@card("transformers")
def _transformers_card(s, scorer):
    model, adapter = _weights(s, "adapter", fetch=scorer is not None)
    if model.resolved is None and not Path(model.path).exists():
        raise UsageError(f"model {model.path} does not exist")
    identity = {"name": model.name or Path(model.path).name, **model.identity()}
    if adapter and adapter.resolved is None and not Path(adapter.path).exists():
        raise UsageError(f"adapter {adapter.path} does not exist")
    o = s.options_of("transformers")
    if o.load_in_4bit or o.load_in_8bit:
        precision = "4bit-nf4" if o.load_in_4bit else "8bit"
    elif o.dtype != "auto":
        precision = o.dtype
    else:
        device = str(scorer.device) if scorer is not None else _device(o.device)
        precision = "bfloat16" if device.startswith("cuda") else "float32"
    return _gpv_parts(s, identity, adapter.identity() if adapter else None, precision, _source(model, adapter))


def _device(device):
    from .hf import resolve_device

    return resolve_device(device)


@backend("openai", settings=OpenAISettings, remote=True)
def _openai(s, decision):
    from .remote import OpenAIScorer

    o = s.options_of("openai")
    return OpenAIScorer(o.server, None if s.model == BUILTIN else s.model, top_logprobs=o.top_logprobs,
                        concurrency=o.concurrency, decision=decision)


@card("openai")
def _openai_card(s, scorer):
    from ...runtimes.server import Server

    if scorer is not None:
        model = scorer.model
    elif s.model != BUILTIN:
        model = s.model
    else:
        model = Server(s.options_of("openai").server).only_model()
    # The weights live on the server; its model name is all that can be told from here. Its address is
    # where it runs, not what it is: shards scored by servers on different nodes are one instrument.
    return _gpv_parts(s, {"name": model}, None, "server")


@backend("dictionary", suffixes=(".dic", ".json"))
def _dictionary(s, decision):
    from .dictionary import DictionaryScorer

    if s.model == BUILTIN:
        raise UsageError("backend 'dictionary' needs a lexicon: --model FILE.json or FILE.dic")
    if not Path(s.model).exists():
        raise UsageError(f"model {s.model} does not exist")
    return DictionaryScorer(s.model)


@card("dictionary")
def _dictionary_card(s, scorer):
    if s.model == BUILTIN:
        raise UsageError("backend 'dictionary' needs a lexicon: --model FILE.json or FILE.dic")
    if not Path(s.model).exists():
        raise UsageError(f"model {s.model} does not exist")
    return {"model": {"name": Path(s.model).name, **path_identity(s.model)}, "adapter": None, "calibration": None,
            "prompts": None, "threshold": None, "precision": None}
