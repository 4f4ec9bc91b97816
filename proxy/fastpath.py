"""The task-free fast path: a single-shard statement served by two callbacks.

Most statements of an OLTP workload touch one shard. For those, the whole
command runs inside two callbacks, with no task, future or await: when the
client's packet arrives (bind, plan, take an idle backend connection, send),
and when the backend's response arrives (relay it, give the connection
back). Anything else (a scatter, a connection to wait for, a write that
needs preludes first, a statement the proxy answers itself) goes to the
executor's task path with the work done so far, in a :class:`Job`.

This is the proxy's hot path. It is written for few calls per statement
(``bench/bench_proxy_path.py`` measures it), which is why it reads some
session fields directly instead of going through the executor's helpers.
"""
from __future__ import annotations

from mdriver import err
from mdriver.wire import constants as c
from mdriver.wire.codec import ProtocolError
from mdriver.wire.framing import frame
from mdriver.wire.statements import rebind_stmt_execute
from proxy import admin, prepared
from proxy.backend import Collect, Swallow
from proxy.results import Relay
from proxy.sqltext import first_word
from proxy.stmtcache import LAST_PREPARED, STALE_ERRNOS

DONE, PENDING = "done", "pending"
ER_MALFORMED_PACKET = 1835
KINDS = {"SELECT": "select", "INSERT": "insert", "UPDATE": "update", "DELETE": "delete", "REPLACE": "replace"}
_SINGLE = "single"


class Job:
    """A statement handed from the fast path to the task path, with what was already worked out."""

    __slots__ = ("sql", "binary", "params", "word", "plan", "routing")

    def __init__(self, sql: str, binary: bool, params, word: str, plan=None):
        self.sql = sql
        self.binary = binary
        self.params = params
        self.word = word
        self.plan = plan
        self.routing = None


def malformed(e: ProtocolError) -> err.MySQLError:
    return err.error(err.InterfaceError, ER_MALFORMED_PACKET, f"Malformed communication packet: {e}")


def serve(ex, payload: bytes):
    """Serve one command if it is a single-shard statement on an idle connection.

    Returns DONE (answered already), PENDING (the backend callback finishes
    it and calls ``client.command_done()``), or what the task path runs: a
    ``Job`` or the command payload itself.
    """
    cmd = payload[0] if payload else -1
    s = ex.session
    srv = ex.server
    if cmd == c.COM_STMT_EXECUTE:
        try:
            stmt, params, forward = prepared.bind(ex, payload)
        except err.MySQLError as e:
            ex.error(e)
            return DONE
        except ProtocolError as e:
            ex.error(malformed(e))
            return DONE
        sql = stmt.sql
        word = stmt.kind
        job = Job(sql, True, params, word)
        if word in admin.LOCAL and (word != "SELECT" or (params is None and admin.maybe_local_select(sql))):
            return job
        forward = forward and stmt.forward is not False and srv.pools.settings.statements > 0
    elif cmd == c.COM_QUERY:
        stmt = None
        forward = False
        sql = payload[1:].decode(s.codec, "surrogateescape")
        word = first_word(sql)
        job = Job(sql, False, None, word)
        if word in admin.LOCAL and (word != "SELECT" or admin.maybe_local_select(sql)):
            return job
    else:
        return payload
    loop = ex.loop
    start = loop.time()
    txn = s.txn
    routing = s.txn_routing if txn is not None and s.txn_routing is not None else srv.routing
    forward = forward and txn is None and not routing.phases
    try:
        if stmt is None:
            ex.guard(sql, word)
        elif stmt.guarded is not s.schemas or stmt.guard is not srv.guard:
            ex.guard(sql, word, prepared=True)
            stmt.guarded, stmt.guard = s.schemas, srv.guard  # a prepared statement's text never changes
        if s.warnings_conn is not None or (txn is None and not s.autocommit):
            ex.before_routed(word)
            txn = s.txn
            forward = forward and txn is None
        q = None
        if forward:
            if stmt.routed_by is not routing or stmt.routed_in != s.schema:
                stmt.point = routing.point_route(s, sql, job.params)
                stmt.routed_by, stmt.routed_in = routing, s.schema
            if stmt.point is not None:
                q = stmt.point.route(job.params)
        if q is None:
            plan, route = routing.plan(s, sql, job.params, forward)
            q = plan.single
        if forward and (q is None or (stmt.forward is None and not _keeps_placeholders(stmt, q.sql))):
            forward = False
            plan, route = routing.plan(s, sql, job.params)
            q = plan.single
    except err.MySQLError as e:
        srv.questions += 1
        srv.metrics.statement(KINDS.get(word, "other"), "error", loop.time() - start)
        ex.error(e)
        return DONE
    if not forward:  # a plan with placeholders is of no use to the task path
        job.plan = (plan, route)
        job.routing = routing
    if q is None:
        return job
    conn = s.pinned.get(q.datasource) if s.pinned else None
    if conn is None:
        if txn is not None:
            return job  # the task path pins a connection for the transaction
        pool = srv.pools.get(q.datasource)
        conn = pool.acquire_nowait(s.flavor) if pool is not None else None
        if conn is None:
            return job
        ex.held.append(conn)
    elif conn.closed:
        return job
    if (q.write and (txn is not None or ex.preludes(conn, q))) or (forward and conn.statements.refused):
        ex.release_if_held(conn)
        return job  # a write runs its preludes first (see proxy.executor)
    srv.questions += 1
    ex.inflight = routing
    fin = _Finish(ex, q, conn, KINDS.get(word, "other"), start, job)
    try:
        if forward:
            fin.relay, fin.pre, fin.prepare = _execute_prepared(ex, q, conn, stmt, payload, fin)
        else:
            fin.relay, fin.pre, _ = ex.relay_start(q, conn, job.binary, fin)
    except (err.MySQLError, ProtocolError) as e:
        ex.inflight = None
        ex.client.relaying = None
        ex.release_if_held(conn)
        ex.error(e if isinstance(e, err.MySQLError) else malformed(e))
        return DONE
    return PENDING


def _keeps_placeholders(stmt, physical_sql: str) -> bool:
    """Once per statement: does its physical SQL keep every ``?`` in place (then it can be prepared as is)?"""
    try:
        stmt.forward = prepared.count_params(physical_sql) == stmt.num_params
    except err.MySQLError:
        stmt.forward = False
    return stmt.forward


def _execute_prepared(ex, q, conn, stmt, payload: bytes, fin):
    """Send the client's execute to the backend's copy of the statement, preparing it first if needed."""
    cache = conn.statements
    sid = cache.get(q.sql)
    packet, _ = rebind_stmt_execute(payload, LAST_PREPARED if sid is None else sid, stmt.num_params, stmt.raw_types)
    pre = ex.preludes(conn, q)
    wire = [cache.take_closes()]
    wire += [frame(p, 0) for p in pre]
    handlers = [Swallow(conn.capabilities) for _ in pre]
    prepare = None
    if sid is None:
        prepare = Collect(conn.capabilities, prepare=True)
        handlers.append(prepare)
        wire.append(frame(b"\x16" + q.sql.encode(ex.session.codec, "surrogateescape"), 0))
    wire.append(frame(packet, 0))
    relay = Relay(ex.client, conn.capabilities, ex.client.reply_seq)
    relay.retry_on = STALE_ERRNOS
    if handlers:
        relay.blocked = handlers
    ex.client.relaying = conn
    conn.send(b"".join(wire), handlers + [relay], fin)
    return relay, handlers[:len(pre)], prepare


class _Finish:
    """The backend callback of one fast-path statement."""

    __slots__ = ("ex", "q", "conn", "kind", "start", "job", "relay", "pre", "prepare")

    def __init__(self, ex, q, conn, kind: str, start: float, job: Job):
        self.ex = ex
        self.q = q
        self.conn = conn
        self.kind = kind
        self.start = start
        self.job = job
        self.relay: Relay | None = None
        self.pre: list = []
        self.prepare = None  # the pipelined COM_STMT_PREPARE's handler, if any

    def __call__(self, handler, exc) -> None:
        ex = self.ex
        q = self.q
        conn = self.conn
        relay = self.relay
        metrics = ex.server.metrics
        again = False
        try:
            if exc is not None:
                if not ex.relay_failed(q, conn, relay, exc):
                    ex.error(exc if isinstance(exc, err.MySQLError) else err.error(err.BackendError, err.CR_SERVER_LOST, str(exc)))
                metrics.statement(self.kind, "error", ex.loop.time() - self.start)
                return
            prepare = self.prepare
            if prepare is not None:
                if prepare.error is None:
                    conn.statements.add(q.sql, prepare.result.statement_id)
                else:
                    conn.statements.prepare_failed(prepare.error.errno)
                    again = not any(h.error is not None for h in self.pre)
            if relay.retry:
                conn.statements.forget(q.sql)
                again = True
            try:
                ex.relay_done(q, conn, relay, self.pre)
            except err.MySQLError as e:
                again = False
                ex.error(e)
            if again:  # run it as text on the task path, which counts it
                ex.server.questions -= 1
            else:
                metrics.statement(self.kind, _SINGLE, ex.loop.time() - self.start)
        finally:
            ex.inflight = None
            if ex.held:
                ex.release_held()
            if again:
                self.job.plan = None
                ex.client.run_on_task(self.job)
            elif ex.txn_aborted:
                ex.server.track(_abort_then_done(ex))
            else:
                ex.client.command_done()


async def _abort_then_done(ex) -> None:
    try:
        await ex.abort_transaction()
    finally:
        ex.client.command_done()
