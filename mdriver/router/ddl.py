"""DDL fan-out, table metadata statements, PREVIEW and EXPLAIN.

DDL is recognized by its leading keywords only (sqlglot does not parse every
MariaDB column definition), and only the table name is rewritten: the rest of
the statement reaches every physical table exactly as written.
"""
from __future__ import annotations

from mdriver import err
from mdriver.router.analyze import refuse
from mdriver.router.plan import Plan
from mdriver.router.planner import HomeTemplate, Template
from mdriver.router.primitives import Exec, Primitive, RowSet, Write
from mdriver.router.rewrite import Builder, Splice, occ_part, render
from mdriver.router.routing import compact_slots, quote
from mdriver.router.scan import Tok
from mdriver.router.types import ShardQuery, text_column


def _name_at(toks: list[Tok], i: int):
    """(start, end, qualified?, next index) of a possibly qualified table name at token i."""
    if i >= len(toks) or toks[i].kind not in ("word", "ident"):
        return None
    t = toks[i]
    if i + 2 < len(toks) and toks[i + 1].kind == "op" and toks[i + 1].text == "." and toks[i + 2].kind in ("word", "ident"):
        return t.start, toks[i + 2].end, True, i + 3
    return t.start, t.end, False, i + 1


def _skip(toks: list[Tok], i: int, *words: str) -> int:
    while i < len(toks) and toks[i].kind == "word" and toks[i].text in words:
        i += 1
    return i


def _skip_seq(toks: list[Tok], i: int, seq: tuple[str, ...]) -> int:
    if all(i + k < len(toks) and toks[i + k].kind == "word" and toks[i + k].text == w for k, w in enumerate(seq)):
        return i + len(seq)
    return i


class _Names:
    """Table names found in a DDL/meta statement, with their text spans."""

    def __init__(self, text: str):
        self.text = text
        self.found: list[tuple[int, int, str | None, str]] = []

    def add(self, toks: list[Tok], i: int) -> int:
        r = _name_at(toks, i)
        if r is None:
            raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, "mdriver cannot find the table name in this statement")
        start, end, qualified, nxt = r
        name = self._raw(toks[nxt - 1])
        dbname = self._raw(toks[i]) if qualified else None
        self.found.append((start, end, dbname, name))
        return nxt

    def _raw(self, t: Tok) -> str:
        s = self.text[t.start:t.end]
        return s[1:-1].replace("``", "`") if t.kind == "ident" else s


def _index_of(toks: list[Tok], word: str, start: int) -> int:
    for i in range(start, len(toks)):
        if toks[i].kind == "word" and toks[i].text == word and toks[i].depth == 0:
            return i
    return -1


def plan_ddl_or_meta(text: str, toks: list[Tok], words: list[str], nv, env) -> Template | None:
    verb = words[0]
    names = _Names(text)
    meta = False
    i = 1
    if verb == "CREATE":
        i = _skip_seq(toks, i, ("OR", "REPLACE"))
        i = _skip(toks, i, "TEMPORARY")
        if i < len(toks) and toks[i].text == "TABLE":
            i = _skip_seq(toks, i + 1, ("IF", "NOT", "EXISTS"))
            i = names.add(toks, i)
            if i < len(toks) and toks[i].kind == "word" and toks[i].text == "LIKE" or _index_of(toks, "SELECT", i) >= 0:
                return _check_unsharded(names, env, "CREATE TABLE ... LIKE / AS SELECT")
        else:
            i = _skip(toks, i, "UNIQUE", "FULLTEXT", "SPATIAL", "ONLINE", "OFFLINE")
            if i >= len(toks) or toks[i].text != "INDEX":
                return None
            on = _index_of(toks, "ON", i)
            if on < 0:
                return None
            names.add(toks, on + 1)
    elif verb == "ALTER":
        i = _skip(toks, i, "ONLINE", "OFFLINE", "IGNORE")
        if i >= len(toks) or toks[i].text != "TABLE":
            return None
        i = _skip_seq(toks, i + 1, ("IF", "EXISTS"))
        i = names.add(toks, i)
        if _index_of(toks, "RENAME", i) >= 0:
            return _check_unsharded(names, env, "ALTER TABLE ... RENAME")
    elif verb == "DROP":
        i = _skip(toks, i, "TEMPORARY")
        if i < len(toks) and toks[i].text == "TABLE":
            i = _skip_seq(toks, i + 1, ("IF", "EXISTS"))
            i = names.add(toks, i)
            while i < len(toks) and toks[i].kind == "op" and toks[i].text == ",":
                i = names.add(toks, i + 1)
        elif i < len(toks) and toks[i].text == "INDEX":
            on = _index_of(toks, "ON", i)
            if on < 0:
                return None
            names.add(toks, on + 1)
        else:
            return None
    elif verb == "TRUNCATE":
        i = _skip(toks, i, "TABLE")
        names.add(toks, i)
    elif verb == "RENAME":
        if i >= len(toks) or toks[i].text != "TABLE":
            return None
        j = i + 1
        while j < len(toks):
            j = names.add(toks, j)
            if j < len(toks) and toks[j].text == "TO":
                j = names.add(toks, j + 1)
            if j < len(toks) and toks[j].kind == "op" and toks[j].text == ",":
                j += 1
                continue
            break
        return _check_unsharded(names, env, "RENAME TABLE")
    else:
        meta = True
        if verb in ("DESCRIBE", "DESC", "EXPLAIN"):
            if len(toks) < 2 or toks[1].kind not in ("word", "ident") or (toks[1].kind == "word" and toks[1].text in (
                    "SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "REPLACE", "EXTENDED", "PARTITIONS", "FORMAT", "ANALYZE")):
                return None
            names.add(toks, 1)
        elif verb == "SHOW":
            i = _skip(toks, 1, "FULL", "EXTENDED")
            if i < len(toks) and toks[i].text in ("COLUMNS", "FIELDS", "INDEX", "INDEXES", "KEYS") and i + 1 < len(toks) \
                    and toks[i + 1].text in ("FROM", "IN"):
                names.add(toks, i + 2)
            elif i + 1 < len(toks) and toks[i].text == "CREATE" and toks[i + 1].text == "TABLE":
                names.add(toks, i + 2)
            else:
                return None
        else:
            return None
    return _fan_out(text, toks, names, env, meta)


def _classify(env, db: str | None, name: str):
    schema = env.schema
    if db is not None and db != schema.name:
        if db in env.config.schemas:
            raise refuse(f"a statement in schema {schema.name!r} cannot use tables of schema {db!r} ({db}.{name})")
        return None
    rule = schema.tables.get(name)
    if rule is None or not (rule.sharded or rule.broadcast):
        return None
    return rule


def _check_unsharded(names: _Names, env, what: str) -> Template | None:
    for _, _, db, name in names.found:
        if _classify(env, db, name) is not None:
            raise refuse(f"{what} on sharded or broadcast table {name} is not supported by mdriver")
    return None


def _fan_out(text: str, toks: list[Tok], names: _Names, env, meta: bool) -> Template | None:
    rules = [_classify(env, db, name) for _, _, db, name in names.found]
    routed = [(f, r) for f, r in zip(names.found, rules) if r is not None]
    if not routed:
        return None
    if len(names.found) > 1:
        raise refuse("a DDL statement naming several tables that include sharded or broadcast ones is not supported by "
                     "mdriver: name one table per statement")
    (start, end, _db, name), rule = routed[0]
    if not meta and rule.sharded and _index_of(toks, "REFERENCES", 0) >= 0:
        raise refuse(f"foreign keys on sharded table {name} are not supported by mdriver (they would reference one physical table)")
    parts = Builder(text, toks, [Splice(start, end, [occ_part(0)])]).whole()
    if meta:
        return MetaTemplate(name, rule, parts)
    return DdlTemplate(name, rule, parts)


class DdlTemplate(Template):
    """CREATE/ALTER/DROP/TRUNCATE TABLE and CREATE/DROP INDEX on every physical table or copy."""

    kind = "ddl"
    is_write = True

    def __init__(self, name: str, rule, parts: list):
        self.name = name
        self.tables = (name,)
        self.rule = rule
        self.parts = parts

    def bind(self, nv, env) -> Plan:
        stmts = []
        if self.rule.sharded:
            lay = env.layout(self.rule)
            for s in range(lay.slots):
                stmts.append(ShardQuery(lay.ds[s], lay.db[s], render(self.parts, nv, [lay.table_sql[s]]), True))
            root = Write("DdlFanout", "SCATTER", [self.name], compact_slots(range(lay.slots)), stmts, "first")
        else:
            for ds, db in env.broadcast_copies():
                stmts.append(ShardQuery(ds, db, render(self.parts, nv, [f"{quote(db)}.{quote(self.name)}"]), True))
            root = Write("DdlFanout", "REFERENCE", [self.name], "", stmts, "first", extra={"copies": len(stmts)})
        return Plan("ddl", True, self.tables, env.schema.name, True, root=root)


class MetaTemplate(Template):
    """DESCRIBE / SHOW COLUMNS / SHOW INDEX / SHOW CREATE TABLE: answered by the first physical table."""

    kind = "other"

    def __init__(self, name: str, rule, parts: list):
        self.tables = (name,)
        self.rule = rule
        self.parts = parts

    def bind(self, nv, env) -> Plan:
        if self.rule.sharded:
            lay = env.layout(self.rule)
            ds, db, table = lay.ds[0], lay.db[0], lay.table_sql[0]
            opcode = "EQUAL"
        else:
            ds, db = env.schema.datasource, env.schema.name
            table = f"{quote(db)}.{quote(self.rule.name)}"
            opcode = "REFERENCE"
        q = ShardQuery(ds, db, render(self.parts, nv, [table]), False)
        return Plan("other", False, self.tables, env.schema.name, nv.hints.primary, single=q,
                    route=(opcode, list(self.tables), "0" if self.rule.sharded else ""))


class _Rows(Primitive):
    """Rows computed without touching a database (PREVIEW)."""

    def __init__(self, operator: str, columns: list[str], rows: list[tuple], inner: dict):
        self.operator = operator
        self.columns = columns
        self.rows = rows
        self.inner = inner

    def execute(self) -> Exec:
        return RowSet([text_column(c) for c in self.columns], list(self.rows))
        yield  # pragma: no cover - makes this a generator that yields no batch

    def describe(self) -> dict:
        return {"operator": self.operator, "input": self.inner}


class PreviewTemplate(Template):
    """``PREVIEW <statement>``: one row per physical statement (datasource, database, sql); nothing runs."""

    kind = "other"

    def __init__(self, inner: Template):
        self.inner = inner
        self.tables = inner.tables

    def bind(self, nv, env) -> Plan:
        plan = self.inner.bind(nv, env)
        rows = [(q.datasource, q.database, q.sql) for q in plan.preview()]
        root = _Rows("Preview", ["datasource", "database", "sql"], rows, plan.describe())
        return Plan("other", False, self.tables, env.schema.name, False, root=root)


class ExplainTemplate(Template):
    """``EXPLAIN <statement>`` of a single-shard statement runs on that shard; several shards: use PREVIEW."""

    kind = "other"

    def __init__(self, inner: Template):
        self.inner = inner
        self.tables = inner.tables

    def bind(self, nv, env) -> Plan:
        plan = self.inner.bind(nv, env)
        if plan.single is None:
            raise refuse("EXPLAIN of a statement that runs on several physical tables is not supported by mdriver; "
                         "PREVIEW <statement> lists its physical statements")
        q = plan.single
        return Plan("other", False, self.tables, env.schema.name, nv.hints.primary,
                    single=ShardQuery(q.datasource, q.database, "EXPLAIN " + q.sql, False),
                    route=plan._route)


__all__ = ["plan_ddl_or_meta", "PreviewTemplate", "ExplainTemplate", "HomeTemplate"]
