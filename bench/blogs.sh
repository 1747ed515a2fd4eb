#!/bin/sh
# The paper's validation protocols (§4.1, App. C) on real text: the blog posts of ../shared through
# the pipeline, a report of the author profiles with their evidence (gpv-report, report.html), then
# gpv-validate stability, construct (with the MDS map), concurrent (against the dictionary baseline)
# and predictive (by gender).
#
#     sh bench/blogs.sh [POSTS] [OUT_DIR] [PER_POST]
#
# What it runs, and where it departs from the paper for lack of compute on a 2-core CPU:
#   - gpv-chunk with the built-in tokenizer (250 tokens);
#   - gpv-parse --backend sentences: each sentence a perception (the built-in LLM parser takes
#     seconds per chunk; the paper parsed with GPT-3.5-turbo);
#   - the first PER_POST (default 4) perceptions of each post's first chunk only;
#   - gpv-score with the built-in model (the paper: ValueLlama-3-8B), Schwartz's 10 values;
#   - the dictionary baseline (../shared/data/dictionaries/schwartz-values-en.json) on the same
#     perceptions.
# Every stage writes with -o and --resume, so an interrupted run goes on where it stopped.
# GPV_THREADS (default 1) is gpv-score's --threads. GPV_PROTOCOLS=0 stops after the report: the
# protocols need more authors and perceptions than a small sample has (tests/test_report_browser.py).
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
POSTS=${1:-$HERE/../shared/data/blogs/posts-dev.jsonl}
OUT=${2:-$HERE/build/blogs}
PER_POST=${3:-4}
LEXICON=$(dirname "$POSTS")/../dictionaries/schwartz-values-en.json
THREADS=${GPV_THREADS:-1}
PROTOCOLS=${GPV_PROTOCOLS:-1}
mkdir -p "$OUT"

gpv-chunk -q "$POSTS" -o "$OUT/chunks.jsonl" --resume
gpv-parse -q --backend sentences "$OUT/chunks.jsonl" -o "$OUT/sentences.jsonl" --resume
python3 -c '
import sys, orjson
keep = int(sys.argv[1])
for line in sys.stdin.buffer:
    r = orjson.loads(line)
    if r["chunk"] == 0 and r["perception_index"] < keep:
        sys.stdout.buffer.write(line)
' "$PER_POST" < "$OUT/sentences.jsonl" > "$OUT/perceptions.jsonl"
echo "perceptions: $(wc -l < "$OUT/perceptions.jsonl")" >&2

gpv-score -q --values schwartz --threads "$THREADS" "$OUT/perceptions.jsonl" -o "$OUT/scored.jsonl" --resume
gpv-score -q -m "$LEXICON" "$OUT/perceptions.jsonl" -o "$OUT/dictionary.jsonl" --resume

gpv-aggregate -q --by author --keep gender "$OUT/scored.jsonl" -o "$OUT/authors.jsonl"
gpv-aggregate -q --by author --keep gender "$OUT/dictionary.jsonl" -o "$OUT/authors-dictionary.jsonl"
gpv-report -q "$OUT/authors.jsonl" --evidence "$OUT/scored.jsonl" --title "Blog authors (bench/blogs.sh)" \
    -o "$OUT/report.html"
[ "$PROTOCOLS" = 0 ] && exit 0

gpv-validate stability --by author --table "$OUT/scored.jsonl" -o "$OUT/stability.json"
gpv-validate construct --table --plot "$OUT/mds.png" "$OUT/authors.jsonl" -o "$OUT/construct.json"
gpv-validate concurrent --on author --table "$OUT/authors.jsonl" "$OUT/authors-dictionary.jsonl" \
    -o "$OUT/concurrent.json"
gpv-validate predictive --field gender --groups female,male --table "$OUT/authors.jsonl" \
    -o "$OUT/predictive.json"

# What the protocols' figures rest on: how often the scorer says "oppose", how alike the author profiles are
python3 "$HERE/bench/profiles.py" "$OUT/scored.jsonl" "$OUT/authors.jsonl" --json "$OUT/profiles.json"
