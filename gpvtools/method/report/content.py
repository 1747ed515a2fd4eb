"""What a report shows, to the page and the PNG charts alike: the Report, Schwartz's circle, the 95% interval,
numbers as text."""

import math
import shlex

from .profiles import value_names

COMMAND = "gpv-report"
# Schwartz's ten basic values in their circular order (Schwartz 1992), starting at the top, clockwise.
CIRCLE = ["Self-Direction", "Stimulation", "Hedonism", "Achievement", "Power", "Security", "Conformity",
          "Tradition", "Benevolence", "Universalism"]
Z95 = 1.96
MAX_SERIES = 12  # groups drawn in the comparison and circumplex charts: more would not be legible
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f", "#393b79", "#ad494a"]


def interval(score, n, sd):
    """The 95% interval of a mean (mean ± 1.96·sd/√n), or None below 2 perceptions or without an sd."""
    if score is None or sd is None or n < 2:
        return None
    half = Z95 * sd / math.sqrt(n)
    return score - half, score + half


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


def fmt(x, digits=3):
    return "–" if x is None else f"{x:.{digits}f}"


def measured_runs(measured):
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
