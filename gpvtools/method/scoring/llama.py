"""The llama-cpp backend: a GGUF model in-process (CPU, or GPU offload when the build has it).

Two ways to evaluate the prompts, with the same results up to float rounding:

- batched (the default): the pairs of a call go into a few large `llama_decode` calls. Each (sentence,
  value) prompt is a sequence of its own in one unified KV cache. The task header, the same for every
  prompt of a task, is evaluated once per run into a sequence of its own and shared with every prompt
  (llama_memory_seq_cp adds a sequence id to its cells; nothing is copied); the sentence's tokens after the
  header are evaluated once per sentence, carrying the sequence ids of all of that sentence's values; each
  value's suffix ("Value: …\\nOutput:\\n") is its own. The last token of each suffix gives the logits. A
  decode of a few hundred tokens costs little more than one of ten on a CPU, which is where the speed is.
- one prompt at a time (`batched=False`, gpv-score --no-batch; the reference the tests compare with):
  every prompt is tokenized whole and only the tokens after the longest prefix it shares with the
  previous prompt are evaluated, so each further value of a sentence costs its own llama_decode call.
"""

import ctypes
import os

from ...runtimes.llama import load_llama, quiet_stderr
from ...streaming.errors import BadRecord, GpvError, MissingDependency
from . import LABELS, LabelScorer, first_label_tokens, prompt, renormalise, shared_prefix

try:
    import numpy as np
except ImportError:
    raise MissingDependency("backend 'llama-cpp'", "numpy", "cpu") from None

DECODE_TOKENS = 512  # tokens one batched llama_decode call aims at (a longer single prompt gets a call alone)
MAX_SEQUENCES = 128  # prompts in one call at most (llama.cpp allows 256 sequences)
HEADROOM = 256  # cells for the task headers, beside a prompt as long as the context
TASK_SEQ = {task: k for k, task in enumerate(LABELS)}  # the task headers' sequence ids; prompts use the next


class LlamaCppScorer(LabelScorer):
    backend = "llama-cpp"

    def __init__(self, model_path, name=None, n_ctx=4096, n_threads=None, n_gpu_layers=0, lora_path=None,
                 reuse_cache=True, batched=True, decode_tokens=DECODE_TOKENS, f32_cache=False):
        try:
            import llama_cpp
        except ImportError:
            raise MissingDependency("backend 'llama-cpp'", "llama-cpp-python", "cpu") from None

        self._llama_cpp = llama_cpp
        kwargs = {"lora_path": lora_path} if lora_path else {}
        if f32_cache:  # keys and values kept in float32, not float16: see --precision f32
            kwargs["type_k"] = kwargs["type_v"] = llama_cpp.GGML_TYPE_F32
        if n_threads:  # else llama-cpp-python's default: half the cores, which degrades least under load
            kwargs["n_threads"] = kwargs["n_threads_batch"] = n_threads
        # Batched, the Llama object only tokenizes: its own context is kept small, the batch context is n_ctx.
        self.batched = batched and reuse_cache
        self.llm = load_llama(model_path, n_ctx=256 if self.batched else n_ctx, n_batch=512, logits_all=False,
                              n_gpu_layers=n_gpu_layers, **kwargs)
        self.name = name or os.path.basename(str(model_path))
        self.n_ctx = n_ctx
        self.reuse_cache = reuse_cache
        self.label_ids = {task: np.array(first_label_tokens(self.tokenize, task)) for task in LABELS}
        self.decoder = None
        if self.batched:
            self.decoder = _BatchDecoder(self.llm, n_ctx, decode_tokens)
            for task in LABELS:  # both headers first, in a fixed order: the cells' layout never varies
                self.decoder.hold_header(task, self._header(task))

    def tokenize(self, text):
        return self.llm.tokenize(text.encode("utf-8", "surrogatepass"), add_bos=True, special=False)

    def _logits_after(self, ids):
        llm = self.llm
        common = 0
        if self.reuse_cache and llm.n_tokens:
            m = min(llm.n_tokens, len(ids))
            same = llm.input_ids[:m] == np.asarray(ids[:m])
            common = m if same.all() else int(same.argmin())
        common = min(common, len(ids) - 1)  # the last token must be evaluated to get its logits
        llm.n_tokens = common
        llm.eval(ids[common:])
        ptr = self._llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))

    def _prompt_ids(self, task, pairs):
        ids = []
        for sentence, value in pairs:
            x = self.tokenize(prompt(task, sentence, value))
            if len(x) > self.n_ctx:
                raise BadRecord(f"text is {len(x)} tokens with the prompt, over the model's context of {self.n_ctx}")
            ids.append(x)
        return ids

    def label_probs(self, task, pairs):
        ids = self._prompt_ids(task, pairs)  # every length is checked before anything is evaluated
        out = np.empty((len(pairs), len(LABELS[task])))
        if self.batched:
            for i, logits in self.decoder.logits(task, pairs, ids, self.label_ids[task]):
                out[i] = renormalise(logits)
            return out
        for i, x in enumerate(ids):
            try:
                logits = self._logits_after(x)
            except RuntimeError as e:
                raise GpvError(f"llama.cpp failed to evaluate a prompt: {e}") from None
            out[i] = renormalise(logits[self.label_ids[task]])
        return out

    def _header(self, task):
        """The tokens every prompt of TASK starts with (its instructions, up to "Sentence:")."""
        a = self.tokenize(prompt(task, "x", "y"))
        b = self.tokenize(prompt(task, "Quite another sentence.", "Other"))
        return a[:shared_prefix([a, b])]

    def close(self):
        if self.decoder is not None:
            self.decoder.close()
        self.llm.close()


class _BatchDecoder:
    """Evaluates many prompts in few llama_decode calls on a context of its own (unified KV cache, many
    sequences), built from the Llama object's model and settings, with the same LoRA adapter."""

    def __init__(self, llm, n_ctx, decode_tokens):
        import llama_cpp
        from llama_cpp._internals import LlamaContext

        self.lib = llama_cpp
        self.n_ctx = n_ctx
        self.decode_tokens = min(decode_tokens, n_ctx)
        self.max_seqs = min(MAX_SEQUENCES, llama_cpp.llama_max_parallel_sequences() - len(TASK_SEQ))
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.n_seq_max = self.max_seqs + len(TASK_SEQ)
        params.n_ctx = n_ctx + HEADROOM
        params.n_batch = max(n_ctx, params.n_seq_max)  # llama.cpp asserts room for an output per sequence
        params.n_ubatch = min(512, params.n_batch)
        params.kv_unified = True
        try:
            with quiet_stderr():
                self.context = LlamaContext(model=llm._model, params=params, verbose=False)
        except ValueError as e:
            raise GpvError(f"llama.cpp cannot make a batch context of {n_ctx} tokens: {e}") from None
        self.ctx = self.context.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        if llm._lora_adapter is not None:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(llm._lora_adapter)
            scales = (ctypes.c_float * 1)(llm.lora_scale)
            if llama_cpp.llama_set_adapters_lora(self.ctx, adapters, 1, scales):
                raise GpvError(f"llama.cpp could not apply the adapter {llm.lora_path} to the batch context")
        self.batch = llama_cpp.llama_batch_init(n_ctx, 0, params.n_seq_max)
        self.headers = {}  # task -> the header tokens held in the task's sequence

    def close(self):
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None
        self.context.close()

    def _decode(self, n_tokens):
        self.batch.n_tokens = n_tokens
        status = self.lib.llama_decode(self.ctx, self.batch)
        if status != 0:
            raise GpvError(f"llama.cpp failed to evaluate a batch of {n_tokens} tokens (llama_decode: {status})")

    def _put(self, k, token, pos, seqs, logits):
        b = self.batch
        b.token[k], b.pos[k], b.logits[k] = token, pos, logits
        b.n_seq_id[k] = len(seqs)
        for j, s in enumerate(seqs):
            b.seq_id[k][j] = s

    def hold_header(self, task, header):
        """Evaluate HEADER into the task's own sequence, where it stays for every later call."""
        seq = TASK_SEQ[task]
        for k, token in enumerate(header):
            self._put(k, token, k, (seq,), k == len(header) - 1)
        self._decode(len(header))
        self.headers[task] = list(header)

    def _parts(self, task, pairs, ids):
        """The prompts, grouped by sentence and cut to fit a call: (start, prefix end, [prompt indices]).

        Tokens before `start` are the task header's (shared); those from start to the prefix end are the
        sentence's, evaluated once for the part; after that each prompt has its own."""
        groups, k = [], 0
        while k < len(pairs):
            end = k
            while end < len(pairs) and pairs[end][0] == pairs[k][0]:
                end += 1
            groups.append(list(range(k, end)))
            k = end
        header = self.headers[task]
        h = len(header)
        for group in groups:
            start = h if all(ids[i][:h] == header for i in group) else 0
            part = []
            for i in group:
                prefix = shared_prefix([ids[j] for j in part + [i]])
                cost = (prefix - start) + sum(len(ids[j]) - prefix for j in part + [i])
                if part and (cost > self.decode_tokens or len(part) == self.max_seqs):
                    yield start, shared_prefix([ids[j] for j in part]), part
                    part = []
                part.append(i)
            if part:
                yield start, shared_prefix([ids[j] for j in part]), part

    def logits(self, task, pairs, ids, label_ids):
        """(prompt index, its label logits) for every prompt: one call per sentence (per part of one).

        A call never mixes sentences. After every call the memory holds the task headers alone, so the same
        sentence's prompts land in the same cells whatever was scored before or beside it: a record's scores
        do not depend on its batch (--batch-size) or on where a resumed run began. Mixing sentences would
        save little: on a CPU a call of 64 tokens costs about as much per token as one of 512 (measured).
        """
        base = len(TASK_SEQ)
        for start, prefix, part in self._parts(task, pairs, ids):
            seqs = list(range(base, base + len(part)))
            if start:
                for s in seqs:
                    self.lib.llama_memory_seq_cp(self.memory, TASK_SEQ[task], s, -1, -1)
            k, outputs = 0, []
            first = ids[part[0]]
            for pos in range(start, prefix):
                self._put(k, first[pos], pos, seqs, False)
                k += 1
            for i, s in zip(part, seqs):
                x = ids[i]
                for pos in range(prefix, len(x)):
                    self._put(k, x[pos], pos, (s,), pos == len(x) - 1)
                    k += 1
                outputs.append((i, k - 1))
            try:
                self._decode(k)
                for i, at in outputs:
                    row = self.lib.llama_get_logits_ith(self.ctx, at)
                    yield i, np.array([row[t] for t in label_ids], dtype=np.float64)
            finally:
                for s in seqs:
                    self.lib.llama_memory_seq_rm(self.memory, s, -1, -1)
