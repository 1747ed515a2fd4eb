"""gpv-train's library call, without click: the data are checked and split before a model is loaded."""

import orjson
import pytest

from gpvtools.method.training.pipeline import TrainingSettings, fine_tune
from gpvtools.method.training.trainer import TrainConfig
from gpvtools.streaming.errors import GpvError, UsageError


@pytest.fixture
def jsonl_data(tmp_path):
    rows = [("Helping a stranger", "Kindness", "relevance", "yes"), ("Helping a stranger", "Wealth", "relevance", "no"),
            ("Lying to a friend", "Honesty", "valence", "oppose"), ("Resting", "Well-being", "valence", "support")]
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"".join(orjson.dumps(dict(zip(("text", "value", "task", "label"), r))) + b"\n" for r in rows))
    return path


def test_bad_data_raises_before_anything_is_written(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("questionnaire,item,value,agreement\n")
    with pytest.raises(GpvError, match="^the training data holds no example$"):
        fine_tune([path], tmp_path / "out", TrainingSettings(holdout=0))
    assert not (tmp_path / "out").exists()


def test_the_split_is_written_and_noted_before_the_model_is_loaded(tmp_path, jsonl_data):
    (tmp_path / "held.txt").write_text("Honesty\n\nWealth\n")
    notes = []
    settings = TrainingSettings(config=TrainConfig(seed=7), holdout_values=f"@{tmp_path / 'held.txt'}",
                                base=str(tmp_path / "nope.gguf"))
    with pytest.raises(UsageError, match="does not exist"):
        fine_tune([jsonl_data], tmp_path / "out", settings, say=notes.append)
    split = orjson.loads((tmp_path / "out" / "split.json").read_bytes())
    assert split["heldout_values"] == ["Honesty", "Wealth"] and split["seed"] == 7
    assert split["data"] == [str(jsonl_data)] and split["command"] is None
    assert (split["train_examples"], split["heldout_examples"]) == (2, 2)
    assert len((tmp_path / "out" / "heldout.jsonl").read_bytes().splitlines()) == 2
    assert notes == [f"2 training examples; 2 values held out (2 held-out examples in "
                     f"{tmp_path / 'out' / 'heldout.jsonl'})"]
    assert not (tmp_path / "out" / "checkpoint").exists()


def test_given_held_out_values_must_be_in_the_data(tmp_path, jsonl_data):
    with pytest.raises(GpvError, match="^held-out value\\(s\\) not in the data: Joy$"):
        fine_tune([jsonl_data], tmp_path / "out", TrainingSettings(holdout_values="Kindness, Joy"))
