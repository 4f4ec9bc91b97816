"""Compare the source with the shards chunk by chunk, at a known binlog position.

The comparison is exact only if both sides show the same moment. The source
side is a consistent snapshot at binlog position S. The shard side must hold
the source as of S too, so a running ``start`` process is asked (through the
state row) to *hold*: first pause, then apply up to exactly S and stay there
while a few chunks are compared, then go on. Without a running migrator the
shards stay at their checkpoints; that is still exact if the binlog between
the checkpoints and S has no change to the table, which is checked, and
refused otherwise.

Per chunk (a primary-key range of the source): COUNT and a 64-bit XOR of row
hashes on the source and over every physical table of the shards (one
``UNION ALL`` statement per physical database). A chunk that differs is
compared row by row and the differing primary keys are reported (missing on
the shards, extra on the shards, different, or in the wrong physical table).
An unreachable server is an error, never "no rows".
"""
from __future__ import annotations

import logging
import secrets
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from migrator import checkpoint as ckpt
from migrator import db, sql
from migrator import state as st
from migrator.copier import SourceSnapshot
from migrator.errors import MigrationError, RefusedError
from migrator.state import FORWARD, Identity, Position
from migrator.streamer import BinlogStreamer, server_id_for
from migrator.table import TableInfo
from mdriver.sharding import ShardKeyError, locate

log = logging.getLogger(__name__)


@dataclass
class Difference:
    kind: str  # missing | extra | different | misplaced
    key: tuple
    where: str = ""

    def describe(self) -> str:
        key = ", ".join(repr(v) for v in self.key)
        return f"{self.kind:<10} ({key}){' in ' + self.where if self.where else ''}"


@dataclass
class VerifyResult:
    ok: bool
    position: str
    mode: str  # held | static
    chunks: int = 0
    mismatched_chunks: int = 0
    source_rows: int = 0
    shard_rows: int = 0
    differences: list[Difference] = field(default_factory=list)
    truncated: bool = False
    seconds: float = 0.0
    finished_at: float = 0.0

    def as_dict(self) -> dict:
        return {
            "ok": self.ok, "position": self.position, "mode": self.mode, "chunks": self.chunks,
            "mismatched_chunks": self.mismatched_chunks, "source_rows": self.source_rows, "shard_rows": self.shard_rows,
            "differences": [{"kind": d.kind, "key": [repr(v) for v in d.key], "where": d.where}
                            for d in self.differences],
            "truncated": self.truncated, "seconds": round(self.seconds, 3), "finished_at": self.finished_at,
        }


class Hold:
    """Asks the running ``start`` process to stop applying at a given source position."""

    def __init__(self, control: Any, migration: str, expiry: float, timeout: float):
        self.control = control
        self.migration = migration
        self.expiry = expiry
        self.timeout = timeout
        self.token = secrets.token_hex(6)

    def _request(self, **fields: Any) -> None:
        st.update_state(self.control, self.migration,
                        hold_request={"token": self.token, "expires": time.time() + self.expiry, **fields})

    def _wait(self, want: Callable[[dict], bool], what: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            row = st.read_state(self.control, self.migration)
            held = row.held_at if row else None
            if held and held.get("token") == self.token and want(held):
                return held
            time.sleep(0.05)
        raise MigrationError(f"the running migrator did not {what} within {self.timeout:g} s",
                             "check `mdriver-migrate status` (is it throttled or stuck?) and run verify again")

    def pause(self) -> Position:
        self._request(mode="pause")
        return Position.parse(self._wait(lambda h: True, "pause")["position"])

    def hold_at(self, position: Position) -> None:
        self._request(until=str(position))
        self._wait(lambda h: h.get("position") == str(position), f"reach {position}")

    def renew(self, position: Position) -> None:
        self._request(until=str(position))

    def release(self) -> None:
        try:
            st.update_state(self.control, self.migration, hold_request=None)
        except Exception:  # noqa: BLE001 - an expired hold is dropped by the migrator anyway
            pass


class Verifier:
    def __init__(self, ident: Identity, info: TableInfo, chunk_rows: int = 50000, max_differences: int = 100,
                 window: float = 2.0, hold_timeout: float = 30.0, on_chunk: Callable[[int, int], None] | None = None):
        self.ident = ident
        self.info = info
        self.chunk_rows = chunk_rows
        self.max_differences = max_differences
        self.window = window
        self.hold_timeout = hold_timeout
        self.on_chunk = on_chunk or (lambda done, rows: None)
        self.groups = self._groups()

    def _groups(self) -> dict[str, dict[str, list]]:
        """datasource -> physical database -> locations."""
        out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for loc in self.ident.locations:
            out[loc.datasource][loc.database].append(loc)
        return out

    def run(self, control: Any) -> VerifyResult:
        started = time.monotonic()
        state = st.read_state(control, self.ident.name)
        if state is None:
            raise RefusedError(f"{self.ident.name} has not been started", "run `mdriver-migrate start` first")
        if state.replication != FORWARD:
            raise RefusedError(
                f"writes of {self.ident.name} go to the shards (replication is {state.replication}); verify compares "
                "while the source is the primary", "run verify before cutover-writes or after rollback-writes")
        try:
            result = self._run(control, state)
        except MigrationError as e:
            if not isinstance(e, RefusedError):  # a verify that could not finish is a failed verify
                st.update_state(control, self.ident.name, verify={"ok": False, "error": e.message,
                                                                  "finished_at": time.time()})
            raise
        result.seconds = time.monotonic() - started
        result.finished_at = time.time()
        st.update_state(control, self.ident.name, verify=result.as_dict())
        return result

    def _run(self, control: Any, state: st.State) -> VerifyResult:
        conns: dict = {}
        try:
            for ds in self.ident.targets:
                conns[ds] = db.connect(self.ident.datasource(ds), role="shard")
            cps = [cp for ds, conn in conns.items() for cp in ckpt.load(conn, self.ident.name, FORWARD, ds)]
            if len(cps) < len(conns) or not all(cp.copy_done for cp in cps):
                raise RefusedError(f"the copy of {self.ident.name} is not finished",
                                   "wait for `mdriver-migrate status` to show the streaming phase, then verify")
            return self._run_held(control, conns) if state.running() else self._run_static(conns, cps)
        finally:
            for c in conns.values():
                try:
                    c.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass

    def _run_held(self, control: Any, conns: dict) -> VerifyResult:
        hold = Hold(control, self.ident.name, expiry=max(10.0, self.window * 5), timeout=self.hold_timeout)
        result = VerifyResult(ok=True, position="", mode="held")
        low: tuple | None = None
        done = False
        try:
            while not done:
                hold.pause()
                snapshot = SourceSnapshot(self.ident, self.info)
                try:
                    hold.hold_at(snapshot.position)
                    result.position = str(snapshot.position)
                    window_end = time.monotonic() + self.window
                    while not done and time.monotonic() < window_end:
                        low, done = self._chunk(snapshot, conns, low, result)
                        hold.renew(snapshot.position)
                finally:
                    snapshot.close()
                    hold.release()
        finally:
            hold.release()
        return result

    def _run_static(self, conns: dict, cps: list) -> VerifyResult:
        snapshot = SourceSnapshot(self.ident, self.info)
        try:
            start = ckpt.resume_position(cps)
            pending = self._changes_between(start, snapshot.position)
            if pending:
                raise RefusedError(
                    f"the shards are {pending} row change(s) behind the source (checkpoints at {start}, source at "
                    f"{snapshot.position}) and no migrator is running to catch them up",
                    "run `mdriver-migrate start` (verify then holds it at a known position) and verify again")
            result = VerifyResult(ok=True, position=str(snapshot.position), mode="static")
            low, done = None, False
            while not done:
                low, done = self._chunk(snapshot, conns, low, result)
            return result
        finally:
            snapshot.close()

    def _changes_between(self, start: Position, end: Position) -> int:
        if start >= end:
            return 0
        src = self.ident.migration
        streamer = BinlogStreamer(self.ident.source, start, server_id=server_id_for(self.ident.name, 2),
                                  tables={(src.source_database, src.source_table): self.info},
                                  watch_ddl=(src.source_database, src.source_table), role="source")
        count = 0
        try:
            for txn in streamer.transactions():
                if txn.end > end:
                    break
                count += len(txn.changes) + (1 if txn.ddl else 0)
                if txn.end >= end:
                    break
        finally:
            streamer.close()
        return count

    # -- one chunk --------------------------------------------------------------------

    def _chunk(self, snapshot: SourceSnapshot, conns: dict, low: tuple | None, result: VerifyResult) -> tuple:
        info = self.info
        pk = info.primary_key
        boundary = _query(snapshot.conn, sql.boundary_query(info, low, self.chunk_rows))
        parsers = sql.raw_parsers([info.column(c) for c in pk])
        high = tuple(p(v) for p, v in zip(parsers, boundary[0])) if boundary else None
        src = _query(snapshot.conn, sql.checksum_query(info.database, [info.table], info.columns, pk, low, high))[0]
        src_count, src_hash = int(src[0]), int(src[1])
        shard_count, shard_hash, misplaced = self._shard_checksum(conns, low, high)
        result.chunks += 1
        result.source_rows += src_count
        result.shard_rows += shard_count
        if (src_count, src_hash) != (shard_count, shard_hash) or misplaced:
            result.ok = False
            result.mismatched_chunks += 1
            self._compare_rows(snapshot, conns, low, high, result)
        self.on_chunk(result.chunks, result.source_rows)
        return high, high is None

    def _shard_checksum(self, conns: dict, low: tuple | None, high: tuple | None) -> tuple[int, int, int]:
        info, rule = self.info, self.ident.rule

        def one(ds: str) -> tuple[int, int, int]:
            count = xor = misplaced = 0
            conn = conns[ds]
            for database, locs in self.groups[ds].items():
                tables = [loc.table for loc in locs]
                c, h = _query(conn, sql.checksum_query(database, tables, info.columns, info.primary_key, low, high))[0]
                count += int(c)
                xor ^= int(h)
                conds = [(loc.table, sql.misplaced_condition(info, rule.shard_key or "", rule.algorithm or "",
                                                             rule.slots, loc.slot)) for loc in locs]
                conds = [(t, c) for t, c in conds if c]
                if conds:
                    rng = sql.range_condition(info.primary_key, low, high)
                    q = " UNION ALL ".join(f"SELECT COUNT(*) FROM {sql.qualified(database, t)} WHERE {rng} AND {c}"
                                           for t, c in conds)
                    misplaced += sum(int(r[0]) for r in _query(conn, q))
            return count, xor, misplaced

        with ThreadPoolExecutor(max_workers=len(conns)) as pool:
            parts = list(pool.map(one, sorted(conns)))
        count = sum(p[0] for p in parts)
        xor = 0
        for p in parts:
            xor ^= p[1]
        return count, xor, sum(p[2] for p in parts)

    def _compare_rows(self, snapshot: SourceSnapshot, conns: dict, low: tuple | None, high: tuple | None,
                      result: VerifyResult) -> None:
        info, pk = self.info, self.info.primary_key
        sk = self.ident.rule.shard_key or ""
        parsers = sql.raw_parsers([info.column(c) for c in (*pk, sk)])
        n = len(pk)

        def split(row: tuple) -> tuple[tuple, object, bytes]:
            values = [p(v) for p, v in zip(parsers, row[1:2 + n])]
            return tuple(values[:n]), values[n], row[2 + n]

        source = {}
        for row in _query(snapshot.conn, sql.rows_query(info.database, [info.table], info.columns, pk, low, high, [sk])):
            key, shard_value, text = split(row)
            source[key] = (shard_value, text)
        shards: dict[tuple, list] = defaultdict(list)
        for ds in sorted(conns):
            raw = db.connect(self.ident.datasource(ds), role="shard", raw=True)
            try:
                with raw.cursor() as cur:
                    cur.execute("SET SESSION character_set_results = binary")
                for database, locs in self.groups[ds].items():
                    by_table = {loc.table: loc for loc in locs}
                    q = sql.rows_query(database, list(by_table), info.columns, pk, low, high, [sk])
                    for row in _query(raw, q):
                        key, _sv, text = split(row)
                        shards[key].append((by_table[row[0].decode()], text))
            finally:
                raw.close()
        diffs = []
        for key, (shard_value, text) in source.items():
            found = shards.get(key)
            if not found:
                diffs.append(Difference("missing", key))
                continue
            right = self._expected_table(shard_value)
            for loc, other in found:
                where = f"{loc.datasource} {loc.database}.{loc.table}"
                if right is not None and loc.table != right:
                    diffs.append(Difference("misplaced", key, where))
                elif other != text:
                    diffs.append(Difference("different", key, where))
        for key, found in shards.items():
            if key not in source:
                for loc, _ in found:
                    diffs.append(Difference("extra", key, f"{loc.datasource} {loc.database}.{loc.table}"))
        diffs.sort(key=lambda d: (repr(d.key), d.kind))
        room = self.max_differences - len(result.differences)
        if len(diffs) > room:
            result.truncated = True
        result.differences.extend(diffs[:max(0, room)])

    def _expected_table(self, shard_value: object) -> str | None:
        """The physical table a row with this shard key belongs in."""
        try:
            return locate(self.ident.schema, self.ident.rule, shard_value).table
        except ShardKeyError:
            return None


def _query(conn: Any, q: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(q)
        return list(cur.fetchall())
