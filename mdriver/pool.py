"""Backend connection pools: one per datasource (and one per replica), per process.

Why per datasource and not per physical database: a datasource is one
server, and its ``max_connections`` is a budget for this whole process (cloud
MySQL caps connections per server). A connection moves between physical
databases with COM_INIT_DB only when the next statement needs another one.

Every failure to reach a server becomes :class:`mdriver.err.BackendError`
naming the datasource (``DataSource.describe()``: name, host, port; never
credentials) within a bounded time: ``connect_timeout`` bounds connecting
and the handshake, ``read_timeout`` bounds every read, and waiting for a free
connection is bounded by ``acquire_timeout``.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pymysql
from pymysql.constants import CLIENT

from mdriver import err, textproto
from mdriver.config.model import DataSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolOptions:
    """Per-process pool behaviour (the config's ``DataSource`` holds per-server limits)."""

    ping_interval: float = 5.0  # an idle connection older than this is pinged before reuse
    recycle: float = 3600.0  # connections older than this are closed and replaced
    acquire_timeout: float | None = None  # wait for a free connection; None: the datasource's connect_timeout
    replica_cooldown: float = 5.0  # after a replica fails, send its reads to others for this long
    charset: str = "utf8mb4"
    found_rows: bool = False  # CLIENT_FOUND_ROWS: UPDATE reports matched rows (SQLAlchemy relies on it)


# Server errors after which the server closes the connection: it must never go back to the pool.
FATAL_SERVER_ERRORS = frozenset({err.ER_NET_PACKET_TOO_LARGE, 1053, 1927, 4031})  # too large, shutdown, killed, idle


def _is_connection_error(exc: BaseException) -> bool:
    """Client-side errors (CR_* >= 2000, closed socket, timeouts): the server is gone or unreachable."""
    if isinstance(exc, (OSError, pymysql.err.InterfaceError)):
        return True
    if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0] >= 2000 or exc.args[0] == 0
    return False


def translate(exc: BaseException, where: str) -> err.Error:
    """A PyMySQL/socket exception -> our PEP 249 error; connection errors name ``where``."""
    if isinstance(exc, err.Error):
        return exc
    if _is_connection_error(exc):
        if isinstance(exc, OSError):  # an OS errno is not a MySQL one
            errno, detail = err.CR_SERVER_LOST, str(exc)
        else:
            errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) and exc.args[0] else err.CR_SERVER_LOST
            detail = (exc.args[1] if len(exc.args) > 1 else str(exc)) or "the connection is closed"
        return err.error(err.BackendError, errno, f"datasource {where}: {detail}")
    if isinstance(exc, pymysql.err.MySQLError) and len(exc.args) >= 2 and isinstance(exc.args[0], int):
        return err.from_backend(exc.args[0], str(exc.args[1]))
    return err.error(err.InternalError, err.ER_UNKNOWN_ERROR, f"datasource {where}: {type(exc).__name__}: {exc}")


class Backend:
    """One pooled server connection with the bookkeeping the pool and router need."""

    __slots__ = ("raw", "pool", "created", "last_used", "database", "broken", "meta")

    def __init__(self, raw: pymysql.connections.Connection, pool: "Pool"):
        self.raw = raw
        self.pool = pool
        self.created = self.last_used = time.monotonic()
        self.database: str | None = None
        self.broken = False
        self.meta = pool.meta

    def query(self, sql: str, database: str | None = None) -> textproto.Response:
        """Run one statement (buffered); mark the connection broken if the server went away."""
        raw = self.raw
        try:
            if database is not None and database != self.database:
                self.database = None
                textproto.init_db(raw, database)
                self.database = database
            return textproto.query(raw, sql, self.meta)
        except err.Error as e:
            if e.errno in FATAL_SERVER_ERRORS:
                self.broken = True  # the server has closed (or is closing) this connection
            raise
        except textproto.Lost as e:
            self.broken = True
            raw._force_close()
            raise err.error(err.BackendError, err.CR_SERVER_LOST, f"datasource {self.pool.label}: {e}") from None
        except BaseException as e:
            if _is_connection_error(e) or raw._sock is None or isinstance(e, (KeyboardInterrupt, SystemExit)):
                self.broken = True
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            raise translate(e, self.pool.label) from None

    def ping(self) -> None:
        try:
            textproto.ping(self.raw)
        except BaseException:
            self.broken = True
            raise

    def execute(self, sql: str, args: Sequence[Any] = (), database: str | None = None) -> textproto.Response:
        """``query`` with ``%s`` parameters escaped by this connection (internal statements)."""
        if args:
            sql = sql % tuple(self.raw.escape(a) for a in args)
        return self.query(sql, database)

    def close(self) -> None:
        try:
            self.raw.close()
        except Exception:  # noqa: BLE001 - already closed or the socket is dead; nothing to do
            self.raw._force_close()


class Pool:
    """Connections to one server, capped at ``max_connections`` for this process.

    LIFO reuse keeps a few connections warm; a connection idle longer than
    ``ping_interval`` is pinged before it is handed out, one older than
    ``recycle`` is replaced, and one returned ``broken`` is closed.
    """

    def __init__(self, ds: DataSource, options: PoolOptions = PoolOptions(), host: str | None = None, port: int | None = None):
        self.ds = ds
        self.options = options
        self.host = host or ds.host
        self.port = port or ds.port
        self.label = ds.describe() if host is None else f"{ds.name} replica ({self.host}:{self.port})"
        self.max_connections = ds.max_connections
        self.acquire_timeout = options.acquire_timeout if options.acquire_timeout is not None else ds.connect_timeout
        self._idle: list[Backend] = []
        self._open = 0
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._retired = False
        self.down_until = 0.0  # replicas: skip until then after a failure
        self.meta: dict = {}  # column definitions seen on this server -> parsed metadata

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    def _connect(self) -> Backend:
        ds = self.ds
        try:
            # The handshake is read with the socket's read timeout, so connect with
            # connect_timeout as the read timeout and switch afterwards: a frozen
            # server then fails within connect_timeout, not read_timeout.
            raw = pymysql.connect(
                host=self.host, port=self.port, user=ds.user, password=ds.password,
                connect_timeout=ds.connect_timeout, read_timeout=ds.connect_timeout, write_timeout=ds.read_timeout,
                charset=self.options.charset, autocommit=True, program_name="mdriver",
                # MULTI_STATEMENTS: the driver batches INSERTs for one physical database into one
                # round trip; user SQL never reaches a backend with a ';' (the router refuses it).
                client_flag=CLIENT.MULTI_STATEMENTS | (CLIENT.FOUND_ROWS if self.options.found_rows else 0),
            )
        except BaseException as e:
            error = translate(e, self.label)
            if not isinstance(error, err.BackendError):  # e.g. 1045 from the server: say which datasource refused
                error = type(error)(error.errno, f"datasource {self.label}: {error.msg}", sqlstate=error.sqlstate)
            raise error from None
        textproto.set_socket_timeouts(raw, ds.read_timeout, ds.read_timeout)
        return Backend(raw, self)

    def acquire(self) -> Backend:
        """A healthy connection, or BackendError within ``acquire_timeout`` / ``connect_timeout``."""
        backend = None
        with self._cond:
            deadline = None
            while True:
                if self._closed:
                    raise err.error(err.BackendError, err.CR_CONNECTION_ERROR, f"datasource {self.label}: pool is closed")
                if self._idle:
                    backend = self._idle.pop()
                    break
                if self._open < self.max_connections:
                    self._open += 1
                    break
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.acquire_timeout
                elif now >= deadline:
                    raise err.error(
                        err.BackendError, err.ER_CON_COUNT_ERROR,
                        f"datasource {self.label}: all {self.max_connections} connections (max_connections) "
                        f"are in use; waited {self.acquire_timeout:g} s for one",
                    )
                self._cond.wait(deadline - now)
        if backend is not None:
            now = time.monotonic()
            if now - backend.created > self.options.recycle:
                backend.close()
                backend = None
            elif now - backend.last_used > self.options.ping_interval:
                try:
                    backend.ping()
                except Exception:  # noqa: BLE001 - a dead idle connection is simply replaced
                    log.info("datasource %s: idle connection failed its health check; replacing it", self.label)
                    backend.close()
                    backend = None
            if backend is not None:
                return backend
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def release(self, backend: Backend) -> None:
        """Return a connection; broken ones (and all after close()) are closed instead."""
        if backend.broken or self._closed or self._retired:
            backend.close()
            with self._cond:
                self._open -= 1
                self._cond.notify()
            return
        backend.last_used = time.monotonic()
        with self._cond:
            self._idle.append(backend)
            self._cond.notify()

    def discard(self, backend: Backend) -> None:
        backend.broken = True
        self.release(backend)

    def retire(self) -> None:
        """Stop keeping connections: still usable, but every connection is closed when returned."""
        with self._cond:
            self._retired = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        for backend in idle:
            backend.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for backend in idle:
            backend.close()


class Replicas:
    """The replicas of one datasource, chosen by weight, skipping ones that failed recently."""

    def __init__(self, pools: list[Pool], weights: list[int], cooldown: float):
        self.pools = pools
        self.weights = weights
        self.cooldown = cooldown

    def choose(self) -> Pool | None:
        now = time.monotonic()
        live = [(p, w) for p, w in zip(self.pools, self.weights) if p.down_until <= now]
        if not live:
            return None
        if len(live) == 1:
            return live[0][0]
        return random.choices([p for p, _ in live], [w for _, w in live])[0]

    def mark_down(self, pool: Pool) -> None:
        pool.down_until = time.monotonic() + self.cooldown


class Pools:
    """Every pool of one process, keyed by the datasource's full definition.

    A config reload that leaves a datasource unchanged keeps its pool (and its
    warm connections). A changed or removed one is retired: it stays usable by
    transactions still running on the old config, closes its idle
    connections now and the others when they are returned.
    """

    def __init__(self, options: PoolOptions = PoolOptions()):
        self.options = options
        self._pools: dict[DataSource, tuple[Pool, Replicas | None]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def resolve(self, datasources: Iterable[DataSource]) -> dict[str, tuple[Pool, Replicas | None]]:
        """Pools for exactly these datasources (a config version); retires the others."""
        wanted = list(datasources)
        with self._lock:
            if self._closed:
                raise err.error(err.InterfaceError, err.ER_UNKNOWN_ERROR, "the driver runtime is closed")
            out = {}
            for ds in wanted:
                entry = self._pools.get(ds)
                if entry is None:
                    replicas = None
                    if ds.replicas:
                        replicas = Replicas(
                            [Pool(ds, self.options, host=r.host, port=r.port) for r in ds.replicas],
                            [r.weight for r in ds.replicas],
                            self.options.replica_cooldown,
                        )
                    entry = self._pools[ds] = (Pool(ds, self.options), replicas)
                out[ds.name] = entry
            for ds in [d for d in self._pools if d not in set(wanted)]:
                log.info("datasource %s changed or was removed; retiring the pool of its previous definition", ds.name)
                for pool in self._all(self._pools.pop(ds)):
                    pool.retire()
        return out

    @staticmethod
    def _all(entry: tuple[Pool, Replicas | None]) -> list[Pool]:
        return [entry[0]] + (entry[1].pools if entry[1] else [])

    def all_pools(self) -> list[Pool]:
        with self._lock:
            return [p for entry in self._pools.values() for p in self._all(entry)]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pools = [p for entry in self._pools.values() for p in self._all(entry)]
            self._pools.clear()
        for pool in pools:
            pool.close()
