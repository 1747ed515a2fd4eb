"""Stability (paper §4.1, App. C.2, Table 6): do perceptions agree in sign with their individual's value?

For each value, every measured perception is compared with its individual's aggregated score, the
mean of that individual's measured perceptions of the value (§3.3):

    ss  individual supports (mean > 0), perception supports (score > 0)
    so  individual supports, perception opposes (score < 0)
    oo  both oppose
    os  individual opposes, perception supports

    p_ss = ss / (ss + so)    p_oo = oo / (oo + os)    p_same = (ss + oo) / (ss + so + oo + os)

The Sum column adds the counts over values and takes the ratios of the sums (as Table 6 does).
Left out, and counted: perceptions scoring exactly 0 ("zero"), perceptions of an individual whose
mean is exactly 0 ("tied"), and of an individual with fewer than min_evidence measured perceptions
of the value ("sparse"). An individual's sign is the sign of the exact sum of its scores (math.fsum).
"""

import math

from ...streaming.errors import MissingDependency

try:
    import numpy as np
except ImportError:
    raise MissingDependency("gpv-validate", "numpy", "validate") from None


def individual_signs(groups, scores):
    """(G, V) sign of each individual's mean score (0: exactly 0 or no measurement) and (G, V) counts.

    groups: (N,) ints 0..G-1, the individual of each perception; scores: (N, V) floats, NaN unmeasured.
    """
    groups = np.asarray(groups, dtype=np.intp)
    scores = np.asarray(scores, dtype=float)
    n_groups = int(groups.max()) + 1 if groups.size else 0
    n_values = scores.shape[1] if scores.ndim == 2 else 0
    signs = np.zeros((n_groups, n_values), dtype=int)
    counts = np.zeros((n_groups, n_values), dtype=int)
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    for segment in np.split(order, bounds):
        if segment.size == 0:
            continue
        g = groups[segment[0]]
        for j in range(n_values):
            column = scores[segment, j]
            column = column[~np.isnan(column)]
            counts[g, j] = column.size
            signs[g, j] = int(np.sign(math.fsum(column))) if column.size else 0
    return signs, counts


def stability(groups, scores, min_evidence=1):
    """Per value (arrays of length V): ss, oo, so, os and the left-out zero, tied, sparse counts."""
    groups = np.asarray(groups, dtype=np.intp)
    scores = np.asarray(scores, dtype=float)
    signs, counts = individual_signs(groups, scores)
    measured = ~np.isnan(scores)
    perception = np.sign(np.where(measured, scores, 0.0)).astype(int)
    individual = signs[groups] if groups.size else np.zeros_like(perception)
    enough = counts[groups] >= min_evidence if groups.size else np.zeros_like(measured)
    used = measured & enough
    out = {
        "ss": ((individual > 0) & (perception > 0) & used).sum(axis=0),
        "oo": ((individual < 0) & (perception < 0) & used).sum(axis=0),
        "so": ((individual > 0) & (perception < 0) & used).sum(axis=0),
        "os": ((individual < 0) & (perception > 0) & used).sum(axis=0),
        "zero": (used & (perception == 0)).sum(axis=0),
        "tied": (used & (perception != 0) & (individual == 0)).sum(axis=0),
        "sparse": (measured & ~enough).sum(axis=0),
    }
    return {k: np.asarray(v, dtype=int) for k, v in out.items()}


def _ratio(a, b):
    return a / b if b else None


def ratios(ss, oo, so, os_):
    """p_ss, p_oo, p_same of one column of counts (None where a denominator is 0)."""
    return {"p_ss": _ratio(ss, ss + so), "p_oo": _ratio(oo, oo + os_),
            "p_same": _ratio(ss + oo, ss + so + oo + os_)}
