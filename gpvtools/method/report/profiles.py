"""Reading the report's input: gpv-aggregate's profiles, each checked, and the JSONL reader the evidence
uses too; errors name the file and the line."""

import orjson

from ...streaming.errors import BadRecord, GpvError
from ...streaming.jsonl import DEFAULT_MAX_LINE_BYTES, Records, json_kind
from ..aggregation import HIGHER_ORDER_MARK, is_number
from ..groups import group_identity, group_value

PROFILE_FIELDS = ("id", "values", "n_perceptions", "scorer", "instrument", "group_by")


def read_jsonl(records):
    """(line, record) of RECORDS (a Records); a bad line becomes the GpvError naming the file."""
    try:
        yield from records
    except BadRecord as e:
        raise in_file(records, e) from None


def in_file(records, e):
    """A BadRecord raised while taking in a record of RECORDS (a Records), as the error naming the file."""
    return GpvError(f"{records.name}: {e}")


class Profile:
    """One group's profile, checked: its id, fields, counts, values and instruments."""

    def __init__(self, record, line):
        self.line = line
        self.id = _profile_id(record, line)
        self.fields = {k: v for k, v in record.items() if k not in PROFILE_FIELDS}
        n = record.get("n_perceptions")
        if "n_perceptions" not in record:
            raise BadRecord("field 'n_perceptions' is missing (gpv-report reads gpv-aggregate's profiles)",
                            line, record)
        if type(n) is not int or n < 0:
            raise BadRecord(f"field 'n_perceptions' must be a count, got {json_kind(n)}", line, record)
        self.n_perceptions = n
        self.scorer = record.get("scorer")
        self.values = _profile_values(record, line)
        self.group_by = _group_by(record, line)
        self.instruments = _instruments(record, line)
        self.by_values = None if self.group_by is None else [_by_value(record, f, self.group_by, line)
                                                             for f in self.group_by]


def _profile_id(record, line):
    if "id" not in record:
        raise BadRecord("field 'id' is missing", line, record)
    value = record["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRecord(f"field 'id' must be a string, got {json_kind(value)}", line, record)
    return str(value)


def _by_value(record, field, by, line):
    if field not in record:
        raise BadRecord(f"field '{field}' is missing (the profile is grouped by {','.join(by)})", line, record)
    return group_value(record, field, line)


def value_entries(record, line, score_required):
    """(name, entry, score) of each value of RECORD's 'values' object, its score checked to be a number or
    null (a missing score is null unless SCORE_REQUIRED)."""
    if "values" not in record:
        raise BadRecord("field 'values' is missing", line, record)
    values = record["values"]
    if not isinstance(values, dict):
        raise BadRecord(f"field 'values' must be an object, got {json_kind(values)}", line, record)
    for name, entry in values.items():
        if not isinstance(entry, dict):
            raise BadRecord(f"values.{name} must be an object, got {json_kind(entry)}", line, record)
        if score_required and "score" not in entry:
            raise BadRecord(f"values.{name} has no 'score'", line, record)
        score = entry.get("score")
        if score is not None and not is_number(score):
            raise BadRecord(f"values.{name}.score must be a number or null, got {json_kind(score)}", line, record)
        yield name, entry, score


def _profile_values(record, line):
    """{name: (score, n, sd, derived)} of a profile, checked."""
    out = {}
    for name, entry, score in value_entries(record, line, score_required=False):
        n, sd = entry.get("n"), entry.get("sd")
        if type(n) is not int or n < 0:
            raise BadRecord(f"values.{name}.n must be a count, got {json_kind(n)}", line, record)
        if sd is not None and (not is_number(sd) or sd < 0):
            raise BadRecord(f"values.{name}.sd must be a non-negative number or null, got {json_kind(sd)}",
                            line, record)
        out[name] = (score, n, sd, HIGHER_ORDER_MARK in entry)
    return out


def _group_by(record, line):
    if "group_by" not in record:
        return None
    by = record["group_by"]
    if not isinstance(by, list) or not by or not all(isinstance(f, str) and f for f in by):
        raise BadRecord("field 'group_by' must be a list of field names", line, record)
    return by


def _instruments(record, line):
    """The profile's instruments as a list of objects (None: not recorded)."""
    inst = record.get("instrument")
    if inst is None:
        return None
    if isinstance(inst, dict):
        return [inst]
    if isinstance(inst, list) and inst and all(isinstance(i, dict) for i in inst):
        return inst
    raise BadRecord(f"field 'instrument' must be an object or a list of objects, got {json_kind(inst)}", line, record)


def read_profiles(path, max_line_bytes=DEFAULT_MAX_LINE_BYTES):
    """(profiles in input order, upstream error records left out); no profile at all is an error."""
    records = Records(path, max_line_bytes)
    profiles, seen = [], {}
    for line, record in read_jsonl(records):
        try:
            profile = Profile(record, line)
            key = profile.id if profile.group_by is None else (tuple(profile.group_by),
                                                               group_identity(profile.by_values))
            if key in seen:
                raise BadRecord(f"group '{profile.id}' repeats line {seen[key]}'s (pool shards with "
                                f"gpv-aggregate --merge)", line, record)
        except BadRecord as e:
            raise in_file(records, e) from None
        seen[key] = line
        profiles.append(profile)
    if not profiles:
        extra = f" (only {records.upstream_errors} error records)" if records.upstream_errors else ""
        raise GpvError(f"{records.name} holds no profile{extra}")
    return profiles, records.upstream_errors


def value_names(profiles):
    """Every value of the profiles, in the order first seen."""
    names = {}
    for p in profiles:
        names.update(dict.fromkeys(p.values))
    return list(names)


def instruments(profiles):
    """[(instrument or None, [group ids])]: the distinct instruments (by their "id"), in the order first
    seen; None gathers the profiles that recorded none."""
    out = {}
    for p in profiles:
        for inst in p.instruments or [None]:
            key = None if inst is None else inst.get("id") if isinstance(inst.get("id"), str) else \
                orjson.dumps(inst, option=orjson.OPT_SORT_KEYS)
            out.setdefault(key, (inst, []))[1].append(p.id)
    return list(out.values())
