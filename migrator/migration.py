"""The migration, top to bottom: copy and stream, then follow the cutover's direction.

Why the copy and the binlog converge (the data-loss argument)
-------------------------------------------------------------
Copying and streaming run in alternating *cycles*, as Vitess does:

1. Open a consistent snapshot of the source at binlog position S
   (``START TRANSACTION WITH CONSISTENT SNAPSHOT`` + ``binlog_snapshot_*``).
2. Catch each target server up from its checkpoint to S, applying a change
   only to rows the copy has already reached on that server (primary key
   ``<= last_pk``). Changes to rows not yet copied are skipped: the snapshot
   at S already contains them.
3. Copy chunks after ``last_pk`` from the snapshot; each chunk commits on
   each server together with the checkpoint (S, new ``last_pk``).
4. End the cycle after a lag budget; repeat. When the snapshot has no more
   rows, the copy is done and every change is applied from then on.

Invariant, per target server: rows with key ``<= last_pk`` equal the source
at the checkpoint position, and no other row exists. Step 2 keeps it while
moving the position to S (it applies every change in between to exactly the
rows it covers); step 3 keeps it while raising ``last_pk`` (the new rows are
the source at S). Because a chunk is written only after the catch-up to its
own snapshot position, a change never lands before the copy of its row and is
never lost after it: there is no "copy overwrote a newer row" and no
"delete came before the copy re-inserted the row". Deletes and updates that
move a row between shards (a changed shard key) are a delete at the old
place and an upsert at the new one, each filtered by its own server's
``last_pk``, so a server that is ahead after a crash still converges.

Checkpoints are written in the same transaction as the rows they cover, one
per server; after ``kill -9`` the binlog is re-read from the minimum position
and each server skips what its own checkpoint says it has. Applying is
idempotent (upsert and delete by primary key with full row images), so a
replay converges to the same rows.

After the copy, changes stream continuously. ``cutover-writes`` later asks
(through the state row) for the reverse direction: shard binlogs back to the
source, so that ``rollback-writes`` loses nothing; see :mod:`migrator.cutover`.
"""
from __future__ import annotations

import logging
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from migrator import checkpoint as ckpt
from migrator import db, inspector
from migrator import state as st
from migrator.applier import ForwardApplier, ReverseApplier
from migrator.checkpoint import Checkpoint
from migrator.copier import Copier, SourceSnapshot
from migrator.errors import BinlogPurgedError, MigrationError, RefusedError, SourceDDLError, UnreachableError
from migrator.faults import NO_FAULTS, Faults
from migrator.state import FORWARD, NONE, REVERSE, Identity, Position
from migrator.streamer import BinlogStreamer, Prefetcher, server_id_for
from migrator.table import TableInfo
from migrator.throttler import Limits, Throttler

log = logging.getLogger(__name__)

ON_DDL = ("stop", "ignore")


@dataclass(frozen=True)
class Options:
    chunk_rows: int = 50000  # at most; fewer for wide rows (see copier.CHUNK_BYTES)
    limits: Limits = Limits()
    on_ddl: str = "stop"
    batch_changes: int = 20000  # row changes per applied batch at most (bigger batches: more rows per statement)
    retry_for: float = 30.0  # keep retrying a lost server this long before giving up
    hold_expiry: float = 30.0  # a verify hold not renewed within this is dropped
    stats_interval: float = 1.0


@dataclass
class Stats:
    """What ``status`` and the progress bar show; written to the state row every second."""

    phase: str = st.PHASE_NEW
    rows_copied: int = 0
    total_rows: int | None = None
    rows_per_s: float = 0.0
    events_applied: int = 0
    events_per_s: float = 0.0
    lag_seconds: float = 0.0
    lag_events: int = 0  # read from the binlog but not applied yet
    lag_bytes: int | None = None  # binlog bytes between the applied position and the server's head
    position: str = ""
    throttled: str | None = None
    started: float = field(default_factory=time.time)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


class Migration:
    """Runs ``start``: the long-lived process that copies and replicates."""

    def __init__(self, ident: Identity, options: Options = Options(), faults: Faults = NO_FAULTS,
                 on_progress: Callable[[Stats], None] | None = None, on_ready: Callable[[], None] | None = None):
        self.ident = ident
        self.on_ready = on_ready or (lambda: None)
        self.options = options
        self.faults = faults
        self.on_progress = on_progress or (lambda s: None)
        self.stop_event = threading.Event()
        self.stats = Stats()
        self.control: Any = None
        self.info: TableInfo | None = None
        self._last_stats = 0.0
        self._rate_mark: tuple[float, int, int] = (time.monotonic(), 0, 0)

    # -- the whole run -----------------------------------------------------------

    def run(self) -> str:
        """Run until finished (returns "finished"), stopped (returns "stopped") or failed (raises)."""
        self.control = db.connect(self.ident.datasource(self.ident.control), role="control")
        try:
            self._claim()
        except BaseException:
            _close(self.control)  # refused: the state row belongs to whoever holds the lock
            raise
        try:
            self.info = inspector.inspect_source(self.ident)
            self.on_ready()
            failing_since: float | None = None
            while not self.stop_event.is_set():
                direction = self._desired()
                try:
                    if direction == FORWARD:
                        self.run_forward()
                    elif direction == REVERSE:
                        self.run_reverse()
                    else:
                        self._set_state(phase=st.PHASE_FINISHED, active=NONE)
                        return "finished"
                    failing_since = None
                except UnreachableError as e:
                    failing_since = failing_since or time.monotonic()
                    if time.monotonic() - failing_since >= self.options.retry_for:
                        raise
                    log.warning("%s; retrying (giving up after %.0f s)", e, self.options.retry_for)
                    self.stop_event.wait(1.0)
                    self._reconnect_control(failing_since)
            return "stopped"
        except MigrationError as e:
            self._record_error(e)
            raise
        finally:
            self._release()

    def stop(self) -> None:
        """Ask the run to end at the next batch or chunk boundary (SIGTERM, Ctrl-C)."""
        self.stop_event.set()

    # -- forward: copy cycles, then streaming ------------------------------------------

    def run_forward(self) -> None:
        ident, info = self.ident, self.info
        assert info is not None
        conns = {ds: db.connect(ident.datasource(ds), role="shard", multi=True, autocommit=False)
                 for ds in ident.targets}
        source_conn = db.connect(ident.source, role="source")
        applier = copier = None
        try:
            checkpoints = self._forward_checkpoints(conns, source_conn)
            self.stats.rows_copied = sum(cp.rows_copied for cp in checkpoints.values())
            applier = ForwardApplier(ident, info.primary_key, checkpoints, conns, self.faults)
            self._set_state(active=FORWARD)
            throttler = Throttler(self.options.limits, source_conn)
            if not all(cp.copy_done for cp in applier.checkpoints.values()):
                copier = Copier(ident, info, conns, applier.checkpoints, self.options.chunk_rows, self.faults)
                self._copy(applier, copier, throttler, source_conn)
                copier.close()
                copier = None
            if not self.stop_event.is_set() and self._desired() == FORWARD:
                self._stream_forward(applier, source_conn)
        finally:
            if copier is not None:
                copier.close()
            if applier is not None:
                applier.close()
            for c in (*conns.values(), source_conn):
                _close(c)

    def _forward_checkpoints(self, conns: dict, source_conn: Any) -> dict[str, Checkpoint]:
        """Each target server's checkpoint; a fresh migration starts at the first snapshot's position."""
        found = {}
        for ds, conn in conns.items():
            st.ensure_control_tables(conn)
            conn.commit()
            rows = ckpt.load(conn, self.ident.name, FORWARD, ds)
            if rows:
                found[ds] = rows[0]
        if found and len(found) < len(conns):
            missing = sorted(set(conns) - set(found))
            raise MigrationError(f"checkpoints of {self.ident.name} exist on {', '.join(sorted(found))} but not on "
                                 f"{', '.join(missing)}", "run `mdriver-migrate abort --empty-targets` and start over")
        if found:
            self._check_binlog_available(source_conn, ckpt.resume_position(found.values()))
            return found
        self._check_targets_empty(conns)
        snap = SourceSnapshot(self.ident, self.info)
        start = snap.position
        snap.close()
        fresh = {ds: Checkpoint(self.ident.name, FORWARD, ds, self.ident.source.name, start) for ds in conns}
        for ds, cp in fresh.items():
            ckpt.save(conns[ds], cp)
            conns[ds].commit()
        rows, exact = inspector.count_rows(source_conn, self.info)
        self._set_state(total_rows=rows)
        log.info("fresh migration of %s from %s (%s rows%s)", self.ident.name, start, rows, "" if exact else " estimated")
        return fresh

    def _copy(self, applier: ForwardApplier, copier: Copier, throttler: Throttler, source_conn: Any) -> None:
        self.stats.phase = st.PHASE_COPYING
        self._set_state(phase=st.PHASE_COPYING)
        row = st.read_state(self.control, self.ident.name)
        self.stats.total_rows = row.total_rows if row else None
        while not self.stop_event.is_set():
            snapshot = SourceSnapshot(self.ident, self.info)
            try:
                # 2. catch every server up to the snapshot, touching only rows it already has.
                self._catch_up(applier, snapshot.position, copy_filters(applier.checkpoints))
                copier.checkpoints = dict(applier.checkpoints)
                # 3. copy chunks from the snapshot until the cycle's lag budget is spent.
                after = min_key([cp.last_pk for cp in copier.checkpoints.values() if not cp.copy_done])
                if all(cp.copy_done for cp in copier.checkpoints.values()):
                    return
                started = time.monotonic()
                finished = False
                while not self.stop_event.is_set():
                    throttler.wait_for_load(self._note_throttle, self.stop_event.is_set)
                    if self.stop_event.is_set():
                        break
                    self.stats.throttled = None
                    _n, after, finished = copier.copy_chunk(snapshot, after)
                    self.faults.crash_point("copy-handed-off")
                    self._progress_copy(copier, started, source_conn, snapshot.position)
                    if finished or throttler.cycle_over(started) or self._desired() != FORWARD:
                        break
                copier.drain()
                applier.checkpoints = dict(copier.checkpoints)
                self._progress_copy(copier, started, source_conn, snapshot.position, force=True)
                if finished:
                    log.info("copy of %s finished: %d rows", self.ident.name, self.stats.rows_copied)
                    return
                if self._desired() != FORWARD:
                    return
            finally:
                snapshot.close()

    def _catch_up(self, applier: ForwardApplier, target: Position, filters: dict) -> None:
        """Apply the source binlog from the minimum checkpoint up to ``target`` (a transaction boundary)."""
        start = ckpt.resume_position(applier.checkpoints.values())
        if start >= target:
            return
        streamer = self._forward_streamer(start)
        batch: list = []
        count = 0
        try:
            for txn in streamer.transactions():
                if txn.ddl is not None:
                    self._check_ddl(txn, applier, batch, filters)
                batch.append(txn)
                count += len(txn.changes)
                done = txn.end >= target
                if done or count >= self.options.batch_changes:
                    self.stats.events_applied += applier.apply(batch, filters)
                    batch, count = [], 0
                if done or self.stop_event.is_set():
                    break
        finally:
            streamer.close()

    def _stream_forward(self, applier: ForwardApplier, source_conn: Any) -> None:
        self.stats.phase = st.PHASE_STREAMING
        self._set_state(phase=st.PHASE_STREAMING, active=FORWARD)
        start = ckpt.resume_position(applier.checkpoints.values())
        prefetch = Prefetcher(self._forward_streamer(start), faults=self.faults).start()
        applied_to = start
        try:
            while not self.stop_event.is_set():
                control = self._control()
                if control.replication != FORWARD:
                    # The cutover verb already waited until we applied everything written before the fence.
                    return
                until = self._hold_target(control, applied_to)
                batch = self._next_batch(prefetch, until)
                if batch and batch[-1].ddl is not None:
                    if self.options.on_ddl != "ignore":
                        ddl_txn = batch.pop()
                        applier.apply(batch, force_checkpoint=True)
                        raise self._ddl_error(ddl_txn.ddl, ddl_txn.end)
                    log.warning("ignoring DDL on the source at %s (--on-ddl=ignore): %s", batch[-1].end, batch[-1].ddl)
                if batch:
                    self.stats.events_applied += applier.apply(batch)
                    applied_to = batch[-1].end
                    self.faults.crash_point("stream-batch-applied")
                self._report_hold(control, prefetch, applied_to, until)
                self._progress_stream(prefetch, source_conn, applied_to)
        finally:
            prefetch.stop()

    # -- reverse: shard binlogs back to the source -------------------------------------

    def run_reverse(self) -> None:
        ident, info = self.ident, self.info
        assert info is not None
        source_conn = db.connect(ident.source, role="source", multi=True, autocommit=False)
        prefetchers: dict[str, Prefetcher] = {}
        try:
            st.ensure_control_tables(source_conn)
            source_conn.commit()
            cps = {cp.read_from: cp for cp in ckpt.load(source_conn, ident.name, REVERSE, ident.source.name)}
            missing = [ds for ds in ident.targets if ds not in cps]
            if missing:
                raise MigrationError(
                    f"no reverse checkpoint for {', '.join(missing)}: cutover-writes records them before writes move",
                    "run `mdriver-migrate cutover-writes` again (it is safe to repeat)")
            applier = ReverseApplier(ident, info.primary_key, cps, source_conn, self.faults)
            for ds in ident.targets:
                self._check_binlog_available_on(ident.datasource(ds), cps[ds].position, "shard")
                tables = {(loc.database, loc.table): info for loc in ident.locations_on(ds)}
                prefetchers[ds] = Prefetcher(BinlogStreamer(
                    ident.datasource(ds), cps[ds].position, server_id=server_id_for(ident.name, 1), tables=tables,
                    watch_ddl=None, role="shard"), faults=self.faults).start()
            self.stats.phase = st.PHASE_REVERSE
            self._set_state(phase=st.PHASE_REVERSE, active=REVERSE)
            while not self.stop_event.is_set():
                control = self._control()
                if control.replication != REVERSE:
                    return  # rollback-writes already waited until the source applied everything written before it
                idle = True
                for ds, p in prefetchers.items():
                    batch = self._next_batch(p, None, wait=0.05 if idle else 0.0)
                    if batch:
                        idle = False
                        self.stats.events_applied += applier.apply(ds, batch)
                        self.faults.crash_point("reverse-batch-applied")
                self.stats.lag_events = max(0, sum(p.pending_changes for p in prefetchers.values()))
                self._publish_stats()
        finally:
            for p in prefetchers.values():
                p.stop()
            _close(source_conn)

    # -- pieces ------------------------------------------------------------------------

    def _forward_streamer(self, start: Position) -> BinlogStreamer:
        src = self.ident.migration
        return BinlogStreamer(
            self.ident.source, start, server_id=server_id_for(self.ident.name, 0),
            tables={(src.source_database, src.source_table): self.info},
            watch_ddl=(src.source_database, src.source_table), role="source")

    def _next_batch(self, prefetch: Prefetcher, until: Position | None, wait: float = 0.2) -> list:
        """Transactions ready now (up to ``batch_changes`` changes, never past ``until``); a DDL ends a batch."""
        batch: list = []
        count = 0
        timeout = wait
        while count < self.options.batch_changes:
            txn = prefetch.peek(timeout)
            if txn is None:
                break
            if until is not None and txn.end > until and (txn.changes or txn.ddl):
                break
            prefetch.take()
            batch.append(txn)
            count += len(txn.changes)
            timeout = 0.0
            if txn.ddl is not None:
                break
        return batch

    def _check_ddl(self, txn, applier: ForwardApplier, batch: list, filters: dict) -> None:
        """During catch-up: log and go on (``--on-ddl=ignore``), or apply what came before and stop."""
        if self.options.on_ddl == "ignore":
            log.warning("ignoring DDL on the source at %s (--on-ddl=ignore): %s", txn.end, txn.ddl)
            return
        if batch:
            applier.apply(batch, filters, force_checkpoint=True)
            batch.clear()
        raise self._ddl_error(txn.ddl, txn.end)

    def _ddl_error(self, ddl: str, at: Position | None) -> SourceDDLError:
        where = f" at {at}" if at else ""
        one_line = " ".join(ddl.split())[:300]
        return SourceDDLError(
            f"the source table {self.ident.source_table} changed{where}: {one_line}; the migration stopped before it "
            "(everything until then is applied and checkpointed)",
            "apply the same change to every shard table, then run `mdriver-migrate start --on-ddl=ignore` to continue "
            "past it; or `mdriver-migrate abort --empty-targets` and start over",
        )

    def _hold_target(self, control: st.State, applied_to: Position) -> Position | None:
        """Where verify wants the applier to stop, if anywhere (a pause stops right here)."""
        req = control.hold_request
        if not req or req.get("expires", 0) < time.time():
            return None
        if req.get("until"):
            return Position.parse(req["until"])
        return applied_to

    def _report_hold(self, control: st.State, prefetch: Prefetcher, applied_to: Position,
                     until: Position | None) -> None:
        """Tell verify that the shards now hold exactly the source as of its position."""
        req = control.hold_request
        if until is None or not req:
            if control.held_at:
                self._set_state(held_at=None)
            return
        nxt = prefetch.peek(0.0)
        # Reached when everything up to ``until`` is applied: the next transaction (if any) lies beyond it.
        reached = applied_to >= until or (nxt is not None and nxt.end > until and (nxt.changes or nxt.ddl))
        held = {"token": req.get("token"), "position": str(applied_to if not req.get("until") else until)}
        if reached or not req.get("until"):
            if control.held_at != held:
                self._set_state(held_at=held)

    def _control(self) -> st.State:
        row = st.read_state(self.control, self.ident.name)
        if row is None:
            raise MigrationError(f"the state row of {self.ident.name} disappeared", "was the migration aborted?")
        return row

    def _desired(self) -> str:
        return self._control().replication

    def _claim(self) -> None:
        st.ensure_control_tables(self.control)
        st.init_state(self.control, self.ident.name)
        name = "mdriver_migrate:" + (self.ident.name if len(self.ident.name) <= 40 else
                                     f"{zlib.crc32(self.ident.name.encode()):08x}")
        got = db.query_one(self.control, "SELECT GET_LOCK(%s, 0)", (name,))
        if not got or got[0] != 1:
            row = st.read_state(self.control, self.ident.name)
            who = f" (pid {row.pid} on {row.host})" if row and row.pid else ""
            raise RefusedError(f"another `mdriver-migrate start` is running for {self.ident.name}{who}",
                               "stop it first (`mdriver-migrate stop`) or let it run")
        self._set_state(error=None, heartbeat=True, **st.claim_fields())

    def _release(self) -> None:
        try:
            self._set_state(active=NONE, pid=None)
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
        _close(self.control)

    def _reconnect_control(self, failing_since: float) -> None:
        """A fresh control session (the old one may be dead too), retrying within the same budget."""
        while True:
            try:
                self.control.ping(reconnect=False)
                return
            except Exception:  # noqa: BLE001 - any failure: open a new session below
                pass
            try:
                _close(self.control)
                self.control = db.connect(self.ident.datasource(self.ident.control), role="control")
                self._claim()
                return
            except UnreachableError:
                if time.monotonic() - failing_since >= self.options.retry_for or self.stop_event.is_set():
                    raise
                self.stop_event.wait(1.0)

    def _check_targets_empty(self, conns: dict) -> None:
        with ThreadPoolExecutor(max_workers=len(conns)) as pool:
            surveys = dict(zip(conns, pool.map(lambda ds: inspector.survey_targets(conns[ds], self.ident, ds, self.info),
                                               list(conns))))
        for ds, (missing, non_empty, problems) in surveys.items():
            if missing:
                raise RefusedError(f"{len(missing)} shard tables are missing on {ds} (e.g. {missing[0].database}."
                                   f"{missing[0].table})", "run `mdriver-migrate plan` first: it creates them")
            if problems:
                raise RefusedError(problems[0].what, problems[0].fix)
            if non_empty:
                raise RefusedError(f"shard tables on {ds} already hold rows (e.g. {non_empty[0]}) and there is no "
                                   "checkpoint to resume from", "empty them (or `mdriver-migrate abort --empty-targets`)")

    def _check_binlog_available(self, source_conn: Any, position: Position) -> None:
        self._check_binlog_available_on(self.ident.source, position, "source")

    def _check_binlog_available_on(self, ds: Any, position: Position, role: str) -> None:
        with db.session(ds, role=role) as conn:
            files = [r[0].decode() if isinstance(r[0], bytes) else r[0] for r in db.query(conn, "SHOW BINARY LOGS")]
        if position.file not in files:
            raise BinlogPurgedError(
                f"{role} {ds.describe()} no longer has binlog {position.file}, needed to resume at {position} "
                f"(oldest is {files[0] if files else 'none'})",
                "the shards cannot be brought up to date from the binlog any more: run `mdriver-migrate abort "
                "--empty-targets` and `start` again to copy from scratch, and keep binlogs longer "
                "(binlog_expire_logs_seconds) than a migration may pause")

    def _set_state(self, **fields: Any) -> None:
        st.update_state(self.control, self.ident.name, **fields)

    def _record_error(self, e: MigrationError) -> None:
        try:
            self._set_state(phase=st.PHASE_STOPPED, error=f"{e.message}" + (f" | next: {e.hint}" if e.hint else ""))
        except Exception:  # noqa: BLE001 - the control server may be the one that failed
            pass

    def _note_throttle(self, reason: str) -> None:
        self.stats.throttled = reason
        self._publish_stats()

    # -- progress --------------------------------------------------------------------

    def _progress_copy(self, copier: Copier, cycle_started: float, source_conn: Any, snapshot_at: Position,
                       force: bool = False) -> None:
        self.stats.rows_copied = sum(cp.rows_copied for cp in copier.checkpoints.values())
        self.stats.position = str(snapshot_at)
        self.stats.lag_seconds = time.monotonic() - cycle_started
        self._publish_stats(force)

    def _progress_stream(self, prefetch: Prefetcher, source_conn: Any, applied_to: Position) -> None:
        if time.monotonic() - self._last_stats < self.options.stats_interval:
            return
        self.stats.lag_events = max(0, prefetch.pending_changes)
        nxt = prefetch.peek(0.0) if prefetch.pending else None
        self.stats.lag_seconds = max(0.0, time.time() - nxt.timestamp) if nxt is not None and nxt.changes else 0.0
        self.stats.position = str(applied_to)
        self.stats.lag_bytes = inspector.binlog_distance(source_conn, applied_to)
        self._publish_stats()

    def _publish_stats(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_stats < self.options.stats_interval:
            return
        t0, rows0, events0 = self._rate_mark
        if now - t0 >= 1.0:
            self.stats.rows_per_s = (self.stats.rows_copied - rows0) / (now - t0)
            self.stats.events_per_s = (self.stats.events_applied - events0) / (now - t0)
            self._rate_mark = (now, self.stats.rows_copied, self.stats.events_applied)
        self._last_stats = now
        self._set_state(stats=self.stats.as_dict(), heartbeat=True)
        self.on_progress(self.stats)


def copy_filters(checkpoints: dict[str, Checkpoint]) -> dict:
    """Per server: may a change to key k be applied yet? Only if the copy has reached k there."""
    filters = {}
    for ds, cp in checkpoints.items():
        if cp.copy_done:
            continue
        if cp.last_pk is None:
            filters[ds] = lambda _k: False
        else:
            filters[ds] = (lambda last: lambda k: k <= last)(cp.last_pk)
    return filters


def min_key(keys: list) -> tuple | None:
    """The smallest key (None, meaning nothing copied, is the smallest)."""
    if not keys or any(k is None for k in keys):
        return None
    return min(keys)


def _close(conn: Any) -> None:
    if conn is None:
        return
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass
