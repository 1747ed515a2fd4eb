"""gpv-report --evidence at scale: wall time and peak memory at N/10 and N scored perceptions.

    python bench/report.py [--n 100000] [--groups 50] [--top-k 3] [--seed 0]

Writes N synthetic scored perceptions (the 10 Schwartz values, gpv-score's shape: relevance, support,
oppose and a score null where relevance <= 0.5, a perception text of some 100 characters) spread over
--groups authors, aggregates them with `gpv-aggregate --by author`, and runs `gpv-report --evidence` on
the first N/10 records and on all N, each as a subprocess, reporting wall time and the child's peak RSS
(getrusage of a fresh wrapper process per run, so each figure is that run's alone). The evidence kept is
bounded by groups x values x top-k, so the peak RSS should barely move between the two sizes; the
printed ratio says by how much it did.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson
from aggregate import entry_point, measure  # bench/aggregate.py, beside this file

from gpvtools.method.values import system


def write_records(path, n, groups, names, rng, chunk=20000):
    """N records, written in chunks so the bench's own memory stays modest."""
    with open(path, "wb") as f:
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            authors = rng.integers(0, groups, size)
            relevance = rng.random((size, len(names))).round(4)
            support = rng.random((size, len(names))).round(4)
            oppose = (rng.random((size, len(names))) * (1 - support)).round(4)
            lines = []
            for k in range(size):
                i = start + k
                values = {name: {"relevance": rel, "support": s, "oppose": o,
                                 "score": round(s - o, 6) if rel > 0.5 else None}
                          for name, rel, s, o in zip(names, relevance[k].tolist(), support[k].tolist(),
                                                     oppose[k].tolist())}
                lines.append(orjson.dumps({
                    "id": f"d{i}#c0#p{i % 4}", "doc_id": f"d{i}", "author": f"a{int(authors[k]):03d}",
                    "perception": f"Perception {i}: the author says something value-laden about work, family "
                                  f"and their place in the world.",
                    "values": values, "scorer": "bench:synthetic"}))
            f.write(b"\n".join(lines) + b"\n")


def head(src, dest, n):
    with open(src, "rb") as f, open(dest, "wb") as out:
        for i, line in enumerate(f):
            if i == n:
                break
            out.write(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    names = system("schwartz")
    rng = np.random.default_rng(args.seed)
    print(f"gpv-report --evidence; {len(names)} values; {args.groups} authors; --top-k {args.top_k}; "
          f"{os.cpu_count()} CPUs")
    print(f"{'perceptions':>11} {'MB':>7} {'seconds':>8} {'perceptions/s':>14} {'peak RSS':>10} {'HTML KB':>8}")
    results = []
    with tempfile.TemporaryDirectory(prefix="gpv-bench-report-") as tmp:
        tmp = Path(tmp)
        full = tmp / "scored.jsonl"
        write_records(full, args.n, args.groups, names, rng)
        for n in (args.n // 10, args.n):
            scored = full if n == args.n else tmp / f"scored.{n}.jsonl"
            if scored != full:
                head(full, scored, n)
            profiles = tmp / f"profiles.{n}.jsonl"
            subprocess.run([*entry_point("gpv-aggregate"), "-q", "--by", "author", str(scored), "-o",
                            str(profiles)], check=True)
            page = tmp / f"report.{n}.html"
            wall, rss = measure([*entry_point("gpv-report"), "-q", str(profiles), "--evidence", str(scored),
                                 "--top-k", str(args.top_k), "-o", str(page)])
            mb = scored.stat().st_size / 1e6
            print(f"{n:>11,} {mb:>7.1f} {wall:>8.2f} {n / wall:>14,.0f} {rss:>6.1f} MiB "
                  f"{page.stat().st_size / 1e3:>8.0f}")
            results.append((n, wall, rss))
    (n0, wall0, rss0), (n1, wall1, rss1) = results
    print(f"{n1 // max(n0, 1)}x the perceptions: {wall1 / wall0:.2f}x the time, {rss1 / rss0:.3f}x the peak RSS "
          f"({rss1 - rss0:+.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
