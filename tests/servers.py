"""Servers on 127.0.0.1 for the tests and benchmarks: llama-cpp-python's real OpenAI-compatible server,
a fault-injecting HTTP proxy in front of any server, and a chat server that answers after a fixed delay.

The proxy and the delay server are real HTTP servers speaking to the real openai client over real
sockets; they stand in for network and server faults, and for a server whose speed is known.
"""

import hashlib
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpvtools.runtimes.models import builtin_gguf


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url, proc=None, log_path=None, seconds=60):
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            log = log_path.read_text()[-2000:] if log_path else ""
            raise RuntimeError(f"no server came up on {url} within {seconds} s:\n{log}")
        time.sleep(0.25)


def start_llama_server(log_path, *flags, threads=1, n_ctx=2048, model=None):
    """llama_cpp.server with the built-in GGUF on a free port: (process, /v1 URL, log file)."""
    port = free_port()
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", model or builtin_gguf(),
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
                             "--n_threads", str(threads), "--n_threads_batch", str(threads), *flags],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(url, proc, log_path)
    except RuntimeError as e:
        stop_server(proc, log)
        pytest.fail(str(e))
    return proc, url, log


def stop_server(proc, log=None):
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if log is not None:
        log.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # clients that time out or are killed hang up mid-answer: expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self):
        self.server.owner.get(self)

    def do_POST(self):
        self.server.owner.post(self, self._body())


class _Base:
    """A threaded HTTP server on a free port; `url` is its /v1 base; a context manager."""

    def __init__(self):
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _hung_up(sock):
    """True when the client closed its end: the socket reads as end-of-file."""
    import select

    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def request_digest(body):
    """What identifies a model request: a chat's messages (the same chunk asks the same thing), else the whole
    body (a completion's prompt with its parameters)."""
    try:
        messages = json.loads(body)["messages"]
    except (ValueError, KeyError, TypeError):
        return hashlib.sha256(body).hexdigest()
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


FAULTED_PATHS = ("/chat/completions", "/completions")  # gpv-parse and gpv-elicit chat; gpv-score completes


class FaultProxy(_Base):
    """Forwards to UPSTREAM, except that model requests (POST /chat/completions or /completions) take the next
    fault from `faults` first.

    Faults: "timeout" (hold the request SECONDS then drop it), "429" (with Retry-After: 1), "429-day" (with
    Retry-After: 86400, a server out of its daily quota), "500", "503",
    "reset" (TCP RST), "malformed" (200 with a body that is not JSON), "empty" (200, no body),
    "empty-content" (the upstream's answer with the message content, or a completion's text, emptied),
    None (forward).
    `log` records (time, digest, what happened) per model request; `requests` keeps each one's path and
    parsed body, in arrival order; `injected` counts the faults actually served, by name.
    """

    def __init__(self, upstream, faults=(), hold=3.0, paths=FAULTED_PATHS):
        super().__init__()
        self.upstream, self.faults, self.hold, self.paths = upstream, list(faults), hold, tuple(paths)
        self.log = []
        self.requests = []  # (path, body as parsed JSON, or the raw bytes when it is not JSON)
        self.injected = {}

    def get(self, h):
        status, body, _ = self._forward("GET", h.path, None)
        h._send(status, body)

    def _forward(self, method, path, body):
        url = self.upstream + path[len("/v1"):]
        req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                return r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers

    def post(self, h, body):
        model_request = h.path.endswith(self.paths)  # faults apply to it, and it is logged
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = body
        with self.lock:
            fault = self.faults.pop(0) if model_request and self.faults else None
            self.requests.append((h.path, parsed))
            if fault is not None:
                self.injected[fault] = self.injected.get(fault, 0) + 1
        digest = request_digest(body)
        if fault == "timeout":
            self._note(digest, "timeout")
            time.sleep(self.hold)
            h.close_connection = True
            return
        if fault in ("429", "429-day", "500", "503"):
            headers = {"429": [("Retry-After", "1")], "429-day": [("Retry-After", "86400")]}.get(fault, [])
            self._note(digest, fault)
            status = int(fault[:3])
            h._send(status, json.dumps({"error": {"message": f"injected {status}"}}).encode(), headers)
            return
        if fault == "reset":
            self._note(digest, "reset")
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            h.connection.close()
            return
        if fault == "malformed":
            self._note(digest, "malformed")
            h._send(200, b'{"id": "x", "choices": [{"message": {"content": "{\\"perc')
            return
        if fault == "empty":
            self._note(digest, "empty")
            h._send(200, b"")
            return
        status, answer, headers = self._forward("POST", h.path, body)
        if fault == "empty-content" and status == 200:
            data = json.loads(answer)
            choice = data["choices"][0]
            if "message" in choice:
                choice["message"]["content"] = ""
            else:
                choice["text"] = ""
            answer = json.dumps(data).encode()
        if model_request:
            self._note(digest, fault or f"forwarded {status}")
        h._send(status, answer)

    def _note(self, digest, what):
        with self.lock:
            self.log.append((time.monotonic(), digest, what))


class DelayChatServer(_Base):
    """An OpenAI-compatible chat server that answers every request after DELAY seconds, many at once.

    The answer is derived from the request, so it is deterministic: the perceptions are the sentences of
    the user message's text (none when it has fewer than WORDS words). `answered` counts completed
    answers per request digest.
    """

    def __init__(self, delay=0.0, model="delay-model", min_words=4, jitter=0.0):
        super().__init__()
        self.delay, self.model, self.min_words, self.jitter = delay, model, min_words, jitter
        self.answered = {}  # digest -> answers sent to a client still listening
        self.abandoned = 0  # requests whose client hung up (was killed) before the answer was ready
        self.in_flight = self.peak = 0

    def get(self, h):
        h._send(200, json.dumps({"object": "list", "data": [{"id": self.model, "object": "model"}]}).encode())

    def post(self, h, body):
        request = json.loads(body)
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        digest = request_digest(body)
        # Jitter from the request itself, so answers finish out of order yet every run alike.
        time.sleep(self.delay + self.jitter * (int(digest[:4], 16) / 0xFFFF))
        text = request["messages"][-1]["content"]
        if text.startswith('Text: "') and text.endswith('"'):
            text = text[len('Text: "'):-1]
        sentences = [s.strip() for s in text.replace("!", ".").replace("?", ".").split(".")]
        perceptions = [s for s in sentences if len(s.split()) >= self.min_words]
        content = json.dumps({"perceptions": perceptions})
        answer = {"id": "d", "object": "chat.completion", "created": 0, "model": self.model,
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": content}}],
                  "usage": {"prompt_tokens": len(text.split()), "completion_tokens": len(content.split()),
                            "total_tokens": 0}}
        gone = _hung_up(h.connection)
        if not gone:
            h._send(200, json.dumps(answer).encode())
        with self.lock:
            self.in_flight -= 1
            if gone:
                self.abandoned += 1
            else:
                self.answered[digest] = self.answered.get(digest, 0) + 1


def chat_answer(content, model, prompt_tokens=0):
    return {"id": "s", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(content.split()), "total_tokens": 0}}



class GatedChatServer(DelayChatServer):
    """The delay server, but once armed (`gate` set to N) it holds every request until N are held at once;
    then it answers them all and every later one as usual. `held_at_once` is the most held together;
    `gate_timed_out` says whether a request gave up waiting (after DEADLINE) instead."""

    def __init__(self, deadline=180, **kwargs):
        super().__init__(**kwargs)
        self.deadline = deadline
        self.gate, self.held, self.held_at_once, self.gate_timed_out = None, 0, 0, False
        self.opened = threading.Event()

    def post(self, h, body):
        if self.gate is not None:
            with self.lock:
                self.held += 1
                self.held_at_once = max(self.held_at_once, self.held)
                if self.held >= self.gate:
                    self.opened.set()
            if not self.opened.wait(self.deadline):
                self.gate_timed_out = True
            with self.lock:
                self.held -= 1
        super().post(h, body)


class ScriptedChatServer(_Base):
    """An OpenAI-compatible chat server whose answer is SCRIPT(request) -> message content, after DELAY
    seconds (plus up to JITTER, derived from the request, so runs are alike yet finish out of order).

    `requests` keeps every chat request body (parsed); `answered` counts answers per request digest.
    """

    def __init__(self, script, model="scripted-model", delay=0.0, jitter=0.0):
        super().__init__()
        self.script, self.model, self.delay, self.jitter = script, model, delay, jitter
        self.requests, self.answered = [], {}

    def get(self, h):
        h._send(200, json.dumps({"object": "list", "data": [{"id": self.model, "object": "model"}]}).encode())

    def post(self, h, body):
        request = json.loads(body)
        digest = request_digest(body)
        with self.lock:
            self.requests.append(request)
        time.sleep(self.delay + self.jitter * (int(digest[:4], 16) / 0xFFFF))
        content = self.script(request)
        if _hung_up(h.connection):
            return
        h._send(200, json.dumps(chat_answer(content, self.model)).encode())
        with self.lock:
            self.answered[digest] = self.answered.get(digest, 0) + 1
