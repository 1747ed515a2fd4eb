"""gpv-score (dictionary backend) and gpv-aggregate at scale: wall time and peak RSS at 10k and 1M records.

    python bench/scale.py [--sizes 10000,1000000] [--authors 10000]

For each size it writes that many perception records (real blog sentences from tests/conftest.py's
blog_sentences, cycled, spread over --authors authors) to a temporary directory, runs
`gpv-score -m schwartz-values-en.json` on them and then `gpv-aggregate --by author` on its output, each
as its own process measured by bench/aggregate.py's `measure` (a fresh wrapper per run, so each peak RSS is
that run's alone). Memory must stay flat as the input grows a hundredfold.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.aggregate import measure  # noqa: E402
from tests.conftest import POSTS, SHARED, blog_sentences  # noqa: E402

LEXICON = SHARED / "data" / "dictionaries" / "schwartz-values-en.json"


def entry_point(name):
    exe = Path(sys.executable).parent / f"gpv-{name}"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", f"gpvtools.commands.{name}"]


def write_perceptions(path, size, authors, sentences, chunk=20000):
    with open(path, "wb") as f:
        for start in range(0, size, chunk):
            f.write(b"".join(orjson.dumps({"id": f"d{i}#c0#p0", "doc_id": f"d{i}", "author": f"a{i % authors:05d}",
                                           "perception": sentences[i % len(sentences)]}) + b"\n"
                             for i in range(start, min(start + chunk, size))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--authors", type=int, default=10000)
    args = parser.parse_args()
    sentences = blog_sentences(POSTS, 2000)
    print(f"{len(sentences)} distinct blog sentences, cycled; {args.authors} authors; {os.cpu_count()} CPUs")
    print(f"{'stage':>14} {'records':>9} {'MB in':>7} {'seconds':>8} {'records/s':>10} {'peak RSS':>10}")
    with tempfile.TemporaryDirectory(prefix="gpv-bench-scale-") as tmp:
        tmp = Path(tmp)
        for size in (int(s) for s in args.sizes.split(",")):
            data, scored, agg = tmp / "p.jsonl", tmp / "scored.jsonl", tmp / "agg.jsonl"
            write_perceptions(data, size, args.authors, sentences)
            for stage, command, src, out in (
                    ("gpv-score", [*entry_point("score"), "-q", "-m", str(LEXICON), str(data)], data, scored),
                    ("gpv-aggregate", [*entry_point("aggregate"), "-q", "--by", "author", str(scored)], scored, agg)):
                wall, rss = measure(command, out)
                n_out = out.read_bytes().count(b"\n") if out.stat().st_size < 2e9 else -1
                print(f"{stage:>14} {size:>9,} {src.stat().st_size / 1e6:>7.1f} {wall:>8.2f} {size / wall:>10,.0f} "
                      f"{rss:>7.1f} MiB  ({n_out:,} records out)")
            for p in (data, scored, agg):
                p.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
