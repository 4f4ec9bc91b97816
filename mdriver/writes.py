"""INSERT helpers of the driver: generated ids and ``executemany`` batching.

Both work on the ``%s`` template by inserting text at positions found once per
template (and cached), so the values the application passed reach the
server byte for byte as PyMySQL would render them.

* Generated ids: a table with an ``id_generator`` whose INSERT names its
  columns but not the id column gets the column and one generated value per
  row (``lastrowid`` is the first of them, as MySQL reports the first
  AUTO_INCREMENT value of a multi-row INSERT).
* ``executemany``: each row is routed on its own (a plan-cache hit), and the
  rows of one physical table become one multi-row INSERT (up to
  ``max_stmt_length`` bytes), as PyMySQL batches rows into one table.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from mdriver import err
from mdriver import phases as phases_mod
from mdriver.router.types import ShardQuery
from mdriver.router.normalize import sql_literal
from mdriver.sharding import locate

if TYPE_CHECKING:
    from mdriver.connection import Connection
    from mdriver.runtime import Runtime, Version

_IDENT = r"(?:`(?:[^`]|``)+`|[A-Za-z0-9_$]+)"
_INSERT_HEAD = re.compile(
    rf"\s*(?:/\*.*?\*/\s*)*(?:INSERT|REPLACE)\s+(?:(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|IGNORE)\s+)*(?:INTO\s+)?"
    rf"(?P<table>{_IDENT}(?:\s*\.\s*{_IDENT})?)\s*\(",
    re.IGNORECASE | re.DOTALL,
)
_VALUES_KW = re.compile(r"\s*VALUES?\s*(?=\()", re.IGNORECASE)
_PH = r"(?:%s|%\([^()]+\)s)"
_EXECUTEMANY = re.compile(
    rf"(?P<head>\s*(?:INSERT|REPLACE)\b.+?\bVALUES?\s*)(?P<values>\(\s*{_PH}(?:\s*,\s*{_PH})*\s*\))"
    r"(?P<tail>\s*(?:ON\s+DUPLICATE\s+KEY\s+UPDATE\b.*?)?)\s*;?\s*\Z",
    re.IGNORECASE | re.DOTALL,
)
_PLACEHOLDER = re.compile(r"%%|%s|%\(([^()]+)\)s")
CACHE_LIMIT = 4096


def _unquote(ident: str) -> str:
    ident = ident.strip()
    return ident[1:-1].replace("``", "`") if ident.startswith("`") else ident


def _close_paren(sql: str, i: int) -> int:
    """Index of the ')' matching the '(' at ``i`` (quotes and nesting respected), or -1."""
    depth = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == "\\" and c != "`":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            i = j + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _split_columns(text: str) -> list[str]:
    return [_unquote(c) for c in re.findall(rf"{_IDENT}", text)]


@dataclass(frozen=True)
class IdPlan:
    """Where to add the id column and one value per VALUES row in a template."""

    schema: str
    table: str
    column: str
    column_at: int  # just after the '(' of the column list
    row_starts: tuple[int, ...]  # just after the '(' of each VALUES row
    row_params: tuple[int, ...]  # positional placeholders in each row
    params_before: int  # positional placeholders before the first row


def analyze_insert(sql: str, schema: str, version: "Version") -> IdPlan | None:
    """An IdPlan if this INSERT needs generated ids, else None (computed once per template)."""
    m = _INSERT_HEAD.match(sql)
    if m is None:
        return None
    parts = [_unquote(p) for p in re.findall(_IDENT, m.group("table"))]
    table_schema, table = (parts[0], parts[1]) if len(parts) == 2 else (schema, parts[0])
    gen = version.id_generators.get((table_schema, table))
    if gen is None:
        return None
    open_cols = m.end() - 1
    close_cols = _close_paren(sql, open_cols)
    if close_cols < 0:
        return None
    columns = [c.lower() for c in _split_columns(sql[open_cols + 1:close_cols])]
    if gen.column.lower() in columns or not columns:
        return None
    v = _VALUES_KW.match(sql, close_cols + 1)
    if v is None:
        return None  # INSERT ... SELECT / SET: no rows to extend
    starts, counts = [], []
    pos = v.end()
    while pos < len(sql) and sql[pos] == "(":
        end = _close_paren(sql, pos)
        if end < 0:
            return None
        starts.append(pos + 1)
        counts.append(sum(1 for p in _PLACEHOLDER.finditer(sql, pos, end) if p.group() == "%s"))
        rest = re.compile(r"\s*,\s*").match(sql, end + 1)
        if rest is None:
            break
        pos = rest.end()
    if not starts:
        return None
    before = sum(1 for p in _PLACEHOLDER.finditer(sql, 0, starts[0]) if p.group() == "%s")
    return IdPlan(table_schema, table, gen.column, open_cols + 1, tuple(starts), tuple(counts), before)


def rewrite_with_ids(sql: str, args: Any, plan: IdPlan, ids: Sequence[int]) -> tuple[str, Any]:
    """The template with the id column and values added, and the matching arguments."""
    named = isinstance(args, dict)
    if args is None:  # a text without parameters: escape its '%' now that it will get some
        original, sql = sql, sql.replace("%", "%%")
        positions = [p + original.count("%", 0, p) for p in (plan.column_at, *plan.row_starts)]
        args = ()
    else:
        positions = [plan.column_at, *plan.row_starts]
    pieces, last = [], 0
    column_quoted = "`" + plan.column.replace("`", "``") + "`, "
    for k, pos in enumerate(positions):
        pieces.append(sql[last:pos])
        if k == 0:
            pieces.append(column_quoted)
        else:
            pieces.append(f"%(__mdriver_id_{k - 1})s, " if named else "%s, ")
        last = pos
    pieces.append(sql[last:])
    new_sql = "".join(pieces)
    if named:
        new_args = dict(args)
        for k, value in enumerate(ids):
            new_args[f"__mdriver_id_{k}"] = value
        return new_sql, new_args
    if not isinstance(args, (tuple, list)):
        args = (args,)
    out = list(args[: plan.params_before])
    i = plan.params_before
    for value, count in zip(ids, plan.row_params):
        out.append(value)
        out.extend(args[i:i + count])
        i += count
    out.extend(args[i:])
    return new_sql, tuple(out)


def _id_plan(version: "Version", schema: str, sql: str) -> IdPlan | None:
    cache = version.id_rewrites
    key = (schema, sql)
    try:
        return cache[key]
    except KeyError:
        pass
    if len(cache) > CACHE_LIMIT:
        cache.clear()
    plan = cache[key] = analyze_insert(sql, schema, version)
    return plan


def with_generated_ids(runtime: "Runtime", version: "Version", schema: str, plan: Any, sql: str, args: Any):
    """(sql, args, first id) with ids added, or None when the INSERT needs none."""
    id_plan = _id_plan(version, schema, sql)
    if id_plan is None or id_plan.table not in plan.tables:
        return None
    ids = runtime.take_ids(version, id_plan.schema, id_plan.table, len(id_plan.row_starts))
    new_sql, new_args = rewrite_with_ids(sql, args, id_plan, ids)
    return new_sql, new_args, ids[0]


def _render(values: str, args: Any) -> str:
    if isinstance(args, dict):
        return values % {k: sql_literal(v) for k, v in args.items()}
    if not isinstance(args, (tuple, list)):
        args = (args,)
    return values % tuple(sql_literal(v) for v in args)


def _shard_key_position(config, schema: str, sql: str, m: re.Match, tables: tuple[str, ...]):
    """(schema, argument index or name, rule) when each row's shard key is a bare parameter, else None.

    Then most rows are placed with the slot mapping directly and the router is
    asked once per physical table (its answer is checked against the mapping).
    """
    if len(tables) != 1:
        return None
    sch = config.schemas.get(schema)
    rule = sch.tables.get(tables[0]) if sch is not None else None
    if rule is None or not rule.sharded:
        return None
    head = _INSERT_HEAD.match(sql)
    if head is None:
        return None
    close = _close_paren(sql, head.end() - 1)
    if close < 0:
        return None
    columns = [c.lower() for c in _split_columns(sql[head.end():close])]
    params = re.findall(r"%s|%\(([^()]+)\)s", m.group("values"))
    if len(params) != len(columns) or rule.shard_key.lower() not in columns:
        return None
    i = columns.index(rule.shard_key.lower())
    return (sch, params[i] if params[i] else i, rule)


def plan_insert_batch(conn: "Connection", version: "Version", sql: str, rows: list, max_len: int):
    """(queries, first generated id) for an executemany INSERT, or None to run it row by row."""
    m = _EXECUTEMANY.match(sql)
    if m is None or "%" in m.group("tail").replace("%%", ""):
        return None
    schema = conn.schema
    first_id = None
    id_plan = _id_plan(version, schema, sql) if version.id_generators else None
    if id_plan is not None:
        ids = conn.runtime.take_ids(version, id_plan.schema, id_plan.table, len(rows))
        first_id = ids[0]
        sql1, _ = rewrite_with_ids(sql, rows[0], id_plan, ids[:1])
        rows = [rewrite_with_ids(sql, r, id_plan, (i,))[1] for r, i in zip(rows, ids)]
        sql = sql1
        m = _EXECUTEMANY.match(sql)
        if m is None:
            return None
    router = version.router
    first = router.plan(sql, schema=schema, params=rows[0], paramstyle="pyformat")
    if version.phases:
        decision = version.phases.decide(schema, first.tables, True)
        if decision != phases_mod.SHARDS:
            for table in first.tables:
                problem = version.source_problems.get((schema, table))
                if problem is not None:
                    raise err.error(err.NotSupportedError, err.ER_NOT_SUPPORTED_YET, problem)
            router = version.source_router
    values_tpl, tail = m.group("values"), m.group("tail").replace("%%", "%")
    key_at = _shard_key_position(router.config, schema, sql, m, first.tables)
    groups: dict[tuple[str, str, str], list[str]] = {}
    heads: dict = {}  # physical location -> statement head, learnt from the router once per location
    for row in rows:
        values = _render(values_tpl, row)
        where = None
        if key_at is not None:
            try:
                key = row[key_at[1]]
            except (TypeError, KeyError, IndexError):
                key = None
            if type(key) is int:
                where = locate(key_at[0], key_at[2], key)
                head = heads.get(where)
                if head is not None:
                    groups[head].append(values)
                    continue
        p = router.plan(sql, schema=schema, params=row, paramstyle="pyformat")
        q = p.single
        if q is None or not q.write:
            return None  # e.g. a broadcast table: every row goes to every copy
        physical = q.sql
        if not physical.endswith(tail):
            return None
        body = physical[: len(physical) - len(tail)] if tail else physical
        if not body.endswith(values):
            return None
        head = (q.datasource, q.database, body[: len(body) - len(values)])
        if where is not None:
            if (where.datasource, where.database) != (q.datasource, q.database):
                key_at = None  # the router places rows differently than expected: ask it for every row
            else:
                heads[where] = head
        groups.setdefault(head, []).append(values)
    # One multi-row INSERT per physical table; the INSERTs for one physical database travel
    # together in one round trip (as several statements), up to max_len bytes each.
    per_db: dict[tuple[str, str], list[str]] = {}
    for (ds, db, head), values_list in groups.items():
        statements = per_db.setdefault((ds, db), [])
        chunk: list[str] = []
        size = len(head) + len(tail)
        for v in values_list:
            if chunk and size + len(v) + 1 > max_len:
                statements.append(head + ",".join(chunk) + tail)
                chunk, size = [], len(head) + len(tail)
            chunk.append(v)
            size += len(v) + 1
        statements.append(head + ",".join(chunk) + tail)
    queries: list[ShardQuery] = []
    for (ds, db), statements in per_db.items():
        packet: list[str] = []
        size = 0
        for st in statements:
            if packet and size + len(st) + 1 > max_len:
                queries.append(ShardQuery(ds, db, ";".join(packet), True))
                packet, size = [], 0
            packet.append(st)
            size += len(st) + 1
        queries.append(ShardQuery(ds, db, ";".join(packet), True))
    return queries, first_id
