"""Construct validity (paper §4.1, App. C.3; Fig. 2): the structure of values across individuals.

  similarity  cosine similarity between two values' score vectors over the individuals measured on
              both (an individual unmeasured on either is left out of that pair only, App. C.3)
  distance    1 - similarity, so that similar values lie close
  MDS         metric multidimensional scaling of the distances into two dimensions (scikit-learn's
              SMACOF, fixed seed); Kruskal's stress-1 says how faithfully the map keeps them
  circumplex  for Schwartz's ten basic values: how well the structure follows the circle of Schwartz
              & Bilsky (1990) and Schwartz (1992), in the order below. Theoretical distance between
              two values: the steps between them around the circle of ten (1..5). Observed: (a) the
              angle between the two values seen from the centre of the MDS map, (b) their distance
              1 - similarity. Each is compared with the theoretical one by Spearman's rho over the 45
              pairs, with a one-sided permutation p-value (a Mantel test: the value labels are
              shuffled over the circle; p = (1 + #{rho_perm >= rho}) / (1 + permutations)).
"""

import inspect
import math

from ...streaming.errors import MissingDependency
from ..values import HIGHER_ORDER

try:
    import numpy as np
    from scipy.stats import rankdata
except ImportError:
    raise MissingDependency("gpv-validate", "numpy and scipy", "validate") from None

# Schwartz's circular order of the ten basic values (Schwartz & Bilsky 1990; Schwartz 1992, Fig. 1),
# going round from Self-Direction; Conformity and Tradition share a wedge and are placed in turn.
SCHWARTZ_CIRCLE = ("Self-Direction", "Stimulation", "Hedonism", "Achievement", "Power", "Security",
                   "Conformity", "Tradition", "Benevolence", "Universalism")


def cosine_similarity(x):
    """(V, V) cosine similarities between the columns of x (N, V; NaN unmeasured) and (V, V) pair counts.

    A pair's similarity uses the rows where both values are measured; NaN where no such row exists or
    either vector is all zeros there.
    """
    x = np.asarray(x, dtype=float)
    measured = ~np.isnan(x)
    filled = np.where(measured, x, 0.0)
    m = measured.astype(float)
    dot = filled.T @ filled                 # sum over rows measured on both (others contribute 0)
    sq = (filled ** 2).T @ m                # sq[i, j]: sum of x_i^2 over rows where j is measured too
    n = m.T @ m
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = dot / np.sqrt(sq * sq.T)
    sim[(n == 0) | (sq == 0) | (sq.T == 0)] = np.nan
    diagonal = np.diag_indices_from(sim)
    sim[diagonal] = np.where(np.isnan(sim[diagonal]), np.nan, 1.0)  # exactly, not to the last bit
    return sim, n.astype(int)


def stress1(distance, coords):
    """Kruskal's stress-1 of a configuration: sqrt(sum (d_ij - delta_ij)^2 / sum d_ij^2) over pairs i < j."""
    iu = np.triu_indices(len(distance), 1)
    d = np.sqrt(((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1))[iu]
    delta = np.asarray(distance)[iu]
    total = (d ** 2).sum()
    return float(math.sqrt(((d - delta) ** 2).sum() / total)) if total else 0.0


def mds(distance, seed=0, n_init=4):
    """2-D metric MDS of a precomputed distance matrix (scikit-learn), reproducible with SEED."""
    from sklearn.manifold import MDS

    params = inspect.signature(MDS.__init__).parameters
    if "metric_mds" in params:  # scikit-learn >= 1.8 renamed the options
        model = MDS(n_components=2, metric="precomputed", metric_mds=True, init="random", n_init=n_init,
                    random_state=seed)
    else:
        model = MDS(n_components=2, dissimilarity="precomputed", metric=True, n_init=n_init, random_state=seed)
    coords = model.fit_transform(np.asarray(distance, dtype=float))
    return coords, stress1(distance, coords)


def circle_steps(names, order=SCHWARTZ_CIRCLE):
    """(V, V) steps between the values around the circle of ORDER (0..len//2)."""
    pos = np.array([order.index(n) for n in names])
    diff = np.abs(pos[:, None] - pos[None, :])
    return np.minimum(diff, len(order) - diff)


def angular_distance(coords):
    """(V, V) angles (radians, 0..pi) between points of a 2-D map seen from the map's centroid."""
    centred = np.asarray(coords, dtype=float) - np.mean(coords, axis=0)
    angle = np.arctan2(centred[:, 1], centred[:, 0])
    diff = np.abs(angle[:, None] - angle[None, :]) % (2 * math.pi)
    return np.minimum(diff, 2 * math.pi - diff)


def _pearson_rows(a, b):
    """Pearson correlation of vector a with each row of b."""
    a = a - a.mean()
    b = b - b.mean(axis=1, keepdims=True)
    return (b @ a) / np.sqrt((a @ a) * (b * b).sum(axis=1))


def mantel(observed, theoretical, permutations=9999, seed=0):
    """Spearman's rho between two symmetric matrices' upper triangles and its one-sided permutation p.

    The permutations relabel the theoretical matrix's rows and columns together.
    """
    observed, theoretical = np.asarray(observed, float), np.asarray(theoretical, float)
    k = len(observed)
    iu = np.triu_indices(k, 1)
    r_obs = rankdata(observed[iu])
    r_theo = rankdata(theoretical[iu])
    rho = float(_pearson_rows(r_obs, r_theo[None, :])[0])
    if permutations <= 0:
        return rho, None
    # A relabelling permutes the entries of the theoretical triangle, so its ranks move with them.
    rank_matrix = np.zeros((k, k))
    rank_matrix[iu] = r_theo
    rank_matrix = rank_matrix + rank_matrix.T
    rng = np.random.default_rng(seed)
    perms = np.array([rng.permutation(k) for _ in range(permutations)])
    permuted = rank_matrix[perms[:, iu[0]], perms[:, iu[1]]]
    rhos = _pearson_rows(r_obs, permuted)
    p = (1 + int(np.sum(rhos >= rho - 1e-12))) / (1 + permutations)
    return rho, p


def circumplex_fit(names, similarity, coords, permutations=9999, seed=0):
    """Agreement of the observed structure with Schwartz's circle (see the module's docstring)."""
    steps = circle_steps(names)
    rho_a, p_a = mantel(angular_distance(coords), steps, permutations, seed)
    rho_d, p_d = mantel(1 - np.asarray(similarity), steps, permutations, seed)
    return {"order": list(SCHWARTZ_CIRCLE), "rho_angular": rho_a, "p_angular": p_a,
            "rho_distance": rho_d, "p_distance": p_d, "permutations": permutations, "seed": seed}


def higher_order_of(name):
    """The higher-order value(s) a basic Schwartz value belongs to ('' when none)."""
    return " / ".join(h for h, basics in HIGHER_ORDER.items() if name in basics)
