"""Transcribe the GPV paper's Tables 11-13 (GPV measurements of 17 LLMs) into aggregated JSONL.

    python tests/data/transcribe_paper_tables.py ../shared/paper/gpv-paper.txt \
        > tests/data/paper-gpv-llm-values.jsonl

Reads the tables from the paper's text rather than by hand, and checks every value name against
gpvtools.method.values, so a typo cannot slip in. The output is committed; the tests never need the paper.
"""

import sys
from pathlib import Path

import orjson

from gpvtools.method.values import inventories

# Ye et al., GPV paper, App. D.1: the abbreviations the tables use and the models they stand for.
MODELS = {
    "inte2": "internlm2-chat-7b", "inte": "internlm-chat-7b", "Lla2": "Llama-2-7b-chat-hf",
    "ge2b": "gemma-2b", "ge7b": "gemma-7b", "Qw4B": "Qwen1.5-4B-Chat", "Qw14B": "Qwen1.5-14B-Chat",
    "Qw72B": "Qwen1.5-72B-Chat", "Qw7B": "Qwen1.5-7B-Chat", "Qw0.5B": "Qwen1.5-0.5B-Chat",
    "Qw1.8B": "Qwen1.5-1.8B-Chat", "gpt4": "gpt-4-turbo", "gpt3.5": "gpt-3.5-turbo", "Yi6B": "Yi-6B-Chat",
    "Mis0.1": "Mistral-7B-Instruct-v0.1", "Mis0.2": "Mistral-7B-Instruct-v0.2", "vic7b": "vicuna-7b-v1.5-16k",
}
TABLES = ("Table 11: GPV measurement results.", "Table 12: GPV measurement results.",
          "Table 13: GPV measurement results.")


def tables(text):
    """{table caption: [(inventory, value, [numbers…], abbreviations)]} for Tables 11-13."""
    lines = text.splitlines()
    out = {}
    for caption in TABLES:
        end = lines.index(caption)
        start = max(i for i in range(end) if lines[i].startswith("Inventory\tValue\t"))
        models = lines[start].split("\t")[2:]
        rows, inventory = [], None
        for line in lines[start + 1:end]:
            cells = [c.strip() for c in line.split("\t")]
            while cells and cells[-1] == "":
                cells.pop()
            if not cells:
                continue
            if cells[0] in ("NFCC2000", "VSM13", "PVQ40", "LVI"):
                inventory, cells = cells[0], cells[1:]
            elif cells[0] == "":
                cells = cells[1:]
            # else: the last row of a table lost its leading tab in the text; same inventory.
            if len(cells) != len(models) + 1:
                raise SystemExit(f"{caption}: cannot read row {line!r}")
            rows.append((inventory, cells[0], [float(c) for c in cells[1:]]))
        out[caption] = (models, rows)
    return out


def main(path):
    known = inventories()
    profiles = {}
    for caption, (models, rows) in tables(Path(path).read_text(encoding="utf-8")).items():
        table = caption.split(":")[0]
        for inventory, value, numbers in rows:
            if value not in known[inventory]:
                raise SystemExit(f"{table}: '{value}' is not a {inventory} value in gpvtools.method.values")
            for model, x in zip(models, numbers):
                scores = profiles.setdefault(model, {"table": table, "values": {}})["values"]
                # Achievement is in PVQ40 and in LVI; GPV measures one value, printed twice.
                if value in scores and scores[value] != x:
                    raise SystemExit(f"{table}: {model} has two different scores for {value}")
                scores[value] = x
    if sorted(profiles) != sorted(MODELS):
        raise SystemExit(f"models found: {sorted(profiles)}")
    for abbrev, full in MODELS.items():
        p = profiles[abbrev]
        record = {"id": abbrev, "subject": full, "source": f"Ye et al., GPV paper, {p['table']}",
                  "values": {v: {"score": x, "n": None, "sd": None} for v, x in p["values"].items()}}
        sys.stdout.buffer.write(orjson.dumps(record) + b"\n")


if __name__ == "__main__":
    main(sys.argv[1])
