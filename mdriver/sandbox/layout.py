"""Create every physical database and table of a config from logical CREATE TABLEs.

``examples/schema.sql`` holds one ``CREATE TABLE`` per logical table. For each
physical copy (DESIGN §3: 1024 per 32 x 32 sharded table, one per physical
database for a broadcast table, one in the home database otherwise) only the
table name is rewritten; the rest of the statement is kept byte for byte.

The SQL handling is pure; :func:`create_layout` does the I/O: it asks each
server which tables exist, then sends the missing ones grouped per physical
database as multi-statement batches, datasources in parallel. Re-running it
creates nothing (``IF NOT EXISTS`` and the existence check).
"""
from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from pymysql.constants import CLIENT

from mdriver.config.model import Config
from mdriver.sharding import all_locations, iter_physical_databases

log = logging.getLogger(__name__)


class SchemaFileError(ValueError):
    """The schema file cannot be used; the message names the statement and line."""


@dataclass(frozen=True)
class TableDDL:
    """One logical ``CREATE TABLE``: its name and where the name sits in ``text``."""

    name: str
    text: str
    name_start: int
    name_end: int
    line: int
    if_not_exists: bool

    def for_table(self, table: str, database: str | None = None) -> str:
        """The same statement for a physical copy: ``CREATE TABLE IF NOT EXISTS `db`.`table` ...``."""
        target = quote_ident(table) if database is None else f"{quote_ident(database)}.{quote_ident(table)}"
        head = self.text[: self.name_start]
        if not self.if_not_exists:
            head = head.rstrip() + " IF NOT EXISTS "
        return head + target + self.text[self.name_end:]


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


# -- splitting ---------------------------------------------------------------

def split_statements(sql: str) -> list[tuple[str, int]]:
    """Split on ``;`` outside quotes and comments; returns (statement, first line) pairs.

    Comments stay in the statement text (they are harmless to the server);
    statements that are only comments or whitespace are dropped.
    """
    out: list[tuple[str, int]] = []
    start = 0
    i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            i = _skip_quoted(sql, i, c)
            continue
        if c == "#" or (c == "-" and sql.startswith("--", i) and (i + 2 >= n or sql[i + 2] in " \t\r\n")):
            nl = sql.find("\n", i)
            i = n if nl < 0 else nl + 1
            continue
        if c == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            if end < 0:
                raise SchemaFileError(f"line {sql.count(chr(10), 0, i) + 1}: comment /* is never closed")
            i = end + 2
            continue
        if c == ";":
            _keep(sql, start, i, out)
            start = i + 1
        i += 1
    _keep(sql, start, n, out)
    return out


def _skip_quoted(sql: str, i: int, quote: str) -> int:
    j = i + 1
    n = len(sql)
    while j < n:
        c = sql[j]
        if c == "\\" and quote != "`":
            j += 2
            continue
        if c == quote:
            if j + 1 < n and sql[j + 1] == quote:  # doubled quote escapes itself
                j += 2
                continue
            return j + 1
        j += 1
    raise SchemaFileError(f"line {sql.count(chr(10), 0, i) + 1}: {quote} is never closed")


def _keep(sql: str, start: int, end: int, out: list[tuple[str, int]]) -> None:
    text = sql[start:end]
    body_at = _skip_space_and_comments(text, 0)
    if body_at >= len(text):
        return
    line = sql.count("\n", 0, start + body_at) + 1
    out.append((text[body_at:].rstrip(), line))


def _skip_space_and_comments(text: str, i: int) -> int:
    n = len(text)
    while i < n:
        if text[i].isspace():
            i += 1
        elif text[i] == "#" or (text.startswith("--", i) and (i + 2 >= n or text[i + 2] in " \t\r\n")):
            nl = text.find("\n", i)
            i = n if nl < 0 else nl + 1
        elif text.startswith("/*", i) and not text.startswith("/*!", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            break
    return i


# -- parsing the CREATE TABLE head -------------------------------------------

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_IDENT = re.compile(r"`((?:[^`]|``)+)`|([A-Za-z0-9_$]+)")


def _word(text: str, i: int) -> tuple[str, int]:
    i = _skip_space_and_comments(text, i)
    m = _WORD.match(text, i)
    return (m.group(0).upper(), m.end()) if m else ("", i)


def parse_create_table(statement: str, line: int) -> TableDDL:
    """Find the table name of ``CREATE TABLE [IF NOT EXISTS] name (...)``; refuse anything else."""
    where = f"statement at line {line}"
    first = statement.split(None, 3)[:3]
    word, i = _word(statement, 0)
    if word != "CREATE":
        raise SchemaFileError(f"{where}: only CREATE TABLE statements are allowed, got {' '.join(first)!r}")
    word, i = _word(statement, i)
    if word in ("OR", "TEMPORARY"):
        raise SchemaFileError(f"{where}: use a plain CREATE TABLE (no OR REPLACE / TEMPORARY)")
    if word != "TABLE":
        raise SchemaFileError(f"{where}: only CREATE TABLE statements are allowed, got {' '.join(first)!r}")
    after_table = i
    word, j = _word(statement, i)
    if_not_exists = False
    if word == "IF":
        w2, j2 = _word(statement, j)
        w3, j3 = _word(statement, j2)
        if (w2, w3) != ("NOT", "EXISTS"):
            raise SchemaFileError(f"{where}: expected IF NOT EXISTS")
        if_not_exists, after_table = True, j3
    start = _skip_space_and_comments(statement, after_table)
    m = _IDENT.match(statement, start)
    if not m:
        raise SchemaFileError(f"{where}: cannot find the table name after CREATE TABLE")
    name = m.group(1).replace("``", "`") if m.group(1) is not None else m.group(2)
    end = m.end()
    if statement.startswith(".", end):
        raise SchemaFileError(f"{where}: table {name}.{statement[end + 1:].split(None, 1)[0]} is qualified; write the logical table name only")
    rest = _skip_space_and_comments(statement, end)
    if not statement.startswith("(", rest):
        raise SchemaFileError(f"{where}: table {name}: only CREATE TABLE name (columns ...) is supported (no LIKE / AS SELECT)")
    if re.match(r"\(\s*LIKE\b", statement[rest:], re.IGNORECASE):
        raise SchemaFileError(f"{where}: table {name}: CREATE TABLE ... LIKE is not supported; write the columns")
    return TableDDL(name, statement, start, end, line, if_not_exists)


def parse_schema(sql: str) -> dict[str, TableDDL]:
    """Every logical table in a schema file, by name (names compared case-insensitively)."""
    tables: dict[str, TableDDL] = {}
    seen: dict[str, TableDDL] = {}
    for statement, line in split_statements(sql):
        ddl = parse_create_table(statement, line)
        key = ddl.name.lower()
        if key in seen:
            raise SchemaFileError(f"statement at line {line}: table {ddl.name} is already defined at line {seen[key].line}")
        seen[key] = ddl
        tables[ddl.name] = ddl
    if not tables:
        raise SchemaFileError("no CREATE TABLE statement found")
    return tables


def read_schema_file(path: str) -> dict[str, TableDDL]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise SchemaFileError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return parse_schema(text)
    except SchemaFileError as e:
        raise SchemaFileError(f"{path}: {e}") from None


# -- planning ----------------------------------------------------------------

@dataclass
class LayoutPlan:
    """What must exist: per datasource, per physical database, (table, DDL) pairs."""

    databases: dict[str, dict[str, list[tuple[str, str]]]] = field(default_factory=dict)

    def add_database(self, datasource: str, database: str) -> None:
        self.databases.setdefault(datasource, {}).setdefault(database, [])

    def add_table(self, datasource: str, database: str, table: str, ddl: str) -> None:
        self.databases.setdefault(datasource, {}).setdefault(database, []).append((table, ddl))

    def table_count(self, datasource: str | None = None) -> int:
        return sum(len(t) for ds, dbs in self.databases.items() if datasource in (None, ds) for t in dbs.values())

    def database_count(self, datasource: str | None = None) -> int:
        return sum(len(dbs) for ds, dbs in self.databases.items() if datasource in (None, ds))


def plan_layout(config: Config, tables: Mapping[str, TableDDL], schemas: Iterable[str] | None = None) -> LayoutPlan:
    """Every physical database and table the config needs, from the logical DDL.

    A table of the file that the config does not mention is unsharded: it is
    created in the schema's home database. A table the config mentions but
    the file lacks is an error, because the layout would be incomplete.
    """
    by_lower = {name.lower(): ddl for name, ddl in tables.items()}
    plan = LayoutPlan()
    for schema_name in schemas if schemas is not None else config.schemas:
        schema = config.schemas[schema_name]
        missing = sorted(t for t in schema.tables if t.lower() not in by_lower)
        if missing:
            raise SchemaFileError(f"schema {schema_name}: no CREATE TABLE for {', '.join(missing)} (declared in the config)")
        for ds, db in iter_physical_databases(schema):
            plan.add_database(ds, db)
        configured = {t.lower() for t in schema.tables}
        for rule in schema.tables.values():
            ddl = by_lower[rule.name.lower()]
            for loc in all_locations(schema, rule):
                plan.add_table(loc.datasource, loc.database, loc.table, ddl.for_table(loc.table, loc.database))
        for ddl in tables.values():
            if ddl.name.lower() not in configured:
                plan.add_table(schema.datasource, schema.name, ddl.name, ddl.for_table(ddl.name, schema.name))
    return plan


def plan_reference(datasource: str, database: str, tables: Mapping[str, TableDDL]) -> LayoutPlan:
    """One unsharded database holding every logical table under its own name (a test reference)."""
    plan = LayoutPlan()
    plan.add_database(datasource, database)
    for ddl in tables.values():
        plan.add_table(datasource, database, ddl.name, ddl.for_table(ddl.name, database))
    return plan


# -- execution ---------------------------------------------------------------

@dataclass(frozen=True)
class LayoutResult:
    databases_created: int
    tables_created: int
    tables_present: int  # already there before this run
    seconds: float


Connect = Callable[..., object]  # connect(datasource, **pymysql kwargs) -> pymysql connection


def _existing(conn, databases: list[str]) -> set[tuple[str, str]]:
    with conn.cursor() as cur:
        marks = ",".join(["%s"] * len(databases))
        cur.execute(f"SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({marks})", databases)
        return {(s.lower(), t.lower()) for s, t in cur.fetchall()}


def _existing_databases(conn) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
        return {r[0].lower() for r in cur.fetchall()}


def run_batch(conn, statements: list[str]) -> None:
    """Send many statements in one round trip and read every result (errors surface here)."""
    if not statements:
        return
    with conn.cursor() as cur:
        cur.execute(";\n".join(statements))
        while cur.nextset():
            pass


def create_layout(plan: LayoutPlan, connect: Connect, workers: int = 4, batch: int = 64) -> LayoutResult:
    """Create what ``plan`` lists and is missing; datasources and databases in parallel.

    ``connect(datasource, **kw)`` must accept PyMySQL keyword arguments (it is
    called with ``client_flag=CLIENT.MULTI_STATEMENTS``).
    """
    started = time.monotonic()
    jobs: list[tuple[str, list[str]]] = []
    created_dbs = 0
    present = 0
    for ds, dbs in plan.databases.items():
        conn = connect(ds, client_flag=CLIENT.MULTI_STATEMENTS)
        try:
            known_dbs = _existing_databases(conn)
            have = _existing(conn, list(dbs)) if dbs else set()
            new_dbs = [db for db in dbs if db.lower() not in known_dbs]
            run_batch(conn, [f"CREATE DATABASE IF NOT EXISTS {quote_ident(db)}" for db in new_dbs])
        finally:
            conn.close()
        created_dbs += len(new_dbs)
        for db, tables in dbs.items():
            todo = [ddl for table, ddl in tables if (db.lower(), table.lower()) not in have]
            present += len(tables) - len(todo)
            for i in range(0, len(todo), batch):
                jobs.append((ds, todo[i : i + batch]))
    created = sum(len(stmts) for _, stmts in jobs)
    if jobs:
        _run_jobs(jobs, connect, workers * max(1, len(plan.databases)))
    result = LayoutResult(created_dbs, created, present, time.monotonic() - started)
    log.info(
        "layout: %d databases and %d tables created, %d tables already present, %.2f s",
        result.databases_created, result.tables_created, result.tables_present, result.seconds,
    )
    return result


def _run_jobs(jobs: list[tuple[str, list[str]]], connect: Connect, workers: int) -> None:
    """Each worker keeps one connection per datasource and takes batches from a shared list."""
    by_ds: dict[str, list[list[str]]] = defaultdict(list)
    for ds, stmts in jobs:
        by_ds[ds].append(stmts)
    per_ds = max(1, workers // len(by_ds))

    def worker(ds: str, batches: list[list[str]]) -> None:
        conn = connect(ds, client_flag=CLIENT.MULTI_STATEMENTS)
        try:
            for stmts in batches:
                run_batch(conn, stmts)
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=per_ds * len(by_ds)) as pool:
        futures = []
        for ds, batches in by_ds.items():
            for k in range(per_ds):
                share = batches[k::per_ds]
                if share:
                    futures.append(pool.submit(worker, ds, share))
        for f in futures:
            f.result()
