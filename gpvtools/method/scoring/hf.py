"""The transformers backend: a Hugging Face model (directory, GGUF file or hub id) on CUDA or CPU.

Each token that prompts share is evaluated once. The task header's KV cache is computed once per
task and kept. A batch of sentences then runs in one forward pass, one row per sentence: the
sentence, followed by the suffixes of all its values ("\nValue: …\nOutput:\n"), each suffix
positioned (position ids) and masked (a 4-D attention mask) as if it followed the sentence alone,
so a suffix sees the header, its sentence and itself — a prefix tree flattened into one row. Only
each suffix's last position is projected onto the vocabulary. Rows are right-padded and padding is
masked, so a result does not depend on what else is in the batch (up to float rounding).
Prompts that do not start with the header (a tokenizer that merges across it) take the simpler
path: per sentence, the shared prefix once, its cache repeated over a batch of suffixes.
"""

import contextlib
import copy
import functools
import inspect
import logging
import os
import warnings
from pathlib import Path

from ...streaming.errors import BadRecord, GpvError, MissingDependency, UsageError
from . import LABELS, Decision, LabelScorer, first_label_tokens, prompt, shared_prefix

try:
    import numpy as np
except ImportError:
    raise MissingDependency("backend 'transformers'", "numpy", "cuda") from None


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


def _quiet_libraries(transformers, progress, debug):
    """Keep stderr for our messages: no loading bars (unless PROGRESS), advice or warnings (unless DEBUG)."""
    if not (progress or debug):
        transformers.utils.logging.disable_progress_bar()
    if not debug:
        transformers.utils.logging.set_verbosity_error()
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="peft")
        # peft imports bitsandbytes, whose CPU backend logs a warning about an optional kernels package
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def _source(spec):
    """(what from_pretrained loads, its keyword arguments) for SPEC: a .gguf file, a model directory or a hub
    id; an error for a path that is neither."""
    from ...runtimes import hub

    if hub.is_reference(spec):  # fetched into huggingface_hub's cache and checked, as gpv-score does
        return _source(hub.resolve(spec, directory=True).path)
    path = Path(spec)
    kwargs = {"trust_remote_code": False}
    if path.suffix == ".gguf":
        if not path.exists():
            raise UsageError(f"model {spec} does not exist")
        if not path.is_file():
            raise GpvError(f"model {spec} is a directory, not a GGUF file")
        kwargs["gguf_file"] = path.name
        return str(path.parent), kwargs
    if path.exists():
        if not (path / "config.json").is_file():
            raise GpvError(f"model {spec} is not a Hugging Face model directory (no config.json)")
        kwargs["use_safetensors"] = True
        return str(path), kwargs
    if hub.parse(spec, bare=True):  # OWNER/NAME: the hub's
        return _source(hub.resolve(spec, directory=True, bare=True).path)
    raise UsageError(f"model {spec} does not exist")


def _merged(model, adapter):
    """MODEL with the peft ADAPTER (a directory) merged into its weights."""
    try:
        from peft import PeftModel
    except ImportError:
        raise MissingDependency("--adapter", "peft", "cuda") from None
    if not Path(adapter, "adapter_config.json").is_file():
        raise GpvError(f"adapter {adapter} is not a peft adapter directory (no adapter_config.json)")
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()


def check_quantized(spec, device, *, load_in_4bit=False, load_in_8bit=False):
    """DEVICE resolved, after the checks that --load-in-4bit/8bit can load SPEC there: made before a hub
    reference is fetched, so that no download ends in a usage error."""
    from ...runtimes import hub

    flag = "--load-in-4bit" if load_in_4bit else "--load-in-8bit"
    ref = hub.parse(spec) if hub.is_reference(spec) else None
    gguf = str(spec).endswith(".gguf") or (ref is not None and bool(ref.quant or (ref.file or "").endswith(".gguf")))
    if (load_in_4bit or load_in_8bit) and gguf:
        # transformers: "You cannot combine Quantization and loading a model from a GGUF file"
        raise UsageError(f"{flag} cannot load a GGUF file: transformers quantizes a Hugging Face model directory "
                         f"or hub id; give one, or score the GGUF with -b llama-cpp")
    device = resolve_device(device)
    if (load_in_4bit or load_in_8bit) and not device.startswith("cuda"):
        raise GpvError(f"{flag} needs a CUDA GPU (bitsandbytes); none is available here")
    return device


def load_model(spec, device="auto", dtype="auto", *, load_in_4bit=False, load_in_8bit=False, adapter=None,
               progress=False):
    """(model, tokenizer, name) from a local directory, a .gguf file, or a hub reference (runtimes/hub.py).

    PROGRESS lets transformers draw its loading bars on stderr (for a terminal, not under -q)."""
    torch, transformers = _torch()
    debug = bool(os.environ.get("GPV_DEBUG"))
    _quiet_libraries(transformers, progress, debug)
    device = check_quantized(spec, device, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit)
    spec = str(spec)
    source, kwargs = _source(spec)
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
        model = _merged(model, adapter)
    if not (load_in_4bit or load_in_8bit):
        model = model.to(device)
    model.eval()
    path = Path(spec)
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


def tree_logits(torch, decoder, head, softcap, tree, dtype, device, pick=None, **decoder_args):
    """Next-token logits at the end of every suffix of TREE (flattened_tree's ids, positions, allowed, last):
    one DECODER pass under the tree's additive mask, the suffixes' last positions gathered and projected by
    HEAD, PICK(logits) (e.g. the label columns) applied, then the model's final soft-cap if it has one.

    gpv-score (TransformersScorer) and gpv-train (packed rows) both read label logits this way, so what
    training optimises is what scoring reads.
    """
    ids, positions, allowed, last = tree
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(torch.from_numpy(~allowed), torch.finfo(dtype).min)
    hidden = decoder(input_ids=torch.from_numpy(ids).to(device), attention_mask=mask[:, None].to(device),
                     position_ids=torch.from_numpy(positions).to(device), **decoder_args).last_hidden_state
    rows = torch.tensor([b for b, ends in enumerate(last) for _ in ends], device=device)
    cols = torch.tensor([k for ends in last for k in ends], device=device)
    logits = head(hidden[rows, cols])
    if pick is not None:
        logits = pick(logits)
    return torch.tanh(logits / softcap) * softcap if softcap else logits


def flattened_tree(header_len, groups, pad):
    """One row per sentence: its own tokens, then each value's suffix, positioned and masked as a tree.

    GROUPS: [(sentence tokens after the header, [suffix tokens per value])]. Returns (input ids, position
    ids, allowed, last): allowed[b, q, k] says whether row b's query q may attend key k, keys being the
    header's HEADER_LEN cached positions followed by the row's own; last[b] lists, per suffix, the row
    position of its last token, where the label is read.
    """
    widths = [len(own) + sum(map(len, suffixes)) for own, suffixes in groups]
    width = max(widths)
    ids = np.full((len(groups), width), pad, dtype=np.int64)
    positions = np.zeros((len(groups), width), dtype=np.int64)
    allowed = np.zeros((len(groups), width, header_len + width), dtype=bool)
    allowed[:, :, :header_len] = True  # everything sees the header (padding too, so no row is all masked)
    causal = np.tril(np.ones((width, width), dtype=bool))
    last = []
    for b, (own, suffixes) in enumerate(groups):
        n = len(own)
        ids[b, :n] = own
        positions[b, :n] = np.arange(header_len, header_len + n)
        allowed[b, :n, header_len:header_len + n] = causal[:n, :n]
        ends, start = [], n
        for suffix in suffixes:
            m = len(suffix)
            ids[b, start:start + m] = suffix
            positions[b, start:start + m] = np.arange(header_len + n, header_len + n + m)
            allowed[b, start:start + m, header_len:header_len + n] = True
            allowed[b, start:start + m, header_len + start:header_len + start + m] = causal[:m, :m]
            start += m
            ends.append(start - 1)
        last.append(ends)
    return ids, positions, allowed, last


class TransformersScorer(LabelScorer):
    backend = "transformers"

    def __init__(self, model, *, name=None, device="auto", dtype="auto", load_in_4bit=False, load_in_8bit=False,
                 adapter=None, batch_size=16, loaded=None, progress=False, decision=None):
        """MODEL is loaded with load_model, unless LOADED gives an already loaded (model, tokenizer)."""
        self.decision = decision or Decision()
        self.torch, _ = _torch()
        if loaded is None:
            self.model, self.tokenizer, loaded_name = load_model(
                model, device, dtype, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, adapter=adapter,
                progress=progress)
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
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # The flattened prefix tree runs the decoder alone and projects only the positions it reads.
        self.decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else None
        self.head = self.model.get_output_embeddings()
        self.decoder_cache_arg = cache_kwarg(self.decoder) if self.decoder is not None else None
        self.softcap = getattr(self.model.config, "final_logit_softcapping", None)
        self.headers = {}  # task -> (token ids, KV cache) of the task's header

    def tokenize(self, text):
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    # A flattened batch holds at most this many rows (sentences) and row tokens in all.
    TREE_TOKENS = 4096

    def label_probs(self, task, pairs):
        out = np.empty((len(pairs), len(LABELS[task])))
        by_sentence = {}
        for i, (sentence, value) in enumerate(pairs):
            by_sentence.setdefault(sentence, []).append((i, value))
        header = self._header(task) if self.decoder is not None and self.head is not None else None
        batch, tokens = [], 0
        for sentence, items in by_sentence.items():
            ids = [self.tokenize(prompt(task, sentence, value)) for _, value in items]
            if max(map(len, ids)) > self.max_len:
                raise BadRecord(f"text is {max(map(len, ids))} tokens with the prompt, over the model's "
                                f"context of {self.max_len}")
            rows = [i for i, _ in items]
            common = shared_prefix(ids)
            n = len(header[0]) if header else 0
            if header is None or common <= n or ids[0][:n] != header[0]:
                for i, p in zip(rows, self._probs_sharing_prefix(ids, self.label_ids[task])):
                    out[i] = p
                continue
            group = (rows, ids[0][n:common], [x[common:] for x in ids])
            size = len(group[1]) + sum(map(len, group[2]))
            if batch and (len(batch) >= self.batch_size or tokens + size > self.TREE_TOKENS):
                self._probs_tree(task, header, batch, out)
                batch, tokens = [], 0
            batch.append(group)
            tokens += size
        if batch:
            self._probs_tree(task, header, batch, out)
        return out

    def _header(self, task):
        """(token ids, KV cache) of what every prompt of TASK shares before the sentence, computed once."""
        if task not in self.headers:
            torch = self.torch
            a, z = self.tokenize(prompt(task, "a", "x")), self.tokenize(prompt(task, "z", "x"))
            ids = a[:shared_prefix([a, z])]
            keep = {"logits_to_keep": 1} if self.keep_logits else {}
            with torch.inference_mode():
                out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True, **keep)
            self.headers[task] = (ids, output_cache(out))
        return self.headers[task]

    def _probs_tree(self, task, header, batch, out):
        """Label probabilities of BATCH [(result rows, sentence tokens, suffixes)] in one decoder pass."""
        torch = self.torch
        header_ids, header_cache = header
        ids, positions, allowed, last = flattened_tree(len(header_ids), [(own, sfx) for _, own, sfx in batch],
                                                       self.pad)
        dtype = self.model.dtype if self.model.dtype.is_floating_point else torch.float32
        cache = copy.deepcopy(header_cache)
        cache.batch_repeat_interleave(len(batch))
        with torch.inference_mode():
            logits = tree_logits(torch, self.decoder, self.head, self.softcap, (ids, positions, allowed, last), dtype,
                                 self.device, pick=lambda x: x[:, self.label_ids[task]].float(), use_cache=True,
                                 **{self.decoder_cache_arg: cache})
            probs = torch.softmax(logits, dim=-1).cpu().numpy()
        for i, p in zip((i for result_rows, _, _ in batch for i in result_rows), probs):
            out[i] = p

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
                input_ids = torch.tensor([r + [self.pad] * (width - len(r)) for r in rows], device=self.device)
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
