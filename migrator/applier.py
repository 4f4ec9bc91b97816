"""Apply row changes idempotently, batched per physical table, checkpointed per server.

A batch of source transactions becomes, for each server, the *final* state of
every (physical table, primary key) it touches: the last full row image
(upsert) or absent (delete). With FULL row images the last image alone is the
row, so collapsing a batch this way is exact, and replaying a batch that was
already applied is a no-op. A row whose shard key (or primary key) changes
is a delete at its old place plus an upsert at its new one, possibly on
different servers.

Each server's part is one transaction that ends with that server's
checkpoint row, so the checkpoint never runs ahead of the rows (see
:mod:`migrator.checkpoint`). Servers are written in parallel.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import pymysql

from migrator import checkpoint as ckpt
from migrator import db, sql
from migrator.changes import DELETE, INSERT, RowChange, Transaction
from migrator.checkpoint import Checkpoint
from migrator.errors import classify
from migrator.faults import NO_FAULTS, Faults
from migrator.state import Identity, Position
from mdriver.sharding import Location, ShardKeyError, location_of_slot, slot_for

log = logging.getLogger(__name__)

# A filter says whether a row (by primary key) may be written to a server yet:
# during the copy only rows the copy has already reached.
KeyFilter = Callable[[tuple], bool]


def everything(_pk: tuple) -> bool:
    return True


@dataclass
class TableOps:
    """The final state of each touched row of one physical table."""

    upserts: dict = field(default_factory=dict)  # pk -> (columns, image)
    deletes: dict = field(default_factory=dict)  # pk -> guard values (tuple) or ()

    def upsert(self, pk: tuple, columns: tuple, image: tuple) -> None:
        self.deletes.pop(pk, None)
        self.upserts[pk] = (columns, image)

    def delete(self, pk: tuple, guard: tuple = ()) -> None:
        self.upserts.pop(pk, None)
        self.deletes[pk] = guard

    def __len__(self) -> int:
        return len(self.upserts) + len(self.deletes)


def statements_for(database: str, table: str, pk: Sequence[str], ops: TableOps,
                   guard_columns: Sequence[str] = (), max_rows: int = 1000) -> list[str]:
    """Deletes, then upserts (grouped by column list), in statements of at most ``max_rows`` rows."""
    out = []
    plain = [k for k, g in ops.deletes.items() if not g]
    guarded = [(k, g) for k, g in ops.deletes.items() if g]
    for i in range(0, len(plain), max_rows):
        out.append(sql.delete(database, table, pk, plain[i:i + max_rows]))
    cols = tuple(pk) + tuple(guard_columns)
    for i in range(0, len(guarded), max_rows):
        out.append(sql.delete(database, table, cols, [k + g for k, g in guarded[i:i + max_rows]]))
    by_columns: dict[tuple, list] = defaultdict(list)
    for columns, image in ops.upserts.values():
        by_columns[columns].append(image)
    for columns, images in by_columns.items():
        for i in range(0, len(images), max_rows):
            out.append(sql.upsert(database, table, columns, images[i:i + max_rows]))
    return out


class Router:
    """Where a row image lives in the shards, and its primary key; cached per column list."""

    def __init__(self, ident: Identity, pk: Sequence[str]):
        self.ident = ident
        self.pk = tuple(pk)
        self.shard_key = ident.rule.shard_key or ""
        self._positions: dict[tuple, tuple[tuple[int, ...], int]] = {}
        self._slots: dict[int, Location] = {}

    def _pos(self, columns: tuple) -> tuple[tuple[int, ...], int]:
        p = self._positions.get(columns)
        if p is None:
            index = {c: i for i, c in enumerate(columns)}
            p = (tuple(index[c] for c in self.pk), index[self.shard_key])
            self._positions[columns] = p
        return p

    def key(self, columns: tuple, image: tuple) -> tuple:
        return tuple(image[i] for i in self._pos(columns)[0])

    def shard_value(self, columns: tuple, image: tuple) -> object:
        return image[self._pos(columns)[1]]

    def place(self, columns: tuple, image: tuple) -> tuple[Location, tuple]:
        pk_pos, sk_pos = self._pos(columns)
        try:
            slot = slot_for(self.ident.rule, image[sk_pos])
        except ShardKeyError as e:
            from migrator.errors import MigrationError

            raise MigrationError(f"a row of {self.ident.source_table} cannot be placed: {e}",
                                 "fix the row on the source (the shard key must be a valid key for the algorithm)") from None
        loc = self._slots.get(slot)
        if loc is None:
            loc = self._slots[slot] = location_of_slot(self.ident.schema, self.ident.rule, slot)
        return loc, tuple(image[i] for i in pk_pos)


class ForwardApplier:
    """Source binlog -> shards. One connection per target server, used only by that server's worker."""

    def __init__(self, ident: Identity, pk: Sequence[str], checkpoints: Mapping[str, Checkpoint],
                 connections: Mapping[str, Any], faults: Faults = NO_FAULTS):
        self.ident = ident
        self.faults = faults
        self.router = Router(ident, pk)
        self.pk = tuple(pk)
        self.checkpoints = dict(checkpoints)
        self.connections = dict(connections)
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.connections)), thread_name_prefix="apply")
        self._last_write: dict[str, float] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def plan(self, transactions: Iterable[Transaction], filters: Mapping[str, KeyFilter]) -> tuple[dict, dict, Position | None]:
        """(ops per server per physical table, changes applied per server, end position) for a batch."""
        ops: dict[str, dict[tuple[str, str], TableOps]] = defaultdict(lambda: defaultdict(TableOps))
        applied: dict[str, int] = defaultdict(int)
        end = None
        for txn in transactions:
            end = txn.end
            if not txn.changes:
                continue
            # Servers whose checkpoint is past this transaction already have it (resume after a crash).
            done = {ds for ds, cp in self.checkpoints.items() if txn.end <= cp.position}
            for change in txn.changes:
                self._route(change, ops, applied, filters, done)
        return ops, applied, end

    def _route(self, change: RowChange, ops: dict, applied: dict, filters: Mapping[str, KeyFilter],
               done: set) -> None:
        cols = change.columns
        old = self.router.place(cols, change.before) if change.kind != INSERT else None
        new = self.router.place(cols, change.after) if change.kind != DELETE else None
        if old is not None and (new is None or old != new):
            loc, key = old
            ds = loc.datasource
            if ds not in done and filters.get(ds, everything)(key):
                ops[ds][(loc.database, loc.table)].delete(key)
                applied[ds] += 1
        if new is not None:
            loc, key = new
            ds = loc.datasource
            if ds not in done and filters.get(ds, everything)(key):
                ops[ds][(loc.database, loc.table)].upsert(key, cols, change.after)
                applied[ds] += 1

    def apply(self, transactions: Sequence[Transaction], filters: Mapping[str, KeyFilter] | None = None,
              force_checkpoint: bool = False) -> int:
        """Write a batch to every server that needs it; returns the row changes applied."""
        if not transactions:
            return 0
        ops, applied, end = self.plan(transactions, filters or {})
        assert end is not None
        now = time.monotonic()
        jobs = []
        for ds, cp in self.checkpoints.items():
            if end <= cp.position:
                continue
            if not ops.get(ds) and not force_checkpoint and now - self._last_write.get(ds, 0.0) < 1.0:
                continue  # nothing to write here: advance this checkpoint at most once a second
            jobs.append((ds, cp.advanced(end, applied.get(ds, 0)), ops.get(ds, {})))
        self._write_all(jobs)
        return sum(applied.values())

    def write_checkpoints(self, updates: Mapping[str, Checkpoint]) -> None:
        """Store checkpoints alone (e.g. after catching up with nothing to write)."""
        self._write_all([(ds, cp, {}) for ds, cp in updates.items()])

    def _write_all(self, jobs: list) -> None:
        if not jobs:
            return
        if len(jobs) == 1:
            self._write(*jobs[0])
            return
        futures = [self._pool.submit(self._write, *job) for job in jobs]
        errors = []
        for f in futures:
            try:
                f.result()
            except Exception as e:  # noqa: BLE001 - collected, first one raised after all finished
                errors.append(e)
        if errors:
            raise errors[0]

    def _write(self, ds: str, cp: Checkpoint, table_ops: Mapping[tuple[str, str], TableOps]) -> None:
        statements = ["START TRANSACTION"]
        for (database, table), tops in table_ops.items():
            statements += statements_for(database, table, self.pk, tops)
        save, args = ckpt.save_sql(cp)
        conn = self.connections[ds]
        statements.append(conn.cursor().mogrify(save, args))
        write_transaction(conn, statements, self.ident.datasource(ds).describe(), "shard", f"apply:{ds}", self.faults)
        self.checkpoints[ds] = cp
        self._last_write[ds] = time.monotonic()
        self.faults.crash_point("apply-between-servers")


def write_transaction(conn: Any, statements: Sequence[str | bytes], where: str, role: str, label: str,
                      faults: Faults = NO_FAULTS) -> None:
    """Run ``START TRANSACTION; ...; checkpoint`` in one round trip, then COMMIT; roll back on failure."""
    script = b";\n".join(s if isinstance(s, bytes) else sql.encode_sql(s) for s in statements)
    try:
        db.run_script(conn, script)
        faults.crash_point("apply-before-commit")
        conn.commit()
    except (pymysql.err.MySQLError, OSError) as e:
        try:
            conn.rollback()
        except Exception:  # noqa: BLE001 - the connection may be gone; the server rolls back anyway
            pass
        raise classify(e, where, role) from None
    log.debug("%s committed %d statements", label, len(statements) - 1)


class ReverseApplier:
    """Shard binlogs -> the source table, one checkpoint per shard server, stored on the source."""

    def __init__(self, ident: Identity, pk: Sequence[str], checkpoints: Mapping[str, Checkpoint], connection: Any,
                 faults: Faults = NO_FAULTS):
        self.ident = ident
        self.faults = faults
        self.router = Router(ident, pk)
        self.pk = tuple(pk)
        self.checkpoints = dict(checkpoints)  # read_from datasource -> checkpoint
        self.connection = connection
        self.database = ident.migration.source_database
        self.table = ident.migration.source_table

    def apply(self, read_from: str, transactions: Sequence[Transaction]) -> int:
        if not transactions:
            return 0
        cp = self.checkpoints[read_from]
        ops = TableOps()
        applied = 0
        end = cp.position
        for txn in transactions:
            if txn.end <= cp.position:
                continue
            end = txn.end
            for change in txn.changes:
                cols = change.columns
                if change.kind != INSERT:
                    old_key = self.router.key(cols, change.before)
                    new_key = self.router.key(cols, change.after) if change.kind != DELETE else None
                    if new_key != old_key:
                        # Guard by the shard key: the same key may since have been written on another
                        # shard server, whose stream this one does not order against.
                        ops.delete(old_key, (self.router.shard_value(cols, change.before),))
                        applied += 1
                if change.kind != DELETE:
                    ops.upsert(self.router.key(cols, change.after), cols, change.after)
                    applied += 1
        if end == cp.position:
            return 0
        new_cp = cp.advanced(end, applied)
        statements = ["START TRANSACTION"]
        statements += statements_for(self.database, self.table, self.pk, ops, guard_columns=(self.router.shard_key,))
        save, args = ckpt.save_sql(new_cp)
        statements.append(self.connection.cursor().mogrify(save, args))
        write_transaction(self.connection, statements, self.ident.source.describe(), "source", f"reverse:{read_from}",
                          self.faults)
        self.checkpoints[read_from] = new_cp
        return applied
