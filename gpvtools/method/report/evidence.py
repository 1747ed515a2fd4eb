"""The evidence: the scored perceptions that raised and lowered each group's score, top-k of each.

The evidence is streamed once; per group and value only the top-k perceptions that raised the
group's score and the k that lowered it are kept, in bounded heaps, so memory grows with groups x
values x k, never with the number of perceptions. A perception raised a score when it is above the
group's mean (0 where the group has no score), lowered it when below; those exactly at the mean (a
group of one perception) are kept apart, the k most relevant; ties are broken by the perception's id,
so the report does not depend on the order of the input.
"""

import heapq

from ...streaming.errors import BadRecord
from ...streaming.jsonl import DEFAULT_MAX_LINE_BYTES, Records, json_kind
from ..aggregation import Aggregator, is_number
from ..groups import group_identity
from .profiles import in_file, read_jsonl, value_entries


class _Desc:
    """A string that sorts backwards: the heap's root is then the worst kept item, ties by larger id."""

    __slots__ = ("s",)

    def __init__(self, s):
        self.s = s

    def __lt__(self, other):
        return other.s < self.s

    def __gt__(self, other):
        return other.s > self.s

    def __eq__(self, other):
        return self.s == other.s


class Evidence:
    """The perceptions that raised and lowered each group's score on each value: top-k of each, bounded."""

    def __init__(self, profiles, top_k, text_field="perception"):
        self.top_k, self.text_field = top_k, text_field
        self.profiles = profiles
        self.keyers, self.groups = {}, {}
        for index, p in enumerate(profiles):
            if p.group_by is None:
                continue
            by = tuple(p.group_by)
            if by not in self.keyers:
                # gpv-aggregate's own grouping (doc_id falling back to id); a missing field groups under null.
                self.keyers[by] = Aggregator(list(by), missing_group="null")
            self.groups[(by, group_identity(p.by_values))] = index
        # (group index, value, +1 raised | -1 lowered | 0 at the mean) -> heap of (key, Desc(id), seq, item)
        self.heaps = {}
        self.measured = {}   # (group index, value) -> measured perceptions seen
        self.seq = 0
        self.n_read = self.n_matched = self.n_unmatched = self.n_upstream = 0

    def read(self, path, max_line_bytes=DEFAULT_MAX_LINE_BYTES):
        records = Records(path, max_line_bytes)
        for line, record in read_jsonl(records):
            try:
                self.add(record, line)
            except BadRecord as e:
                raise in_file(records, e) from None
        self.n_upstream += records.upstream_errors

    def _group_of(self, record, line):
        for by, keyer in self.keyers.items():
            index = self.groups.get((by, group_identity(keyer._by_values(record, line))))
            if index is not None:
                return index
        return None

    def add(self, record, line):
        """Take one scored perception in; checked whole before anything is kept."""
        pid = _perception_id(record, line)
        scores = _scores(record, line)
        text = record.get(self.text_field)
        if not isinstance(text, str):
            what = "is missing" if self.text_field not in record else f"must be a string, got {json_kind(text)}"
            raise BadRecord(f"field '{self.text_field}' {what} (--text-field)", line, record)
        index = self._group_of(record, line)
        self.n_read += 1
        if index is None:
            self.n_unmatched += 1
            return
        self.n_matched += 1
        profile = self.profiles[index]
        item = None
        for name, (score, entry) in scores.items():
            if score is None or name not in profile.values or profile.values[name][3]:
                continue
            self.measured[(index, name)] = self.measured.get((index, name), 0) + 1
            mean = profile.values[name][0]
            reference = 0.0 if mean is None else mean
            if score == reference:  # at the mean (a group of one, or all alike): kept by relevance
                direction, key = 0, _relevance(entry)
            else:
                direction = 1 if score > reference else -1
                key = score * direction
            heap = self.heaps.setdefault((index, name, direction), [])
            if len(heap) == self.top_k and key < heap[0][0]:
                continue  # the common case, decided without building anything
            if item is None:
                item = self._item(record, pid, text)
            self._push(heap, key, pid, entry, score, item)

    def _push(self, heap, key, pid, entry, score, item):
        self.seq += 1
        row = (key, _Desc(pid), self.seq, (item, entry, score))
        if len(heap) < self.top_k:
            heapq.heappush(heap, row)
        elif row[:2] > heap[0][:2]:
            heapq.heapreplace(heap, row)

    @staticmethod
    def _item(record, pid, text):
        chunk = record.get("chunk_id")
        if not isinstance(chunk, (str, int, float)) or isinstance(chunk, bool):
            chunk = pid.rsplit("#", 1)[0] if "#" in pid else None
        doc = record.get("doc_id", record.get("id"))
        return {"id": pid, "text": text, "chunk_id": None if chunk is None else str(chunk),
                "doc_id": None if doc is None else str(doc)}

    def top(self, index, name, direction):
        """The kept perceptions of one direction, best first: [{id, text, chunk_id, doc_id, score, …}]."""
        rows = sorted(self.heaps.get((index, name, direction), []), key=lambda r: (-r[0], r[1].s))
        out = []
        for _, _, _, (item, entry, score) in rows:
            row = dict(item, score=score)
            for field in ("relevance", "support", "oppose"):
                row[field] = entry.get(field)
            out.append(row)
        return out


def _perception_id(record, line):
    if "id" not in record:
        raise BadRecord("field 'id' is missing", line, record)
    value = record["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRecord(f"field 'id' must be a string or a number, got {json_kind(value)}", line, record)
    return str(value)


def _scores(record, line):
    """{name: (score or None, entry)} of a scored perception, checked."""
    out = {}
    for name, entry, score in value_entries(record, line, score_required=True):
        for field in ("relevance", "support", "oppose"):
            x = entry.get(field)
            if x is not None and not is_number(x):
                raise BadRecord(f"values.{name}.{field} must be a number or null, got {json_kind(x)}", line, record)
        out[name] = (score, entry)
    return out


def _relevance(entry):
    r = entry.get("relevance")
    return float(r) if isinstance(r, (int, float)) and not isinstance(r, bool) else 0.0
