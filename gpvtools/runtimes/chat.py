"""Chat models behind one call, `chat(messages) -> Reply`, for OpenAI-compatible servers and local GGUFs.

What a user of a remote model needs is here once: retries with exponential backoff and jitter on
timeouts, connection failures, 429 and 5xx (a Retry-After header is obeyed), JSON output enforced
with the strongest `response_format` the server accepts, a disk cache, and counts for the summary.
"""

import email.utils
import random
import threading
import time
from dataclasses import dataclass, field

from ..streaming.errors import BadRecord, GpvError, MissingDependency
from .cache import request_key

# The response_format requests tried in turn, strongest first; the first one a server accepts is kept.
# llama-cpp-python's server rejects json_schema but honours a schema given with json_object; others take
# json_object alone; a few take none.
FORMATS = ("json_schema", "json_object+schema", "json_object", "none")
RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}


class Transient(Exception):
    """A failure worth retrying; `wait` is the server's Retry-After in seconds, if it gave one."""

    def __init__(self, message, wait=None):
        super().__init__(message)
        self.wait = wait


@dataclass
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


@dataclass
class Stats:
    """What a run cost; updated from worker threads."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts):
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def lines(self):
        sent = self.requests - self.cache_hits
        return [f"{self.requests} requests: {sent} sent, {self.cache_hits} answered from the cache, "
                f"{self.retries} retries, {self.failures} failed; tokens sent {self.prompt_tokens}, "
                f"received {self.completion_tokens}"]


class ChatModel:
    """Subclasses set backend and name and implement _complete(messages, schema, params) -> Reply."""

    backend = "chat"
    name = "?"
    concurrency = None  # None: as many requests in flight as asked; 1: one at a time

    def __init__(self, cache=None, stats=None):
        self.cache = cache
        self.stats = stats or Stats()
        self.key_params = {}  # backend settings that change the answer, so they are part of the cache key

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


def _retry_after(response):
    """Seconds from a Retry-After (or retry-after-ms) header: a number or an HTTP date; None if absent."""
    if response is None:
        return None
    headers = response.headers
    if headers.get("retry-after-ms"):
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, when.timestamp() - time.time()) if when else None


def message_of(error):
    """A short message from an openai error: the server's own words where it sent some."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            inner = inner.get("message") or inner
        return str(body.get("message") or inner)[:300]
    return (str(error).splitlines() or [type(error).__name__])[0][:300]


def only_model(client, base_url, openai, unreachable=None):
    """The one model a server serves (for when --model is not given).

    UNREACHABLE(error) gives the exception to raise when the server cannot be reached.
    """
    try:
        models = [m.id for m in client.models.list()]
    except openai.APIConnectionError as e:
        raise (unreachable(e) if unreachable else GpvError(f"cannot reach the server at {base_url}")) from None
    except openai.APIError as e:
        raise GpvError(f"cannot list the models at {base_url}: {message_of(e)}; pass --model") from None
    if len(models) != 1:
        raise GpvError(f"the server at {base_url} serves {len(models)} models; pick one with --model")
    return models[0]


class OpenAIChat(ChatModel):
    """Any OpenAI-compatible /v1/chat/completions endpoint (OpenAI, vLLM, llama.cpp's server, Ollama)."""

    backend = "openai"

    def __init__(self, base_url, api_key=None, model=None, timeout=120.0, retries=6, backoff=1.0,
                 max_backoff=60.0, cache=None, stats=None, warn=None):
        super().__init__(cache, stats)
        try:
            import openai
        except ImportError:
            raise MissingDependency("backend 'openai'", "openai", "server") from None
        if not base_url:
            raise GpvError("backend 'openai' needs a server: pass --base-url or set OPENAI_BASE_URL")
        self.openai, self.base_url = openai, base_url
        # Retries are ours (counted, jittered, Retry-After obeyed), so the client makes none of its own.
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout,
                                    max_retries=0)
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.warn = warn or (lambda message: None)
        self.format_level = 0
        self.format_lock = threading.Lock()
        self.name = model or self._with_retries(lambda: only_model(
            self.client, base_url, openai, lambda e: Transient(f"connection failed ({message_of(e)})")))

    def _response_format(self, level, schema):
        kind = FORMATS[level]
        if schema is None or kind == "none":
            return None
        if kind == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}
        if kind == "json_object+schema":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_object"}

    def _once(self, messages, schema, params):
        """One request; Transient for what is worth retrying; the reply or a final error otherwise."""
        openai = self.openai
        while True:
            level = self.format_level
            kwargs = {"model": self.name, "messages": messages, "temperature": params["temperature"],
                      "max_tokens": params["max_tokens"]}
            if params["seed"] is not None:
                kwargs["seed"] = params["seed"]
            response_format = self._response_format(level, schema)
            if response_format is not None:
                kwargs["response_format"] = response_format
            try:
                r = self.client.chat.completions.create(**kwargs)
            except openai.APITimeoutError:
                raise Transient("the request timed out") from None
            except openai.APIConnectionError as e:
                raise Transient(f"connection failed ({message_of(e)})") from None
            except openai.AuthenticationError:
                raise GpvError(f"the server at {self.base_url} refused the API key; set OPENAI_API_KEY") from None
            except openai.NotFoundError as e:
                raise GpvError(f"the server at {self.base_url} has no model '{self.name}': {message_of(e)}") from None
            except openai.APIStatusError as e:
                # A refused response_format is a 400 or 422, or, from llama-cpp-python's server, a 500 whose
                # message names the field: step down to the next weaker format and ask again at once.
                refused = e.status_code in (400, 422) or "response_format" in message_of(e)
                if refused and response_format is not None and level < len(FORMATS) - 1:
                    with self.format_lock:
                        if self.format_level == level:
                            self.format_level = level + 1
                            self.warn(f"the server refused response_format {FORMATS[level]}; "
                                      f"trying {FORMATS[level + 1]}")
                    continue
                if e.status_code in (400, 422):
                    raise BadRecord(f"the server rejected the request: {message_of(e)}") from None
                if e.status_code in RETRY_STATUSES or e.status_code >= 500:
                    raise Transient(f"the server answered {e.status_code}: {message_of(e)}",
                                    _retry_after(e.response)) from None
                raise GpvError(f"the server at {self.base_url} answered {e.status_code}: {message_of(e)}") from None
            except (openai.APIResponseValidationError, ValueError) as e:
                # A body that is not the JSON the API promises: a proxy or server fault, often passing.
                raise Transient(f"the server's answer is malformed ({str(e)[:100]})") from None
            return self._reply(r)

    def _reply(self, r):
        choices = getattr(r, "choices", None)
        if not choices or choices[0].message is None:
            raise Transient("the server's answer has no choices")
        text = choices[0].message.content or ""
        usage = getattr(r, "usage", None)
        return Reply(text, getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0)

    def _with_retries(self, call):
        attempt = 0
        while True:
            try:
                return call()
            except Transient as e:
                if attempt >= self.retries:
                    self.stats.add(failures=1)
                    if str(e).startswith("connection failed"):
                        raise GpvError(f"cannot reach the server at {self.base_url} "
                                       f"(after {self.retries} retries): {e}") from None
                    raise BadRecord(f"{e} (gave up after {self.retries} retries)") from None
                delay = e.wait if e.wait is not None else \
                    min(self.max_backoff, self.backoff * 2 ** attempt) * random.uniform(0.5, 1.0)
                attempt += 1
                self.stats.add(retries=1)
                time.sleep(delay)

    def _complete(self, messages, schema, params):
        return self._with_retries(lambda: self._once(messages, schema, params))


class LlamaChat(ChatModel):
    """A local GGUF chat model in-process with llama-cpp-python; JSON enforced by a grammar from the schema.

    One request at a time: a llama.cpp context is not shared between threads.
    """

    backend = "llama-cpp"
    concurrency = 1

    def __init__(self, path, name=None, n_ctx=4096, n_threads=None, n_gpu_layers=0, repeat_penalty=1.0,
                 cache=None, stats=None):
        super().__init__(cache, stats)
        self.repeat_penalty = repeat_penalty
        self.key_params = {"repeat_penalty": repeat_penalty}
        import os

        from .llama import load_llama

        self.path = str(path)
        self.name = name or f"{os.path.basename(self.path)}:{os.path.getsize(self.path)}"
        self.llm = load_llama(self.path, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers)
        self.lock = threading.Lock()

    def _complete(self, messages, schema, params):
        kwargs = {"messages": messages, "temperature": params["temperature"], "max_tokens": params["max_tokens"],
                  "repeat_penalty": self.repeat_penalty}
        if params["temperature"] == 0:
            kwargs["top_k"] = 1
        if params["seed"] is not None:
            kwargs["seed"] = params["seed"]
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        with self.lock:
            try:
                r = self.llm.create_chat_completion(**kwargs)
            except ValueError as e:  # e.g. the prompt does not fit the context
                raise BadRecord(f"llama.cpp: {e}") from None
        usage = r.get("usage") or {}
        return Reply(r["choices"][0]["message"].get("content") or "", usage.get("prompt_tokens", 0),
                     usage.get("completion_tokens", 0))

    def close(self):
        self.llm.close()
