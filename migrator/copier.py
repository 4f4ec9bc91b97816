"""Copy the source table into the shards by primary-key chunks, from a consistent snapshot.

A *copy cycle* opens ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` on the
source and reads ``binlog_snapshot_file``/``binlog_snapshot_position``: the
binlog position that matches the snapshot exactly (MariaDB). Chunks read in
that transaction are the source as of that position. Rows are never decoded:
the server renders each row as the literal ``(v1,v2,...)`` with every text in
its own charset (``_latin1'...'``; see :func:`migrator.sql.copy_query`), read
as raw bytes (``character_set_results = binary``), grouped per
physical table into multi-row upserts, one transaction per server per chunk,
ending with that server's checkpoint (last copied key, snapshot position).
Servers are written by one thread each while the next chunk is read.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Mapping

import pymysql

from migrator import checkpoint as ckpt
from migrator import db, sql
from migrator.applier import write_transaction
from migrator.checkpoint import Checkpoint
from migrator.errors import classify
from migrator.faults import NO_FAULTS, Faults
from migrator.state import Identity, Position
from migrator.table import TableInfo
from mdriver.sharding import location_of_slot, slot_for

log = logging.getLogger(__name__)

MAX_SCRIPT_BYTES = 4 * 1024 * 1024  # one round trip; well under max_allowed_packet
CHUNK_BYTES = 16 * 1024 * 1024  # rows per chunk shrink for wide rows so a chunk stays about this size


class SourceSnapshot:
    """A read-only consistent snapshot of the source and the binlog position it matches."""

    def __init__(self, ident: Identity, info: TableInfo):
        self.ident = ident
        self.info = info
        self.where = ident.source.describe()
        self.conn = db.connect(ident.source, role="source", raw=True, autocommit=True)
        try:
            with self.conn.cursor() as cur:
                cur.execute("SET SESSION character_set_results = binary")
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
                values = {k.decode().lower(): v.decode() for k, v in cur.fetchall()}
        except (pymysql.err.MySQLError, OSError) as e:
            self.close()
            raise classify(e, self.where, "source") from None
        self.position = Position(values["binlog_snapshot_file"], int(values["binlog_snapshot_position"]))
        self.opened = time.monotonic()

    def read(self, after: tuple | None, limit: int) -> list[tuple]:
        """Rows as (shard key, primary key..., row literal): see :func:`migrator.sql.copy_query`."""
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql.copy_query(self.info, self.ident.rule.shard_key or "", after, limit))
                return list(cur.fetchall())
        except (pymysql.err.MySQLError, OSError) as e:
            raise classify(e, self.where, "source") from None

    def close(self) -> None:
        try:
            self.conn.rollback()
            self.conn.close()
        except Exception:  # noqa: BLE001 - a lost connection ends the snapshot anyway
            pass


@dataclass
class ChunkPart:
    """One server's share of a chunk: the scripts to run and the checkpoint that covers them."""

    scripts: list[bytes]
    checkpoint: Checkpoint
    rows: int


class ServerWriter:
    """A thread writing chunk parts to one server, in order, each in one transaction."""

    def __init__(self, ds: str, conn: Any, where: str, faults: Faults):
        self.ds = ds
        self.conn = conn
        self.where = where
        self.faults = faults
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"copy-{ds}", daemon=True)
        self._thread.start()

    def put(self, part: ChunkPart) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(part, timeout=0.2)
                return
            except queue.Full:
                continue

    def drain(self) -> None:
        """Wait until everything queued is committed; re-raise a writer failure."""
        while self.queue.unfinished_tasks and self.error is None:
            time.sleep(0.005)
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            part = self.queue.get()
            try:
                if part is None:
                    return
                if self.error is None:
                    self._write(part)
            except BaseException as e:  # noqa: BLE001 - surfaced to the reading thread
                self.error = e
            finally:
                self.queue.task_done()

    def _write(self, part: ChunkPart) -> None:
        save, args = ckpt.save_sql(part.checkpoint)
        tail = self.conn.cursor().mogrify(save, args).encode("utf-8")
        self.faults.crash_point("copy-chunk")
        if len(part.scripts) <= 1:
            write_transaction(self.conn, [b"START TRANSACTION", *part.scripts, tail], self.where, "shard",
                              f"copy:{self.ds}", self.faults)
        else:
            try:
                db.run_script(self.conn, b"START TRANSACTION")
                for script in part.scripts:
                    db.run_script(self.conn, script)
            except (pymysql.err.MySQLError, OSError) as e:
                try:
                    self.conn.rollback()
                except Exception:  # noqa: BLE001 - the server rolls back a lost session anyway
                    pass
                raise classify(e, self.where, "shard") from None
            write_transaction(self.conn, [tail], self.where, "shard", f"copy:{self.ds}", self.faults)
        self.faults.crash_point("copy-after-commit")


class ChunkRouter:
    """Rows rendered by the server -> per-server upsert scripts."""

    def __init__(self, ident: Identity, info: TableInfo):
        self.ident = ident
        self.info = info
        shard_key = ident.rule.shard_key or ""
        self.sk_parse = sql.raw_parsers([info.column(shard_key)])[0]
        self.pk_parse = sql.raw_parsers([info.column(c) for c in info.primary_key])
        self._names = tuple(c.name for c in info.writable)
        self._tail = sql.upsert_tail(self._names).encode("utf-8")
        self._heads: dict[tuple[str, str], bytes] = {}
        self._slot_locations: dict[int, Any] = {}

    def last_key(self, rows: list[tuple]) -> tuple:
        last = rows[-1]
        return tuple(parse(v) for parse, v in zip(self.pk_parse, last[1:1 + len(self.pk_parse)]))

    def route(self, rows: list[tuple]) -> tuple[dict[str, list[bytes]], dict[str, int]]:
        """(server -> scripts upserting its rows, each under MAX_SCRIPT_BYTES; server -> row count)."""
        groups: dict[Any, list[bytes]] = defaultdict(list)
        schema, rule, sk_parse = self.ident.schema, self.ident.rule, self.sk_parse
        locations = self._slot_locations
        for row in rows:
            slot = slot_for(rule, sk_parse(row[0]))
            loc = locations.get(slot)
            if loc is None:
                loc = locations[slot] = location_of_slot(schema, rule, slot)
            groups[loc].append(row[-1])
        per_ds: dict[str, list[bytes]] = defaultdict(list)
        counts: dict[str, int] = defaultdict(int)
        current: dict[str, list[bytes]] = defaultdict(list)
        sizes: dict[str, int] = defaultdict(int)
        for loc, values in groups.items():
            ds = loc.datasource
            head = self._heads.get((loc.database, loc.table))
            if head is None:
                head = self._heads[(loc.database, loc.table)] = sql.upsert_head(
                    loc.database, loc.table, self._names).encode("utf-8")
            counts[ds] += len(values)
            statement = head + b",".join(values) + self._tail
            if sizes[ds] and sizes[ds] + len(statement) > MAX_SCRIPT_BYTES:
                per_ds[ds].append(b";\n".join(current[ds]))
                current[ds], sizes[ds] = [], 0
            current[ds].append(statement)
            sizes[ds] += len(statement) + 2
        for ds, statements in current.items():
            if statements:
                per_ds[ds].append(b";\n".join(statements))
        return per_ds, counts


class Copier:
    """Copies chunks of one snapshot to every target server (see the module docstring)."""

    def __init__(self, ident: Identity, info: TableInfo, connections: Mapping[str, Any],
                 checkpoints: Mapping[str, Checkpoint], chunk_rows: int, faults: Faults = NO_FAULTS):
        self.ident = ident
        self.info = info
        self.chunk_rows = chunk_rows
        self.limit = min(chunk_rows, 1000)  # the first chunk measures the row size
        self.router = ChunkRouter(ident, info)
        self.checkpoints = dict(checkpoints)
        self.faults = faults
        self.writers = {ds: ServerWriter(ds, conn, ident.datasource(ds).describe(), faults)
                        for ds, conn in connections.items()}

    def close(self) -> None:
        for w in self.writers.values():
            w.stop()

    def copy_chunk(self, snapshot: SourceSnapshot, after: tuple | None) -> tuple[int, tuple | None, bool]:
        """Read and hand off one chunk after ``after``; returns (rows, last key, finished)."""
        limit = self.limit
        rows = snapshot.read(after, limit)
        finished = len(rows) < limit
        if rows:
            width = sum(len(r[-1]) for r in rows) / len(rows)
            self.limit = max(100, min(self.chunk_rows, int(CHUNK_BYTES / max(width, 1.0))))
        if not rows:
            self._hand_off({}, {}, after, snapshot.position, done=True)
            return 0, after, True
        last = self.router.last_key(rows)
        scripts, counts = self.router.route(rows)
        self._hand_off(scripts, counts, last, snapshot.position, done=finished)
        return len(rows), last, finished

    def _hand_off(self, scripts: Mapping[str, list[bytes]], counts: Mapping[str, int], last: tuple | None,
                  position: Position, done: bool) -> None:
        """Every server gets a checkpoint for every chunk, rows or not: its copied range must advance too.

        A server's ``last_pk`` never moves back: after a crash between servers the
        copy restarts from the smallest one, and a server that was ahead keeps
        applying changes to every row it holds (rows re-sent to it are the same).
        A server whose copy is done gets nothing more.
        """
        for ds, writer in self.writers.items():
            cp = self.checkpoints[ds]
            if cp.copy_done:
                continue
            rows = counts.get(ds, 0)
            ahead = cp.last_pk is not None and (last is None or cp.last_pk > last)
            new = replace(cp, position=position, last_pk=cp.last_pk if ahead else last,
                          rows_copied=cp.rows_copied + rows, copy_done=done)
            writer.put(ChunkPart(list(scripts.get(ds, ())), new, rows))
            self.checkpoints[ds] = new

    def drain(self) -> None:
        for w in self.writers.values():
            w.drain()
