"""bin/gpv-slurm on a real one-node SLURM cluster (tests/slurmcluster.py: Debian's slurmctld, slurmd and
munge, started for this module and stopped after it).

What real SLURM does and a stand-in would not: sbatch runs a copy of the job script from slurmd's spool
directory (so the script cannot find its settings beside $0), a resubmitted subset of an array has its
own SLURM_ARRAY_TASK_MIN and _COUNT, a merge job whose array failed waits forever with the reason
DependencyNeverSatisfied, and throttles and time limits are the controller's. Job states are read from
the controller (scontrol), never inferred. The pipeline runs the real commands; parse and score use the
offline backends (sentences, dictionary) so that the test measures the scheduling, not a model.
"""

import subprocess

import orjson
import pytest

from .conftest import ROOT, SHARED, assert_same_profiles, outside_env, read_jsonl as records
from .slurmcluster import Cluster, missing

LEXICON = str(SHARED / "data" / "dictionaries" / "schwartz-values-en.json")
SCRIPT = ROOT / "bin" / "gpv-slurm"
STAGES = {"chunk": "-q -t words", "parse": "-q --backend sentences", "score": f"-q -m {LEXICON}"}
STAGE_ARGS = [x for stage, a in STAGES.items() for x in (f"--{stage}", a)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = missing()
    if why:
        pytest.skip(why)
    c = Cluster(tmp_path_factory.mktemp("slurm")).start()
    yield c
    c.stop()


@pytest.fixture
def slurm_env(tmp_path, cluster):
    return outside_env(SLURM_CONF=cluster.env["SLURM_CONF"], GPV_CACHE_DIR=str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def corpus60(posts_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_bytes(b"\n".join(posts_path.read_bytes().splitlines()[:60]) + b"\n")
    return path


@pytest.fixture(scope="module")
def single_run(corpus60):
    """The same pipeline on one machine, in one shell pipe: what the shards and the merge must equal."""
    done = subprocess.run(f"gpv-chunk {STAGES['chunk']} {corpus60} | gpv-parse {STAGES['parse']} | "
                          f"gpv-score {STAGES['score']} | gpv-aggregate -q --by author --keep gender",
                          shell=True, capture_output=True, env=outside_env(), check=True)
    return [orjson.loads(line) for line in done.stdout.splitlines()]


def submit(argv, env, cwd):
    done = subprocess.run([str(SCRIPT), *argv], capture_output=True, env=env, cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    array_job, merge_job = done.stdout.decode().split()
    return array_job, merge_job, done.stderr.decode()


def dependency_never_satisfied(jobs):
    return jobs[0]["JobState"] == "PENDING" and jobs[0]["Reason"] == "DependencyNeverSatisfied"


@pytest.mark.slow
def test_sharded_array_job_and_merge_equal_a_single_machine_run(cluster, corpus60, single_run, tmp_path, slurm_env):
    work = tmp_path / "run"
    argv = ["-n", "3", "-d", str(work), "--by", "author", "--aggregate", "-q --keep gender", "--merge",
            "-q --keep gender", "--throttle", "2", "--time", "10", "--cpus-per-task", "1", *STAGE_ARGS,
            str(corpus60)]
    array_job, merge_job, _ = submit(argv, slurm_env, tmp_path)
    tasks = cluster.wait(array_job)
    assert {j["ArrayTaskId"]: j["JobState"] for j in tasks} == dict.fromkeys("012", "COMPLETED"), \
        [p.read_text() for p in (work / "logs").iterdir()]
    # The throttle and the per-task limits are what the controller holds for the job.
    assert {j["ArrayTaskThrottle"] for j in tasks} == {"2"}
    assert {j["TimeLimit"] for j in tasks} == {"00:10:00"} and {j["NumCPUs"] for j in tasks} == {"1"}
    merge = cluster.wait(merge_job)
    assert merge[0]["JobState"] == "COMPLETED"

    # Every shard saw its own documents and only those: the union is the corpus, without overlap.
    shard_docs = [{r["doc_id"] for r in records(work / f"shard-{k}" / "chunks.jsonl")} for k in range(3)]
    assert all(shard_docs) and sum(map(len, shard_docs)) == len(set().union(*shard_docs)) == 60

    merged = records(work / "aggregate.jsonl")
    assert_same_profiles(merged, single_run)
    pairs = [(entry, w["values"][name]) for m, w in zip(merged, single_run) for name, entry in m["values"].items()]
    identical, total = sum(a == b for a, b in pairs), len(pairs)
    print(f"\n{len(merged)} authors over 3 shards on SLURM: {identical} of {total} value entries bit-identical "
          f"to the single run, the rest within 1e-12")


@pytest.mark.slow
def test_a_failed_shard_holds_the_merge_back_and_resume_redoes_only_that_shard(cluster, corpus60, single_run,
                                                                               tmp_path, slurm_env):
    work = tmp_path / "run"
    argv = ["-n", "3", "-d", str(work), "--by", "author", "--aggregate", "-q --keep gender", "--merge",
            "-q --keep gender", *STAGE_ARGS, str(corpus60)]
    # The fault: shard 1's score output cannot be written (a directory stands where the file goes).
    (work / "shard-1" / "scored.jsonl").mkdir(parents=True)
    array_job, merge_job, _ = submit(argv, slurm_env, tmp_path)
    cluster.wait(array_job)
    assert cluster.states(array_job) == {"0": "COMPLETED", "1": "FAILED", "2": "COMPLETED"}
    failed = [j for j in cluster.jobs(array_job) if j["ArrayTaskId"] == "1"][0]
    assert failed["ExitCode"] != "0:0"
    cluster.wait(merge_job, until=dependency_never_satisfied, timeout=60)
    assert not (work / "aggregate.jsonl").exists()
    log = (work / "logs" / f"task-{array_job}_1.log").read_text()
    assert "gpv-score: error:" in log and "scored.jsonl" in log

    # What finished is left alone by the resubmission: shards 0 and 2 entirely, shard 1's chunks and parses.
    kept = {p: p.stat().st_mtime_ns for k in (0, 2) for p in (work / f"shard-{k}").iterdir()}
    kept.update({work / "shard-1" / n: (work / "shard-1" / n).stat().st_mtime_ns
                 for n in ("chunks.jsonl", "perceptions.jsonl")})
    (work / "shard-1" / "scored.jsonl").rmdir()
    again_array, again_merge, note = submit(["--resume", *argv], slurm_env, tmp_path)
    assert f"cancelled the earlier merge job {merge_job}" in note
    assert cluster.states(merge_job) == {None: "CANCELLED"}
    cluster.wait(again_array)
    assert cluster.states(again_array) == {"1": "COMPLETED"}  # only shard 1 ran
    assert cluster.wait(again_merge)[0]["JobState"] == "COMPLETED"
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert [line.split()[0] for line in (work / "jobs").read_text().splitlines()] == ["array", "merge"] * 2
    assert_same_profiles(records(work / "aggregate.jsonl"), single_run)

    # Once every shard has its aggregate, --resume submits the merge alone.
    alone, merge_only, note = submit(["--resume", *argv], slurm_env, tmp_path)
    assert alone == "-" and "every shard has finished" in note
    assert cluster.wait(merge_only)[0]["JobState"] == "COMPLETED"


@pytest.mark.slow
def test_resume_refuses_while_the_earlier_array_still_runs(cluster, tmp_path, slurm_env):
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b'{"id": "a", "text": "I value honesty."}\n')
    work = tmp_path / "run"
    argv = ["-n", "2", "-d", str(work), "--sbatch", "--hold", *STAGE_ARGS, str(corpus)]  # held: stays pending
    array_job, merge_job, _ = submit(argv, slurm_env, tmp_path)
    try:
        assert set(cluster.states(array_job).values()) == {"PENDING"}
        again = subprocess.run([str(SCRIPT), "--resume", *argv], capture_output=True, env=slurm_env, timeout=120)
        assert again.returncode == 2
        assert again.stderr.decode().startswith(f"gpv-slurm: error: --resume: array job {array_job} still has ")
        assert "pending or running" in again.stderr.decode()
    finally:
        cluster.client("scancel", array_job, merge_job)


def test_usage_errors_and_dry_run(tmp_path):
    env = outside_env(PATH="/usr/bin:/bin")  # no sbatch is needed, and none may be called
    bad = subprocess.run([str(SCRIPT), "-n", "zero", str(tmp_path / "nope.jsonl")], capture_output=True, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith(b"gpv-slurm: error: ")
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b"")
    for argv, message in [(["--throttle", "0"], b"--throttle must be at least 1"),
                          (["--throttle", "x"], b"--throttle must be a positive integer, not 'x'"),
                          (["--resume", "-d", str(tmp_path / "never")], b"holds no earlier submission")]:
        bad = subprocess.run([str(SCRIPT), *argv, str(corpus)], capture_output=True, env=env)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    dry = subprocess.run([str(SCRIPT), "-n", "8", "-d", str(tmp_path / "r"), "--sbatch", "--partition gpu",
                          "--throttle", "3", "--mem", "4G", "--dry-run", str(corpus)], capture_output=True, env=env)
    assert dry.returncode == 0, dry.stderr.decode()
    array, merge = dry.stdout.decode().splitlines()
    assert "--array=0-7%3" in array and "--mem=4G" in array and "--partition gpu" in array
    assert "--dependency=afterok:JOBID" in merge and "--mem" not in merge and "--partition gpu" in merge
    assert not (tmp_path / "r" / "jobs").exists()  # nothing was submitted
    resume = subprocess.run([str(SCRIPT), "-n", "4", "-d", str(tmp_path / "r"), "--resume", str(corpus)],
                            capture_output=True, env=env)
    assert resume.returncode == 2 and b"submitted with --shards 8, not 4" in resume.stderr
    helptext = subprocess.run([str(SCRIPT), "--help"], capture_output=True, env=env)
    assert helptext.returncode == 0 and helptext.stdout.startswith(b"Usage: gpv-slurm")
