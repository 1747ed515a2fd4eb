"""Perception-level accuracy (paper §3.2, Table 1): relevance and valence decisions against labels.

A scored item is decided as gpv-score's measurement decides it (§3.2): relevant iff p_rel > 0.5;
its valence is the most likely of support, oppose, either (the first of them on a tie). Accuracy is
the share of items whose decision equals the label; the confusion counts are gold label x decision.
"""

from ...streaming.errors import BadRecord, MissingDependency

try:
    import numpy as np
except ImportError:
    raise MissingDependency("gpv-validate", "numpy", "validate") from None


RELEVANCE_LABELS = ("yes", "no")
VALENCE_LABELS = ("support", "oppose", "either")


def decide_relevance(p_rel):
    """'yes'/'no' per item from p_rel."""
    return np.where(np.asarray(p_rel, float) > 0.5, "yes", "no")


def decide_valence(probs):
    """'support'/'oppose'/'either' per item from (N, 3) probabilities in that order."""
    probs = np.asarray(probs, float).reshape(-1, 3)
    return np.asarray(VALENCE_LABELS)[np.argmax(probs, axis=1)] if len(probs) else np.array([], dtype=str)


def confusion(gold, decided, labels):
    """(L, L) counts: row = gold label, column = decision, in the order of LABELS."""
    index = {label: i for i, label in enumerate(labels)}
    out = np.zeros((len(labels), len(labels)), dtype=int)
    for g, d in zip(gold, decided):
        out[index[g], index[d]] += 1
    return out


def summary(gold, decided, labels):
    """{'accuracy', 'correct', 'n', 'confusion': {gold: {decision: count}}} of one task."""
    matrix = confusion(gold, decided, labels)
    n, correct = int(matrix.sum()), int(np.trace(matrix))
    return {"accuracy": correct / n if n else None, "correct": correct, "n": n,
            "confusion": {g: {d: int(matrix[i, j]) for j, d in enumerate(labels)} for i, g in enumerate(labels)}}


def _number(entry, key, name, line, hint=""):
    value = entry.get(key) if isinstance(entry, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRecord(f"values.{name}.{key} must be a number{hint}", line)
    return float(value)


def labelled_decisions(records, value_field="value", task_field="task", label_field="label"):
    """{task: (gold labels, decisions)} from scored labelled items: (line, record) pairs, each record with
    its value, task (or a label that tells it) and label, and gpv-score's "values" for that value."""
    tasks = {"relevance": RELEVANCE_LABELS, "valence": VALENCE_LABELS}
    gold = {"relevance": [], "valence": []}
    probs = {"relevance": [], "valence": []}
    for line, record in records:
        for field, option in ((value_field, "--value-field"), (label_field, "--label-field")):
            if not isinstance(record.get(field), str):
                raise BadRecord(f"field '{field}' must be a string ({option})" if field in record
                                else f"field '{field}' is missing ({option})", line)
        name, label = record[value_field], record[label_field]
        task = record.get(task_field)
        if task is None:
            task = next((t for t, labels in tasks.items() if label in labels), None)
            if task is None:
                raise BadRecord(f"label '{label}' is neither a relevance ({', '.join(tasks['relevance'])}) nor a "
                                f"valence label ({', '.join(tasks['valence'])})", line)
        elif task not in tasks:
            raise BadRecord(f"field '{task_field}' must be relevance or valence, not {task!r}", line)
        elif label not in tasks[task]:
            raise BadRecord(f"label '{label}' is not a {task} label ({', '.join(tasks[task])})", line)
        values = record.get("values")
        if not isinstance(values, dict):
            raise BadRecord("field 'values' is missing" if values is None else "field 'values' must be an object",
                            line)
        if name not in values:
            raise BadRecord(f"values has no '{name}' (score with --values-field {value_field})", line)
        entry = values[name]
        if task == "relevance":
            probs[task].append(_number(entry, "relevance", name, line))
        else:
            hint = " (score with --valence all to get valence where the value is not relevant)"
            probs[task].append([_number(entry, k, name, line, hint) for k in VALENCE_LABELS])
        gold[task].append(label)
    decided = {"relevance": decide_relevance(probs["relevance"]), "valence": decide_valence(probs["valence"])}
    return {t: (gold[t], list(decided[t])) for t in tasks}
