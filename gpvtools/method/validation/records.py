"""Reading scored or aggregated records for the validation checks: value names, score rows, group keys."""

import math

from ...streaming.errors import BadRecord, UsageError
from ...streaming.lists import comma_list
from ..aggregation import HIGHER_ORDER_MARK
from ..groups import group_value


def values_of(record, line):
    values = record.get("values")
    if "values" not in record:
        raise BadRecord("field 'values' is missing", line, record)
    if not isinstance(values, dict):
        raise BadRecord("field 'values' must be an object", line, record)
    return values


def value_names(record, line, derived=True):
    """The record's value names in its order; derived=False leaves out higher-order entries (n_basic)."""
    return [name for name, entry in values_of(record, line).items()
            if derived or not (isinstance(entry, dict) and HIGHER_ORDER_MARK in entry)]


def parse_values(spec):
    """--values: a comma list of value names (None: the input's own)."""
    if spec is None:
        return None
    names = comma_list(spec)
    if not names:
        raise UsageError(f"--values '{spec}' names no value")
    return names


def score_row(record, names, line):
    """The record's scores of NAMES as floats, NaN where unmeasured (null)."""
    values = values_of(record, line)
    row = []
    for name in names:
        if name not in values:
            raise BadRecord(f"values has no '{name}'", line, record)
        entry = values[name]
        if not isinstance(entry, dict) or "score" not in entry:
            raise BadRecord(f"values.{name} must be an object with a 'score'", line, record)
        score = entry["score"]
        if score is None:
            row.append(math.nan)
        elif isinstance(score, bool) or not isinstance(score, (int, float)):
            raise BadRecord(f"values.{name}.score must be a number or null", line, record)
        else:
            row.append(float(score))
    return row


def key_of(record, field, line, option="--by"):
    """A grouping field's value (doc_id falls back to id, as in gpv-aggregate)."""
    if field not in record:
        if field == "doc_id" and "id" in record:
            return group_value(record, "id", line)
        raise BadRecord(f"field '{field}' is missing ({option} {field})", line, record)
    return group_value(record, field, line)
