"""Benchmark gpv-parse's concurrency: -j 1 against -j N on a server that answers in a fixed delay.

    python bench/parse.py [--chunks 64] [--delay 0.25] [--jobs 1,8]
    python bench/parse.py --builtin 12 [--threads 1]

With --builtin N it measures instead the built-in parser (SmolLM2-135M in-process, as gpv-parse runs it
by default: greedy, the JSON schema's grammar, repeat penalty 1.2, no cache) on the first N chunks that
gpv-chunk makes of the posts with its defaults (the built-in tokenizer, 250 tokens): seconds per chunk
(min, median, max), reply tokens, and how many replies were usable.

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
    args = ap.parse_args()
    if args.builtin:
        return builtin(args)

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


def builtin(args):
    import statistics

    import orjson

    from gpvtools.method import parsing
    from gpvtools.runtimes.chat import ChatSettings, LlamaChatSettings, build_chat_model
    from gpvtools.streaming.errors import BadRecord

    chunked = subprocess.run([sys.executable, "-m", "gpvtools.commands.chunk", "-q", str(args.posts)],
                             capture_output=True, check=True).stdout.splitlines()[: args.builtin]
    model = build_chat_model(ChatSettings(llama_cpp=LlamaChatSettings(threads=args.threads, repeat_penalty=1.2),
                                          use_cache=False))
    params = {"schema": parsing.schema(20, 400), "temperature": 0.0, "max_tokens": 1024, "seed": None}
    seconds, tokens, usable = [], [], 0
    for line in chunked:
        text = orjson.loads(line)["text"]
        start = time.perf_counter()
        try:
            reply, _ = model.chat(parsing.messages(text, None, None, "author", None), accept=parsing.read_perceptions,
                                  **params)
            usable += 1
            tokens.append(reply.completion_tokens)
        except BadRecord:
            pass
        seconds.append(time.perf_counter() - start)
    print(f"built-in parser ({model.name}), {len(chunked)} chunks of gpv-chunk's defaults, {args.threads} thread(s)")
    print(f"  seconds per chunk: min {min(seconds):.1f}, median {statistics.median(seconds):.1f}, "
          f"max {max(seconds):.1f}, total {sum(seconds):.0f}")
    if tokens:
        print(f"  reply tokens (usable replies): min {min(tokens)}, median {statistics.median(tokens):.0f}, "
              f"max {max(tokens)}")
    print(f"  usable replies: {usable} of {len(chunked)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
