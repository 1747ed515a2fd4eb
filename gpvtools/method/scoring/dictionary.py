"""The dictionary backend: a word-count baseline from a lexicon, to compare GPV with (paper Tables 2, 7).

A lexicon is a JSON object {value: [word, …]} or a LIWC-style .dic file; a word ending in '*'
matches every word it begins. For each value the record gets the number of matching words, the
number of words, and score = matches / words (null for a text without words).
"""

import re
from pathlib import Path

import orjson

from ...streaming.errors import GpvError, UsageError
from . import Scorer

WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def load_lexicon(path):
    """{value: (set of whole words, tuple of prefixes)} from a .json or LIWC .dic file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise GpvError(f"lexicon {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise GpvError(f"lexicon {path} is not UTF-8 text") from None
    if path.suffix == ".dic":
        raw = _parse_dic(path, text)
    else:
        try:
            raw = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise GpvError(f"lexicon {path} is not valid JSON: {e.msg}") from None
        if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
            raise GpvError(f"lexicon {path} must be a JSON object of value -> list of words")
    lexicon = {}
    for value, words in raw.items():
        words = [str(w).lower().strip() for w in words if str(w).strip()]
        lexicon[value] = ({w for w in words if not w.endswith("*")},
                          tuple(w[:-1] for w in words if w.endswith("*")))
    return lexicon


def _parse_dic(path, text):
    """LIWC .dic: a header of 'number<TAB>category' between '%' lines, then 'word<TAB>numbers…'."""
    parts = text.split("%")
    if len(parts) < 3:
        raise GpvError(f"lexicon {path} is not a LIWC .dic file (no %-delimited category header)")
    categories = {}
    for line in parts[1].strip().splitlines():
        fields = line.split()
        if len(fields) >= 2:
            categories[fields[0]] = " ".join(fields[1:])
    raw = {name: [] for name in categories.values()}
    for line in "%".join(parts[2:]).strip().splitlines():
        fields = line.split()
        if not fields:
            continue
        for number in fields[1:]:
            if number not in categories:
                raise GpvError(f"lexicon {path}: word '{fields[0]}' names category {number}, not in the header")
            raw[categories[number]].append(fields[0])
    return raw


class DictionaryScorer(Scorer):
    backend = "dictionary"

    def __init__(self, path):
        self.lexicon = load_lexicon(path)
        self.name = Path(path).name

    def check_values(self, values):
        missing = [v for v in values if v not in self.lexicon]
        if missing:
            raise UsageError(f"the lexicon has no {', '.join(repr(v) for v in missing)}; "
                             f"it has: {', '.join(self.lexicon)}")

    def measure(self, sentences, values):
        out = []
        for sentence in sentences:
            words = [w.lower().replace("’", "'") for w in WORD.findall(sentence)]
            result = {}
            for value in values:
                exact, prefixes = self.lexicon[value]
                count = sum(1 for w in words if w in exact or (prefixes and w.startswith(prefixes)))
                result[value] = {"count": count, "words": len(words),
                                 "score": round(count / len(words), 6) if words else None}
            out.append(result)
        return out
