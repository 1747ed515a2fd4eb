"""gpv-validate probe: the linear-probing protocol of the GPV paper (§5.2, App. D.4), piece by piece and whole.

The end-to-end tests run on the paper's own GPV measurements of 17 LLMs (Tables 11-13, transcribed
in tests/data/paper-gpv-llm-values.jsonl) with SYNTHETIC safety scores (tests/data/synthetic-safety.jsonl,
and labels planted below): the paper does not print the SALAD-Bench scores it probes against. See
tests/data/README.md.
"""

from pathlib import Path

import numpy as np
import orjson
import pytest

from gpvtools.commands.validate import probe as probe_command
from gpvtools.method.validation import probe as P
from gpvtools.streaming.jsonl import Records

DATA = Path(__file__).parent / "data"
PAPER_VALUES = DATA / "paper-gpv-llm-values.jsonl"
SYNTHETIC_SAFETY = DATA / "synthetic-safety.jsonl"


def jsonl(records):
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def profile(subject, **scores):
    return {"id": subject, "subject": subject,
            "values": {v: {"score": x, "n": 0 if x is None else 3, "sd": None}
                       for v, x in scores.items()}}


# --- (1) the protocol's pieces, by hand -------------------------------------------------------

def test_normalise_maps_each_value_to_minus_one_one_and_missing_to_zero():
    nan = np.nan
    x = np.array([
        # v1        v2     constant  never measured
        [0.2,       nan,   0.7,      nan],   # subject A
        [0.6,      -0.5,   0.7,      nan],   # subject B
        [1.0,       0.5,   nan,      nan],   # subject C
    ])
    # v1: min 0.2, max 1.0, span 0.8 -> A 2*(0.0/0.8)-1 = -1; B 2*(0.4/0.8)-1 = 0; C 2*(0.8/0.8)-1 = 1.
    # v2: min -0.5, max 0.5 -> B -1, C 1; A unmeasured -> 0.
    # constant: one distinct score, no spread to scale -> 0 (C unmeasured -> 0 too).
    # never measured: 0 throughout.
    expected = np.array([
        [-1.0,  0.0, 0.0, 0.0],
        [0.0,  -1.0, 0.0, 0.0],
        [1.0,   1.0, 0.0, 0.0],
    ])
    np.testing.assert_allclose(P.normalise(x), expected, atol=1e-12)
    # --normalise none keeps the scores and still zeroes the gaps.
    np.testing.assert_allclose(P.normalise(x, "none"), np.nan_to_num(x, nan=0.0))


def test_feature_matrix_reads_scores_and_marks_unmeasured():
    profiles = {"a": {"Power": 0.5, "Tradition": None}, "b": {"Power": -0.25}}
    x = P.feature_matrix(profiles, ["a", "b"], ["Power", "Tradition"])
    assert x[0, 0] == 0.5 and x[1, 0] == -0.25
    assert np.isnan(x[0, 1]) and np.isnan(x[1, 1])


def test_pairs_are_every_unordered_pair_with_the_higher_scorer_as_target():
    y = np.array([3.0, 1.0, 2.0, 1.0])
    pairs = P.make_pairs([0, 1, 2, 3], y)
    # (0,1): 3 > 1, target 0 (a higher); (0,2): 3 > 2 -> 0; (0,3) -> 0; (1,2): 1 < 2 -> 1 (b higher);
    # (1,3): tie 1 = 1, left out; (2,3): 2 > 1 -> 0.
    assert pairs.tolist() == [[0, 1, 0], [0, 2, 0], [0, 3, 0], [1, 2, 1], [2, 3, 0]]
    # 9 subjects with distinct scores give the paper's 36 training pairs; 4 give 6.
    assert len(P.make_pairs(range(9), np.arange(9.0))) == 36
    assert len(P.make_pairs(range(4), np.arange(4.0))) == 6


def test_score_bins_are_equal_count_by_rank():
    y = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6])
    # ranks: 0.1 0.2 0.3 | 0.4 0.5 | 0.6 0.7 | 0.8 0.9 (9 in 4 bins: 3/2/2/2, the first takes the extra)
    assert P.score_bins(y, 4).tolist() == [3, 0, 1, 0, 2, 0, 3, 1, 2]


def test_stratified_split_9_4_4_covers_every_bin_and_no_subject_twice():
    y = np.random.default_rng(5).normal(size=17)
    bins = P.score_bins(y, 4)
    assert np.bincount(bins).tolist() == [5, 4, 4, 4]
    rng = np.random.default_rng(0)
    seen_tests = set()
    for _ in range(200):
        train, val, test = P.stratified_split(bins, (9, 4, 4), rng)
        assert (len(train), len(val), len(test)) == (9, 4, 4)
        assert sorted([*train, *val, *test]) == list(range(17))  # a partition: nobody twice, nobody lost
        for part in (train, val, test):
            assert set(bins[part]) == {0, 1, 2, 3}
        # with 5/4/4/4 bins, validation and test take exactly one subject of each bin
        assert sorted(bins[val]) == sorted(bins[test]) == [0, 1, 2, 3]
        seen_tests.add(tuple(test))
    assert len(seen_tests) > 100  # the draw is random, not one fixed split


def test_draw_splits_differ_and_repeat_for_a_seed():
    bins = P.score_bins(np.arange(17.0), 4)
    splits = P.draw_splits(bins, (9, 4, 4), 30, seed=0)
    tests = [tuple(test) for _, _, test in splits]
    assert len(set(tests)) >= 25  # 4**4 * 5 = 1280 possible test sets: repeats are rare
    again = P.draw_splits(bins, (9, 4, 4), 30, seed=0)
    assert all((a == b).all() for s, t in zip(splits, again) for a, b in zip(s, t))
    other = P.draw_splits(bins, (9, 4, 4), 30, seed=1)
    assert [tuple(test) for _, _, test in other] != tests


def test_split_sizes_and_their_errors():
    assert P.default_sizes(17) == (9, 4, 4)
    assert P.parse_split(None, 17) == (9, 4, 4)
    assert P.parse_split("11/3/3", 17) == (11, 3, 3)
    with pytest.raises(P.UsageError, match="adds up to 16, but 17 subjects"):
        P.parse_split("9/4/3", 17)
    with pytest.raises(P.UsageError, match="TRAIN/VAL/TEST"):
        P.parse_split("9-4-4", 17)


def test_systems_and_their_combinations_follow_table_9():
    combos = P.parse_systems(["all-combinations"])
    assert len(combos) == 15
    assert combos[:4] == [("nfcc",), ("vsm",), ("nfcc", "vsm"), ("schwartz",)]
    assert combos[-1] == ("nfcc", "vsm", "schwartz", "lvi")
    assert P.parse_systems(["vsm,Schwartz", "schwartz,vsm", "all"]) == [("vsm", "schwartz"),
                                                                     ("nfcc", "vsm", "schwartz", "lvi")]
    # Achievement is a PVQ40 value and an LVI value: one feature, not two.
    assert len(P.combination_values(("schwartz", "lvi"))) == 10 + 14 - 1
    with pytest.raises(P.UsageError, match="unknown value system 'hofstede'"):
        P.parse_systems(["hofstede"])


def test_batched_training_equals_training_each_split_alone():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(12, 3))
    y = x @ np.array([1.0, -0.5, 0.2]) + rng.normal(0, 0.3, 12)
    bins = P.score_bins(y, 3)
    splits = []
    for _ in range(3):
        train, val, _test = P.stratified_split(bins, (6, 3, 3), rng)
        splits.append((P.make_pairs(train, y), P.make_pairs(val, y)))
    together, _, _ = P.train_probes(x, splits, epochs=60, lr=0.01, seed=4)
    for k in range(3):
        alone, _, _ = P.train_probes(x, [splits[k]], epochs=60, lr=0.01, seed=4, ids=[k])
        np.testing.assert_allclose(together[k], alone[0], rtol=1e-9, atol=1e-12)
    # and the splits really are trained differently (else the comparison above proves little)
    assert not np.allclose(together[0], together[1])


# --- (2) a probe that must work, and a control that must not ---------------------------------

def separable_case(n=40, seed=3):
    rng = np.random.default_rng(seed)
    names = ["Power", "Tradition", "Hedonism"]
    x = rng.uniform(-1, 1, size=(n, 3))
    score = 2.0 * x[:, 0] - 1.0 * x[:, 1]  # Hedonism carries nothing
    profiles = {f"s{i}": dict(zip(names, map(float, x[i]))) for i in range(n)}
    labels = {f"s{i}": float(score[i]) for i in range(n)}
    return profiles, labels


def run_schwartz(profiles, labels, **kw):
    opts = {"n_splits": 10, "epochs": 200, "lr": 0.02, "seed": 0}
    opts.update(kw)
    return P.run_probe(profiles, labels, [("schwartz",)], **opts)["results"][0]


def test_probe_finds_a_linear_relation():
    profiles, labels = separable_case()
    result = run_schwartz(profiles, labels)
    assert result["values"] == 3  # the 7 Schwartz values no subject has are left out
    assert result["unmeasured"] == ["Self-Direction", "Universalism", "Achievement", "Security",
                                    "Stimulation", "Conformity", "Benevolence"]
    assert result["pairs"]["train"] == 22 * 21 // 2  # 40 subjects: 22/9/9
    assert result["accuracy"]["mean"] >= 0.9
    w = result["weights"]
    assert w["Power"] > 0.5 and w["Tradition"] < -0.25
    assert abs(w["Hedonism"]) < min(w["Power"], -w["Tradition"]) / 2


def test_probe_on_shuffled_labels_is_near_chance():
    profiles, labels = separable_case()
    subjects = list(labels)
    shuffled = dict(zip(subjects, np.random.default_rng(7).permutation([labels[s] for s in subjects])))
    result = run_schwartz(profiles, shuffled, n_splits=20)
    assert 0.35 <= result["accuracy"]["mean"] <= 0.65, result["accuracy"]


# Ye et al., GPV paper, Table 10: the mean probe weight per VSM value, planted below as the true relation.
PLANTED = {"Long Term Orientation": 0.80, "Indulgence": 0.36, "Uncertainty Avoidance": 0.19,
           "Masculinity": -0.46, "Power Distance": -0.81, "Individualism": -0.84}


def planted_case():
    """The paper's 17 LLMs with SYNTHETIC scores (tests/data/synthetic-safety.jsonl): Table 10's weights on
    their VSM values plus noise, as make_synthetic_safety.py writes them.

    The values are min-max scaled as the probe scales them. The noise is a seeded Gaussian draw made
    uncorrelated with the planted signal in the sample and rescaled to a sample sd of exactly 0.4. The raw
    draw (what the file held before) had sample sd 0.51 and correlation -0.45 with the signal and hid the
    relation from 9 training subjects: the probe scored 53.9% and least squares 57.8% on it, inside the
    range of shuffled labels (bench/probe.py, bench/RESULTS.md).
    """
    profiles = P.subject_scores(Records(PAPER_VALUES))
    subjects = list(profiles)
    values = P.combination_values(("vsm",))
    x = P.normalise(P.feature_matrix(profiles, subjects, values))
    labels = P.read_labels(str(SYNTHETIC_SAFETY))
    return subjects, values, x, np.array([labels[s] for s in subjects])


def test_the_synthetic_labels_are_the_planted_relation_plus_uncorrelated_noise():
    subjects, values, x, y = planted_case()
    signal = x @ np.array([PLANTED[v] for v in values])
    noise = y - signal
    assert abs(noise.std(ddof=1) - 0.4) < 1e-3 and abs(noise.mean()) < 1e-3  # rounded to 4 places on file
    assert abs(np.corrcoef(noise, signal)[0, 1]) < 1e-2


def required_accuracy(x, values, y):
    """(ceiling, bound): the planted weights' own mean accuracy on the test pairs of the command's 30 splits
    (run_probe draws them from 4 score bins with numpy's Generator(0)), and what a probe must reach.

    A probe learns 6 weights from the 36 pairs of 9 subjects, so it cannot be asked to match the weights
    that made the labels; it must win at least half of their margin over chance (50%).
    """
    parts = P.draw_splits(P.score_bins(y, 4), (9, 4, 4), 30, seed=0)
    w = np.array([PLANTED[v] for v in values])
    ceiling = P.held_out_accuracy(x, [w] * 30, [P.make_pairs(test, y) for _, _, test in parts]).mean()
    return ceiling, 0.5 + (ceiling - 0.5) / 2


def test_probe_recovers_the_relation_planted_in_the_paper_tables(invoke, tmp_path):
    subjects, values, x, y = planted_case()
    # the paper's protocol: the command's defaults (30 splits of 9/4/4, 1000 epochs, lr 0.001)
    result = invoke(probe_command, [str(PAPER_VALUES), "--labels", str(SYNTHETIC_SAFETY), "--systems", "vsm"])
    assert result.exit_code == 0, result.stderr
    r = orjson.loads(result.stdout)["results"][0]
    ceiling, bound = required_accuracy(x, values, y)
    assert ceiling > 0.9  # the noise leaves the planted relation visible on the test pairs
    assert r["accuracy"]["mean"] >= bound, (r["accuracy"], ceiling)
    assert {v: np.sign(m) for v, m in r["weights"].items()} == {v: np.sign(m) for v, m in PLANTED.items()}


def test_the_planted_relation_shuffled_across_subjects_falls_to_chance():
    """The control of the test above: the same features, protocol and bound, the labels permuted.

    One permutation would be a poor control: with 17 subjects and 6 features a random labelling often
    has a linear relation of its own that holds across the splits (over 40 permutations of these labels
    the probe's mean accuracy has sd 7.7 points, 95th percentile 62.3%, maximum 80.0%; bench/probe.py).
    So this takes 10, trained as one batch, each permutation's probes starting as run_probe's would,
    and allows one of them past the bound.
    """
    subjects, values, x, y = planted_case()
    _, bound = required_accuracy(x, values, y)
    shuffled = [y[np.random.default_rng(k).permutation(len(y))] for k in range(10)]
    pairs = [tuple(P.make_pairs(part, ys) for part in split) for ys in shuffled
             for split in P.draw_splits(P.score_bins(ys, 4), (9, 4, 4), 30, seed=0)]
    weights, _, _ = P.train_probes(x, [(train, val) for train, val, _ in pairs], ids=list(range(30)) * 10)
    acc = P.held_out_accuracy(x, weights, [test for _, _, test in pairs]).reshape(10, 30).mean(axis=1)
    assert 0.4 <= acc.mean() <= 0.6, acc
    assert (acc >= bound).sum() <= 1, (acc, bound)


# --- (3) the command, end to end on the paper's tables ----------------------------------------

def args(*extra):
    return [str(PAPER_VALUES), "--labels", str(SYNTHETIC_SAFETY), "--splits", "5", "--epochs", "200", *extra]


def test_command_report_on_the_paper_tables(invoke):
    result = invoke(probe_command, args("--systems", "all-combinations", "--table"))
    assert result.exit_code == 0, result.stderr
    report = orjson.loads(result.stdout)  # stdout is the JSON report and nothing else
    assert report["check"] == "probe"
    assert report["subjects"] == 17
    assert report["split"] == {"train": 9, "val": 4, "test": 4}
    assert (report["splits"], report["epochs"], report["lr"], report["seed"]) == (5, 200, 0.001, 0)
    assert len(report["results"]) == 15
    sizes = {"nfcc": 5, "vsm": 6, "schwartz": 10, "lvi": 14}
    for r in report["results"]:
        assert r["subjects"] == 17
        assert r["pairs"] == {"all": 136, "train": 36, "val": 6, "test": 6}
        assert len(r["accuracy"]["splits"]) == 5
        # the summary is the splits' own mean and sample sd (each split rounded to 6 places)
        splits = np.array(r["accuracy"]["splits"])
        assert abs(r["accuracy"]["mean"] - splits.mean()) < 1e-6
        assert abs(r["accuracy"]["sd"] - splits.std(ddof=1)) < 1e-5
        # a test accuracy is a count of 6 pairs
        assert all(abs(a * 6 - round(a * 6)) < 1e-4 for a in r["accuracy"]["splits"])
        n_values = sum(sizes[s] for s in r["systems"]) - ({"schwartz", "lvi"} <= set(r["systems"]))
        assert r["values"] == n_values == len(r["weights"])
        assert 1 <= r["best_epoch"]["min"] <= r["best_epoch"]["max"] <= 200
    # the best-validation checkpoint, not simply the last epoch, is what gets tested
    assert any(r["best_epoch"]["min"] < 200 for r in report["results"])
    vsm = report["results"][1]
    assert vsm["systems"] == ["vsm"]
    assert set(vsm["weights"]) == {"Individualism", "Power Distance", "Masculinity", "Indulgence",
                                   "Long Term Orientation", "Uncertainty Avoidance"}
    top = max(round(r["accuracy"]["mean"], 9) for r in report["results"])
    assert round(report["best"]["accuracy"]["mean"], 9) == top
    for r in report["results"]:
        if round(r["accuracy"]["mean"], 9) == top and r["systems"] != report["best"]["systems"]:
            assert r["systems"] in report["best"]["tied"]
    assert "nfcc+vsm+schwartz+lvi" in result.stderr and "mean weights" in result.stderr


def test_command_is_deterministic_for_a_seed(invoke):
    first = invoke(probe_command, args("--systems", "vsm", "--systems", "schwartz,vsm"))
    again = invoke(probe_command, args("--systems", "vsm", "--systems", "schwartz,vsm"))
    other = invoke(probe_command, args("--systems", "vsm", "--systems", "schwartz,vsm", "--seed", "1"))
    assert first.exit_code == again.exit_code == other.exit_code == 0
    assert first.stdout == again.stdout
    assert first.stdout != other.stdout
    assert [r["systems"] for r in orjson.loads(first.stdout)["results"]] == [["vsm"], ["vsm", "schwartz"]]


def test_labels_from_csv_with_other_column_names(invoke, tmp_path):
    rows = [orjson.loads(line) for line in SYNTHETIC_SAFETY.read_bytes().splitlines()]
    csv = tmp_path / "safety.csv"
    csv.write_text("model,safety\n" + "".join(f"{r['subject']},{r['score']}\n" for r in rows))
    from_csv = invoke(probe_command, args("--systems", "vsm", "--labels", str(csv), "--label-field", "safety",
                                    "--label-subject-field", "model"))
    from_jsonl = invoke(probe_command, args("--systems", "vsm"))
    assert from_csv.exit_code == 0, from_csv.stderr
    assert orjson.loads(from_csv.stdout)["results"] == orjson.loads(from_jsonl.stdout)["results"]


def test_subjects_without_label_or_profile_are_named(invoke, tmp_path):
    profiles = [profile(s, Power=0.1 * i, Tradition=-0.1 * i) for i, s in enumerate("abcdefgh")]
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(jsonl(profiles))
    labels = tmp_path / "labels.csv"
    labels.write_text("subject,score\n" + "".join(f"{s},{i}\n" for i, s in enumerate("abcdef")) + "g,\nz,3\n")
    result = invoke(probe_command, [str(inp), "--labels", str(labels), "--systems", "schwartz"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == ("gpv-validate probe: error: 2 subject(s) without a label: g, h; "
                             "1 labelled subject(s) without a value profile: z\n")


def test_bad_input_line_and_unknown_system(invoke, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(jsonl([profile("a", Power=0.1)]) + b'{"subject": "b", "values": {"Power": {"score": "high"}}}\n')
    result = invoke(probe_command, [str(inp), "--labels", str(SYNTHETIC_SAFETY), "--systems", "schwartz"])
    assert result.exit_code == 1
    assert result.stderr == ("gpv-validate probe: error: line 2: values.Power: the score must be a finite "
                             "number or null\n")
    result = invoke(probe_command, args("--systems", "vsm,hofstede"))
    assert result.exit_code == 2
    assert "unknown value system 'hofstede'" in result.stderr


def test_empty_input(invoke):
    result = invoke(probe_command, ["--labels", str(SYNTHETIC_SAFETY)], input=b"")
    assert result.exit_code == 1
    assert result.stderr == ("gpv-validate probe: error: no value profile in the input (expected aggregated "
                             "JSONL, one record per subject)\n")


def test_help(invoke):
    result = invoke(probe_command, ["--help"])
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: probe [OPTIONS] [INPUT]")
    for option in ("--labels", "--systems", "--splits", "--epochs", "--lr", "--seed", "--table"):
        assert option in result.stdout
    # the command spells out the library's default, so that --help need not import numpy
    assert probe_command.params[[p.name for p in probe_command.params].index("systems")].default == (
        P.ALL_COMBINATIONS,)


def test_the_library_knows_nothing_of_click():
    import subprocess
    import sys

    code = ("import sys, gpvtools.method.validation.probe; "
            "print(sorted(m for m in ('click', 'gpvtools.commands') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
