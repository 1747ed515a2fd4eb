"""The linear probe trained (torch, imported only here and only when training) and scored on held-out pairs."""

import math

from ...streaming.errors import MissingDependency
from .probe_data import COMMAND

try:
    import numpy as np
except ImportError:
    raise MissingDependency(COMMAND, "numpy", "validate") from None


def _padded(pair_sets):
    """Pairs of every split in one array, padded: (pairs [S, P, 3], mask [S, P])."""
    width = max(len(p) for p in pair_sets)
    pairs = np.zeros((len(pair_sets), width, 3), dtype=np.int64)
    mask = np.zeros((len(pair_sets), width))
    for s, p in enumerate(pair_sets):
        pairs[s, :len(p)] = p
        mask[s, :len(p)] = 1
    return pairs, mask


def train_probes(x, splits, epochs=1000, lr=1e-3, seed=0, threads=1, ids=None):
    """Train one probe per split; return (best weights [S, d], validation accuracy [S], best epoch [S]).

    x: subjects × features (normalised). splits: per split, a (train_pairs, val_pairs) pair of arrays
    from make_pairs. The layer f(x) = w·x has no bias: in the logits [f(a), f(b)] a bias cancels. All
    splits train together as one batch of independent layers (Adam is per parameter and the loss is a
    sum over splits, so this is the same as training them one by one), full batch in float64, for EPOCHS steps;
    after each step the validation pairs are scored and a split keeps its weights when validation
    accuracy rises, or stays level with a lower validation loss. Initial weights are nn.Linear's
    default, U(±1/√d), from a generator seeded by (seed, split number); IDS gives the splits' numbers
    (default 0, 1, …), so that one split trained alone starts where it does among the others.
    """
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        raise MissingDependency(COMMAND, "torch", "validate") from None
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        n_splits, d = len(splits), x.shape[1]
        bound = 1 / math.sqrt(d)
        init = []
        for s in range(n_splits) if ids is None else ids:
            g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, s]).generate_state(1)[0]))
            init.append(torch.empty(d, dtype=torch.float64).uniform_(-bound, bound, generator=g))
        w = torch.nn.Parameter(torch.stack(init))
        xt = torch.as_tensor(x, dtype=torch.float64)
        column = torch.arange(n_splits)[:, None]

        def prepared(which):
            pairs, mask = _padded([sp[which] for sp in splits])
            pairs = torch.as_tensor(pairs)
            mask = torch.as_tensor(mask, dtype=torch.float64)
            return pairs[..., 0], pairs[..., 1], pairs[..., 2], mask, mask.sum(1).clamp(min=1)

        def evaluate(scores, part):
            a, b, target, mask, count = part
            logits = torch.stack([scores[a, column], scores[b, column]], dim=-1)
            ce = F.cross_entropy(logits.reshape(-1, 2), target.reshape(-1), reduction="none").view_as(mask)
            loss = (ce * mask).sum(1) / count
            return loss, logits

        train, val = prepared(0), prepared(1)
        opt = torch.optim.Adam([w], lr=lr)
        best_w = w.detach().clone()
        best_acc = torch.full((n_splits,), -1.0, dtype=torch.float64)
        best_loss = torch.full((n_splits,), math.inf, dtype=torch.float64)
        best_epoch = torch.zeros(n_splits, dtype=torch.int64)
        for epoch in range(1, epochs + 1):
            opt.zero_grad()
            loss, _ = evaluate(xt @ w.T, train)
            loss.sum().backward()
            opt.step()
            with torch.no_grad():
                vloss, logits = evaluate(xt @ w.T, val)
                vacc = pair_accuracy(logits, val[2], val[3])
                better = (vacc > best_acc) | ((vacc == best_acc) & (vloss < best_loss))
                best_w = torch.where(better[:, None], w, best_w)
                best_acc = torch.where(better, vacc, best_acc)
                best_loss = torch.where(better, vloss, best_loss)
                best_epoch = torch.where(better, torch.full_like(best_epoch, epoch), best_epoch)
        return best_w.numpy().copy(), best_acc.numpy().copy(), best_epoch.numpy().copy()
    finally:
        torch.set_num_threads(old_threads)


def pair_accuracy(logits, target, mask):
    """Share of pairs whose higher logit is the higher-scoring subject (a tie counts half), per split."""
    margin = logits[..., 0] - logits[..., 1]
    right = ((margin > 0) == (target == 0)).to(margin.dtype)
    right = right.where(margin != 0, right.new_tensor(0.5))
    return (right * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def held_out_accuracy(x, weights, test_pairs):
    """Accuracy of each split's weights on its own test pairs (plain numpy, ties count half)."""
    out = []
    for w, pairs in zip(weights, test_pairs):
        f = x @ w
        margin = f[pairs[:, 0]] - f[pairs[:, 1]]
        right = np.where(margin == 0, 0.5, (margin > 0) == (pairs[:, 2] == 0))
        out.append(float(right.mean()))
    return np.array(out)
