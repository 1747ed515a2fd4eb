"""The transformers backend: a Hugging Face model (directory, GGUF file or hub id) on CUDA or CPU.

For each sentence the prompt prefix that all of its values share (task header + sentence) runs
once; its KV cache is then repeated over a batch of the values' suffixes, right-padded, so each
row attends to exactly its own tokens and results do not depend on what else is in the batch.
"""

import contextlib
import copy
import functools
import inspect
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import BadRecord, GpvError, MissingDependency, UsageError
from . import LABELS, LabelScorer, first_label_tokens, prompt, shared_prefix


def _torch():
    try:
        import torch
        import transformers
    except ImportError:
        raise MissingDependency("backend 'transformers'", "torch and transformers", "cuda") from None
    return torch, transformers


def resolve_device(device):
    torch, _ = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GpvError(f"--device {device}: no CUDA GPU is available here (torch sees none)")
    return device


@contextlib.contextmanager
def _gguf_bar_off():
    """Turn off the bar transformers' GGUF loader draws with its own tqdm (not transformers' switchable one;
    TQDM_DISABLE would be read only by a tqdm imported after it is set)."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def load_model(spec, device="auto", dtype="auto", load_in_4bit=False, load_in_8bit=False, adapter=None,
               progress=False):
    """(model, tokenizer, name) from a local directory, a .gguf file, or a hub id (hf://org/name too).

    PROGRESS lets transformers draw its loading bars on stderr (for a terminal, not under -q)."""
    torch, transformers = _torch()
    debug = bool(os.environ.get("GPV_DEBUG"))
    if not (progress or debug):
        transformers.utils.logging.disable_progress_bar()
    if not debug:  # stderr is for our messages: no advice or warnings
        transformers.utils.logging.set_verbosity_error()
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="peft")
    device = resolve_device(device)
    if (load_in_4bit or load_in_8bit) and not device.startswith("cuda"):
        flag = "--load-in-4bit" if load_in_4bit else "--load-in-8bit"
        raise GpvError(f"{flag} needs a CUDA GPU (bitsandbytes); none is available here")
    spec = str(spec)
    spec = spec[len("hf://"):] if spec.startswith("hf://") else spec
    path = Path(spec)
    kwargs = {"trust_remote_code": False}
    if path.suffix == ".gguf":
        if not path.exists():
            raise UsageError(f"model {spec} does not exist")
        if not path.is_file():
            raise GpvError(f"model {spec} is a directory, not a GGUF file")
        source, kwargs["gguf_file"] = str(path.parent), path.name
    elif path.exists():
        if not (path / "config.json").is_file():
            raise GpvError(f"model {spec} is not a Hugging Face model directory (no config.json)")
        source, kwargs["use_safetensors"] = str(path), True
    elif spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise UsageError(f"model {spec} does not exist")
    else:
        source = spec  # a hub id: a real path for users with a network
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    model_kwargs = dict(kwargs, dtype=getattr(torch, dtype))
    if load_in_4bit or load_in_8bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise MissingDependency("--load-in-4bit/8bit", "bitsandbytes", "cuda") from None
        model_kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit,
            bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_type="nf4")
        model_kwargs["device_map"] = {"": device}
    quiet = contextlib.nullcontext() if progress or debug else _gguf_bar_off()
    try:
        with quiet:
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
            model = transformers.AutoModelForCausalLM.from_pretrained(source, **model_kwargs)
    except OSError as e:
        raise GpvError(f"model {spec}: cannot load it: {str(e).splitlines()[0]}") from None
    if adapter:
        try:
            from peft import PeftModel
        except ImportError:
            raise MissingDependency("--adapter", "peft", "cuda") from None
        if not Path(adapter, "adapter_config.json").is_file():
            raise GpvError(f"adapter {adapter} is not a peft adapter directory (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    if not (load_in_4bit or load_in_8bit):
        model = model.to(device)
    model.eval()
    return model, tokenizer, path.name if path.exists() else spec


def cache_kwarg(model):
    """The name forward() takes the KV cache by: transformers 5 renamed past_key_values to cache."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def keeps_logits(model):
    """Whether forward() can project only chosen positions onto the vocabulary (logits_to_keep)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def output_cache(out):
    return getattr(out, "cache", None) or out.past_key_values


class TransformersScorer(LabelScorer):
    backend = "transformers"

    def __init__(self, model, name=None, device="auto", dtype="auto", load_in_4bit=False, load_in_8bit=False,
                 adapter=None, batch_size=16, loaded=None, progress=False):
        """MODEL is loaded with load_model, unless LOADED gives an already loaded (model, tokenizer)."""
        self.torch, _ = _torch()
        if loaded is None:
            self.model, self.tokenizer, loaded_name = load_model(model, device, dtype, load_in_4bit, load_in_8bit,
                                                                 adapter, progress=progress)
        else:
            (self.model, self.tokenizer), loaded_name = loaded, str(model)
        self.name = name or loaded_name
        self.device = self.model.device
        self.batch_size = batch_size
        self.label_ids = {task: first_label_tokens(self.tokenize, task) for task in LABELS}
        self.max_len = getattr(self.model.config, "max_position_embeddings", None) or 1 << 30
        # transformers 5 renamed past_key_values to cache; older releases know only the former.
        self.cache_arg = cache_kwarg(self.model)
        # Only a prompt's last position is read: projecting every position onto the vocabulary (49k rows for
        # SmolLM2, 128k for Llama 3) was a fifth of the CPU time (py-spy).
        self.keep_logits = keeps_logits(self.model)

    def tokenize(self, text):
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def label_probs(self, task, pairs):
        out = np.empty((len(pairs), len(LABELS[task])))
        by_sentence = {}
        for i, (sentence, value) in enumerate(pairs):
            by_sentence.setdefault(sentence, []).append((i, value))
        for sentence, items in by_sentence.items():
            ids = [self.tokenize(prompt(task, sentence, value)) for _, value in items]
            if max(map(len, ids)) > self.max_len:
                raise BadRecord(f"text is {max(map(len, ids))} tokens with the prompt, over the model's "
                                f"context of {self.max_len}")
            probs = self._probs_sharing_prefix(ids, self.label_ids[task])
            for (i, _), p in zip(items, probs):
                out[i] = p
        return out

    def _probs_sharing_prefix(self, ids, label_ids):
        torch = self.torch
        common = shared_prefix(ids)
        results = []
        with torch.inference_mode():
            prefix_cache = None
            if common:
                prefix = torch.tensor([ids[0][:common]], device=self.device)
                keep = {"logits_to_keep": 1} if self.keep_logits else {}
                prefix_cache = output_cache(self.model(input_ids=prefix, use_cache=True, **keep))
            for start in range(0, len(ids), self.batch_size):
                rows = [x[common:] for x in ids[start:start + self.batch_size]]
                width = max(map(len, rows))
                pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
                input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device)
                mask = torch.tensor([[1] * (common + len(r)) + [0] * (width - len(r)) for r in rows],
                                    device=self.device)
                positions = torch.arange(common, common + width, device=self.device).expand(len(rows), -1)
                cache = None
                if prefix_cache is not None:
                    cache = copy.deepcopy(prefix_cache)
                    cache.batch_repeat_interleave(len(rows))
                last = [len(r) - 1 for r in rows]
                keep = {}
                if self.keep_logits:  # the rows' last positions, each once; a row reads its own
                    kept = sorted(set(last))
                    keep["logits_to_keep"] = torch.tensor(kept, device=self.device)
                    last = [kept.index(k) for k in last]
                logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                    use_cache=prefix_cache is not None, **{self.cache_arg: cache}, **keep).logits
                last = torch.tensor(last, device=self.device)
                picked = logits[torch.arange(len(rows), device=self.device), last][:, label_ids].float()
                results.append(torch.softmax(picked, dim=-1).cpu().numpy())
        return np.concatenate(results)
