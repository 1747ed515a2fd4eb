"""Where a perception was said: a text's sentences as character spans, and a perception's place among them.

A perception is a measurement only if its author said it (DESIGN.md, "Models and where they run"). So
every perception gpv-parse writes names a span of its chunk's text: the sentence(s) it was found in.
Segmentation (`sentence_spans`, `clause_spans`) cuts a text into spans without a model; `align` finds
where a model's perception was said, and how much of it is there (`Alignment.grounding`: the share of
its content words found in the span, 1.0 for a copy of the text); `ground` keeps a model's perceptions
that are found, drops the others, and adds the sentences no perception covers.

Character offsets are Python string indices (Unicode code points) into the text as given.
"""

import re
from dataclasses import dataclass

MIN_WORDS = 3  # a piece of fewer words is joined to its neighbour (it rarely says anything alone)
MIN_GROUNDING = 0.6
MAX_WINDOW = 2  # a perception may draw on up to this many neighbouring sentences

# Words whose full stop does not end a sentence, whatever follows (titles and the like) ...
_TITLES = frozenset("mr mrs ms dr prof st jr sr vs fr rev gen col capt lt sgt hon mt ft".split())
# ... and whose full stop ends one only before a capital letter.
_ABBREVIATIONS = frozenset("etc e.g i.e eg ie approx incl esp dept univ no nos vol fig cf al ca min max "
                           "jan feb mar apr jun jul aug sep sept oct nov dec a.m p.m u.s u.k".split())
_CLOSERS = "\"'\u201d\u2019)]"
_END = re.compile(r"(\.{3,}|\u2026|[.!?]+)([" + re.escape(_CLOSERS) + r"]*)(?=\s)")
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")
_LINE = re.compile(r"\n")
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
_BULLET = re.compile(r"\s*(?:[-*\u2022>#]|\d+[.)])\s")


def _word_before(text, i):
    m = re.search(r"([A-Za-z.]+)$", text[max(0, i - 40):i])
    return m.group(1).rstrip(".") if m else ""


def _next_visible(text, i):
    m = re.compile(r"\s*(\S)").match(text, i)
    return m.group(1) if m else ""


def _is_end(text, m):
    """Whether the punctuation matched by M ends a sentence."""
    mark = m.group(1)
    following = _next_visible(text, m.end())
    if not following:
        return True
    if mark in ("...", "\u2026") or mark.startswith("..."):
        return not following.islower()  # "I was like... whatever" goes on
    if mark != ".":
        return True
    word = _word_before(text, m.start())
    if word.lower() in _TITLES:
        return False
    if len(word) == 1 and word.isupper() and word != "I":  # an initial: "J. Smith"
        return False
    if word.lower() in _ABBREVIATIONS or re.fullmatch(r"(?:[a-z]\.)+[a-z]", word.lower()):
        return following.isupper()
    return True


def _breaks(text):
    """Character positions where a sentence ends (exclusive), in order."""
    cuts = set()
    for m in _PARAGRAPH.finditer(text):
        cuts.add(m.start())
    for m in _LINE.finditer(text):
        before = text[:m.start()].rstrip()
        after = text[m.end():]
        if not before or not after.strip():
            continue
        # A line ending in punctuation, or a next line that starts anew (a capital, a digit, a bullet),
        # ends a sentence; otherwise the newline only wraps a line.
        first = after.lstrip()[:1]
        if before[-1] in ".!?:;" + _CLOSERS or first.isupper() or first.isdigit() or _BULLET.match(after):
            cuts.add(m.start())
    for m in _END.finditer(text):
        if _is_end(text, m):
            cuts.add(m.end())
    return sorted(cuts)


def _trim(text, start, end):
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _words(text, start, end):
    return len(_WORD.findall(text, start, end))


def _join_short(text, spans, min_words):
    """Join a piece of fewer than MIN_WORDS words to the piece before it (the first to the one after)."""
    out = []
    for start, end in spans:
        if out and (_words(text, start, end) < min_words or _words(text, *out[-1]) < min_words):
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def sentence_spans(text, min_words=MIN_WORDS):
    """The sentences of TEXT as (start, end) character spans, in order, without surrounding space.

    A sentence ends at . ! ? (and closing quotes or brackets) before white space, unless the full stop
    belongs to a title (Mr.), an initial, or an abbreviation before a small letter; an ellipsis before a
    small letter goes on. A paragraph break always ends one; a single newline ends one after
    punctuation or before a capital, a digit or a bullet, and otherwise only wraps the line. Pieces
    without a letter or digit are left out; a piece of fewer than MIN_WORDS words is joined to its
    neighbour, so nothing with words in it is lost.
    """
    spans, start = [], 0
    for cut in _breaks(text) + [len(text)]:
        s, e = _trim(text, start, cut)
        if e > s and _WORD.search(text, s, e):
            spans.append((s, e))
        start = max(start, cut)
    return _join_short(text, spans, min_words)


_CLAUSE = re.compile(r"\s*;\s+|\s+[\u2014\u2013-]{1,2}\s+|,?\s+but\s+")


def clause_spans(text, min_words=4):
    """The sentences of TEXT cut further at a semicolon, a dash between spaces, or "but", where each side
    keeps at least MIN_WORDS words; "but" stays with the clause it opens."""
    out = []
    for s, e in sentence_spans(text):
        start = s
        for m in _CLAUSE.finditer(text, s, e):
            at = m.group(0).find("but")
            nxt = m.start() + at if at >= 0 else m.end()
            if _words(text, start, m.start()) >= min_words and _words(text, nxt, e) >= min_words:
                out.append(_trim(text, start, m.start()))
                start = nxt
        out.append(_trim(text, start, e))
    return [span for span in out if span[1] > span[0]]


def span_text(text, span):
    """The text at SPAN with its white space made single spaces: what a perception record holds."""
    return " ".join(text[span[0]:span[1]].split())


# --- where a model's perception was said ----------------------------------------------------------------------------

STOPWORDS = frozenset("""a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has have having he
her here hers herself him himself his how i if in into is it its itself just me more most my myself nor now of off
on once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves also one get got""".split())

_SUFFIXES = ("ingly", "edly", "ness", "ment", "ing", "ies", "ied", "ed", "es", "ly", "s")


def stem(word):
    """A crude stem, enough to match "replaced" with "replace" and "neighbours" with "neighbour"."""
    w = word.lower().replace("\u2019", "'")
    if w.endswith("'s"):
        w = w[:-2]
    w = w.replace("'", "")
    for suffix in _SUFFIXES:
        if len(w) - len(suffix) >= 3 and w.endswith(suffix):
            w = w[:-len(suffix)] + ("y" if suffix in ("ies", "ied") else "")
            break
    if len(w) > 4 and w.endswith("e"):
        w = w[:-1]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "lsz":
        w = w[:-1]
    return w


def content_stems(text, start=0, end=None):
    """The stems of TEXT's words that carry content (not stop words), in order."""
    end = len(text) if end is None else end
    return [stem(w) for w in _WORD.findall(text, start, end) if w.lower() not in STOPWORDS]


@dataclass(frozen=True)
class Alignment:
    start: int
    end: int
    grounding: float  # share of the perception's content words found in text[start:end]; 1.0 for a copy

    @property
    def span(self):
        return [self.start, self.end]


def _normalised(text):
    """TEXT lower-cased with runs of white space as one space, and a map from its indices back to TEXT's."""
    out, index = [], []
    space = False
    for i, ch in enumerate(text):
        if ch.isspace():
            if not space and out:
                out.append(" ")
                index.append(i)
            space = True
            continue
        space = False
        out.append(ch.lower())
        index.append(i)
    return "".join(out), index


def _copy_of(perception, text):
    """The span where PERCEPTION stands in TEXT word for word (case and white space aside), or None."""
    needle = " ".join(perception.lower().split()).rstrip(".!?")
    if len(needle) < 2:
        return None
    hay, index = _normalised(text)
    at = hay.find(needle)
    if at < 0:
        return None
    return index[at], index[at + len(needle) - 1] + 1


def align(perception, text, spans, context=""):
    """Where in TEXT (cut into SPANS, its sentences) PERCEPTION was said, as an Alignment; None when none
    of its content words is in TEXT.

    A perception that stands in the text word for word is found there exactly. Otherwise each run of
    1 to MAX_WINDOW neighbouring sentences is tried, and the one holding the largest share of the
    perception's content words (stop words aside, crudely stemmed) wins; of equal shares the shortest,
    then the first. Words of CONTEXT (the question an answer answers) count as found wherever the span
    is, since a perception of an answer may name what the question set up.
    """
    copy = _copy_of(perception, text)
    if copy is not None:
        return Alignment(*copy, 1.0)
    words = set(content_stems(perception))
    if not words or not spans:
        return None
    given = words & set(content_stems(context))
    stems = [set(content_stems(text, s, e)) for s, e in spans]
    best = None
    for size in range(1, min(MAX_WINDOW, len(spans)) + 1):
        for i in range(len(spans) - size + 1):
            found = len(words & (given | set().union(*stems[i:i + size]))) / len(words)
            if best is None or found > best[0] + 1e-9:
                best = (found, i, size)
    found, i, size = best
    if found == 0:
        return None
    return Alignment(spans[i][0], spans[i + size - 1][1], round(found, 4))


@dataclass(frozen=True)
class Perception:
    text: str
    span: tuple
    parse: str  # "model": a model's perception found at span; "sentence": the text at span as it stands
    grounding: float


def segment(text, how="sentences"):
    """TEXT as perceptions without a model: each sentence (or clause) as it stands, with its span."""
    spans = clause_spans(text) if how == "clauses" else sentence_spans(text)
    return [Perception(span_text(text, s), s, "sentence", 1.0) for s in spans]


def ground(found, text, min_grounding=MIN_GROUNDING, fill=True, context=""):
    """(perceptions, dropped): a model's perceptions FOUND placed in TEXT.

    Each is kept with its span where at least MIN_GROUNDING of its content words are found there, and
    dropped otherwise (DROPPED lists them), as is one of fewer than MIN_WORDS words (a fragment such as
    "We should" is no statement, even where the text holds it). With FILL, every sentence that no kept
    perception overlaps is added as it stands, so that nothing the author said is left unmeasured. The
    result is in the order of the text. CONTEXT: as for `align`."""
    spans = sentence_spans(text)
    kept, dropped = [], []
    for p in found:
        a = align(p, text, spans, context) if len(_WORD.findall(p)) >= MIN_WORDS else None
        if a is None or a.grounding < min_grounding:
            dropped.append(p)
        else:
            kept.append(Perception(p, (a.start, a.end), "model", a.grounding))
    if fill:
        for s in spans:
            if not any(p.span[0] < s[1] and s[0] < p.span[1] for p in kept):
                kept.append(Perception(span_text(text, s), s, "sentence", 1.0))
    kept.sort(key=lambda p: (p.span[0], p.parse != "model"))
    return kept, dropped
