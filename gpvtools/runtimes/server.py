"""The one way gpvtools talks to an OpenAI-compatible server (OpenAI, vLLM, llama.cpp's server, Ollama).

gpv-parse and gpv-elicit (chat completions) and gpv-score (completions with log-probabilities) all go
through `Server`: one client, built here only; one retry policy (exponential backoff with jitter on
timeouts, connection failures, malformed answers, 429 and 5xx; a Retry-After header sets the wait, cut to
--max-retry-wait and logged when long); one translation of the client's errors into ours:

- a server that cannot be reached after the retries, refuses the key, has no such model, or still asks
  for a wait longer than --max-retry-wait after the retries: GpvError (the run stops; what was written is
  complete and --resume goes on from there);
- a request the server rejects (400, 422), or one still failing after the retries: BadRecord (that
  record fails, handled by --on-error; the rest go on).

The API key is sent only to the server it was given for and appears in no message or cache key; a
local server needs none, so a placeholder stands in for the client's sake.
"""

import email.utils
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..streaming.errors import BadRecord, GpvError, MissingDependency

RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}
NO_KEY = "not-needed"

# The defaults of --timeout, --retries, --backoff and --max-retry-wait, for every command that talks to a
# server (commands/common.py defines the options once, with these); the reasons are in the options' help.
DEFAULT_TIMEOUT = 120.0
DEFAULT_RETRIES = 6
DEFAULT_BACKOFF = 1.0
MAX_BACKOFF = 60.0  # the backoff's doubling stops here
DEFAULT_MAX_RETRY_WAIT = 300.0
LOGGED_WAIT = 10.0  # a Retry-After at least this long gets a line on stderr (a short one is routine rate limiting)


@dataclass(frozen=True)
class ServerSettings:
    """Where the server is and how patiently to talk to it (--base-url, --api-key, --timeout, --retries,
    --backoff, --max-retry-wait). `explicit` is whether the URL came from the command line rather than
    OPENAI_BASE_URL; `log(message)`, where given, reports long waits (the command's stderr)."""

    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    max_backoff: float = MAX_BACKOFF
    explicit: bool = False
    max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT
    log: Callable[[str], None] | None = field(default=None, repr=False, compare=False)


class Transient(Exception):
    """A failure worth retrying; `wait` is the server's Retry-After in seconds, if it gave one."""

    def __init__(self, message, *, wait=None, unreachable=False):
        super().__init__(message)
        self.wait, self.unreachable = wait, unreachable


class Refused(BadRecord):
    """The server refused a request in a way the caller said it can recover from (e.g. a response_format
    it does not take): raised at once, never retried."""


@dataclass
class Counters:
    """Retries and final failures, added to from worker threads."""

    retries: int = 0
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts):
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


def retry_after(response):
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
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def message_of(error):
    """A short message from an openai error: the server's own words where it sent some."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            inner = inner.get("message") or inner
        return str(body.get("message") or inner)[:300]
    return (str(error).splitlines() or [type(error).__name__])[0][:300]


class Server:
    """An OpenAI-compatible server: `chat(...)`, `complete(...)` and `only_model()`, with retries."""

    def __init__(self, settings, counters=None, what="backend 'openai'"):
        try:
            import openai
        except ImportError:
            raise MissingDependency(what, "openai", "server") from None
        if not settings.base_url:
            raise GpvError(f"{what} needs a server: pass --base-url or set OPENAI_BASE_URL")
        self.openai, self.settings, self.base_url = openai, settings, settings.base_url
        self.counters = counters or Counters()
        # Retries are ours (counted, jittered, Retry-After obeyed), so the client makes none of its own.
        self.client = openai.OpenAI(base_url=settings.base_url, api_key=settings.api_key or NO_KEY,
                                    timeout=settings.timeout, max_retries=0)

    # --- the calls ---------------------------------------------------------------------------------------------

    def chat(self, refused=None, **kwargs):
        """client.chat.completions.create(**KWARGS), retried. REFUSED(status, message) -> bool marks a
        rejection the caller recovers from itself: it is raised at once as Refused."""
        return self._with_retries(lambda: self._once(self.client.chat.completions.create, kwargs, refused))

    def complete(self, **kwargs):
        """client.completions.create(**KWARGS), retried."""
        return self._with_retries(lambda: self._once(self.client.completions.create, kwargs, None))

    def only_model(self):
        """The one model the server serves (for when --model is not given)."""
        openai = self.openai

        def listing():
            try:
                return [m.id for m in self.client.models.list()]
            except openai.APIConnectionError as e:
                raise Transient(f"connection failed ({message_of(e)})", unreachable=True) from None
            except openai.APIError as e:
                raise GpvError(f"cannot list the models at {self.base_url}: {message_of(e)}; pass --model") from None

        models = self._with_retries(listing)
        if len(models) != 1:
            raise GpvError(f"the server at {self.base_url} serves {len(models)} models; pick one with --model")
        return models[0]

    # --- one attempt, and the retries around it ------------------------------------------------------------------

    def _once(self, create, kwargs, refused):
        openai = self.openai
        try:
            response = create(**kwargs)
        except openai.APITimeoutError:
            raise Transient("the request timed out") from None
        except openai.APIConnectionError as e:
            raise Transient(f"connection failed ({message_of(e)})", unreachable=True) from None
        except openai.AuthenticationError:
            raise GpvError(f"the server at {self.base_url} refused the API key; set OPENAI_API_KEY") from None
        except openai.NotFoundError as e:
            raise GpvError(f"the server at {self.base_url} has no model '{kwargs.get('model')}': "
                           f"{message_of(e)}") from None
        except openai.APIStatusError as e:
            if refused is not None and refused(e.status_code, message_of(e)):
                raise Refused(f"the server refused the request: {message_of(e)}") from None
            if e.status_code in (400, 422):
                raise BadRecord(f"the server rejected the request: {message_of(e)}") from None
            if e.status_code in RETRY_STATUSES or e.status_code >= 500:
                raise Transient(f"the server answered {e.status_code}: {message_of(e)}",
                                wait=retry_after(e.response)) from None
            raise GpvError(f"the server at {self.base_url} answered {e.status_code}: {message_of(e)}") from None
        except (openai.APIResponseValidationError, ValueError) as e:
            # A body that is not the JSON the API promises: a proxy or server fault, often passing.
            raise Transient(f"the server's answer is malformed ({str(e)[:100]})") from None
        choices = getattr(response, "choices", None)
        if not choices or getattr(choices[0], "message", True) is None:
            raise Transient("the server's answer has no choices")
        return response

    def _with_retries(self, call):
        s = self.settings
        attempt = 0
        while True:
            try:
                return call()
            except Transient as e:
                too_long = e.wait is not None and e.wait > s.max_retry_wait
                if attempt >= s.retries:
                    self.counters.add(failures=1)
                    if e.unreachable:
                        raise GpvError(f"cannot reach the server at {self.base_url} "
                                       f"(after {s.retries} retries): {e}") from None
                    if too_long:
                        # Not the record's fault: a server that keeps saying "come back later" is one that
                        # cannot be used now, so the run stops where it is and --resume goes on later.
                        raise GpvError(f"the server at {self.base_url} still asks to wait {seconds(e.wait)} s "
                                       f"(Retry-After) after {s.retries} retries, longer than --max-retry-wait "
                                       f"{seconds(s.max_retry_wait)} s: {e}") from None
                    raise BadRecord(f"{e} (gave up after {s.retries} retries)") from None
                if e.wait is not None:
                    delay = min(e.wait, s.max_retry_wait)
                    if s.log is not None and (too_long or e.wait >= LOGGED_WAIT):
                        cut = " (--max-retry-wait)" if too_long else ""
                        s.log(f"the server at {self.base_url} asked to wait {seconds(e.wait)} s (Retry-After); "
                              f"waiting {seconds(delay)} s{cut}")
                else:
                    delay = min(s.max_backoff, s.max_retry_wait, s.backoff * 2 ** attempt) * random.uniform(0.5, 1.0)
                attempt += 1
                self.counters.add(retries=1)
                time.sleep(delay)


def seconds(x):
    """X seconds as a message shows them: whole from 10 up, else to 3 significant digits."""
    return f"{x:.0f}" if x >= 10 else f"{x:.3g}"
