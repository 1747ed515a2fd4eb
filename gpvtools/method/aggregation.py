"""Group means of perception-level value scores (paper §3.3), exact, order-free and mergeable.

An individual's (a group's) value is the mean of its measured perception-level scores. The
accumulators here keep, per group and value, the count and the *exact* sums of the scores and of
their squares: every score is a binary double m·2^-k, so both sums are integers in units of 2^-k
and 2^-2k (k the largest exponent seen). Mean and sample variance are then single correctly
rounded divisions of integers. Hence the result does not depend on the order of the input
(shuffled and sorted input give byte-identical output), no cancellation can occur (unlike
sum-of-squares in floats, and more strongly than Welford's update, which is stable but order
dependent), and merging groups is as exact as the numbers merged.

Merging aggregates (of shards) reads each group's (n, mean, sd). Those are doubles too, so
n·mean and (n-1)·sd² + n·mean² are again exact dyadic numbers, and the pooled mean and sd
(Chan et al.'s parallel formulas, here without rounding) come out correctly rounded from the
shards' rounded figures: a merge agrees with aggregating the whole to about 1e-16, relatively.

Nothing here knows about click or streams: records in, records out.
"""

import math

from ..streaming.errors import BadRecord, UsageError
from ..streaming.jsonl import json_kind
from .groups import group_identity, group_value, key_string, sort_key
from .values import HIGHER_ORDER

# The field an aggregate record holds its basic-value count in, marking a derived higher-order entry.
HIGHER_ORDER_MARK = "n_basic"
RESERVED = ("values", "n_perceptions", "group_by")


class Moments:
    """n, Σx and Σx² of doubles, held exactly; mean and sample sd correctly rounded."""

    __slots__ = ("k", "n", "s1", "s2")

    def __init__(self):
        self.n = self.s1 = self.s2 = self.k = 0  # s1 in units of 2^-k, s2 in units of 2^-2k

    def add(self, x):
        num, den = x.as_integer_ratio()  # den is a power of two: x = num / 2**k
        self._absorb(1, num, num * num, den.bit_length() - 1)

    def _absorb(self, n, s1, s2, k):
        if k > self.k:
            shift = k - self.k
            self.s1 <<= shift
            self.s2 <<= 2 * shift
            self.k = k
        elif k < self.k:
            s1 <<= self.k - k
            s2 <<= 2 * (self.k - k)
        self.n += n
        self.s1 += s1
        self.s2 += s2

    def add_summary(self, n, mean, sd):
        """Pool in a group of n scores summarised by its mean and sample sd (sd None or 0 when n < 2)."""
        if n == 0:
            return
        m, dm = mean.as_integer_ratio()
        s, ds = (sd or 0.0).as_integer_ratio()
        km, ks = dm.bit_length() - 1, ds.bit_length() - 1
        k = max(km, ks)
        s1 = (n * m) << (k - km)
        # Σx² = (n-1)·sd² + n·mean², both terms exact in units of 2^-2k.
        s2 = ((n - 1) * s * s << 2 * (k - ks)) + (n * m * m << 2 * (k - km))
        self._absorb(n, s1, s2, k)

    def mean(self):
        return self.s1 / (self.n << self.k) if self.n else None

    def sd(self):
        if self.n < 2:
            return None
        numerator = self.n * self.s2 - self.s1 * self.s1  # n·Σx² − (Σx)² = n·(n−1)·variance, exactly
        return math.sqrt(max(numerator, 0) / ((self.n * (self.n - 1)) << (2 * self.k)))


def is_number(x):
    return (type(x) is float or type(x) is int) and math.isfinite(x)


# --- groups ---------------------------------------------------------------------------------------

class Group:
    """One group's running totals: records, the scorer, kept fields, and Moments per value."""

    __slots__ = ("by_values", "kept", "moments", "n_records", "scorer", "scorer_line", "instruments")

    def __init__(self, by_values, value_names):
        self.by_values = by_values
        self.n_records = 0
        self.scorer = self.scorer_line = None
        self.instruments = {}  # instrument identity -> (scorer tag, card or None), in the order first seen
        self.kept = None
        self.moments = {name: Moments() for name in value_names}


_DIFFERS = object()
_ABSENT = object()


class Aggregator:
    """Folds scored perception records (or, with merge=True, aggregate records) into groups.

    `add(record, line)` checks a record completely before it changes anything, so a bad record
    (BadRecord) leaves the totals as they were. `records()` gives the aggregate records, sorted by
    the group values.
    """

    def __init__(self, by, *, keep=(), missing_group="error", min_evidence=1, higher_order=False, merge=False,
                 mixed_values="error", mixed_instruments=False):
        if by is None and not merge:
            raise UsageError("--by names no field")
        self.by, self.by_line = None, None
        if by is not None:
            self._set_by(by)
        self.keep_asked = list(dict.fromkeys(keep))
        self.keep = [f for f in self.keep_asked if f not in (self.by or ())]
        bad = [f for f in self.keep if f in RESERVED or f in ("id", "scorer", "instrument")]
        if bad:
            raise UsageError(f"--keep cannot name '{bad[0]}': aggregate records set that field themselves")
        self.missing_group, self.min_evidence = missing_group, min_evidence
        self.higher_order, self.merge, self.mixed_values = higher_order, merge, mixed_values
        self.mixed_instruments = mixed_instruments
        self.first_instrument = None  # (identity, scorer tag, line) of the first record
        self.groups = {}
        self.names = None          # the value names, in the order first seen
        self.names_set = None
        self.first_line = None     # where the value set was first seen
        self.value_sets = {}       # frozenset of names -> records (only with mixed_values='union')
        self.by_from_input = by is None  # --merge without --by: the inputs' own group_by
        self.saw_higher_order = False
        self.n_records = 0
        self.missing_skipped = 0
        self.missing_null = 0
        self.kept_differs = {f: 0 for f in self.keep}
        self.kept_absent = {f: 0 for f in self.keep}

    def _set_by(self, by):
        if not by:
            raise UsageError("--by names no field")
        bad = [f for f in by if f in RESERVED]
        if bad:
            raise UsageError(f"--by cannot name '{bad[0]}': aggregate records use that field themselves")
        self.by = list(by)

    # -- checking one record ---------------------------------------------------------------------

    def _group_by_of(self, record, line):
        """--merge without --by: group as the aggregates say they were grouped (their group_by)."""
        by = record.get("group_by")
        if not isinstance(by, list) or not by or not all(isinstance(f, str) and f for f in by):
            raise BadRecord("field 'group_by' is missing or not a list of field names; give --by", line, record)
        if self.by is None:
            self._set_by(by)
            self.by_line = line
            self.keep = [f for f in self.keep_asked if f not in self.by]
        elif by != self.by:
            raise BadRecord(f"grouped by {','.join(by)}, but line {self.by_line} by {','.join(self.by)}; "
                            f"give --by to merge them by common fields", line, record)

    def _by_values(self, record, line):
        out = []
        for field in self.by:
            if field in record:
                out.append(group_value(record, field, line))
            elif field == "doc_id" and "id" in record:
                out.append(group_value(record, "id", line))  # a document scored whole: its id is the doc id
            elif self.missing_group == "error":
                raise BadRecord(f"field '{field}' is missing (grouping by --by {','.join(self.by)}; "
                                f"--missing-group skip or null to go on)", line, record)
            elif self.missing_group == "skip":
                return None
            else:
                out.append(None)
        return out

    def _values(self, record, line):
        """The record's {name: score} (perceptions) or {name: (n, score, sd)} (merge), checked."""
        values = record.get("values")
        if "values" not in record:
            raise BadRecord("field 'values' is missing", line, record)
        if not isinstance(values, dict):
            raise BadRecord(f"field 'values' must be an object, got {json_kind(values)}", line, record)
        if self.merge:
            n = record["n_perceptions"]
            if type(n) is not int or n < 0:
                raise BadRecord("field 'n_perceptions' must be a count", line, record)
        elif "group_by" in record:  # (gpv-parse's perception records have an n_perceptions of their own)
            raise BadRecord("this is an aggregate record (it has 'group_by'); combine aggregates with "
                            "--merge", line, record)
        out = {}
        for name, entry in values.items():
            if not isinstance(entry, dict):
                raise BadRecord(f"values.{name} must be an object, got {json_kind(entry)}", line, record)
            if self.merge:
                if HIGHER_ORDER_MARK in entry:
                    self.saw_higher_order = True
                    continue  # derived; recomputed from the merged basic values
                out[name] = _summary(entry, name, line, record)
                continue
            if "score" not in entry:
                raise BadRecord(f"values.{name} has no 'score'", line, record)
            score = entry["score"]
            if score is not None and not is_number(score):
                raise BadRecord(f"values.{name}.score must be a number or null, got {json_kind(score)}", line, record)
            out[name] = score
        return out

    def _check_names(self, names, line, record):
        if self.names is None:
            self.names, self.names_set, self.first_line = list(names), set(names), line
            return
        if names.keys() == self.names_set:
            return
        if self.mixed_values == "union":
            for name in names:
                if name not in self.names_set:
                    self.names.append(name)
                    self.names_set.add(name)
            return
        missing = [n for n in self.names if n not in names]
        extra = [n for n in names if n not in self.names_set]
        parts = (([f"missing {', '.join(missing)}"] if missing else [])
                 + ([f"extra {', '.join(extra)}"] if extra else []))
        raise BadRecord(f"its values differ from line {self.first_line}'s: {'; '.join(parts)} "
                        f"(--mixed-values union aggregates the union)", line, record)

    # -- folding -----------------------------------------------------------------------------------

    def add(self, record, line):
        """Fold one record in; False when --missing-group skip left it out."""
        if self.merge and "n_perceptions" not in record:
            raise BadRecord("not an aggregate record: field 'n_perceptions' is missing "
                            "(--merge combines gpv-aggregate's output)", line, record)
        if self.by_from_input:
            self._group_by_of(record, line)
        by_values = self._by_values(record, line)
        if by_values is None:
            self.missing_skipped += 1
            return False
        scores = self._values(record, line)
        identity = group_identity(by_values)
        group = self.groups.get(identity)
        scorer = record.get("scorer")
        instruments = self._instruments_of(record, line)
        self._check_instrument(group, instruments, scorer, line, record)
        self._check_names(scores, line, record)
        if group is None:
            group = self.groups[identity] = Group(by_values, self.names)
            group.scorer, group.scorer_line = scorer, line
        for key, tag, card in instruments:
            group.instruments.setdefault(key, (tag, card))
        if self.mixed_values == "union":
            self.value_sets[frozenset(scores)] = self.value_sets.get(frozenset(scores), 0) + 1
        if self.missing_group == "null" and any(f not in record and not (f == "doc_id" and "id" in record)
                                                for f in self.by):
            self.missing_null += 1
        self._keep(group, record)
        moments = group.moments
        if self.merge:
            group.n_records += record["n_perceptions"]
            for name, (n, mean, sd) in scores.items():
                acc = moments.get(name)
                if acc is None:
                    acc = moments[name] = Moments()
                acc.add_summary(n, mean, sd)
        else:
            group.n_records += 1
            for name, score in scores.items():
                if score is not None:
                    acc = moments.get(name)
                    if acc is None:
                        acc = moments[name] = Moments()
                    acc.add(score)
        self.n_records += 1
        return True

    def _instruments_of(self, record, line):
        """[(identity, scorer tag, card)] of a record: one, or an aggregate's pooled ones; a record made
        before instruments were recorded is known by its scorer tag alone."""
        card = record.get("instrument")
        cards = card if isinstance(card, list) and self.merge else [card]
        out = []
        tags = str(record.get("scorer")).split(" + ") if isinstance(card, list) else [record.get("scorer")]
        for i, c in enumerate(cards):
            if c is None:
                out.append((("scorer", record.get("scorer")), record.get("scorer"), None))
            elif isinstance(c, dict) and isinstance(c.get("id"), str):
                out.append((("id", c["id"]), tags[i] if i < len(tags) else c["id"], c))
            else:
                raise BadRecord("field 'instrument' must be an instrument card (an object with an 'id')", line,
                                record)
        return out

    def _check_instrument(self, group, instruments, scorer, line, record):
        """Records of different instruments are not pooled: not in one group, and not in one run unless the
        groups keep them apart (--by scorer) or --mixed-instruments says to."""
        key = tuple(k for k, _, _ in instruments)
        if self.first_instrument is None:
            self.first_instrument = (key, scorer, line)
        if self.mixed_instruments:
            return
        if group is not None:
            if key == tuple(group.instruments):
                return
            raise BadRecord(f"group '{key_string(group.by_values)}' mixes instruments: {scorer} here, "
                            f"{group.scorer} on line {group.scorer_line}; --mixed-instruments pools them", line,
                            record)
        first_key, first_scorer, first_line = self.first_instrument
        if key == first_key or (self.by and "scorer" in self.by):
            return  # --by scorer: a group of its own for each instrument
        raise BadRecord(f"scored by another instrument than line {first_line}: {scorer} here, {first_scorer} there; "
                        f"--by scorer keeps them apart, --mixed-instruments pools them", line, record)

    def _keep(self, group, record):
        if not self.keep:
            return
        if group.kept is None:
            group.kept = {f: record.get(f, _ABSENT) for f in self.keep}
            return
        for f in self.keep:
            if group.kept[f] is not _DIFFERS and record.get(f, _ABSENT) != group.kept[f]:
                group.kept[f] = _DIFFERS

    # -- results ------------------------------------------------------------------------------------

    def _higher_order(self):
        missing = [v for v in dict.fromkeys(v for vs in HIGHER_ORDER.values() for v in vs)
                   if v not in (self.names_set or ())]
        if missing:
            raise UsageError(f"--higher-order needs the 10 Schwartz basic values; the input lacks "
                             f"{', '.join(missing)}")

    def records(self):
        """The aggregate records, sorted by their group values, one at a time."""
        higher_order = self.higher_order or self.saw_higher_order
        if higher_order and self.groups:
            self._higher_order()
        names = self.names or []
        for identity in sorted(self.groups, key=lambda i: sort_key(self.groups[i].by_values)):
            group = self.groups[identity]
            record = {"id": key_string(group.by_values)}
            record.update(zip(self.by, group.by_values))
            for f in self.keep:
                value = group.kept[f]
                if value is _DIFFERS:
                    self.kept_differs[f] += 1
                elif value is _ABSENT:
                    self.kept_absent[f] += 1
                record[f] = None if value is _DIFFERS or value is _ABSENT else value
            record["id"] = key_string(group.by_values)
            record["n_perceptions"] = group.n_records
            values = {}
            for name in names:
                acc = group.moments.get(name)
                n = acc.n if acc else 0
                enough = n >= self.min_evidence and n > 0
                values[name] = {"score": acc.mean() if enough else None, "n": n,
                                "sd": acc.sd() if enough else None}
            if higher_order:
                values.update(higher_order_entries(values))
            record["values"] = values
            tags = list(dict.fromkeys(t for t, _ in group.instruments.values()))
            cards = [c for _, c in group.instruments.values()]
            record["scorer"] = group.scorer if len(tags) <= 1 else " + ".join(tags)
            if any(c is not None for c in cards):
                record["instrument"] = cards[0] if len(cards) == 1 else cards
            record["group_by"] = self.by
            yield record

    def summary(self):
        """Lines for stderr, after records() was called."""
        lines = []
        if self.missing_skipped:
            lines.append(f"{plural_records(self.missing_skipped)} without --by field(s) {','.join(self.by)} "
                         f"skipped (--missing-group skip)")
        if self.missing_null:
            lines.append(f"{plural_records(self.missing_null)} without --by field(s) {','.join(self.by)} "
                         f"grouped under null (--missing-group null)")
        for f in self.keep:
            if self.kept_differs[f]:
                lines.append(f"--keep {f}: differs within {plural_groups(self.kept_differs[f])}; null there")
            if self.kept_absent[f]:
                lines.append(f"--keep {f}: absent in {plural_groups(self.kept_absent[f])}; null there")
        if len(self.value_sets) > 1:
            sets = ", ".join(f"{len(s)} values in {plural_records(n)}" for s, n in
                             sorted(self.value_sets.items(), key=lambda kv: -kv[1]))
            lines.append(f"mixed value sets ({sets}); aggregated the union of {len(self.names)} values, "
                         f"a value absent from a record counting as unmeasured there")
        return lines


def plural_records(n):
    return f"{n} record" + ("" if n == 1 else "s")


def plural_groups(n):
    return f"{n} group" + ("" if n == 1 else "s")


def higher_order_entries(values):
    """Schwartz's higher-order values of one group: each the unweighted mean of its basic values' group
    scores, over those that have a score (Hedonism counts in both Openness to Change and
    Self-Enhancement, values.HIGHER_ORDER). n is the basic values' measured perceptions added up,
    n_basic how many basic values had a score; sd is null (it is not a mean of perceptions)."""
    out = {}
    for name, basics in HIGHER_ORDER.items():
        scores = [values[b]["score"] for b in basics if values[b]["score"] is not None]
        out[name] = {"score": math.fsum(scores) / len(scores) if scores else None,
                     "n": sum(values[b]["n"] for b in basics), "sd": None, HIGHER_ORDER_MARK: len(scores)}
    return out


def _summary(entry, name, line, record):
    """(n, mean, sd) of one value of an aggregate record, checked for --merge."""
    n, score, sd = entry.get("n"), entry.get("score"), entry.get("sd")
    if type(n) is not int or n < 0:
        raise BadRecord(f"values.{name}.n must be a count (--merge reads gpv-aggregate's output)", line, record)
    if score is not None and not is_number(score):
        raise BadRecord(f"values.{name}.score must be a number or null, got {json_kind(score)}", line, record)
    if sd is not None and (not is_number(sd) or sd < 0):
        raise BadRecord(f"values.{name}.sd must be a non-negative number or null", line, record)
    if n > 0 and score is None:
        raise BadRecord(f"values.{name} has n = {n} but no score (made with --min-evidence?); merge "
                        f"aggregates made with --min-evidence 1 and give --min-evidence to the merge", line, record)
    if n > 1 and sd is None:
        raise BadRecord(f"values.{name} has n = {n} but no sd", line, record)
    return n, (float(score) if score is not None else 0.0), (float(sd) if sd is not None else None)
