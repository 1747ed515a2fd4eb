"""The llama-cpp backend: a GGUF model in-process (CPU, or GPU offload when the build has it).

Speed comes from the KV cache: every prompt is tokenized whole (so results equal scoring it from
scratch), and only the tokens after the longest prefix it shares with the previous prompt are
evaluated. Pairs arrive grouped by sentence, so the task header and the sentence are evaluated
once per perception and each further value costs its own few tokens ("Value: …\\nOutput:\\n").
"""

import os

from ...runtimes.llama import load_llama
from ...streaming.errors import BadRecord, GpvError, MissingDependency
from . import LABELS, LabelScorer, first_label_tokens, prompt, renormalise

try:
    import numpy as np
except ImportError:
    raise MissingDependency("backend 'llama-cpp'", "numpy", "cpu") from None


class LlamaCppScorer(LabelScorer):
    backend = "llama-cpp"

    def __init__(self, model_path, name=None, n_ctx=4096, n_threads=None, n_gpu_layers=0, lora_path=None,
                 reuse_cache=True):
        try:
            import llama_cpp
        except ImportError:
            raise MissingDependency("backend 'llama-cpp'", "llama-cpp-python", "cpu") from None

        self._llama_cpp = llama_cpp
        kwargs = {"lora_path": lora_path} if lora_path else {}
        if n_threads:  # else llama-cpp-python's default: half the cores, which degrades least under load
            kwargs["n_threads"] = kwargs["n_threads_batch"] = n_threads
        self.llm = load_llama(model_path, n_ctx=n_ctx, n_batch=512, logits_all=False, n_gpu_layers=n_gpu_layers,
                              **kwargs)
        self.name = name or os.path.basename(str(model_path))
        self.n_ctx = n_ctx
        self.reuse_cache = reuse_cache
        self.label_ids = {task: np.array(first_label_tokens(self.tokenize, task)) for task in LABELS}

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

    def label_probs(self, task, pairs):
        out = np.empty((len(pairs), len(LABELS[task])))
        for i, (sentence, value) in enumerate(pairs):
            ids = self.tokenize(prompt(task, sentence, value))
            if len(ids) > self.n_ctx:
                raise BadRecord(f"text is {len(ids)} tokens with the prompt, over the model's context of {self.n_ctx}")
            try:
                logits = self._logits_after(ids)
            except RuntimeError as e:
                raise GpvError(f"llama.cpp failed to evaluate a prompt: {e}") from None
            out[i] = renormalise(logits[self.label_ids[task]])
        return out

    def close(self):
        self.llm.close()
