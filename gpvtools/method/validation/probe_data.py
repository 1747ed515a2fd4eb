"""The linear probe's inputs: which values are features (systems and their combinations), and reading the
value profiles and the scores to predict, joined by subject. Plain Python; numpy is not needed here.
"""

import csv
import io
import math
from pathlib import Path

from ...streaming.errors import BadRecord, GpvError, UsageError
from ...streaming.jsonl import Records
from ..values import system

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


def subject_scores(records, subject_field="subject"):
    """{subject: {value: score or None}} from RECORDS, (line, record) pairs of aggregated JSONL (one record
    per subject; a Records, which leaves out error records from upstream), in input order."""
    profiles, first_line = {}, {}
    for line, record in records:
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
        try:
            for line, record in Records(path):
                where = f"{path} line {line}"
                subject = _subject(record, subject_field, line)
                if label_field not in record:
                    raise GpvError(f"{where}: field '{label_field}' is missing (--label-field)")
                add(subject, record[label_field], where)
        except BadRecord as e:
            raise GpvError(f"{path}: {e}") from None
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


def name_list(items, limit=8):
    """The first LIMIT names, comma-separated, and how many more there are."""
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
        problems.append(f"{len(no_label)} subject(s) without a label: {name_list(no_label)}")
    if no_profile:
        problems.append(f"{len(no_profile)} labelled subject(s) without a value profile: {name_list(no_profile)}")
    if problems:
        raise GpvError("; ".join(problems))
    return list(profiles)
