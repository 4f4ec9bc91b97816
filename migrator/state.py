"""What a migration is (its source, targets and servers) and its shared state row.

The routing phases live in the config (``migration.reads/writes``) so every
driver and proxy follows them. Everything else the migrator processes share
lives in the database ``_mdriver_migrate`` on the *control* datasource (the
one holding shard database 0): one ``state`` row per migration. Columns are
split by writer, so the running ``start`` process and a DBA's verb never
overwrite each other's fields:

- written by ``start``: phase, active, stats, held_at, error, pid, host, heartbeat
- written by verbs: replication (the direction ``start`` must follow),
  hold_request (verify's pause requests), verify (last result), cutover (notes)
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from mdriver.config.model import Config, DataSource, Migration, Schema, TableRule
from mdriver.sharding import Location, all_locations
from migrator import db
from migrator.errors import RefusedError

CONTROL_DB = "_mdriver_migrate"

# Phases reported by status.
PHASE_NEW = "new"
PHASE_COPYING = "copying"
PHASE_STREAMING = "streaming"
PHASE_REVERSE = "reverse"
PHASE_STOPPED = "stopped"
PHASE_FINISHED = "finished"

# Replication directions.
FORWARD = "forward"  # source binlog -> shards
REVERSE = "reverse"  # shard binlogs -> source
NONE = "none"

_BINLOG_NAME = re.compile(r"^(?P<base>.*?)\.(?P<seq>\d+)$")


@dataclass(frozen=True)
class Position:
    """A point in a server's binlog: ``file:pos``, always at a transaction boundary when stored."""

    file: str
    pos: int
    _key: tuple = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        m = _BINLOG_NAME.match(self.file)
        key = (m.group("base"), int(m.group("seq")), self.pos) if m else (self.file, 0, self.pos)
        object.__setattr__(self, "_key", key)

    def key(self) -> tuple:
        """Sort key: the file's sequence number as an integer (``.999999`` < ``.1000000``)."""
        return self._key

    def __lt__(self, other: "Position") -> bool:
        return self._key < other._key

    def __le__(self, other: "Position") -> bool:
        return self._key <= other._key

    def __gt__(self, other: "Position") -> bool:
        return self._key > other._key

    def __ge__(self, other: "Position") -> bool:
        return self._key >= other._key

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"

    @classmethod
    def parse(cls, text: str) -> "Position":
        file, sep, pos = text.rpartition(":")
        if not sep or not file or not pos.isdigit():
            raise ValueError(f"{text!r} is not a binlog position like mysql-bin.000003:1234")
        return cls(file, int(pos))


@dataclass(frozen=True)
class Identity:
    """One logical table being migrated: where it comes from and where it goes."""

    config: Config
    schema: Schema
    rule: TableRule
    migration: Migration
    source: DataSource
    locations: tuple[Location, ...]
    targets: tuple[str, ...]  # datasource names holding shards, sorted
    control: str  # datasource holding the state row

    @property
    def name(self) -> str:
        return f"{self.schema.name}.{self.rule.name}"

    @property
    def source_table(self) -> str:
        return f"{self.migration.source_database}.{self.migration.source_table}"

    def datasource(self, name: str) -> DataSource:
        return self.config.datasources[name]

    def locations_on(self, ds: str) -> list[Location]:
        return [loc for loc in self.locations if loc.datasource == ds]


def resolve(config: Config, table: str) -> Identity:
    """The migration of ``schema.table`` in ``config``; refuses with the fix when it is not configured."""
    schema_name, sep, table_name = table.partition(".")
    if not sep or not table_name:
        raise RefusedError(f"{table!r} is not SCHEMA.TABLE", "name the logical table, e.g. app.user_relation")
    if schema_name not in config.schemas:
        raise RefusedError(f"schema {schema_name!r} is not in the config {config.source}",
                           f"known schemas: {', '.join(sorted(config.schemas))}")
    schema = config.schemas[schema_name]
    rule = schema.tables.get(table_name)
    if rule is None:
        raise RefusedError(f"table {table!r} is not in the config {config.source}",
                           f"add it under schemas.{schema_name}.tables with its sharding rule")
    if not rule.sharded:
        raise RefusedError(f"table {table} is not sharded in the config", "give it shard_key, algorithm, databases, "
                           "tables_per_database and placement: the migrator moves a table into its shards")
    if rule.migration is None:
        raise RefusedError(
            f"table {table} has no migration block in the config {config.source}",
            f"add `migration: {{source: {{datasource: DS, database: DB, table: T}}}}` under schemas.{schema_name}.tables."
            f"{table_name}, or run `mdriver-migrate plan {table} --source DS.DB.TABLE`",
        )
    m = rule.migration
    locations = tuple(all_locations(schema, rule))
    targets = tuple(sorted({loc.datasource for loc in locations}))
    return Identity(config, schema, rule, m, config.datasources[m.source_datasource], locations, targets,
                    locations[0].datasource)


def control_datasource(config: Config, table: str) -> str | None:
    """Where the state row of ``schema.table`` lives (the server of shard database 0), without needing a migration."""
    schema_name, _, table_name = table.partition(".")
    schema = config.schemas.get(schema_name)
    rule = schema.tables.get(table_name) if schema is not None else None
    if rule is None or not rule.sharded:
        return None
    return all_locations(schema, rule)[0].datasource


def ensure_control_tables(conn: Any) -> None:
    """Create the control database and tables if missing (idempotent)."""
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{CONTROL_DB}` DEFAULT CHARACTER SET utf8mb4")
        cur.execute(
            f"""CREATE TABLE IF NOT EXISTS `{CONTROL_DB}`.`checkpoint` (
  migration VARCHAR(192) NOT NULL COMMENT 'schema.table of the logical table',
  stream VARCHAR(16) NOT NULL COMMENT 'forward (source binlog -> shards) or reverse (shard binlog -> source)',
  applied_to VARCHAR(64) NOT NULL COMMENT 'datasource whose rows this checkpoint covers',
  read_from VARCHAR(64) NOT NULL COMMENT 'datasource whose binlog is read',
  binlog_file VARCHAR(255) NOT NULL,
  binlog_pos BIGINT UNSIGNED NOT NULL,
  copy_last_pk TEXT NULL COMMENT 'JSON primary key of the last copied row; NULL before the first chunk',
  copy_done TINYINT NOT NULL DEFAULT 0,
  rows_copied BIGINT UNSIGNED NOT NULL DEFAULT 0,
  events_applied BIGINT UNSIGNED NOT NULL DEFAULT 0,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (migration, stream, applied_to, read_from)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
        )
        cur.execute(
            f"""CREATE TABLE IF NOT EXISTS `{CONTROL_DB}`.`state` (
  migration VARCHAR(192) NOT NULL PRIMARY KEY,
  phase VARCHAR(32) NOT NULL DEFAULT 'new',
  replication VARCHAR(16) NOT NULL DEFAULT 'forward' COMMENT 'direction start must follow (set by cutover verbs)',
  active VARCHAR(16) NOT NULL DEFAULT 'none' COMMENT 'direction the running start process applies',
  total_rows BIGINT UNSIGNED NULL,
  stats TEXT NULL,
  hold_request TEXT NULL,
  held_at TEXT NULL,
  verify TEXT NULL,
  cutover TEXT NULL,
  error TEXT NULL,
  pid INT NULL,
  host VARCHAR(255) NULL,
  heartbeat DATETIME(6) NULL,
  created_at DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
        )


@dataclass(frozen=True)
class State:
    """The state row as read."""

    migration: str
    phase: str = PHASE_NEW
    replication: str = FORWARD
    active: str = NONE
    total_rows: int | None = None
    stats: dict = field(default_factory=dict)
    hold_request: dict | None = None
    held_at: dict | None = None
    verify: dict | None = None
    cutover: dict | None = None
    error: str | None = None
    pid: int | None = None
    host: str | None = None
    heartbeat_age: float | None = None  # seconds since the running process last wrote

    def running(self, stale_after: float = 10.0) -> bool:
        """Whether a ``start`` process is alive: it wrote recently (it writes every second), and on
        this host its pid still exists (a process killed right after a write looks fresh for a while)."""
        if self.heartbeat_age is None or self.heartbeat_age >= stale_after or self.active == NONE:
            return False
        if self.pid and self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
        return True


_JSON_FIELDS = ("stats", "hold_request", "held_at", "verify", "cutover")
_FIELDS = ("phase", "replication", "active", "total_rows", "stats", "hold_request", "held_at", "verify", "cutover",
           "error", "pid", "host")


def _loads(text: Any) -> Any:
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return json.loads(text)


def read_state(conn: Any, migration: str) -> State | None:
    row = db.query_one(
        conn,
        f"SELECT phase, replication, active, total_rows, stats, hold_request, held_at, verify, cutover, error, pid, host,"
        f" TIMESTAMPDIFF(MICROSECOND, heartbeat, UTC_TIMESTAMP(6)) / 1e6"
        f" FROM `{CONTROL_DB}`.`state` WHERE migration = %s",
        (migration,),
    )
    if row is None:
        return None
    values = dict(zip(_FIELDS, row[:12]))
    for key in _JSON_FIELDS:
        values[key] = _loads(values[key])
    values["stats"] = values["stats"] or {}
    age = row[12]
    return State(migration=migration, heartbeat_age=float(age) if age is not None else None, **values)


def init_state(conn: Any, migration: str) -> None:
    """Create the state row if missing (a fresh migration starts forward)."""
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT IGNORE INTO `{CONTROL_DB}`.`state` (migration, created_at) VALUES (%s, UTC_TIMESTAMP(6))",
            (migration,),
        )


def update_state(conn: Any, migration: str, **fields: Any) -> None:
    """Set some columns (dicts are stored as JSON); ``heartbeat=True`` stamps the current time."""
    sets, args = [], []
    for key, value in fields.items():
        if key == "heartbeat":
            sets.append("heartbeat = UTC_TIMESTAMP(6)")
            continue
        if key not in _FIELDS:
            raise KeyError(key)
        sets.append(f"`{key}` = %s")
        args.append(json.dumps(value, default=str, sort_keys=True) if key in _JSON_FIELDS and value is not None else value)
    if not sets:
        return
    with conn.cursor() as cur:
        cur.execute(f"UPDATE `{CONTROL_DB}`.`state` SET {', '.join(sets)} WHERE migration = %s", (*args, migration))


def claim_fields() -> dict:
    """The identity fields a running ``start`` process writes about itself."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def now() -> float:
    return time.time()
