#!/usr/bin/env bash
# Every command's output on the demo and the test fixtures, into one folder, for comparing two
# checkouts byte for byte (a refactor must not change what any command writes):
#
#   bench/golden.sh /tmp/golden-before            # in the old checkout (or a git worktree of it)
#   bench/golden.sh /tmp/golden-after             # in the new one
#   diff -r /tmp/golden-before /tmp/golden-after  # nothing: the behaviour is unchanged
#
# It runs the code of the checkout it is run from (PYTHONPATH=.), with PY as the interpreter
# (default .venv/bin/python), on one thread, so that model scores repeat exactly. Standard output,
# every file a command writes, and each exit status are kept; standard error is kept where it
# holds no timing (errors, tables). HELDOUT, if given, is a gpv-train held-out split
# (DIR/heldout.jsonl): its first 24 items are scored and checked by gpv-validate accuracy.
set -uo pipefail
out=${1:?usage: bench/golden.sh OUTDIR [HELDOUT]}
heldout=${2:-}
repo=$PWD
PY=${PY:-.venv/bin/python}
[[ $PY == /* ]] || PY=$repo/$PY  # absolute, not resolved: a venv's python is a link
export PYTHONPATH=$repo HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1
mkdir -p "$out" "$out.stderr"
out=$(realpath "$out")
[ -z "$heldout" ] || heldout=$(realpath "$heldout")
# Inputs are copied in and every command runs inside OUTDIR with relative names, so that paths
# that reach the outputs (the report's command line, concurrent's file names) are the same in
# any two checkouts.
cp examples/posts.jsonl "$out/posts.jsonl"
cp tests/data/paper-gpv-llm-values.jsonl "$out/paper.jsonl"
cp tests/data/synthetic-safety.jsonl "$out/safety.jsonl"
cp ../shared/data/dictionaries/schwartz-values-en.json "$out/dictionary.json"
head -20 ../shared/data/blogs/posts-dev.jsonl > "$out/blogs.jsonl"
cd "$out" || exit 1
out=.
gpv() { local cmd=$1; shift; "$PY" -m "gpvtools.commands.$cmd" "$@"; }
# run NAME CMD...: stdout to NAME.out, exit status to NAME.rc, stderr to NAME.err
run() { local name=$1; shift; "$@" > "$out/$name.out" 2> "$out/$name.err"; echo $? > "$out/$name.rc"; }
# quiet NAME CMD...: as run, but stderr (progress, timings) is not kept
# (it goes to OUTDIR.stderr/NAME, outside the folder compared, for finding out why a command failed)
quiet() { local name=$1; shift; "$@" > "$out/$name.out" 2> "$out/../$(basename "$PWD").stderr/$name"; echo $? > "$out/$name.rc"; }

# The demo's pipeline, stage by stage.
quiet chunk gpv chunk posts.jsonl
quiet parse gpv parse "$out/chunk.out"
quiet score gpv score --values schwartz --threads 1 "$out/parse.out"
quiet score-pvq gpv score --values vsm --valence all --threads 1 "$out/parse.out"
quiet aggregate gpv aggregate --by author --keep gender "$out/score.out"
quiet aggregate-hi gpv aggregate --by author --min-evidence 2 --higher-order "$out/score.out"
quiet aggregate-all gpv aggregate "$out/score-pvq.out"
run table gpv table author perceptions=n_perceptions Power=values.Power.score < "$out/aggregate.out"
quiet report gpv report "$out/aggregate.out" --evidence "$out/score.out" --title golden -o "$out/report.html"
quiet report-paper gpv report paper.jsonl --title paper -o "$out/report-paper.html"
run stability gpv validate stability --by author --table "$out/score.out"
run construct gpv validate construct --permutations 99 --table paper.jsonl
run construct-plot gpv validate construct --permutations 99 --plot "$out/construct.png" paper.jsonl
run concurrent gpv validate concurrent --spearman --table "$out/aggregate.out" "$out/aggregate-hi.out"
run predictive gpv validate predictive --field gender --table "$out/aggregate.out"
run probe gpv validate probe --labels safety.jsonl --splits 3 --epochs 50 --table paper.jsonl
if [ -n "$heldout" ]; then
    head -24 "$heldout" > "$out/heldout.jsonl"
    quiet heldout-scored gpv score --text-field text --values-field value --valence all --threads 1 "$out/heldout.jsonl"
    run accuracy gpv validate accuracy --table "$out/heldout-scored.out"
fi

# The blog posts: chunking and the default parse on real text, and the dictionary baseline.
quiet blogs-chunk gpv chunk "$out/blogs.jsonl"
quiet blogs-chunk-small gpv chunk --max-tokens 120 --overlap 20 "$out/blogs.jsonl"
quiet blogs-parse gpv parse "$out/blogs-chunk.out"
quiet blogs-parse-clauses gpv parse --backend clauses "$out/blogs-chunk.out"
quiet blogs-dict gpv score --backend dictionary --model dictionary.json --values schwartz "$out/blogs-parse.out"
quiet blogs-dict-agg gpv aggregate --by author --keep gender,age "$out/blogs-dict.out"

# gpv-elicit's questions and answers from the built-in model (greedy, no cache).
quiet elicit-questions gpv elicit questions --values Power,Benevolence -n 1 --max-tokens 120 --no-cache
quiet elicit-ask gpv elicit ask --subject smollm2=builtin --max-tokens 64 --no-cache "$out/elicit-questions.out"

# Errors: bad input names the line and the field.
printf '{"id":"a","text":"fine"}\n{"id":"b","text":123}\nnot json\n' > "$out/bad.jsonl"
run err-chunk gpv chunk "$out/bad.jsonl"
run err-parse gpv parse "$out/bad.jsonl"
run err-chunk-skip gpv chunk --on-error skip "$out/bad.jsonl"
run err-aggregate-emit gpv aggregate --on-error emit "$out/bad.jsonl"
run err-aggregate gpv aggregate "$out/bad.jsonl"
run err-stability gpv validate stability "$out/bad.jsonl"
run err-construct gpv validate construct "$out/bad.jsonl"

# Every command's --help (the man pages are made from these).
for cmd in chunk parse score aggregate validate train elicit report slurm cron; do
    run "help-$cmd" gpv "$cmd" --help
done
for check in stability construct concurrent predictive accuracy probe; do
    run "help-validate-$check" gpv validate "$check" --help
done
for sub in questions ask; do run "help-elicit-$sub" gpv elicit "$sub" --help; done
