"""Value representation utility: how well measured values predict a score table, by linear probing.

The protocol of the GPV paper (§5.2, App. D.4): a linear layer maps a subject's value profile to a
scalar; two subjects' scalars are the logits of "which of the two scores higher" (the relative
safety of two LLMs in the paper), trained with cross-entropy on every pair of training subjects.
Subjects are split train/validation/test many times, stratified by score; the report is the test
accuracy over splits and the layer's mean weight per value.

Plain Python data in and out, no click: the command is `probe` in gpvtools/commands/validate.py.
torch is imported only when a probe is trained.
"""

import csv
import io
import itertools
import math
from pathlib import Path

from ...streaming.errors import BadRecord, GpvError, MissingDependency, UsageError
from ...streaming.jsonl import iter_lines, open_input, parse_line
from ...streaming.resume import ERROR_FIELD
from ..values import system

try:
    import numpy as np
except ImportError:  # a core install; the command says what to add
    np = None

COMMAND = "gpv-validate probe"
# Table 9's columns, in its order: bit i of a combination's number is SYSTEM_ORDER[i], so counting
# 1..15 walks the combinations in the order the paper prints them.
SYSTEM_ORDER = ("nfcc", "vsm", "schwartz", "lvi")
ALL_COMBINATIONS = "all-combinations"


# --- which values are features ----------------------------------------------------------------

def parse_systems(specs):
    """Combinations of value systems from --systems: each spec a comma list, 'all', or 'all-combinations'.

    Returns tuples of system names in SYSTEM_ORDER, without repeats, in the order given
    ('all-combinations' expands to the 15 non-empty combinations in Table 9's order).
    """
    combos = []
    for spec in specs:
        items = [s.strip().lower() for s in spec.split(",") if s.strip()]
        if items == [ALL_COMBINATIONS]:
            combos += [tuple(s for i, s in enumerate(SYSTEM_ORDER) if mask >> i & 1)
                       for mask in range(1, 1 << len(SYSTEM_ORDER))]
            continue
        if not items:
            raise UsageError(f"--systems '{spec}' names no value system")
        chosen = set()
        for item in items:
            if item == "all":
                chosen.update(SYSTEM_ORDER)
            elif item in SYSTEM_ORDER:
                chosen.add(item)
            else:
                raise UsageError(f"--systems: unknown value system '{item}'; known: "
                                 f"{', '.join(SYSTEM_ORDER)}, all, {ALL_COMBINATIONS}")
        combos.append(tuple(s for s in SYSTEM_ORDER if s in chosen))
    return list(dict.fromkeys(combos))


def combination_values(combo):
    """The value names of a combination of systems; a name two systems share (Achievement) counts once."""
    return list(dict.fromkeys(v for name in combo for v in system(name)))


# --- reading ----------------------------------------------------------------------------------

def _subject(record, field, line):
    if field not in record:
        raise BadRecord(f"field '{field}' is missing (--subject-field)", line)
    value = record[field]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRecord(f"field '{field}' must be a string or a number", line)
    return str(value)


def _score(entry, value, line):
    """A profile's score for one value: {"score": x, …} as gpv-aggregate writes it, or a bare number."""
    if isinstance(entry, dict):
        entry = entry.get("score")
    if entry is None:
        return None
    if isinstance(entry, bool) or not isinstance(entry, (int, float)) or not math.isfinite(entry):
        raise BadRecord(f"values.{value}: the score must be a finite number or null", line)
    return float(entry)


def read_profiles(path, subject_field="subject"):
    """{subject: {value: score or None}} from aggregated JSONL (one record per subject), in input order."""
    stream = open_input(path)
    profiles, first_line = {}, {}
    try:
        for line, raw in iter_lines(stream):
            if isinstance(raw, bytes) and not raw.strip():
                continue  # blank lines are harmless in a file of profiles
            record = parse_line(raw, line)
            if ERROR_FIELD in record:
                raise BadRecord("an error record from an earlier stage; fix or drop it first", line)
            subject = _subject(record, subject_field, line)
            if subject in profiles:
                raise BadRecord(f"subject '{subject}' again (first on line {first_line[subject]}); "
                                f"probing needs one aggregated record per subject", line)
            values = record.get("values")
            if not isinstance(values, dict):
                raise BadRecord("field 'values' must be an object {value: {\"score\": …}} as gpv-aggregate "
                                "writes it", line)
            profiles[subject] = {v: _score(e, v, line) for v, e in values.items()}
            first_line[subject] = line
    finally:
        if path != "-":
            stream.close()
    return profiles


def _label(value, where):
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise GpvError(f"{where}: the label must be a number, got {value}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise GpvError(f"{where}: the label must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise GpvError(f"{where}: the label must be finite, got {value!r}")
    return x


def read_labels(path, subject_field="subject", label_field="score"):
    """{subject: score} from CSV/TSV (a header row) or JSONL; the format from the suffix, else the first byte.

    A row whose label is empty or null is a subject without a label.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise GpvError(f"--labels: cannot read {path}: {e.strerror}") from None
    suffix = p.suffix.lower()
    is_jsonl = suffix in (".jsonl", ".json", ".ndjson") or (
        suffix not in (".csv", ".tsv") and data.lstrip()[:1] == b"{")
    labels, seen = {}, {}

    def add(subject, value, where):
        if subject in seen:
            raise GpvError(f"{where}: subject '{subject}' again (first at {seen[subject]})")
        seen[subject] = where
        labels[subject] = _label(value, where)

    if is_jsonl:
        for line, raw in iter_lines(io.BufferedReader(io.BytesIO(data))):
            if isinstance(raw, bytes) and not raw.strip():
                continue
            where = f"{path} line {line}"
            try:
                record = parse_line(raw, line)
                subject = _subject(record, subject_field, line)
            except BadRecord as e:
                raise GpvError(f"{path}: {e}") from None
            if label_field not in record:
                raise GpvError(f"{where}: field '{label_field}' is missing (--label-field)")
            add(subject, record[label_field], where)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise GpvError(f"{path}: invalid UTF-8 at byte {e.start + 1}") from None
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        header = reader.fieldnames or []
        for field, option in ((subject_field, "--label-subject-field"), (label_field, "--label-field")):
            if field not in header:
                raise GpvError(f"{path}: no column '{field}' ({option}); its columns: {', '.join(header)}")
        for row in reader:
            add(row[subject_field].strip(), row[label_field], f"{path} line {reader.line_num}")
    return labels


def _names(items, limit=8):
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def join(profiles, labels):
    """The subjects that have both, in profile order; an error naming every subject that lacks one."""
    if not profiles:
        raise GpvError("no value profile in the input (expected aggregated JSONL, one record per subject)")
    no_label = [s for s in profiles if labels.get(s) is None]
    no_profile = [s for s in labels if s not in profiles]
    problems = []
    if no_label:
        problems.append(f"{len(no_label)} subject(s) without a label: {_names(no_label)}")
    if no_profile:
        problems.append(f"{len(no_profile)} labelled subject(s) without a value profile: {_names(no_profile)}")
    if problems:
        raise GpvError("; ".join(problems))
    return list(profiles)


# --- the protocol's pieces --------------------------------------------------------------------

def _need_numpy():
    if np is None:
        raise MissingDependency(COMMAND, "numpy", "validate")


def feature_matrix(profiles, subjects, values):
    """subjects × values, NaN where a value is unmeasured."""
    _need_numpy()
    return np.array([[np.nan if profiles[s].get(v) is None else profiles[s][v] for v in values]
                     for s in subjects], dtype=float).reshape(len(subjects), len(values))


def normalise(x, how="minmax"):
    """Each column to [-1, 1], then missing (NaN) as 0.

    minmax: the column's smallest measured score becomes -1 and its largest 1, over all the rows given
    (a column with a single distinct score becomes 0). none: the scores are used as they are (GPV's own
    scale is already [-1, 1]).
    """
    _need_numpy()
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


def make_pairs(members, y):
    """Every unordered pair (a, b), a before b in MEMBERS, whose labels differ, and its target.

    target 0: a scores higher; 1: b does (the index of the higher one in the logits [f(a), f(b)]).
    Tied pairs say nothing about relative scores and are left out.
    """
    _need_numpy()
    out = [(a, b, 0 if y[a] > y[b] else 1) for a, b in itertools.combinations(members, 2) if y[a] != y[b]]
    return np.array(out, dtype=np.int64).reshape(-1, 3)


def score_bins(y, n_bins):
    """Bin of each subject: equal-count bins by rank of score (ties in input order; earlier bins take the remainder)."""
    _need_numpy()
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
    _need_numpy()
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


# --- training ---------------------------------------------------------------------------------

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
    _need_numpy()
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


# --- the whole protocol -----------------------------------------------------------------------

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
    _need_numpy()
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
                 f"{_names(unmeasured)}")
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
