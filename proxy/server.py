"""The proxy server: listener, shared services, housekeeping, reload and graceful shutdown.

One ``ProxyServer`` per process and event loop. Everything a client
connection needs (config, routers, pools, limits, metrics, auth caches) is
reached through it; nothing lives in module globals.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass

from mdriver.config.model import Config
from mdriver.wire import auth
from proxy.frontend import ClientConnection
from proxy.guard import StatementGuard
from proxy.handoff import Inbox
from proxy.limits import ClientLimits, LimitSettings
from proxy.metrics import ProxyMetrics, serve_metrics
from proxy.pool import Pools, PoolSettings
from proxy.routing import Routing
from proxy.transactions import Transactions

log = logging.getLogger(__name__)

SERVER_VERSION = "5.5.5-10.11.19-MariaDB-mdriver"


@dataclass(frozen=True)
class ServerOptions:
    """Process-level choices that are not part of the routing config."""

    listen_host: str | None = None  # overrides config.proxy.listen
    listen_port: int | None = None
    auth_plugin: str = auth.NATIVE_PASSWORD  # advertised in the handshake
    server_version: str = SERVER_VERSION
    metrics: bool = True
    housekeeping_interval: float = 1.0
    recovery_interval: float = 60.0  # XA recovery period; 0 turns it off
    recovery_grace: float = 30.0
    pool: PoolSettings | None = None
    worker: int = 0  # index of this process among --workers (the top byte of its connection ids)
    handoff_fd: int | None = None  # with --workers: the channel on which the parent passes accepted sockets (proxy.handoff)
    backend_statements: int = 1024  # prepared statements kept per backend connection (proxy.stmtcache); 0: text only


def build_ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


class ProxyServer:
    def __init__(self, config: Config, options: ServerOptions = ServerOptions(), loop: asyncio.AbstractEventLoop | None = None):
        self.loop = loop or asyncio.get_event_loop()
        self.options = options
        self.config = config
        p = config.proxy
        self.listen_host = options.listen_host or p.listen_host
        self.listen_port = options.listen_port if options.listen_port is not None else p.listen_port
        self.auth_plugin = options.auth_plugin
        self.server_version = options.server_version
        self.limits = ClientLimits(LimitSettings(
            max_connections=p.max_client_connections, idle_timeout=p.idle_timeout, max_allowed_packet=p.max_allowed_packet))
        self.metrics = ProxyMetrics()
        self.metrics.set_config(config)
        settings = options.pool or PoolSettings(backend_timeout=p.backend_timeout, statements=options.backend_statements)
        self.pools = Pools(config.datasources, self.loop, settings, self.metrics)
        self.metrics.pools = self.pools
        self.routing = Routing(config)
        self.guard = StatementGuard(config)
        self.metrics.shadow = lambda: self.routing.shadow.snapshot()
        self.transactions = Transactions(self)
        self.ssl_context = build_ssl_context(p.tls_cert, p.tls_key)
        self.tls_required = p.tls_required
        self.sha2_cache: set = set()
        self.converters: dict = {}  # column definition bytes -> text-to-binary converter (results.Relay)
        self._rsa = None
        self.clients: set[ClientConnection] = set()
        self.accepting = False
        self.questions = 0
        self.started = self.loop.time()
        self._next_id = 0
        self._server: asyncio.AbstractServer | None = None
        self._inbox: Inbox | None = None
        self.parent_gone = lambda: None  # with --workers: what to do when the parent process has died (set before start)
        self._metrics_server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self.reload_errors = 0
        self.acknowledge = None  # callable(revision): the etcd client registration's ack (fence contract)
        self.acknowledged = config.revision
        self.ack_pending = False

    # -- services used by connections -----------------------------------------------------

    def next_connection_id(self) -> int:
        """Unique across workers: the worker index is in the top byte."""
        self._next_id = (self._next_id + 1) & 0xFFFFFF or 1
        return self.options.worker << 24 | self._next_id

    def rsa_keys(self) -> auth.RsaKeyPair:
        if self._rsa is None:
            self._rsa = auth.RsaKeyPair()
        return self._rsa

    def track(self, coro) -> None:
        """Run a background job (e.g. a rollback after a disconnect) that shutdown must wait for."""
        task = self.loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def new_transaction(self, session):
        session.txn_routing = self.routing
        return self.transactions.new(session)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.options.handoff_fd is None:
            self._server = await self.loop.create_server(lambda: ClientConnection(self), self.listen_host, self.listen_port,
                                                         reuse_address=True, backlog=1024)
            self.listen_port = self._server.sockets[0].getsockname()[1]
        p = self.config.proxy
        if self.options.metrics and p.metrics_port is not None:
            # with several workers, worker i serves its own metrics on metrics_port + i
            host, port = p.metrics_host or "127.0.0.1", p.metrics_port + self.options.worker
            try:
                self._metrics_server = await serve_metrics(self.metrics, host, port)
            except OSError as e:
                if self._server is not None:
                    self._server.close()
                raise OSError(e.errno, f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from None
        self.accepting = True
        if self.options.handoff_fd is not None:  # only now: a socket handed over earlier would be refused
            self._inbox = Inbox(self.options.handoff_fd, self.loop, lambda: ClientConnection(self), self.parent_gone)
        self._tasks.append(self.loop.create_task(self._housekeeping()))
        if self.options.recovery_interval > 0 and self.options.worker == 0:
            self._tasks.append(self.loop.create_task(self._recovery_loop()))
        log.info("mdriver proxy listening on %s:%d (config %s, revision %s)", self.listen_host, self.listen_port,
                 self.config.source or "?", self.config.revision or "?")

    async def _housekeeping(self) -> None:
        ticks = 0
        step = min(0.1, self.options.housekeeping_interval)
        every = max(1, round(self.options.housekeeping_interval / step))
        while True:
            await asyncio.sleep(step)
            self.pools.sweep()  # backend timeouts, within a tenth of a second
            ticks += 1
            if ticks % every:
                continue
            now = self.loop.time()
            for client in list(self.clients):
                if not client.busy and self.limits.idle_expired(client.last_activity, now) and client.session is not None:
                    log.info("closing client %s (id %d): idle for more than %g s", client.host, client.id, self.limits.settings.idle_timeout)
                    client.close()
            self.pools.prune()
            self.metrics.clients = len(self.clients)
            self.maybe_acknowledge()

    async def _recovery_loop(self) -> None:
        await asyncio.sleep(0)
        while True:
            try:
                await self.transactions.recover(self.options.recovery_grace)
            except Exception as e:  # noqa: BLE001 - recovery must keep running
                log.warning("XA recovery failed: %s", e)
            await asyncio.sleep(self.options.recovery_interval)

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting; let statements in flight finish (up to ``timeout``); close everything."""
        self.accepting = False
        if self._server is not None:
            self._server.close()
        if self._inbox is not None:
            self._inbox.close()
        for client in list(self.clients):
            if client.busy:
                client.closing = True
            else:
                client.close()
        deadline = self.loop.time() + timeout
        while any(c.busy for c in self.clients) and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for client in list(self.clients):
            if client.busy:
                log.warning("closing client %s with a statement still running after %g s", client.host, timeout)
            client.close()
        await asyncio.sleep(0.05)  # connection_lost callbacks start their rollbacks
        if self._background:
            await asyncio.wait(list(self._background), timeout=max(1.0, deadline - self.loop.time()))
        for t in self._tasks:
            t.cancel()
        if self._metrics_server is not None:
            self._metrics_server.close()
        await asyncio.sleep(0)
        self.pools.close()
        if self._server is not None:
            await self._server.wait_closed()
        log.info("mdriver proxy stopped")

    def client_closed(self) -> None:
        """Every client connection ends here once; the parent of --workers counts them to balance new ones."""
        if self._inbox is not None:
            self._inbox.report_closed()

    def reload(self, config: Config) -> None:
        """Switch to a new validated config: new routers, pools kept where datasources are unchanged.

        Open transactions finish on the routing they started with (see Session.txn_routing).
        """
        if config.revision and config.revision == self.config.revision:
            return
        self.config = config
        self.routing = Routing(config)
        self.guard = StatementGuard(config)
        self.pools.update(config.datasources, self.loop)
        self.metrics.set_config(config)
        log.info("config revision %s in use", config.revision or "?")
        self.ack_pending = True
        self.maybe_acknowledge()

    def maybe_acknowledge(self) -> None:
        """Acknowledge the current revision once nothing runs on an older one.

        Open transactions finish on the routing they began with, and a statement
        in flight may have been planned on the old one: only when none of those
        remain is the promise "no statement on an older config from now on" true.
        """
        if not self.ack_pending:
            return
        current = self.routing
        for client in self.clients:
            ex = client.executor
            if ex is None:
                continue
            s = ex.session
            if (s.txn is not None and s.txn_routing is not current) or (ex.inflight is not None and ex.inflight is not current):
                return
        self.ack_pending = False
        self.acknowledged = self.config.revision
        if self.acknowledge is not None:
            self.acknowledge(self.config.revision)
            log.info("acknowledged config revision %s", self.config.revision)

    # -- SHOW MDRIVER STATUS --------------------------------------------------------------------

    def status_rows(self) -> list[tuple[str, str]]:
        cfg = self.config
        rows = [
            ("config_source", cfg.source or ""),
            ("config_revision", cfg.revision or ""),
            ("config_version", str(cfg.version)),
            ("config_acknowledged", self.acknowledged or ""),
            ("transaction_mode", cfg.transaction_mode),
            ("client_connections", str(len(self.clients))),
            ("questions", str(self.questions)),
            ("uptime_seconds", str(int(self.loop.time() - self.started))),
            ("xa_recovered_branches", str(self.transactions.recovered)),
        ]
        for name, pool in sorted(self.pools.pools.items()):
            st = pool.status()
            rows.append((f"pool.{name}", f"{st['state']} open={st['open']}/{st['max']} in_use={st['in_use']} idle={st['idle']} "
                                         f"waiting={st['waiting']} {st['datasource']}" + (f" last_error={st['last_error']}" if st['last_error'] else "")))
        for schema in cfg.schemas.values():
            for table, rule in sorted(schema.tables.items()):
                if rule.migration is not None:
                    m = rule.migration
                    rows.append((f"migration.{schema.name}.{table}", f"reads={m.reads} writes={m.writes} "
                                 f"source={m.source_datasource}.{m.source_database}.{m.source_table}"))
        shadow = self.routing.shadow.snapshot()
        if shadow["compared"] or shadow["failed"]:
            rows.append(("shadow_reads", f"compared={shadow['compared']} mismatched={shadow['mismatched']} failed={shadow['failed']}"))
        return rows
