"""The report's charts as inline SVG: a group's profile, the groups compared, Schwartz's circumplex."""

import html
import math

from .content import CIRCLE, PALETTE, fmt, interval, measured_runs

LABEL_W, PLOT_W, RIGHT_W = 190, 420, 130


def esc(value):
    """Text from the input, escaped for the page and its inline SVG."""
    return html.escape(str(value), quote=True)


def _coord(x):
    return f"{x:.1f}"


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

    runs = measured_runs([s is not None for s in scores])
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
