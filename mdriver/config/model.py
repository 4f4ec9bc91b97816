"""Frozen config objects: the routing contract every component reads.

Instances are built only by :mod:`mdriver.config.validate`, which guarantees
the invariants documented here, so consumers never re-check them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

READ_PHASES = ("source", "shadow", "shards")
WRITE_PHASES = ("source", "fenced", "shards")
ALGORITHMS = ("mod", "hash", "range", "custom")
TRANSACTION_MODES = ("xa", "best_effort", "single")


def frozen_map(d: Mapping | None = None) -> Mapping:
    """A read-only view, so a shared Config cannot be mutated by accident."""
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class Replica:
    host: str
    port: int
    weight: int = 1


@dataclass(frozen=True)
class DataSource:
    """One physical MySQL/MariaDB server."""

    name: str
    host: str
    port: int
    user: str
    password: str = field(default="", repr=False)
    max_connections: int = 64
    replicas: tuple[Replica, ...] = ()
    connect_timeout: float = 5.0
    read_timeout: float = 30.0

    def describe(self) -> str:
        """Where it is, without credentials (safe for logs and errors)."""
        return f"{self.name} ({self.host}:{self.port})"


@dataclass(frozen=True)
class Migration:
    """A move of a single source table into the sharded layout (DESIGN §3)."""

    source_datasource: str
    source_database: str
    source_table: str
    reads: str = "source"
    writes: str = "source"


@dataclass(frozen=True)
class IdGenerator:
    column: str
    kind: str  # snowflake | segment
    worker_id: int = 0
    step: int = 1000


@dataclass(frozen=True)
class Placement:
    """Physical database indexes ``first..last`` (inclusive) live on ``datasource``."""

    datasource: str
    first: int
    last: int


@dataclass(frozen=True)
class TableRule:
    """How one logical table maps to physical tables.

    Exactly one of these holds: ``sharded`` (shard_key and algorithm set),
    ``broadcast``, or neither (an unsharded table in the schema's home).
    """

    name: str
    shard_key: str | None = None
    algorithm: str | None = None
    databases: int = 1
    tables_per_database: int = 1
    placement: tuple[Placement, ...] = ()
    broadcast: bool = False
    boundaries: tuple[int, ...] = ()  # range: slot = number of boundaries <= key
    function: str | None = None  # custom: "package.module:function"
    shard_fn: Callable[[object, int], int] | None = field(default=None, compare=False, repr=False)
    migration: Migration | None = None
    id_generator: IdGenerator | None = None

    @property
    def sharded(self) -> bool:
        return self.shard_key is not None

    @property
    def slots(self) -> int:
        return self.databases * self.tables_per_database


@dataclass(frozen=True)
class Schema:
    """A logical database as applications see it."""

    name: str
    datasource: str  # home of unsharded tables: physical database ``name`` there
    tables: Mapping[str, TableRule] = field(default_factory=frozen_map)
    binding: tuple[frozenset[str], ...] = ()

    def binding_group(self, table: str) -> frozenset[str]:
        for group in self.binding:
            if table in group:
                return group
        return frozenset((table,))


@dataclass(frozen=True)
class RouterOptions:
    allow_scatter_dml: bool = False
    max_offset: int = 100_000  # LIMIT offset+count above this is refused on scatter
    scatter_enumerate_limit: int = 64  # ranges spanning fewer slots are enumerated
    plan_cache_size: int = 4096


@dataclass(frozen=True)
class ProxyUser:
    name: str
    password: str = field(default="", repr=False)
    schemas: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProxyOptions:
    listen_host: str = "127.0.0.1"
    listen_port: int = 3307
    users: Mapping[str, ProxyUser] = field(default_factory=frozen_map)
    metrics_host: str | None = None
    metrics_port: int | None = None
    max_client_connections: int = 4096
    idle_timeout: float = 28800.0
    max_allowed_packet: int = 64 * 1024 * 1024
    backend_timeout: float = 10.0
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_required: bool = False


@dataclass(frozen=True)
class Config:
    """The whole validated config. ``revision`` identifies this version."""

    version: int
    datasources: Mapping[str, DataSource]
    schemas: Mapping[str, Schema]
    router: RouterOptions = RouterOptions()
    proxy: ProxyOptions = ProxyOptions()
    transaction_mode: str = "xa"
    revision: str = ""  # content hash for files, mod revision for etcd
    source: str = ""  # where it was loaded from (path or URL), for messages

    def schema(self, name: str) -> Schema:
        return self.schemas[name]
