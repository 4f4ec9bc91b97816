"""What all driver connections of one process share for one config source.

A :class:`Runtime` owns the config provider (a watcher with hot reload, or a
fixed Config), the backend pools (capped per process, so connections share
them), the thread pool for batches spanning datasources, id generators,
shadow-read counters and XA recovery. Each config version gets a
:class:`Version` (its router, with the plan cache, and its pools); a
connection takes the current one per statement, or keeps the one its
transaction started on.

``mdriver.connect()`` looks runtimes up in a :class:`Registry` by config
source and options, so that every connection of a process to the same config
shares one set of pools: that is what makes ``max_connections`` a per-process
budget. Pass ``runtime=`` to ``connect()`` to manage one explicitly instead.
"""
from __future__ import annotations

import logging
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from mdriver import err, ids, txn
from mdriver.config.model import Config, DataSource
from mdriver.phases import Phases, ShadowStats, source_view
from mdriver.pool import Pool, PoolOptions, Pools, Replicas
from mdriver.router import Router

log = logging.getLogger(__name__)


class ConfigProvider(Protocol):
    """Anything with the current Config: a ConfigWatcher, or :class:`StaticConfig`."""

    @property
    def current(self) -> Config: ...


class StaticConfig:
    """A fixed Config (tests, or an application that builds its own)."""

    def __init__(self, config: Config):
        self.current = config

    def stop(self) -> None:
        pass


@dataclass(frozen=True)
class RuntimeOptions:
    pool: PoolOptions = PoolOptions()
    worker_id: int | None = None  # snowflake worker; None: the table's id_generator.worker_id
    read_replicas: bool = True
    recovery_grace: float = 30.0  # prepared XA branches younger than this are left to their coordinator
    recovery_interval: float = 60.0  # background recovery period; 0 turns it off
    recover_on_start: bool = True
    poll_interval: float = 1.0  # config file polling
    parallel_datasources: int = 8  # worker threads for batches that span datasources
    overrides: tuple[tuple[str, Any], ...] = ()  # applied to every config version (see apply_overrides)


DATASOURCE_OVERRIDES = ("user", "password", "connect_timeout", "read_timeout", "max_connections")


def apply_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
    """``connect(..., transaction_mode=..., read_timeout=...)``: per-process adjustments of a config."""
    if not overrides:
        return config
    from dataclasses import replace

    from mdriver.config.model import frozen_map

    changes: dict[str, Any] = {}
    if "transaction_mode" in overrides:
        mode = overrides["transaction_mode"]
        if mode not in ("xa", "best_effort", "single"):
            raise err.error(err.InterfaceError, err.ER_WRONG_ARGUMENTS, f"transaction_mode must be xa, best_effort or single, not {mode!r}")
        changes["transaction_mode"] = mode
    ds_changes = {k: v for k, v in overrides.items() if k in DATASOURCE_OVERRIDES}
    if ds_changes:
        changes["datasources"] = frozen_map({n: replace(d, **ds_changes) for n, d in config.datasources.items()})
    return replace(config, **changes)


class Version:
    """Everything derived from one config version; immutable after construction."""

    def __init__(self, runtime: "Runtime", config: Config):
        self.config = config
        self.revision = config.revision
        self.router = Router(config)
        entries = runtime.pools.resolve(config.datasources.values())
        self.pools: dict[str, Pool] = {name: entry[0] for name, entry in entries.items()}
        self.replicas: dict[str, Replicas] = {name: entry[1] for name, entry in entries.items() if entry[1] is not None}
        self.logs = {name: txn.DecisionLog(s.datasource, s.name) for name, s in config.schemas.items()}
        self.phases = Phases(config)
        self.source_router: Router | None = None
        self.source_problems: dict[tuple[str, str], str] = {}
        if self.phases:
            source_config, self.source_problems = source_view(config)
            self.source_router = Router(source_config)
            for problem in self.source_problems.values():
                log.error("config revision %s: %s", config.revision, problem)
        self.id_generators = {
            (schema.name, rule.name): rule.id_generator
            for schema in config.schemas.values()
            for rule in schema.tables.values()
            if rule.id_generator is not None
        }
        self.id_rewrites: dict = {}
        self.locking_reads: dict[str, bool] = {}  # statement text -> is a locking read  # (schema, template) -> writes.IdPlan | None
        self.users = 0  # transactions (and tracked statements) running on this version; guarded by the runtime lock

    def datasource(self, name: str) -> DataSource:
        return self.config.datasources[name]


class Runtime:
    """Shared state of all connections to one config source in this process."""

    def __init__(self, provider: ConfigProvider, options: RuntimeOptions = RuntimeOptions(), registration: Any = None):
        self.provider = provider
        self.options = options
        self.pools = Pools(options.pool)
        self.shadow = ShadowStats()
        self._overrides = dict(options.overrides)
        self._lock = threading.Lock()
        self._version: Version | None = None
        self._seen_config: Config | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._snowflakes: dict[int, ids.Snowflake] = {}
        self._segments: dict[tuple[str, str], ids.Segment] = {}
        self._sequence_ready: set[tuple[str, str]] = set()
        self._recovered: set[tuple[str, str]] = set()
        self._closed = False
        self._registration = registration
        self._retired: list[Version] = []
        self._recovery_stop = threading.Event()
        self._recovery_thread: threading.Thread | None = None
        self.last_recovery: dict[str, txn.RecoveryReport] = {}
        self.txn_hook: Callable[[txn.Phase, txn.Transaction], None] | None = None  # observe commit steps (fault tests)
        self.version()

    # -- config versions ------------------------------------------------------------

    def version(self) -> Version:
        """The Version of the current config (built once per revision)."""
        config = self.provider.current
        v = self._version
        if v is not None and self._seen_config is config:
            return v
        with self._lock:
            if self._closed:
                raise err.error(err.InterfaceError, err.ER_UNKNOWN_ERROR, "the driver runtime is closed")
            if self._version is not None and self._seen_config is config:
                return self._version
            effective = apply_overrides(config, self._overrides)
            if self._version is None or self._version.revision != config.revision:
                old = self._version
                self._version = Version(self, effective)
                if old is not None:
                    log.info("driver now routes with config revision %s (was %s)", config.revision, old.revision)
                    if old.users:
                        self._retired.append(old)
            self._seen_config = config
            self._ack_locked()
            return self._version

    def hold_current(self) -> Version:
        """The current version, held: a config switch cannot be acknowledged until it is released."""
        while True:
            v = self.version()
            with self._lock:
                if v is self._version:
                    v.users += 1
                    return v

    def hold(self, version: Version) -> None:
        """A transaction (or, when acks are tracked, a statement) starts running on ``version``."""
        with self._lock:
            version.users += 1

    def release(self, version: Version) -> None:
        with self._lock:
            version.users -= 1
            if version is not self._version and version.users <= 0 and version in self._retired:
                self._retired.remove(version)
                self._ack_locked()

    @property
    def tracks_statements(self) -> bool:
        """With a config center registration, statements count too: an ack must cover in-flight ones."""
        return self._registration is not None

    def _ack_locked(self) -> None:
        """Tell the config center we run nothing older than the current revision, once that is true."""
        if self._registration is not None and not self._retired and self._version is not None:
            self._registration.ack(self._version.revision)

    # -- threads ----------------------------------------------------------------------

    @property
    def executor(self) -> ThreadPoolExecutor:
        ex = self._executor
        if ex is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self.options.parallel_datasources, thread_name_prefix="mdriver-batch")
                ex = self._executor
        return ex

    # -- ids -----------------------------------------------------------------------------

    def take_ids(self, version: Version, schema: str, table: str, n: int) -> list[int]:
        gen = version.id_generators[(schema, table)]
        if gen.kind == "snowflake":
            worker = self.options.worker_id if self.options.worker_id is not None else gen.worker_id
            snow = self._snowflakes.get(worker)
            if snow is None:
                with self._lock:
                    snow = self._snowflakes.setdefault(worker, ids.Snowflake(worker))
            return snow.take(n)
        key = (schema, table)
        seg = self._segments.get(key)
        if seg is None or seg.step != gen.step:
            with self._lock:
                seg = self._segments.get(key)
                if seg is None or seg.step != gen.step:
                    seg = self._segments[key] = ids.Segment(f"{schema}.{table}", gen.step, self._fetch_block)
        return seg.take(n)

    def _fetch_block(self, name: str, step: int) -> int:
        version = self.version()
        schema_name = name.split(".", 1)[0]
        schema = version.config.schemas[schema_name]
        pool = version.pools[schema.datasource]
        backend = pool.acquire()
        try:
            key = (schema.datasource, schema.name)
            if key not in self._sequence_ready:
                backend.query(ids.sequence_ddl(schema.name))
                self._sequence_ready.add(key)
            for _ in range(2):
                result = backend.execute(ids.block_update_sql(schema.name), (step, name))
                if result.affected_rows:
                    return int(result.insert_id)
                backend.execute(ids.block_seed_sql(schema.name), (name,))
            raise err.error(err.InternalError, err.ER_UNKNOWN_ERROR, f"cannot reserve an id block for {name}")
        finally:
            pool.release(backend)

    # -- XA recovery --------------------------------------------------------------------

    def ensure_recovered(self, schema: str) -> None:
        """Once per decision log: create it, and recover in-doubt branches (as a starting pool must)."""
        version = self.version()
        if version.config.transaction_mode != "xa":
            return
        log_ = version.logs[schema]
        key = (log_.datasource, log_.database)
        if key in self._recovered:
            return
        with self._lock:
            if key in self._recovered:
                return
            self._recovered.add(key)
        if not self.options.recover_on_start:
            pool = version.pools[log_.datasource]
            try:
                backend = pool.acquire()
                try:
                    backend.query(log_.ddl())
                finally:
                    pool.release(backend)
            except err.Error as e:
                log.warning("cannot create the XA decision log on %s: %s", log_.datasource, e)
            return
        self.recover(schema)
        if self.options.recovery_interval > 0 and self._recovery_thread is None:
            with self._lock:
                if self._recovery_thread is None:
                    self._recovery_thread = threading.Thread(
                        target=self._recovery_loop, name="mdriver-xa-recovery", daemon=True
                    )
                    self._recovery_thread.start()

    def _recovery_loop(self) -> None:
        while not self._recovery_stop.wait(self.options.recovery_interval):
            for schema in sorted({s for s in self.version().logs if self._has_recovered(s)}):
                try:
                    self.recover(schema)
                except Exception:  # noqa: BLE001 - background work must not die
                    log.exception("periodic XA recovery for schema %s failed", schema)

    def _has_recovered(self, schema: str) -> bool:
        log_ = self.version().logs.get(schema)
        return log_ is not None and (log_.datasource, log_.database) in self._recovered

    def recover(self, schema: str, grace: float | None = None) -> txn.RecoveryReport:
        """Resolve prepared XA branches of ``schema``'s decision log on every datasource now."""
        from mdriver.dispatch import drive_pooled

        version = self.version()
        grace = self.options.recovery_grace if grace is None else grace
        gen = txn.recover(sorted(version.config.datasources), version.logs[schema], grace=grace)
        report = drive_pooled(self, version, gen)
        self.last_recovery[schema] = report
        for problem in report.errors:
            log.warning("XA recovery for schema %s: %s", schema, problem)
        if report.committed or report.rolled_back:
            log.info(
                "XA recovery for schema %s: committed %d and rolled back %d in-doubt branches",
                schema, len(report.committed), len(report.rolled_back),
            )
        return report

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._recovery_stop.set()
        if self._registration is not None:
            try:
                self._registration.stop()
            except Exception:  # noqa: BLE001
                log.exception("cannot unregister from the config center")
        stop = getattr(self.provider, "stop", None)
        if stop is not None:
            stop()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        self.pools.close()


@dataclass
class Registry:
    """Runtimes by (config source, options): one set of pools per process and config."""

    runtimes: dict[tuple, Runtime] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: tuple, factory: Callable[[], Runtime]) -> Runtime:
        with self.lock:
            rt = self.runtimes.get(key)
            if rt is None or rt._closed:
                rt = self.runtimes[key] = factory()
            return rt

    def close_all(self) -> None:
        with self.lock:
            runtimes, self.runtimes = list(self.runtimes.values()), {}
        for rt in runtimes:
            rt.close()


def open_runtime(config: str | Config | ConfigProvider, options: RuntimeOptions) -> Runtime:
    """A new runtime: a watcher (hot reload) for a path or URL, a fixed provider for a Config."""
    registration = None
    if isinstance(config, Config):
        provider: ConfigProvider = StaticConfig(config)
    elif isinstance(config, str):
        from mdriver.config.sources import ConfigSourceError
        from mdriver.config.validate import ConfigError
        from mdriver.config.watch import ConfigWatcher

        try:
            provider = ConfigWatcher(config, poll_interval=options.poll_interval).start()
        except (ConfigSourceError, ConfigError) as e:
            raise err.error(err.InterfaceError, err.ER_UNKNOWN_ERROR, f"cannot load mdriver config: {e}") from None
        if config.startswith("etcd://"):
            registration = _register(config, provider)
    else:
        provider = config
    try:
        runtime = Runtime(provider, options, registration)
    except BaseException:
        stop = getattr(provider, "stop", None)
        if stop is not None:
            stop()
        raise
    if registration is not None and hasattr(provider, "add_listener"):
        ref = weakref.ref(runtime)

        def on_change(new: Config, old: Config) -> None:
            rt = ref()
            if rt is not None and not rt._closed:
                rt.version()  # build the new version now and ack once old transactions are done

        provider.add_listener(on_change)
    return runtime


def _register(url: str, provider: Any) -> Any:
    try:
        from mdriver.config.clients import ClientRegistration

        registration = ClientRegistration.for_source(url, "driver")
        if registration is not None:
            registration.start()
        return registration
    except Exception as e:  # noqa: BLE001 - the driver works without the registry; the fence then waits for the lease
        log.warning("cannot register this driver with the config center at %s: %s", url, e)
        return None

