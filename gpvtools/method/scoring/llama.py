"""The llama-cpp backend: a GGUF model in-process (CPU, or GPU offload when the build has it).

Two ways to evaluate the prompts, with the same results to the bit:

- batched (the default): a context of its own holds many sequences, each in a KV stream of its own
  whose cells sit where a context of its own would put them (positions from 0). Each task's header is
  evaluated once per run into a stream of its own. For a record, the header's stream is copied to a
  work stream and the sentence's tokens after it are evaluated there once; that stream is copied to one
  stream per value, and the values' suffixes ("Value: …\nOutput:\n") are evaluated together, one
  llama_decode call for the suffixes of each length, the last token of each giving the logits. llama.cpp
  splits a call over several streams into pieces with the same number of tokens from each stream, and a
  token is then computed to the bit as in a context of its own; suffixes of unequal lengths in one call
  would be cut and regrouped, and on quantized kernels their results moved by up to 0.1 (measured). So
  the results equal one prompt at a time exactly, on every kernel; a prompt longer than a stream is
  scored one at a time.
- one prompt at a time (`batched=False`, gpv-score --no-batch; the reference the tests compare with):
  every prompt is tokenized whole and only the tokens after the longest prefix it shares with the
  previous prompt are evaluated, so each further value of a sentence costs its own llama_decode call.
"""

import ctypes
import os

from ...runtimes.llama import load_llama, quiet_stderr
from ...streaming.errors import BadRecord, GpvError, MissingDependency
from . import LABELS, Decision, LabelScorer, first_label_tokens, prompt, renormalise, shared_prefix

try:
    import numpy as np
except ImportError:
    raise MissingDependency("backend 'llama-cpp'", "numpy", "cpu") from None

STREAM_CELLS = 256  # each sequence's cells in the batch context; a longer prompt is scored one at a time
WORK_STREAMS = 12  # values of a record evaluated together (more are cut into parts, each with the sentence)
TASK_SEQ = {task: k for k, task in enumerate(LABELS)}  # the task headers' streams; the work streams follow


class LlamaCppScorer(LabelScorer):
    backend = "llama-cpp"

    def __init__(self, model_path, *, name=None, n_ctx=4096, n_threads=None, n_gpu_layers=0, lora_path=None,
                 reuse_cache=True, batched=True, stream_cells=STREAM_CELLS, streams=WORK_STREAMS, f32_cache=False,
                 decision=None):
        self.decision = decision or Decision()
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
        self.batched = batched and reuse_cache
        # Batched, the Llama object tokenizes and scores a prompt longer than a stream; its context of
        # n_ctx cells is made when the first such prompt comes (self._long).
        self._load = lambda cells: load_llama(model_path, n_ctx=cells, n_batch=512, logits_all=False,
                                              n_gpu_layers=n_gpu_layers, **kwargs)
        self.llm = self._load(min(stream_cells, n_ctx) if self.batched else n_ctx)
        self._long = None if self.batched else self.llm
        self.name = name or os.path.basename(str(model_path))
        self.n_ctx = n_ctx
        self.reuse_cache = reuse_cache
        self.label_ids = {task: np.array(first_label_tokens(self.tokenize, task)) for task in LABELS}
        self.decoder = None
        if self.batched:
            self.decoder = _BatchDecoder(self.llm, min(stream_cells, n_ctx), streams)
            for task in LABELS:
                self.decoder.hold_header(task, self._header(task))

    def tokenize(self, text):
        return self.llm.tokenize(text.encode("utf-8", "surrogatepass"), add_bos=True, special=False)

    def _logits_after(self, ids):
        if self._long is None:
            self._long = self._load(self.n_ctx)
        llm = self._long
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
        alone = range(len(ids))
        if self.batched:
            fits = [i for i, x in enumerate(ids) if len(x) <= self.decoder.cells]
            for i, logits in self.decoder.logits(task, [pairs[i] for i in fits], [ids[i] for i in fits],
                                                 self.label_ids[task]):
                out[fits[i]] = renormalise(logits)
            alone = [i for i, x in enumerate(ids) if len(x) > self.decoder.cells]
        for i in alone:
            x = ids[i]
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
        if self._long is not None and self._long is not self.llm:
            self._long.close()
        self.llm.close()


class _BatchDecoder:
    """Evaluates many prompts in few llama_decode calls, on a context of its own built from the Llama
    object's model and settings (with the same LoRA adapter): a KV stream of CELLS cells per sequence, the
    task headers' streams first, then STREAMS work streams."""

    def __init__(self, llm, cells, streams):
        import llama_cpp
        from llama_cpp._internals import LlamaContext

        self.lib = llama_cpp
        self.cells = -(-cells // 256) * 256  # llama.cpp gives a stream a multiple of 256 cells
        self.streams = max(1, min(streams, llama_cpp.llama_max_parallel_sequences() - len(TASK_SEQ)))
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.n_seq_max = self.streams + len(TASK_SEQ)
        params.kv_unified = False  # a stream per sequence: cells where a context of its own has them
        params.n_ctx = self.cells * params.n_seq_max
        params.n_batch = params.n_ctx
        params.n_ubatch = min(512, params.n_batch)
        try:
            with quiet_stderr():
                self.context = LlamaContext(model=llm._model, params=params, verbose=False)
        except ValueError as e:
            raise GpvError(f"llama.cpp cannot make a batch context of {params.n_seq_max} x {self.cells} cells: "
                           f"{e}") from None
        self.ctx = self.context.ctx
        if llama_cpp.llama_n_ctx_seq(self.ctx) < self.cells:
            self.context.close()
            raise GpvError(f"llama.cpp gave the batch context's sequences fewer than {self.cells} cells")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        if llm._lora_adapter is not None:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(llm._lora_adapter)
            scales = (ctypes.c_float * 1)(llm.lora_scale)
            if llama_cpp.llama_set_adapters_lora(self.ctx, adapters, 1, scales):
                raise GpvError(f"llama.cpp could not apply the adapter {llm.lora_path} to the batch context")
        self.batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)
        self.headers = {}  # task -> the header tokens held in the task's stream

    def close(self):
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None
        self.context.close()

    def _decode(self, rows):
        """Evaluate ROWS, (stream, token, position, wants logits) each, in one llama_decode call."""
        b = self.batch
        for k, (seq, token, pos, logits) in enumerate(rows):
            b.token[k], b.pos[k], b.logits[k] = token, pos, logits
            b.n_seq_id[k] = 1
            b.seq_id[k][0] = seq
        b.n_tokens = len(rows)
        status = self.lib.llama_decode(self.ctx, b)
        if status != 0:
            raise GpvError(f"llama.cpp failed to evaluate a batch of {len(rows)} tokens (llama_decode: {status})")

    def hold_header(self, task, header):
        """Evaluate HEADER into the task's own stream, where it stays for every later call."""
        seq = TASK_SEQ[task]
        self._decode([(seq, token, k, k == len(header) - 1) for k, token in enumerate(header)])
        self.headers[task] = list(header)

    def _parts(self, task, pairs, ids):
        """The prompts grouped by sentence, at most `streams` a part: (start, prefix end, [prompt indices]).

        Tokens before `start` are the task header's (copied from its stream); those from start to the prefix
        end are the sentence's, evaluated once for the part; after that each prompt has its own. A part of
        one prompt evaluates it whole after the header, as one prompt at a time does."""
        header = self.headers[task]
        h = len(header)
        k = 0
        while k < len(pairs):
            end = k
            while end < len(pairs) and pairs[end][0] == pairs[k][0]:
                end += 1
            group = list(range(k, end))
            start = h if all(ids[i][:h] == header for i in group) else 0
            for at in range(0, len(group), self.streams):
                part = group[at:at + self.streams]
                prefix = shared_prefix([ids[i] for i in part]) if len(part) > 1 else start
                yield start, max(prefix, start), part
            k = end

    def logits(self, task, pairs, ids, label_ids):
        """(prompt index, its label logits) for every prompt: a record's sentence in one stream; then, that
        stream copied to one per value, the suffixes, one call for those of each length."""
        base = len(TASK_SEQ)
        for start, prefix, part in self._parts(task, pairs, ids):
            seqs = list(range(base, base + len(part)))
            try:
                if start:
                    self.lib.llama_memory_seq_cp(self.memory, TASK_SEQ[task], seqs[0], -1, -1)
                if prefix > start:
                    first = ids[part[0]]
                    self._decode([(seqs[0], first[pos], pos, False) for pos in range(start, prefix)])
                if prefix:
                    for s in seqs[1:]:
                        self.lib.llama_memory_seq_cp(self.memory, seqs[0], s, -1, -1)
                by_length = {}
                for i, s in zip(part, seqs):
                    by_length.setdefault(len(ids[i]), []).append((i, s))
                for same in by_length.values():
                    rows, outputs = [], []
                    for i, s in same:
                        x = ids[i]
                        rows += [(s, x[pos], pos, pos == len(x) - 1) for pos in range(prefix, len(x))]
                        outputs.append((i, len(rows) - 1))
                    self._decode(rows)
                    for i, at in outputs:
                        row = self.lib.llama_get_logits_ith(self.ctx, at)
                        yield i, np.array([row[t] for t in label_ids], dtype=np.float64)
            finally:
                for s in seqs:
                    self.lib.llama_memory_seq_rm(self.memory, s, -1, -1)
