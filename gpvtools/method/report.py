"""Value profiles as a report: one self-contained HTML page (inline SVG charts) and PNG charts.

Reads gpv-aggregate's profiles and, optionally, the scored perceptions behind them (the evidence).
The evidence is streamed once; per group and value only the top-k perceptions that raised the
group's score and the k that lowered it are kept, in bounded heaps, so memory grows with groups x
values x k, never with the number of perceptions. A perception raised a score when it is above the
group's mean (0 where the group has no score), lowered it when below; those exactly at the mean (a
group of one perception) are kept apart, the k most relevant; ties are broken by the perception's id,
so the report does not depend on the order of the input.

The page is deterministic (the same input gives the same bytes: no timestamps, no random ids), has no
script and loads nothing (charts are inline SVG drawn here), and escapes every piece of text that
came from the input. Nothing here knows about click.
"""

import heapq
import html
import math
import re
import shlex
from pathlib import Path

import orjson

from .. import __version__
from ..streaming.atomic import AtomicFile
from ..streaming.errors import BadRecord, GpvError, MissingDependency
from ..streaming.jsonl import DEFAULT_MAX_LINE_BYTES, iter_lines, open_input, parse_line
from ..streaming.resume import ERROR_FIELD
from .aggregation import HIGHER_ORDER_MARK, Aggregator, group_identity, group_value, is_number, json_kind

COMMAND = "gpv-report"
# Schwartz's ten basic values in their circular order (Schwartz 1992), starting at the top, clockwise.
CIRCLE = ["Self-Direction", "Stimulation", "Hedonism", "Achievement", "Power", "Security", "Conformity",
          "Tradition", "Benevolence", "Universalism"]
Z95 = 1.96
MAX_SERIES = 12  # groups drawn in the comparison and circumplex charts: more would not be legible
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f", "#393b79", "#ad494a"]
NOT_RECORDED = "not recorded (profiles made before gpvtools recorded instruments)"
PROFILE_FIELDS = ("id", "values", "n_perceptions", "scorer", "instrument", "group_by")


def source_name(path):
    return "standard input" if path == "-" else path


def read_jsonl(path, max_line_bytes, counts):
    """(line, record) of PATH; error records from upstream are counted in counts['upstream'] and left out.

    A bad line (here or in what the caller does with the record) becomes one GpvError naming the file."""
    stream = open_input(path)
    try:
        for line, raw in iter_lines(stream, max_line_bytes):
            try:
                record = parse_line(raw, line, max_line_bytes)
                if ERROR_FIELD in record:
                    counts["upstream"] += 1
                    continue
                yield line, record
            except BadRecord as e:
                raise GpvError(f"{source_name(path)}: {e}") from None
    finally:
        if path != "-":
            stream.close()


def in_file(path, e):
    """A BadRecord raised while taking in a record of PATH, as the error naming the file."""
    return GpvError(f"{source_name(path)}: {e}")


# --- profiles -------------------------------------------------------------------------------------------

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


def _value_entries(record, line, score_required):
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
    for name, entry, score in _value_entries(record, line, score_required=False):
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
    counts = {"upstream": 0}
    profiles, seen = [], {}
    for line, record in read_jsonl(path, max_line_bytes, counts):
        try:
            profile = Profile(record, line)
            key = profile.id if profile.group_by is None else (tuple(profile.group_by),
                                                               group_identity(profile.by_values))
            if key in seen:
                raise BadRecord(f"group '{profile.id}' repeats line {seen[key]}'s (pool shards with "
                                f"gpv-aggregate --merge)", line, record)
        except BadRecord as e:
            raise in_file(path, e) from None
        seen[key] = line
        profiles.append(profile)
    if not profiles:
        extra = f" (only {counts['upstream']} error records)" if counts["upstream"] else ""
        raise GpvError(f"{source_name(path)} holds no profile{extra}")
    return profiles, counts["upstream"]


def value_names(profiles):
    """Every value of the profiles, in the order first seen."""
    names = {}
    for p in profiles:
        names.update(dict.fromkeys(p.values))
    return list(names)


def interval(score, n, sd):
    """The 95% interval of a mean (mean ± 1.96·sd/√n), or None below 2 perceptions or without an sd."""
    if score is None or sd is None or n < 2:
        return None
    half = Z95 * sd / math.sqrt(n)
    return score - half, score + half


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


def flatten(mapping, prefix=""):
    """(key, value) pairs of a nested object, nested keys joined by '.' ("model.sha256")."""
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


# --- evidence -------------------------------------------------------------------------------------------

class _Desc:
    """A string that sorts backwards: the heap's root is then the worst kept item, ties by larger id."""

    __slots__ = ("s",)

    def __init__(self, s):
        self.s = s

    def __lt__(self, other):
        return other.s < self.s

    def __gt__(self, other):
        return other.s > self.s

    def __eq__(self, other):
        return self.s == other.s


class Evidence:
    """The perceptions that raised and lowered each group's score on each value: top-k of each, bounded."""

    def __init__(self, profiles, top_k, text_field="perception"):
        self.top_k, self.text_field = top_k, text_field
        self.profiles = profiles
        self.keyers, self.groups = {}, {}
        for index, p in enumerate(profiles):
            if p.group_by is None:
                continue
            by = tuple(p.group_by)
            if by not in self.keyers:
                # gpv-aggregate's own grouping (doc_id falling back to id); a missing field groups under null.
                self.keyers[by] = Aggregator(list(by), missing_group="null")
            self.groups[(by, group_identity(p.by_values))] = index
        # (group index, value, +1 raised | -1 lowered | 0 at the mean) -> heap of (key, Desc(id), seq, item)
        self.heaps = {}
        self.measured = {}   # (group index, value) -> measured perceptions seen
        self.seq = 0
        self.n_read = self.n_matched = self.n_unmatched = self.n_upstream = 0

    def read(self, path, max_line_bytes=DEFAULT_MAX_LINE_BYTES):
        counts = {"upstream": 0}
        for line, record in read_jsonl(path, max_line_bytes, counts):
            try:
                self.add(record, line)
            except BadRecord as e:
                raise in_file(path, e) from None
        self.n_upstream += counts["upstream"]

    def _group_of(self, record, line):
        for by, keyer in self.keyers.items():
            index = self.groups.get((by, group_identity(keyer._by_values(record, line))))
            if index is not None:
                return index
        return None

    def add(self, record, line):
        """Take one scored perception in; checked whole before anything is kept."""
        pid = _perception_id(record, line)
        scores = _scores(record, line)
        text = record.get(self.text_field)
        if not isinstance(text, str):
            what = "is missing" if self.text_field not in record else f"must be a string, got {json_kind(text)}"
            raise BadRecord(f"field '{self.text_field}' {what} (--text-field)", line, record)
        index = self._group_of(record, line)
        self.n_read += 1
        if index is None:
            self.n_unmatched += 1
            return
        self.n_matched += 1
        profile = self.profiles[index]
        item = None
        for name, (score, entry) in scores.items():
            if score is None or name not in profile.values or profile.values[name][3]:
                continue
            self.measured[(index, name)] = self.measured.get((index, name), 0) + 1
            mean = profile.values[name][0]
            reference = 0.0 if mean is None else mean
            if score == reference:  # at the mean (a group of one, or all alike): kept by relevance
                direction, key = 0, _relevance(entry)
            else:
                direction = 1 if score > reference else -1
                key = score * direction
            heap = self.heaps.setdefault((index, name, direction), [])
            if len(heap) == self.top_k and key < heap[0][0]:
                continue  # the common case, decided without building anything
            if item is None:
                item = self._item(record, pid, text)
            self._push(heap, key, pid, entry, score, item)

    def _push(self, heap, key, pid, entry, score, item):
        self.seq += 1
        row = (key, _Desc(pid), self.seq, (item, entry, score))
        if len(heap) < self.top_k:
            heapq.heappush(heap, row)
        elif row[:2] > heap[0][:2]:
            heapq.heapreplace(heap, row)

    @staticmethod
    def _item(record, pid, text):
        chunk = record.get("chunk_id")
        if not isinstance(chunk, (str, int, float)) or isinstance(chunk, bool):
            chunk = pid.rsplit("#", 1)[0] if "#" in pid else None
        doc = record.get("doc_id", record.get("id"))
        return {"id": pid, "text": text, "chunk_id": None if chunk is None else str(chunk),
                "doc_id": None if doc is None else str(doc)}

    def top(self, index, name, direction):
        """The kept perceptions of one direction, best first: [{id, text, chunk_id, doc_id, score, …}]."""
        rows = sorted(self.heaps.get((index, name, direction), []), key=lambda r: (-r[0], r[1].s))
        out = []
        for _, _, _, (item, entry, score) in rows:
            row = dict(item, score=score)
            for field in ("relevance", "support", "oppose"):
                row[field] = entry.get(field)
            out.append(row)
        return out


def _perception_id(record, line):
    if "id" not in record:
        raise BadRecord("field 'id' is missing", line, record)
    value = record["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRecord(f"field 'id' must be a string or a number, got {json_kind(value)}", line, record)
    return str(value)


def _scores(record, line):
    """{name: (score or None, entry)} of a scored perception, checked."""
    out = {}
    for name, entry, score in _value_entries(record, line, score_required=True):
        for field in ("relevance", "support", "oppose"):
            x = entry.get(field)
            if x is not None and not is_number(x):
                raise BadRecord(f"values.{name}.{field} must be a number or null, got {json_kind(x)}", line, record)
        out[name] = (score, entry)
    return out


# --- the report -------------------------------------------------------------------------------------------

class Report:
    """What the page and the charts show: the profiles, their values, the evidence (or None)."""

    def __init__(self, profiles, evidence=None, title=None, argv=(COMMAND,), top_k=3):
        self.profiles, self.evidence, self.top_k = profiles, evidence, top_k
        self.names = value_names(profiles)
        self.title = title or "Value profiles"
        self.command_line = shlex.join(argv)
        self.circumplex = all(n in self.names for n in CIRCLE)
        # The charts that compare groups draw the largest ones (by perceptions; ties in input order).
        order = sorted(range(len(profiles)), key=lambda i: -profiles[i].n_perceptions)
        self.shown = sorted(order[:MAX_SERIES])

    def colour(self, index):
        return PALETTE[self.shown.index(index) % len(PALETTE)] if index in self.shown else "#555555"


def esc(value):
    return html.escape(str(value), quote=True)


def fmt(x, digits=3):
    return "–" if x is None else f"{x:.{digits}f}"


def _coord(x):
    return f"{x:.1f}"


# --- SVG charts -------------------------------------------------------------------------------------------

LABEL_W, PLOT_W, RIGHT_W = 190, 420, 130


def _x(score):
    return LABEL_W + (max(-1.0, min(1.0, score)) + 1) / 2 * PLOT_W


def _axis(top, bottom):
    """Grid lines at -1, -0.5, 0, 0.5, 1 (0 darker) and their labels under the chart."""
    parts = []
    for tick in (-1, -0.5, 0, 0.5, 1):
        x = _coord(_x(tick))
        cls = "zero" if tick == 0 else "grid"
        parts.append(f'<line class="{cls}" x1="{x}" y1="{top}" x2="{x}" y2="{bottom}"/>')
        parts.append(f'<text class="tick" x="{x}" y="{bottom + 14}" text-anchor="middle">{tick:+g}</text>'
                     .replace("+0<", "0<"))
    return parts


def _value_label(name, y, href):
    text = f'<text class="label" x="{LABEL_W - 8}" y="{_coord(y + 4)}" text-anchor="end">{esc(name)}</text>'
    return f'<a href="{esc(href)}">{text}</a>' if href else text


def _dot(score, n, sd, y, colour, radius, tip):
    parts = [f'<g><title>{esc(tip)}</title>']
    ci = interval(score, n, sd)
    if ci is not None:
        lo, hi = _coord(_x(ci[0])), _coord(_x(ci[1]))
        yy = _coord(y)
        parts.append(f'<line x1="{lo}" y1="{yy}" x2="{hi}" y2="{yy}" stroke="{colour}" stroke-width="1.5"/>')
        for x in (lo, hi):
            parts.append(f'<line x1="{x}" y1="{_coord(y - 3)}" x2="{x}" y2="{_coord(y + 3)}" stroke="{colour}"/>')
    parts.append(f'<circle cx="{_coord(_x(score))}" cy="{_coord(y)}" r="{radius}" fill="{colour}"/></g>')
    return "".join(parts)


def _tip(group, name, score, n, sd):
    ci = interval(score, n, sd)
    span = f", 95% [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else ""
    return f"{group}: {name} {fmt(score)}{span}, n={n}"


def profile_svg(report, index, links):
    """One group's profile: a row per value, the mean as a dot with its 95% whisker, n on the right."""
    p = report.profiles[index]
    row, top = 22, 10
    bottom = top + row * len(report.names)
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {LABEL_W + PLOT_W + RIGHT_W} {bottom + 24}" '
             f'width="{LABEL_W + PLOT_W + RIGHT_W}" height="{bottom + 24}" xmlns="http://www.w3.org/2000/svg">',
             f'<title>{esc(f"Value profile of {p.id}")}</title>', *_axis(top, bottom)]
    for vi, name in enumerate(report.names):
        y = top + row * vi + row / 2
        parts.append(_value_label(name, y, f"#ev-{index}-{vi}" if links else None))
        if name not in p.values:
            parts.append(f'<text class="na" x="{_coord(_x(0))}" y="{_coord(y + 4)}" text-anchor="middle">'
                         f'not in this profile</text>')
            continue
        score, n, sd, _ = p.values[name]
        if score is None:
            parts.append(f'<text class="na" x="{_coord(_x(0) + 6)}" y="{_coord(y + 4)}">unmeasured (n={n})</text>')
            continue
        parts.append(_dot(score, n, sd, y, PALETTE[0], 4, _tip(p.id, name, score, n, sd)))
        parts.append(f'<text class="n" x="{LABEL_W + PLOT_W + 8}" y="{_coord(y + 4)}">n={n}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def comparison_svg(report):
    """Every value a row; in it one dot per group (the largest MAX_SERIES groups), each with its 95% whisker."""
    shown = report.shown
    step = 7 if len(shown) <= 6 else 5
    row = max(20, 8 + step * len(shown))
    top = 10
    bottom = top + row * len(report.names)
    radius = 3.5 if len(shown) <= 6 else 2.5
    width = LABEL_W + PLOT_W + RIGHT_W
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {bottom + 24}" width="{width}" '
             f'height="{bottom + 24}" xmlns="http://www.w3.org/2000/svg">',
             "<title>Values of the groups compared</title>", *_axis(top, bottom)]
    for vi, name in enumerate(report.names):
        mid = top + row * vi + row / 2
        parts.append(_value_label(name, mid, None))
        if vi:
            parts.append(f'<line class="sep" x1="0" y1="{top + row * vi}" x2="{width}" y2="{top + row * vi}"/>')
        for k, gi in enumerate(shown):
            p = report.profiles[gi]
            score, n, sd, _ = p.values.get(name, (None, 0, None, False))
            if score is None:
                continue
            y = mid + (k - (len(shown) - 1) / 2) * step
            parts.append(_dot(score, n, sd, y, report.colour(gi), radius, _tip(p.id, name, score, n, sd)))
    parts.append("</svg>")
    return "\n".join(parts)


def _polar(cx, cy, r, i):
    angle = math.radians(-90 + 360 * i / len(CIRCLE))
    return cx + r * math.cos(angle), cy + r * math.sin(angle)


def _runs(measured):
    """Runs of consecutive measured positions around the circle, as lists of indexes (None: all measured)."""
    n = len(measured)
    if all(measured):
        return None
    start = next(i for i in range(n) if not measured[i])  # begin after a gap, so no run wraps unseen
    runs, current = [], []
    for k in range(1, n + 1):
        i = (start + k) % n
        if measured[i]:
            current.append(i)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def circumplex_svg(report):
    """Schwartz's circle: a polygon per group, radius (score + 1)/2·R, the 0 ring drawn; unmeasured
    values leave a gap."""
    size, cx, cy, big_r = 560, 280, 280, 190
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {size} {size}" width="{size}" height="{size}" '
             f'xmlns="http://www.w3.org/2000/svg">', "<title>Schwartz circumplex of the groups</title>"]
    for score in (-0.5, 0, 0.5, 1):
        r = (score + 1) / 2 * big_r
        cls = "zero" if score == 0 else "grid"
        parts.append(f'<circle class="{cls}" cx="{cx}" cy="{cy}" r="{_coord(r)}" fill="none"/>')
        parts.append(f'<text class="tick" x="{cx + 3}" y="{_coord(cy - r - 2)}">{score:+g}</text>'
                     .replace(">+0<", ">0<"))
    parts.append(f'<text class="tick" x="{cx + 3}" y="{cy - 2}">−1</text>')
    for i, name in enumerate(CIRCLE):
        x, y = _polar(cx, cy, big_r, i)
        lx, ly = _polar(cx, cy, big_r + 14, i)
        anchor = "middle" if abs(lx - cx) < 20 else "start" if lx > cx else "end"
        parts.append(f'<line class="grid" x1="{cx}" y1="{cy}" x2="{_coord(x)}" y2="{_coord(y)}"/>')
        parts.append(f'<text class="label" x="{_coord(lx)}" y="{_coord(ly + 4)}" text-anchor="{anchor}">'
                     f'{esc(name)}</text>')
    for gi in report.shown:
        parts.append(_circumplex_series(report, gi, cx, cy, big_r))
    parts.append("</svg>")
    return "\n".join(parts)


def _circumplex_series(report, gi, cx, cy, big_r):
    p, colour = report.profiles[gi], report.colour(gi)
    scores = [p.values.get(name, (None,))[0] for name in CIRCLE]
    points = [None if s is None else _polar(cx, cy, (max(-1.0, min(1.0, s)) + 1) / 2 * big_r, i)
              for i, s in enumerate(scores)]
    parts = [f"<g><title>{esc(p.id)}</title>"]

    def coords(indexes):
        return " ".join(f"{_coord(points[i][0])},{_coord(points[i][1])}" for i in indexes)

    runs = _runs([s is not None for s in scores])
    if runs is None:
        fill = f'fill="{colour}" fill-opacity="0.06"' if len(report.shown) <= 3 else 'fill="none"'
        parts.append(f'<polygon points="{coords(range(len(CIRCLE)))}" {fill} stroke="{colour}" '
                     f'stroke-width="1.5"/>')
    else:
        parts += [f'<polyline points="{coords(run)}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
                  for run in runs if len(run) > 1]
    parts += [f'<circle cx="{_coord(pt[0])}" cy="{_coord(pt[1])}" r="2.5" fill="{colour}"/>'
              for pt in points if pt is not None]
    parts.append("</g>")
    return "".join(parts)


# --- the page -------------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#222;max-width:60em;
margin:1.5em auto;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.15em;margin-top:1.8em}
code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}pre{background:#f6f6f6;padding:.5em;
white-space:pre-wrap;word-break:break-all}
table{border-collapse:collapse;margin:.4em 0 1em}th,td{border-bottom:1px solid #e3e3e3;padding:.2em .6em;
text-align:left;vertical-align:top}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
dl.inst{display:grid;grid-template-columns:max-content 1fr;gap:.1em 1em}dl.inst dt{font-weight:600}
dl.inst dd{margin:0;word-break:break-all}.card{border:1px solid #ddd;border-radius:4px;padding:.4em 1em;
margin:.6em 0}.muted,.note{color:#666}.legend span{display:inline-block;margin-right:1em}
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em;border-radius:50%}
svg.chart{max-width:100%;height:auto}svg text{font:12px system-ui,Helvetica,Arial,sans-serif;fill:#222}
svg .tick{font-size:10px;fill:#666}svg .na{fill:#999;font-style:italic}svg .n{fill:#666}
svg .grid{stroke:#e3e3e3}svg .zero{stroke:#888;stroke-width:1.2}svg .sep{stroke:#f2f2f2}
svg a text{fill:#0645ad}caption{text-align:left;font-weight:600;padding:.2em 0}
section.group{page-break-inside:avoid}td.text{max-width:30em}
@media print{body{max-width:none;margin:0}a{color:inherit}h2{page-break-after:avoid}}
""".strip()


def render_html(report):
    """The whole page, as text."""
    sections = [_header(report), _instrument_section(report), _comparison_section(report)]
    if report.circumplex:
        sections.append(_circumplex_section(report))
    sections.append(_groups_section(report))
    if report.evidence is not None:
        sections.append(_evidence_section(report))
    sections.append(_footer())
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(report.title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n"
            + "\n".join(sections) + "\n</body>\n</html>\n")


def _header(report):
    ev = report.evidence
    counts = [f"{len(report.profiles)} group{'s' if len(report.profiles) != 1 else ''}",
              f"{len(report.names)} value{'s' if len(report.names) != 1 else ''}"]
    if ev is not None:
        counts.append(f"{ev.n_read} perception{'s' if ev.n_read != 1 else ''} read as evidence "
                      f"({ev.n_matched} in these groups)")
    toc = [("instruments", "Instruments"), ("comparison", "Comparison")]
    if report.circumplex:
        toc.append(("circumplex", "Circumplex"))
    toc.append(("groups", "Groups"))
    if ev is not None:
        toc.append(("evidence", "Evidence"))
    nav = " · ".join(f'<a href="#{i}">{t}</a>' for i, t in toc)
    return (f"<header>\n<h1>{esc(report.title)}</h1>\n"
            f"<p class=\"muted\">gpvtools {esc(__version__)} · {esc(', '.join(counts))}</p>\n"
            f"<pre><code>{esc(report.command_line)}</code></pre>\n<nav>{nav}</nav>\n</header>")


def _field_value(value):
    if isinstance(value, str):
        return esc(value)
    return f"<code>{esc(orjson.dumps(value).decode())}</code>"


def _instrument_section(report):
    parts = ['<section id="instruments">', "<h2>Instruments</h2>"]
    for inst, groups in instruments(report.profiles):
        used = ", ".join(groups[:10]) + (f" and {len(groups) - 10} more" if len(groups) > 10 else "")
        parts.append('<div class="card">')
        if inst is None:
            parts.append(f"<p><strong>Instrument {NOT_RECORDED}</strong></p>")
        else:
            parts.append(f"<h3>{esc(inst.get('id', 'instrument'))}</h3>")
            if isinstance(inst.get("command"), str):
                parts.append(f"<p>Scored with:</p><pre><code>{esc(inst['command'])}</code></pre>")
            rows = "".join(f"<dt>{esc(k)}</dt><dd>{_field_value(v)}</dd>" for k, v in flatten(inst)
                           if k != "command")
            parts.append(f'<dl class="inst">{rows}</dl>')
        parts.append(f'<p class="muted">Used by {len(groups)} group{"s" if len(groups) != 1 else ""}: '
                     f"{esc(used)}</p></div>")
    parts.append("</section>")
    return "\n".join(parts)


def _legend(report):
    items = "".join(f'<span><i class="swatch" style="background:{report.colour(gi)}"></i>'
                    f'<a href="#g-{gi}">{esc(report.profiles[gi].id)}</a></span>' for gi in report.shown)
    return f'<p class="legend">{items}</p>'


def _capped_note(report):
    n = len(report.profiles)
    if n <= MAX_SERIES:
        return ""
    return (f'<p class="note">Showing the {MAX_SERIES} groups with the most perceptions of {n}; every group '
            f"has its own profile below.</p>")


def _comparison_section(report):
    return "\n".join([
        '<section id="comparison">', "<h2>Comparison</h2>",
        '<p class="muted">Each dot is a group\'s mean score on a value (−1 opposes, +1 supports); the '
        "whisker its 95% interval, mean ± 1.96·sd/√n (none below 2 measured perceptions).</p>",
        _capped_note(report), _legend(report), comparison_svg(report), "</section>"])


def _circumplex_section(report):
    return "\n".join([
        '<section id="circumplex">', "<h2>Circumplex</h2>",
        '<p class="muted">Schwartz\'s ten basic values in their circular order; the distance from the centre '
        "maps a score of −1…+1 to the radius, the darker ring is 0. An unmeasured value leaves a gap.</p>",
        _capped_note(report), _legend(report), circumplex_svg(report), "</section>"])


def _groups_section(report):
    parts = ['<section id="groups">', "<h2>Groups</h2>"]
    for gi in range(len(report.profiles)):
        parts.append(_group(report, gi))
    parts.append("</section>")
    return "\n".join(parts)


def _group(report, gi):
    p = report.profiles[gi]
    links = report.evidence is not None
    fields = "".join(f"<dt>{esc(k)}</dt><dd>{_field_value(v)}</dd>" for k, v in p.fields.items())
    fields += f"<dt>n_perceptions</dt><dd>{p.n_perceptions}</dd>"
    if p.scorer is not None:
        fields += f"<dt>scorer</dt><dd>{_field_value(p.scorer)}</dd>"
    rows = []
    for vi, name in enumerate(report.names):
        label = f'<a href="#ev-{gi}-{vi}">{esc(name)}</a>' if links else esc(name)
        if name not in p.values:
            rows.append(f'<tr><td>{label}</td><td class="muted" colspan="4">not in this profile</td></tr>')
            continue
        score, n, sd, derived = p.values[name]
        ci = interval(score, n, sd)
        span = f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "–"
        kind = ' <span class="muted">(higher-order)</span>' if derived else ""
        rows.append(f'<tr><td>{label}{kind}</td><td class="num">{fmt(score)}</td><td class="num">{span}</td>'
                    f'<td class="num">{n}</td><td class="num">{fmt(sd)}</td></tr>')
    return "\n".join([
        f'<section class="group" id="g-{gi}">', f"<h3>{esc(p.id)}</h3>", f'<dl class="inst">{fields}</dl>',
        profile_svg(report, gi, links),
        '<table><thead><tr><th>value</th><th class="num">score</th><th class="num">95% interval</th>'
        '<th class="num">n</th><th class="num">sd</th></tr></thead><tbody>', *rows, "</tbody></table>",
        "</section>"])


def _relevance(entry):
    r = entry.get("relevance")
    return float(r) if isinstance(r, (int, float)) and not isinstance(r, bool) else 0.0


def _evidence_section(report):
    ev = report.evidence
    parts = ['<section id="evidence">', "<h2>Evidence</h2>",
             f'<p class="muted">Per group and value, the {report.top_k} measured perceptions with the highest '
             "scores above the group's mean (they raised it) and the lowest below it (they lowered it); ties "
             "by perception id. Perceptions scored exactly at the mean (a group of one perception, say) are "
             "shown as such, the most relevant first.</p>"]
    for gi, p in enumerate(report.profiles):
        parts.append(f'<section class="group" id="ev-{gi}">')
        parts.append(f'<h3>Evidence for <a href="#g-{gi}">{esc(p.id)}</a></h3>')
        for vi, name in enumerate(report.names):
            parts.append(_evidence_value(ev, p, gi, vi, name))
        parts.append("</section>")
    parts.append("</section>")
    return "\n".join(parts)


def _evidence_value(ev, p, gi, vi, name):
    head = f'<div id="ev-{gi}-{vi}"><h4>{esc(name)}</h4>'
    if name not in p.values:
        return f'{head}<p class="muted">Not in this profile.</p></div>'
    if p.values[name][3]:
        return (f'{head}<p class="muted">A higher-order value: the mean of its basic values\' group scores, '
                "with no perceptions of its own.</p></div>")
    measured = ev.measured.get((gi, name), 0)
    if not measured:
        return f'{head}<p class="muted">No measured perception of this value in the evidence.</p></div>'
    parts = [head, f'<p class="muted">{measured} measured perception{"s" if measured != 1 else ""} '
                   "in the evidence.</p>"]
    for direction, caption in ((1, "raised the score"), (-1, "lowered the score"), (0, "at the group's mean")):
        rows = ev.top(gi, name, direction)
        if not rows:
            if direction:
                parts.append(f'<p class="muted">No perception {caption}.</p>')
            continue
        parts.append(f"<table><caption>{caption}</caption><thead><tr><th>perception</th>"
                     '<th class="num">relevance</th><th class="num">support</th><th class="num">oppose</th>'
                     '<th class="num">score</th><th>perception id</th><th>chunk id</th><th>document id</th>'
                     "</tr></thead><tbody>")
        for r in rows:
            parts.append(f'<tr data-perception-id="{esc(r["id"])}"><td class="text">{esc(r["text"])}</td>'
                         + "".join(f'<td class="num">{_number(r[f])}</td>'
                                   for f in ("relevance", "support", "oppose"))
                         + f'<td class="num">{fmt(r["score"])}</td><td><code>{esc(r["id"])}</code></td>'
                         f'<td><code>{esc(r["chunk_id"] or "–")}</code></td>'
                         f'<td><code>{esc(r["doc_id"] or "–")}</code></td></tr>')
        parts.append("</tbody></table>")
    parts.append("</div>")
    return "\n".join(parts)


def _number(x):
    return fmt(x, 2) if isinstance(x, (int, float)) and not isinstance(x, bool) else "–"


def _footer():
    return ("<footer>\n<h2>Method</h2>\n<p>A perception's score on a value is P(support) − P(oppose) under "
            "the scorer, where the value is relevant to the perception (unmeasured otherwise); a group's "
            "profile is the mean of its measured perception scores, with their sample sd and a 95% interval. "
            "See Ye et al., Generative Psychometrics for Values, and the gpvtools documentation "
            "(docs/method.md).</p>\n</footer>")


# --- PNG charts -------------------------------------------------------------------------------------------

def pyplot():
    """matplotlib.pyplot with the Agg backend, or the one line naming the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependency(f"{COMMAND} --png", "matplotlib", "validate") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "group"


def png_names(report):
    """{group index: file name}, profile-<slug>.png, made unique by the group's index where slugs collide."""
    names, taken = {}, {"compare.png", "circumplex.png"}
    for gi, p in enumerate(report.profiles):
        name = f"profile-{slug(p.id)}.png"
        if name in taken:
            name = f"profile-{slug(p.id)}-{gi + 1}.png"
        taken.add(name)
        names[gi] = name
    return names


def _save(plt, fig, path):
    try:
        with AtomicFile(path) as f:  # a failed run leaves an earlier chart whole
            fig.savefig(f, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)


def _errorbars(ax, ys, scores, ns, sds, colour, size):
    for y, score, n, sd in zip(ys, scores, ns, sds):
        if score is None:
            continue
        ci = interval(score, n, sd)
        if ci is not None:
            ax.plot([max(-1, ci[0]), min(1, ci[1])], [y, y], color=colour, linewidth=1.2)
        ax.plot([score], [y], "o", color=colour, markersize=size)


def _value_axes(ax, names):
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.axvline(0, color="#888888", linewidth=1)
    ax.grid(axis="x", color="#e3e3e3")
    ax.set_xlabel("score (−1 opposes, +1 supports)")


def _profile_png(plt, report, gi, path):
    p, names = report.profiles[gi], report.names
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(names) + 1.2))
    entries = [p.values.get(name, (None, 0, None, False)) for name in names]
    _errorbars(ax, range(len(names)), *zip(*[e[:3] for e in entries]), PALETTE[0], 5)
    for y, (score, n, _, _) in enumerate(entries):
        if score is None:
            ax.text(0.03, y, f"unmeasured (n={n})", color="#999999", va="center", style="italic")
        else:
            ax.text(1.08, y, f"n={n}", color="#666666", va="center", fontsize=8)
    _value_axes(ax, names)
    ax.set_title(f"{p.id} ({p.n_perceptions} perceptions)")
    _save(plt, fig, path)


def _compare_png(plt, report, path):
    names, shown = report.names, report.shown
    fig, ax = plt.subplots(figsize=(8, 0.12 * len(names) * max(len(shown), 3) + 1.5))
    step = 0.7 / max(len(shown), 1)
    for k, gi in enumerate(shown):
        p = report.profiles[gi]
        entries = [p.values.get(name, (None, 0, None, False)) for name in names]
        ys = [y + (k - (len(shown) - 1) / 2) * step for y in range(len(names))]
        _errorbars(ax, ys, *zip(*[e[:3] for e in entries]), report.colour(gi), 4 if len(shown) <= 6 else 3)
        ax.plot([], [], "o", color=report.colour(gi), label=p.id)
    _value_axes(ax, names)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    capped = f" (the {MAX_SERIES} largest of {len(report.profiles)} groups)" if len(report.profiles) > MAX_SERIES \
        else ""
    ax.set_title(f"Values of the groups compared{capped}")
    _save(plt, fig, path)


def _circumplex_png(plt, report, path):
    fig = plt.figure(figsize=(7, 7))
    ax = fig.add_subplot(projection="polar")
    ax.set_theta_zero_location("N")
    ax.set_theta_direction(-1)
    angles = [2 * math.pi * i / len(CIRCLE) for i in range(len(CIRCLE))]
    for gi in report.shown:
        p, colour = report.profiles[gi], report.colour(gi)
        radii = [None if (s := p.values.get(n, (None,))[0]) is None else (s + 1) / 2 for n in CIRCLE]
        runs = _runs([r is not None for r in radii])
        runs = [list(range(len(CIRCLE))) + [0]] if runs is None else runs
        for run in runs:
            ax.plot([angles[i] for i in run], [radii[i] for i in run], color=colour, linewidth=1.5)
        ax.plot([a for a, r in zip(angles, radii) if r is not None], [r for r in radii if r is not None], "o",
                color=colour, markersize=3, label=p.id)
    ax.set_xticks(angles)
    ax.set_xticklabels(CIRCLE)
    ax.set_ylim(0, 1)
    ax.set_yticks([0.25, 0.5, 0.75, 1])
    ax.set_yticklabels(["−0.5", "0", "+0.5", "+1"], color="#666666", fontsize=8)
    ax.plot([t / 100 * 2 * math.pi for t in range(101)], [0.5] * 101, color="#888888", linewidth=1)
    ax.legend(loc="upper left", bbox_to_anchor=(1.05, 1), fontsize=8, frameon=False)
    ax.set_title("Schwartz circumplex")
    _save(plt, fig, path)


def write_pngs(report, directory, plt=None):
    """The charts as PNG files in DIRECTORY (created): a profile per group, the comparison, the circumplex.
    Returns the paths written."""
    plt = plt or pyplot()
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GpvError(f"cannot create {directory}: {e.strerror}") from None
    written = []
    for gi, name in png_names(report).items():
        _profile_png(plt, report, gi, directory / name)
        written.append(directory / name)
    _compare_png(plt, report, directory / "compare.png")
    written.append(directory / "compare.png")
    if report.circumplex:
        _circumplex_png(plt, report, directory / "circumplex.png")
        written.append(directory / "circumplex.png")
    return written
