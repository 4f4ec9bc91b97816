"""Shard-key predicates and the slots they select, computed from bound values.

A predicate is built once per plan template; ``slots(nv)`` runs per
execution and returns a frozenset of slots, or ``None`` for "every slot".
Values that cannot be placed raise a clear error instead of guessing.
"""
from __future__ import annotations

import bisect
import math
from decimal import Decimal

from mdriver import err
from mdriver.config.model import Schema, TableRule
from mdriver.sharding import ShardKeyError, location_of_slot, slot_for

ALL = None  # "every slot"


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class Layout:
    """Precomputed physical locations of one sharded table: slot -> (datasource, database, table SQL)."""

    __slots__ = ("rule", "slots", "ds", "db", "table_sql", "by_db")

    def __init__(self, schema: Schema, rule: TableRule):
        self.rule = rule
        self.slots = rule.slots
        self.ds: list[str] = []
        self.db: list[str] = []
        self.table_sql: list[str] = []
        self.by_db: dict[tuple[str, str], list[int]] = {}
        for s in range(rule.slots):
            loc = location_of_slot(schema, rule, s)
            self.ds.append(loc.datasource)
            self.db.append(loc.database)
            self.table_sql.append(f"{quote(loc.database)}.{quote(loc.table)}")
            self.by_db.setdefault((loc.datasource, loc.database), []).append(s)

    def loc(self, slot: int) -> tuple[str, str]:
        return self.ds[slot], self.db[slot]


class ValueRef:
    """Where a bound value comes from: a marker (possibly negated) or a constant."""

    __slots__ = ("index", "neg", "const")

    def __init__(self, index: int | None = None, neg: bool = False, const: object = None):
        self.index = index
        self.neg = neg
        self.const = const

    def get(self, nv) -> object:
        v = self.const if self.index is None else nv.value(self.index)
        if self.neg and v is not None:
            if isinstance(v, str):
                v = _coerce_int_text(v)
            if isinstance(v, (bytes, bytearray)) or v is None:
                return v
            v = -v
        return v

    def describe(self) -> str:
        base = f":v{self.index}" if self.index is not None else repr(self.const)
        return "-" + base if self.neg else base


def _coerce_int_text(v: str) -> object:
    s = v.strip()
    if s[:1] in "+-" and s[1:].isdigit() or s.isdigit():
        return int(s)
    return v


def _unroutable(rule: TableRule, value: object, why: str) -> err.MySQLError:
    return err.error(err.ProgrammingError, err.ER_WRONG_ARGUMENTS,
                     f"cannot route {rule.name}.{rule.shard_key} = {value!r}: {why}")


def key_value(rule: TableRule, value: object) -> object:
    """Coerce a bound value the way MySQL compares it with an integer key column."""
    if rule.algorithm in ("mod", "range"):
        if type(value) is int:
            return value
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, str):
            v = _coerce_int_text(value)
            if isinstance(v, int):
                return v
            raise _unroutable(rule, value, f"algorithm {rule.algorithm} needs an integer shard key")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, Decimal) and value == value.to_integral_value():
            return int(value)
        if isinstance(value, int):
            return int(value)
        raise _unroutable(rule, value, f"algorithm {rule.algorithm} needs an integer shard key")
    return value


def slot_of(rule: TableRule, value: object) -> int:
    try:
        return slot_for(rule, key_value(rule, value))
    except ShardKeyError as e:
        raise err.error(err.ProgrammingError, err.ER_WRONG_ARGUMENTS, f"cannot route: {e}") from None


class Pred:
    """A condition on one shard key that narrows the slots."""

    def slots(self, rule: TableRule, nv, limit: int):  # -> frozenset | None
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class Eq(Pred):
    __slots__ = ("ref",)

    def __init__(self, ref: ValueRef):
        self.ref = ref

    def slots(self, rule, nv, limit):
        v = self.ref.get(nv)
        if v is None:  # key = NULL is never true
            return frozenset()
        return frozenset((slot_of(rule, v),))

    def describe(self) -> str:
        return f"= {self.ref.describe()}"


class InList(Pred):
    """``key IN (...)``; ``pid`` identifies it for per-shard pruning of the list."""

    __slots__ = ("refs", "pid", "prunable")

    def __init__(self, refs: list[ValueRef], pid: int, prunable: bool):
        self.refs = refs
        self.pid = pid
        self.prunable = prunable

    def slots(self, rule, nv, limit):
        out = set()
        for r in self.refs:
            v = r.get(nv)
            if v is not None:
                out.add(slot_of(rule, v))
        return frozenset(out)

    def per_slot(self, rule, nv) -> dict[int, list[int]]:
        """slot -> marker indexes of the values that live there (NULLs go nowhere)."""
        out: dict[int, list[int]] = {}
        for r in self.refs:
            v = r.get(nv)
            if v is not None:
                out.setdefault(slot_of(rule, v), []).append(r.index)
        return out

    def describe(self) -> str:
        return "IN (" + ", ".join(r.describe() for r in self.refs) + ")"


class Range(Pred):
    """``key > a``, ``key BETWEEN a AND b`` and conjunctions of such bounds on one key.

    ``lows``/``highs`` are (value, inclusive) bounds; the tightest of each wins.
    """

    __slots__ = ("lows", "highs")

    def __init__(self, lows: list[tuple[ValueRef, bool]], highs: list[tuple[ValueRef, bool]]):
        self.lows = lows
        self.highs = highs

    @classmethod
    def merge(cls, ranges: list[Range]) -> Range:
        return cls([b for r in ranges for b in r.lows], [b for r in ranges for b in r.highs])

    def slots(self, rule, nv, limit):
        lo = hi = None
        for ref, incl in self.lows:
            b, ok = _range_bound(ref, incl, True, nv)
            if not ok:
                return frozenset()
            if b is not None and (lo is None or b > lo):
                lo = b
        for ref, incl in self.highs:
            b, ok = _range_bound(ref, incl, False, nv)
            if not ok:
                return frozenset()
            if b is not None and (hi is None or b < hi):
                hi = b
        if lo is not None and hi is not None and hi < lo:
            return frozenset()
        n = rule.slots
        if rule.algorithm == "range":
            a = 0 if lo is None else bisect.bisect_right(rule.boundaries, lo)
            b = n - 1 if hi is None else bisect.bisect_right(rule.boundaries, hi)
            return frozenset(range(a, b + 1))
        if lo is None or hi is None or rule.algorithm != "mod":
            # hash/custom keys may be text: '05' is BETWEEN 1 AND 9 but does not hash like 5
            return ALL
        if hi - lo + 1 > limit:
            return ALL
        return frozenset(k % n for k in range(lo, hi + 1))

    def describe(self) -> str:
        parts = [(">= " if incl else "> ") + r.describe() for r, incl in self.lows]
        parts += [("<= " if incl else "< ") + r.describe() for r, incl in self.highs]
        return " AND ".join(parts)


def _range_bound(ref: ValueRef | None, incl: bool, lower: bool, nv):
    if ref is None:
        return None, True
    v = ref.get(nv)
    if v is None:
        return None, False
    if isinstance(v, str):
        v = _coerce_int_text(v)
    if isinstance(v, bool):
        v = int(v)
    if not isinstance(v, (int, float, Decimal)) or isinstance(v, float) and not math.isfinite(v):
        return None, True
    if lower:
        b = math.floor(v) + 1 if not incl and v == math.floor(v) else math.ceil(v)
    else:
        b = math.ceil(v) - 1 if not incl and v == math.ceil(v) else math.floor(v)
    return int(b), True


class AnyOf(Pred):
    """``p1 OR p2 OR ...``: the union of the slots of each side."""

    __slots__ = ("preds",)

    def __init__(self, preds: list[Pred]):
        self.preds = preds

    def slots(self, rule, nv, limit):
        out: set[int] = set()
        for p in self.preds:
            s = p.slots(rule, nv, limit)
            if s is ALL:
                return ALL
            out |= s
        return frozenset(out)

    def describe(self) -> str:
        return "(" + " OR ".join(p.describe() for p in self.preds) + ")"


class AllOf(Pred):
    """Conjunction: the intersection of the slots of each side (range bounds combined first)."""

    __slots__ = ("preds",)

    def __init__(self, preds: list[Pred]):
        ranges = [p for p in preds if isinstance(p, Range)]
        if len(ranges) > 1:
            preds = [p for p in preds if not isinstance(p, Range)] + [Range.merge(ranges)]
        self.preds = preds

    def slots(self, rule, nv, limit):
        out = ALL
        for p in self.preds:
            s = p.slots(rule, nv, limit)
            if s is ALL:
                continue
            out = s if out is ALL else out & s
        return out

    def describe(self) -> str:
        return " AND ".join(p.describe() for p in self.preds)


def compact_slots(slots) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (how describe() prints slot sets)."""
    if slots is ALL:
        return "all"
    s = sorted(slots)
    if not s:
        return ""
    out = []
    start = prev = s[0]
    for x in s[1:]:
        if x == prev + 1:
            prev = x
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = x
    out.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(out)

