"""The report as one HTML page: its sections and its CSS.

The page is deterministic (the same input gives the same bytes: no timestamps, no random ids), has no
script and loads nothing (charts are inline SVG), and escapes every piece of text that came from the
input.
"""

import orjson

from ... import __version__
from .content import MAX_SERIES, fmt, interval
from .profiles import instruments
from .svg import circumplex_svg, comparison_svg, esc, profile_svg

NOT_RECORDED = "not recorded (profiles made before gpvtools recorded instruments)"
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


def flatten(mapping, prefix=""):
    """(key, value) pairs of a nested object, nested keys joined by '.' ("model.sha256")."""
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


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


def _chart_section(report, name, title, caption, svg):
    """A section holding one chart of every group: its caption, the note on groups left out, the legend."""
    return "\n".join([f'<section id="{name}">', f"<h2>{title}</h2>", f'<p class="muted">{caption}</p>',
                      _capped_note(report), _legend(report), svg, "</section>"])


def _comparison_section(report):
    return _chart_section(report, "comparison", "Comparison",
                          "Each dot is a group's mean score on a value (−1 opposes, +1 supports); the whisker its "
                          "95% interval, mean ± 1.96·sd/√n (none below 2 measured perceptions).",
                          comparison_svg(report))


def _circumplex_section(report):
    return _chart_section(report, "circumplex", "Circumplex",
                          "Schwartz's ten basic values in their circular order; the distance from the centre maps a "
                          "score of −1…+1 to the radius, the darker ring is 0. An unmeasured value leaves a gap.",
                          circumplex_svg(report))


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
