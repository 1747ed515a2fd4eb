"""gpv-validate: psychometric checks of measured values (paper §3.2, §4.1, App. C): one subcommand each.

The checks themselves are library calls (gpvtools/method/validation/checks.py); this module reads the
options, writes the report, prints the --table and draws the --plot.
"""

import sys

import click
import orjson

from ..method.validation import checks
from ..method.validation.probe_data import ALL_COMBINATIONS
from ..streaming.atomic import write_atomic
from ..streaming.jsonl import Records
from ..streaming.stage import guarded
from .common import CONTEXT_SETTINGS, logger, verbosity
from .table import format_table

COMMAND = "gpv-validate"


def write_report(report, output):
    data = orjson.dumps(checks.as_json(report), option=orjson.OPT_INDENT_2) + b"\n"
    if output in (None, "-"):
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    write_atomic(output, data)  # a failed run leaves an earlier report whole


def report_options(plot):
    """--table, --plot FILE.png (where a figure fits), -o, -q, -v: the same in every check."""

    def decorate(f):
        f = verbosity()(f)
        f = click.option("-o", "--output", default="-", metavar="FILE",
                         help="Write the JSON report to FILE instead of stdout.")(f)
        if plot:
            f = click.option("--plot", "plot_path", metavar="FILE.png", help=f"Draw {plot} to FILE.png.")(f)
        return click.option("--table", is_flag=True, help="Also print a readable table on stderr.")(f)

    return decorate


def run(name, verbose, work):
    """A check behind the command boundary: library errors become one line and an exit status."""
    guarded(f"{COMMAND} {name}", verbose, work)


def notes(name, quiet):
    """The check's notes for people, on stderr; none with -q."""
    return logger(f"{COMMAND} {name}", quiet)


def _short(name, width=8):
    return name if len(name) <= width else name[: width - 1] + "."


def _matrix_table(rows, columns, matrix):
    heads = [_short(c) for c in columns]
    data = [dict(value=r, **{f"c{j}": matrix[i][j] for j in range(len(columns))}) for i, r in enumerate(rows)]
    return format_table(data, ["value"] + [f"{h}=c{j}" for j, h in enumerate(heads)])


@click.group(name=COMMAND, context_settings=CONTEXT_SETTINGS)
def main():
    """Check measured values against psychometric standards.

    One subcommand per check. Each reads JSONL (gpv-score's scored perceptions or gpv-aggregate's profiles), prints a
    JSON report on stdout, with --table a readable table on stderr, and with --plot a figure.
    Error records from upstream are left out and counted; any other bad line stops the check
    with its line number (exit status 1).

    \b
      stability    perception signs against their individual's (App. C.2, Table 6)
      construct    cosine similarity, MDS and Schwartz's circumplex (§4.1, App. C.3)
      concurrent   correlations with another measure of the same people (Tables 2, 7)
      predictive   group differences, e.g. by gender (§4.1, Table 3)
      accuracy     relevance and valence decisions against labels (§3.2, Table 1)
      probe        how well value profiles predict a score table (§5.2)
    """


# --- stability --------------------------------------------------------------------------------------

@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("input", default="-", metavar="[INPUT]")
@click.option("--by", default="doc_id", show_default=True, metavar="FIELD",
              help="The field naming each perception's individual (doc_id falls back to id).")
@click.option("--values", "values_spec", metavar="LIST", help="Comma list of values to check [default: the input's].")
@click.option("--min-evidence", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Leave out individuals with fewer than K measured perceptions of a value.")
@report_options("p_ss, p_oo and p_same per value")
def stability(input, by, values_spec, min_evidence, table, plot_path, output, quiet, verbose):
    """Agreement in sign between perception-level scores and their individual's aggregate.

    Reads scored perceptions. For each value: ss (individual supports, perception supports), oo
    (both oppose), so (individual supports, perception opposes), os (individual opposes,
    perception supports), p_ss = ss/(ss+so), p_oo = oo/(oo+os), p_same = (ss+oo)/(ss+so+oo+os);
    "sum" adds the counts over values (paper App. C.2, Table 6). An individual supports a value
    when the mean of its measured perception scores is above 0. Perceptions scoring exactly 0
    (zero), of an individual whose mean is exactly 0 (tied), or below --min-evidence (sparse) are
    counted apart.
    """

    def work():
        result = checks.stability(Records(input), by=by, values=values_spec, min_evidence=min_evidence,
                                  warn=notes("stability", quiet))
        report = result.report
        write_report(report, output)
        if table:
            rows = [{"value": n, **report["values"][n]} for n in result.names] + [{"value": "Sum", **report["sum"]}]
            click.echo(format_table(rows, ["value", "ss", "oo", "so", "os", "p_ss", "p_oo", "p_same", "zero", "tied",
                                           "sparse"]), err=True)
        if plot_path:
            from ..method.validation import figures

            figures.stability(plot_path, result)
        return 0

    run("stability", verbose, work)


# --- construct --------------------------------------------------------------------------------------

@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("input", default="-", metavar="[INPUT]")
@click.option("--values", "values_spec", metavar="LIST",
              help="Comma list of values [default: the input's, without derived higher-order values].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the MDS and the permutations.")
@click.option("--permutations", type=click.IntRange(min=0), default=9999, show_default=True,
              help="Permutations for the circumplex fit's p-values (0: none).")
@report_options("the MDS map, coloured by Schwartz's higher-order values")
def construct(input, values_spec, seed, permutations, table, plot_path, output, quiet, verbose):
    """Structure of the values across individuals: cosine similarity, MDS and circumplex fit.

    Reads one record per individual (gpv-aggregate's output). Computes the cosine similarity
    between every two values over the individuals measured on both (App. C.3), the distance
    1 - similarity, and a two-dimensional metric MDS of the distances (scikit-learn, --seed), with
    Kruskal's stress-1. For Schwartz's ten basic values it also measures the fit to the theoretical
    circle (Schwartz & Bilsky 1990; Schwartz 1992; order Self-Direction, Stimulation, Hedonism,
    Achievement, Power, Security, Conformity, Tradition, Benevolence, Universalism): Spearman's rho
    between the steps apart on that circle and (a) the angle between the values seen from the
    MDS map's centre, (b) their distance 1 - similarity, each with a one-sided permutation p-value
    (labels shuffled over the circle, --permutations, --seed).
    """

    def work():
        result = checks.construct(Records(input), values=values_spec, seed=seed, permutations=permutations,
                                  warn=notes("construct", quiet))
        report, names, coords = result.report, result.names, result.coordinates
        write_report(report, output)
        if table:
            click.echo(_matrix_table(names, names, result.similarity), err=True)
            coords_rows = [{"value": v, "x": float(coords[i, 0]), "y": float(coords[i, 1])}
                           for i, v in enumerate(names)]
            click.echo(format_table(coords_rows, ["value", "x", "y"]), err=True)
            click.echo(f"MDS stress-1: {report['mds']['stress1']:.3f}", err=True)
            circumplex = report["circumplex"]
            if circumplex:
                p_a, p_d = circumplex["p_angular"], circumplex["p_distance"]
                click.echo(f"circumplex fit: rho (MDS angle) = {circumplex['rho_angular']:.3f}"
                           + (f", p = {p_a:.4f}" if p_a is not None else "")
                           + f"; rho (1 - similarity) = {circumplex['rho_distance']:.3f}"
                           + (f", p = {p_d:.4f}" if p_d is not None else ""), err=True)
        if plot_path:
            from ..method.validation import figures

            figures.construct(plot_path, result)
        return 0

    run("construct", verbose, work)


# --- concurrent -------------------------------------------------------------------------------------

@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("input_a", metavar="A")
@click.argument("input_b", metavar="B")
@click.option("--on", default="id", show_default=True, metavar="FIELD",
              help="The field that names an individual in both inputs.")
@click.option("--values-a", metavar="LIST", help="Comma list of A's values [default: all of A's].")
@click.option("--values-b", metavar="LIST", help="Comma list of B's values [default: all of B's].")
@click.option("--spearman", is_flag=True, help="Also Spearman's rank correlations.")
@report_options("the correlation matrix")
def concurrent(input_a, input_b, on, values_a, values_b, spearman, table, plot_path, output, quiet, verbose):
    """Correlations between two measures of the same individuals (concurrent validity).

    A and B are JSONL files of profiles (gpv-aggregate's output), e.g. GPV's and the dictionary
    baseline's aggregates of the same authors (paper §4.1 with PVD, Tables 2 and 7). Records are
    joined on --on; every value of A is correlated (Pearson; --spearman adds Spearman) with every
    value of B over the individuals measured on both (pairwise exclusion), with the p-value and
    n of each cell; r is null where n < 3 or a side is constant. Individuals in only one input
    are counted.
    """

    def work():
        result = checks.concurrent(Records(input_a), Records(input_b), on=on, values_a=values_a, values_b=values_b,
                                   spearman=spearman, warn=notes("concurrent", quiet))
        report = result.report
        write_report(report, output)
        if table:
            names_a, names_b = report["rows"], report["columns"]
            for method in ("pearson", "spearman") if spearman else ("pearson",):
                r = [[report[method]["r"][x][y] for y in names_b] for x in names_a]
                click.echo(f"{method} r (rows: {input_a}; columns: {input_b}; n = {report['n_matched']} matched)",
                           err=True)
                click.echo(_matrix_table(names_a, names_b, r), err=True)
        if plot_path:
            from ..method.validation import figures

            figures.concurrent(plot_path, result)
        return 0

    run("concurrent", verbose, work)


# --- predictive -------------------------------------------------------------------------------------

@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("input", default="-", metavar="[INPUT]")
@click.option("--field", required=True, metavar="FIELD", help="The field that splits the individuals (gender, …).")
@click.option("--groups", "groups_spec", metavar="A,B",
              help="The two levels of FIELD to compare, in this order [default: the two there are, sorted].")
@click.option("--test", type=click.Choice(["welch", "mannwhitney"]), default="welch", show_default=True,
              help="Welch's t test or the Mann-Whitney U test (two-sided).")
@click.option("--values", "values_spec", metavar="LIST", help="Comma list of values [default: the input's].")
@report_options("the two groups' means per value")
def predictive(input, field, groups_spec, test, values_spec, table, plot_path, output, quiet, verbose):
    """Differences between two groups of individuals, per value (predictive validity).

    Reads one record per individual (gpv-aggregate's output, with the splitting field kept:
    gpv-aggregate --by author --keep gender). For each value: n, mean and sd per group, the
    difference A - B, Cohen's d (pooled sd), Hedges' g, and Welch's t (with its degrees of
    freedom) or Mann-Whitney's U with a two-sided p-value (paper §4.1, Table 3). Individuals
    without a score for a value are left out of that value; records whose FIELD is null or
    another level are counted and left out.
    """

    def work():
        result = checks.predictive(Records(input), field, groups=groups_spec, test=test, values=values_spec,
                                   warn=notes("predictive", quiet))
        report = result.report
        write_report(report, output)
        if table:
            a, b = report["groups"]
            rows = [{"value": n, f"n {a}": r["n"][0], f"n {b}": r["n"][1], f"mean {a}": r["mean"][0],
                     f"mean {b}": r["mean"][1], "diff": r["difference"], "d": r["cohens_d"], "g": r["hedges_g"],
                     ("t" if test == "welch" else "U"): r["statistic"], "p": r["p"]}
                    for n, r in report["values"].items()]
            click.echo(format_table(rows, list(rows[0])), err=True)
        if plot_path:
            from ..method.validation import figures

            figures.predictive(plot_path, result)
        return 0

    run("predictive", verbose, work)


# --- accuracy ---------------------------------------------------------------------------------------

@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("input", default="-", metavar="[INPUT]")
@click.option("--value-field", default="value", show_default=True, metavar="FIELD",
              help="The field naming the item's labelled value (gpv-score ran with --values-field FIELD).")
@click.option("--task-field", default="task", show_default=True, metavar="FIELD",
              help="relevance or valence; when absent, read from the label.")
@click.option("--label-field", default="label", show_default=True, metavar="FIELD",
              help="The gold label: yes/no (relevance) or support/oppose/either (valence).")
@report_options(None)
def accuracy(input, value_field, task_field, label_field, table, output, quiet, verbose):
    """Accuracy of relevance and valence decisions against gold labels (paper §3.2, Table 1).

    Reads labelled items scored by gpv-score on their own value: one item a line with its text,
    value, task and label (the held-out split gpv-train writes, DIR/heldout.jsonl), scored with
    gpv-score --text-field text --values-field value --valence all. An item is decided relevant
    when p_rel > 0.5, and its valence is the most likely of support, oppose, either. Reports the
    accuracy, the count correct and the confusion counts (gold label x decision) of each task.
    """

    def work():
        report = checks.accuracy(Records(input), value_field=value_field, task_field=task_field,
                                label_field=label_field, warn=notes("accuracy", quiet)).report
        write_report(report, output)
        if table:
            for task in ("relevance", "valence"):
                s = report[task]
                labels = list(s["confusion"])  # the task's labels, in order
                share = "-" if s["accuracy"] is None else f"{s['accuracy']:.1%}"
                click.echo(f"{task}: {share} ({s['correct']} of {s['n']}); rows gold, columns decided", err=True)
                click.echo(format_table([{"gold": g, **s["confusion"][g]} for g in labels], ["gold", *labels]),
                           err=True)
        return 0

    run("accuracy", verbose, work)


# --- probe ------------------------------------------------------------------------------------------

@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("input", default="-", metavar="[INPUT]")
@click.option("--labels", "labels_path", required=True, metavar="FILE",
              help="Scores to predict, one per subject: CSV/TSV with a header, or JSONL.")
@click.option("--label-field", default="score", show_default=True, metavar="FIELD",
              help="Column or field of FILE holding the score.")
@click.option("--subject-field", default="subject", show_default=True, metavar="FIELD",
              help="Field of INPUT naming the subject (what gpv-aggregate --by grouped on).")
@click.option("--label-subject-field", metavar="FIELD",
              help="Column or field of FILE naming the subject [default: --subject-field].")
@click.option("--systems", multiple=True, default=(ALL_COMBINATIONS,), show_default=True, metavar="SPEC",
              help="Value systems whose values are the features: a comma list of nfcc, vsm, schwartz, lvi "
                   "(or all), one probe per option given; all-combinations: each of the 15 (paper Table 9).")
@click.option("--splits", type=click.IntRange(min=1), default=30, show_default=True,
              help="Random stratified train/validation/test splits (paper: 30).")
@click.option("--split", "split_sizes", metavar="TRAIN/VAL/TEST",
              help="Subjects in each part [default: 4/17 of them each for validation and test, the rest for "
                   "training; 9/4/4 for the paper's 17 LLMs].")
@click.option("--bins", type=click.IntRange(min=1), default=4, show_default=True,
              help="Equal-count score bins that validation and test are drawn across (paper: 4).")
@click.option("--epochs", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Full-batch Adam steps (paper: 1000).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Adam learning rate (paper: 0.001).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the splits and the initial weights; the report is the same for the same seed.")
@click.option("--normalise", "normalisation", type=click.Choice(["minmax", "none"]), default="minmax",
              show_default=True,
              help="minmax: each value's scores over the subjects mapped to [-1, 1]; none: scores used as "
                   "they are (already on [-1, 1]). Unmeasured values are 0 either way.")
@report_options(None)
def probe(input, labels_path, label_field, subject_field, label_subject_field, systems, splits, split_sizes,
          bins, epochs, lr, seed, normalisation, table, output, quiet, verbose):
    """Predict a score table from value profiles by linear probing (GPV paper §5.2, App. D.4).

    INPUT is aggregated JSONL, one record per subject (gpv-aggregate --by subject); FILE gives each
    subject a score (in the paper, the SALAD-Bench safety score of 17 LLMs). Every subject must have
    both. For each combination of value systems, a linear layer without bias maps a subject's values
    (normalised to [-1, 1], unmeasured as 0) to a scalar f; for two subjects a and b, [f(a), f(b)] are
    the logits of which one scores higher, trained with cross-entropy on all pairs of training subjects
    (9 subjects: 36 pairs) with full-batch Adam. Pairs with equal scores are left out.

    Each of --splits random splits stratifies subjects into --bins equal-count score bins and draws
    validation and then test subjects across them (9/4/4 of 17: one of each bin in each); the same
    splits serve every combination. The weights after the epoch with the best validation pair accuracy
    (ties: lower validation loss) are kept and scored on the pairs of test subjects.

    The JSON report on stdout gives per combination the mean and sample sd of test accuracy over splits
    (and each split's), the subjects and pairs, and the mean weight per value over splits (comparable
    across values thanks to the normalisation); "best" is the combination with the highest mean
    accuracy (chosen on test accuracy, as the paper's Table 5 does: an optimistic figure). Minmax uses
    every subject's scores, not only the training ones (no label is involved). torch runs on one thread.
    """

    def work():
        report = checks.probe(input, labels_path, label_field=label_field, subject_field=subject_field,
                              label_subject_field=label_subject_field, systems=systems, splits=splits,
                              split=split_sizes, bins=bins, epochs=epochs, lr=lr, seed=seed,
                              normalisation=normalisation, warn=notes("probe", quiet)).report
        write_report(report, output)
        if table:
            click.echo(_probe_table(report), err=True)
        return 0

    run("probe", verbose, work)


def _probe_table(report):
    """The probe report for people: accuracy per combination, then the best combination's weights."""
    rows = [{"systems": "+".join(r["systems"]), "values": r["values"],
             "accuracy": f"{100 * r['accuracy']['mean']:.1f} ± {100 * r['accuracy']['sd']:.1f}",
             "test pairs": r["pairs"]["test"], "best epoch": round(r["best_epoch"]["mean"])}
            for r in report["results"]]
    head = (f"linear probe: {report['subjects']} subjects, {report['splits']} splits "
            f"({'/'.join(str(v) for v in report['split'].values())}, {report['bins']} score bins), "
            f"{report['epochs']} epochs, lr {report['lr']:g}, seed {report['seed']}")
    best = next(r for r in report["results"] if r["systems"] == report["best"]["systems"])
    weights = sorted(best["weights"].items(), key=lambda kv: -kv[1])
    tied = "; tied with " + ", ".join("+".join(t) for t in report["best"]["tied"]) if report["best"]["tied"] else ""
    wrows = [{"value": v, "mean weight": f"{m:+.2f}", "sd": f"{best['weights_sd'][v]:.2f}"} for v, m in weights]
    return "\n".join([head, "", format_table(rows, ["systems", "values", "accuracy (%)=accuracy", "test pairs",
                                                     "best epoch"]),
                      "", f"mean weights, {'+'.join(best['systems'])} (highest accuracy{tied}):",
                      format_table(wrows, ["value", "mean weight", "sd"])])


main.man_sections = {
    "EXIT STATUS": (
        "0 when the report was written; 1 for a bad input line (its number is named), an input the check "
        "cannot use (no record, one group instead of two, values never measured together) or a failure; 2 "
        "for a usage error; 130 or 143 when interrupted by SIGINT or SIGTERM (no report is written: a "
        "report is all or nothing); 141 when the reader of stdout went away."
    ),
    "REPORTS": (
        "Every report is one JSON object with \"check\" naming the check. Matrices are objects of objects "
        "keyed by value names (rows, then columns); null stands for undefined (too few individuals, a "
        "constant side, a zero denominator). Numbers are unrounded; --table rounds them to three places."
    ),
    "EXAMPLES": (
        "\b\n"
        "gpv-score perceptions.jsonl > scored.jsonl\n"
        "gpv-validate stability --by author --table scored.jsonl\n"
        "gpv-aggregate --by author --keep gender scored.jsonl > authors.jsonl\n"
        "gpv-validate construct --plot mds.png --table authors.jsonl\n"
        "gpv-validate predictive --field gender --groups male,female authors.jsonl\n"
        "gpv-score -m pvd.json --text-field text posts.jsonl | gpv-aggregate --by author > pvd.jsonl\n"
        "gpv-validate concurrent --spearman --table authors.jsonl pvd.jsonl\n"
        "gpv-score --text-field text --values-field value --valence all DIR/heldout.jsonl \\\n"
        "  | gpv-validate accuracy --table"
    ),
}


if __name__ == "__main__":
    main(prog_name="gpv-validate")  # bin/gpv-validate runs python -m: --help still says gpv-validate
