"""mdriver: a DB-API 2.0 (PEP 249) driver that routes every statement over MySQL/MariaDB shards.

    import mdriver
    conn = mdriver.connect(config="config/sharding.yaml", schema="app")
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM user_relation WHERE uid = %s", (42,))
        rows = cur.fetchall()
    conn.commit()

It behaves like PyMySQL (``pyformat`` parameters escaped the same way, the
same exception classes and errnos, ``Cursor``/``DictCursor``), while the
shared router picks the physical databases and tables. The heavy parts
(router, pools) load on first use, so ``import mdriver.config`` stays light.
"""
from __future__ import annotations

import os
from typing import Any

from mdriver.err import (
    DatabaseError,
    DataError,
    Error,
    FencedWriteError,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Warning,
)
from mdriver.types import (
    BINARY,
    DATE,
    DATETIME,
    NUMBER,
    ROWID,
    STRING,
    TIME,
    TIMESTAMP,
    Binary,
    Date,
    DateFromTicks,
    Time,
    TimeFromTicks,
    Timestamp,
    TimestampFromTicks,
)

apilevel = "2.0"
threadsafety = 1  # threads may share the module (and its pools), not connections
paramstyle = "pyformat"
VERSION_STRING = "0.1.0"
version_info = (0, 1, 0, "final", 0)
__version__ = VERSION_STRING

DEFAULT_CONFIG_ENV = "MDRIVER_CONFIG"

_LAZY = {
    "Connection": "mdriver.connection",
    "Cursor": "mdriver.cursors",
    "DictCursor": "mdriver.cursors",
    "SSCursor": "mdriver.cursors",
    "SSDictCursor": "mdriver.cursors",
    "Runtime": "mdriver.runtime",
}

# Keyword arguments of connect() that tune the process-wide runtime (pools, recovery, ids).
_RUNTIME_ARGS = (
    "worker_id", "recovery_grace", "recovery_interval", "recover_on_start", "poll_interval", "parallel_datasources",
)
_POOL_ARGS = ("ping_interval", "pool_recycle", "acquire_timeout", "replica_cooldown")
_CONFIG_OVERRIDES = ("transaction_mode", "user", "password", "connect_timeout", "read_timeout", "max_connections")


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mdriver' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def _registry():
    """The process-wide runtime registry (created on first connect)."""
    global _REGISTRY
    try:
        return _REGISTRY
    except NameError:
        from mdriver.runtime import Registry

        _REGISTRY = Registry()
        return _REGISTRY


def connect(
    config: Any = None,
    schema: str | None = None,
    *,
    autocommit: bool = False,
    cursorclass: Any = None,
    read_replicas: bool = True,
    runtime: Any = None,
    database: str | None = None,
    db: str | None = None,
    charset: str | None = None,
    client_flag: int = 0,
    **kwargs: Any,
):
    """Open a logical connection to ``schema`` of the sharded layout described by ``config``.

    ``config``: a YAML path, ``etcd://host:port/prefix``, a Config, or a
    provider with ``.current`` (default: $MDRIVER_CONFIG, else
    config/sharding.yaml). File and etcd configs are watched and applied
    without reconnecting. Further keywords: ``transaction_mode``, ``user``,
    ``password``, ``connect_timeout``, ``read_timeout``, ``max_connections``
    (override the config for this process), and the runtime knobs
    ``worker_id``, ``recovery_grace``, ``recovery_interval``,
    ``recover_on_start``, ``poll_interval``, ``parallel_datasources``,
    ``ping_interval``, ``pool_recycle``, ``acquire_timeout``, ``replica_cooldown``.
    """
    from pymysql.constants import CLIENT

    from mdriver.config.model import Config
    from mdriver.connection import Connection
    from mdriver.cursors import Cursor
    from mdriver.pool import PoolOptions
    from mdriver.runtime import RuntimeOptions, open_runtime

    unknown = sorted(set(kwargs) - set(_RUNTIME_ARGS) - set(_POOL_ARGS) - set(_CONFIG_OVERRIDES))
    if unknown:
        raise TypeError(f"mdriver.connect() got unexpected keyword argument(s): {', '.join(unknown)}")
    if charset is not None and charset.lower() not in ("utf8mb4", "utf8", "utf8mb3"):
        raise NotSupportedError(1235, f"charset {charset!r} is not supported: mdriver talks utf8mb4 to every backend")
    schema = schema or database or db or "app"
    if runtime is None:
        if config is None:
            config = os.environ.get(DEFAULT_CONFIG_ENV) or "config/sharding.yaml"
        pool_kw = {k: kwargs[k] for k in _POOL_ARGS if k in kwargs}
        if "pool_recycle" in pool_kw:
            pool_kw["recycle"] = pool_kw.pop("pool_recycle")
        pool = PoolOptions(found_rows=bool(client_flag & CLIENT.FOUND_ROWS), **pool_kw)
        options = RuntimeOptions(
            pool=pool,
            overrides=tuple(sorted((k, kwargs[k]) for k in _CONFIG_OVERRIDES if k in kwargs)),
            **{k: kwargs[k] for k in _RUNTIME_ARGS if k in kwargs},
        )
        if isinstance(config, str):
            key: tuple = (config if "://" in config else os.path.abspath(config), options)
        else:
            key = ("object", id(config), options)
        if not isinstance(config, (str, Config)) and not hasattr(config, "current"):
            raise InterfaceError(1210, f"config must be a path, an etcd:// URL, a Config or a provider, not {type(config).__name__}")
        runtime = _registry().get(key, lambda: open_runtime(config, options))
    elif kwargs:
        raise TypeError(f"mdriver.connect(runtime=...) takes no runtime options: {', '.join(sorted(kwargs))}")
    return Connection(
        runtime, schema, autocommit=autocommit, cursorclass=cursorclass or Cursor, read_replicas=read_replicas
    )


def close_all() -> None:
    """Close every pool and config watcher that connect() opened in this process."""
    try:
        registry = _REGISTRY
    except NameError:
        return
    registry.close_all()


Connect = connect

__all__ = [
    "BINARY", "DATE", "DATETIME", "NUMBER", "ROWID", "STRING", "TIME", "TIMESTAMP", "Binary", "Connect", "Connection",
    "Cursor", "DataError", "DatabaseError", "Date", "DateFromTicks", "DictCursor", "Error", "FencedWriteError",
    "IntegrityError", "InterfaceError", "InternalError", "NotSupportedError", "OperationalError", "ProgrammingError",
    "SSCursor", "SSDictCursor", "Time", "TimeFromTicks", "Timestamp", "TimestampFromTicks", "Warning", "apilevel",
    "close_all", "connect", "paramstyle", "threadsafety",
]
