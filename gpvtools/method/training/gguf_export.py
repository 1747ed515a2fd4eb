"""A peft LoRA adapter as a GGUF LoRA adapter, which llama.cpp applies on top of the base GGUF.

llama.cpp expects, per adapted weight, tensors `<gguf name>.weight.lora_a` (r × in) and
`.lora_b` (out × r), general.type "adapter", adapter.type "lora" and adapter.lora.alpha. The
llama family's GGUF conversion permutes the rows of q and k for llama.cpp's rotary layout, so
lora_b of q_proj and k_proj gets the same permutation.
"""

import re

from ...streaming.errors import GpvError, MissingDependency

try:
    import numpy as np
except ImportError:
    raise MissingDependency("a GGUF LoRA export", "numpy", "cuda") from None

_ARCHES = {"llama": "LLAMA", "mistral": "LLAMA", "gemma3_text": "GEMMA3", "gemma3": "GEMMA3", "qwen2": "QWEN2",
           "qwen3": "QWEN3"}
_PERMUTED = {"LLAMA"}
_LORA = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$")


def _permute(w, n_head, n_kv_head):
    """convert_hf_to_gguf's permutation of q/k rows (applied to lora_b, whose rows are the outputs)."""
    if n_kv_head is not None and n_head != n_kv_head:
        n_head = n_kv_head
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def export_lora(adapter_state, config, lora_alpha, path):
    """Write the GGUF LoRA adapter for `adapter_state` ({peft name: tensor}) of a model with `config`."""
    import gguf

    arch_key = _ARCHES.get(config.model_type)
    if arch_key is None:
        raise GpvError(f"GGUF export knows no architecture '{config.model_type}' (known: {', '.join(_ARCHES)})")
    arch = getattr(gguf.MODEL_ARCH, arch_key)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    pairs = {}
    for key, tensor in adapter_state.items():
        m = _LORA.match(key)
        if not m:
            continue
        pairs.setdefault(m["module"], {})[m["ab"]] = tensor.detach().float().cpu().numpy()
    if not pairs:
        raise GpvError("the adapter holds no LoRA weights to export")
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(lora_alpha))
    for module, ab in sorted(pairs.items()):
        name = names.get_name(module)
        if name is None:
            raise GpvError(f"GGUF export: no GGUF name for module {module}")
        a, b = ab["A"], ab["B"]
        if arch_key in _PERMUTED and name.endswith(("attn_q", "attn_k")):
            heads = config.num_attention_heads
            b = _permute(b, heads, heads if name.endswith("attn_q") else config.num_key_value_heads)
        # float32, though it doubles the file: llama.cpp multiplies a float16 tensor by activations it rounds
        # to float16, and on a small model that rounding moves p by up to 5e-5 (--precision f32 promises 1e-4)
        writer.add_tensor(f"{name}.weight.lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(f"{name}.weight.lora_b", np.ascontiguousarray(b, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
