"""Chat models behind one call, `chat(messages) -> Reply`, for OpenAI-compatible servers and local GGUFs.

What a user of a remote model needs is here once: JSON output enforced with the strongest
`response_format` the server accepts, a disk cache, and counts for the summary; retries, backoff and
Retry-After are the one transport's (runtimes/server.py). The registry at the end builds the chat model
a command's settings name.
"""

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..streaming.errors import BadRecord, GpvError, UsageError
from . import hub
from .cache import ResponseCache, default_dir, request_key
from .models import BUILTIN, builtin_gguf
from .server import Counters, Refused, Server, ServerSettings

# The response_format requests tried in turn, strongest first; the first one a server accepts is kept.
# llama-cpp-python's server rejects json_schema but honours a schema given with json_object; others take
# json_object alone; a few take none.
FORMATS = ("json_schema", "json_object+schema", "json_object", "none")
@dataclass
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


@dataclass
class Stats(Counters):
    """What a run cost: the transport's retries and failures, and the requests, cache hits and tokens."""

    requests: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def lines(self):
        sent = self.requests - self.cache_hits
        return [f"{self.requests} requests: {sent} sent, {self.cache_hits} answered from the cache, "
                f"{self.retries} retries, {self.failures} failed; tokens sent {self.prompt_tokens}, "
                f"received {self.completion_tokens}"]


class ChatModel:
    """Subclasses set backend and name and implement _complete(messages, schema, params) -> Reply."""

    backend = "chat"
    name = "?"
    source = None  # where a hub reference resolved to (hub.Resolved.source()), for the card beside its id
    concurrency = None  # None: as many requests in flight as asked; 1: one at a time
    ahead = 0  # requests worth queueing beyond those in flight (PooledStage.ahead)

    def __init__(self, cache=None, stats=None, key_params=None):
        self.cache = cache
        self.stats = stats or Stats()
        # what else sets the answer apart (backend settings, whose model it is), so part of the cache key
        self.key_params = dict(key_params or {})

    def chat(self, messages, schema=None, temperature=0.0, max_tokens=1024, seed=None, accept=None):
        """The model's reply to MESSAGES, from the cache when this exact request was answered before.

        ACCEPT(text) -> value checks the reply (raising BadRecord when it is unusable); only accepted
        replies are cached. Returns (Reply, ACCEPT's value or None).
        """
        accept = accept or (lambda text: None)
        params = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        key = None
        if self.cache is not None:
            key = request_key({"backend": self.backend, "model": self.name, "messages": messages,
                               "schema": schema, "params": params, **self.key_params})
            hit = self.cache.get(key)
            if hit is not None and isinstance(hit.get("text"), str):
                try:
                    value = accept(hit["text"])
                except BadRecord:
                    pass  # cached under an older, laxer check: ask again
                else:
                    self.stats.add(requests=1, cache_hits=1)
                    return Reply(hit["text"], cached=True), value
        reply = self._complete(messages, schema, params)
        self.stats.add(requests=1, prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
        value = accept(reply.text)
        if key is not None:
            self.cache.put(key, {"text": reply.text, "prompt_tokens": reply.prompt_tokens,
                                 "completion_tokens": reply.completion_tokens})
        return reply, value

    def close(self):
        pass


class OpenAIChat(ChatModel):
    """Any OpenAI-compatible /v1/chat/completions endpoint (OpenAI, vLLM, llama.cpp's server, Ollama)."""

    backend = "openai"

    def __init__(self, server, model=None, cache=None, stats=None, warn=None, key_params=None):
        super().__init__(cache, stats, key_params)
        self.server = Server(server, counters=self.stats)
        self.base_url = server.base_url
        self.warn = warn or (lambda message: None)
        self.format_level = 0
        self.format_lock = threading.Lock()
        self.name = model or self.server.only_model()

    def identity(self):
        # The server's address is where the model runs, not what it is (see the scorer's card).
        return {"name": self.name}

    def _response_format(self, level, schema):
        kind = FORMATS[level]
        if schema is None or kind == "none":
            return None
        if kind == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}
        if kind == "json_object+schema":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_object"}

    def _complete(self, messages, schema, params):
        while True:
            level = self.format_level
            kwargs = {"model": self.name, "messages": messages, "temperature": params["temperature"],
                      "max_tokens": params["max_tokens"]}
            if params["seed"] is not None:
                kwargs["seed"] = params["seed"]
            response_format = self._response_format(level, schema)
            if response_format is not None:
                kwargs["response_format"] = response_format

            # A refused response_format is a 400 or 422, or, from llama-cpp-python's server, a 500 whose
            # message names the field: step down to the next weaker format and ask again at once.
            def refused(status, message, response_format=response_format, level=level):
                return (response_format is not None and level < len(FORMATS) - 1
                        and (status in (400, 422) or "response_format" in message))

            try:
                r = self.server.chat(refused=refused, **kwargs)
            except Refused:
                with self.format_lock:
                    if self.format_level == level:
                        self.format_level = level + 1
                        self.warn(f"the server refused response_format {FORMATS[level]}; "
                                  f"trying {FORMATS[level + 1]}")
                continue
            text = r.choices[0].message.content or ""
            usage = getattr(r, "usage", None)
            return Reply(text, getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0)


class LlamaChat(ChatModel):
    """A local GGUF chat model in-process with llama-cpp-python; JSON enforced by a grammar from the schema.

    PARALLEL 1: one request at a time through create_chat_completion (a llama.cpp context is not shared
    between threads). PARALLEL N > 1: up to N greedy requests decoded together as the sequences of one
    context (runtimes/batching.py), with the replies create_chat_completion gives (but for rare near
    ties); a request that samples at a temperature still goes one at a time.
    """

    backend = "llama-cpp"
    concurrency = 1

    def __init__(self, path, name=None, n_ctx=4096, n_threads=None, n_gpu_layers=0, repeat_penalty=1.0,
                 cache=None, stats=None, parallel=1, key_params=None):
        super().__init__(cache, stats, {"repeat_penalty": repeat_penalty, **(key_params or {})})
        self.repeat_penalty = repeat_penalty
        import os

        from .llama import load_llama

        self.path = str(path)
        self.name = name or f"{os.path.basename(self.path)}:{os.path.getsize(self.path)}"
        self.llm = load_llama(self.path, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers)
        self.display_name = name
        self.lock = threading.Lock()
        self.batched = None
        if parallel > 1:
            from .batching import BatchedLlama

            try:
                self.batched = BatchedLlama(self.llm, parallel, n_threads=n_threads)
            except ValueError as e:  # llama.cpp could not make the context (memory, too many sequences)
                self.llm.close()
                raise GpvError(f"model {self.path}: llama.cpp cannot decode {parallel} sequences at once "
                               f"with --n-ctx {n_ctx}: {e}; try a smaller -j or --n-ctx") from None
            self.concurrency = self.batched.n_seq
            # Replies differ in length tenfold; with requests queued a long one at the head of the output
            # leaves no sequence idle.
            self.ahead = 8 * self.batched.n_seq

    def _complete(self, messages, schema, params):
        kwargs = {"messages": messages, "temperature": params["temperature"], "max_tokens": params["max_tokens"],
                  "repeat_penalty": self.repeat_penalty}
        if params["temperature"] == 0:
            kwargs["top_k"] = 1
        if params["seed"] is not None:
            kwargs["seed"] = params["seed"]
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        r = None
        if self.batched is not None:
            try:
                r = self.batched.create_chat_completion(**kwargs)
            except (ValueError, RuntimeError) as e:  # the prompt does not fit; a failed decode
                raise BadRecord(f"llama.cpp: {e}") from None
        if r is None:
            with self.lock:
                try:
                    r = self.llm.create_chat_completion(**kwargs)
                except ValueError as e:  # e.g. the prompt does not fit the context
                    raise BadRecord(f"llama.cpp: {e}") from None
        usage = r.get("usage") or {}
        return Reply(r["choices"][0]["message"].get("content") or "", usage.get("prompt_tokens", 0),
                     usage.get("completion_tokens", 0))

    def identity(self):
        import os

        from .identity import path_identity

        return {"name": self.display_name or os.path.basename(self.path), **path_identity(self.path)}

    def close(self):
        if self.batched is not None:
            self.batched.close()  # requests still waiting end with an error
        with self.lock:  # a worker thread still inside a one-at-a-time request finishes it first
            self.llm.close()


# --- which chat model a command's options mean ----------------------------------------------------------------------

@dataclass(frozen=True)
class LlamaChatSettings:
    n_ctx: int = 4096
    threads: int | None = None
    n_gpu_layers: int = 0
    repeat_penalty: float = 1.0
    parallel: int = 1  # greedy requests decoded together in one context (gpv-parse -j)


@dataclass(frozen=True)
class ChatSettings:
    """Everything gpv-parse and gpv-elicit need to build a chat model; each backend's knobs apart."""

    model: str = BUILTIN
    backend: str = "auto"
    server: ServerSettings = field(default_factory=ServerSettings)
    llama_cpp: LlamaChatSettings = field(default_factory=LlamaChatSettings)
    cache_dir: str | None = None  # None: default_dir()/chat
    use_cache: bool = True
    # Part of every cache key beside the request: two servers may serve different models under one name
    # ("default", a path), and gpv-elicit's subjects must never be answered from each other's cache.
    cache_scope: dict = field(default_factory=dict)
    fetch: hub.Fetch = field(default_factory=hub.Fetch)  # how a hub reference's download reports


def with_jobs(settings, jobs):
    """SETTINGS with the llama-cpp backend decoding JOBS requests together (-j); a server's backend takes
    -j from the stage instead."""
    return replace(settings, llama_cpp=replace(settings.llama_cpp, parallel=jobs))


CHAT_MODELS = {}


def chat_backend(name):
    """Register BUILD(settings, cache, stats, warn) -> ChatModel under NAME."""

    def register(build):
        CHAT_MODELS[name] = build
        return build

    return register


def pick_chat_backend(s):
    """auto: a .gguf or builtin model runs in-process unless a server URL was given on the command line;
    another name is a model on the server (OPENAI_BASE_URL) if there is one."""
    if s.backend != "auto":
        return s.backend
    if s.server.explicit:
        return "openai"
    if s.model == BUILTIN or Path(s.model).suffix.lower() == ".gguf" or hub.is_reference(s.model):
        return "llama-cpp"
    return "openai" if s.server.base_url else "llama-cpp"


def build_chat_model(s, warn=None):
    """The chat model SETTINGS describe, with its reply cache and counters."""
    name = pick_chat_backend(s)
    if name not in CHAT_MODELS:
        raise UsageError(f"backend '{name}' is not a chat model")
    cache = ResponseCache(Path(s.cache_dir) if s.cache_dir else default_dir() / "chat") if s.use_cache else None
    return CHAT_MODELS[name](s, cache, Stats(), warn)


@chat_backend("openai")
def _openai(s, cache, stats, warn):
    return OpenAIChat(s.server, None if s.model == BUILTIN else s.model, cache=cache, stats=stats, warn=warn,
                      key_params=s.cache_scope)


@chat_backend("llama-cpp")
def _llama_cpp(s, cache, stats, warn):
    found = hub.resolve(s.model, report=s.fetch) if hub.is_reference(s.model) else None
    model = builtin_gguf() if s.model == BUILTIN else found.path if found else s.model
    if not Path(model).exists():
        raise UsageError(f"model {model} does not exist")
    o = s.llama_cpp
    chat = LlamaChat(model, n_ctx=o.n_ctx, n_threads=o.threads, n_gpu_layers=o.n_gpu_layers,
                     repeat_penalty=o.repeat_penalty, cache=cache, stats=stats, parallel=o.parallel,
                     key_params=s.cache_scope)
    if found is not None:
        chat.source = found.source()
    return chat
