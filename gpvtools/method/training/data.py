"""Labelled value data for gpv-train: reading four formats, building the two tasks, the held-out splits.

Formats (detected from the header, or named with --format):
  valuebench  CSV questionnaire,item,value,agreement[,…] (ValueBench's value_orientation.csv)
  valueprism  CSV situation,vrd,text,label — ValuePrism's relevance or valence configuration
              (relevance labels yes/no, 1/0, relevant/irrelevant; valence supports/opposes/either)
  touche      Touché23-ValueEval's arguments TSV (Argument ID, Conclusion, Stance, Premise) with its
              labels TSV beside it (Argument ID and one 0/1 column per refined value category)
  jsonl       one {"text", "value", "task", "label"} object a line, labels as gpv-score's
Examples are (text, value, task, label) with label in the task's label words (scoring.LABELS).
"""

import csv
import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ...streaming.atomic import AtomicFile
from ...streaming.errors import BadRecord, GpvError
from ...streaming.jsonl import Records
from ..scoring import LABELS, RELEVANCE, VALENCE

VALUEBENCH_COLUMNS = ("questionnaire", "item", "value", "agreement")
VALUEPRISM_COLUMNS = ("situation", "vrd", "text", "label")
_PRISM_LABELS = {
    "yes": (RELEVANCE, "yes"), "no": (RELEVANCE, "no"), "1": (RELEVANCE, "yes"), "0": (RELEVANCE, "no"),
    "relevant": (RELEVANCE, "yes"), "irrelevant": (RELEVANCE, "no"), "true": (RELEVANCE, "yes"),
    "false": (RELEVANCE, "no"),
    "supports": (VALENCE, "support"), "support": (VALENCE, "support"), "opposes": (VALENCE, "oppose"),
    "oppose": (VALENCE, "oppose"), "either": (VALENCE, "either"),
}


@dataclass(frozen=True)
class Example:
    text: str
    value: str
    task: str
    label: str
    judged: bool = field(default=False, compare=False)  # from a text judged on every value (Touché)

    def as_record(self):
        return {"text": self.text, "value": self.value, "task": self.task, "label": self.label}


@dataclass
class Item:
    """A ValueBench item: a text measuring one value, agreeing (+1) or disagreeing (-1) with it."""

    text: str
    value: str
    agreement: int


@dataclass
class Judged:
    """A text judged by people for relevance to each of a set of values (a Touché argument's premise)."""

    id: str
    text: str
    labels: dict       # value -> 0/1


@dataclass
class Dataset:
    items: list        # ValueBench-style items: both tasks are built from them
    examples: list     # ready examples (ValuePrism, JSONL), used as they are
    judged: list = None  # texts with a human relevance label for every value (Touché)

    def __post_init__(self):
        self.judged = self.judged or []


# Touché23-ValueEval's 20 refined categories folded into the 10 basic Schwartz values, as ValueBench spells
# them (the data's README; Kiesel et al. 2022). Face and Humility have no basic value of their own: left out.
TOUCHE_FOLD = {
    "Self-direction: thought": "Self-Direction", "Self-direction: action": "Self-Direction",
    "Stimulation": "Stimulation", "Hedonism": "Hedonism", "Achievement": "Achievement",
    "Power: dominance": "Power", "Power: resources": "Power",
    "Security: personal": "Security", "Security: societal": "Security", "Tradition": "Tradition",
    "Conformity: rules": "Conformity", "Conformity: interpersonal": "Conformity",
    "Benevolence: caring": "Benevolence", "Benevolence: dependability": "Benevolence",
    "Universalism: concern": "Universalism", "Universalism: nature": "Universalism",
    "Universalism: tolerance": "Universalism", "Universalism: objectivity": "Universalism",
}
TOUCHE_ARGUMENT_COLUMNS = ("Argument ID", "Premise")
TOUCHE_DEV_SHARE = 5  # one argument in 5 is in the dev split


def touche_is_dev(argument_id):
    """Whether a Touché argument belongs to the dev split: a fixed 20%, by a hash of its id alone."""
    return int(hashlib.sha256(argument_id.encode("utf-8")).hexdigest()[:8], 16) % TOUCHE_DEV_SHARE == 0


def _read_csv(path, delimiter=","):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t"
                                    else csv.QUOTE_MINIMAL)
            return list(reader.fieldnames or []), list(reader)
    except OSError as e:
        raise GpvError(f"{path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise GpvError(f"{path} is not UTF-8 text") from None


def detect_format(path):
    path = Path(path)
    if path.suffix in (".jsonl", ".json"):
        return "jsonl"
    header, _ = _read_csv(path, "\t" if path.suffix == ".tsv" else ",")
    if all(c in header for c in VALUEBENCH_COLUMNS):
        return "valuebench"
    if all(c in header for c in VALUEPRISM_COLUMNS):
        return "valueprism"
    if "Argument ID" in header:
        return "touche"
    raise GpvError(f"{path}: unknown columns {', '.join(header) or '(none)'}; expected ValueBench's "
                   f"{','.join(VALUEBENCH_COLUMNS)} or ValuePrism's {','.join(VALUEPRISM_COLUMNS)} "
                   f"(or a .jsonl of text,value,task,label)")


def read(path, fmt="auto"):
    """A Dataset from one file; every problem names the file, the row and the column."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "valuebench":
        return Dataset(_read_valuebench(path), [])
    if fmt == "valueprism":
        return Dataset([], _read_valueprism(path))
    if fmt == "touche":
        return Dataset([], [], read_touche(path))
    return Dataset([], _read_jsonl(path))


def _require(path, header, columns):
    missing = [c for c in columns if c not in header]
    if missing:
        raise GpvError(f"{path}: missing column(s) {', '.join(missing)}; it has {', '.join(header) or '(none)'}")


def _read_valuebench(path):
    header, rows = _read_csv(path)
    _require(path, header, VALUEBENCH_COLUMNS)
    items = []
    for row_no, row in enumerate(rows, 2):
        text, value = (row["item"] or "").strip(), (row["value"] or "").strip()
        if not text or not value:
            raise GpvError(f"{path}: row {row_no}: empty {'item' if not text else 'value'}")
        try:
            agreement = int(float(row["agreement"]))
        except (TypeError, ValueError):
            agreement = None
        if agreement not in (1, -1):
            raise GpvError(f"{path}: row {row_no}: agreement must be 1 or -1, not '{row['agreement']}'")
        items.append(Item(text, value, agreement))
    return items


def _read_valueprism(path):
    header, rows = _read_csv(path)
    _require(path, header, VALUEPRISM_COLUMNS)
    examples = []
    for row_no, row in enumerate(rows, 2):
        label = (row["label"] or "").strip().lower()
        if label not in _PRISM_LABELS:
            raise GpvError(f"{path}: row {row_no}: label '{row['label']}' is neither a relevance label "
                           f"(yes/no, 1/0) nor a valence label (supports/opposes/either)")
        task, word = _PRISM_LABELS[label]
        text, value = (row["situation"] or "").strip(), (row["text"] or "").strip()
        if not text or not value:
            raise GpvError(f"{path}: row {row_no}: empty {'situation' if not text else 'text'}")
        examples.append(Example(text, value, task, word))
    return examples


def _touche_pair(path):
    """(arguments file, labels file) from either of them: labels-X.tsv lies beside arguments-X.tsv."""
    path = Path(path)
    header, _ = _read_csv(path, "\t")
    if all(c in header for c in TOUCHE_ARGUMENT_COLUMNS):
        other = path.with_name(path.name.replace("arguments", "labels", 1))
        return path, other
    other = path.with_name(path.name.replace("labels", "arguments", 1))
    return other, path


def read_touche(path):
    """[Judged] from Touché23-ValueEval's arguments and labels TSVs; the text is the premise alone (in use,
    gpv-score sees one statement without conclusion or stance)."""
    arguments, labels = _touche_pair(path)
    missing = "the other" if arguments == labels else next((p for p in (arguments, labels) if not p.exists()), None)
    if missing:
        raise GpvError(f"{path}: Touché data needs its arguments and labels TSVs side by side "
                       f"(arguments-NAME.tsv and labels-NAME.tsv); missing {missing}")
    header, rows = _read_csv(arguments, "\t")
    _require(arguments, header, TOUCHE_ARGUMENT_COLUMNS)
    premises = {}
    for row_no, row in enumerate(rows, 2):
        key, premise = (row["Argument ID"] or "").strip(), (row["Premise"] or "").strip()
        if not key or not premise:
            raise GpvError(f"{arguments}: row {row_no}: empty {'Argument ID' if not key else 'Premise'}")
        premises[key] = premise
    header, rows = _read_csv(labels, "\t")
    _require(labels, header, ("Argument ID",) + tuple(TOUCHE_FOLD))
    judged = []
    for row_no, row in enumerate(rows, 2):
        key = (row["Argument ID"] or "").strip()
        if key not in premises:
            raise GpvError(f"{labels}: row {row_no}: argument '{key}' is not in {arguments}")
        folded = {}
        for column, value in TOUCHE_FOLD.items():
            cell = (row[column] or "").strip()
            if cell not in ("0", "1"):
                raise GpvError(f"{labels}: row {row_no}: column '{column}' must be 0 or 1, not '{cell}'")
            folded[value] = max(folded.get(value, 0), int(cell))
        judged.append(Judged(key, premises[key], folded))
    return judged


def judged_examples(judged):
    """Every (text, value) pair a person judged, as a relevance example: positives and negatives alike."""
    return [Example(j.text, value, RELEVANCE, "yes" if label else "no", judged=True)
            for j in judged for value, label in j.labels.items()]


def _read_jsonl(path):
    examples = []
    records = Records(path)
    try:
        lines = list(records)
    except BadRecord as e:
        raise GpvError(f"{records.name}: {e}") from None
    for line_no, r in lines:
        for name in ("text", "value", "task", "label"):
            if not isinstance(r.get(name), str) or not r[name].strip():
                raise GpvError(f"{path}: line {line_no}: field '{name}' must be a non-empty string")
        if r["task"] not in LABELS:
            raise GpvError(f"{path}: line {line_no}: task '{r['task']}' is not relevance or valence")
        if r["label"] not in LABELS[r["task"]]:
            raise GpvError(f"{path}: line {line_no}: label '{r['label']}' is outside the {r['task']} task's labels "
                           f"({', '.join(LABELS[r['task']])})")
        examples.append(Example(r["text"], r["value"], r["task"], r["label"]))
    return examples


def merge(datasets):
    items = [i for d in datasets for i in d.items]
    examples = [e for d in datasets for e in d.examples]
    judged = list({j.id: j for d in datasets for j in d.judged}.values())  # one Touché set named twice: once
    if not items and not examples and not judged:
        raise GpvError("the training data holds no example")
    return Dataset(items, examples, judged)


def all_values(dataset):
    seen = {}
    for x in dataset.items + dataset.examples:
        seen[x.value] = None
    for j in dataset.judged:
        seen.update(dict.fromkeys(j.labels))
    return list(seen)


def choose_holdout(dataset, n, seed, keep=(), given=None):
    """The held-out values: GIVEN, or N drawn with SEED from the values not in KEEP."""
    values = all_values(dataset)
    if given is not None:
        unknown = [v for v in given if v not in values]
        if unknown:
            raise GpvError(f"held-out value(s) not in the data: {', '.join(unknown)}")
        return list(given)
    pool = sorted(v for v in values if v not in set(keep))
    if n > len(pool):
        raise GpvError(f"cannot hold out {n} values: only {len(pool)} can be held out")
    return sorted(random.Random(seed).sample(pool, n))


def build_examples(items, values, rng):
    """Relevance: each item with its value 'yes' and with a random other value 'no' (as many 'no' as 'yes');
    valence: 'support' for agreement +1, 'oppose' for -1 (paper App. A)."""
    own = {}
    for it in items:
        own.setdefault(it.text, set()).add(it.value)
    out = []
    for it in items:
        out.append(Example(it.text, it.value, RELEVANCE, "yes"))
        others = [v for v in values if v not in own[it.text]]
        if others:
            out.append(Example(it.text, rng.choice(others), RELEVANCE, "no"))
        out.append(Example(it.text, it.value, VALENCE, "support" if it.agreement > 0 else "oppose"))
    return out


def split(dataset, holdout_values, seed):
    """(train examples, held-out examples). Held-out values and every item text measuring one never train, nor
    does a judged text of the dev split (dev_split)."""
    held = set(holdout_values)
    held_texts = {it.text for it in dataset.items if it.value in held}
    train_items = [it for it in dataset.items if it.value not in held and it.text not in held_texts]
    test_items = [it for it in dataset.items if it.value in held]
    rng = random.Random(seed)
    train_values = sorted({it.value for it in train_items})
    train = build_examples(train_items, train_values, rng)
    test = build_examples(test_items, sorted(held), rng)
    train += [e for e in dataset.examples if e.value not in held and e.text not in held_texts]
    test += [e for e in dataset.examples if e.value in held]
    # A dev text never trains, nor does the same premise under another argument id (26 in Touché's split).
    dev_texts = {j.text for j in dev_split(dataset)}
    judged = judged_examples(j for j in dataset.judged if not touche_is_dev(j.id) and j.text not in dev_texts)
    train += [e for e in judged if e.value not in held and e.text not in held_texts]
    test += [e for e in judged if e.value in held]
    return train, test


def dev_split(dataset):
    """The judged texts' dev split (Touché: 20% of the arguments by a hash of the id), which never trains."""
    return [j for j in dataset.judged if touche_is_dev(j.id)]


def write_judged(path, judged):
    with AtomicFile(path) as f:
        for j in judged:
            f.write(orjson.dumps({"id": j.id, "text": j.text, "labels": j.labels}) + b"\n")


def write_jsonl(path, examples):
    with AtomicFile(path) as f:
        for e in examples:
            f.write(orjson.dumps(e.as_record()) + b"\n")
