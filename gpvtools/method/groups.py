"""Group keys: what gpv-aggregate groups by (a record's --by values), how a group is named, sorted and told
apart. Shared by aggregation, the report and the validation checks."""

from ..streaming.errors import BadRecord


def group_value(record, field, line):
    """A by-field's value, checked to be a scalar (grouping by an object or a list has no clear meaning)."""
    value = record[field]
    if value is not None and not isinstance(value, (str, int, float, bool)):
        kind = "an array" if isinstance(value, list) else "an object"
        raise BadRecord(f"field '{field}' must be a string, a number, a boolean or null to group by, got {kind}",
                        line, record)
    return value


def _order(value):
    """Sort order of group values: null, then booleans, then numbers (numerically), then strings."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, (int, float)):
        return (2, value)
    return (3, value)


def sort_key(values):
    return tuple(_order(v) for v in values)


def key_string(values):
    """The group's id: its by-values as text, joined by '|' when there are several."""
    def text(v):
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)

    return "|".join(text(v) for v in values)


def _type_tag(v):
    # 1 and 1.0 are one group (JSON does not tell them apart), "1" is another, True another still.
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, (int, float)):
        return ("n", v)
    return ("s" if isinstance(v, str) else "z", v)


def group_identity(values):
    return tuple(_type_tag(v) for v in values)
