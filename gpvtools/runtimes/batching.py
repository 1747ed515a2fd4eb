"""Greedy chat replies of a local GGUF for many requests at once: one llama.cpp context, one decode a step.

gpv-parse -j N and gpv-elicit -j N with the llama-cpp backend hand their requests to a `BatchedLlama`:
up to N requests are the sequences of one llama.cpp context, each in a KV stream of its own as large
as the model's --n-ctx, and one thread (the driver) feeds the last token of every sequence to a single
llama_decode per step, samples each sequence's next token with its own sampler chain and, when a
sequence ends, gives its stream to the next waiting request (continuous batching). The prompt prefix
that requests share (the system prompt) is evaluated once and copied from stream to stream.

A reply is meant to be the one llama-cpp-python's `Llama.create_chat_completion` gives for the same
request, so that both live in one reply cache. What decides the reply is taken from llama-cpp-python
rather than rewritten: its chat handler formats and tokenizes the prompt and builds the grammar from
the schema (run with a stand-in whose create_completion hands back its arguments), and
`Llama._init_sampler` builds the sampler chain (repeat penalty over the last 64 tokens, the grammar,
greedy). What `_create_completion` and `generate` do around the sampler is done here the same way:
the context-window check and max_tokens cut, the reuse of the cells of a common prefix (the last
prompt token evaluated again when the whole prompt is held), the stops on an end-of-generation token,
a stop string and max_tokens, and the wait for the rest of a split UTF-8 character.

llama.cpp gives a token the same logits, to the bit, whether it is decoded alone or with other
sequences' tokens in the step, as long as its cell is at the same place (a stream per sequence, cells
from position 0) and its own sequence brings the same number of rows: one, or two and more. A token
evaluated as the only row of its sequence goes through other kernels than one among several, with
logits that differ in the last bits. So prompts are evaluated in the chunks `Llama.eval` uses from
the reused prefix on, each in a decode of its own; a reply can still differ where the prefix reused
is not the one the one-at-a-time path would have reused (it depends on which request came before),
and then only at a near tie.
"""

import collections
import ctypes
import threading

import numpy as np

# The shortest prefix worth copying another sequence's stream for: the copy of a whole stream costs
# about what evaluating a few tokens does.
SHARE_MIN = 16
# llama_token_data as numpy lays it out: id, logit, p
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


class _Captured(Exception):
    def __init__(self, kwargs):
        super().__init__("captured")
        self.kwargs = kwargs


class _FormatOnly:
    """The Llama as its chat handler sees it, except that create_completion hands back its arguments
    instead of generating: the prompt tokens, stop strings, stopping criteria and grammar are then the
    handler's own, for whatever chat format the model has."""

    def __init__(self, llm):
        self._llm = llm

    def __getattr__(self, name):
        return getattr(self._llm, name)

    def create_completion(self, **kwargs):
        raise _Captured(kwargs)


def chat_handler(llm):
    """The handler create_chat_completion uses for LLM (the same lookup)."""
    from llama_cpp import llama_chat_format

    return (llm.chat_handler or llm._chat_handlers.get(llm.chat_format)
            or llama_chat_format.get_chat_completion_handler(llm.chat_format))


def split_character_wait(text, waiting):
    """How many more tokens `_create_completion` lets pass before it checks the stops again, given the
    reply's bytes so far: while the last bytes open a UTF-8 character that is not complete. WAITING is
    the count carried over from the previous token (the rule, quirks included, is llama-cpp-python's)."""
    tail = text[-3:]
    for i, byte in enumerate(tail):
        k = 3 - i
        for width, lead in ((2, 0xC0), (3, 0xE0), (4, 0xF0)):
            if width > k and byte & lead == lead:
                waiting = width - k
    return waiting


class _Greedy:
    """The sampler chain Llama._init_sampler builds for greedy decoding (repeat penalty, grammar, greedy),
    applied the way llama.cpp's common sampler does: the penalty goes over the tokens seen so far, the
    best token after it is checked against the grammar alone, and only when the grammar rejects it does
    the grammar go over the whole vocabulary. The token is the chain's (the penalty changes only tokens
    in its window, the grammar only lowers logits to -inf, greedy takes the first best), for a fraction
    of the work: the grammar over SmolLM2's 49k tokens costs about as much as a decode step of the
    model. A chain of another make is sampled whole."""

    def __init__(self, lib, chain, n_vocab):
        self.lib, self.chain, self.n_vocab = lib, chain, n_vocab
        members = [lib.llama_sampler_chain_get(chain.sampler, i)
                   for i in range(lib.llama_sampler_chain_n(chain.sampler))]
        names = [lib.llama_sampler_name(m).decode() for m in members]
        self.fast = names in (["penalties", "greedy"], ["penalties", "grammar", "greedy"])
        self.penalties = members[0] if self.fast else None
        self.grammar = members[1] if self.fast and len(members) == 3 else None
        self.seen = set()  # every token accepted so far: a superset of those the penalty window holds

    def _apply(self, sampler, ids, logits):
        """SAMPLER's apply over the candidates IDS with LOGITS; the logits it leaves."""
        data = np.empty(len(ids), dtype=TOKEN_DATA)
        data["id"], data["logit"], data["p"] = ids, logits, 0.0
        array = self.lib.llama_token_data_array(
            data=data.ctypes.data_as(ctypes.POINTER(self.lib.llama_token_data)), size=len(ids), selected=-1,
            sorted=False)
        self.lib.llama_sampler_apply(sampler, ctypes.byref(array))
        return data["logit"]

    def sample(self, ctx, row):
        if not self.fast:
            return self.chain.sample(ctx, row)
        pointer = self.lib.llama_get_logits_ith(ctx.ctx, row)
        logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()
        if self.seen:
            ids = np.fromiter(self.seen, dtype=np.int32, count=len(self.seen))
            logits[ids] = self._apply(self.penalties, ids, logits[ids])
        token = int(np.argmax(logits))
        if self.grammar is not None:
            if self._apply(self.grammar, [token], logits[token:token + 1])[0] == -np.inf:
                logits = self._apply(self.grammar, np.arange(self.n_vocab, dtype=np.int32), logits)
                token = int(np.argmax(logits))
        self.lib.llama_sampler_accept(self.chain.sampler, token)
        self.seen.add(token)
        return token

    def close(self):
        self.chain.close()


def common_prefix(a, b):
    """How many tokens A and B share from the start."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class _Request:
    """One chat completion: what the handler asked for, and, once done, the reply or the error."""

    def __init__(self, prompt, sampler, stop, stopping, max_tokens):
        self.prompt, self.sampler, self.stop, self.stopping = prompt, sampler, stop, stopping
        self.max_tokens = max_tokens
        self.done = threading.Event()
        self.text = None
        self.completion_tokens = 0
        self.error = None


class _Slot:
    """A sequence of the context: the tokens its KV cells hold, and the request it is decoding."""

    def __init__(self, seq):
        self.seq = seq
        self.cached = []  # tokens whose cells the sequence holds, positions 0..len-1
        self.request = None
        self.feed = []  # tokens to evaluate next: the rest of the prompt, or the last sampled token
        self.prompting = False
        self.fresh = False  # its prompt not yet begun: it may take another sequence's cells first
        self.completion = []
        self.text = b""
        self.waiting = 0


class BatchedLlama:
    """Greedy create_chat_completion for up to N_SEQ requests at once, over the model LLM has loaded.

    `create_chat_completion` may be called from many threads; it blocks until its reply is decoded.
    """

    def __init__(self, llm, n_seq, n_threads=None, n_threads_batch=None):
        import llama_cpp
        from llama_cpp import _internals

        from .llama import quiet_stderr

        self._lib = llama_cpp
        self.llm = llm
        self.n_seq = max(1, min(n_seq, llama_cpp.llama_max_parallel_sequences()))
        self.n_ctx = llm.n_ctx()  # each request's window, as create_chat_completion has it
        self.chunk = llm.n_batch  # Llama.eval's chunk of prompt tokens
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.n_ctx = self.n_ctx * self.n_seq
        params.n_seq_max = self.n_seq
        params.kv_unified = False  # a stream per sequence: its cells where a context of its own has them
        params.n_batch = max(self.chunk, self.n_seq)
        params.n_ubatch = max(params.n_ubatch, self.n_seq)
        params.n_threads = n_threads or llm.n_threads
        params.n_threads_batch = n_threads_batch or n_threads or llm.n_threads_batch
        with quiet_stderr():
            self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self._batch = _internals.LlamaBatch(n_tokens=params.n_batch, embd=0, n_seq_max=1, verbose=False)
        if llama_cpp.llama_n_ctx_seq(self._ctx.ctx) < self.n_ctx:
            raise ValueError("llama.cpp gave each sequence fewer cells than asked for")
        self._vocab = llm._model.vocab
        self._pieces = {}
        self._slots = [_Slot(i) for i in range(self.n_seq)]
        self._queue = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = None
        self.most = 0  # the most sequences one decode step has carried (for tests and benchmarks)

    # --- the callers' side --------------------------------------------------------------------------------------

    def prepare(self, messages, temperature=0.0, max_tokens=None, repeat_penalty=1.0, response_format=None,
                **kwargs):
        """The request create_chat_completion would decode, or None when this path cannot decode it
        (sampling at a temperature, a handler that passes text rather than tokens, logit processors).
        Raises ValueError, as create_chat_completion does, when the prompt does not fit the context."""
        if temperature != 0:
            return None
        try:
            chat_handler(self.llm)(llama=_FormatOnly(self.llm), messages=messages, temperature=temperature,
                                   max_tokens=max_tokens, repeat_penalty=repeat_penalty,
                                   response_format=response_format, **kwargs)
        except _Captured as c:
            kw = c.kwargs
        else:
            return None
        prompt = kw.get("prompt")
        if (not isinstance(prompt, list) or not prompt or kw.get("logits_processor") is not None
                or kw.get("logit_bias") is not None or kw.get("stream") or kw.get("logprobs") is not None
                or kw.get("mirostat_mode", 0) != 0):
            return None
        if len(prompt) >= self.n_ctx:
            raise ValueError(f"Requested tokens ({len(prompt)}) exceed context window of {self.n_ctx}")
        limit = kw.get("max_tokens")
        if limit is None or limit <= 0:
            limit = self.n_ctx - len(prompt)
        limit = limit if limit + len(prompt) < self.n_ctx else self.n_ctx - len(prompt)
        stop = kw.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        chain = self.llm._init_sampler(
            temp=0.0, repeat_penalty=kw.get("repeat_penalty", 1.0),
            frequency_penalty=kw.get("frequency_penalty", 0.0), presence_penalty=kw.get("presence_penalty", 0.0),
            grammar=kw.get("grammar"))
        sampler = _Greedy(self._lib, chain, self.llm.n_vocab())
        return _Request(list(prompt), sampler, [s.encode("utf-8") for s in stop], kw.get("stopping_criteria"), limit)

    def create_chat_completion(self, messages, **kwargs):
        """Like Llama.create_chat_completion (text and usage only), or None where `prepare` gives None."""
        request = self.prepare(messages, **kwargs)
        if request is None:
            return None
        self.submit(request)
        request.done.wait()
        request.sampler.close()
        if request.error is not None:
            raise request.error
        return {"choices": [{"message": {"role": "assistant", "content": request.text}}],
                "usage": {"prompt_tokens": len(request.prompt), "completion_tokens": request.completion_tokens,
                          "total_tokens": len(request.prompt) + request.completion_tokens}}

    def submit(self, request):
        with self._cond:
            if self._closed:
                raise RuntimeError("the model is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._drive, name="llama-batch", daemon=True)
                self._thread.start()
            self._queue.append(request)
            self._cond.notify()

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        self._batch.close()
        self._ctx.close()

    # --- the driver -------------------------------------------------------------------------------------------

    def _drive(self):
        while True:
            with self._cond:
                while not self._closed and not self._queue and not self._active():
                    self._cond.wait()
                if self._closed:
                    error = RuntimeError("the model was closed")
                    for request in [s.request for s in self._active()] + list(self._queue):
                        request.error = error
                        request.done.set()
                    return
                for slot in self._slots:
                    if slot.request is None and self._queue:
                        self._start(slot, self._queue.popleft())
            try:
                self._step()
            except Exception as e:  # a failed decode ends the sequences in flight, never the process
                for slot in self._active():
                    self._forget(slot)
                    self._finish(slot, error=RuntimeError(f"llama.cpp: {e}"))

    def _active(self):
        return [s for s in self._slots if s.request is not None]

    def _start(self, slot, request):
        """Put REQUEST in SLOT, keeping the cells of the longest prefix it shares with what the slot holds."""
        slot.request, slot.prompting, slot.fresh = request, True, True
        slot.completion, slot.text, slot.waiting = [], b"", 0
        self._keep(slot, slot.seq, common_prefix(slot.cached, request.prompt))

    def _keep(self, slot, source, common):
        """Let SLOT hold the first COMMON tokens of its prompt, as sequence SOURCE holds them, and evaluate the
        rest. As in Llama.generate, a prompt held whole has its last token evaluated again for the logits."""
        prompt = slot.request.prompt
        keep = common - 1 if common == len(prompt) else common
        if source != slot.seq:
            # Between streams llama.cpp copies a whole stream (at the next decode); the tail goes below.
            self._lib.llama_memory_seq_cp(self._ctx.memory, source, slot.seq, -1, -1)
        self._lib.llama_memory_seq_rm(self._ctx.memory, slot.seq, keep, -1)
        slot.cached, slot.feed = prompt[:keep], prompt[keep:]

    def _share(self, slot):
        """Before SLOT's prompt is first evaluated: take the cells of a longer common prefix from another
        sequence (the system prompt every chunk shares, say), or wait a step for one that is evaluating it.
        False: wait."""
        prompt, own = slot.request.prompt, len(slot.cached)
        best, source, coming = own, None, False
        for other in self._slots:
            if other is slot or other.fresh:
                continue
            held = common_prefix(other.cached, prompt)
            if held > best:
                best, source = held, other
            if other.prompting and common_prefix(other.cached + other.feed, prompt) >= own + SHARE_MIN > held:
                coming = True
        if source is not None and best >= own + SHARE_MIN:
            self._keep(slot, source.seq, best)
        elif coming:
            return False
        slot.fresh = False
        return True

    def _forget(self, slot):
        self._lib.llama_memory_seq_rm(self._ctx.memory, slot.seq, 0, -1)
        slot.cached = []

    def _fill(self, rows):
        """Put ROWS, (seq, token, position, wants logits) each, in the batch."""
        b = self._batch.batch
        b.n_tokens = len(rows)
        for i, (seq, token, pos, logits) in enumerate(rows):
            b.token[i] = token
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits

    def _step(self):
        # Prompts first, each in a decode of its own and in Llama.eval's chunks, so that its cells hold
        # what create_completion would have put there.
        for slot in self._active():
            if not slot.prompting or (slot.fresh and not self._share(slot)):
                continue
            chunk, slot.feed = slot.feed[: self.chunk], slot.feed[self.chunk:]
            n_past = len(slot.cached)
            self._fill([(slot.seq, t, n_past + i, i == len(chunk) - 1) for i, t in enumerate(chunk)])
            self._ctx.decode(self._batch)
            slot.cached += chunk
            if not slot.feed:
                slot.prompting = False
                self._next(slot, len(chunk) - 1)
        # Then one token of every sequence that is generating, all in one decode.
        going = [s for s in self._active() if not s.prompting and s.feed]
        if not going:
            return
        self.most = max(self.most, len(going))
        self._fill([(s.seq, s.feed[0], len(s.cached), True) for s in going])
        self._ctx.decode(self._batch)
        for i, slot in enumerate(going):
            slot.cached.append(slot.feed.pop())
            self._next(slot, i)

    def _piece(self, token):
        piece = self._pieces.get(token)
        if piece is None:
            buffer = (ctypes.c_char * 32)()
            n = self._lib.llama_token_to_piece(self._vocab, self._lib.llama_token(token), buffer, 32, 0, False)
            piece = self._pieces[token] = bytes(buffer[:n])
        return piece

    def _shown(self, slot):
        """The reply's bytes as Llama.detokenize gives them (it drops the space after a leading BOS)."""
        if slot.completion and slot.completion[0] == self.llm.token_bos() and slot.text[:1] == b" ":
            return slot.text[1:]
        return slot.text

    def _next(self, slot, row):
        """Sample SLOT's next token from the logits of batch row ROW and apply create_completion's stops."""
        request = slot.request
        token = request.sampler.sample(self._ctx, row)
        if request.stopping is not None and request.stopping(np.asarray(slot.cached, dtype=np.intc), None):
            return self._finish(slot, self._shown(slot))
        if self._lib.llama_vocab_is_eog(self._vocab, token):
            return self._finish(slot, self._shown(slot))
        slot.completion.append(token)
        slot.text += self._piece(token)
        text = self._shown(slot)
        slot.waiting = split_character_wait(text, slot.waiting)
        if slot.waiting > 0:
            slot.waiting -= 1
        else:
            found = [s for s in request.stop if s in text]
            if found:
                return self._finish(slot, text[: text.index(found[0])])
            if len(slot.completion) >= request.max_tokens:
                return self._finish(slot, text)
        if len(slot.cached) + 1 > self.n_ctx:
            return self._finish(slot, error=ValueError("the reply does not fit the context window"))
        slot.feed = [token]

    def _finish(self, slot, text=None, error=None):
        request = slot.request
        if error is None:
            request.text = text.decode("utf-8", errors="ignore")
            request.completion_tokens = len(slot.completion)
        request.error = error
        slot.request, slot.feed, slot.prompting = None, [], False
        request.done.set()
