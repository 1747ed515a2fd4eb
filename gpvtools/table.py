"""Readable fixed-width tables of records, for people (stderr reports, the demo).

    gpv-chunk examples/posts.jsonl | python -m gpvtools.table id tokens text
"""

import sys

import orjson


def _cell(value, width):
    text = "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(rows, columns, max_width=60):
    """Rows (dicts) as aligned text; long cells are cut at max_width."""
    cells = [[_cell(row.get(c), max_width) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def main(argv=None):
    columns = (argv if argv is not None else sys.argv[1:]) or ["id"]
    rows = [orjson.loads(line) for line in sys.stdin.buffer if line.strip()]
    print(format_table(rows, columns))


if __name__ == "__main__":
    main()
