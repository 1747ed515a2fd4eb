"""Concurrent validity (paper §4.1, App. C.4; Tables 2, 7): correlations between two measures of the same people.

Rows are the values of measure A, columns those of measure B (e.g. GPV against the dictionary
baseline, PVD in the paper). Each cell uses the individuals measured on both of its values (pairwise
exclusion); r is null where fewer than 3 remain or either side is constant there.
"""

import warnings

from ...streaming.errors import MissingDependency

try:
    import numpy as np
    from scipy import stats
except ImportError:
    raise MissingDependency("gpv-validate", "numpy and scipy", "validate") from None

METHODS = ("pearson", "spearman")


def _pair(x, y, method):
    mask = ~np.isnan(x) & ~np.isnan(y)
    n = int(mask.sum())
    x, y = x[mask], y[mask]
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, None, n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.pearsonr(x, y) if method == "pearson" else stats.spearmanr(x, y)
    return float(result[0]), float(result[1]), n


def correlate(a, b, method="pearson"):
    """(r, p, n): (Va, Vb) arrays for the columns of a (N, Va) against those of b (N, Vb); NaN unmeasured."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.shape[1], b.shape[1]
    r = np.full((va, vb), np.nan)
    p = np.full((va, vb), np.nan)
    n = np.zeros((va, vb), dtype=int)
    for i in range(va):
        for j in range(vb):
            rij, pij, n[i, j] = _pair(a[:, i], b[:, j], method)
            if rij is not None:
                r[i, j], p[i, j] = rij, pij
    return r, p, n
