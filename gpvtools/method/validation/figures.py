"""Each check's --plot figure, drawn from its Result (checks.py) by plots.py."""

from . import plots
from .checks import as_json


def stability(path, result):
    """p_ss, p_oo and p_same of each value and of the sum, as grouped bars."""
    per_value, total = result.report["values"], result.report["sum"]
    series = {k: [per_value[n][k] for n in result.names] + [total[k]] for k in ("p_ss", "p_oo", "p_same")}
    plots.bars(path, result.names + ["Sum"], series, "Stability: perceptions agreeing with their individual",
               "share")


def construct(path, result):
    """The MDS map, each value coloured by its higher-order value (a higher-order value by itself)."""
    from ..values import HIGHER_ORDER
    from .construct import higher_order_of

    report = result.report
    groups = [higher_order_of(v) or (v if v in HIGHER_ORDER else "") for v in result.names]
    plots.mds_map(path, result.names, result.coordinates, groups,
                  f"MDS of value similarities ({report['n_individuals']} individuals, stress-1 "
                  f"{report['mds']['stress1']:.2f})")


def concurrent(path, result):
    """The Pearson correlations of A's values (rows) with B's (columns), as a heat map."""
    report = result.report
    rows, columns, r = report["rows"], report["columns"], report["pearson"]["r"]
    plots.heatmap(path, rows, columns, [[as_json(r[x][y]) for y in columns] for x in rows],
                  f"Pearson r over {report['n_matched']} individuals", report["a"], report["b"])


def predictive(path, result):
    """Each group's mean score per value, as grouped bars."""
    per_value = result.report["values"]
    series = {label: [per_value[n]["mean"][k] for n in result.names]
              for k, label in enumerate(result.report["groups"])}
    plots.bars(path, result.names, series, f"Mean score by {result.report['field']}", "mean score")
