"""Benchmark gpv-chunk: throughput per token counter and peak memory as the input grows.

    python bench/chunk.py [--posts PATH] [--repeat 20] [--tokenizers builtin,words]

Runs the installed gpv-chunk as a real process on the blog posts (../shared by default), once per
token counter, then on the posts repeated --repeat times (each copy with fresh ids), and prints
MB/s and peak RSS (from the kernel's rusage of each child). Memory should not grow with input.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTS = ROOT.parent / "shared" / "data" / "blogs" / "posts-dev.jsonl"


def run(args, path):
    """(seconds, peak RSS in MiB, number of output lines) of one gpv-chunk run."""
    start = time.perf_counter()
    with open(path, "rb") as stdin:
        proc = subprocess.Popen([sys.executable, "-m", "gpvtools.commands.chunk", "-q", *args],
                                stdin=stdin, stdout=subprocess.PIPE)
        lines = sum(1 for _ in proc.stdout)
        _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"gpv-chunk {' '.join(args)} failed with status {status}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024, lines


def repeated(posts, times, directory):
    path = Path(directory) / f"posts-x{times}.jsonl"
    records = [orjson.loads(line) for line in posts.read_bytes().splitlines()]
    with open(path, "wb") as f:
        for k in range(times):
            for r in records:
                f.write(orjson.dumps({**r, "id": f"{r['id']}~{k}"}) + b"\n")
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posts", type=Path, default=DEFAULT_POSTS)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--tokenizers", default="builtin,words")
    args = parser.parse_args()
    size = args.posts.stat().st_size
    print(f"input: {args.posts.name}, {size / 1e6:.2f} MB")
    print(f"{'tokenizer':<12} {'input':>6} {'seconds':>8} {'MB/s':>7} {'chunks':>8} {'peak RSS MiB':>13}")
    rates = {}
    for tok in args.tokenizers.split(","):
        secs, rss, n = run(["-t", tok], args.posts)
        rates[tok] = size / 1e6 / secs
        print(f"{tok:<12} {'1x':>6} {secs:8.2f} {rates[tok]:7.2f} {n:8d} {rss:13.1f}")
    default = args.tokenizers.split(",")[0]
    with tempfile.TemporaryDirectory() as tmp:
        big = repeated(args.posts, args.repeat, tmp)
        secs, rss_big, n = run(["-t", default], big)
        print(f"{default:<12} {str(args.repeat) + 'x':>6} {secs:8.2f} {big.stat().st_size / 1e6 / secs:7.2f} "
              f"{n:8d} {rss_big:13.1f}")
    if len(rates) > 1:
        others = ", ".join(f"{t} {r / rates[default]:.1f}x" for t, r in rates.items() if t != default)
        print(f"speed relative to {default}: {others}")


if __name__ == "__main__":
    main()
