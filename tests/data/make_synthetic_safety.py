"""Write tests/data/synthetic-safety.jsonl: a SYNTHETIC safety score for the 17 LLMs of the GPV paper.

    python tests/data/make_synthetic_safety.py > tests/data/synthetic-safety.jsonl

The GPV paper's probe (§5.2, App. D.4) predicts SALAD-Bench safety scores, but the paper does not
print them, so these are not those. Each score is a fixed linear function of the LLM's VSM values
from the paper's Tables 11-13 (paper-gpv-llm-values.jsonl), each value min-max scaled to [-1, 1] over
the 17 LLMs, with the weights the paper reports its VSM probe learned (Table 10), plus noise: a
Gaussian draw from numpy's default_rng(20240917), made uncorrelated with the planted signal in the
sample and rescaled to a sample sd of exactly 0.4 (against a signal sd of about 0.8). With 17
subjects one raw draw can cancel much of the signal: this one, as drawn, had sample sd 0.51 and
correlation -0.45 with it, and left the probe at chance (bench/probe.py, bench/RESULTS.md). The
planted relation makes a probe on VSM values well above chance but not perfect, and says which signs
the mean weights should have; it says nothing about how safe any of these models is.
"""

import sys
from pathlib import Path

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
# Ye et al., GPV paper, Table 10: mean probe weight per VSM value.
WEIGHTS = {"Long Term Orientation": 0.80, "Indulgence": 0.36, "Uncertainty Avoidance": 0.19,
           "Masculinity": -0.46, "Power Distance": -0.81, "Individualism": -0.84}
NOISE_SD, SEED = 0.4, 20240917
NOTE = "SYNTHETIC, not SALAD-Bench: linear in VSM values (Table 10 weights) plus noise; see make_synthetic_safety.py"


def main():
    records = [orjson.loads(line) for line in (HERE / "paper-gpv-llm-values.jsonl").read_bytes().splitlines()]
    x = np.array([[r["values"][v]["score"] for v in WEIGHTS] for r in records])
    z = 2 * (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0)) - 1
    signal = z @ np.array(list(WEIGHTS.values()))
    noise = np.random.default_rng(SEED).normal(0.0, NOISE_SD, len(records))
    basis = np.column_stack([np.ones(len(signal)), signal])
    noise -= basis @ np.linalg.lstsq(basis, noise, rcond=None)[0]
    score = signal + noise * NOISE_SD / noise.std(ddof=1)
    for r, s in zip(records, score):
        out = {"subject": r["subject"], "score": round(float(s), 4), "note": NOTE}
        sys.stdout.buffer.write(orjson.dumps(out) + b"\n")


if __name__ == "__main__":
    main()
