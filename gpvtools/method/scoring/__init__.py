"""Perception-level value measurement (paper §3.2, App. A): relevance, valence and score per value.

A scorer turns (sentence, value) pairs into label probabilities. GPV scorers read a language
model's next-token distribution after ValueLlama's prompt templates; the dictionary scorer counts
lexicon words instead. Backends are registered by name; heavy libraries load inside each backend.
"""

import copy
from dataclasses import dataclass, field

from ...streaming.errors import MissingDependency

RELEVANCE, VALENCE = "relevance", "valence"

# Byte for byte the templates ValueLlama was trained on (paper App. A, Prompt 1); each ends "Output:\n".
TEMPLATES = {
    RELEVANCE: (
        '[Task] Given a sentence and a value, determine whether the sentence is relevant to the value. '
        'If the sentence is relevant to the value, output "yes", otherwise output "no".\n'
        "Sentence: {sentence}\n"
        "Value: {value}\n"
        "Output:\n"
    ),
    VALENCE: (
        '[Task] Given a sentence and a value, determine whether the sentence supports or opposes the value. '
        'If the sentence supports the value, output "support". If the sentence opposes the value, output '
        '"oppose". If you need more context to make a decision, output "either".\n'
        "Sentence: {sentence}\n"
        "Value: {value}\n"
        "Output:\n"
    ),
}
LABELS = {RELEVANCE: ("yes", "no"), VALENCE: ("support", "oppose", "either")}
THRESHOLD = 0.5  # relevant iff p_rel > 0.5 (paper §3.2)
DIGITS = 6


def prompt(task, sentence, value):
    return TEMPLATES[task].format(sentence=sentence, value=value)


def _numpy():
    # Only the GPV backends need numpy; the dictionary backend and --help run on a core install.
    try:
        import numpy
    except ImportError:
        raise MissingDependency("GPV scoring", "numpy", "cpu") from None
    return numpy


def renormalise(logits):
    """Probabilities over the label set from the labels' logits (or log-probabilities)."""
    np = _numpy()
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def shared_prefix(seqs):
    """How many leading tokens all of SEQS share, leaving each at least its last token to evaluate."""
    common = min(len(x) for x in seqs) - 1
    first = seqs[0]
    for k in range(common):
        if any(x[k] != first[k] for x in seqs):
            return k
    return common


def first_label_tokens(tokenize, task):
    """Each label's first token as the tokenizer splits it right after the prompt ("Output:\\n").

    tokenize(text) -> list of ids, the same way prompts are tokenized. The label is tokenized in
    position (prompt + label) because many tokenizers split a word differently at a line start.
    """
    sample = prompt(task, "x", "y")
    base = tokenize(sample)
    ids = []
    for label in LABELS[task]:
        full = tokenize(sample + label)
        if full[: len(base)] == base and len(full) > len(base):
            ids.append(full[len(base)])
        else:  # the label merged into the prompt's last token: fall back to the bare word
            ids.append(tokenize(label)[-1])
    if len(set(ids)) != len(ids):
        raise ValueError(f"labels {LABELS[task]} share a first token under this tokenizer")
    return ids


@dataclass(frozen=True)
class Decision:
    """How a GPV scorer decides: a pair is relevant when p_rel exceeds its value's threshold (THRESHOLDS,
    {value: threshold}, else DEFAULT, the paper's 0.5 unless set). VALENCE_ALL computes valence for every
    pair (to evaluate a model's valence task); the score stays null for irrelevant pairs either way."""

    thresholds: dict = field(default_factory=dict)
    default: float = THRESHOLD
    valence_all: bool = False


class Scorer:
    """Measures a batch of sentences on a list of values."""

    name = "?"
    backend = "?"

    def measure(self, sentences, values):
        """[{value: {"relevance": p, …, "score": w or None}}] one dict per sentence."""
        raise NotImplementedError

    def close(self):
        pass


class LabelScorer(Scorer):
    """GPV: relevance for every pair, valence for the relevant ones, score = P(support) − P(oppose), as its
    `decision` (a Decision, given when the scorer is built) says."""

    decision = Decision()

    def deciding(self, decision):
        """This scorer deciding by DECISION instead: a copy that shares the loaded model."""
        other = copy.copy(self)
        other.decision = decision
        return other

    def label_probs(self, task, pairs):
        """Array (len(pairs), len(LABELS[task])) of renormalised label probabilities."""
        raise NotImplementedError

    def measure(self, sentences, values):
        np = _numpy()
        pairs = [(s, v) for s in sentences for v in values]
        rel = self.label_probs(RELEVANCE, pairs)[:, 0] if pairs else np.empty(0)
        d = self.decision
        cut = [d.thresholds.get(v, d.default) for _ in sentences for v in values]
        wanted = [i for i, p in enumerate(rel) if d.valence_all or p > cut[i]]
        val = self.label_probs(VALENCE, [pairs[i] for i in wanted]) if wanted else np.empty((0, 3))
        valence = dict(zip(wanted, val))
        out = []
        for k in range(len(sentences)):
            result = {}
            for j, value in enumerate(values):
                i = k * len(values) + j
                entry = {"relevance": round(float(rel[i]), DIGITS)}
                if i in valence:
                    support, oppose, either = (round(float(p), DIGITS) for p in valence[i])
                    entry.update(support=support, oppose=oppose, either=either)
                    measured = rel[i] > cut[i] and int(np.argmax(valence[i])) != 2
                    entry["score"] = round(float(valence[i][0] - valence[i][1]), DIGITS) if measured else None
                else:
                    entry["score"] = None
                result[value] = entry
            out.append(result)
        return out

