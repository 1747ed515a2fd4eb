"""gpv-aggregate at scale: wall time and peak memory on synthetic scored perceptions, and order independence.

    python bench/aggregate.py [--sizes 10000,1000000] [--groups 10000] [--seed 0]

For each size it writes that many scored records (the 10 Schwartz values, gpv-score's shape: relevance,
and score null where p_rel <= 0.5) spread over --groups authors, once in shuffled order and once sorted
by author, to a temporary directory; runs `gpv-aggregate --by author` on each as a subprocess; and
reports the wall time and the child's peak RSS (getrusage of a fresh wrapper process per run, so each
figure is that run's alone). The two outputs must be byte-identical.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson

from gpvtools.method.values import system

ROOT = Path(__file__).resolve().parent.parent
def entry_point(name="gpv-aggregate"):
    """The installed command NAME, or its module run by this Python (bench/report.py uses it too)."""
    exe = Path(sys.executable).parent / name
    return [str(exe)] if exe.exists() else [sys.executable, "-m", f"gpvtools.commands.{name.removeprefix('gpv-')}"]


def write_records(path, order, groups, relevance, scores, names, chunk=20000):
    """Records in the given order, written in chunks so the bench's own memory stays modest."""
    with open(path, "wb") as f:
        for start in range(0, len(order), chunk):
            lines = []
            block = order[start:start + chunk]
            for i, rels, ws in zip(block.tolist(), relevance[block].tolist(), scores[block].tolist()):
                values = {name: {"relevance": rel, "score": w if rel > 0.5 else None}
                          for name, rel, w in zip(names, rels, ws)}
                lines.append(orjson.dumps({"id": f"p{i}", "doc_id": f"d{i}", "author": f"a{int(groups[i]):05d}",
                                           "values": values, "scorer": "bench:synthetic"}))
            f.write(b"\n".join(lines) + b"\n")


def measure(command):
    """(wall seconds, peak RSS in MiB) of one run of COMMAND (bench/report.py uses it too).

    A fresh wrapper process runs the command, since RUSAGE_CHILDREN reports the largest child a process
    ever waited for: each figure is then that run's alone.
    """
    wrapper = ("import resource, subprocess, sys, time\n"
               "t = time.perf_counter()\n"
               "rc = subprocess.run(sys.argv[1:]).returncode\n"
               "wall = time.perf_counter() - t\n"
               "print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)\n")
    done = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, check=True)
    wall, maxrss, rc = done.stdout.split()
    if rc != "0":
        raise SystemExit(f"{Path(command[0]).name} failed ({rc}): {done.stderr}")
    return float(wall), int(maxrss) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--groups", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    names = system("schwartz")
    rng = np.random.default_rng(args.seed)
    print(f"gpv-aggregate --by author; {len(names)} values; {args.groups} authors; {os.cpu_count()} CPUs")
    print(f"{'records':>9} {'MB':>7} {'order':>9} {'seconds':>8} {'records/s':>10} {'peak RSS':>10} {'groups':>7}")
    results = []
    with tempfile.TemporaryDirectory(prefix="gpv-bench-aggregate-") as tmp:
        tmp = Path(tmp)
        for size in (int(s) for s in args.sizes.split(",")):
            groups = rng.integers(0, min(args.groups, size), size)
            relevance = rng.random((size, len(names))).round(4)
            scores = rng.uniform(-1, 1, (size, len(names))).round(6)
            outputs = {}
            for order_name, order in (("shuffled", rng.permutation(size)),
                                      ("sorted", np.argsort(groups, kind="stable"))):
                data = tmp / f"{size}.{order_name}.jsonl"
                write_records(data, order, groups, relevance, scores, names)
                out = tmp / f"{size}.{order_name}.out.jsonl"
                wall, rss = measure([*entry_point(), "-q", "--by", "author", str(data), "-o", str(out)])
                n_groups = out.read_bytes().count(b"\n")
                mb = data.stat().st_size / 1e6
                print(f"{size:>9,} {mb:>7.1f} {order_name:>9} {wall:>8.2f} {size / wall:>10,.0f} "
                      f"{rss:>7.1f} MiB {n_groups:>7,}")
                outputs[order_name] = out.read_bytes()
                results.append((size, order_name, wall, rss))
                data.unlink()
            same = outputs["shuffled"] == outputs["sorted"]
            print(f"{'':>9} shuffled and sorted input give {'identical' if same else 'DIFFERENT'} output "
                  f"({len(outputs['sorted']):,} bytes)")
            if not same:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
