"""The pipeline on SLURM: the job scripts, the settings they read, and the scheduler's commands.

gpv-slurm's work without click. A submission writes, into its directory DIR,

    settings.sh   what the job scripts source: bash variables and arrays, each value quoted by shlex
    task.sh       one array task: chunk | parse | score | aggregate over shard K/N, as files, --resume
    merge.sh      after every task succeeded: gpv-aggregate --merge of the shards' aggregates
    jobs          one line per job submitted: "array ID INDEXES" or "merge ID"

and submits an array job and a merge job that depends on it. The stages run with the interpreter that
submitted them (`PYTHON -m gpvtools.commands.chunk`), so the job's PATH does not matter.

Every scheduler command goes through `scheduler()`: one that fails, or cannot be run, is a SchedulerError
naming the command and its message, never read as "no jobs".
"""

import os
import pwd
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..streaming.atomic import write_atomic
from ..streaming.errors import GpvError, UsageError

STAGES = ("chunk", "parse", "score", "aggregate", "merge")
SETTINGS, TASK, MERGE, JOBS = "settings.sh", "task.sh", "merge.sh", "jobs"
# settings.sh as this module writes it (shards=8) and as the bash script before it did (declare -- shards="8").
SHARDS_LINE = re.compile(r'^(?:declare -- )?shards="?(\d+)"?\s*$', re.M)


class SchedulerError(GpvError):
    """A scheduler command (sbatch, squeue, scancel) failed or could not be run (exit status 1)."""


def scheduler(argv):
    """Run scheduler command ARGV; its stdout. A failure is a SchedulerError with the command and its stderr."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace")
    except OSError as e:
        raise SchedulerError(f"{argv[0]} could not be run: {e.strerror or e}") from None
    if done.returncode:
        why = (done.stderr.strip() or done.stdout.strip() or "it printed nothing").replace("\n", " | ")
        raise SchedulerError(f"{shlex.join(argv)} failed with exit status {done.returncode}: {why}")
    return done.stdout


def split_args(option, text):
    """A stage's extra arguments as the shell would split TEXT: quotes group, backslashes escape."""
    try:
        return shlex.split(text or "")
    except ValueError as e:  # "No closing quotation", "No escaped character"
        raise UsageError(f"{option} {text!r}: {str(e)[:1].lower()}{str(e)[1:]}") from None


@dataclass
class Submission:
    """What gpv-slurm submits. ARGS: each stage's extra arguments (STAGES), already split."""

    corpus: Path
    dir: Path
    shards: int
    by: str = "doc_id"
    args: dict = field(default_factory=dict)
    sbatch: list = field(default_factory=list)
    task: list = field(default_factory=list)  # sbatch options of the array tasks alone (--mem=4G, …)
    throttle: int | None = None
    python: str = sys.executable

    def __post_init__(self):
        self.corpus, self.dir = Path(os.path.abspath(self.corpus)), Path(os.path.abspath(self.dir))
        self.args = {stage: list(self.args.get(stage) or []) for stage in STAGES}

    # --- the files the jobs read ----------------------------------------------------------------------------

    def settings(self):
        """settings.sh: plain bash assignments, every value shlex-quoted, so no argument is re-split."""
        lines = ["# gpv-slurm's settings, sourced by task.sh and merge.sh. Values are shell-quoted."]
        for name, value in (("python", self.python), ("corpus", self.corpus), ("dir", self.dir),
                            ("shards", self.shards), ("by", self.by)):
            lines.append(f"{name}={shlex.quote(str(value))}")
        for stage in STAGES:
            lines.append(f"{stage}_args=({' '.join(shlex.quote(a) for a in self.args[stage])})")
        return "\n".join(lines) + "\n"

    def write_files(self):
        """Write settings.sh (owner-only: an argument may hold a secret), task.sh and merge.sh into DIR."""
        try:
            (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GpvError(f"cannot create {self.dir / 'logs'}: {e.strerror or e}") from None
        write_atomic(self.dir / SETTINGS, self.settings(), perms=0o600)
        for name, body in ((TASK, TASK_SCRIPT), (MERGE, MERGE_SCRIPT)):
            head = f"#!/usr/bin/env bash\nGPV_SLURM_DIR={shlex.quote(str(self.dir))}\n"
            write_atomic(self.dir / name, head + body, perms=0o777)

    # --- what to submit -------------------------------------------------------------------------------------

    def unfinished(self):
        """The shards without an aggregate (a task writes it last, whole)."""
        return [k for k in range(self.shards) if not (self.dir / f"shard-{k}" / "aggregate.jsonl").is_file()]

    def indexes(self, todo):
        """The --array indexes: 0-N-1 for every shard, else the list (1,3)."""
        return f"0-{self.shards - 1}" if len(todo) == self.shards else ",".join(map(str, todo))

    def array_command(self, todo):
        throttle = f"%{self.throttle}" if self.throttle else ""
        return ["sbatch", "--parsable", "--job-name=gpv", f"--array={self.indexes(todo)}{throttle}",
                f"--output={self.dir / 'logs' / 'task-%A_%a.log'}", *self.task, *self.sbatch, str(self.dir / TASK)]

    def merge_command(self, array_job=None):
        dependency = [f"--dependency=afterok:{array_job}"] if array_job else []
        return ["sbatch", "--parsable", *dependency, "--job-name=gpv-merge",
                f"--output={self.dir / 'logs' / 'merge-%j.log'}", *self.sbatch, str(self.dir / MERGE)]


def earlier_shards(directory):
    """--shards of the submission in DIRECTORY, from its settings.sh; a UsageError where there is none."""
    path = Path(directory) / SETTINGS
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise UsageError(f"--resume: {directory} holds no earlier submission (no {SETTINGS})") from None
    except OSError as e:
        raise GpvError(f"cannot read {path}: {e.strerror or e}") from None
    m = SHARDS_LINE.search(text)
    if not m:
        raise GpvError(f"{path} names no shards: not written by gpv-slurm?")
    return int(m.group(1))


def last_jobs(directory):
    """(array job, merge job) of the last submission recorded in DIRECTORY/jobs; None for each one absent."""
    array = merge = None
    try:
        lines = (Path(directory) / JOBS).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None, None
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "array":
            array = words[1]
        elif len(words) >= 2 and words[0] == "merge":
            merge = words[1]
    return (None if array == "-" else array), merge


def record_job(directory, line):
    with open(Path(directory) / JOBS, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def queue():
    """[(array job or job id, job id, state)] of this user's pending and running jobs, one per array task.

    Listed by user, not asked about the job ids: squeue -j on a job the controller has forgotten (MinJobAge
    after it ended) fails like a broken controller does, and the two must not be told apart by its wording.
    """
    user = pwd.getpwuid(os.getuid()).pw_name
    out = scheduler(["squeue", "--noheader", "--array", f"--user={user}", "--format=%F %i %T"])
    return [tuple(line.split()[:3]) for line in out.splitlines() if len(line.split()) >= 3]


def submitted_id(out, argv):
    """The job id that sbatch --parsable printed ("ID" or "ID;CLUSTER")."""
    job = out.strip().split(";")[0]
    if not job.isdigit():
        raise SchedulerError(f"{shlex.join(argv)} printed no job id: {out.strip()!r}")
    return job


# The job scripts. Under `set -u` bash before 4.4 (CentOS 7 has 4.2) calls an empty array unbound, so every
# array is expanded as ${a[@]+"${a[@]}"}: its elements, each one word, or nothing when it has none.
TASK_SCRIPT = r"""# One array task: the pipeline over shard K of N, K being the array index (0..N-1). The shard is given
# to every step (GPV_SHARD), not left to the array variables: a resubmission of some shards is an array
# of those indexes alone, whose _MIN and _COUNT are not the first submission's. sbatch runs a copy of
# this script elsewhere, so the settings are found by GPV_SLURM_DIR, not beside $0.
set -euo pipefail
source "$GPV_SLURM_DIR/settings.sh"
k=$SLURM_ARRAY_TASK_ID
export GPV_SHARD="$k/$shards"
out="$dir/shard-$k"
mkdir -p "$out"
"$python" -m gpvtools.commands.chunk ${chunk_args[@]+"${chunk_args[@]}"} "$corpus" -o "$out/chunks.jsonl" --resume
"$python" -m gpvtools.commands.parse ${parse_args[@]+"${parse_args[@]}"} "$out/chunks.jsonl" \
    -o "$out/perceptions.jsonl" --resume
"$python" -m gpvtools.commands.score ${score_args[@]+"${score_args[@]}"} "$out/perceptions.jsonl" \
    -o "$out/scored.jsonl" --resume
"$python" -m gpvtools.commands.aggregate --by "$by" ${aggregate_args[@]+"${aggregate_args[@]}"} \
    "$out/scored.jsonl" -o "$out/aggregate.jsonl"
"""

MERGE_SCRIPT = r"""# After every task succeeded: pool the shards' aggregates exactly (gpv-aggregate --merge).
set -euo pipefail
source "$GPV_SLURM_DIR/settings.sh"
parts=()
for ((k = 0; k < shards; k++)); do
    [ -f "$dir/shard-$k/aggregate.jsonl" ] || { echo "gpv-slurm: error: shard $k has no aggregate" >&2; exit 1; }
    parts+=("$dir/shard-$k/aggregate.jsonl")
done
cat ${parts[@]+"${parts[@]}"} | "$python" -m gpvtools.commands.aggregate --merge --by "$by" \
    ${merge_args[@]+"${merge_args[@]}"} -o "$dir/aggregate.jsonl"
"""


def submit(sub, *, resume=False, dry_run=False, notify=None):
    """Write SUB's files and submit its jobs; return (array job or "-", merge job, the array's indexes).

    RESUME: DIR holds an earlier submission; submit only the unfinished shards, after cancelling the earlier
    merge job if it still waits, and refuse while the earlier array has tasks pending or running. DRY_RUN:
    write the files and return the two sbatch command lines, submitting nothing (and asking squeue nothing).
    NOTIFY(message) hears what was done besides submitting.
    """
    notify = notify or (lambda message: None)
    if resume:
        before = earlier_shards(sub.dir)
        if before != sub.shards:
            raise UsageError(f"--resume: {sub.dir} was submitted with --shards {before}, not {sub.shards}")
    sub.write_files()
    todo = sub.unfinished() if resume else list(range(sub.shards))
    last_array, last_merge = last_jobs(sub.dir) if resume else (None, None)

    if dry_run:
        lines = [shlex.join(sub.array_command(todo))] if todo else []
        return lines + [shlex.join(sub.merge_command("JOBID" if todo else None))]

    if last_array or last_merge:
        jobs = queue()
        live = [task for array, task, _ in jobs if array == last_array]
        if live:
            raise UsageError(f"--resume: array job {last_array} still has {len(live)} task(s) pending or running; "
                             f"wait for them or scancel {last_array}")
        # A merge job whose array failed waits forever (DependencyNeverSatisfied): the new one replaces it.
        if any(job == last_merge and state == "PENDING" for _, job, state in jobs):
            scheduler(["scancel", last_merge])
            notify(f"cancelled the earlier merge job {last_merge}")

    array_job = "-"
    if todo:
        argv = sub.array_command(todo)
        array_job = submitted_id(scheduler(argv), argv)
        record_job(sub.dir, f"array {array_job} {sub.indexes(todo)}")
    argv = sub.merge_command(None if array_job == "-" else array_job)
    try:
        merge_job = submitted_id(scheduler(argv), argv)
    except SchedulerError as e:
        if array_job == "-":
            raise
        raise SchedulerError(f"{e}; the array job {array_job} was submitted but no merge job: once it has "
                             "finished, run the same command with --resume") from None
    record_job(sub.dir, f"merge {merge_job}")
    return array_job, merge_job, sub.indexes(todo)
