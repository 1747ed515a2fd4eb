"""gpv-slurm: the pipeline over a corpus as a SLURM array job of shards, and a job that merges them."""

import click

from ..runtimes.slurm import Submission, split_args, submit
from ..streaming.messages import note
from ..streaming.stage import guarded
from .common import CONTEXT_SETTINGS, verbosity

COMMAND = "gpv-slurm"


def stage_option(stage, help):
    return click.option(f"--{stage}", f"{stage}_args", metavar="ARGS", default="", help=help)


@click.command(name=COMMAND, context_settings=CONTEXT_SETTINGS)
@click.argument("corpus", metavar="CORPUS.jsonl",
                type=click.Path(exists=True, dir_okay=False, readable=True, resolve_path=True))
@click.option("-n", "--shards", type=click.IntRange(min=1), default=4, show_default=True, metavar="N",
              help="Array tasks, i.e. shards.")
@click.option("-d", "--dir", "directory", default="gpv-slurm", show_default=True, metavar="DIR",
              help="Work directory: shard outputs, logs, job scripts, settings, the jobs submitted.")
@click.option("--by", default="doc_id", show_default=True, metavar="FIELDS",
              help="gpv-aggregate --by, for every shard and for the merge.")
@stage_option("chunk", "Extra arguments for gpv-chunk, split as the shell does: quote an argument that holds "
                       "spaces.")
@stage_option("parse", "Extra arguments for gpv-parse (e.g. '--subject \"Jane Doe\" -j 16').")
@stage_option("score", "Extra arguments for gpv-score.")
@stage_option("aggregate", "Extra arguments for each shard's gpv-aggregate (--keep, --missing-group); leave "
                           "--min-evidence at 1 there: a withheld score cannot be pooled.")
@stage_option("merge", "Extra arguments for the merging gpv-aggregate --merge (--min-evidence, --higher-order, "
                       "--keep, -f csv).")
@click.option("--sbatch", "sbatch_args", metavar="ARGS", default="",
              help="Extra arguments for both sbatch calls: --partition, --account, --gres, --qos.")
@click.option("--throttle", type=click.IntRange(min=1), metavar="K",
              help="At most K array tasks run at once (--array=0-N-1%K), e.g. to spare a shared model server.")
@click.option("--cpus-per-task", type=click.IntRange(min=1), metavar="N",
              help="sbatch --cpus-per-task of each array task (not the merge job).")
@click.option("--mem", metavar="SIZE", help="sbatch --mem of each array task, e.g. 4G.")
@click.option("--time", "time_limit", metavar="LIMIT", help="sbatch --time of each array task, e.g. 2:00:00.")
@click.option("--resume", is_flag=True,
              help="DIR holds an earlier submission (the same --shards): submit only the shards without an "
                   "aggregate, cancelling that submission's merge job if it still waits, then a new merge job. "
                   "Refused while the earlier array has tasks pending or running.")
@click.option("--dry-run", is_flag=True,
              help="Write the settings and job scripts and print the two sbatch commands; submit nothing.")
@verbosity()
def main(corpus, shards, directory, by, chunk_args, parse_args, score_args, aggregate_args, merge_args, sbatch_args,
         throttle, cpus_per_task, mem, time_limit, resume, dry_run, quiet, verbose):
    """Run the GPV pipeline as a SLURM array job of shards and merge the aggregates.

    Submits two jobs with sbatch(1). The first is an array job of N tasks (--array=0-N-1); task K
    runs, in DIR/shard-K/, the four stages as separate steps on files:

    \b
      gpv-chunk     CORPUS            -o chunks.jsonl      --resume
      gpv-parse     chunks.jsonl      -o perceptions.jsonl --resume
      gpv-score     perceptions.jsonl -o scored.jsonl      --resume
      gpv-aggregate scored.jsonl      -o aggregate.jsonl   --by FIELDS

    Task K gives every step --shard K/N (as GPV_SHARD), K being its array index; the stages shard
    by a stable hash of the document id, so every step of a task sees the same documents and the
    shards partition the corpus. The second job waits for all tasks to succeed
    (--dependency=afterok:JOBID) and pools the shards' aggregates exactly with gpv-aggregate
    --merge into DIR/aggregate.jsonl. If a task fails, the merge job waits for ever (squeue shows
    the reason DependencyNeverSatisfied) and no aggregate.jsonl is written.

    The stages run with the Python that ran gpv-slurm (PYTHON -m gpvtools.commands.chunk, and so
    on), so the jobs need no gpv-* commands on their PATH, only the same file system. --chunk,
    --parse, --score, --aggregate, --merge and --sbatch each take one string of arguments, split
    as the shell splits it: --parse '--subject "Jane Doe"' gives gpv-parse the two arguments
    --subject and Jane Doe.

    Because every step resumes, a task that fails, times out or is preempted can be rerun and goes
    on where it stopped; parse replies are also cached. After a failure, fix its cause and run the
    same command with --resume: it submits an array of only the shards that have no aggregate yet
    (a task writes it last, whole), cancels the earlier merge job if it is still pending, and
    submits a new merge job after the new array. With every shard finished, it submits the merge
    job alone.

    gpv-slurm writes into DIR its settings (settings.sh, owner-only, every value shell-quoted),
    the two job scripts, task.sh and merge.sh, and a record of the jobs it submitted (DIR/jobs:
    lines "array ID INDEXES" and "merge ID"); the jobs' logs go to DIR/logs/ (task-JOB_K.log,
    merge-JOB.log). It prints the two job ids on stdout ("-" for the array when --resume finds
    nothing left to run).
    """

    def work():
        split = {stage: split_args(f"--{stage}", text) for stage, text in (
            ("chunk", chunk_args), ("parse", parse_args), ("score", score_args), ("aggregate", aggregate_args),
            ("merge", merge_args))}
        task = [f"--{name}={value}" for name, value in (("cpus-per-task", cpus_per_task), ("mem", mem),
                                                        ("time", time_limit)) if value is not None]
        sub = Submission(corpus, directory, shards, by, split, split_args("--sbatch", sbatch_args), task, throttle)
        told = (lambda message: None) if quiet else (lambda message: note(COMMAND, message))
        result = submit(sub, resume=resume, dry_run=dry_run, notify=told)
        if dry_run:
            click.echo("\n".join(result))
            return 0
        array_job, merge_job, indexes = result
        if array_job == "-":
            told(f"every shard has finished; merge job {merge_job} submitted; result: {sub.dir}/aggregate.jsonl")
        else:
            told(f"array job {array_job} (shards {indexes}) "
                 f"and merge job {merge_job} submitted; result: {sub.dir}/aggregate.jsonl")
        click.echo(f"{array_job} {merge_job}")
        return 0

    guarded(COMMAND, verbose, work)


main.man_sections = {
    "SERVERS": (
        "For many shards, point gpv-parse and gpv-score at OpenAI-compatible servers (--base-url), e.g. vLLM "
        "started with prefix caching (--enable-prefix-caching) and enough --max-logprobs for gpv-score's "
        "--top-logprobs (20). All tasks may share one server; -j sets each task's requests in flight. Give keys "
        "through OPENAI_API_KEY in the submitting environment (sbatch passes it on), never on the command line, "
        "where the job scripts' settings file would keep it."
    ),
    "EXIT STATUS": (
        "0 when the jobs were submitted (or, with --dry-run, the scripts written). 1 when a scheduler command "
        "(sbatch, squeue, scancel) failed or could not be run: the error names the command and repeats its "
        "message, and nothing more is submitted; a failing squeue on --resume is never read as \"nothing "
        "running\". 2 for a usage error, including --resume while the earlier array still has tasks pending "
        "or running."
    ),
    "ENVIRONMENT": (
        "GPV_DEBUG=1: tracebacks, as -v. The jobs inherit the environment gpv-slurm ran in (sbatch's default, "
        "--export=ALL): OPENAI_API_KEY and the stages' own variables (see their pages) reach every task, which "
        "sets GPV_SHARD itself. sbatch, squeue and scancel read SLURM's variables such as SLURM_CONF."
    ),
    "EXAMPLES": (
        "\b\n"
        "gpv-slurm -n 16 -d run1 --by author --chunk '-t words' \\\n"
        "    --parse '--base-url http://vllm1:8000/v1 -m qwen2.5-7b-instruct -j 16' \\\n"
        "    --score '--base-url http://vllm2:8000/v1 -j 32' \\\n"
        "    --throttle 8 --mem 4G --time 4:00:00 --sbatch '--partition cpu' corpus.jsonl\n"
        "gpv-slurm -n 4 --parse '--subject \"Jane Doe\"' \\\n"
        "    --score '-m \"/data/value lexicons/schwartz.json\"' --dry-run corpus.jsonl\n"
        "gpv-slurm -n 16 -d run1 --by author ... --resume corpus.jsonl   # after a shard failed"
    ),
}


if __name__ == "__main__":
    main(prog_name=COMMAND)  # not "python -m gpvtools.commands.slurm", as bin/gpv-slurm runs it
