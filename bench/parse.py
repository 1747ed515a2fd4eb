"""Benchmark gpv-parse's concurrency: -j 1 against -j N on a server that answers in a fixed delay.

    python bench/parse.py [--chunks 64] [--delay 0.25] [--jobs 1,8]
    python bench/parse.py --builtin 64 [--threads 2] [--jobs-batched 8] [--weights Q8_0]

With --builtin N it measures instead the built-in parser (SmolLM2-135M in-process, as gpv-parse runs it
by default: greedy, the JSON schema's grammar, repeat penalty 1.2, no cache) on the first N chunks that
gpv-chunk makes of the posts with its defaults (the built-in tokenizer, 250 tokens), twice in one
process: one chunk at a time (gpv-parse -j 1: llama-cpp-python's create_chat_completion), then
--jobs-batched chunks decoded together as the sequences of one llama.cpp context (gpv-parse -j N,
runtimes/batching.py), all N chunks queued at once. It prints seconds per chunk (min, median, max),
reply tokens and usable replies of the first run, chunks/s of each and their ratio, how many chunks got
the same reply text from both (and, for each that did not, where the replies part), and the peak RSS
after each run. --jobs-batched 0 leaves out the batched run. --weights TYPE runs both on a copy of the
built-in GGUF in another weight type (Q8_0, Q4_0, F16, F32: bench/token_costs.py), written to a
temporary directory first.

The server (tests/servers.py DelayChatServer) is a real HTTP server on 127.0.0.1 that answers every
chat request after --delay seconds, many at once, with the chunk's sentences as perceptions, so the
time measured is the client's: how well it keeps requests in flight. Chunks are real 250-word
pieces of the blog posts (../shared), split by gpv-chunk -t words. Each run is the installed
gpv-parse as a process with --no-cache; it prints chunks/s per -j, the ratio to -j 1, and whether the
output is identical across -j (same records, same order).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_POSTS = ROOT.parent / "shared" / "data" / "blogs" / "posts-dev.jsonl"

from tests.servers import DelayChatServer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--posts", type=Path, default=DEFAULT_POSTS)
    ap.add_argument("--chunks", type=int, default=128)
    ap.add_argument("--delay", type=float, default=0.25)
    ap.add_argument("--jobs", default="1,8")
    ap.add_argument("--builtin", type=int, metavar="N", help="time the built-in parser on N chunks instead")
    ap.add_argument("--threads", type=int, default=1, help="--builtin: llama.cpp threads")
    ap.add_argument("--jobs-batched", type=int, default=8, metavar="J",
                    help="--builtin: sequences decoded together in the batched run (0: no batched run)")
    ap.add_argument("--weights", metavar="TYPE", help="--builtin: a copy of the built-in GGUF in this weight type")
    args = ap.parse_args()
    if args.builtin:
        if not args.weights:
            return builtin(args, None)
        import llama_cpp
        from token_costs import copy_as

        from gpvtools.runtimes.llama import quiet_stderr
        from gpvtools.runtimes.models import builtin_gguf

        with tempfile.TemporaryDirectory() as directory:
            with quiet_stderr():  # llama_model_quantize's log; the benchmark's own errors stay visible
                path = copy_as(llama_cpp, builtin_gguf(), args.weights, directory)
            return builtin(args, path)

    chunked = subprocess.run([sys.executable, "-m", "gpvtools.commands.chunk", "-q", "-t", "words", str(args.posts)],
                             capture_output=True, check=True).stdout.splitlines()[: args.chunks]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "chunks.jsonl"
        source.write_bytes(b"\n".join(chunked) + b"\n")
        outputs, rates = {}, {}
        with DelayChatServer(delay=args.delay) as server:
            for jobs in map(int, args.jobs.split(",")):
                start = time.perf_counter()
                result = subprocess.run([sys.executable, "-m", "gpvtools.commands.parse", "-q", "--no-cache",
                                         "--base-url", server.url, "-j", str(jobs), str(source)],
                                        capture_output=True, check=True, env={**os.environ})
                seconds = time.perf_counter() - start
                outputs[jobs], rates[jobs] = result.stdout, len(chunked) / seconds
        base = rates[min(rates)]
        print(f"{len(chunked)} chunks, server delay {args.delay} s per request")
        for jobs, rate in rates.items():
            print(f"  -j {jobs:<3} {rate:7.2f} chunks/s   x{rate / base:5.2f}")
        same = len(set(outputs.values())) == 1
        print(f"output identical across -j: {'yes' if same else 'NO'}")
        return 0 if same else 1


def peak_rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux gives KiB


def first_difference(a, b):
    """The first character index at which the texts A and B differ."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def parse_all(model, texts, jobs):
    """Each text's (reply, seconds, usable) from MODEL, JOBS requests at once, all queued from the start."""
    from concurrent.futures import ThreadPoolExecutor

    from gpvtools.method import parsing
    from gpvtools.streaming.errors import BadRecord

    params = {"schema": parsing.schema(20, 400), "temperature": 0.0, "max_tokens": 1024, "seed": None}

    def one(text):
        start = time.perf_counter()
        messages = parsing.messages(text, None, None, "author", None)
        try:
            reply, _ = model.chat(messages, **params)
        except BadRecord as e:
            return None, f"error: {e.message}", time.perf_counter() - start, False
        seconds = time.perf_counter() - start
        try:
            parsing.read_perceptions(reply.text)
        except BadRecord:
            return reply, reply.text, seconds, False
        return reply, reply.text, seconds, True

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, texts))


def builtin(args, model_path):
    import statistics

    import orjson

    from gpvtools.runtimes.chat import ChatSettings, LlamaChatSettings, build_chat_model
    from gpvtools.runtimes.models import BUILTIN

    chunked = subprocess.run([sys.executable, "-m", "gpvtools.commands.chunk", "-q", str(args.posts)],
                             capture_output=True, check=True).stdout.splitlines()[: args.builtin]
    texts = [orjson.loads(line)["text"] for line in chunked]

    def run(jobs):
        model = build_chat_model(ChatSettings(
            model=str(model_path) if model_path else BUILTIN,
            llama_cpp=LlamaChatSettings(threads=args.threads, repeat_penalty=1.2, parallel=jobs), use_cache=False))
        start = time.perf_counter()
        results = parse_all(model, texts, jobs)
        seconds = time.perf_counter() - start
        model.close()
        return model, results, seconds, peak_rss_mb()

    model, single, single_s, single_rss = run(1)
    seconds = [s for _, _, s, _ in single]
    tokens = [r.completion_tokens for r, _, _, ok in single if ok]
    print(f"built-in parser ({model.name}), {len(texts)} chunks of gpv-chunk's defaults, {args.threads} thread(s)")
    print(f"  one at a time: seconds per chunk: min {min(seconds):.1f}, median {statistics.median(seconds):.1f}, "
          f"max {max(seconds):.1f}, total {single_s:.0f}")
    if tokens:
        print(f"  reply tokens (usable replies): min {min(tokens)}, median {statistics.median(tokens):.0f}, "
              f"max {max(tokens)}, total {sum(r.completion_tokens for r, _, _, _ in single if r)}")
    print(f"  usable replies: {sum(ok for *_, ok in single)} of {len(texts)}")
    print(f"  one at a time (-j 1): {len(texts) / single_s:.3f} chunks/s, peak RSS {single_rss:.0f} MB")
    if args.jobs_batched < 1:
        return 0
    _, batched, batched_s, batched_rss = run(args.jobs_batched)
    print(f"  batched (-j {args.jobs_batched}):    {len(texts) / batched_s:.3f} chunks/s, peak RSS "
          f"{batched_rss:.0f} MB (of the process so far), usable replies {sum(ok for *_, ok in batched)}")
    print(f"  ratio: x{single_s / batched_s:.2f}")
    differing = [i for i, (a, b) in enumerate(zip(single, batched)) if a[1] != b[1]]
    print(f"  same reply text: {len(texts) - len(differing)} of {len(texts)}")
    for i in differing:
        a, b = single[i][1], batched[i][1]
        k = first_difference(a, b)
        print(f"  chunk {i}: the replies part at character {k} of {len(a)}/{len(b)}: "
              f"{a[max(0, k - 30):k + 30]!r} | {b[max(0, k - 30):k + 30]!r}")
    if differing:
        print("  (greedy decoding picks another token where two logits are within rounding of each other and "
              "llama.cpp computed them in another order)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
