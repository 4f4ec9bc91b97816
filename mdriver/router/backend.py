"""A simple synchronous backend: PyMySQL connections per datasource, a thread pool for batches.

A batch runs its statements on up to ``parallel`` connections per datasource
at once (never more than the datasource's ``max_connections``), all
datasources at the same time. Connections are autocommit and kept for reuse.
Transactions, read/write splitting and pinning belong to the driver built
on top of this; tests and benchmarks use this backend directly.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pymysql
from pymysql.constants import FIELD_TYPE

from mdriver import err
from mdriver.config.model import Config
from mdriver.router.types import CHARSET_BINARY, Column, ShardQuery, ShardResult

log = logging.getLogger(__name__)

_NUMERIC = {FIELD_TYPE.DECIMAL, FIELD_TYPE.NEWDECIMAL, FIELD_TYPE.TINY, FIELD_TYPE.SHORT, FIELD_TYPE.LONG,
            FIELD_TYPE.FLOAT, FIELD_TYPE.DOUBLE, FIELD_TYPE.LONGLONG, FIELD_TYPE.INT24, FIELD_TYPE.YEAR}


def columns_of(cursor) -> tuple[Column, ...]:
    """Column definitions of the last result, as complete as PyMySQL knows them."""
    result = getattr(cursor, "_result", None)
    fields = getattr(result, "fields", None) if result is not None else None
    if fields:
        return tuple(
            Column(f.name, f.type_code, f.length, f.scale, f.flags, f.charsetnr, f.table_name, f.org_table, f.org_name, f.db)
            for f in fields
        )
    if not cursor.description:
        return ()
    return tuple(Column(d[0], d[1], d[3] or 0, d[5] or 0, 0, CHARSET_BINARY if d[1] in _NUMERIC else 45)
                 for d in cursor.description)


class SyncBackend:
    def __init__(self, config: Config, parallel: int = 4, connect_kwargs: dict | None = None):
        self.config = config
        self.caps = {name: max(1, min(parallel, ds.max_connections)) for name, ds in config.datasources.items()}
        self.connect_kwargs = connect_kwargs or {}
        self._idle: dict[str, list] = {name: [] for name in config.datasources}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=sum(self.caps.values()), thread_name_prefix="mdriver-backend")
        self._closed = False

    # -- connections --------------------------------------------------------------------
    def _connect(self, name: str):
        ds = self.config.datasources[name]
        try:
            return pymysql.connect(
                host=ds.host, port=ds.port, user=ds.user, password=ds.password, charset="utf8mb4",
                autocommit=True, connect_timeout=ds.connect_timeout, read_timeout=ds.read_timeout,
                **self.connect_kwargs,
            )
        except pymysql.err.MySQLError as e:
            raise err.error(err.BackendError, err.CR_CONNECTION_ERROR, f"cannot connect to datasource {ds.describe()}: {_text(e)}") from None

    def _acquire(self, name: str):
        with self._lock:
            idle = self._idle[name]
            if idle:
                return idle.pop()
        return self._connect(name)

    def _release(self, name: str, conn) -> None:
        if self._closed or not conn.open:
            conn.close()
            return
        with self._lock:
            self._idle[name].append(conn)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            for idle in self._idle.values():
                idle.clear()
        for c in conns:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing a dead connection may fail; nothing to do
                pass
        self._pool.shutdown(wait=True)

    def __enter__(self) -> SyncBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- execution ----------------------------------------------------------------------
    def _execute(self, conn, name: str, q: ShardQuery) -> ShardResult:
        try:
            if conn.db != q.database.encode() and q.database:
                conn.select_db(q.database)
                conn.db = q.database.encode()
            with conn.cursor() as cur:
                affected = cur.execute(q.sql)
                cols = columns_of(cur)
                rows = list(cur.fetchall()) if cols else []
                warnings = getattr(cur._result, "warning_count", 0) if cur._result is not None else 0
                return ShardResult(cols, rows, affected if not cols else 0, cur.lastrowid or 0, warnings)
        except pymysql.err.MySQLError as e:
            code = e.args[0] if e.args and isinstance(e.args[0], int) else err.ER_UNKNOWN_ERROR
            if code >= 2000:
                conn.close()
                ds = self.config.datasources[name]
                raise err.error(err.BackendError, code, f"datasource {ds.describe()}: {_text(e)}") from None
            raise err.from_backend(code, _text(e)) from None

    def _run_chunk(self, name: str, items: list[tuple[int, ShardQuery]], out: list) -> None:
        conn = self._acquire(name)
        try:
            for i, q in items:
                out[i] = self._execute(conn, name, q)
        finally:
            self._release(name, conn)

    def run(self, batch: list[ShardQuery]) -> list[ShardResult]:
        out: list = [None] * len(batch)
        if len(batch) == 1:
            self._run_chunk(batch[0].datasource, [(0, batch[0])], out)
            return out
        per_ds: dict[str, list[tuple[int, ShardQuery]]] = {}
        for i, q in enumerate(batch):
            if q.datasource not in self.caps:
                raise err.error(err.BackendError, err.CR_CONNECTION_ERROR, f"unknown datasource {q.datasource!r}")
            per_ds.setdefault(q.datasource, []).append((i, q))
        futures = []
        for name, items in per_ds.items():
            k = min(self.caps[name], len(items))
            for j in range(k):
                futures.append(self._pool.submit(self._run_chunk, name, items[j::k], out))
        first_error: BaseException | None = None
        for f in futures:
            try:
                f.result()
            except BaseException as e:  # noqa: BLE001 - wait for every chunk, then raise the first error
                first_error = first_error or e
        if first_error is not None:
            raise first_error
        return out


def _text(e: Exception) -> str:
    return str(e.args[1]) if len(e.args) > 1 else str(e)
