"""Value representation utility: how well measured values predict a score table, by linear probing.

The protocol of the GPV paper (§5.2, App. D.4): a linear layer maps a subject's value profile to a
scalar; two subjects' scalars are the logits of "which of the two scores higher" (the relative
safety of two LLMs in the paper), trained with cross-entropy on every pair of training subjects.
Subjects are split train/validation/test many times, stratified by score; the report is the test
accuracy over splits and the layer's mean weight per value.

This module is the protocol: the features and the report. Its pieces have modules of their own and are
named here too, so that one import reaches the whole probe: the inputs (probe_data), the splits and
pairs (probe_splits), the training and scoring of the layer (probe_training). Plain Python data in and
out, no click; the record-level check is probe in checks.py. torch is imported only when a probe is trained.
"""

from ...streaming.errors import GpvError, UsageError
from .probe_data import (
    ALL_COMBINATIONS,
    combination_values,
    join,
    name_list,
    parse_systems,
    read_labels,
    subject_scores,
)
from .probe_splits import default_sizes, draw_splits, make_pairs, parse_split, score_bins, stratified_split
from .probe_training import held_out_accuracy, train_probes

# isort: split
import numpy as np  # after the pieces, which name the extra when numpy is missing

__all__ = ["ALL_COMBINATIONS", "UsageError", "combination_values", "default_sizes", "draw_splits", "feature_matrix",
           "held_out_accuracy", "make_pairs", "normalise", "parse_split", "parse_systems", "read_labels",
           "run_probe", "score_bins", "stratified_split", "subject_scores", "train_probes"]


def feature_matrix(profiles, subjects, values):
    """subjects × values, NaN where a value is unmeasured."""
    return np.array([[np.nan if profiles[s].get(v) is None else profiles[s][v] for v in values]
                     for s in subjects], dtype=float).reshape(len(subjects), len(values))


def normalise(x, how="minmax"):
    """Each column to [-1, 1], then missing (NaN) as 0.

    minmax: the column's smallest measured score becomes -1 and its largest 1, over all the rows given
    (a column with a single distinct score becomes 0). none: the scores are used as they are (GPV's own
    scale is already [-1, 1]).
    """
    x = np.array(x, dtype=float)
    if how == "minmax":
        measured = ~np.isnan(x)
        cols = measured.any(axis=0)
        lo = np.full(x.shape[1], np.nan)
        hi = np.full(x.shape[1], np.nan)
        lo[cols] = np.nanmin(x[:, cols], axis=0)
        hi[cols] = np.nanmax(x[:, cols], axis=0)
        span = hi - lo
        flat = ~(span > 0)
        x = 2 * (x - lo) / np.where(flat, 1.0, span) - 1
        x[:, flat] = np.where(np.isnan(x[:, flat]), np.nan, 0.0)
    elif how != "none":
        raise UsageError(f"unknown normalisation '{how}'")
    return np.where(np.isnan(x), 0.0, x)


def _sd(values):
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _count(values):
    """A per-split count: an int when every split has the same, else the mean."""
    values = list(values)
    return values[0] if len(set(values)) == 1 else float(np.mean(values))


def run_probe(profiles, labels, combos, n_splits=30, epochs=1000, lr=1e-3, seed=0, n_bins=4, split=None,
              normalisation="minmax", warn=None):
    """The report: for each combination of systems, test accuracy over splits and the mean weight per value.

    The same SPLITS random splits (numpy Generator seeded by SEED) serve every combination, so the
    combinations are compared on the same subjects.
    """
    subjects = join(profiles, labels)
    n = len(subjects)
    if n < 6:
        raise GpvError(f"{n} subjects have a profile and a label; probing needs at least 6 (2 per part)")
    if not 1 <= n_bins <= n:
        raise UsageError(f"--bins {n_bins}: give 1 to {n} (the number of subjects)")
    sizes = parse_split(split, n)
    y = np.array([labels[s] for s in subjects])
    bins = score_bins(y, n_bins)
    parts = draw_splits(bins, sizes, n_splits, seed)
    pairs = [tuple(make_pairs(p, y) for p in part) for part in parts]
    for k, (tr, va, te) in enumerate(pairs):
        for name, p in (("training", tr), ("validation", va), ("test", te)):
            if not len(p):
                raise GpvError(f"split {k + 1}: the {name} subjects all have the same label; no pair to compare")
    report = {
        "subjects": n,
        "splits": n_splits, "epochs": epochs, "lr": lr, "seed": seed, "bins": n_bins,
        "split": dict(zip(("train", "val", "test"), sizes)), "normalisation": normalisation,
        "results": [],
    }
    for combo in combos:
        wanted = combination_values(combo)
        present = [v for v in wanted if any(profiles[s].get(v) is not None for s in subjects)]
        if not present:
            raise GpvError(f"no value of {'+'.join(combo)} is measured for any subject")
        unmeasured = [v for v in wanted if v not in present]
        if unmeasured and warn:
            warn(f"{'+'.join(combo)}: {len(unmeasured)} value(s) measured for no subject, left out: "
                 f"{name_list(unmeasured)}")
        x = normalise(feature_matrix(profiles, subjects, present), normalisation)
        weights, val_acc, best_epoch = train_probes(x, [(tr, va) for tr, va, _ in pairs], epochs, lr, seed)
        acc = held_out_accuracy(x, weights, [te for _, _, te in pairs])
        report["results"].append({
            "systems": list(combo),
            "values": len(present),
            "subjects": n,
            "pairs": {"all": len(make_pairs(range(n), y)),
                      **{name: _count(len(p[i]) for p in pairs) for i, name in enumerate(("train", "val", "test"))}},
            "accuracy": {"mean": float(acc.mean()), "sd": _sd(acc), "splits": [round(float(a), 6) for a in acc]},
            "val_accuracy": {"mean": float(val_acc.mean()), "sd": _sd(val_acc)},
            "best_epoch": {"mean": float(best_epoch.mean()), "min": int(best_epoch.min()),
                           "max": int(best_epoch.max())},
            "weights": {v: float(m) for v, m in zip(present, weights.mean(axis=0))},
            "weights_sd": {v: _sd(weights[:, j]) for j, v in enumerate(present)},
            "unmeasured": unmeasured,
        })
    # Means of 6-pair accuracies tie often; a tie goes to the combination with fewer values, then the
    # earlier one (rounding first, so float noise cannot pick the winner).
    results = report["results"]
    level = [round(r["accuracy"]["mean"], 9) for r in results]
    top = max(range(len(results)), key=lambda i: (level[i], -results[i]["values"], -i))
    best = results[top]
    report["best"] = {"systems": best["systems"], "accuracy": {k: best["accuracy"][k] for k in ("mean", "sd")},
                      "tied": [r["systems"] for i, r in enumerate(results) if i != top and level[i] == level[top]]}
    return report
