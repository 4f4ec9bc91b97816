"""The DB-API 2.0 connection: a logical session over the shards.

A connection holds no backend connection while it is not in a transaction:
each statement borrows one from the datasource's pool and returns it, so
thousands of application connections share ``max_connections`` per server.
In a transaction it pins one backend connection per datasource (one XA
branch each, see :mod:`mdriver.txn`), until commit or rollback.

When a transaction starts, as in MySQL with ``autocommit=0``, is decided
lazily: at the first write, locking read (``FOR UPDATE``/``LOCK IN SHARE
MODE``) or after :meth:`Connection.begin`. Plain reads before that run
outside the transaction (and may go to a replica), so an idle
``autocommit=False`` connection pins nothing.

With ``autocommit=True`` a single statement that writes to several shards
(a broadcast table, a multi-row INSERT) runs in its own transaction, so it
is atomic like any MySQL statement.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Sequence

from pymysql.charset import MBLENGTH
from pymysql.constants import FIELD_TYPE

from mdriver import err, txn
from mdriver.cursors import Cursor
from mdriver.dispatch import PinnedBatch, PooledBatch, drive
from mdriver.pool import Backend
from mdriver.router import Column, Result, ShardQuery, run_sync
from mdriver.runtime import Runtime, Version
from mdriver import phases as phases_mod
from mdriver import sessionsql, writes

log = logging.getLogger(__name__)

_LOCKING = re.compile(r"\bFOR\s+UPDATE\b|\bLOCK\s+IN\s+SHARE\s+MODE\b|\bFOR\s+SHARE\b", re.IGNORECASE)
_TXN_DOOMING = frozenset((1213,))  # deadlock: the server rolled the branch back


def description_of(columns: Sequence[Column]) -> tuple | None:
    """Router columns -> PEP 249 7-tuples, computed as PyMySQL computes them."""
    if not columns:
        return None
    out = []
    for c in columns:
        length = c.length // MBLENGTH.get(c.charset, 1) if c.type_code == FIELD_TYPE.VAR_STRING else c.length
        out.append((c.name, c.type_code, None, length, length, c.decimals, not c.flags & 1))
    return tuple(out)


class _Autocommit:
    """``conn.autocommit`` reads as a bool and, as in PyMySQL, ``conn.autocommit(True)`` sets it."""

    __slots__ = ("_conn",)

    def __init__(self, conn: "Connection"):
        self._conn = conn

    def __bool__(self) -> bool:
        return self._conn._autocommit

    def __call__(self, value: bool) -> None:
        self._conn._set_autocommit(bool(value))

    def __eq__(self, other: object) -> bool:
        return bool(self) == other

    def __hash__(self) -> int:
        return hash(bool(self))

    def __repr__(self) -> str:
        return repr(bool(self))


class Connection:
    """A PEP 249 connection to one logical schema. Not thread-safe (threadsafety 1)."""

    Warning = err.Warning
    Error = err.Error
    InterfaceError = err.InterfaceError
    DatabaseError = err.DatabaseError
    DataError = err.DataError
    OperationalError = err.OperationalError
    IntegrityError = err.IntegrityError
    InternalError = err.InternalError
    ProgrammingError = err.ProgrammingError
    NotSupportedError = err.NotSupportedError

    charset = "utf8mb4"
    encoding = "utf8"

    def __init__(
        self,
        runtime: Runtime,
        schema: str = "app",
        *,
        autocommit: bool = False,
        cursorclass: type[Cursor] = Cursor,
        read_replicas: bool = True,
    ):
        self._runtime = runtime
        self._closed = False
        version = runtime.version()
        if schema not in version.config.schemas:
            raise _unknown_schema(schema, version)
        self.schema = schema
        self._autocommit = bool(autocommit)
        self.cursorclass = cursorclass
        self._read_replicas = read_replicas and runtime.options.read_replicas
        self._txn: txn.Transaction | None = None
        self._txn_version: Version | None = None
        self._txn_error: err.Error | None = None
        self._pinned: dict[str, Backend] = {}
        self._last_insert_id = 0
        self._last_affected = 0
        runtime.ensure_recovered(schema)

    # -- properties -----------------------------------------------------------------

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    @property
    def txn(self) -> txn.Transaction | None:
        return self._txn

    @property
    def open(self) -> bool:
        return not self._closed

    @property
    def db(self) -> str:
        return self.schema

    @property
    def autocommit(self) -> _Autocommit:
        return _Autocommit(self)

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._set_autocommit(bool(value))

    def get_autocommit(self) -> bool:
        return self._autocommit

    @property
    def in_transaction(self) -> bool:
        return self._txn is not None

    @property
    def config(self):
        return (self._txn_version or self._runtime.version()).config

    def _check(self) -> None:
        if self._closed:
            raise err.error(err.InterfaceError, err.ER_UNKNOWN_ERROR, "connection is closed")

    # -- PEP 249 ------------------------------------------------------------------------

    def cursor(self, cursor: type[Cursor] | None = None) -> Cursor:
        self._check()
        return (cursor or self.cursorclass)(self)

    def commit(self) -> None:
        self._check()
        t = self._txn
        if t is None:
            return
        if self._txn_error is not None:
            failure = self._txn_error
            self._finish(t.rollback())
            raise err.error(
                err.OperationalError, failure.errno,
                f"transaction rolled back: it was aborted earlier ({failure.msg})",
            )
        self._finish(t.commit())

    def rollback(self) -> None:
        self._check()
        t = self._txn
        if t is not None:
            self._finish(t.rollback())

    def begin(self) -> None:
        """Start a transaction now (MySQL's BEGIN: an open one is committed first)."""
        self._check()
        if self._txn is not None:
            self.commit()
        self._start_txn(self._runtime.version())

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._txn is not None:
                self._finish(self._txn.rollback())
        except err.Error as e:
            log.warning("rollback on close failed: %s", e)
        finally:
            self._release_pinned(set(self._pinned))
            self._closed = True

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Commit on success, roll back on an exception, then close."""
        try:
            if not self._closed:
                if exc_type is None:
                    self.commit()
                else:
                    self.rollback()
        finally:
            self.close()

    def __del__(self) -> None:
        # Dropped without close(): closing its pinned connections makes the servers roll back.
        if not getattr(self, "_closed", True) and getattr(self, "_pinned", None):
            self._release_pinned(set(self._pinned))

    # -- PyMySQL conveniences ----------------------------------------------------------------

    def _set_autocommit(self, value: bool) -> None:
        self._check()
        if value and self._txn is not None:
            self.commit()  # as MySQL: SET autocommit=1 commits the open transaction
        self._autocommit = value

    def select_db(self, db: str) -> None:
        self._check()
        version = self._txn_version or self._runtime.version()
        if db not in version.config.schemas:
            raise _unknown_schema(db, version)
        self.schema = db
        self._runtime.ensure_recovered(db)

    def ping(self, reconnect: bool = False) -> None:
        """Check that the schema's home datasource answers (a pooled connection is health-checked)."""
        self._check()
        version = self._runtime.version()
        pool = version.pools[version.config.schemas[self.schema].datasource]
        backend = pool.acquire()
        try:
            backend.query("SELECT 1")
        finally:
            pool.release(backend)

    def home_rows(self, sql: str) -> list:
        """Rows of a read-only statement run unrouted on the schema's home datasource.

        For questions about the server rather than the data (``SELECT VERSION()``,
        ``SELECT @@sql_mode``), as SQLAlchemy asks while it initializes.
        """
        self._check()
        version = self._txn_version or self._runtime.version()
        pool = version.pools[version.config.schemas[self.schema].datasource]
        backend = pool.acquire()
        try:
            return list(backend.query(sql).rows or ())
        finally:
            pool.release(backend)

    def character_set_name(self) -> str:
        return self.charset

    def get_server_info(self) -> str:
        version = self._runtime.version()
        pool = version.pools[version.config.schemas[self.schema].datasource]
        backend = pool.acquire()
        try:
            return backend.raw.get_server_info()
        finally:
            pool.release(backend)

    def escape(self, obj: Any, mapping: Any = None) -> str:
        from mdriver.router.normalize import sql_literal

        return sql_literal(obj)

    def literal(self, obj: Any) -> str:
        return self.escape(obj)

    def escape_string(self, s: str) -> str:
        return self.escape(s)[1:-1]

    def insert_id(self) -> int:
        return self._last_insert_id

    def affected_rows(self) -> int:
        return self._last_affected

    def show_warnings(self) -> tuple:
        return ()

    # -- statements --------------------------------------------------------------------------

    def _execute(self, cur: Cursor, sql: str, args: Any) -> None:
        if self._closed:
            self._check()
        m = sessionsql.SESSION.match(sql)
        if m is not None:
            sessionsql.run(self, cur, m.group(1).lower(), m.group(2), sql, args)
            return
        if self._txn_error is not None:
            raise self._aborted()
        t = self._txn
        if t is not None:
            self._statement(cur, sql, args, self._txn_version, t)
        elif self._runtime.tracks_statements:
            version = self._runtime.hold_current()
            try:
                self._statement(cur, sql, args, version, None)
            finally:
                self._runtime.release(version)
        else:
            self._statement(cur, sql, args, self._runtime.version(), None)

    def _statement(self, cur: Cursor, sql: str, args: Any, version: Version, t: txn.Transaction | None) -> None:
        plan = version.router.plan(sql, schema=self.schema, params=args, paramstyle="pyformat")
        first_id = None
        if version.id_generators and plan.kind == "insert":
            rewritten = writes.with_generated_ids(self._runtime, version, self.schema, plan, sql, args)
            if rewritten is not None:
                sql, args, first_id = rewritten
                plan = version.router.plan(sql, schema=self.schema, params=args, paramstyle="pyformat")
        if version.phases:
            plan, shadow = self._phase(version, plan, sql, args)
            if shadow is not None:
                self._run_shadow(cur, version, plan, shadow, sql)
                return
        kind = plan.kind
        if kind == "other" and plan.is_write:
            kind = "ddl"  # CREATE/DROP of unconfigured tables, GRANT, ...: MySQL commits around them too
        if t is None:
            if kind == "ddl":
                pass
            elif plan.is_write:
                if not self._autocommit:
                    t = self._start_txn(version)
                elif plan.single is None:
                    self._run_statement_txn(cur, version, plan, first_id)
                    return
            elif not self._autocommit and kind == "select" and _is_locking(version, sql):
                t = self._start_txn(version)
        elif kind == "ddl":
            self.commit()  # as MySQL: DDL commits the open transaction first
            t = None
        if t is not None:
            self._run_in_txn(cur, plan, first_id)
            return
        single = plan.single
        if single is not None:
            res = PooledBatch(self._runtime, version, self._read_replicas and not plan.force_primary).run_one(single)
            self._last_affected = res.affected_rows or 0
            if res.insert_id:
                self._last_insert_id = res.insert_id
            rows = res.rows
            cur._set(res.description, rows, res.affected_rows if rows is None else len(rows),
                     first_id if first_id is not None else res.insert_id, res.warning_count, res.columns)
            return
        result = run_sync(plan, PooledBatch(self._runtime, version, self._read_replicas and not plan.force_primary))
        self._set_result(cur, result, first_id)

    def _set_result(self, cur: Cursor, result: Result, first_id: int | None) -> None:
        description = description_of(result.columns)
        rows = tuple(result.rows) if description is not None else None  # PyMySQL gives a tuple of rows
        self._last_affected = result.affected_rows
        if result.insert_id:
            self._last_insert_id = result.insert_id
        cur._set(
            description, rows, len(rows) if rows is not None else result.affected_rows,
            first_id if first_id is not None else result.insert_id, result.warnings, result.columns,
        )

    def _executemany(self, cur: Cursor, sql: str, rows: list) -> None:
        if self._closed:
            self._check()
        if self._txn is None and self._runtime.tracks_statements:
            version = self._runtime.hold_current()
            try:
                self._many(cur, sql, rows, version)
            finally:
                self._runtime.release(version)
        else:
            self._many(cur, sql, rows, self._txn_version or self._runtime.version())

    def _many(self, cur: Cursor, sql: str, rows: list, version: Version) -> None:
        batch = writes.plan_insert_batch(self, version, sql, rows, cur.max_stmt_length)
        if batch is None:  # not a plain INSERT ... VALUES: one statement per row, as PyMySQL
            total = 0
            for args in rows:
                self._execute(cur, sql, args)
                total += max(cur.rowcount, 0)
            cur._set(None, None, total, cur.lastrowid)
            return
        queries, first_id = batch
        if self._txn is None and not self._autocommit:
            self._start_txn(version)
        if self._txn is not None:
            if self._txn_error is not None:
                raise self._aborted()
            results = PinnedBatch(self).run(queries)
        elif len(queries) > 1:
            # Autocommit: the whole batch is one transaction, so it is all or nothing and
            # each server commits (and syncs its log) once instead of once per statement.
            mode = "xa" if version.config.transaction_mode == "xa" else "best_effort"
            t = self._start_txn(version, mode)
            try:
                results = PinnedBatch(self).run(queries)
            except BaseException:
                self._finish(t.rollback())
                raise
            self._finish(t.commit())
        else:
            results = PooledBatch(self._runtime, version, False).run(queries)
        affected = sum(r.affected_rows for r in results)
        self._last_affected = affected
        last_id = next((r.insert_id for r in reversed(results) if r.insert_id), 0)
        if last_id:
            self._last_insert_id = last_id
        cur._set(None, None, affected, first_id if first_id is not None else last_id)

    # -- migration phases ------------------------------------------------------------------

    def _phase(self, version: Version, plan: Any, sql: str, args: Any):
        decision = version.phases.decide(self.schema, plan.tables, plan.is_write)
        if decision == phases_mod.SHARDS:
            return plan, None
        for table in plan.tables:
            problem = version.source_problems.get((self.schema, table))
            if problem is not None:
                raise err.error(err.NotSupportedError, err.ER_NOT_SUPPORTED_YET, problem)
        source_plan = version.source_router.plan(sql, schema=self.schema, params=args, paramstyle="pyformat")
        if decision == phases_mod.SHADOW and self._txn is None and not plan.is_write:
            return source_plan, plan
        return source_plan, None

    def _run_shadow(self, cur: Cursor, version: Version, source_plan: Any, shard_plan: Any, sql: str) -> None:
        """Return the source's rows; compare the shards' rows with them and record differences."""
        replicas = self._read_replicas and not source_plan.force_primary
        result = run_sync(source_plan, PooledBatch(self._runtime, version, replicas))
        stats = self._runtime.shadow
        try:
            shard_result = run_sync(shard_plan, PooledBatch(self._runtime, version, replicas))
        except err.Error as e:
            stats.record_failure(sql, e)
        else:
            stats.record(sql, phases_mod.compare_rows(result.rows, shard_result.rows))
        self._set_result(cur, result, None)

    # -- transactions ------------------------------------------------------------------------

    def _start_txn(self, version: Version, mode: str | None = None) -> txn.Transaction:
        mode = mode or version.config.transaction_mode
        if mode == "xa":
            self._runtime.ensure_recovered(self.schema)  # a no-op after the first time: the log exists
        t = txn.Transaction(mode, version.logs[self.schema])
        self._runtime.hold(version)
        self._txn, self._txn_version, self._txn_error = t, version, None
        return t

    def _aborted(self) -> err.Error:
        e = self._txn_error
        return err.error(
            err.OperationalError, e.errno if e else err.ER_UNKNOWN_ERROR,
            f"the transaction was aborted ({e.msg if e else 'unknown reason'}); call rollback()",
        )

    def branch(self, ds: str) -> Backend:
        """The connection pinned for ``ds`` in this transaction, starting its branch on first use."""
        backend = self._pinned.get(ds)
        if backend is not None:
            return backend
        pool = self._txn_version.pools[ds]
        backend = pool.acquire()
        start = self._txn.start_sql(ds)
        if start is not None:
            try:
                backend.query(start)
            except BaseException:
                pool.release(backend)
                raise
            self._txn.joined(ds)
        self._pinned[ds] = backend
        return backend

    def run_pinned(self, q: ShardQuery):
        backend = self._pinned.get(q.datasource) or self.branch(q.datasource)
        try:
            res = backend.query(q.sql, q.database)
        except err.Error as e:
            if backend.broken or e.errno in _TXN_DOOMING:
                self._txn_error = self._txn_error or e
                if backend.broken:
                    self._txn.discard.add(q.datasource)
            raise
        if q.write:
            self._txn.mark_written(q.datasource)
        return res

    def _run_in_txn(self, cur: Cursor, plan: Any, first_id: int | None) -> None:
        single = plan.single
        if single is not None:
            if single.write:
                self._txn.check_write((single.datasource,))
            res = self.run_pinned(single)
            rows = res.rows
            self._last_affected = res.affected_rows or 0
            if res.insert_id:
                self._last_insert_id = res.insert_id
            cur._set(res.description, rows, res.affected_rows if rows is None else len(rows),
                     first_id if first_id is not None else res.insert_id, res.warning_count, res.columns)
            return
        self._set_result(cur, run_sync(plan, PinnedBatch(self)), first_id)

    def _run_statement_txn(self, cur: Cursor, version: Version, plan: Any, first_id: int | None) -> None:
        """An autocommit write spanning shards: its own transaction, so it is all or nothing."""
        mode = "xa" if version.config.transaction_mode == "xa" else "best_effort"
        t = self._start_txn(version, mode)
        try:
            result = run_sync(plan, PinnedBatch(self))
        except BaseException:
            self._finish(t.rollback())
            raise
        self._finish(t.commit())
        self._set_result(cur, result, first_id)

    def _finish(self, gen) -> None:
        """Drive a commit or rollback of the current transaction, then release its connections."""
        t, version = self._txn, self._txn_version
        hook = self._runtime.txn_hook
        on_step = (lambda step: hook(step.phase, t)) if hook is not None else None
        completed = False
        try:
            drive(self._runtime, version, gen, self._pinned, on_step)
            completed = True
        except err.Error:
            completed = True  # the coordinator finished and reports how
            raise
        finally:
            self._txn = self._txn_version = self._txn_error = None
            # Interrupted half way (KeyboardInterrupt, ...): a pinned connection may hold a
            # prepared branch; closing it detaches the branch so recovery can resolve it.
            self._release_pinned(t.discard if completed else set(self._pinned))
            self._runtime.release(version)

    def _release_pinned(self, discard: set[str]) -> None:
        pinned, self._pinned = self._pinned, {}
        for ds, backend in pinned.items():
            if ds in discard:
                backend.pool.discard(backend)
            else:
                backend.pool.release(backend)

def _is_locking(version: Version, sql: str) -> bool:
    """``FOR UPDATE`` / ``LOCK IN SHARE MODE`` / ``FOR SHARE``, remembered per statement text."""
    cache = version.locking_reads
    found = cache.get(sql)
    if found is None:
        if len(cache) > 4096:
            cache.clear()
        found = cache[sql] = _LOCKING.search(sql) is not None
    return found


def _unknown_schema(schema: str, version: Version) -> err.Error:
    known = ", ".join(sorted(version.config.schemas))
    return err.error(
        err.ProgrammingError, err.ER_BAD_DB_ERROR,
        f"Unknown database '{schema}' (the config {version.config.source or ''} defines: {known})",
    )
