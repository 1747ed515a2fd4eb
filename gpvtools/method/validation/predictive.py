"""Predictive validity (paper §4.1, Table 3): do two groups (e.g. women and men) differ as theory expects?

Per value, over the individuals of each group that have a score:

  difference   mean_a - mean_b
  cohens_d     difference / pooled sd,  pooled sd = sqrt(((n_a-1) sd_a^2 + (n_b-1) sd_b^2) / (n_a+n_b-2))
  hedges_g     cohens_d * (1 - 3 / (4 (n_a+n_b) - 9)), the small-sample correction (Hedges 1981)
  test         Welch's t test (unequal variances; scipy.stats.ttest_ind, equal_var=False), or the
               Mann-Whitney U test (two-sided; scipy.stats.mannwhitneyu), with its p-value
"""

import math
import warnings

from ...streaming.errors import MissingDependency

try:
    import numpy as np
    from scipy import stats
except ImportError:
    raise MissingDependency("gpv-validate", "numpy and scipy", "validate") from None

TESTS = ("welch", "mannwhitney")


def compare(a, b, test="welch"):
    """The comparison of two samples (NaN dropped) as a dict; None where it is undefined."""
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}")
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    na, nb = len(a), len(b)
    mean_a = float(a.mean()) if na else None
    mean_b = float(b.mean()) if nb else None
    sd_a = float(a.std(ddof=1)) if na > 1 else None
    sd_b = float(b.std(ddof=1)) if nb > 1 else None
    out = {"n": [na, nb], "mean": [mean_a, mean_b], "sd": [sd_a, sd_b],
           "difference": mean_a - mean_b if na and nb else None,
           "cohens_d": None, "hedges_g": None, "statistic": None, "df": None, "p": None}
    if na > 1 and nb > 1:
        pooled = math.sqrt(((na - 1) * sd_a ** 2 + (nb - 1) * sd_b ** 2) / (na + nb - 2))
        if pooled > 0:
            out["cohens_d"] = out["difference"] / pooled
            out["hedges_g"] = out["cohens_d"] * (1 - 3 / (4 * (na + nb) - 9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if test == "welch" and na > 1 and nb > 1 and (sd_a or sd_b):
            result = stats.ttest_ind(a, b, equal_var=False)
            out["statistic"], out["p"] = float(result.statistic), float(result.pvalue)
            va, vb = sd_a ** 2 / na, sd_b ** 2 / nb  # Welch–Satterthwaite degrees of freedom
            out["df"] = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
        elif test == "mannwhitney" and na and nb:
            result = stats.mannwhitneyu(a, b, alternative="two-sided")
            out["statistic"], out["p"] = float(result.statistic), float(result.pvalue)
    return out
