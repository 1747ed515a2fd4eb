"""bin/gpv-slurm: the pipeline as a SLURM array job of N shards plus a merge job, run here through a stand-in.

There is no SLURM here, so a stand-in `sbatch` (written below, put first on PATH) runs what the real one
would schedule: every task of an --array at once as local processes with SLURM_ARRAY_TASK_ID, _MIN, _MAX,
_COUNT, SLURM_ARRAY_JOB_ID and SLURM_JOB_ID set, and a job with --dependency=afterok:ID only if every task
of ID exited 0. Everything else (the commands, the sharding, the merge) is real.
"""

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from .conftest import ROOT, SHARED

LEXICON = str(SHARED / "data" / "dictionaries" / "schwartz-values-en.json")
SCRIPT = ROOT / "bin" / "gpv-slurm"

STANDIN = r'''#!PYTHON
"""Stand-in for sbatch (tests only): runs array tasks locally, at once, and honours afterok."""
import os, re, subprocess, sys
from pathlib import Path

state = Path(os.environ["SBATCH_STANDIN_STATE"])
state.mkdir(exist_ok=True)
args, opts = sys.argv[1:], {}
while args and args[0].startswith("--"):
    key, _, value = args.pop(0)[2:].partition("=")
    opts[key] = value
script, script_args = args[0], args[1:]
job = str(len(list(state.glob("job-*"))) + 100)
(state / f"job-{job}").write_text(" ".join(sys.argv[1:]))
for dep in filter(None, opts.get("dependency", "").removeprefix("afterok:").split(":")):
    if (state / f"status-{dep}").read_text() != "0":
        (state / f"status-{job}").write_text("dependency never satisfied")
        print(job)
        sys.exit(0)
lo, hi = (int(x) for x in opts["array"].split("-")) if "array" in opts else (None, None)
tasks = list(range(lo, hi + 1)) if lo is not None else [None]
procs = []
for task in tasks:
    env = dict(os.environ, SLURM_JOB_ID=job)
    if task is not None:
        env.update(SLURM_ARRAY_JOB_ID=job, SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_MIN=str(lo),
                   SLURM_ARRAY_TASK_MAX=str(hi), SLURM_ARRAY_TASK_COUNT=str(len(tasks)))
    log = opts.get("output", "slurm-%j.out").replace("%A", job).replace("%a", str(task)).replace("%j", job)
    procs.append(subprocess.Popen([script, *script_args], env=env, stdout=open(log, "wb"),
                                  stderr=subprocess.STDOUT))
codes = [p.wait() for p in procs]
(state / f"status-{job}").write_text("0" if not any(codes) else str(max(codes)))
print(job + (";standin" if "parsable" in opts else ""))
'''


@pytest.fixture
def slurm_env(tmp_path):
    bindir = tmp_path / "standin-bin"
    bindir.mkdir()
    sbatch = bindir / "sbatch"
    sbatch.write_text(STANDIN.replace("PYTHON", sys.executable, 1))
    sbatch.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPV_", "OPENAI_", "SLURM_"))}
    env.update(PATH=f"{bindir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
               SBATCH_STANDIN_STATE=str(tmp_path / "standin-state"), GPV_CACHE_DIR=str(tmp_path / "cache"))
    return env


def records(path):
    return [orjson.loads(line) for line in Path(path).read_bytes().splitlines()]


def test_sharded_array_job_and_merge_equal_a_single_machine_run(posts_path, tmp_path, slurm_env):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b"\n".join(posts_path.read_bytes().splitlines()[:60]) + b"\n")
    work = tmp_path / "run"
    stages = {"chunk": "-q -t words", "parse": "-q --backend sentences", "score": f"-q -m {LEXICON}"}
    argv = [str(SCRIPT), "-n", "3", "-d", str(work), "--by", "author", "--aggregate", "-q --keep gender",
            "--merge", "-q --keep gender", *(x for s, a in stages.items() for x in (f"--{s}", a)), str(corpus)]
    done = subprocess.run(argv, capture_output=True, env=slurm_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    array_job, merge_job = done.stdout.decode().split()
    state = tmp_path / "standin-state"
    assert (state / f"status-{array_job}").read_text() == "0", list((work / "logs").iterdir())
    assert (state / f"status-{merge_job}").read_text() == "0"
    assert "--array=0-2" in (state / f"job-{array_job}").read_text()
    assert f"--dependency=afterok:{array_job}" in (state / f"job-{merge_job}").read_text()

    # Every shard saw its own documents and only those: the union is the corpus, without overlap.
    shard_docs = [{r["doc_id"] for r in records(work / f"shard-{k}" / "chunks.jsonl")} for k in range(3)]
    assert all(shard_docs) and sum(map(len, shard_docs)) == len(set().union(*shard_docs)) == 60

    single = subprocess.run(
        f"gpv-chunk {stages['chunk']} {corpus} | gpv-parse {stages['parse']} | gpv-score {stages['score']} "
        f"| gpv-aggregate -q --by author --keep gender", shell=True, capture_output=True, env=slurm_env, check=True)
    whole = [orjson.loads(line) for line in single.stdout.splitlines()]
    merged = records(work / "aggregate.jsonl")
    assert [r["id"] for r in merged] == [r["id"] for r in whole] and len(whole) > 10
    identical = 0
    for m, w in zip(merged, whole):
        assert {k: v for k, v in m.items() if k != "values"} == {k: v for k, v in w.items() if k != "values"}
        assert m["values"].keys() == w["values"].keys()
        for name, a in m["values"].items():
            b = w["values"][name]
            assert a["n"] == b["n"]
            for field in ("score", "sd"):
                if a[field] is None or b[field] is None:
                    assert a[field] == b[field]
                else:
                    assert abs(a[field] - b[field]) <= 1e-12 * max(1.0, abs(b[field]))
            identical += a == b
    total = sum(len(m["values"]) for m in merged)
    print(f"\n{len(merged)} authors over 3 shards: {identical} of {total} value entries bit-identical to the "
          f"single run, the rest within 1e-12")

    # Submitted again (as after a failure), every task resumes and the result stands.
    again = subprocess.run(argv, capture_output=True, env=slurm_env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr.decode()
    assert records(work / "aggregate.jsonl") == merged


def test_a_failing_shard_holds_the_merge_back(tmp_path, slurm_env):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b'{"id": "a", "text": "I value honesty."}\n{"id": "b"}\n')  # b has no text: a bad line
    done = subprocess.run([str(SCRIPT), "-n", "2", "-d", str(tmp_path / "run"), "--chunk", "-q -t words",
                           "--parse", "-q --backend sentences", "--score", f"-q -m {LEXICON}", str(corpus)],
                          capture_output=True, env=slurm_env)
    assert done.returncode == 0, done.stderr.decode()
    array_job, merge_job = done.stdout.decode().split()
    state = tmp_path / "standin-state"
    assert (state / f"status-{array_job}").read_text() != "0"
    assert (state / f"status-{merge_job}").read_text() == "dependency never satisfied"
    assert not (tmp_path / "run" / "aggregate.jsonl").exists()


def test_usage_errors_and_dry_run(tmp_path, slurm_env):
    bad = subprocess.run([str(SCRIPT), "-n", "zero", str(tmp_path / "nope.jsonl")], capture_output=True,
                         env=slurm_env)
    assert bad.returncode == 2 and bad.stderr.startswith(b"gpv-slurm: error: ")
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b"")
    dry = subprocess.run([str(SCRIPT), "-n", "8", "-d", str(tmp_path / "r"), "--sbatch", "--partition gpu",
                          "--dry-run", str(corpus)], capture_output=True, env=slurm_env)
    assert dry.returncode == 0, dry.stderr.decode()
    assert b"--array=0-7" in dry.stdout and b"--partition gpu" in dry.stdout
    assert not (tmp_path / "standin-state").exists()  # nothing was submitted
    helptext = subprocess.run([str(SCRIPT), "--help"], capture_output=True, env=slurm_env)
    assert helptext.returncode == 0 and helptext.stdout.startswith(b"Usage: gpv-slurm")
