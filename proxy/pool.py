"""Backend pools: one per datasource, capped by its ``max_connections``.

Many client sessions share these connections; a session holds one only for
a statement, or longer while it is pinned (transaction, locks, temporary
tables). Waiting for a connection is bounded, and every failure names the
datasource.

Backend hosts must never get the proxy's address blocked (``max_connect_errors``):
the server counts a handshake the client abandons. So a connection attempt
that outlives its caller's timeout is not aborted; it finishes in the
background (bounded by ``abandon_after``) and its connection joins the pool.
While a datasource is down, at most one attempt (a probe) is in flight, and
callers fail fast until it succeeds.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from mdriver import err
from mdriver.config.model import DataSource
from proxy.backend import BackendConnection
from proxy.stmtcache import BackendStatements, StatementBudget

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolSettings:
    backend_timeout: float = 10.0  # a request (or a wait for a free connection) with no progress for this long fails
    recycle: float = 3600.0  # idle connections older than this are replaced
    idle_close: float = 300.0  # idle connections unused for this long are closed, down to min_idle
    min_idle: int = 1
    retry_min: float = 0.2  # backoff between connection probes to a datasource that is down
    retry_max: float = 1.0  # a probe per second per datasource is cheap; recovery should be quick
    abandon_after: float = 120.0  # a background handshake is given up after this long
    statements: int = 1024  # prepared statements kept per backend connection (proxy.stmtcache); 0: run everything as text


class BackendPool:
    """Connections to one datasource."""

    def __init__(self, ds: DataSource, loop: asyncio.AbstractEventLoop, settings: PoolSettings, metrics=None):
        self.ds = ds
        self.loop = loop
        self.settings = settings
        self.metrics = metrics
        self.max_size = ds.max_connections
        self.idle: dict[int, deque[BackendConnection]] = {}
        self.total = 0  # open or opening
        self.in_use = 0
        self.waiters: deque[tuple[int, asyncio.Future]] = deque()
        self.down = False
        self.last_error: str | None = None
        self.retry_at = 0.0
        self.backoff = settings.retry_min
        self.probing = False
        self.connects = 0
        self.connect_failures = 0
        self.closed = False
        self.inflight: set[BackendConnection] = set()  # requests the watchdog sweeps for timeouts
        self.statement_budget = StatementBudget()  # backend prepared statements of all these connections (proxy.stmtcache)

    # -- acquire / release --------------------------------------------------------

    def acquire_nowait(self, flavor: int = 0) -> BackendConnection | None:
        """The hot path: an idle connection, or None."""
        idle = self.idle.get(flavor)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                self.in_use += 1
                conn.checked_out = True
                return conn
        return None

    async def acquire(self, flavor: int = 0) -> BackendConnection:
        conn = self.acquire_nowait(flavor)
        if conn is not None:
            return conn
        if self.closed:
            raise err.error(err.BackendError, err.CR_CONNECTION_ERROR, f"{self.ds.describe()}: the proxy is shutting down")
        start = self.loop.time()
        if self.total >= self.max_size and not self._evict_other_flavor(flavor):
            conn = await self._wait_for_release(flavor)
        else:
            conn = await self._connect(flavor)
        self.in_use += 1
        conn.checked_out = True
        if self.metrics is not None:
            self.metrics.pool_wait_seconds(self.ds.name, self.loop.time() - start)
        return conn

    def release(self, conn: BackendConnection) -> None:
        """Give a connection back; it must be idle (no request in flight)."""
        if not conn.checked_out:
            log.error("%r given back twice; ignoring the second time", conn)  # never let two owners share it
            return
        conn.checked_out = False
        self.in_use -= 1
        conn.resume_reading()
        if conn.closed:
            return
        if conn.busy() or conn.in_transaction:
            conn.close(abort=True)
            return
        now = self.loop.time()
        if now - conn.created > self.settings.recycle or self.closed:
            conn.close()
            return
        self._hand_over(conn)

    def _hand_over(self, conn: BackendConnection) -> None:
        while self.waiters:
            flavor, fut = self.waiters.popleft()
            if fut.done():
                continue
            if flavor != conn.flavor:
                # Another flavor waits: replace this connection with one it can use.
                conn.pool = None
                conn.close()
                conn.statements.release()
                self.total -= 1
                self._open_for_waiter(flavor, fut)
                return
            fut.set_result(conn)
            return
        self.idle.setdefault(conn.flavor, deque()).append(conn)

    def forget(self, conn: BackendConnection) -> None:
        """Called by a connection that closed (or was lost)."""
        self.total -= 1
        conn.statements.release()
        idle = self.idle.get(conn.flavor)
        if idle and conn in idle:
            idle.remove(conn)
        if self.waiters and self.total < self.max_size and not self.closed:
            flavor, fut = self.waiters.popleft()
            if not fut.done():
                self._open_for_waiter(flavor, fut)

    def _evict_other_flavor(self, flavor: int) -> bool:
        for other, idle in self.idle.items():
            if other != flavor and idle:
                idle.popleft().close()
                return True
        return False

    async def _wait_for_release(self, flavor: int) -> BackendConnection:
        fut = self.loop.create_future()
        self.waiters.append((flavor, fut))
        timeout = self.settings.backend_timeout
        timer = self.loop.call_later(timeout, _expire, fut, err.error(
            err.BackendError, err.ER_QUERY_TIMEOUT,
            f"{self.ds.describe()}: all {self.max_size} connections stayed busy for {timeout:g} s (datasources.{self.ds.name}.max_connections)"))
        try:
            return await fut
        finally:
            timer.cancel()
            if fut.cancelled() or (fut.done() and fut.exception() is not None):
                try:
                    self.waiters.remove((flavor, fut))
                except ValueError:
                    pass

    # -- connecting ------------------------------------------------------------------

    def _down_error(self) -> Exception:
        return err.error(err.BackendError, err.CR_CONNECTION_ERROR,
                         f"{self.ds.describe()} is unavailable: {self.last_error}; retrying in the background")

    async def _connect(self, flavor: int) -> BackendConnection:
        if self.down and (self.probing or self.loop.time() < self.retry_at):
            raise self._down_error()
        fut = self.loop.create_future()
        self._open_for_waiter(flavor, fut)
        timer = self.loop.call_later(self.ds.connect_timeout, self._login_timeout, fut)
        try:
            return await fut
        finally:
            timer.cancel()

    def _login_timeout(self, fut: asyncio.Future) -> None:
        """The caller gives up; the attempt goes on in the background as the datasource's only probe."""
        if fut.done():
            return
        why = f"no login within {self.ds.connect_timeout:g} s"
        self._mark_down(why)
        self.probing = True
        fut.set_exception(err.error(err.BackendError, err.CR_CONNECTION_ERROR, f"{self.ds.describe()} did not complete a login within {self.ds.connect_timeout:g} s"))

    def _open_for_waiter(self, flavor: int, fut: asyncio.Future) -> None:
        """Start a connection attempt whose result goes to ``fut``, or to the pool if ``fut`` gave up."""
        self.total += 1
        if self.down:
            self.probing = True
        conn = BackendConnection(self.ds, self.loop, flavor, self.settings.backend_timeout)
        task = self.loop.create_task(self._open(conn))
        task.add_done_callback(lambda t: self._opened(t, conn, fut))

    async def _open(self, conn: BackendConnection) -> BackendConnection:
        # The handshake is bounded only by abandon_after (see the module docstring).
        conn.timeout = self.settings.abandon_after
        try:
            await conn.open()
            budget = self.statement_budget
            if self.settings.statements > 0 and budget.limit is None:
                try:
                    res = await conn.query("SELECT @@max_prepared_stmt_count")
                    budget.limit = StatementBudget.share_of(int(res.rows[0][0]))
                except (err.MySQLError, ValueError, IndexError, TypeError) as e:
                    log.warning("%s: cannot read max_prepared_stmt_count (%s); statements run as text", self.ds.describe(), e)
                    budget.limit = 0
            conn.statements = BackendStatements(self.settings.statements, budget)
        finally:
            conn.timeout = self.settings.backend_timeout
        return conn

    def _opened(self, task: asyncio.Task, conn: BackendConnection, fut: asyncio.Future) -> None:
        self.probing = False
        exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
        if exc is not None:
            self.total -= 1
            self.connect_failures += 1
            self._mark_down(str(exc.args[1] if isinstance(exc, err.MySQLError) and len(exc.args) > 1 else exc))
            if not fut.done():
                fut.set_exception(exc if isinstance(exc, err.MySQLError) else self._down_error())
            # Someone may still be waiting for a release that will not come.
            if self.waiters and not self.down:
                flavor, w = self.waiters.popleft()
                if not w.done():
                    self._open_for_waiter(flavor, w)
            return
        self.connects += 1
        conn.watchdog = self.inflight
        if self.down:
            log.info("%s is reachable again", self.ds.describe())
        self.down = False
        self.backoff = self.settings.retry_min
        self.last_error = None
        conn.pool = self
        if self.closed:
            conn.close()
            return
        if not fut.done():
            fut.set_result(conn)
        else:
            self._hand_over(conn)

    def _mark_down(self, why: str) -> None:
        if not self.down:
            log.warning("%s is down: %s", self.ds.describe(), why)
        self.down = True
        self.last_error = why
        self.retry_at = self.loop.time() + self.backoff
        self.backoff = min(self.backoff * 2, self.settings.retry_max)

    # -- housekeeping ------------------------------------------------------------------

    def sweep(self) -> None:
        """Fail requests with no progress for backend_timeout (see BackendConnection.send)."""
        now = self.loop.time()
        for conn in [c for c in self.inflight if c.overdue(now)]:
            conn._check_timeout()

    def prune(self) -> None:
        """Close connections idle too long or too old (called periodically)."""
        now = self.loop.time()
        for idle in self.idle.values():
            keep = deque()
            while idle:
                conn = idle.popleft()
                too_old = now - conn.created > self.settings.recycle
                too_idle = now - conn.last_used > self.settings.idle_close and len(keep) >= self.settings.min_idle
                if too_old or too_idle:
                    conn.close()
                else:
                    keep.append(conn)
            idle.extend(keep)

    def idle_count(self) -> int:
        return sum(len(d) for d in self.idle.values())

    def close(self) -> None:
        self.closed = True
        for idle in self.idle.values():
            while idle:
                idle.pop().close()
        while self.waiters:
            _, fut = self.waiters.popleft()
            _expire(fut, err.error(err.BackendError, err.CR_CONNECTION_ERROR, f"{self.ds.describe()}: the proxy is shutting down"))

    def status(self) -> dict:
        return {
            "datasource": self.ds.describe(),
            "max": self.max_size,
            "open": self.total,
            "in_use": self.in_use,
            "idle": self.idle_count(),
            "waiting": sum(1 for _, f in self.waiters if not f.done()),
            "state": "down" if self.down else "up",
            "last_error": self.last_error or "",
        }


def give_back(conn: BackendConnection, close: bool = False) -> None:
    """Return a connection a session held to its pool (closing it first if asked).

    Every acquired connection goes back exactly once, closed or not, so the
    pool's in-use count stays right.
    """
    if close:
        conn.close(abort=True)
    if conn.pool is not None:
        conn.pool.release(conn)
    else:
        conn.close()


def _expire(fut: asyncio.Future, e: Exception) -> None:
    if not fut.done():
        fut.set_exception(e)


class Pools:
    """The pools of one process, by datasource name."""

    def __init__(self, datasources, loop: asyncio.AbstractEventLoop, settings: PoolSettings, metrics=None):
        self.settings = settings
        self.pools = {name: BackendPool(ds, loop, settings, metrics) for name, ds in datasources.items()}

    def __getitem__(self, name: str) -> BackendPool:
        return self.pools[name]

    def get(self, name: str) -> BackendPool | None:
        return self.pools.get(name)

    def update(self, datasources, loop) -> None:
        """New config: keep pools whose datasource is unchanged, replace the others."""
        for name, ds in datasources.items():
            pool = self.pools.get(name)
            if pool is None or pool.ds != ds:
                if pool is not None:
                    pool.close()
                self.pools[name] = BackendPool(ds, loop, self.settings, pool.metrics if pool else None)
        for name in list(self.pools):
            if name not in datasources:
                self.pools.pop(name).close()

    def prune(self) -> None:
        for pool in self.pools.values():
            pool.prune()

    def sweep(self) -> None:
        for pool in self.pools.values():
            pool.sweep()

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
