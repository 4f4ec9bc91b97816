"""Running one session's commands: routing, relaying, scatter, transactions.

Per statement: plan with the router; a plan with one physical statement and
no merge is relayed packet by packet; anything else runs through the
router's async runner with this executor as its backend. Before a statement
runs on a backend connection, "preludes" bring that connection in line with
the session: the session's variables (one SET), the physical database
(COM_INIT_DB) and the transaction branch (XA START / START TRANSACTION).
Reads pipeline preludes with the statement; writes run them first, so a
failed prelude can never leave a write running in the wrong context.
"""
from __future__ import annotations

import logging

from mdriver import err
from mdriver.router.types import ShardQuery, ShardResult
from mdriver.wire import constants as c
from mdriver.wire.codec import ProtocolError
from mdriver.wire.framing import frame
from mdriver.wire.packets import EOF, OK, make_eof, make_ok, parse_change_user, parse_set_option
from proxy import admin, prepared, scatter
from proxy.backend import Swallow
from proxy.fastpath import KINDS, Job, malformed
from proxy.pool import give_back
from proxy.results import PacketWriter, Relay, write_result_set
from proxy.session import mark_applied, replay_sql
from proxy.sqltext import first_word

log = logging.getLogger(__name__)

# Errors after which the server has rolled back the whole transaction (not just the statement).
TXN_ABORTING_ERRNOS = frozenset((1213, 1402, 1613, 1614))


class Executor:
    """Serves the commands of one client session."""

    def __init__(self, server, client, session):
        self.server = server
        self.client = client
        self.session = session
        self.loop = server.loop
        self.held: list = []  # connections borrowed for the statement in flight
        self.inflight = None  # the Routing the statement in flight was planned with (see ProxyServer.maybe_acknowledge)
        self.txn_aborted = False  # a branch was rolled back by its server: roll back the rest before the next command
        self.closed = False
        self._commands = {
            c.COM_QUERY: self.com_query,
            c.COM_PING: self.com_ping,
            c.COM_INIT_DB: self.com_init_db,
            c.COM_QUIT: self.com_quit,
            c.COM_FIELD_LIST: self.com_field_list,
            c.COM_STMT_PREPARE: self.com_stmt_prepare,
            c.COM_STMT_EXECUTE: self.com_stmt_execute,
            c.COM_STMT_SEND_LONG_DATA: self.com_stmt_send_long_data,
            c.COM_STMT_CLOSE: self.com_stmt_close,
            c.COM_STMT_RESET: self.com_stmt_reset,
            c.COM_RESET_CONNECTION: self.com_reset_connection,
            c.COM_CHANGE_USER: self.com_change_user,
            c.COM_SET_OPTION: self.com_set_option,
            c.COM_STATISTICS: self.com_statistics,
        }

    def guard(self, sql: str, word: str, prepared: bool = False) -> None:
        """Refuse statements that reach outside the session's schemas (see proxy.guard)."""
        s = self.session
        self.server.guard.check(sql, word, s.schemas, s.user, self.client.host, sql if prepared else None)

    @property
    def routing(self):
        """The server's routing, or the one the session's open transaction started with."""
        s = self.session
        if s.txn is not None and s.txn_routing is not None:
            return s.txn_routing
        return self.server.routing

    # -- dispatch ------------------------------------------------------------------

    async def dispatch(self, payload: bytes) -> None:
        if not payload:
            self.error(err.error(err.InterfaceError, err.ER_UNKNOWN_COM_ERROR, "Unknown command"))
            return
        handler = self._commands.get(payload[0])
        if handler is None:
            self.error(err.error(err.InterfaceError, err.ER_UNKNOWN_COM_ERROR, "Unknown command"))
            return
        try:
            await handler(payload)
        except err.MySQLError as e:
            self.error(e)
        except ProtocolError as e:
            self.error(malformed(e))
        finally:
            if self.held:
                self.release_held()

    def error(self, e: err.MySQLError, seq: int | None = None) -> None:
        errno = e.errno if isinstance(e.errno, int) else err.ER_UNKNOWN_ERROR
        self.client.send_error(errno, e.msg, e.sqlstate, seq=self.client.reply_seq if seq is None else seq)

    def ok(self, affected: int = 0, insert_id: int = 0, warnings: int = 0, info: bytes = b"") -> None:
        self.client.send_packet(make_ok(OK(affected, insert_id, self.session.status_flags(), warnings, info), self.client.capabilities),
                                self.client.reply_seq)

    def write_result(self, columns, rows, binary: bool = False) -> None:
        w = PacketWriter(self.client.reply_seq)
        write_result_set(w, columns, rows, self.client.capabilities, self.session.status_flags(), binary, self.session.codec)
        self.client.write(w.data())

    # -- simple commands -------------------------------------------------------------

    async def com_ping(self, payload: bytes) -> None:
        self.ok()

    async def com_quit(self, payload: bytes) -> None:
        self.client.close()

    async def com_init_db(self, payload: bytes) -> None:
        name = payload[1:].decode(self.session.codec, "surrogateescape")
        await admin.use_schema(self, name)

    async def com_query(self, payload: bytes) -> None:
        sql = payload[1:].decode(self.session.codec, "surrogateescape")
        await self.statement(sql)

    async def com_set_option(self, payload: bytes) -> None:
        option = parse_set_option(payload)
        if option not in (c.MYSQL_OPTION_MULTI_STATEMENTS_ON, c.MYSQL_OPTION_MULTI_STATEMENTS_OFF):
            raise err.error(err.InterfaceError, err.ER_UNKNOWN_COM_ERROR, f"Unknown COM_SET_OPTION value {option}")
        self.session.multi_statements = option == c.MYSQL_OPTION_MULTI_STATEMENTS_ON
        if self.client.capabilities & c.CLIENT_DEPRECATE_EOF:
            self.ok()
        else:
            self.client.send_packet(make_eof(EOF(0, self.session.status_flags())), self.client.reply_seq)

    async def com_statistics(self, payload: bytes) -> None:
        srv = self.server
        text = f"Uptime: {int(self.loop.time() - srv.started)}  Threads: {srv.limits.connections}  Questions: {srv.questions}"
        self.client.send_packet(text.encode("ascii"), self.client.reply_seq)

    async def com_field_list(self, payload: bytes) -> None:
        await admin.field_list(self, payload)

    async def com_reset_connection(self, payload: bytes) -> None:
        await self.reset_session()
        self.ok()

    async def com_change_user(self, payload: bytes) -> None:
        cu = parse_change_user(payload, self.client.capabilities)
        await self.reset_session()
        self.client.change_user(cu)

    async def com_stmt_prepare(self, payload: bytes) -> None:
        await prepared.prepare(self, payload)

    async def com_stmt_execute(self, payload: bytes) -> None:
        await prepared.execute(self, payload)

    async def com_stmt_send_long_data(self, payload: bytes) -> None:
        prepared.send_long_data(self, payload)

    async def com_stmt_close(self, payload: bytes) -> None:
        prepared.close(self, payload)

    async def com_stmt_reset(self, payload: bytes) -> None:
        prepared.reset(self, payload)

    # -- statements ----------------------------------------------------------------------

    async def statement(self, sql: str, binary: bool = False, params=None, word: str | None = None, planned=None) -> None:
        """Run one statement and write its whole response (``word``: its first keyword, if known)."""
        srv = self.server
        srv.questions += 1
        start = self.loop.time()
        if word is None:
            word = first_word(sql)
        kind = KINDS.get(word, "other")
        route = "local"
        try:
            self.inflight = self.routing
            if planned is None:
                local = admin.LOCAL.get(word)
                if local is not None and await local(self, sql, word, binary, params):
                    return
                self.guard(sql, word, params is not None)
                self.before_routed(word)
                plan, route = self.routing.plan(self.session, sql, params)
            else:
                plan, route = planned
            if route == "single":
                await self.relay(plan.single, binary)
            else:
                result = await self.routing.run(self, plan, sql)
                self.after_result(result, binary)
        except err.MySQLError as e:
            route = "error"
            if e.errno in TXN_ABORTING_ERRNOS and self.session.txn is not None:
                self.txn_aborted = True
            raise
        finally:
            self.inflight = None
            srv.metrics.statement(kind, route, self.loop.time() - start)

    def after_result(self, result, binary: bool) -> None:
        s = self.session
        if result.columns:
            self.write_result(result.columns, result.rows, binary)
        else:
            s.last_insert_id = result.insert_id or s.last_insert_id
            self.ok(result.affected_rows, result.insert_id, result.warnings)

    def before_routed(self, word: str) -> None:
        """A statement goes to the backends: release the last statement's warnings, open an implicit transaction."""
        s = self.session
        if s.warnings_conn is not None:
            self.release_warnings()
        if s.txn is None and not s.autocommit:
            s.txn = self.server.new_transaction(s)

    def home(self) -> tuple[str, str]:
        """(datasource, physical database) of the session's schema home."""
        cfg = self.server.config
        name = self.session.schema or (self.session.schemas[0] if self.session.schemas else next(iter(cfg.schemas)))
        schema = cfg.schemas[name]
        return schema.datasource, schema.name

    async def relay_home(self, sql: str, binary: bool = False) -> None:
        ds, db = self.home()
        await self.relay(ShardQuery(ds, db, sql), binary)

    # -- backend connections ---------------------------------------------------------------

    async def conn_for(self, datasource: str):
        s = self.session
        conn = s.pinned.get(datasource)
        if conn is not None:
            if not conn.closed:
                return conn
            del s.pinned[datasource]
            give_back(conn)
            if s.txn is not None and datasource in s.txn.branches:
                raise err.error(err.BackendError, err.CR_SERVER_LOST,
                                f"the transaction's connection to datasource {datasource} was lost; ROLLBACK and retry the transaction")
            s.sticky.pop(datasource, None)
        pool = self.server.pools.get(datasource)
        if pool is None:
            raise err.error(err.OperationalError, err.ER_UNKNOWN_ERROR, f"no datasource named {datasource} in the current config")
        conn = pool.acquire_nowait(s.flavor)
        if conn is None:
            conn = await pool.acquire(s.flavor)
        if s.txn is not None:
            s.pinned[datasource] = conn
        else:
            self.held.append(conn)
        return conn

    def release_held(self) -> None:
        s = self.session
        for conn in self.held:
            if conn is not s.warnings_conn:
                give_back(conn)
        self.held.clear()

    def release_warnings(self) -> None:
        s = self.session
        conn, s.warnings_conn = s.warnings_conn, None
        if conn is not None and conn not in s.pinned.values():
            give_back(conn)

    def keep_warnings(self, conn, warnings: int) -> None:
        """Keep the connection that produced warnings until the next statement (SHOW WARNINGS reads them there)."""
        s = self.session
        if warnings and s.warnings_conn is None and conn in self.held:
            s.warnings_conn = conn
            self.held.remove(conn)

    def preludes(self, conn, q: ShardQuery) -> list[bytes]:
        """Command payloads that must run on ``conn`` before ``q``."""
        s = self.session
        out = []
        if conn.state_key is not s.state:
            sql = replay_sql(s.state, conn)
            if sql is None:
                conn.state_key = s.state
            else:
                out.append(b"\x03" + sql.encode(s.codec, "surrogateescape"))
        if q.database and conn.database != q.database and f"`{q.database}`." not in q.sql:
            # The router qualifies shard tables with their database; only unqualified SQL needs COM_INIT_DB.
            out.append(b"\x02" + q.database.encode("utf-8"))
        txn = s.txn
        if txn is not None:
            start = txn.start_sql(q.datasource)
            if start is not None:
                out.append(b"\x03" + start.encode("utf-8"))
        return out

    def preludes_done(self, conn, q: ShardQuery, handlers) -> None:
        """Record what the preludes changed; raise the first prelude error."""
        s = self.session
        errors = [h.error for h in handlers if h.error is not None]
        if errors:
            e = errors[0]
            conn.close()  # its state is uncertain now
            raise err.from_backend(e.errno, e.message, e.sqlstate)
        mark_applied(s.state, conn)
        if q.database and f"`{q.database}`." not in q.sql:
            conn.database = q.database
        if s.txn is not None and q.datasource not in s.txn.branches:
            s.txn.joined(q.datasource)

    async def ensure_context(self, conn, q: ShardQuery) -> None:
        """Bring ``conn`` in line with the session before a command that is not a statement."""
        pre = self.preludes(conn, q)
        if pre:
            await self.run_preludes(conn, q, pre)

    def check_schema(self, name: str):
        return admin.check_schema(self, name)

    async def run_preludes(self, conn, q: ShardQuery, pre: list[bytes]) -> None:
        handlers = [Swallow(conn.capabilities) for _ in pre]
        await conn.send(b"".join(frame(p, 0) for p in pre), handlers)
        self.preludes_done(conn, q, handlers)

    # -- relay --------------------------------------------------------------------------

    def relay_start(self, q: ShardQuery, conn, binary: bool, callback=None):
        """Send ``q`` (with pipelined preludes) on ``conn``; the response streams to the client."""
        pre = self.preludes(conn, q)
        prelude_handlers = [Swallow(conn.capabilities) for _ in pre] if pre else []
        relay = Relay(self.client, conn.capabilities, self.client.reply_seq, binary, self.server.converters)
        if pre:
            relay.blocked = prelude_handlers
            wire = b"".join(frame(p, 0) for p in pre) + frame(b"\x03" + q.sql.encode(self.session.codec, "surrogateescape"), 0)
        else:
            wire = frame(b"\x03" + q.sql.encode(self.session.codec, "surrogateescape"), 0)
        self.client.relaying = conn
        fut = conn.send(wire, prelude_handlers + [relay] if pre else [relay], callback)
        return relay, prelude_handlers, fut

    def relay_done(self, q: ShardQuery, conn, relay, prelude_handlers) -> None:
        self.client.relaying = None
        conn.resume_reading()  # it may have been paused for a slow client
        s = self.session
        if prelude_handlers:
            self.preludes_done(conn, q, prelude_handlers)
        if q.write and s.txn is not None:
            s.txn.mark_written(q.datasource)
        if relay.error is None:
            if relay.insert_id:
                s.last_insert_id = relay.insert_id
        elif not relay.retry:  # relayed to the client: count it with the proxy's own errors
            self.server.metrics.error(relay.error.errno)
            if relay.error.errno in TXN_ABORTING_ERRNOS and s.txn is not None:
                self.txn_aborted = True
        self.after_backend(conn, relay.status, relay.warnings)

    async def abort_transaction(self) -> None:
        """A branch's server rolled its transaction back (deadlock): end the whole transaction, as MySQL does.

        The client already has the error; what remains is to roll back the
        other branches, so that its next BEGIN or COMMIT starts clean.
        """
        self.txn_aborted = False
        if self.session.txn is None:
            return
        try:
            await self.end_transaction(commit=False)
        except err.MySQLError as e:
            log.info("rolling back after %s failed: %s", "a deadlock", e.msg)

    def relay_failed(self, q: ShardQuery, conn, relay, e: err.MySQLError) -> bool:
        """A backend failure mid-relay; True if it was fully handled (the client had part of a result)."""
        self.client.relaying = None
        self.backend_failed(q.datasource, conn)
        if relay.started:
            # Part of a result is out: an ERR ends it; the client must reconnect after a broken result.
            self.error(e, relay.seq)
            self.client.close()
            return True
        return False

    async def relay(self, q: ShardQuery, binary: bool = False, conn=None) -> None:
        """Run one physical statement and stream its response to the client."""
        s = self.session
        if q.write and s.txn is not None:
            s.txn.check_write((q.datasource,))
        if conn is None:
            conn = await self.conn_for(q.datasource)
        if q.write:
            pre = self.preludes(conn, q)
            if pre:
                await self.run_preludes(conn, q, pre)
        relay, prelude_handlers, fut = self.relay_start(q, conn, binary)
        try:
            await fut
        except err.BackendError as e:
            if self.relay_failed(q, conn, relay, e):
                return
            raise
        self.relay_done(q, conn, relay, prelude_handlers)

    def release_if_held(self, conn) -> None:
        if conn in self.held:
            self.held.remove(conn)
            give_back(conn)

    async def run_job(self, job) -> None:
        """The task path for what ``proxy.fastpath.serve`` handed over."""
        if isinstance(job, Job):
            try:
                if job.routing is not None and job.routing is not self.routing:
                    job.plan = None  # planned on a config that changed meanwhile: plan again
                await self.statement(job.sql, job.binary, job.params, job.word, job.plan)
            except err.MySQLError as e:
                self.error(e)
            finally:
                if self.held:
                    self.release_held()
        else:
            await self.dispatch(job)
        if self.txn_aborted:
            await self.abort_transaction()

    def after_backend(self, conn, status: int, warnings: int) -> None:
        s = self.session
        s.warnings = warnings
        if status & c.SERVER_STATUS_IN_TRANS and s.txn is None and conn in self.held:
            # A transaction the proxy did not open (e.g. an implicit one): never share this connection.
            log.warning("%r is in a transaction the proxy did not start; closing it", conn)
            self.held.remove(conn)
            give_back(conn, close=True)
            return
        if warnings:
            self.keep_warnings(conn, warnings)

    def backend_failed(self, datasource: str, conn) -> None:
        """A connection failed mid-request (it closed itself): stop holding it.

        A transaction branch stays pinned, closed, so COMMIT/ROLLBACK see it lost.
        """
        s = self.session
        if conn in self.held:
            self.held.remove(conn)
            give_back(conn)
        if s.pinned.get(datasource) is conn and (s.txn is None or datasource not in s.txn.branches):
            del s.pinned[datasource]
            give_back(conn)

    # -- scatter (the router's Backend) ----------------------------------------------------------

    async def run(self, batch: list[ShardQuery]) -> list[ShardResult]:
        """The router's backend interface: run a batch of physical statements (see proxy.scatter)."""
        return await scatter.run_batch(self, batch)

    async def collect(self, conn, q: ShardQuery) -> ShardResult:
        """Run one physical statement on ``conn`` and decode its result (for merging)."""
        return await scatter.collect(self, conn, q)

    # -- session lifetime --------------------------------------------------------------------------

    async def reset_session(self) -> None:
        """Roll back, unpin, forget session state (COM_RESET_CONNECTION, COM_CHANGE_USER)."""
        await self.end_transaction(commit=False)
        self.unpin_all()
        self.session.reset()

    def unpin_all(self) -> None:
        s = self.session
        if s.warnings_conn is not None:
            self.release_warnings()
        for ds, conn in list(s.pinned.items()):
            if conn is not s.warnings_conn:
                give_back(conn, close=ds in s.sticky)  # a user lock is freed only by closing
        s.pinned.clear()
        s.sticky.clear()

    async def end_transaction(self, commit: bool) -> None:
        await self.server.transactions.finish(self, commit)

    async def close(self) -> None:
        """The client is gone: roll back and give every connection back."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.session.txn is not None:
                await self.end_transaction(commit=False)
        except err.MySQLError as e:
            log.info("rollback after client %s disconnected failed: %s", self.client.host, e.msg)
        finally:
            self.release_held()
            self.unpin_all()

