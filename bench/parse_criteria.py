"""The paper's parse criteria (App. B.2) on blog chunks: a judging sheet for two parsers, and the rates.

    python bench/parse_criteria.py sheet [--chunks 20] [--seed 0] [--a builtin@OLD] [--b default]
    python bench/parse_criteria.py rates [bench/parse_criteria.jsonl]

The paper had trained annotators judge GPT-3.5-turbo's perceptions of 20 blog segments: each perception on
C1 (value-laden and accurate about the author), C2 (atomic) and C3 (well-contextualised, self-contained),
and each segment's set on C4 (comprehensive: how many perceptions were missed). It reports agreement
rates of 89.7%, 95.7% and 87.8% and a comprehensive rate of 93.8% (extracted / (extracted + missed)).

`sheet` picks --chunks chunks of the Blog Authorship Corpus posts in ../shared (gpv-chunk with its
defaults; chunks of 100 words or more, one per post, drawn with --seed), parses them with two parsers
(the names of bench/e2e.py: builtin@OLD is the built-in LLM parser as it was before grounding, default
is gpv-parse with no option), and writes build/parse_criteria/sheet.md: each chunk with its two sets of
perceptions, labelled A and B in an order drawn per chunk, so that a judge does not know which parser
wrote which; the key (and every perception) is bench/parse_criteria.key.json. The sheet holds the
chunks' text, a copy of the data, so it stays in build/. The judge writes bench/parse_criteria.jsonl, a
line per perception {"chunk", "set", "n", "perception", "C1", "C2", "C3", "reason"} (reason where a
criterion fails) and a line per set {"chunk", "set", "missed": [what the set left out]}. `rates` maps
the sets back to parsers and prints each criterion's rate per parser, with the paper's beside them.
"""

import argparse
import random
import subprocess
import sys
from pathlib import Path

import orjson
from e2e import BIN, OLD, ROOT, parse_command, read_jsonl, write_jsonl

POSTS = ROOT.parent / "shared" / "data" / "blogs" / "posts-dev.jsonl"
HERE = ROOT / "build" / "parse_criteria"  # the sheet and the chunks: copies of the blog data, never committed
KEY = Path(__file__).resolve().parent / "parse_criteria.key.json"
JUDGED = Path(__file__).resolve().parent / "parse_criteria.jsonl"
PAPER = {"C1": 89.7, "C2": 95.7, "C3": 87.8, "C4": 93.8}


def pick(chunks, n, seed):
    by_post = {}
    for c in chunks:
        if len(c["text"].split()) >= 100:
            by_post.setdefault(c["doc_id"], []).append(c)
    rng = random.Random(seed)
    posts = sorted(by_post)
    rng.shuffle(posts)
    return [rng.choice(by_post[p]) for p in sorted(posts[:n])]


def sheet(args):
    HERE.mkdir(parents=True, exist_ok=True)
    chunks_file = HERE / "all-chunks.jsonl"
    subprocess.run([str(BIN / "gpv-chunk"), "-q", str(POSTS), "-o", str(chunks_file)], check=True)
    chosen = pick(read_jsonl(chunks_file), args.chunks, args.seed)
    write_jsonl(HERE / "chunks.jsonl", chosen)
    parsed = {}
    for name in (args.a, args.b):
        argv, env = parse_command(name, argparse.Namespace(threads=args.threads, jobs=args.jobs), HERE)
        out = subprocess.run(argv + ["--on-error", "emit", str(HERE / "chunks.jsonl")], capture_output=True,
                             env=env).stdout
        records = [r for r in map(orjson.loads, out.splitlines()) if "_gpv_error" not in r]
        parsed[name] = {c["id"]: [r["perception"] for r in records if r["id"].rsplit("#p", 1)[0] == c["id"]]
                        for c in chosen}
    rng = random.Random(args.seed + 1)
    key, lines = {}, ["# Perceptions to judge (paper App. B.2)", "",
                      "For each perception: C1 value-laden and accurate about the author; C2 atomic; C3 "
                      "well-contextualised and self-contained. For each set: what value-laden content of the "
                      "chunk it left out (C4).", ""]
    for i, c in enumerate(chosen, 1):
        order = [args.a, args.b]
        rng.shuffle(order)
        key[c["id"]] = {"A": order[0], "B": order[1]}
        lines += [f"## {i}. chunk `{c['id']}`", "", "> " + " ".join(c["text"].split()), ""]
        for label, name in zip("AB", order):
            lines.append(f"Set {label}:")
            lines += [f"{n}. {p}" for n, p in enumerate(parsed[name][c["id"]], 1)] or ["(no perception)"]
            lines.append("")
    (HERE / "sheet.md").write_text("\n".join(lines), encoding="utf-8")
    KEY.write_bytes(orjson.dumps({"a": args.a, "b": args.b, "seed": args.seed, "sets": key,
                                                  "perceptions": parsed}, option=orjson.OPT_INDENT_2))
    print(f"{HERE / 'sheet.md'}: {len(chosen)} chunks; " + ", ".join(
        f"{name} {sum(map(len, parsed[name].values()))} perceptions" for name in (args.a, args.b)))


def rates(args):
    key = orjson.loads(KEY.read_bytes())
    judged = read_jsonl(args.judged)
    per = {name: {"n": 0, "C1": 0, "C2": 0, "C3": 0, "missed": 0} for name in (key["a"], key["b"])}
    for j in judged:
        name = key["sets"][j["chunk"]][j["set"]]
        if "missed" in j:
            per[name]["missed"] += len(j["missed"])
        else:
            per[name]["n"] += 1
            for c in ("C1", "C2", "C3"):
                per[name][c] += bool(j[c])
    print(f"{'parser':<22}{'perceptions':>12}{'C1':>8}{'C2':>8}{'C3':>8}{'C4':>8}")
    for name, r in per.items():
        n = r["n"]
        cells = [100 * r[c] / n if n else float("nan") for c in ("C1", "C2", "C3")]
        c4 = 100 * n / (n + r["missed"]) if n + r["missed"] else float("nan")
        print(f"{name:<22}{n:>12}" + "".join(f"{x:>7.1f}%" for x in cells + [c4]))
    print(f"{'paper, GPT-3.5-turbo':<22}{88:>12}" + "".join(f"{PAPER[c]:>7.1f}%" for c in ("C1", "C2", "C3", "C4")))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sheet")
    s.add_argument("--chunks", type=int, default=20)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--a", default=f"builtin@{OLD}")
    s.add_argument("--b", default="default")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("-j", "--jobs", type=int, default=8)
    r = sub.add_parser("rates")
    r.add_argument("judged", nargs="?", type=Path, default=JUDGED)
    args = ap.parse_args()
    return sheet(args) if args.what == "sheet" else rates(args)


if __name__ == "__main__":
    sys.exit(main())
