"""gpv-validate's checks as library calls: the input in, a Result out, whose report is the JSON report.

    from gpvtools.method.validation.checks import stability
    from gpvtools.streaming.jsonl import Records

    report = stability(Records("scored.jsonl"), by="author").report

RECORDS is what a check reads: a Records, or any (line, record) pairs (enumerate(dicts, 1)); errors name
the line. WARN, where given, is called with each note for people (records left out, a fit not made). VALUES
is a list of value names or a comma list as --values takes it (None: the first record's, without derived
higher-order values). Each check imports its own module when it runs, so that a missing numpy or scipy is
named, before any input is read, as that check needs it.
"""

import math
import sys
from dataclasses import dataclass

from ...streaming.errors import BadRecord, GpvError, UsageError
from ...streaming.jsonl import Records
from ...streaming.messages import plural
from ..groups import group_identity, key_string, sort_key
from .probe_data import ALL_COMBINATIONS, parse_systems, read_labels, subject_scores
from .records import key_of, parse_values, score_row, value_names


@dataclass(frozen=True)
class Result:
    """What a check found. REPORT is its JSON report as a dict, with numpy numbers and NaN where a statistic
    is undefined (as_json(REPORT) is plain JSON). NAMES (stability, construct, predictive) are the values
    checked in the order asked: a value asked for twice is here twice, and once among the report's keys.
    construct's SIMILARITY (values × values) and COORDINATES (values × 2, the MDS map) are numpy arrays in
    that order."""

    report: dict
    names: list = None
    similarity: object = None
    coordinates: object = None


def as_json(value):
    """A report as plain JSON: numpy numbers to Python ones, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return as_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _value_names(values):
    return parse_values(values) if isinstance(values, str) else values


def _names_or_first(wanted, record, line):
    return wanted if wanted is not None else value_names(record, line, derived=False)


def _path(records):
    """The file RECORDS are read from; None for pairs given otherwise."""
    return records.path if isinstance(records, Records) else None


def _upstream(records):
    """How many error records from upstream the reading left out."""
    return records.upstream_errors if isinstance(records, Records) else 0


def _no_records(records):
    path, upstream = _path(records), _upstream(records)
    where = "the input" if path is None else "standard input" if path == "-" else path
    extra = f" (only {plural(upstream, 'error record')})" if upstream else ""
    return GpvError(f"{where} holds no record to check{extra}")


def _note_upstream(records, warn, prefix=""):
    upstream = _upstream(records)
    if upstream and warn:
        warn(f"{prefix}left out {plural(upstream, 'error record')} from upstream")


def _matrix(rows, columns, matrix):
    return {a: {b: matrix[i][j] for j, b in enumerate(columns)} for i, a in enumerate(rows)}


def stability(records, *, by="doc_id", values=None, min_evidence=1, warn=None):
    """Stability (App. C.2, Table 6) of scored perceptions: their signs against their individual's mean.

    BY names each perception's individual (doc_id falls back to id); an individual with fewer than
    MIN_EVIDENCE measured perceptions of a value is left out of that value.
    """
    from . import stability as st  # first: it names the extra when numpy is missing
    # isort: split
    import numpy as np

    wanted, names, rows, groups, index = _value_names(values), None, [], [], {}
    for line, record in records:
        if "group_by" in record:  # gpv-parse's perception records have an n_perceptions of their own
            raise BadRecord("an aggregate record (it has 'group_by'); stability needs the scored "
                            "perceptions", line)
        names = names or _names_or_first(wanted, record, line)
        key = key_of(record, by, line)
        groups.append(index.setdefault(group_identity([key]), len(index)))
        rows.append(score_row(record, names, line))
    if not rows:
        raise _no_records(records)
    _note_upstream(records, warn)
    counts = st.stability(np.array(groups), np.array(rows), min_evidence)
    per_value = {}
    for j, name in enumerate(names):
        c = {k: int(v[j]) for k, v in counts.items()}
        per_value[name] = {**c, **st.ratios(c["ss"], c["oo"], c["so"], c["os"])}
    total = {k: int(v.sum()) for k, v in counts.items()}
    total.update(st.ratios(total["ss"], total["oo"], total["so"], total["os"]))
    return Result({"check": "stability", "by": by, "n_perceptions": len(rows), "n_individuals": len(index),
                   "min_evidence": min_evidence, "values": per_value, "sum": total}, names)


def construct(records, *, values=None, seed=0, permutations=9999, warn=None):
    """Construct validity (§4.1, App. C.3) of profiles: cosine similarity, 2-D MDS (SEED) and, for the 10
    Schwartz values, the circumplex fit with PERMUTATIONS permutations (0: no p-values)."""
    from . import construct as cv  # first: it names the extra when numpy is missing
    # isort: split
    import numpy as np

    wanted, names, rows = _value_names(values), None, []
    for line, record in records:
        names = names or _names_or_first(wanted, record, line)
        rows.append(score_row(record, names, line))
    if not rows:
        raise _no_records(records)
    if len(names) < 3:
        raise UsageError(f"construct needs at least 3 values; got {', '.join(names)}")
    _note_upstream(records, warn)
    sim, n = cv.cosine_similarity(np.array(rows))
    undefined = [(names[i], names[j]) for i in range(len(names)) for j in range(i, len(names))
                 if np.isnan(sim[i, j])]
    if undefined:
        a, b = undefined[0]
        what = f"'{a}' is never measured (or always 0)" if a == b else \
            f"'{a}' and '{b}' are never measured together (or are 0 wherever they are)"
        raise GpvError(f"{what}: their similarity is undefined; leave values out with --values")
    distance = np.clip(1 - sim, 0, None)
    np.fill_diagonal(distance, 0)
    coords, stress = cv.mds(distance, seed)
    circumplex = None
    if set(names) == set(cv.SCHWARTZ_CIRCLE):
        circumplex = cv.circumplex_fit(names, sim, coords, permutations, seed)
    elif warn:
        warn("no circumplex fit: it needs exactly the 10 Schwartz basic values")
    report = {"check": "construct", "n_individuals": len(rows), "values": names,
              "similarity": _matrix(names, names, sim), "n": _matrix(names, names, n),
              "mds": {"coordinates": {v: coords[i] for i, v in enumerate(names)}, "stress1": stress, "seed": seed},
              "circumplex": circumplex}
    return Result(report, names, sim, coords)


def _measure(records, on, values):
    """{identity: score row} and the value names of one measure, joined on ON; errors name its file."""
    wanted, names, rows, first = _value_names(values), None, {}, {}
    try:
        for line, record in records:
            names = names or _names_or_first(wanted, record, line)
            key = key_of(record, on, line, option="--on")
            ident = group_identity([key])
            if ident in rows:
                raise BadRecord(f"'{key_string([key])}' again in field '{on}' (first on line {first[ident]}); "
                                f"join on a field unique to each record", line)
            first[ident] = line
            rows[ident] = score_row(record, names, line)
    except BadRecord as e:
        raise GpvError(f"{_path(records) or 'the input'}: {e}") from None
    if not rows:
        raise _no_records(records)
    return rows, names


def concurrent(a, b, *, on="id", values_a=None, values_b=None, spearman=False, warn=None):
    """Concurrent validity (Tables 2, 7): every value of measure A correlated with every value of measure B
    (Pearson, and Spearman with SPEARMAN) over the individuals in both, joined on the field ON."""
    from . import concurrent as cc  # first: it names the extra when numpy is missing
    # isort: split
    import numpy as np

    rows_a, names_a = _measure(a, on, values_a)
    rows_b, names_b = _measure(b, on, values_b)
    path_a, path_b = _path(a), _path(b)
    for records in (a, b):
        _note_upstream(records, warn, f"{_path(records)}: ")
    common = [k for k in rows_a if k in rows_b]
    if not common:
        raise GpvError(f"no individual is in both inputs (joined on '{on}')")
    only_a, only_b = len(rows_a) - len(common), len(rows_b) - len(common)
    if (only_a or only_b) and warn:
        warn(f"{len(common)} individuals in both; {only_a} only in {path_a}, {only_b} only in {path_b}")
    x = np.array([rows_a[k] for k in common])
    y = np.array([rows_b[k] for k in common])
    report = {"check": "concurrent", "on": on, "a": path_a, "b": path_b, "n_matched": len(common),
              "only_in_a": only_a, "only_in_b": only_b, "rows": names_a, "columns": names_b}
    for method in ("pearson", "spearman") if spearman else ("pearson",):
        r, p, n = cc.correlate(x, y, method)
        report[method] = {"r": _matrix(names_a, names_b, r), "p": _matrix(names_a, names_b, p)}
    report["n"] = _matrix(names_a, names_b, n)
    return Result(report)


def predictive(records, field, *, groups=None, test="welch", values=None, warn=None):
    """Predictive validity (§4.1, Table 3): two groups of individuals compared per value, by Welch's t or
    (TEST "mannwhitney") the Mann-Whitney U. FIELD splits the individuals; GROUPS, "A,B", picks two of its
    levels in that order (None: the two there are, sorted)."""
    from . import predictive as pv  # first: it names the extra when numpy is missing
    # isort: split
    import numpy as np

    wanted, names, rows, levels, seen = _value_names(values), None, [], [], {}
    for line, record in records:
        names = names or _names_or_first(wanted, record, line)
        level = key_of(record, field, line, option="--field")
        ident = group_identity([level])
        seen.setdefault(ident, [level, 0])[1] += 1
        levels.append(ident)
        rows.append(score_row(record, names, line))
    if not rows:
        raise _no_records(records)
    _note_upstream(records, warn)
    found = sorted(seen.values(), key=lambda lv: sort_key([lv[0]]))
    listing = ", ".join(f"{key_string([lv])} ({n})" for lv, n in found)
    if groups:
        asked = [g.strip() for g in groups.split(",")]
        if len(asked) != 2 or not all(asked) or asked[0] == asked[1]:
            raise UsageError(f"--groups takes two different levels A,B, not '{groups}'")
        by_text = {key_string([lv]): group_identity([lv]) for lv, _ in found}
        missing = [g for g in asked if g not in by_text]
        if missing:
            raise GpvError(f"no record has {field} '{missing[0]}'; {field} has: {listing}")
        chosen = [by_text[g] for g in asked]
    else:
        real = [lv for lv in found if lv[0] is not None]
        if len(real) != 2:
            raise GpvError(f"field '{field}' has {plural(len(real), 'level')}"
                           + (f": {listing}" if found else "") + "; predictive compares two: pick them with "
                           "--groups A,B")
        chosen = [group_identity([lv[0]]) for lv in real]
    labels = [key_string([seen[c][0]]) for c in chosen]
    x = np.array(rows)
    idx = [np.array([lv == c for lv in levels]) for c in chosen]
    left_out = {key_string([lv]): n for lv, n in found if group_identity([lv]) not in chosen}
    if left_out and warn:
        warn("left out: " + ", ".join(f"{k} ({n})" for k, n in left_out.items()))
    per_value = {name: pv.compare(x[idx[0], j], x[idx[1], j], test) for j, name in enumerate(names)}
    return Result({"check": "predictive", "field": field, "groups": labels, "test": test,
                   "n_individuals": [int(i.sum()) for i in idx], "left_out": left_out, "values": per_value}, names)


def accuracy(records, *, value_field="value", task_field="task", label_field="label", warn=None):
    """Accuracy (§3.2, Table 1) of the relevance and valence decisions on labelled items, scored by gpv-score
    on their own value (--values-field VALUE_FIELD --valence all)."""
    from . import accuracy as acc

    pairs = acc.labelled_decisions(records, value_field, task_field, label_field)
    if not any(g for g, _ in pairs.values()):
        raise _no_records(records)
    _note_upstream(records, warn)
    return Result({"check": "accuracy",
                   "relevance": acc.summary(*pairs["relevance"], acc.RELEVANCE_LABELS),
                   "valence": acc.summary(*pairs["valence"], acc.VALENCE_LABELS)})


def probe(profiles, labels, *, label_field="score", subject_field="subject", label_subject_field=None,
          systems=(ALL_COMBINATIONS,), splits=30, split=None, bins=4, epochs=1000, lr=1e-3, seed=0,
          normalisation="minmax", warn=None):
    """Value representation utility (§5.2): how well the value profiles in the file PROFILES (aggregated
    JSONL, one record per subject; "-" standard input) predict the scores in the file LABELS (CSV, TSV or
    JSONL), by linear probing (probe.run_probe) for each combination of value SYSTEMS (specs as --systems
    takes them)."""
    combos = parse_systems([systems] if isinstance(systems, str) else systems)
    from .probe import run_probe  # needs numpy: said before any input is read

    if profiles == "-" and sys.stdin.isatty() and warn:
        warn("reading aggregated JSONL from standard input (Ctrl-D ends it)")
    records = Records(profiles)
    scores = subject_scores(records, subject_field)
    _note_upstream(records, warn)
    report = run_probe(scores, read_labels(labels, label_subject_field or subject_field, label_field),
                       combos, splits, epochs, lr, seed, bins, split, normalisation, warn=warn)
    return Result({"check": "probe", "labels": str(labels), "label_field": label_field, **report})
