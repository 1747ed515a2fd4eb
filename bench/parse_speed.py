"""Chunks per second of whole gpv-parse runs on blog chunks, side by side: the parse before and the one now.

    python bench/parse_speed.py [--chunks 64] [--threads 2] [-j 8] [--only builtin@OLD,default,...]

The first --chunks chunks gpv-chunk makes of the blog posts in ../shared (its defaults: the built-in
tokenizer, 250 tokens) go through each candidate of bench/e2e.py (builtin@OLD: the built-in LLM parser as
it was before grounding; default: gpv-parse with no option; smollm2-grounded: the built-in LLM with
grounding) as a process, with --no-cache, one after another; the time is the whole command's, start-up
included. Prints chunks/s of each and its ratio to the first.
"""

import argparse
import subprocess
import sys
import time

from e2e import BIN, OLD, ROOT, parse_command

POSTS = ROOT.parent / "shared" / "data" / "blogs" / "posts-dev.jsonl"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-j", "--jobs", type=int, default=8)
    ap.add_argument("--only", default=f"builtin@{OLD},default,smollm2-grounded")
    ap.add_argument("--work", default=str(ROOT / "build" / "parse-speed"))
    args = ap.parse_args()
    from pathlib import Path

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    chunks = subprocess.run([str(BIN / "gpv-chunk"), "-q", str(POSTS)], capture_output=True,
                            check=True).stdout.splitlines()[:args.chunks]
    source = work / "chunks.jsonl"
    source.write_bytes(b"\n".join(chunks) + b"\n")
    rates = {}
    for name in args.only.split(","):
        argv, env = parse_command(name, args, work)
        start = time.perf_counter()
        out = subprocess.run(argv + ["-q", "--no-cache", "--on-error", "emit", str(source)], capture_output=True,
                             env=env)
        seconds = time.perf_counter() - start
        records = out.stdout.count(b"\n")
        rates[name] = len(chunks) / seconds
        print(f"{name:<24} {rates[name]:9.3f} chunks/s  ({seconds:.1f} s, {records} records, exit {out.returncode})",
              flush=True)
    first = next(iter(rates.values()))
    print("ratios to the first: " + ", ".join(f"{n} {r / first:.2f}x" for n, r in rates.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
