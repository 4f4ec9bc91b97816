"""Migration phases (DESIGN §3): where statements on a table being resharded go.

While the migrator copies a single source table into the shards, the config
says per table where reads and writes go:

* reads ``source`` | ``shadow`` (read both, return the source's rows, count
  and log differences) | ``shards``;
* writes ``source`` | ``fenced`` (refused with a retryable error while the
  cutover catches up) | ``shards``.

This module only decides and compares; the driver plans the statement on the
matching view of the config (:func:`source_view` for ``source``).
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence

from mdriver import err
from mdriver.config.model import Config, Migration, Schema, TableRule, frozen_map

log = logging.getLogger(__name__)

SHARDS = "shards"
SOURCE = "source"
SHADOW = "shadow"


class Phases:
    """The migrating tables of one config version and the phase of each."""

    def __init__(self, config: Config):
        self.migrations: dict[str, dict[str, Migration]] = {}
        for schema in config.schemas.values():
            found = {name: rule.migration for name, rule in schema.tables.items() if rule.migration is not None}
            if found:
                self.migrations[schema.name] = found

    def __bool__(self) -> bool:
        return bool(self.migrations)

    def decide(self, schema: str, tables: Iterable[str], is_write: bool) -> str:
        """``shards``, ``source`` or ``shadow`` for a statement touching ``tables``; raises when fenced."""
        migrations = self.migrations.get(schema)
        if not migrations:
            return SHARDS
        involved = [(t, migrations[t]) for t in tables if t in migrations]
        if not involved:
            return SHARDS
        if is_write:
            fenced = [t for t, m in involved if m.writes == "fenced"]
            if fenced:
                raise err.error(
                    err.FencedWriteError, err.ER_OPTION_PREVENTS_STATEMENT,
                    f"writes to {schema}.{', '.join(fenced)} are fenced while its migration cuts over to the shards; "
                    "retry the statement shortly",
                )
            phases = {m.writes for _, m in involved}
        else:
            phases = {m.reads for _, m in involved}
        if len(phases) > 1:
            detail = ", ".join(f"{t} ({m.writes if is_write else m.reads})" for t, m in involved)
            raise err.error(
                err.NotSupportedError, err.ER_NOT_SUPPORTED_YET,
                f"statement mixes tables in different migration phases: {detail}; run it as separate statements",
            )
        return phases.pop()


def source_view(config: Config) -> tuple[Config, dict[tuple[str, str], str]]:
    """The config as it was before the migration: each migrating table unsharded at its source.

    Returns the derived config and the problems that make the source
    unreachable through it (keyed by (schema, table)): an unsharded table
    lives in the database named like its schema, under its logical name, on
    the schema's home datasource, so a source elsewhere cannot be expressed.
    """
    problems: dict[tuple[str, str], str] = {}
    schemas: dict[str, Schema] = {}
    for schema in config.schemas.values():
        tables: dict[str, TableRule] = dict(schema.tables)
        migrating = {name: rule.migration for name, rule in schema.tables.items() if rule.migration is not None}
        sources = {m.source_datasource for m in migrating.values()}
        home = sources.pop() if len(sources) == 1 else schema.datasource
        changed = bool(migrating)
        for name, m in migrating.items():
            tables[name] = TableRule(name, id_generator=schema.tables[name].id_generator)
            if m.source_database != schema.name or m.source_table != name:
                problems[(schema.name, name)] = (
                    f"migration source {m.source_datasource}.{m.source_database}.{m.source_table} of {schema.name}.{name} "
                    f"is not reachable by the driver: the source must be the table {name} in database {schema.name}"
                )
            elif sources:
                problems[(schema.name, name)] = (
                    f"the migrating tables of schema {schema.name} have their sources on different datasources; "
                    "the driver can route to one source datasource per schema"
                )
        if changed:
            bindings = tuple(g for g in schema.binding if all(tables[t].sharded for t in g))
            schemas[schema.name] = replace(schema, datasource=home, tables=frozen_map(tables), binding=bindings)
        else:
            schemas[schema.name] = schema
    return replace(config, schemas=frozen_map(schemas), revision=f"{config.revision}/source"), problems


@dataclass(frozen=True)
class Difference:
    """Rows the source returned that the shards did not (``missing``) and the reverse (``extra``)."""

    missing: tuple[tuple, ...]
    extra: tuple[tuple, ...]

    def summary(self, limit: int = 3) -> str:
        def show(rows: tuple) -> str:
            head = ", ".join(repr(r) for r in rows[:limit])
            return head + (f", ... ({len(rows)} rows)" if len(rows) > limit else "")

        return f"missing on shards: [{show(self.missing)}]; extra on shards: [{show(self.extra)}]"


def compare_rows(source_rows: Sequence[Sequence], shard_rows: Sequence[Sequence]) -> Difference | None:
    """Compare as multisets: order is not part of a result unless ORDER BY says so, and that is
    checked by the router's merge, not here."""
    a = Counter(tuple(r) for r in source_rows)
    b = Counter(tuple(r) for r in shard_rows)
    if a == b:
        return None
    return Difference(tuple((a - b).elements()), tuple((b - a).elements()))


class ShadowStats:
    """Counters for shadow reads (thread-safe); exported by whoever owns metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.compared = 0
        self.mismatched = 0
        self.failed = 0  # the shard side raised; the source result was still returned
        self.last: str | None = None

    def record(self, sql: str, difference: Difference | None) -> None:
        with self._lock:
            self.compared += 1
            if difference is not None:
                self.mismatched += 1
                self.last = f"{sql[:200]}: {difference.summary()}"
        if difference is not None:
            log.warning("shadow read differs between source and shards: %s: %s", sql[:200], difference.summary())

    def record_failure(self, sql: str, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            self.last = f"{sql[:200]}: shard side failed: {exc}"
        log.warning("shadow read failed on the shards (source result returned): %s: %s", sql[:200], exc)

    def snapshot(self) -> Mapping[str, object]:
        with self._lock:
            return {"compared": self.compared, "mismatched": self.mismatched, "failed": self.failed, "last": self.last}
