"""How much a scorer tells authors apart: valence decisions and the spread of author profiles.

    python bench/profiles.py SCORED.jsonl AUTHORS.jsonl [--json FILE]

SCORED is gpv-score's output, AUTHORS gpv-aggregate's (bench/blogs.sh writes both). Prints:
  - measured pairs (a value judged relevant, so it has a score) and how many of them the scorer
    called "oppose" (its oppose probability the largest of support, oppose, either);
  - the cosine similarity of every pair of author profiles (the 10 mean scores; a value not
    measured for an author counts 0), as quantiles: profiles that are all alike have similarities
    near 1, which says the scorer cannot tell the authors apart.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import orjson


def valence_decisions(scored):
    measured = oppose = 0
    for r in scored:
        for x in r["values"].values():
            if x.get("score") is None:
                continue
            measured += 1
            oppose += x["oppose"] > max(x["support"], x.get("either", 0.0))
    return measured, oppose


def profile_similarities(authors):
    names = sorted({v for a in authors for v in a["values"]})
    m = np.array([[a["values"].get(v, {}).get("score") or 0.0 for v in names] for a in authors])
    norms = np.linalg.norm(m, axis=1)
    keep = norms > 0
    m = m[keep] / norms[keep, None]
    sims = m @ m.T
    upper = sims[np.triu_indices(len(m), k=1)]
    return int(keep.sum()), upper


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scored", type=Path)
    parser.add_argument("authors", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    scored = [orjson.loads(x) for x in args.scored.read_bytes().splitlines() if x.strip()]
    authors = [orjson.loads(x) for x in args.authors.read_bytes().splitlines() if x.strip()]
    measured, oppose = valence_decisions(scored)
    n, sims = profile_similarities(authors)
    qs = [0, 0.05, 0.25, 0.5, 0.75, 0.95, 1]
    quantiles = {f"q{int(q * 100)}": round(float(np.quantile(sims, q)), 3) for q in qs} if len(sims) else {}
    print(f"measured pairs: {measured} of {sum(len(r['values']) for r in scored)}; called \"oppose\": {oppose} "
          f"({100 * oppose / max(measured, 1):.1f}%)")
    print(f"author profiles: {n} with a measured value; cosine similarity over {len(sims)} pairs: "
          + ", ".join(f"{k} {v}" for k, v in quantiles.items()))
    if args.json:
        args.json.write_bytes(orjson.dumps({"measured_pairs": measured, "oppose": oppose, "authors": n,
                                            "cosine_quantiles": quantiles}, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
