"""--shard K/N: an exact, stable partition of documents."""

import os
import subprocess
import sys

import orjson
import pytest

from gpvtools.commands import chunk
from gpvtools.streaming.errors import UsageError
from gpvtools.streaming.shard import shard_from_env, shard_of


def test_union_of_shards_is_the_whole_without_overlap(posts_path, invoke):
    whole = invoke(chunk.main, ["-t", "words", "-q", str(posts_path)]).stdout.splitlines()
    parts = [invoke(chunk.main, ["-t", "words", "-q", "--shard", f"{k}/4", str(posts_path)]).stdout.splitlines()
             for k in range(4)]
    assert sorted(sum(parts, [])) == sorted(whole)
    docs = [{orjson.loads(line)["doc_id"] for line in part} for part in parts]
    assert all(d for d in docs)  # 379 documents: every shard gets some
    assert sum(len(d) for d in docs) == len(set().union(*docs)) == 379


def test_later_stages_shard_by_doc_id_so_shards_line_up(posts_path, invoke):
    """Re-sharding chunks must keep each document's chunks together, in the same shard as before."""
    first = invoke(chunk.main, ["-t", "words", "-q", "--shard", "1/3", str(posts_path)]).stdout
    again = invoke(chunk.main, ["-t", "words", "-q", "--shard", "1/3", "--text-field", "text", "-n", "10000"],
                   first.encode()).stdout
    assert {orjson.loads(x)["doc_id"] for x in again.splitlines()} == \
        {orjson.loads(x)["doc_id"] for x in first.splitlines()}


def test_hash_is_independent_of_the_python_hash_seed():
    code = "from gpvtools.streaming.shard import shard_of; print([shard_of(f'doc{i}', 7) for i in range(50)])"
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "random")}
    assert len(runs) == 1
    assert runs.pop().strip() == str([shard_of(f"doc{i}", 7) for i in range(50)])
    # Pinned: shards written by earlier releases must line up with this one's.
    assert [shard_of(x, 4) for x in ("1026164-34", "a", "b", "c")] == [1, 3, 1, 3]
    assert shard_of("1026164-34", 1000003) == 864778
    assert shard_of(17, 5) == shard_of("17", 5)


def test_slurm_array_variables_give_the_default():
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "8"}
    assert shard_from_env(env) == (4, 8)
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"}) == (0, 2)
    assert shard_from_env({"SLURM_JOB_ID": "9"}) is None
    with pytest.raises(UsageError):
        shard_from_env({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"})


def test_slurm_default_is_used_and_announced(posts_path, invoke, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    from_env = invoke(chunk.main, ["-t", "words", str(posts_path)])
    assert from_env.stderr == "gpv-chunk: shard 2/4 from the SLURM array variables\n"
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    explicit = invoke(chunk.main, ["-t", "words", "--shard", "2/4", str(posts_path)])
    assert from_env.stdout == explicit.stdout != ""
