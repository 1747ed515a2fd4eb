"""gpv-validate: each check against numbers worked out by hand, the report's shape, errors."""

import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from gpvtools.commands import validate
from gpvtools.method.validation import accuracy as acc
from gpvtools.method.validation import checks
from gpvtools.method.validation import concurrent as cc
from gpvtools.method.validation import construct as cv
from gpvtools.method.validation import predictive as pv
from gpvtools.method.validation import stability as st
from gpvtools.method.values import system
from gpvtools.streaming.errors import BadRecord, GpvError
from gpvtools.streaming.jsonl import Records


def jsonl(records):
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def scored(pid, who, scores, **extra):
    return {"id": pid, "author": who, **extra, "values": {v: {"score": s} for v, s in scores.items()}}


def profile(who, scores, **extra):
    return {"id": who, "author": who, **extra, "n_perceptions": 3, "group_by": ["author"],
            "values": {v: {"score": s, "n": 0 if s is None else 3, "sd": None} for v, s in scores.items()}}


def report_of(result):
    assert result.exit_code == 0, result.stderr
    return orjson.loads(result.stdout)


# --- stability (App. C.2, Table 6) ----------------------------------------------------------------

# Individual p1: A = 0.5, -0.25, 0.25 (mean +1/6: supports)  -> ss 2, so 1
#                B = -0.5, -0.5, 0.25 (mean -0.25: opposes)  -> oo 2, os 1
# Individual p2: A = -0.5 (opposes)                          -> oo 1
#                B = 0.0 (measured, neither)                  -> zero 1
# Individual p3: A = 0.5, -0.5 (mean exactly 0)               -> tied 2;  B never measured
STABILITY = [
    scored("1", "p1", {"A": 0.5, "B": -0.5}), scored("2", "p1", {"A": -0.25, "B": -0.5}),
    scored("3", "p1", {"A": 0.25, "B": 0.25}), scored("4", "p2", {"A": -0.5, "B": 0.0}),
    scored("5", "p3", {"A": 0.5, "B": None}), scored("6", "p3", {"A": -0.5, "B": None}),
]
# A: ss 2, oo 1, so 1, os 0 -> p_ss 2/3, p_oo 1, p_same 3/4;  B: ss 0, oo 2, so 0, os 1 -> p_oo 2/3, p_same 2/3
# Sum: ss 2, oo 3, so 1, os 1 -> p_ss 2/3, p_oo 3/4, p_same 5/7


def stability_arrays():
    groups = np.array([0, 0, 0, 1, 2, 2])
    scores = np.array([[0.5, -0.5], [-0.25, -0.5], [0.25, 0.25], [-0.5, 0.0], [0.5, np.nan], [-0.5, np.nan]])
    return groups, scores


def test_stability_counts_by_hand():
    counts = st.stability(*stability_arrays())
    assert {k: v.tolist() for k, v in counts.items()} == {
        "ss": [2, 0], "oo": [1, 2], "so": [1, 0], "os": [0, 1], "zero": [0, 1], "tied": [2, 0], "sparse": [0, 0]}
    assert st.ratios(2, 1, 1, 0) == {"p_ss": 2 / 3, "p_oo": 1.0, "p_same": 3 / 4}
    assert st.ratios(0, 2, 0, 1) == {"p_ss": None, "p_oo": 2 / 3, "p_same": 2 / 3}


def test_stability_min_evidence_sets_thin_individuals_apart():
    counts = st.stability(*stability_arrays(), min_evidence=2)
    # p2 has one measured perception of each value: its A (oo) and B (zero) become sparse
    assert counts["oo"].tolist() == [0, 2] and counts["zero"].tolist() == [0, 0]
    assert counts["sparse"].tolist() == [1, 1]


def test_stability_command(invoke):
    result = invoke(validate.main, ["stability", "--by", "author", "--table"], jsonl(STABILITY))
    report = report_of(result)
    assert report["values"]["A"] == {"ss": 2, "oo": 1, "so": 1, "os": 0, "zero": 0, "tied": 2, "sparse": 0,
                                     "p_ss": 2 / 3, "p_oo": 1.0, "p_same": 0.75}
    assert report["values"]["B"]["p_ss"] is None and report["values"]["B"]["p_oo"] == 2 / 3
    assert report["sum"] == {"ss": 2, "oo": 3, "so": 1, "os": 1, "zero": 1, "tied": 2, "sparse": 0,
                             "p_ss": 2 / 3, "p_oo": 0.75, "p_same": 5 / 7}
    assert (report["n_perceptions"], report["n_individuals"]) == (6, 3)
    table = result.stderr.splitlines()
    assert table[0].split() == ["value", "ss", "oo", "so", "os", "p_ss", "p_oo", "p_same", "zero", "tied", "sparse"]
    assert table[-1].split() == ["Sum", "2", "3", "1", "1", "0.667", "0.750", "0.714", "1", "2", "0"]


def test_stability_refuses_aggregates(invoke):
    result = invoke(validate.main, ["stability"], jsonl([profile("x", {"A": 0.5})]))
    assert (result.exit_code, result.stderr) == (1, ("gpv-validate stability: error: line 1: an aggregate record "
                                                    "(it has 'group_by'); stability needs the scored perceptions\n"))


# --- construct (§4.1, App. C.3) --------------------------------------------------------------------

def test_cosine_similarity_with_pairwise_exclusion():
    # A = (1, 0, 1), B = (0, 1, 1), C = (1, 1, unmeasured)
    # A·B over all 3 rows = 1, |A|² = |B|² = 2 -> 1/2;  A·C over rows 1, 2: (1,0)·(1,1) = 1, |A|² 1, |C|² 2 -> 1/√2
    # B·C over rows 1, 2: (0,1)·(1,1) = 1, |B|² 1, |C|² 2 -> 1/√2
    x = np.array([[1, 0, 1], [0, 1, 1], [1, 1, np.nan]], dtype=float)
    sim, n = cv.cosine_similarity(x)
    assert sim == pytest.approx(np.array([[1, 0.5, 1 / math.sqrt(2)], [0.5, 1, 1 / math.sqrt(2)],
                                          [1 / math.sqrt(2), 1 / math.sqrt(2), 1]]), rel=1e-15)
    assert n.tolist() == [[3, 3, 2], [3, 3, 2], [2, 2, 2]]


def test_cosine_is_undefined_without_common_rows():
    sim, n = cv.cosine_similarity(np.array([[1, np.nan], [np.nan, 1]]))
    assert np.isnan(sim[0, 1]) and n[0, 1] == 0 and sim[0, 0] == 1


def test_circle_steps_follow_schwartz_order():
    steps = cv.circle_steps(["Self-Direction", "Power", "Universalism", "Hedonism"])
    # positions 0, 4, 9, 2 on a circle of ten: steps |i-j| or 10-|i-j|
    assert steps.tolist() == [[0, 4, 1, 2], [4, 0, 5, 2], [1, 5, 0, 3], [2, 2, 3, 0]]


def test_angular_distance_and_stress():
    square = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=float)
    ang = cv.angular_distance(square)
    assert ang[0] == pytest.approx([0, math.pi / 2, math.pi, math.pi / 2])
    exact = np.sqrt(((square[:, None] - square[None]) ** 2).sum(-1))
    assert cv.stress1(exact, square) == 0
    assert cv.stress1(exact * 2, square) == pytest.approx(1.0)  # sqrt(sum d² / sum d²): every distance half


def test_mds_recovers_a_planar_configuration():
    square = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=float)
    distance = np.sqrt(((square[:, None] - square[None]) ** 2).sum(-1))
    coords, stress = cv.mds(distance, seed=0)
    recovered = np.sqrt(((coords[:, None] - coords[None]) ** 2).sum(-1))
    assert stress < 1e-3 and recovered == pytest.approx(distance, abs=1e-2)


def test_mantel_extremes():
    names = list(cv.SCHWARTZ_CIRCLE)
    steps = cv.circle_steps(names)
    rho, p = cv.mantel(steps, steps, permutations=999, seed=0)
    # identical structure: rho 1; only the 20 rotations/reflections of the circle (of 10! labellings) tie it
    assert rho == pytest.approx(1.0) and p <= 2 / 1000
    rho, p = cv.mantel(5 - steps, steps, permutations=999, seed=0)
    assert rho == pytest.approx(-1.0) and p == 1.0  # every permutation does at least as well


def circumplex_profiles(names, n=36):
    """Individuals whose scores vary smoothly around the circle of NAMES (as Schwartz's theory says)."""
    angles = {v: 2 * math.pi * i / len(names) for i, v in enumerate(names)}
    return [profile(f"i{k:02d}", {v: round(0.5 + 0.45 * math.cos(angles[v] - 2 * math.pi * k / n), 6)
                                  for v in system("schwartz")}) for k in range(n)]


def test_construct_finds_a_circumplex_where_there_is_one(invoke, tmp_path):
    data = jsonl(circumplex_profiles(cv.SCHWARTZ_CIRCLE))
    result = invoke(validate.main, ["construct", "--permutations", "999", "--table", "--plot",
                                    str(tmp_path / "mds.png")], data)
    report = report_of(result)
    fit = report["circumplex"]
    assert fit["rho_angular"] > 0.95 and fit["p_angular"] < 0.01
    assert fit["rho_distance"] > 0.95 and fit["p_distance"] < 0.01
    # 1 - cosine is not a Euclidean distance, so even a perfect circle keeps some stress in two dimensions
    assert 0 < report["mds"]["stress1"] < 0.3 and report["n_individuals"] == 36
    assert (tmp_path / "mds.png").read_bytes()[:4] == b"\x89PNG"
    assert "circumplex fit: rho (MDS angle) = " in result.stderr


def test_construct_finds_none_where_the_order_is_scrambled(invoke):
    # the same circular structure, but over the values in a scrambled order: no fit to Schwartz's circle
    scrambled = ["Power", "Universalism", "Stimulation", "Tradition", "Self-Direction", "Security", "Benevolence",
                 "Hedonism", "Conformity", "Achievement"]
    steps = cv.circle_steps(scrambled)  # how far apart the scrambled circle puts Schwartz's neighbours
    assert steps[0, 1] != 1
    report = report_of(invoke(validate.main, ["construct", "--permutations", "999"],
                              jsonl(circumplex_profiles(scrambled))))
    assert report["circumplex"]["rho_angular"] < 0.5 and report["circumplex"]["p_angular"] > 0.05


def test_construct_reports_undefined_pairs_and_other_value_sets(invoke):
    records = [profile("x", {"A": 1, "B": None, "C": 1}), profile("y", {"A": 1, "B": 0.5, "C": None}),
               profile("z", {"A": 0.5, "B": None, "C": 1})]
    result = invoke(validate.main, ["construct"], jsonl(records))
    assert (result.exit_code, result.stderr) == (1, ("gpv-validate construct: error: 'B' and 'C' are never measured "
                                                    "together (or are 0 wherever they are): their similarity is "
                                                    "undefined; leave values out with --values\n"))
    records.append(profile("w", {"A": -1, "B": 1, "C": 0.5}))
    result = invoke(validate.main, ["construct"], jsonl(records))
    report = report_of(result)
    assert report["circumplex"] is None and report["n"]["B"]["C"] == 1
    assert "no circumplex fit: it needs exactly the 10 Schwartz basic values" in result.stderr


# --- concurrent (Tables 2, 7) ----------------------------------------------------------------------

def test_correlations_by_hand():
    # u = 1, 2, 3 and w = 1, 3, 2: deviations (-1, 0, 1) and (-1, 1, 0) -> r = 1 / sqrt(2 * 2) = 0.5
    # two-sided p with n - 2 = 1 degree of freedom: t = 0.5 / sqrt(0.75) = tan(pi/6), and the t(1) (Cauchy)
    # distribution gives P(|T| > tan(pi/6)) = 1 - 2 * (pi/6) / pi = 2/3. The ranks equal the data: Spearman too.
    a = np.array([[1.0], [2.0], [3.0], [4.0]])
    b = np.array([[1.0], [3.0], [2.0], [np.nan]])
    for method in ("pearson", "spearman"):
        r, p, n = cc.correlate(a, b, method)
        assert r[0, 0] == pytest.approx(0.5) and p[0, 0] == pytest.approx(2 / 3) and n[0, 0] == 3


def test_correlation_needs_three_and_variation():
    r, _p, n = cc.correlate(np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]]), np.array([[1.0], [2.0], [np.nan]]))
    assert np.isnan(r).all() and n.tolist() == [[2], [2]]


def test_concurrent_command_joins_on_a_field(invoke, tmp_path):
    a = [profile("x", {"U": 1.0}), profile("y", {"U": 2.0}), profile("z", {"U": 3.0}), profile("only-a", {"U": 9.0})]
    b = [profile("z", {"W": 2.0, "V": None}), profile("x", {"W": 1.0, "V": 1.0}), profile("y", {"W": 3.0, "V": 2.0}),
         profile("only-b", {"W": 0.0, "V": 0.0})]
    (tmp_path / "a.jsonl").write_bytes(jsonl(a))
    (tmp_path / "b.jsonl").write_bytes(jsonl(b))
    result = invoke(validate.main, ["concurrent", "--spearman", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")])
    report = report_of(result)
    assert (report["n_matched"], report["only_in_a"], report["only_in_b"]) == (3, 1, 1)
    assert report["rows"] == ["U"] and report["columns"] == ["W", "V"]
    assert report["pearson"]["r"]["U"]["W"] == pytest.approx(0.5)   # joined: U = 1, 2, 3 against W = 1, 3, 2
    assert report["spearman"]["p"]["U"]["W"] == pytest.approx(2 / 3)
    assert report["n"]["U"] == {"W": 3, "V": 2} and report["pearson"]["r"]["U"]["V"] is None
    assert f"3 individuals in both; 1 only in {tmp_path / 'a.jsonl'}, 1 only in {tmp_path / 'b.jsonl'}" in result.stderr


def test_concurrent_duplicate_ids_and_no_overlap(invoke, tmp_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl([profile("x", {"U": 1.0}), profile("x", {"U": 2.0})]))
    (tmp_path / "b.jsonl").write_bytes(jsonl([profile("q", {"U": 1.0})]))
    result = invoke(validate.main, ["concurrent", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")])
    assert (result.exit_code, result.stderr) == (
        1, (f"gpv-validate concurrent: error: {tmp_path / 'a.jsonl'}: line 2: 'x' again in field 'id' (first on "
           f"line 1); join on a field unique to each record\n"))
    result = invoke(validate.main, ["concurrent", str(tmp_path / "b.jsonl"), str(tmp_path / "b.jsonl"), "--on",
                                    "author"])
    assert report_of(result)["n_matched"] == 1
    (tmp_path / "c.jsonl").write_bytes(jsonl([profile("r", {"U": 1.0})]))
    result = invoke(validate.main, ["concurrent", str(tmp_path / "b.jsonl"), str(tmp_path / "c.jsonl")])
    assert (result.exit_code, result.stderr) == (
        1, "gpv-validate concurrent: error: no individual is in both inputs (joined on 'id')\n")


# --- predictive (Table 3) ---------------------------------------------------------------------------

def test_group_comparison_by_hand():
    # a = 1, 2, 3: mean 2, sd 1;  b = 4, 6: mean 5, sd sqrt(2);  difference -3
    # pooled sd = sqrt((2*1 + 1*2) / 3) = sqrt(4/3) -> d = -3 / sqrt(4/3) = -3 sqrt(3) / 2
    # g = d * (1 - 3 / (4*5 - 9)) = d * 8/11
    # Welch: se² = 1/3 + 2/2 = 4/3 -> t = -3 / sqrt(4/3);  df = (4/3)² / ((1/3)²/2 + 1²/1) = 32/19
    r = pv.compare([1, 2, 3, np.nan], [4, 6])
    assert r["n"] == [3, 2] and r["mean"] == [2, 5] and r["sd"] == pytest.approx([1, math.sqrt(2)])
    assert r["difference"] == -3
    assert r["cohens_d"] == pytest.approx(-3 * math.sqrt(3) / 2)
    assert r["hedges_g"] == pytest.approx(-3 * math.sqrt(3) / 2 * 8 / 11)
    assert r["statistic"] == pytest.approx(-3 / math.sqrt(4 / 3)) and r["df"] == pytest.approx(32 / 19)
    from scipy.stats import t as student

    assert r["p"] == pytest.approx(2 * student.sf(3 / math.sqrt(4 / 3), 32 / 19))
    # Mann-Whitney: no a exceeds any b -> U = 0; exact two-sided p = 2 * P(U <= 0) = 2 / C(5, 2) = 0.2
    u = pv.compare([1, 2, 3], [4, 6], test="mannwhitney")
    assert u["statistic"] == 0 and u["p"] == pytest.approx(0.2)


def test_predictive_command(invoke):
    records = [profile("a1", {"A": 1.0}, gender="f"), profile("a2", {"A": 2.0}, gender="f"),
               profile("a3", {"A": 3.0}, gender="f"), profile("b1", {"A": 4.0}, gender="m"),
               profile("b2", {"A": 6.0}, gender="m"), profile("c1", {"A": 9.0}, gender=None)]
    result = invoke(validate.main, ["predictive", "--field", "gender", "--table"], jsonl(records))
    report = report_of(result)
    assert report["groups"] == ["f", "m"] and report["n_individuals"] == [3, 2]
    assert report["left_out"] == {"null": 1}
    assert report["values"]["A"]["difference"] == -3
    assert report["values"]["A"]["df"] == pytest.approx(32 / 19)
    reverse = report_of(invoke(validate.main, ["predictive", "--field", "gender", "--groups", "m,f"], jsonl(records)))
    assert reverse["groups"] == ["m", "f"] and reverse["values"]["A"]["difference"] == 3


def test_predictive_needs_two_groups(invoke):
    records = [profile("a", {"A": 1.0}, g="x"), profile("b", {"A": 2.0}, g="y"), profile("c", {"A": 3.0}, g="z"),
               profile("d", {"A": 3.0}, g="z")]
    result = invoke(validate.main, ["predictive", "--field", "g"], jsonl(records))
    assert (result.exit_code, result.stderr) == (
        1, ("gpv-validate predictive: error: field 'g' has 3 levels: x (1), y (1), z (2); predictive compares two: "
           "pick them with --groups A,B\n"))
    result = invoke(validate.main, ["predictive", "--field", "g", "--groups", "x,w"], jsonl(records))
    assert (result.exit_code, result.stderr) == (
        1, "gpv-validate predictive: error: no record has g 'w'; g has: x (1), y (1), z (2)\n")
    result = invoke(validate.main, ["predictive", "--field", "g", "--groups", "x,z"], jsonl(records))
    assert report_of(result)["left_out"] == {"y": 1}
    result = invoke(validate.main, ["predictive", "--field", "sex"], jsonl(records))
    assert (result.exit_code, result.stderr) == (
        1, "gpv-validate predictive: error: line 1: field 'sex' is missing (--field sex)\n")


# --- accuracy (§3.2, Table 1) ---------------------------------------------------------------------

def item(i, value, task, label, **probs):
    return {"id": str(i), "text": f"item {i}", "value": value, "task": task, "label": label,
            "values": {value: {"relevance": probs.pop("rel", 0.9), **probs, "score": None}}}


ITEMS = [
    item(1, "Power", "relevance", "yes", rel=0.9),                                   # yes   right
    item(2, "Power", "relevance", "no", rel=0.7),                                    # yes   wrong
    item(3, "Honesty", "relevance", "no", rel=0.2),                                  # no    right
    item(4, "Power", "valence", "support", support=0.6, oppose=0.3, either=0.1),     # support right
    item(5, "Power", "valence", "oppose", support=0.5, oppose=0.4, either=0.1),      # support wrong
    item(6, "Power", "valence", "oppose", support=0.1, oppose=0.1, either=0.8),      # either  wrong
]
# relevance 2/3 (gold yes: yes 1; gold no: yes 1, no 1); valence 1/3 (support->support 1, oppose->support 1,
# oppose->either 1)


def test_accuracy_decisions():
    assert acc.decide_relevance([0.5, 0.51, 0.2]).tolist() == ["no", "yes", "no"]  # > 0.5, as the method says
    assert acc.decide_valence([[0.4, 0.4, 0.2], [0.1, 0.2, 0.7]]).tolist() == ["support", "either"]  # tie: first


def test_accuracy_command(invoke):
    result = invoke(validate.main, ["accuracy", "--table"], jsonl(ITEMS))
    report = report_of(result)
    assert report["relevance"] == {"accuracy": 2 / 3, "correct": 2, "n": 3,
                                   "confusion": {"yes": {"yes": 1, "no": 0}, "no": {"yes": 1, "no": 1}}}
    assert report["valence"] == {"accuracy": 1 / 3, "correct": 1, "n": 3, "confusion": {
        "support": {"support": 1, "oppose": 0, "either": 0}, "oppose": {"support": 1, "oppose": 0, "either": 1},
        "either": {"support": 0, "oppose": 0, "either": 0}}}
    assert "relevance: 66.7% (2 of 3); rows gold, columns decided" in result.stderr


def test_accuracy_reads_the_task_from_the_label_when_absent(invoke):
    items = [{k: v for k, v in it.items() if k != "task"} for it in ITEMS]
    assert report_of(invoke(validate.main, ["accuracy"], jsonl(items)))["relevance"]["correct"] == 2


@pytest.mark.parametrize("change, message", [
    ({"values": {"Power": {"relevance": 0.9, "score": None}}},
     ("line 1: values.Power.support must be a number (score with --valence all to get valence where the value is "
     "not relevant)")),
    ({"value": "Honesty"}, "line 1: values has no 'Honesty' (score with --values-field value)"),
    ({"label": "maybe"}, "line 1: label 'maybe' is not a valence label (support, oppose, either)"),
    ({"task": "mood"}, "line 1: field 'task' must be relevance or valence, not 'mood'"),
    ({"value": None}, "line 1: field 'value' must be a string (--value-field)"),
])
def test_accuracy_errors(invoke, change, message):
    bad = {**ITEMS[3], **change}
    result = invoke(validate.main, ["accuracy"], jsonl([bad]))
    assert (result.exit_code, result.stderr) == (1, f"gpv-validate accuracy: error: {message}\n")


def test_heldout_split_fields_are_what_accuracy_reads(tmp_path):
    # gpv-train writes its held-out split with training.data.write_jsonl: the fields accuracy reads by default
    from gpvtools.method.training import data

    data.write_jsonl(tmp_path / "h.jsonl", [data.Example("t", "Power", "valence", "oppose")])
    record = orjson.loads((tmp_path / "h.jsonl").read_bytes())
    record["values"] = {"Power": {"relevance": 0.2, "support": 0.2, "oppose": 0.7, "either": 0.1, "score": None}}
    decided = acc.labelled_decisions([(1, record)])
    assert decided["valence"] == (["oppose"], ["oppose"])


# --- what every check shares ------------------------------------------------------------------------

@pytest.mark.parametrize("check", ["stability", "construct", "predictive", "accuracy"])
def test_empty_bad_and_upstream_error_lines(invoke, check):
    args = [check] + (["--field", "g"] if check == "predictive" else [])
    result = invoke(validate.main, args, b"")
    assert (result.exit_code, result.stderr) == (
        1, f"gpv-validate {check}: error: standard input holds no record to check\n")
    result = invoke(validate.main, args, b"{oops\n" + jsonl(STABILITY[:1]))
    assert (result.exit_code, result.stderr) == (
        1, (f"gpv-validate {check}: error: line 1: invalid JSON: unexpected character, expected a string key at "
           f"column 2\n"))
    upstream = b'{"id": "u", "_gpv_error": {"command": "gpv-score", "line": 1, "error": "boom"}}\n'
    result = invoke(validate.main, args, upstream)
    assert result.stderr == (f"gpv-validate {check}: error: standard input holds no record to check (only 1 error "
                             f"record)\n")


def test_upstream_errors_are_left_out_and_counted(invoke):
    upstream = b'{"id": "u", "_gpv_error": {"command": "gpv-score", "line": 1, "error": "boom"}}\n'
    result = invoke(validate.main, ["stability", "--by", "author"], upstream + jsonl(STABILITY))
    assert report_of(result)["sum"]["ss"] == 2
    assert result.stderr == "gpv-validate stability: left out 1 error record from upstream\n"


def test_help_of_every_check(invoke):
    for check in ("stability", "construct", "concurrent", "predictive", "accuracy"):
        result = invoke(validate.main, [check, "-h"])
        assert result.exit_code == 0 and result.stdout.startswith(f"Usage: gpv-validate {check} [OPTIONS]")
    assert "probe" in invoke(validate.main, ["--help"]).stdout


# --- the checks as library calls ---------------------------------------------------------------------

def pairs(records):
    return list(enumerate(records, 1))


PREDICTIVE = [profile("a1", {"A": 1.0, "B": 0.5}, gender="f"), profile("a2", {"A": 2.0, "B": -0.5}, gender="f"),
              profile("b1", {"A": 4.0, "B": 0.2}, gender="m"), profile("b2", {"A": 6.0, "B": 0.1}, gender="m"),
              profile("c1", {"A": 9.0, "B": 0.0}, gender=None)]
CONCURRENT_A = [profile("x", {"U": 1.0}), profile("y", {"U": 2.0}), profile("z", {"U": 3.0}), profile("o", {"U": 9.0})]
CONCURRENT_B = [profile("z", {"W": 2.0}), profile("x", {"W": 1.0}), profile("y", {"W": 3.0})]


@pytest.mark.parametrize("call, argv, data", [
    (lambda: checks.stability(pairs(STABILITY), by="author", values="A,B", min_evidence=2),
     ["stability", "--by", "author", "--values", "A,B", "--min-evidence", "2"], STABILITY),
    (lambda: checks.construct(pairs(circumplex_profiles(cv.SCHWARTZ_CIRCLE)), seed=1, permutations=99),
     ["construct", "--seed", "1", "--permutations", "99"], circumplex_profiles(cv.SCHWARTZ_CIRCLE)),
    (lambda: checks.predictive(pairs(PREDICTIVE), "gender", groups="m,f", test="mannwhitney", values=["B", "A"]),
     ["predictive", "--field", "gender", "--groups", "m,f", "--test", "mannwhitney", "--values", "B,A"], PREDICTIVE),
    (lambda: checks.accuracy(pairs(ITEMS)), ["accuracy"], ITEMS),
], ids=["stability", "construct", "predictive", "accuracy"])
def test_a_check_called_from_python_gives_the_commands_report(invoke, call, argv, data):
    assert checks.as_json(call().report) == report_of(invoke(validate.main, argv, jsonl(data)))


def test_concurrent_from_python_gives_the_commands_report(invoke, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(jsonl(CONCURRENT_A))
    b.write_bytes(jsonl(CONCURRENT_B))
    notes = []
    result = checks.concurrent(Records(str(a)), Records(str(b)), spearman=True, warn=notes.append)
    assert checks.as_json(result.report) == report_of(invoke(validate.main, ["concurrent", "--spearman", str(a),
                                                                              str(b)]))
    assert notes == [f"3 individuals in both; 1 only in {a}, 0 only in {b}"]
    # records given as pairs rather than read from a file: the report names no file
    report = checks.concurrent(pairs(CONCURRENT_A), pairs(CONCURRENT_B)).report
    assert (report["a"], report["b"], report["pearson"]["r"]["U"]["W"]) == (None, None, pytest.approx(0.5))


def test_probe_from_python_gives_the_commands_report(invoke):
    data = Path(__file__).parent / "data"
    profiles, labels = str(data / "paper-gpv-llm-values.jsonl"), str(data / "synthetic-safety.jsonl")
    options = {"systems": ["vsm", "schwartz,vsm"], "splits": 2, "epochs": 20, "seed": 3}
    report = checks.probe(profiles, labels, **options).report
    argv = ["probe", profiles, "--labels", labels, "--systems", "vsm", "--systems",
            "schwartz,vsm", "--splits", "2", "--epochs", "20", "--seed", "3"]
    assert checks.as_json(report) == report_of(invoke(validate.main, argv))
    assert [r["systems"] for r in report["results"]] == [["vsm"], ["vsm", "schwartz"]]


def test_a_check_called_from_python_says_what_it_left_out_through_warn(tmp_path):
    upstream = b'{"id": "u", "_gpv_error": {"command": "gpv-score", "line": 1, "error": "boom"}}\n'
    (tmp_path / "scored.jsonl").write_bytes(upstream + jsonl(STABILITY))
    notes = []
    result = checks.stability(Records(str(tmp_path / "scored.jsonl")), by="author", warn=notes.append)
    assert result.report["sum"]["ss"] == 2 and notes == ["left out 1 error record from upstream"]
    # the report keys a value once; the names keep the order asked, a value asked twice twice
    result = checks.stability(pairs(STABILITY), by="author", values=["B", "A", "B"])
    assert result.names == ["B", "A", "B"] and list(result.report["values"]) == ["B", "A"]
    with pytest.raises(GpvError, match="^the input holds no record to check$"):
        checks.construct([])
    with pytest.raises(BadRecord, match=r"^line 2: field 'value' must be a string \(--value-field\)$"):
        checks.accuracy(pairs([ITEMS[0], {**ITEMS[1], "value": None}]))
