"""Plan primitives in the manner of Vitess's engine: one small class per operation.

Every primitive is bound (it knows its physical statements and values) and
sans-IO: ``execute()`` is a generator that yields one batch of ShardQuery,
receives the ShardResults in the same order and returns a RowSet (rows to
merge further) or a Result (writes). ``describe()`` returns a JSON-able dict;
``queries()`` lists the physical statements without running anything.
"""
from __future__ import annotations

import heapq
from decimal import Decimal
from typing import Callable, Generator

from mdriver.router import merge
from mdriver.router.types import Column, Result, ShardQuery, ShardResult, decimal_column, double_column, int_column

Exec = Generator[list[ShardQuery], list[ShardResult], object]


class RowSet:
    __slots__ = ("columns", "rows", "warnings")

    def __init__(self, columns: list[Column], rows: list, warnings: int = 0):
        self.columns = columns
        self.rows = rows
        self.warnings = warnings


class Primitive:
    input: Primitive | None = None

    def execute(self) -> Exec:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError

    def queries(self) -> list[ShardQuery]:
        return self.input.queries() if self.input is not None else []

    def _with_input(self, d: dict) -> dict:
        if self.input is not None:
            d["input"] = self.input.describe()
        return d


def _warnings(results: list[ShardResult]) -> int:
    return sum(r.warnings for r in results)


class Route(Primitive):
    """Send physical statements; opcodes: UNSHARDED, REFERENCE, EQUAL, IN, SCATTER, NONE."""

    def __init__(self, opcode: str, tables: list[str], slots: str, statements: list[ShardQuery], sample: str = "",
                 pushed: dict | None = None):
        self.opcode = opcode
        self.tables = tables
        self.slots = slots
        self.statements = statements
        self.sample = sample or (statements[0].sql if statements else "")
        self.pushed = pushed or {}

    def execute(self) -> Exec:
        results = yield list(self.statements)
        return results

    def queries(self) -> list[ShardQuery]:
        return list(self.statements)

    def describe(self) -> dict:
        d = {"operator": "Route", "opcode": self.opcode, "tables": self.tables}
        if self.slots:
            d["slots"] = self.slots
        d["statements"] = len(self.statements)
        d["datasources"] = sorted({q.datasource for q in self.statements})
        if len(self.statements) == 1:
            d["database"] = self.statements[0].database
        d["sql"] = self.sample
        d.update(self.pushed)
        return d


class Concatenate(Primitive):
    """Rows of every shard, one after the other."""

    def __init__(self, input: Route):
        self.input = input

    def execute(self) -> Exec:
        results = yield from self.input.execute()
        rows: list = []
        for r in results:
            rows.extend(r.rows)
        return RowSet(list(results[0].columns), rows, _warnings(results))

    def describe(self) -> dict:
        return self._with_input({"operator": "Concatenate"})


class MergeSort(Primitive):
    """Merge per-shard streams that each arrive sorted by ``keys`` [(column index, descending)]."""

    def __init__(self, input: Route, keys: list[tuple[int, bool]]):
        self.input = input
        self.keys = keys

    def execute(self) -> Exec:
        results = yield from self.input.execute()
        columns = list(results[0].columns)
        key = merge.sort_key_fn([(_getter(i), desc, merge.value_key_fn(columns[i])) for i, desc in self.keys])
        streams = [r.rows for r in results if r.rows]
        rows = list(heapq.merge(*streams, key=key)) if len(streams) > 1 else (streams[0] if streams else [])
        return RowSet(columns, rows, _warnings(results))

    def describe(self) -> dict:
        return self._with_input({"operator": "MergeSort", "keys": [_key_text(i, d) for i, d in self.keys]})


def _getter(i: int) -> Callable[[tuple], object]:
    return lambda row: row[i]


def _key_text(i: int, desc: bool) -> str:
    return f"{i}{' DESC' if desc else ''}"


class Out:
    """One column of an aggregate's output.

    kind: any | count | sum | min | max | avg | count_distinct | sum_distinct | avg_distinct
    """

    __slots__ = ("kind", "cols", "name")

    def __init__(self, kind: str, cols: tuple[int, ...], name: str):
        self.kind = kind
        self.cols = cols
        self.name = name

    def text(self) -> str:
        return f"{self.kind}({','.join(map(str, self.cols))})"


class Aggregate(Primitive):
    """Combine partial aggregates from every shard, grouped by ``group`` columns (a hash aggregate)."""

    def __init__(self, input: Route, group: list[int], outs: list[Out]):
        self.input = input
        self.group = group
        self.outs = outs

    def execute(self) -> Exec:
        results = yield from self.input.execute()
        cols = list(results[0].columns)
        gkeys = [merge.value_key_fn(cols[i]) for i in self.group]
        vkeys = {i: merge.value_key_fn(cols[i]) for o in self.outs for i in o.cols}
        groups: dict[tuple, list] = {}
        group = self.group
        for r in results:
            for row in r.rows:
                k = tuple(None if row[i] is None else f(row[i]) for i, f in zip(group, gkeys))
                st = groups.get(k)
                if st is None:
                    groups[k] = st = self._init()
                self._update(st, row, vkeys)
        if not group and not groups:
            groups[()] = self._init()
        rows = [self._finish(st, cols) for st in groups.values()]
        return RowSet(self._columns(cols), rows, _warnings(results))

    def _init(self) -> list:
        st: list = []
        for o in self.outs:
            k = o.kind
            if k == "count":
                st.append(0)
            elif k == "avg":
                st.append([None, 0])
            elif k == "count_distinct":
                st.append(set())
            elif k in ("sum_distinct", "avg_distinct"):
                st.append({})
            elif k == "any":
                st.append(_UNSET)
            else:
                st.append(None)
        return st

    def _update(self, st: list, row: tuple, vkeys: dict) -> None:
        for j, o in enumerate(self.outs):
            k = o.kind
            if k == "count":
                v = row[o.cols[0]]
                if v is not None:
                    st[j] += int(v)
            elif k == "sum":
                st[j] = merge.add(st[j], row[o.cols[0]])
            elif k == "min":
                st[j] = merge.pick_min(st[j], row[o.cols[0]], vkeys[o.cols[0]])
            elif k == "max":
                st[j] = merge.pick_max(st[j], row[o.cols[0]], vkeys[o.cols[0]])
            elif k == "avg":
                s = st[j]
                s[0] = merge.add(s[0], row[o.cols[0]])
                c = row[o.cols[1]]
                if c is not None:
                    s[1] += int(c)
            elif k == "count_distinct":
                vals = [row[i] for i in o.cols]
                if all(v is not None for v in vals):
                    st[j].add(tuple(vkeys[i](v) for i, v in zip(o.cols, vals)))
            elif k in ("sum_distinct", "avg_distinct"):
                v = row[o.cols[0]]
                if v is not None:
                    st[j].setdefault(vkeys[o.cols[0]](v), v)
            elif k == "any":
                if st[j] is _UNSET:
                    st[j] = row[o.cols[0]]

    def _finish(self, st: list, cols: list[Column]) -> tuple:
        out = []
        for j, o in enumerate(self.outs):
            k = o.kind
            v = st[j]
            if k == "avg":
                v = merge.average(v[0], v[1], cols[o.cols[0]])
            elif k == "count_distinct":
                v = len(v)
            elif k == "sum_distinct":
                v = _sum(v.values())
                if v is not None and not isinstance(v, float):
                    v = Decimal(v)  # SUM of exact numbers is DECIMAL in MySQL
            elif k == "avg_distinct":
                total = _sum(v.values())
                v = merge.average(total, len(v), _distinct_sum_column(cols[o.cols[0]]))
            elif k == "any" and v is _UNSET:
                v = None
            out.append(v)
        return tuple(out)

    def _columns(self, cols: list[Column]) -> list[Column]:
        out = []
        for o in self.outs:
            c = cols[o.cols[0]]
            k = o.kind
            if k in ("any", "count", "sum", "min", "max"):
                out.append(_renamed(c, o.name))
            elif k == "count_distinct":
                out.append(int_column(o.name))
            elif k == "avg":
                out.append(double_column(o.name) if merge.is_float_column(c) else decimal_column(o.name, merge.avg_scale(c, None)))
            elif k == "sum_distinct":
                sc = _distinct_sum_column(c)
                out.append(_renamed(sc, o.name))
            else:  # avg_distinct
                sc = _distinct_sum_column(c)
                out.append(double_column(o.name) if merge.is_float_column(sc) else decimal_column(o.name, merge.avg_scale(sc, None)))
        return out

    def describe(self) -> dict:
        return self._with_input({
            "operator": "HashAggregate",
            "group": list(self.group),
            "aggregates": [o.text() for o in self.outs],
        })


_UNSET = object()


def _sum(values) -> object:
    total = None
    for v in values:
        total = merge.add(total, v)
    return total


def _distinct_sum_column(c: Column) -> Column:
    from pymysql.constants import FIELD_TYPE

    if merge.is_float_column(c):
        return double_column(c.name)
    if c.type_code in (FIELD_TYPE.NEWDECIMAL, FIELD_TYPE.DECIMAL):
        return decimal_column(c.name, c.decimals)
    return decimal_column(c.name, 0)


def _renamed(c: Column, name: str) -> Column:
    if not name or c.name == name:
        return c
    from dataclasses import replace

    return replace(c, name=name)


class Compute(Primitive):
    """Append computed columns (select expressions over merged aggregates)."""

    def __init__(self, input: Primitive, exprs: list[tuple[str, Callable, str]], nv):
        self.input = input
        self.exprs = exprs  # (name, getter(row, nv), text)
        self.nv = nv

    def execute(self) -> Exec:
        rs = yield from self.input.execute()
        nv = self.nv
        rows = [row + tuple(g(row, nv) for _, g, _ in self.exprs) for row in rs.rows]
        cols = list(rs.columns)
        for k, (name, _, _) in enumerate(self.exprs):
            cols.append(_inferred_column(name, [r[len(rs.columns) + k] for r in rows]))
        return RowSet(cols, rows, rs.warnings)

    def describe(self) -> dict:
        return self._with_input({"operator": "Compute", "expressions": [t for _, _, t in self.exprs]})


def _inferred_column(name: str, values: list) -> Column:
    sample = next((v for v in values if v is not None), None)
    if isinstance(sample, bool) or isinstance(sample, int):
        return int_column(name)
    if isinstance(sample, Decimal):
        scale = max((max(0, -v.as_tuple().exponent) for v in values if isinstance(v, Decimal)), default=0)
        return decimal_column(name, scale)
    if isinstance(sample, float):
        return double_column(name)
    if isinstance(sample, (bytes, bytearray)):
        return Column(name, 252, 0, 0, 128, 63)
    return Column(name)


class Filter(Primitive):
    """HAVING across shards: keep rows for which the predicate is true."""

    def __init__(self, input: Primitive, predicate: Callable, text: str, nv):
        self.input = input
        self.predicate = predicate
        self.text = text
        self.nv = nv

    def execute(self) -> Exec:
        from mdriver.router.evaluate import truth

        rs = yield from self.input.execute()
        nv = self.nv
        rs.rows = [r for r in rs.rows if truth(self.predicate(r, nv))]
        return rs

    def describe(self) -> dict:
        return self._with_input({"operator": "Filter", "predicate": self.text})


class Sort(Primitive):
    """Sort merged rows in memory: keys are (getter(row, nv), descending, column index or None, text)."""

    def __init__(self, input: Primitive, keys: list[tuple[Callable, bool, int | None, str]], nv):
        self.input = input
        self.keys = keys
        self.nv = nv

    def execute(self) -> Exec:
        rs = yield from self.input.execute()
        nv = self.nv
        specs = []
        for get, desc, col, _ in self.keys:
            column = rs.columns[col] if col is not None else None
            specs.append(((lambda g: lambda row: g(row, nv))(get), desc, merge.value_key_fn(column)))
        rs.rows.sort(key=merge.sort_key_fn(specs))
        return rs

    def describe(self) -> dict:
        return self._with_input({"operator": "Sort", "keys": [t + (" DESC" if d else "") for _, d, _, t in self.keys]})


class Distinct(Primitive):
    """Drop rows equal (by collation) to an earlier one in the first ``width`` columns."""

    def __init__(self, input: Primitive, width: int | None):
        self.input = input
        self.width = width

    def execute(self) -> Exec:
        rs = yield from self.input.execute()
        w = self.width if self.width is not None else len(rs.columns)
        if w < 0:
            w = len(rs.columns) + w
        keyfns = [merge.value_key_fn(c) for c in rs.columns[:w]]
        seen = set()
        out = []
        for row in rs.rows:
            k = tuple(None if v is None else f(v) for v, f in zip(row[:w], keyfns))
            if k not in seen:
                seen.add(k)
                out.append(row)
        rs.rows = out
        return rs

    def describe(self) -> dict:
        return self._with_input({"operator": "Distinct"})


class Limit(Primitive):
    def __init__(self, input: Primitive, offset: int, count: int | None):
        self.input = input
        self.offset = offset
        self.count = count

    def execute(self) -> Exec:
        rs = yield from self.input.execute()
        end = None if self.count is None else self.offset + self.count
        rs.rows = rs.rows[self.offset:end]
        return rs

    def describe(self) -> dict:
        return self._with_input({"operator": "Limit", "offset": self.offset, "count": self.count})


class Project(Primitive):
    """Keep the columns the client asked for: drop hidden sort/group columns, restore select order."""

    def __init__(self, input: Primitive, drop_last: int = 0, indexes: list[int] | None = None):
        self.input = input
        self.drop_last = drop_last
        self.indexes = indexes

    def execute(self) -> Exec:
        rs = yield from self.input.execute()
        if self.indexes is not None:
            idx = self.indexes
            if idx != list(range(len(rs.columns))):
                rs.columns = [rs.columns[i] for i in idx]
                rs.rows = [tuple(r[i] for i in idx) for r in rs.rows]
            return rs
        n = len(rs.columns) - self.drop_last
        if n != len(rs.columns):
            rs.columns = rs.columns[:n]
            rs.rows = [r[:n] for r in rs.rows]
        return rs

    def describe(self) -> dict:
        d: dict = {"operator": "Project"}
        if self.indexes is not None:
            d["columns"] = list(self.indexes)
        else:
            d["drop_last"] = self.drop_last
        return self._with_input(d)


class Write(Primitive):
    """Writes (DML, split INSERTs, DDL fan-out, broadcast copies).

    ``combine``: ``sum`` adds affected rows of every statement (sharded DML);
    ``first`` reports the first statement's result (every copy of a
    broadcast table gets the same write; the home copy answers).
    ``insert_id_from`` is the statement that holds the first row of an INSERT.
    """

    def __init__(self, operator: str, opcode: str, tables: list[str], slots: str, statements: list[ShardQuery],
                 combine: str = "sum", insert_id_from: int = 0, extra: dict | None = None):
        self.operator = operator
        self.opcode = opcode
        self.tables = tables
        self.slots = slots
        self.statements = statements
        self.combine = combine
        self.insert_id_from = insert_id_from
        self.extra = extra or {}

    def execute(self) -> Exec:
        results = yield list(self.statements)
        if self.combine == "first":
            r = results[0]
            return Result(r.columns, r.rows, r.affected_rows, r.insert_id, _warnings(results))
        affected = sum(r.affected_rows for r in results)
        first = results[self.insert_id_from] if results else None
        insert_id = first.insert_id if first is not None and first.insert_id else next((r.insert_id for r in results if r.insert_id), 0)
        columns = next((r.columns for r in results if r.columns), ())
        rows: list = []
        if columns:  # ... RETURNING: the rows of every statement
            for r in results:
                rows.extend(r.rows)
        return Result(columns, rows, affected, insert_id, _warnings(results))

    def queries(self) -> list[ShardQuery]:
        return list(self.statements)

    def describe(self) -> dict:
        d = {"operator": self.operator, "opcode": self.opcode, "tables": self.tables}
        if self.slots:
            d["slots"] = self.slots
        d["statements"] = len(self.statements)
        d["datasources"] = sorted({q.datasource for q in self.statements})
        d.update(self.extra)
        if self.statements:
            d["sql"] = self.statements[0].sql
        return d
