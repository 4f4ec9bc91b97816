"""Statements the proxy answers itself, found by their first keyword.

Session statements (SET, USE, transactions), logical metadata (SHOW
DATABASES/TABLES, DESCRIBE, SHOW CREATE TABLE with logical names), the
proxy's own commands (PREVIEW, SHOW MDRIVER STATUS) and what connectors send
at connect time. A handler returns False to let the router take the statement.
"""
from __future__ import annotations

import re
from dataclasses import replace

from mdriver import err
from mdriver.router.types import ShardQuery, int_column, text_column
from mdriver.sharding import home_location, location_of_slot
from mdriver.wire import constants as c
from mdriver.wire.packets import EOF, OK, make_column_definition, make_eof, make_ok, parse_field_list
from mdriver.wire.values import decode_text
from proxy.backend import FieldList
from proxy.results import PacketWriter
from proxy.session import DEFAULT_COLLATION, mark_applied, parse_set
from proxy.sqltext import IDENT, PUNCT, STRING, WORD, SqlSyntaxError, first_word, quote_ident, quote_string, tokenize

ER_NO_DB_ERROR = 1046
ER_UNKNOWN_CHARACTER_SET = 1115
ER_WRONG_VALUE_FOR_VAR = 1231
ER_SPECIFIC_ACCESS_DENIED = 1227
ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION = 1792

DEFAULT_COLLATIONS = {
    "utf8mb4": "utf8mb4_general_ci", "utf8mb3": "utf8mb3_general_ci", "utf8": "utf8mb3_general_ci",
    "latin1": "latin1_swedish_ci", "ascii": "ascii_general_ci", "binary": "binary", "gbk": "gbk_chinese_ci",
}


def _tokens(sql: str):
    try:
        toks = tokenize(sql)
    except SqlSyntaxError as e:
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, f"You have an error in your SQL syntax: {e}") from None
    if toks and toks[-1].kind == PUNCT and toks[-1].text == ";":
        toks = toks[:-1]
    return toks


def _words(toks) -> list[str]:
    return [t.upper if t.kind == WORD else t.text for t in toks]


def _unsupported(what: str) -> err.MySQLError:
    return err.error(err.NotSupportedError, err.ER_NOT_SUPPORTED_YET, f"{what} is not supported through the proxy")


# -- schemas and tables ----------------------------------------------------------------

def check_schema(ex, name: str):
    """None if the session may use schema ``name``, else (errno, message, sqlstate)."""
    s = ex.session
    if name not in s.schemas:
        if name in ex.server.config.schemas:
            return (err.ER_DBACCESS_DENIED_ERROR, f"Access denied for user '{s.user}'@'{ex.client.host}' to database '{name}'", "42000")
        return (err.ER_BAD_DB_ERROR, f"Unknown database '{name}'", "42000")
    return None


async def use_schema(ex, name: str) -> None:
    problem = check_schema(ex, name)
    if problem is not None:
        raise err.error(err.ProgrammingError, problem[0], problem[1], problem[2])
    ex.session.schema = name
    ex.ok()


def _schema_of(ex, name: str | None):
    s = ex.session
    name = name or s.schema
    if name is None:
        raise err.error(err.ProgrammingError, ER_NO_DB_ERROR, "No database selected")
    problem = check_schema(ex, name)
    if problem is not None:
        raise err.error(err.ProgrammingError, problem[0], problem[1], problem[2])
    return ex.server.config.schemas[name]


def representative(schema, table: str):
    """Where a logical table's definition can be read: slot 0 for sharded tables, else the home copy."""
    rule = schema.tables.get(table)
    if rule is not None and rule.sharded:
        return location_of_slot(schema, rule, 0)
    return home_location(schema, table)


def _table_ref(toks, i: int):
    """``t`` or ``db.t`` at toks[i]: (db or None, table, next index)."""
    if i >= len(toks) or toks[i].kind not in (WORD, IDENT, STRING):
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, "You have an error in your SQL syntax: a table name is missing")
    first = toks[i].value()
    if i + 2 < len(toks) and toks[i + 1].text == "." and toks[i + 2].kind in (WORD, IDENT):
        return first, toks[i + 2].value(), i + 3
    return None, first, i + 1


async def _collect_home(ex, ds: str, db: str, sql: str):
    conn = await ex.conn_for(ds)
    return await ex.collect(conn, ShardQuery(ds, db, sql))


# -- SHOW --------------------------------------------------------------------------------

async def show(ex, sql: str, word: str, binary: bool, params) -> bool:
    toks = _tokens(sql)
    w = _words(toks)
    rest = w[1:]
    full = rest[:1] == ["FULL"]
    if full:
        rest = rest[1:]
    head = rest[0] if rest else ""
    if head in ("DATABASES", "SCHEMAS"):
        names = sorted(n for n in ex.session.schemas if n in ex.server.config.schemas)
        names = _like(toks, w, ["information_schema"] + names)
        ex.write_result([text_column("Database", 64)], [(n,) for n in names], binary)
        return True
    if head == "TABLES":
        await _show_tables(ex, toks, w, full, binary)
        return True
    if head in ("COLUMNS", "FIELDS", "INDEX", "INDEXES", "KEYS"):
        i = w.index(head) + 1
        if i < len(w) and w[i] in ("FROM", "IN"):
            db, table, j = _table_ref(toks, i + 1)
            if j + 1 < len(w) and w[j] in ("FROM", "IN"):
                db = toks[j + 1].value()
                j += 2
            tail = sql[toks[j].start:] if j < len(toks) else ""
            await _show_on_table(ex, db, table, f"SHOW {'FULL ' if full else ''}{head} FROM {{t}} {tail}", binary, rename=head not in ("COLUMNS", "FIELDS"))
            return True
    if head == "CREATE" and len(rest) > 1 and rest[1] == "TABLE":
        db, table, _ = _table_ref(toks, w.index("TABLE") + 1)
        await _show_on_table(ex, db, table, "SHOW CREATE TABLE {t}", binary, rename=True)
        return True
    if head == "MDRIVER" and rest[1:2] == ["STATUS"]:
        rows = ex.server.status_rows()
        ex.write_result([text_column("Variable_name", 64), text_column("Value", 1024)], rows, binary)
        return True
    if head in ("WARNINGS", "ERRORS") or (head == "COUNT" and "WARNINGS" in rest or "ERRORS" in rest[:5]):
        conn = ex.session.warnings_conn
        if conn is not None and not conn.closed:
            ex.session.warnings_conn = None
            if conn not in ex.session.pinned.values():
                ex.held.append(conn)
            await ex.relay(ShardQuery(conn.ds.name, conn.database or "", sql), binary, conn=conn)
            return True
        if head == "COUNT":
            ex.write_result([int_column("@@session.warning_count")], [(0,)], binary)
        else:
            ex.write_result([text_column("Level", 7), int_column("Code"), text_column("Message", 512)], [], binary)
        return True
    if head == "GRANTS":
        s = ex.session
        grants = [f"GRANT USAGE ON *.* TO `{s.user}`@`%`"] + [f"GRANT ALL PRIVILEGES ON `{n}`.* TO `{s.user}`@`%`" for n in s.schemas]
        ex.write_result([text_column(f"Grants for {s.user}@%", 1024)], [(g,) for g in grants], binary)
        return True
    if head == "PROCESSLIST":
        rows = _processlist(ex, full)
        ex.write_result([int_column("Id"), text_column("User", 128), text_column("Host", 64), text_column("db", 64),
                         text_column("Command", 16), int_column("Time"), text_column("State", 64), text_column("Info", 1024)],
                        rows, binary)
        return True
    if head in ("ENGINE", "MASTER", "SLAVE", "REPLICA", "BINLOG", "BINARY", "RELAYLOG", "ALL", "USER_STATISTICS",
                "CLIENT_STATISTICS", "PRIVILEGES"):
        raise err.error(err.ProgrammingError, ER_SPECIFIC_ACCESS_DENIED, f"Access denied; SHOW {head} is not allowed through the proxy", "42000")
    for kw in ("FROM", "IN"):
        if kw in w:
            i = w.index(kw) + 1
            if i < len(toks) and toks[i].kind in (WORD, IDENT, STRING):
                _schema_of(ex, toks[i].value())  # raises unless the user may use that schema
    # SHOW VARIABLES, STATUS, COLLATION, CHARACTER SET, ENGINES ...: the home server answers.
    ex.before_routed("SHOW")
    await ex.relay_home(sql, binary)
    return True


def _processlist(ex, full: bool) -> list[tuple]:
    """The proxy's own client sessions (the backends' threads are shared and not the client's business)."""
    now = ex.loop.time()
    rows = []
    for client in sorted(ex.server.clients, key=lambda cl: cl.id):
        s = client.session
        if s is None:
            continue
        info = "SHOW PROCESSLIST" if client is ex.client else None
        rows.append((client.id, s.user, client.host, s.schema, "Query" if client.busy else "Sleep",
                     int(now - client.last_activity), "", info))
    return rows


def _like(toks, words, names: list[str]) -> list[str]:
    if "LIKE" in words:
        i = words.index("LIKE") + 1
        if i < len(toks) and toks[i].kind == STRING:
            pattern = toks[i].value()
            rx = re.compile("^" + "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern) + "$", re.I | re.S)
            return [n for n in names if rx.match(n)]
    return names


async def _show_tables(ex, toks, w, full: bool, binary: bool) -> None:
    db = None
    if "FROM" in w or "IN" in w:
        i = (w.index("FROM") if "FROM" in w else w.index("IN")) + 1
        db = toks[i].value()
    schema = _schema_of(ex, db)
    names = set(schema.tables)
    # Unsharded tables live in the home database; shards and the XA decision log are hidden.
    res = await _collect_home(ex, schema.datasource, schema.name, f"SHOW FULL TABLES FROM {quote_ident(schema.name)}")
    types = {}
    sharded_prefixes = tuple(f"{t}_" for t, r in schema.tables.items() if r.sharded)
    for row in res.rows:
        name, kind = row[0], row[1]
        if name == "mdriver_xa_log" or (name.startswith(sharded_prefixes) and name.rsplit("_", 1)[-1].isdigit()):
            continue
        names.add(name)
        types[name] = kind
    ordered = _like(toks, w, sorted(names))
    cols = [text_column(f"Tables_in_{schema.name}", 64)]
    if full:
        cols.append(text_column("Table_type", 64))
        ex.write_result(cols, [(n, types.get(n, "BASE TABLE")) for n in ordered], binary)
    else:
        ex.write_result(cols, [(n,) for n in ordered], binary)


async def _show_on_table(ex, db, table: str, template: str, binary: bool, rename: bool) -> None:
    schema = _schema_of(ex, db)
    loc = representative(schema, table)
    sql = template.format(t=f"{quote_ident(loc.database)}.{quote_ident(loc.table)}")
    if not rename:
        await ex.relay(ShardQuery(loc.datasource, loc.database, sql), binary)
        return
    res = await _collect_home(ex, loc.datasource, loc.database, sql)
    rows = []
    for row in res.rows:
        cells = list(row)
        for i, v in enumerate(cells):
            if isinstance(v, str) and loc.table in v and i <= 1:
                cells[i] = v.replace(f"`{loc.table}`", f"`{table}`") if v.startswith("CREATE") else (table if v == loc.table else v)
        rows.append(tuple(cells))
    ex.write_result(res.columns, rows, binary)


async def describe(ex, sql: str, word: str, binary: bool, params) -> bool:
    toks = _tokens(sql)
    if len(toks) < 2 or toks[1].kind not in (WORD, IDENT) or toks[1].upper in ("SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "EXTENDED", "PARTITIONS", "FORMAT", "ANALYZE"):
        if word == "EXPLAIN" or (len(toks) > 1 and toks[1].upper in ("SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH")):
            return await explain(ex, sql, toks, params)
        return False
    db, table, j = _table_ref(toks, 1)
    column = sql[toks[j].start:toks[j].end] if j < len(toks) else ""
    await _show_on_table(ex, db, table, "DESCRIBE {t} " + column, binary, rename=False)
    return True


async def explain(ex, sql: str, toks, params=None) -> bool:
    """EXPLAIN of a single-shard statement runs on that shard; a scatter plan is shown with PREVIEW."""
    inner = sql[toks[1].start:]
    ex.guard(inner, first_word(inner), params is not None)
    plan, route = ex.routing.plan(ex.session, inner, params)
    if route != "single":
        raise _unsupported("EXPLAIN of a statement that runs on several shards (use PREVIEW to see its plan)")
    q = plan.single
    await ex.relay(ShardQuery(q.datasource, q.database, "EXPLAIN " + q.sql))
    return True


async def preview(ex, sql: str, word: str, binary: bool, params) -> bool:
    toks = _tokens(sql)
    if len(toks) < 2:
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, "PREVIEW needs a statement: PREVIEW <sql>")
    inner = sql[toks[1].start:]
    ex.guard(inner, first_word(inner), params is not None)
    plan, _ = ex.routing.plan(ex.session, inner, params)
    rows = [(q.datasource, q.database, q.sql) for q in plan.preview()]
    ex.write_result([text_column("datasource", 64), text_column("database", 64), text_column("sql", 4096)], rows, binary)
    return True


# -- SET and USE ------------------------------------------------------------------------------

_AUTOCOMMIT = {"1": True, "ON": True, "TRUE": True, "0": False, "OFF": False, "FALSE": False}


async def set_statement(ex, sql: str, word: str, binary: bool, params) -> bool:
    s = ex.session
    assignments = parse_set(sql)
    remote = []
    names = None
    for a in assignments:
        if a.kind in ("names", "charset"):
            names = a
        elif a.kind == "system" and a.name == "autocommit" and a.value.strip().strip("'\"").upper() in _AUTOCOMMIT:
            on = _AUTOCOMMIT[a.value.strip().strip("'\"").upper()]
            if on and s.txn is not None:
                await ex.end_transaction(commit=True)  # like MySQL: autocommit=1 commits
            s.autocommit = on
            s.vars.pop("autocommit", None)
            if not on:
                s.vars["autocommit"] = "0"
            s._refresh_state()
        else:
            remote.append(a)
    if names is not None:
        await _set_names(ex, names)
    if remote:
        await _set_remote(ex, remote)
    ex.ok()
    return True


async def _set_names(ex, a) -> None:
    charset = "utf8mb3" if a.value == "utf8" else a.value
    if a.kind == "names" and charset == "utf8mb4" and a.collation in (None, DEFAULT_COLLATION):
        ex.session.set_names(charset, DEFAULT_COLLATION)
        return
    # Let the server validate anything else and tell us the collation it picked.
    ds, db = ex.home()
    conn = await ex.conn_for(ds)
    text = f"SET NAMES {quote_string(charset)}" + (f" COLLATE {quote_string(a.collation)}" if a.collation else "")
    if a.kind == "charset":
        text = f"SET CHARACTER SET {quote_string(charset)}"
    await ex.collect(conn, ShardQuery(ds, "", text))
    res = await ex.collect(conn, ShardQuery(ds, "", "SELECT @@character_set_client, @@collation_connection"))
    cs, coll = res.rows[0]
    ex.session.set_names(cs, coll)
    mark_applied(ex.session.state, conn)


def _literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    if isinstance(value, str):
        return quote_string(value)
    return str(value)


async def _set_remote(ex, assignments) -> None:
    """Run the SET on a backend, then capture the resulting values for replay elsewhere."""
    s = ex.session
    for a in assignments:
        ex.guard(f"SELECT {a.value}", "SELECT")  # a value may be a subquery
    ds, db = ex.home()
    conn = await ex.conn_for(ds)
    parts = []
    for a in assignments:
        target = f"@@session.{a.name}" if a.kind == "system" else f"@{quote_ident(a.name)}"
        parts.append(f"{target}={a.value}")
    await ex.collect(conn, ShardQuery(ds, db if s.schema else "", "SET " + ", ".join(parts)))
    reads = [f"@@session.{a.name}" if a.kind == "system" else f"@{quote_ident(a.name)}" for a in assignments]
    q = ShardQuery(ds, "", "SELECT " + ", ".join(reads))
    raw = await conn.query(q.sql)
    system, user = {}, {}
    for a, cd, cell in zip(assignments, raw.columns, raw.rows[0]):
        value = decode_text(cell, cd.type, cd.charset)
        lit = _literal(value)
        (system if a.kind == "system" else user)[a.name] = lit
    s.set_vars(system, user)
    if "sql_mode" in system:
        s.no_backslash_escapes = "NO_BACKSLASH_ESCAPES" in system["sql_mode"].upper()
    mark_applied(s.state, conn)


# -- transactions -----------------------------------------------------------------------------

async def begin(ex, sql: str, word: str, binary: bool, params) -> bool:
    w = _words(_tokens(sql))
    if word == "START" and w[1:2] != ["TRANSACTION"]:
        return False
    s = ex.session
    if s.txn is not None:
        await ex.end_transaction(commit=True)  # implicit commit, as MySQL does
    if ex.session.warnings_conn is not None:
        ex.release_warnings()
    s.txn = ex.server.new_transaction(s)
    s.txn_read_only = "ONLY" in w
    ex.ok()
    return True


async def commit(ex, sql: str, word: str, binary: bool, params) -> bool:
    w = _words(_tokens(sql))
    if word == "ROLLBACK" and "TO" in w:
        raise _unsupported("ROLLBACK TO SAVEPOINT")
    chain = "CHAIN" in w and "NO" not in w[w.index("CHAIN") - 1:w.index("CHAIN")]
    release = "RELEASE" in w and not (w.index("RELEASE") > 0 and w[w.index("RELEASE") - 1] == "NO")
    await ex.end_transaction(commit=word == "COMMIT")
    if chain:
        ex.session.txn = ex.server.new_transaction(ex.session)
    ex.ok()
    if release:
        ex.client.close()
    return True


async def refuse(ex, sql: str, word: str, binary: bool, params) -> bool:
    w = _words(_tokens(sql))
    if word == "UNLOCK" and w[1:2] == ["TABLES"]:
        ex.ok()
        return True
    reasons = {
        "XA": "client-driven XA (the proxy runs its own XA across shards)",
        "SAVEPOINT": "SAVEPOINT",
        "RELEASE": "RELEASE SAVEPOINT",
        "LOCK": "LOCK TABLES",
        "KILL": "KILL (backend threads are shared)",
        "SHUTDOWN": "SHUTDOWN",
    }
    raise _unsupported(reasons.get(word, word))


# -- connect-time SELECTs ---------------------------------------------------------------------

def _local_values(ex):
    s = ex.session
    return {
        "DATABASE()": lambda: s.schema, "SCHEMA()": lambda: s.schema,
        "CONNECTION_ID()": lambda: ex.client.id,
        "LAST_INSERT_ID()": lambda: s.last_insert_id,
        "USER()": lambda: f"{s.user}@{ex.client.host}", "SESSION_USER()": lambda: f"{s.user}@{ex.client.host}",
        "SYSTEM_USER()": lambda: f"{s.user}@{ex.client.host}",
        "CURRENT_USER()": lambda: f"{s.user}@%", "CURRENT_USER": lambda: f"{s.user}@%",
        "@@VERSION_COMMENT": lambda: "mdriver sharding proxy",
        "@@AUTOCOMMIT": lambda: int(s.autocommit), "@@SESSION.AUTOCOMMIT": lambda: int(s.autocommit),
        "@@IN_TRANSACTION": lambda: int(s.txn is not None), "@@SESSION.IN_TRANSACTION": lambda: int(s.txn is not None),
    }


def maybe_local_select(sql: str) -> bool:
    """Cheap test: could :func:`select` answer this without the router? (False for nearly every real query.)"""
    if ("(" not in sql and "@@" not in sql) or len(sql) > 400:
        return False
    lowered = sql.lower()
    return "get_lock" in lowered or " from " not in lowered


async def select(ex, sql: str, word: str, binary: bool, params) -> bool:
    """``SELECT DATABASE()``, ``SELECT @@version_comment LIMIT 1`` ...: answered without a backend."""
    if params or not maybe_local_select(sql):
        return False
    lowered = sql.lower()
    if "get_lock" in lowered:
        return await _get_lock(ex, sql, binary)
    if " from " in lowered:
        return False
    toks = _tokens(sql)
    if any(t.upper in ("FROM", "INTO", "WHERE") for t in toks if t.kind == WORD):
        return False
    limit = None
    if len(toks) >= 2 and toks[-2].upper == "LIMIT" and toks[-1].text.isdigit():
        limit = int(toks[-1].text)
        toks = toks[:-2]
    values = _local_values(ex)
    cols, row = [], []
    for item in _split_items(toks[1:]):
        alias = None
        if len(item) >= 3 and item[-2].upper == "AS":
            alias, item = item[-1].value(), item[:-2]
        text = "".join(t.text for t in item)
        fn = values.get(text.upper())
        if fn is None:
            return False
        v = fn()
        name = alias or sql[item[0].start:item[-1].end]
        cols.append(int_column(name) if isinstance(v, int) else text_column(name, 256))
        row.append(v)
    rows = [tuple(row)] if limit != 0 else []
    ex.write_result(cols, rows, binary)
    return True


def _split_items(toks):
    items, cur, depth = [], [], 0
    for t in toks:
        if t.kind == PUNCT and t.text == "(":
            depth += 1
        elif t.kind == PUNCT and t.text == ")":
            depth -= 1
        if t.kind == PUNCT and t.text == "," and depth == 0:
            items.append(cur)
            cur = []
            continue
        cur.append(t)
    if cur:
        items.append(cur)
    return items


async def _get_lock(ex, sql: str, binary: bool) -> bool:
    """User locks live on one backend connection: keep it for the rest of the session."""
    ds, db = ex.home()
    conn = await ex.conn_for(ds)
    s = ex.session
    if conn in ex.held:
        ex.held.remove(conn)
    s.pinned[ds] = conn
    s.sticky[ds] = "user lock"
    await ex.relay(ShardQuery(ds, db, sql), binary)
    return True


async def create(ex, sql: str, word: str, binary: bool, params) -> bool:
    toks = _tokens(sql)
    if len(toks) > 2 and toks[1].upper == "TEMPORARY":
        raise _unsupported("CREATE TEMPORARY TABLE (a temporary table would exist on one backend connection only)")
    return False


async def field_list(ex, payload: bytes) -> None:
    """COM_FIELD_LIST: the columns of a logical table, read from one physical copy."""
    table_raw, wildcard = parse_field_list(payload)
    table = table_raw.decode(ex.session.codec, "surrogateescape")
    schema = _schema_of(ex, None)
    loc = representative(schema, table)
    conn = await ex.conn_for(loc.datasource)
    await ex.ensure_context(conn, ShardQuery(loc.datasource, loc.database, ""))
    handler = await conn.command(b"\x04" + loc.table.encode("utf-8") + b"\0" + wildcard, FieldList())
    w = PacketWriter(ex.client.reply_seq)
    packets = handler.result
    if packets.error is not None:
        raise err.from_backend(packets.error.errno, packets.error.message.replace(loc.table, table), packets.error.sqlstate)
    for cd in packets.columns:
        w.add(make_column_definition(replace(cd, table=table, org_table=table, schema=schema.name), field_list=True))
    if ex.client.capabilities & c.CLIENT_DEPRECATE_EOF:
        w.add(make_ok(OK(0, 0, ex.session.status_flags()), ex.client.capabilities, eof=True))
    else:
        w.add(make_eof(EOF(0, ex.session.status_flags())))
    ex.client.write(w.data())


async def use(ex, sql: str, word: str, binary: bool, params) -> bool:
    toks = _tokens(sql)
    if len(toks) != 2:
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, "You have an error in your SQL syntax: USE needs one database name")
    await use_schema(ex, toks[1].value())
    return True


LOCAL = {
    "SET": set_statement,
    "USE": use,
    "SHOW": show,
    "DESCRIBE": describe,
    "DESC": describe,
    "EXPLAIN": describe,
    "PREVIEW": preview,
    "BEGIN": begin,
    "START": begin,
    "COMMIT": commit,
    "ROLLBACK": commit,
    "XA": refuse,
    "SAVEPOINT": refuse,
    "RELEASE": refuse,
    "LOCK": refuse,
    "UNLOCK": refuse,
    "KILL": refuse,
    "SHUTDOWN": refuse,
    "SELECT": select,
    "CREATE": create,
}


# Statements that are always the proxy's own and take no parameters.
SESSION_WORDS = frozenset(("SET", "USE", "SHOW", "BEGIN", "START", "COMMIT", "ROLLBACK", "XA", "SAVEPOINT", "RELEASE",
                           "LOCK", "UNLOCK", "KILL", "SHUTDOWN"))
