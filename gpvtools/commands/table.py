"""Readable fixed-width tables of records, for people (stderr reports, the demo).

    gpv-chunk examples/posts.jsonl | python -m gpvtools.commands.table id tokens text
    … | gpv-score | python -m gpvtools.commands.table id Power=values.Power.score

A column is a field, a dotted path into nested objects, or NAME=PATH to give it a header.
"""

import sys

from ..streaming.errors import BadRecord
from ..streaming.jsonl import Records


def _cell(value, width):
    text = "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def lookup(row, path):
    """row[a][b][c] for the path 'a.b.c' (a field named with dots wins); None where absent."""
    if path in row:
        return row[path]
    value = row
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def format_table(rows, columns, max_width=60):
    """Rows (dicts) as aligned text; long cells are cut at max_width. A column may be NAME=PATH."""
    heads = [c.split("=", 1)[0] for c in columns]
    paths = [c.split("=", 1)[-1] for c in columns]
    cells = [[_cell(lookup(row, p), max_width) for p in paths] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def main(argv=None):
    columns = (argv if argv is not None else sys.argv[1:]) or ["id"]
    try:
        rows = [record for _, record in Records("-")]
    except BadRecord as e:
        sys.exit(f"table: error: {e}")
    print(format_table(rows, columns))


if __name__ == "__main__":
    main()
