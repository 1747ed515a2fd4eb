"""Figures for gpv-validate --plot (matplotlib with the Agg backend, imported only when a plot is asked for)."""

from ..plotting import pyplot, save


def mds_map(path, names, coords, groups=None, title="MDS of value similarities"):
    """Points of a 2-D MDS map, labelled, coloured by group (e.g. Schwartz's higher-order value)."""
    plt = pyplot("--plot")
    fig, ax = plt.subplots(figsize=(6.5, 6))
    groups = groups or [""] * len(names)
    palette = plt.get_cmap("tab10")
    colours = {g: palette(i % 10) for i, g in enumerate(dict.fromkeys(groups))}
    for g, colour in colours.items():
        idx = [i for i, x in enumerate(groups) if x == g]
        ax.scatter(coords[idx, 0], coords[idx, 1], s=60, color=colour, label=g or None)
    for (x, y), name in zip(coords, names):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if any(groups):
        ax.legend(fontsize=8, loc="best")
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")
    ax.axhline(0, color="0.85", lw=0.5)
    ax.axvline(0, color="0.85", lw=0.5)
    save(fig, path, dpi=150)


def bars(path, categories, series, title, ylabel):
    """Grouped bars: one group per category, one bar per series {label: [value per category]} (None: no bar)."""
    plt = pyplot("--plot")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(categories) * max(1, len(series))), 4.5))
    width = 0.8 / max(1, len(series))
    for k, (label, ys) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(categories))]
        ax.bar(xs, [y if y is not None else 0 for y in ys], width=width, label=label)
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(categories, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.axhline(0, color="0.5", lw=0.5)
    if len(series) > 1:
        ax.legend(fontsize=8)
    save(fig, path, dpi=150)


def heatmap(path, rows, columns, matrix, title, row_label, column_label):
    """A correlation matrix as a colour map in [-1, 1], with each cell's value written in it."""
    import numpy as np

    plt = pyplot("--plot")
    fig, ax = plt.subplots(figsize=(1 + 0.65 * len(columns), 1 + 0.5 * len(rows)))
    data = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    image = ax.imshow(data, cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(len(rows)):
        for j in range(len(columns)):
            if not np.isnan(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
    ax.set_xlabel(column_label)
    ax.set_ylabel(row_label)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.8)
    save(fig, path, dpi=150)
