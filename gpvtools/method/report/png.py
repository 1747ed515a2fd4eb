"""The report's charts as PNG files (matplotlib): a profile per group, the comparison, the circumplex."""

import math
import re
from pathlib import Path

from ...streaming.errors import GpvError
from .. import plotting
from .content import CIRCLE, COMMAND, MAX_SERIES, PALETTE, interval, measured_runs

SAVE_OPTIONS = {"dpi": 120, "metadata": {"Software": None}}  # no "Software" tag naming matplotlib's version


def pyplot():
    """matplotlib.pyplot for the charts, or the error saying gpv-report --png needs matplotlib."""
    return plotting.pyplot(f"{COMMAND} --png")


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
    plotting.save(fig, path, **SAVE_OPTIONS)


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
    plotting.save(fig, path, **SAVE_OPTIONS)


def _circumplex_png(plt, report, path):
    fig = plt.figure(figsize=(7, 7))
    ax = fig.add_subplot(projection="polar")
    ax.set_theta_zero_location("N")
    ax.set_theta_direction(-1)
    angles = [2 * math.pi * i / len(CIRCLE) for i in range(len(CIRCLE))]
    for gi in report.shown:
        p, colour = report.profiles[gi], report.colour(gi)
        radii = [None if (s := p.values.get(n, (None,))[0]) is None else (s + 1) / 2 for n in CIRCLE]
        runs = measured_runs([r is not None for r in radii])
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
    plotting.save(fig, path, **SAVE_OPTIONS)


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
