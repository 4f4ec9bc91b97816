"""Server-side prepared statements of clients (COM_STMT_*).

A client statement is a ``?`` template: the router's "qmark" style. An
execute that lands on one shard runs as a prepared statement on that
backend, with the client's parameters forwarded as they are (see
proxy.fastpath and proxy.stmtcache, which bounds how many each backend
connection keeps). Everything else (scatter, transactions, long data, a
backend that will not prepare more) is planned per execute with the bound
values and runs as text, whose rows are converted to binary rows for the
client.

Column metadata for the prepare response comes from preparing one physical
copy of the statement on a backend (then closing it).
"""
from __future__ import annotations

from mdriver import err
from mdriver.router.types import ShardQuery
from mdriver.wire import constants as c
from mdriver.wire.codec import ProtocolError
from mdriver.wire.packets import ColumnDefinition, StmtPrepareOK, make_stmt_prepare_ok
from mdriver.wire.statements import parse_stmt_execute, peek_statement_id
from proxy import admin
from proxy.backend import Collect
from proxy.results import PacketWriter, write_definitions
from proxy.session import PreparedStatement
from proxy.sqltext import PUNCT, SqlSyntaxError, first_word, tokenize

MAX_STATEMENTS_PER_SESSION = 16382  # as max_prepared_stmt_count
_RESULT_WORDS = frozenset(("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "VALUES", "TABLE", "CALL", "PREVIEW"))
_PARAM_DEF = ColumnDefinition("?", c.MYSQL_TYPE_VAR_STRING, charset=c.BINARY_COLLATION)


def count_params(sql: str) -> int:
    try:
        return sum(1 for t in tokenize(sql) if t.kind == PUNCT and t.text == "?")
    except SqlSyntaxError as e:
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, f"You have an error in your SQL syntax: {e}") from None


def _unknown(statement_id: int, where: str) -> err.MySQLError:
    return err.error(err.ProgrammingError, err.ER_UNKNOWN_STMT_HANDLER,
                     f"Unknown prepared statement handler ({statement_id}) given to {where}")


async def prepare(ex, payload: bytes) -> None:
    s = ex.session
    sql = payload[1:].decode(s.codec, "surrogateescape")
    if len(s.statements) >= MAX_STATEMENTS_PER_SESSION:
        raise err.error(err.OperationalError, 1461, f"Can't create more than max_prepared_stmt_count statements (current value: {MAX_STATEMENTS_PER_SESSION})")
    n = count_params(sql)
    word = first_word(sql)
    if word not in admin.LOCAL or word in ("SELECT", "CREATE"):
        ex.guard(sql, word, prepared=True)
    columns: list[ColumnDefinition] = []
    if word in _RESULT_WORDS:
        columns = await _result_columns(ex, sql, n, word)
    elif word not in ("INSERT", "UPDATE", "DELETE", "REPLACE"):
        if word not in admin.LOCAL:
            ex.routing.plan(s, sql, (0,) * n if n else None)  # refuse now what the router refuses
    stmt = PreparedStatement(s.next_statement_id, sql, n, columns, kind=word)
    s.next_statement_id += 1
    s.statements[stmt.id] = stmt
    caps = ex.client.capabilities
    status = s.status_flags()
    w = PacketWriter(ex.client.reply_seq)
    w.add(make_stmt_prepare_ok(StmtPrepareOK(stmt.id, len(columns), n)))
    write_definitions(w, [_PARAM_DEF] * n, caps, status)
    write_definitions(w, columns, caps, status)
    ex.client.write(w.data())


async def _result_columns(ex, sql: str, n: int, word: str) -> list[ColumnDefinition]:
    """Prepare one physical copy of the statement on its backend to learn the result columns."""
    if word in ("SHOW", "DESCRIBE", "DESC", "EXPLAIN", "PREVIEW", "CALL") or (word == "SELECT" and n == 0 and sql.count("(") and " from " not in sql.lower()):
        return []  # answered by the proxy or not describable in advance; the execute response carries them
    plan, _ = ex.routing.plan(ex.session, sql, (0,) * n if n else None)
    queries = plan.preview()
    if not queries:
        return []
    q: ShardQuery = queries[0]
    conn = await ex.conn_for(q.datasource)
    await ex.ensure_context(conn, q)
    handler = await conn.command(b"\x16" + q.sql.encode(ex.session.codec, "surrogateescape"), Collect(conn.capabilities, prepare=True))
    res = handler.result
    if res.error is not None:
        raise err.from_backend(res.error.errno, res.error.message, res.error.sqlstate)
    conn.transport.write(b"\x05\x00\x00\x00\x19" + res.statement_id.to_bytes(4, "little"))  # COM_STMT_CLOSE: no reply
    return res.columns


def bind(ex, payload: bytes) -> tuple[PreparedStatement, tuple | None, bool]:
    """Parse a COM_STMT_EXECUTE: (the statement, its parameters or None, whether the packet can be forwarded).

    A packet can be forwarded to a backend's prepared statement unless some
    parameter came as long data (consumed here).
    """
    s = ex.session
    stmt_id = peek_statement_id(payload)
    stmt = s.statements.get(stmt_id)
    if stmt is None:
        raise _unknown(stmt_id, "mysqld_stmt_execute")
    long_data = {i: bytes(b) for i, b in stmt.long_data.items()} if stmt.long_data else None
    try:
        e = parse_stmt_execute(payload, stmt.num_params, stmt.param_types, long_data, s.codec)
    except ProtocolError as pe:
        raise err.error(err.ProgrammingError, err.ER_WRONG_ARGUMENTS, f"Incorrect arguments to mysqld_stmt_execute: {pe}") from None
    finally:
        stmt.long_data.clear()
    if e.new_params_bound:
        stmt.param_types = e.types
        start = 11 + ((stmt.num_params + 7) >> 3)
        stmt.raw_types = payload[start:start + 2 * stmt.num_params]
    if stmt.kind in admin.SESSION_WORDS and stmt.num_params:
        raise err.error(err.NotSupportedError, err.ER_NOT_SUPPORTED_YET,
                        f"{stmt.kind} with parameters as a prepared statement is not supported through the proxy; send it as text")
    return stmt, (e.values if stmt.num_params else None), long_data is None


async def execute(ex, payload: bytes) -> None:
    stmt, params, _ = bind(ex, payload)
    await ex.statement(stmt.sql, True, params, stmt.kind)


def send_long_data(ex, payload: bytes) -> None:
    """COM_STMT_SEND_LONG_DATA never gets a reply; problems surface at execute."""
    s = ex.session
    if len(payload) < 7:
        return
    stmt = s.statements.get(peek_statement_id(payload))
    if stmt is None:
        return
    param = int.from_bytes(payload[5:7], "little")
    if param >= stmt.num_params:
        return
    buf = stmt.long_data.setdefault(param, bytearray())
    if len(buf) + len(payload) - 7 > ex.server.limits.settings.max_allowed_packet:
        buf.clear()
        return
    buf += payload[7:]


def close(ex, payload: bytes) -> None:
    ex.session.statements.pop(peek_statement_id(payload), None)


def reset(ex, payload: bytes) -> None:
    stmt_id = peek_statement_id(payload)
    stmt = ex.session.statements.get(stmt_id)
    if stmt is None:
        raise _unknown(stmt_id, "mysqld_stmt_reset")
    stmt.long_data.clear()
    ex.ok()
