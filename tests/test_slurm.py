"""gpv-slurm on a real one-node SLURM cluster (tests/slurmcluster.py: Debian's slurmctld, slurmd and
munge, started for this module and stopped after it).

What real SLURM does and a stand-in would not: sbatch runs a copy of the job script from slurmd's spool
directory (so the script cannot find its settings beside $0), a resubmitted subset of an array has its
own SLURM_ARRAY_TASK_MIN and _COUNT, a merge job whose array failed waits forever with the reason
DependencyNeverSatisfied, and throttles and time limits are the controller's. Job states are read from
the controller (scontrol), never inferred. The pipeline runs the real commands; parse and score use the
offline backends (sentences, dictionary) so that the test measures the scheduling, not a model.

The one stand-in: a `squeue` that exits 1, for a scheduler that cannot be reached (the real one here
always can). Without a cluster (or root) the cluster tests skip; the dry-run, usage and job-script
tests need none.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys

import orjson
import pytest

from gpvtools.runtimes.slurm import MERGE_SCRIPT, TASK_SCRIPT

from .conftest import ROOT, SHARED, assert_same_profiles, outside_env, require
from .conftest import read_jsonl as records
from .slurmcluster import Cluster, missing

LEXICON = str(SHARED / "data" / "dictionaries" / "schwartz-values-en.json")
SCRIPT = ROOT / "bin" / "gpv-slurm"  # the shim: python3 -m gpvtools.commands.slurm, python3 being this venv's
MODULE = [sys.executable, "-m", "gpvtools.commands.slurm"]
BARE_PATH = "/usr/bin:/bin"  # sbatch and bash, but no gpv-* command: the jobs must not need one
STAGES = {"chunk": "-q -t words", "parse": "-q --backend sentences", "score": f"-q -m {LEXICON}"}
STAGE_ARGS = [x for stage, a in STAGES.items() for x in (f"--{stage}", a)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require("slurm", missing())
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


def submit(argv, env, cwd, command=(str(SCRIPT),)):
    done = subprocess.run([*command, *argv], capture_output=True, env=env, cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    array_job, merge_job = done.stdout.decode().split()
    return array_job, merge_job, done.stderr.decode()


def dependency_never_satisfied(jobs):
    return jobs[0]["JobState"] == "PENDING" and jobs[0]["Reason"] == "DependencyNeverSatisfied"


@pytest.mark.slow
def test_sharded_array_job_and_merge_equal_a_single_machine_run(cluster, corpus60, single_run, tmp_path, slurm_env):
    work = tmp_path / "run"
    # The word list under a path with spaces and a quote: gpv-score must get it as one argument, or fail.
    lexicon = tmp_path / "value lexicons" / "Jane's words" / "schwartz-values-en.json"
    lexicon.parent.mkdir(parents=True)
    shutil.copy(LEXICON, lexicon)
    stages = {**STAGES, "score": f"-q -m {shlex.quote(str(lexicon))}"}
    argv = ["-n", "3", "-d", str(work), "--by", "author", "--aggregate", "-q --keep gender", "--merge",
            "-q --keep gender", "--throttle", "2", "--time", "10", "--cpus-per-task", "1",
            *[x for stage, a in stages.items() for x in (f"--{stage}", a)], str(corpus60)]
    # Submitted, and so run, with a PATH that has no gpv-* command: the stages run with this Python.
    array_job, merge_job, _ = submit(argv, {**slurm_env, "PATH": BARE_PATH}, tmp_path, MODULE)
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
def test_resume_refuses_while_the_earlier_array_still_runs_or_squeue_fails(cluster, tmp_path, slurm_env):
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b'{"id": "a", "text": "I value honesty."}\n')
    work = tmp_path / "run"
    argv = ["-n", "2", "-d", str(work), "--sbatch", "--hold", *STAGE_ARGS, str(corpus)]  # held: stays pending
    array_job, merge_job, _ = submit(argv, slurm_env, tmp_path)

    def queued():
        return sorted(cluster.client("squeue", "--noheader", "--array", "--format=%i").split())

    try:
        assert set(cluster.states(array_job).values()) == {"PENDING"}
        before, jobs = queued(), (work / "jobs").read_text()
        assert len(before) == 3  # two held tasks and the merge job

        # A scheduler that cannot answer (a stand-in squeue that fails as one does when the controller is
        # down) is an error with its message, never "nothing running": nothing is cancelled or submitted.
        fake = tmp_path / "broken-scheduler"
        fake.mkdir()
        (fake / "squeue").write_text("#!/bin/sh\necho 'squeue: error: slurm_load_jobs error: Unable to contact "
                                     "slurm controller (connect failure)' >&2\nexit 1\n")
        (fake / "squeue").chmod(0o755)
        broken = subprocess.run([str(SCRIPT), "--resume", *argv], capture_output=True, timeout=120,
                                env={**slurm_env, "PATH": f"{fake}:{slurm_env['PATH']}"})
        assert broken.returncode == 1, broken.stderr.decode()
        err = broken.stderr.decode()
        assert err.startswith("gpv-slurm: error: squeue ") and "failed with exit status 1" in err, err
        assert "Unable to contact slurm controller" in err and broken.stdout == b""
        assert queued() == before and (work / "jobs").read_text() == jobs

        again = subprocess.run([str(SCRIPT), "--resume", *argv], capture_output=True, env=slurm_env, timeout=120)
        assert again.returncode == 2
        assert again.stderr.decode().startswith(f"gpv-slurm: error: --resume: array job {array_job} still has "
                                                "2 task(s) pending or running")
        assert queued() == before
    finally:
        cluster.client("scancel", array_job, merge_job)


@pytest.mark.slow
def test_resume_after_the_controller_forgot_the_earlier_jobs_submits(cluster, tmp_path, slurm_env):
    """squeue -j fails for a job the controller no longer knows (MinJobAge after it ended), as for a broken
    controller; --resume asks for the user's jobs instead, so a long-gone submission is no error."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b'{"id": "a", "text": "I value honesty."}\n')
    work = tmp_path / "run"
    argv = ["-n", "2", "-d", str(work), "--sbatch", "--hold", *STAGE_ARGS, str(corpus)]
    assert subprocess.run([str(SCRIPT), "--dry-run", *argv], capture_output=True, env=slurm_env).returncode == 0
    (work / "jobs").write_text("array 99990 0-1\nmerge 99991\n")
    assert cluster.client("squeue", "-h", "-j", "99990", check=False) == ""  # unknown to the controller
    array_job, merge_job, note = submit(["--resume", *argv], slurm_env, tmp_path)
    try:
        assert "cancelled" not in note and set(cluster.states(array_job).values()) == {"PENDING"}
        assert (work / "jobs").read_text().splitlines()[2:] == [f"array {array_job} 0-1", f"merge {merge_job}"]
    finally:
        cluster.client("scancel", array_job, merge_job)


@pytest.mark.slow
def test_a_failing_sbatch_is_an_error_with_its_message(cluster, tmp_path, slurm_env):
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b'{"id": "a", "text": "I value honesty."}\n')
    work = tmp_path / "run"
    done = subprocess.run([str(SCRIPT), "-n", "2", "-d", str(work), "--sbatch", "--partition nosuch", str(corpus)],
                          capture_output=True, env=slurm_env, timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 1 and done.stdout == b"", err
    assert err.startswith("gpv-slurm: error: sbatch --parsable --job-name=gpv --array=0-1 ") and "nosuch" in err
    assert "invalid partition" in err.lower(), err
    assert not (work / "jobs").exists()


def bare_env(tmp_path):
    """No scheduler command at all: python3 (for the shim) is this venv's, and nothing else is on PATH."""
    return outside_env(PATH=str(os.path.dirname(sys.executable)), HOME=str(tmp_path))


def bash_arrays(settings, *names):
    """The arrays of settings.sh as bash itself reads them: {name: [element, ...]}."""
    arrays = {}
    for name in names:
        script = f'source "$1"; printf "%s\\0" "${{#{name}[@]}}" ${{{name}[@]+"${{{name}[@]}}"}}'
        out = subprocess.run(["bash", "-u", "-c", script, "bash", str(settings)], capture_output=True,
                             check=True).stdout.split(b"\0")[:-1]
        assert int(out[0]) == len(out) - 1
        arrays[name] = [x.decode() for x in out[1:]]
    return arrays


def test_usage_errors(tmp_path):
    env = bare_env(tmp_path)
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b"")
    for argv, message in [(["-n", "zero", str(corpus)], b"Invalid value for '-n' / '--shards': 'zero'"),
                          (["-n", "0", str(corpus)], b"0 is not in the range x>=1"),
                          ([str(tmp_path / "nope.jsonl")], b"nope.jsonl' does not exist"),
                          (["--throttle", "0", str(corpus)], b"Invalid value for '--throttle': 0 is not in the range"),
                          (["--throttle", "x", str(corpus)], b"Invalid value for '--throttle': 'x'"),
                          (["--parse", '--subject "Jane', str(corpus)],
                           b"gpv-slurm: error: --parse '--subject \"Jane': no closing quotation\n"),
                          (["--resume", "-d", str(tmp_path / "never"), str(corpus)],
                           b"gpv-slurm: error: --resume: " + str(tmp_path / "never").encode()
                           + b" holds no earlier submission (no settings.sh)\n")]:
        bad = subprocess.run([str(SCRIPT), *argv], capture_output=True, env=env)
        assert bad.returncode == 2 and message in bad.stderr and bad.stdout == b"", (argv, bad.stderr)
    helptext = subprocess.run([str(SCRIPT), "--help"], capture_output=True, env=env)
    assert helptext.returncode == 0 and helptext.stdout.startswith(b"Usage: gpv-slurm [OPTIONS] CORPUS.jsonl")
    # Without --dry-run the first scheduler command is sbatch, which is not there: an error naming it.
    none = subprocess.run([str(SCRIPT), "-d", str(tmp_path / "r"), str(corpus)], capture_output=True, env=env)
    assert (none.returncode, none.stderr) == (1, b"gpv-slurm: error: sbatch could not be run: No such file or "
                                                 b"directory\n")


def test_dry_run_passes_arguments_with_spaces_intact(tmp_path):
    env = bare_env(tmp_path)  # no sbatch or squeue: a dry run that called one would fail
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b"")
    work = tmp_path / "r"
    parse = """--subject "Jane O'Doe" -j 2"""
    score = """-m '/data/value lexicons/$(touch PWNED) `x`.json'"""
    dry = subprocess.run([str(SCRIPT), "-n", "8", "-d", str(work), "--sbatch", '--partition gpu --comment "two words"',
                          "--parse", parse, "--score", score, "--throttle", "3", "--mem", "4G", "--dry-run",
                          str(corpus)], capture_output=True, env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr.decode()
    array, merge = [shlex.split(line) for line in dry.stdout.decode().splitlines()]
    assert array[:2] == ["sbatch", "--parsable"] and "--array=0-7%3" in array and "--mem=4G" in array
    assert array[-5:] == ["--partition", "gpu", "--comment", "two words", str(work / "task.sh")]
    assert merge[:3] == ["sbatch", "--parsable", "--dependency=afterok:JOBID"] and "--mem=4G" not in merge
    assert merge[-5:] == ["--partition", "gpu", "--comment", "two words", str(work / "merge.sh")]
    assert not (work / "jobs").exists()  # nothing was submitted

    settings = work / "settings.sh"
    assert settings.stat().st_mode & 0o777 == 0o600  # an argument may hold a secret
    assert bash_arrays(settings, "chunk_args", "parse_args", "score_args", "merge_args") == {
        "chunk_args": [], "parse_args": ["--subject", "Jane O'Doe", "-j", "2"],
        "score_args": ["-m", "/data/value lexicons/$(touch PWNED) `x`.json"], "merge_args": []}
    assert not list(tmp_path.rglob("PWNED"))
    python = subprocess.run(["bash", "-c", 'source "$1"; printf %s "$python"', "bash", str(settings)],
                            capture_output=True, check=True).stdout.decode()
    assert python == shutil.which("python3", path=env["PATH"])  # the one that ran gpv-slurm, by the shim

    resume = subprocess.run([str(SCRIPT), "-n", "4", "-d", str(work), "--resume", str(corpus)],
                            capture_output=True, env=env)
    assert resume.returncode == 2 and b"submitted with --shards 8, not 4" in resume.stderr
    # A directory that the bash gpv-slurm submitted (settings by declare -p) resumes too.
    settings.write_text('declare -- corpus="/c.jsonl"\ndeclare -- shards="6"\ndeclare -a chunk_args=()\n')
    resume = subprocess.run([str(SCRIPT), "-n", "4", "-d", str(work), "--resume", str(corpus)],
                            capture_output=True, env=env)
    assert resume.returncode == 2 and b"submitted with --shards 6, not 4" in resume.stderr


def test_job_scripts_expand_empty_arrays_as_bash_4_2_allows(corpus60, tmp_path):
    """Bash before 4.4 (CentOS 7: 4.2) aborts on an empty "${a[@]}" under set -u. No bash 4.2 here, so: every
    array in the job scripts is expanded with the guard, the guard itself behaves, and the scripts run under
    set -u with empty arrays (no --aggregate, no --merge) through a whole pipeline and its merge."""
    for script in (TASK_SCRIPT, MERGE_SCRIPT):
        assert "set -euo pipefail" in script
        bare = re.findall(r'(?<!\[@\]\+)"\$\{(\w+)\[@\]\}"', script)
        assert bare == [], f"unguarded array expansions: {bare}"
        assert len(re.findall(r'\$\{(\w+)\[@\]\+"\$\{\1\[@\]\}"\}', script)) >= 2
    guard = 'set -u; set -- ${a[@]+"${a[@]}"}; printf "%s|" "$#" "$@"'
    for setup, want in [("a=()", "0|"), ("a=('x y' '' '*')", "3|x y||*|")]:
        out = subprocess.run(["bash", "-c", f"{setup}; {guard}"], capture_output=True, text=True, check=True)
        assert out.stdout == want

    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b"\n".join(corpus60.read_bytes().splitlines()[:8]) + b"\n")
    work = tmp_path / "r"
    env = bare_env(tmp_path)
    dry = subprocess.run([str(SCRIPT), "-n", "2", "-d", str(work), *STAGE_ARGS, "--dry-run", str(corpus)],
                         capture_output=True, env=env)
    assert dry.returncode == 0, dry.stderr.decode()
    assert bash_arrays(work / "settings.sh", "aggregate_args", "merge_args") == {"aggregate_args": [], "merge_args": []}
    # The jobs' environment: no gpv-* command on PATH, nothing from this venv.
    job_env = outside_env(PATH=BARE_PATH, HOME=str(tmp_path))
    for k in (0, 1):
        task = subprocess.run(["bash", "-u", str(work / "task.sh")], capture_output=True, timeout=300,
                              env={**job_env, "SLURM_ARRAY_TASK_ID": str(k)}, cwd=tmp_path)
        assert task.returncode == 0, task.stderr.decode()
    merge = subprocess.run(["bash", "-u", str(work / "merge.sh")], capture_output=True, timeout=120, env=job_env,
                           cwd=tmp_path)
    assert merge.returncode == 0, merge.stderr.decode()
    shards = [records(work / f"shard-{k}" / "aggregate.jsonl") for k in (0, 1)]
    merged = records(work / "aggregate.jsonl")
    assert all(shards) and sorted(r["id"] for r in merged) == sorted(r["id"] for s in shards for r in s)
    assert len(merged) == 8


def test_the_man_page_renders_cleanly():
    # Not a skip: .ci/run installs groff, and a check that silently does not run checks nothing.
    assert shutil.which("groff"), "groff is not installed (Debian: apt-get install groff-base)"
    page = ROOT / "man" / "gpv-slurm.1"
    done = subprocess.run(["groff", "-man", "-ww", "-z", str(page)], capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
