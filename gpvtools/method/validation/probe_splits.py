"""The linear probe's splits: subjects drawn into train/validation/test across score bins, and the pairs of
subjects each part compares."""

import itertools

from ...streaming.errors import MissingDependency, UsageError
from .probe_data import COMMAND

try:
    import numpy as np
except ImportError:
    raise MissingDependency(COMMAND, "numpy", "validate") from None


def make_pairs(members, y):
    """Every unordered pair (a, b), a before b in MEMBERS, whose labels differ, and its target.

    target 0: a scores higher; 1: b does (the index of the higher one in the logits [f(a), f(b)]).
    Tied pairs say nothing about relative scores and are left out.
    """
    out = [(a, b, 0 if y[a] > y[b] else 1) for a, b in itertools.combinations(members, 2) if y[a] != y[b]]
    return np.array(out, dtype=np.int64).reshape(-1, 3)


def score_bins(y, n_bins):
    """Bin of each subject: equal-count bins by rank of score (ties in input order; earlier bins take the remainder)."""
    order = np.argsort(np.asarray(y, dtype=float), kind="stable")
    bins = np.empty(len(order), dtype=np.int64)
    for b, members in enumerate(np.array_split(order, n_bins)):
        bins[members] = b
    return bins


def _allocate(k, available, rng):
    """Split K draws over bins in proportion to what each has left (largest remainder, ties at random)."""
    available = np.asarray(available, dtype=float)
    raw = k * available / available.sum()
    quota = np.floor(raw).astype(np.int64)
    left = k - int(quota.sum())
    if left:
        shuffled = rng.permutation(len(raw))
        by_remainder = shuffled[np.argsort(-(raw - quota)[shuffled], kind="stable")]
        quota[by_remainder[:left]] += 1
    return quota


def stratified_split(bins, sizes, rng):
    """(train, val, test) index arrays of sizes (n_train, n_val, n_test), each drawn across the score bins.

    Validation is drawn first, then test from what is left, each in proportion to what every bin has
    left (with 17 subjects, 4 bins of 5/4/4/4 and 9/4/4 this is one subject of each bin in validation
    and in test); the rest is training.
    """
    bins = np.asarray(bins)
    n_train, n_val, n_test = sizes
    if n_train + n_val + n_test != len(bins):
        raise UsageError(f"split sizes {n_train}/{n_val}/{n_test} do not add up to {len(bins)} subjects")
    pools = [list(rng.permutation(np.flatnonzero(bins == b))) for b in range(int(bins.max()) + 1)]
    parts = []
    for k in (n_val, n_test):
        quota = _allocate(k, [len(p) for p in pools], rng)
        part = []
        for pool, q in zip(pools, quota):
            part += pool[:q]
            del pool[:q]
        parts.append(np.sort(np.array(part, dtype=np.int64)))
    train = np.sort(np.array([i for pool in pools for i in pool], dtype=np.int64))
    return train, parts[0], parts[1]


def draw_splits(bins, sizes, n_splits, seed):
    """N_SPLITS stratified (train, val, test) splits, drawn one after another from numpy's Generator(SEED)."""
    rng = np.random.default_rng(seed)
    return [stratified_split(bins, sizes, rng) for _ in range(n_splits)]


def default_sizes(n):
    """Train/val/test sizes: validation and test 4/17 of the subjects each (at least 2), as the paper's 9/4/4."""
    k = max(2, round(4 * n / 17))
    return n - 2 * k, k, k


def parse_split(text, n):
    """Train/val/test sizes from --split TRAIN/VAL/TEST (None: default_sizes) for N subjects."""
    if text is None:
        sizes = default_sizes(n)
    else:
        try:
            sizes = tuple(int(t) for t in text.split("/"))
        except ValueError:
            sizes = ()
        if len(sizes) != 3:
            raise UsageError(f"--split '{text}': give TRAIN/VAL/TEST subject counts, e.g. 9/4/4")
    if sum(sizes) != n:
        raise UsageError(f"--split {'/'.join(map(str, sizes))} adds up to {sum(sizes)}, but {n} subjects "
                         f"have a profile and a label")
    if min(sizes) < 2:
        raise UsageError(f"--split {'/'.join(map(str, sizes))}: each part needs at least 2 subjects to form a pair"
                         + ("" if text else f" ({n} subjects are too few)"))
    return sizes
