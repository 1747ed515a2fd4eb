"""How well a scorer decides on labelled data: accuracy on the relevance and valence tasks, ROC AUC and F1 of
relevance against human judgments, and decision thresholds fitted per value (cross-fitted where reported)."""

from ..scoring import LABELS, RELEVANCE, VALENCE
from .trainer import _numpy  # numpy, or the error naming the extra that brings it


def evaluate(scorer, examples):
    """Relevance and valence accuracy of a scorer on labelled examples: confusion counts, balanced accuracy
    (the mean of the labels' recalls) and each label's recall."""
    np = _numpy()
    report = {}
    for task in (RELEVANCE, VALENCE):
        rows = [e for e in examples if e.task == task]
        if not rows:
            continue
        probs = scorer.label_probs(task, [(e.text, e.value) for e in rows])
        labels = LABELS[task]
        if task == RELEVANCE:
            predicted = ["yes" if p[0] > 0.5 else "no" for p in probs]
        else:
            predicted = [labels[int(np.argmax(p))] for p in probs]
        confusion = {f"{t}->{p}": 0 for t in labels for p in labels}
        for e, p in zip(rows, predicted):
            confusion[f"{e.label}->{p}"] += 1
        correct = sum(e.label == p for e, p in zip(rows, predicted))
        recall = {}
        for label in labels:
            n = sum(e.label == label for e in rows)
            if n:
                recall[label] = round(confusion[f"{label}->{label}"] / n, 4)
        report[task] = {"n": len(rows), "accuracy": round(correct / len(rows), 4),
                        "balanced_accuracy": round(float(np.mean(list(recall.values()))), 4), "recall": recall,
                        "confusion": {k: v for k, v in confusion.items() if v}}
    return report


def roc_auc(labels, scores):
    """Area under the ROC curve: the chance that a random positive outscores a random negative (ties half)."""
    np = _numpy()
    labels, scores = np.asarray(labels, dtype=bool), np.asarray(scores, dtype=np.float64)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if not pos or not neg:
        return None
    from scipy.stats import rankdata  # as validation.construct ranks; ties take their average rank

    ranks = rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def f1(labels, decided):
    np = _numpy()
    labels, decided = np.asarray(labels, dtype=bool), np.asarray(decided, dtype=bool)
    tp = int((labels & decided).sum())
    denominator = int(labels.sum()) + int(decided.sum())
    return 2 * tp / denominator if denominator else 0.0


def relevance_report(values, gold, p_rel, threshold=0.5):
    """Per value and macro-averaged: ROC AUC of p_rel against the human 0/1 label and F1 of p_rel > threshold.

    GOLD[v] and P_REL[v] are aligned lists over the judged texts; THRESHOLD is one number or {value: number}."""
    np = _numpy()
    per = {}
    for v in values:
        auc = roc_auc(gold[v], p_rel[v])
        t = threshold.get(v, 0.5) if isinstance(threshold, dict) else threshold
        per[v] = {"n": len(gold[v]), "positives": int(sum(gold[v])),
                  "roc_auc": None if auc is None else round(auc, 4),
                  "f1": round(f1(gold[v], [p > t for p in p_rel[v]]), 4)}
    aucs = [r["roc_auc"] for r in per.values() if r["roc_auc"] is not None]
    return {"values": per, "macro_roc_auc": round(float(np.mean(aucs)), 4) if aucs else None,
            "macro_f1": round(float(np.mean([r["f1"] for r in per.values()])), 4)}


def best_threshold(labels, scores):
    """The threshold t (relevant iff score > t) with the highest F1 on LABELS, midway between two scores;
    of equal F1s the one nearest 0.5, which is 0.5 itself where nothing beats the paper's threshold."""
    np = _numpy()
    labels, scores = np.asarray(labels, dtype=bool), np.asarray(scores, dtype=np.float64)
    ranked = np.unique(scores)
    cuts = np.concatenate([[0.0, 0.5], (ranked[:-1] + ranked[1:]) / 2, [1.0]])
    best = (-1.0, 0.0, 0.5)
    for t in cuts:
        score = f1(labels, scores > t)
        key = (round(score, 12), -abs(t - 0.5))
        if key > best[:2]:
            best = (*key, float(t))
    return round(best[2], 4)


def fit_thresholds(values, gold, p_rel, folds=2, seed=0):
    """Per-value decision thresholds that maximise F1 on human judgments, and how well they carry over.

    Returns {"values": {value: t}, "macro_f1_fitted": F1 at these thresholds on the data they were fitted
    on (optimistic), "macro_f1_crossfit": F1 when each of FOLDS parts is decided at thresholds fitted on
    the others (an honest estimate for new text of the same kind), "macro_f1_at_0.5"}."""
    np = _numpy()
    n = len(gold[values[0]]) if values else 0
    order = np.random.default_rng(seed).permutation(n)
    part = np.empty(n, dtype=int)
    part[order] = np.arange(n) % folds
    fitted, crossfit = {}, []
    for v in values:
        y, p = np.asarray(gold[v], dtype=bool), np.asarray(p_rel[v], dtype=np.float64)
        fitted[v] = best_threshold(y, p)
        decided = np.zeros(n, dtype=bool)
        for k in range(folds):
            t = best_threshold(y[part != k], p[part != k])
            decided[part == k] = p[part == k] > t
        crossfit.append(f1(y, decided))
    at = relevance_report(values, gold, p_rel, threshold=fitted)
    half = relevance_report(values, gold, p_rel)
    return {"values": fitted, "macro_f1_fitted": at["macro_f1"],
            "macro_f1_crossfit": round(float(np.mean(crossfit)), 4) if crossfit else None,
            "macro_f1_at_0.5": half["macro_f1"], "folds": folds}


def evaluate_judged(scorer, judged):
    """relevance_report of a scorer on human-judged texts (the Touché dev split), with the per-value
    thresholds fitted on them (fit_thresholds) under "thresholds"."""
    values = list(judged[0].labels) if judged else []
    probs = scorer.label_probs(RELEVANCE, [(j.text, v) for j in judged for v in values])[:, 0]
    p_rel = {v: [float(probs[i * len(values) + k]) for i in range(len(judged))] for k, v in enumerate(values)}
    gold = {v: [j.labels[v] for j in judged] for v in values}
    report = relevance_report(values, gold, p_rel)
    if values:
        report["thresholds"] = fit_thresholds(values, gold, p_rel)
    return report
