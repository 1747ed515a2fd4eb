"""The scorer registry: backend name -> how to build it, and which backend a --model means.

A backend registers a builder with `@backend(name)`; gpv-score's --backend choices are this registry's
names, in registration order. Each builder imports its own runtime, so choosing the dictionary never
loads llama.cpp or torch.
"""

from dataclasses import dataclass, field
from pathlib import Path

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
    """Everything gpv-score needs to build a scorer; the backends' own knobs are grouped by backend."""

    model: str = BUILTIN
    backend: str = "auto"
    adapter: str | None = None
    batch_size: int = 8
    llama_cpp: LlamaCppSettings = field(default_factory=LlamaCppSettings)
    transformers: TransformersSettings = field(default_factory=TransformersSettings)
    openai: OpenAISettings = field(default_factory=OpenAISettings)


SCORERS = {}


def backend(name):
    """Register BUILD(settings) -> Scorer under NAME."""

    def register(build):
        SCORERS[name] = build
        return build

    return register


def pick_backend(s):
    """auto: a local file decides by its kind; else a server URL means openai; else transformers.

    OPENAI_BASE_URL alone (often set for other tools) does not turn the built-in model into a remote one.
    """
    if s.backend != "auto":
        return s.backend
    suffix = Path(s.model).suffix.lower()
    if suffix in (".dic", ".json"):
        return "dictionary"
    if suffix == ".gguf":
        return "llama-cpp"
    server = s.openai.server
    if server.base_url and (server.explicit or (s.model != BUILTIN and not Path(s.model).exists())):
        return "openai"
    return "llama-cpp" if s.model == BUILTIN else "transformers"


def build_scorer(s):
    """The scorer SETTINGS describe."""
    name = pick_backend(s)
    if s.llama_cpp.precision != "auto" and name != "llama-cpp":
        raise UsageError(f"--precision is for the llama-cpp backend, not {name}")
    if s.transformers.load_in_4bit and s.transformers.load_in_8bit:
        raise UsageError("--load-in-4bit and --load-in-8bit exclude each other")
    return SCORERS[name](s)


def _weights(s, kind):
    """(model file or directory, display name or None, adapter) with the built-in model resolved."""
    if s.model != BUILTIN:
        return s.model, None, s.adapter
    files = builtin_scorer_files()
    return files["gguf"], BUILTIN, s.adapter or files[kind]


@backend("llama-cpp")
def _llama_cpp(s):
    from ...runtimes.llama import dequantized
    from .llama import LlamaCppScorer

    model, name, adapter = _weights(s, "lora")
    if not Path(model).exists():
        raise UsageError(f"model {model} does not exist")
    o = s.llama_cpp
    f32 = o.precision == "f32" or (o.precision == "auto" and name == BUILTIN)
    if f32:
        name = name or Path(model).name
        model = dequantized(model)
    return LlamaCppScorer(model, name=name, n_ctx=o.n_ctx, n_threads=o.threads, n_gpu_layers=o.n_gpu_layers,
                          lora_path=adapter, reuse_cache=o.prefix_cache, batched=o.batched, f32_cache=f32)


@backend("transformers")
def _transformers(s):
    from .hf import TransformersScorer

    model, name, adapter = _weights(s, "adapter")
    o = s.transformers
    return TransformersScorer(model, name=name, device=o.device, dtype=o.dtype, load_in_4bit=o.load_in_4bit,
                              load_in_8bit=o.load_in_8bit, adapter=adapter, batch_size=s.batch_size,
                              progress=o.progress)


@backend("openai")
def _openai(s):
    from .remote import OpenAIScorer

    o = s.openai
    return OpenAIScorer(o.server, None if s.model == BUILTIN else s.model, top_logprobs=o.top_logprobs,
                        concurrency=o.concurrency)


@backend("dictionary")
def _dictionary(s):
    from .dictionary import DictionaryScorer

    if s.model == BUILTIN:
        raise UsageError("backend 'dictionary' needs a lexicon: --model FILE.json or FILE.dic")
    if not Path(s.model).exists():
        raise UsageError(f"model {s.model} does not exist")
    return DictionaryScorer(s.model)
