"""The soak workload: one client thread per connection, through the driver or the proxy.

Each client owns its shard keys (``uid``), row ids and one broadcast row, so
that the order in which clients run does not change the final data: every
write that succeeds on the sharded side is applied, in the same order, to the
unsharded reference database ``app_ref``. Reads of a client's own rows, and
scatter reads over the static part of the data set (ids of the router's data
set, which nobody writes), are checked against the reference on the spot.

Both arms use the DB-API: an ``mdriver`` connection or a PyMySQL connection
to the proxy, both in autocommit mode with ``begin()``/``commit()`` for
transactions, so they run the very same code.
"""
from __future__ import annotations

import datetime
import decimal
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import pymysql

from reliability_helpers import DB_ERRORS, errno_of, message_of, same_rows

# Errors a correct system may return under concurrent load; anything else fails the soak.
EXPECTED_ERRNOS = {1213: "deadlock: the transaction was rolled back", 1205: "lock wait timeout"}
STATIC_MAX_ID = 3000  # user_relation ids of the router data set: read by scatter queries, never written
STATIC_MAX_FAN_ID = 12_000
REMARKS = ("soak", "café", "日本語", "with 'quote'", "back\\slash", "50%", None, "", "Zürich", "emoji 😀")
RETRYABLE_ON_REFERENCE = (1213, 1205)

COLS = "id, uid, target_uid, relation_type, remark, score, created_at"
INSERT_ROW = f"INSERT INTO user_relation ({COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
INSERT_FAN = "INSERT INTO user_fans (id, uid, fan_uid, level, created_at) VALUES (%s, %s, %s, %s, %s)"

# (name, weight)
OPS = (
    ("point", 16), ("in", 8), ("scatter_topn", 6), ("scatter_agg", 4), ("scatter_live", 5), ("join", 4),
    ("broadcast_read", 3), ("insert", 14), ("insert_multi", 5), ("update", 9), ("delete", 4), ("fans_insert", 6),
    ("transfer", 14), ("broadcast_write", 2),
)
READS = {"point", "in", "scatter_topn", "scatter_agg", "scatter_live", "join", "broadcast_read"}


@dataclass
class ClientReport:
    index: int
    arm: str
    ops: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    samples: list = field(default_factory=list)
    mismatches: list = field(default_factory=list)
    reference_retries: int = 0
    crashed: str | None = None

    @property
    def total(self) -> int:
        return sum(self.ops.values())


class SoakClient:
    """One logical client. ``connect()`` opens its connection to the sharded side (autocommit)."""

    def __init__(self, index: int, arm: str, connect: Callable[[], Any], connect_ref: Callable[[], Any],
                 locate_ds: Callable[[int], str], deadline: float, max_ops: int, seed: int):
        self.index = index
        self.arm = arm
        self._connect = connect
        self._connect_ref = connect_ref
        self.deadline = deadline
        self.max_ops = max_ops
        self.rnd = random.Random(seed)
        self.report = ClientReport(index, arm)
        base = 50_000_000 + index * 1_000_000
        self.uids = [base + k * 37 for k in range(40)]
        by_ds: dict[str, list[int]] = {}
        for uid in self.uids:
            by_ds.setdefault(locate_ds(uid), []).append(uid)
        if len(by_ds) < 2:
            raise ValueError(f"client {index}: its keys must span two datasources, got {sorted(by_ds)}")
        (self.ds_a, uids_a), (self.ds_b, uids_b) = sorted(by_ds.items())[:2]
        self.account_a, self.account_b = uids_a[0], uids_b[0]
        self.account_ids = (2_100_000_000 + index * 2, 2_100_000_001 + index * 2)
        self.next_id = 1_000_000_000 + index * 10_000_000
        self.next_fan_id = 1_500_000_000 + index * 10_000_000
        self.live: dict[int, int] = {}  # own user_relation id -> uid, as far as this client knows
        self.region_id = 1000 + index
        self.conn: Any = None
        self.ref: Any = None
        self.thread = threading.Thread(target=self._main, name=f"soak-{arm}-{index}", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------

    def setup(self) -> None:
        """Accounts for transfers and the client's broadcast row, on both sides."""
        self.conn = self._connect()
        self.ref = self._connect_ref()
        now = self._now()
        stmts = [
            (INSERT_ROW, (self.account_ids[0], self.account_a, 0, 9, "account", decimal.Decimal("1000.00"), now)),
            (INSERT_ROW, (self.account_ids[1], self.account_b, 0, 9, "account", decimal.Decimal("1000.00"), now)),
            ("INSERT INTO region (region_id, name) VALUES (%s, %s)", (self.region_id, f"client {self.index}")),
        ]
        for sql, args in stmts:
            with self.conn.cursor() as cur:
                cur.execute(sql, args)
        self._apply_reference(stmts, transaction=False)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def _main(self) -> None:
        names = [n for n, _ in OPS]
        weights = [w for _, w in OPS]
        try:
            while time.monotonic() < self.deadline and self.report.total < self.max_ops:
                op = self.rnd.choices(names, weights)[0]
                try:
                    getattr(self, f"op_{op}")()
                except DB_ERRORS as e:
                    self._failed(op, e)
                else:
                    self.report.ops[op] += 1
        except BaseException as e:  # noqa: BLE001 - reported by the test, never lost in a thread
            self.report.crashed = f"{type(e).__name__}: {e}"
        finally:
            for c in (self.conn, self.ref):
                try:
                    if c is not None:
                        c.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass

    def _failed(self, op: str, e: BaseException) -> None:
        code = errno_of(e)
        self.report.errors[code] += 1
        if len(self.report.samples) < 10:
            self.report.samples.append(f"{self.arm}#{self.index} {op}: ({code}) {message_of(e)}")
        if isinstance(e, pymysql.err.OperationalError) and code >= 2000:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass
            self.conn = self._connect()

    # -- helpers --------------------------------------------------------------------------

    def _now(self) -> datetime.datetime:
        return datetime.datetime.now().replace(microsecond=self.rnd.randrange(0, 1_000_000))

    def _remark(self) -> str | None:
        return self.rnd.choice(REMARKS)

    def _query(self, conn: Any, sql: str, args: Any) -> tuple:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return tuple(cur.fetchall())

    def _check(self, sql: str, args: Any, ordered: bool) -> None:
        got = self._query(self.conn, sql, args)
        want = self._query(self.ref, sql, args)
        if not same_rows(got, want, ordered):
            self.report.mismatches.append(f"{self.arm}#{self.index}: {sql} {args!r}\n  got  {got[:5]!r} ({len(got)})\n"
                                          f"  want {want[:5]!r} ({len(want)})")

    def _write(self, sql: str, args: Any) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
        self._apply_reference([(sql, args)], transaction=False)

    def _apply_reference(self, stmts: list, transaction: bool) -> None:
        """The same logical writes on app_ref; a deadlock there is retried (the shards already committed)."""
        for attempt in range(50):
            try:
                if transaction:
                    self.ref.begin()
                with self.ref.cursor() as cur:
                    for sql, args in stmts:
                        cur.execute(sql, args)
                if transaction:
                    self.ref.commit()
                return
            except pymysql.err.OperationalError as e:
                if errno_of(e) not in RETRYABLE_ON_REFERENCE:
                    raise
                self.report.reference_retries += 1
                if transaction:
                    self.ref.rollback()
                time.sleep(0.01 * (attempt + 1))
        raise RuntimeError(f"reference write kept deadlocking: {stmts!r}")

    def _own_uid(self) -> int:
        return self.rnd.choice(self.uids)

    def _new_row(self, uid: int) -> tuple:
        self.next_id += 1
        score = None if self.rnd.random() < 0.1 else decimal.Decimal(self.rnd.randrange(-10000, 100000)) / 100
        return (self.next_id, uid, self.rnd.randrange(0, 5000), self.rnd.randrange(1, 5), self._remark(), score, self._now())

    # -- reads -------------------------------------------------------------------------------

    def op_point(self) -> None:
        self._check(f"SELECT {COLS} FROM user_relation WHERE uid = %s ORDER BY id", (self._own_uid(),), True)

    def op_in(self) -> None:
        uids = self.rnd.sample(self.uids, 3)
        self._check(f"SELECT {COLS} FROM user_relation WHERE uid IN (%s, %s, %s) ORDER BY id", tuple(uids), True)

    def op_scatter_topn(self) -> None:
        sql = ("SELECT id, uid, score, remark FROM user_relation WHERE id <= %s AND relation_type = %s "
               "ORDER BY score DESC, id LIMIT %s, %s")
        self._check(sql, (STATIC_MAX_ID, self.rnd.randrange(1, 5), self.rnd.randrange(0, 20), self.rnd.randrange(1, 15)), True)

    def op_scatter_agg(self) -> None:
        if self.rnd.random() < 0.5:
            sql = ("SELECT relation_type, COUNT(*), SUM(score), MIN(created_at), MAX(target_uid) FROM user_relation "
                   "WHERE id <= %s GROUP BY relation_type ORDER BY relation_type")
            self._check(sql, (STATIC_MAX_ID,), True)
        else:
            sql = "SELECT COUNT(*), COUNT(DISTINCT uid), MAX(level) FROM user_fans WHERE id <= %s"
            self._check(sql, (STATIC_MAX_FAN_ID,), True)

    def op_scatter_live(self) -> None:
        lo = 1_000_000_000 + self.index * 10_000_000
        sql = "SELECT COUNT(*), SUM(score), AVG(score), MAX(id) FROM user_relation WHERE id BETWEEN %s AND %s"
        self._check(sql, (lo, lo + 9_999_999), True)

    def op_join(self) -> None:
        sql = ("SELECT r.id, f.id, f.fan_uid, r.score FROM user_relation r JOIN user_fans f ON f.uid = r.uid "
               "WHERE r.uid = %s ORDER BY r.id, f.id")
        self._check(sql, (self._own_uid(),), True)

    def op_broadcast_read(self) -> None:
        self._check("SELECT region_id, name FROM region WHERE region_id = %s", (self.region_id,), True)

    # -- writes ------------------------------------------------------------------------------

    def op_insert(self) -> None:
        row = self._new_row(self._own_uid())
        self._write(INSERT_ROW, row)
        self.live[row[0]] = row[1]

    def op_insert_multi(self) -> None:
        """One INSERT with rows for several shards on both datasources: one atomic statement."""
        rows = [self._new_row(self.account_a), self._new_row(self.account_b), self._new_row(self._own_uid())]
        sql = f"INSERT INTO user_relation ({COLS}) VALUES " + ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(rows))
        self._write(sql, tuple(v for r in rows for v in r))
        for r in rows:
            self.live[r[0]] = r[1]

    def op_update(self) -> None:
        sql = "UPDATE user_relation SET score = score + %s, remark = %s WHERE uid = %s AND relation_type <> 9"
        self._write(sql, (decimal.Decimal(self.rnd.randrange(1, 500)) / 100, self._remark(), self._own_uid()))

    def op_delete(self) -> None:
        if not self.live:
            return self.op_insert()
        row_id = self.rnd.choice(list(self.live))
        self._write("DELETE FROM user_relation WHERE uid = %s AND id = %s", (self.live[row_id], row_id))
        del self.live[row_id]

    def op_fans_insert(self) -> None:
        self.next_fan_id += 1
        level = None if self.rnd.random() < 0.2 else self.rnd.randrange(0, 10)
        self._write(INSERT_FAN, (self.next_fan_id, self._own_uid(), self.rnd.randrange(1, 10**6), level, self._now()))

    def op_transfer(self) -> None:
        """A gift: move score between accounts on two datasources and log it, in one transaction."""
        amount = decimal.Decimal(self.rnd.randrange(1, 1000)) / 100
        src, dst = (0, 1) if self.rnd.random() < 0.5 else (1, 0)
        uids = (self.account_a, self.account_b)
        self.next_fan_id += 1
        stmts = [
            ("UPDATE user_relation SET score = score - %s WHERE uid = %s AND id = %s", (amount, uids[src], self.account_ids[src])),
            ("UPDATE user_relation SET score = score + %s WHERE uid = %s AND id = %s", (amount, uids[dst], self.account_ids[dst])),
            (INSERT_FAN, (self.next_fan_id, uids[dst], uids[src], 7, self._now())),
        ]
        rollback = self.rnd.random() < 0.15
        conn = self.conn
        conn.begin()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT score FROM user_relation WHERE uid = %s AND id = %s FOR UPDATE",
                            (uids[src], self.account_ids[src]))
                for sql, args in stmts:
                    cur.execute(sql, args)
        except BaseException:
            try:
                conn.rollback()
            except DB_ERRORS:
                pass
            raise
        if rollback:
            conn.rollback()
            return
        conn.commit()
        self._apply_reference(stmts, transaction=True)

    def op_broadcast_write(self) -> None:
        self._write("UPDATE region SET name = %s WHERE region_id = %s", (f"client {self.index} #{self.rnd.randrange(10**6)}", self.region_id))


def run_clients(clients: list[SoakClient], duration: float) -> float:
    """Start all clients, wait for them (bounded), return the wall time they ran."""
    started = time.monotonic()
    for c in clients:
        c.start()
    for c in clients:
        c.join(max(1.0, duration + 120 - (time.monotonic() - started)))
    stuck = [c.thread.name for c in clients if c.thread.is_alive()]
    if stuck:
        raise AssertionError(f"soak clients still running long after the deadline (a hang): {stuck}")
    return time.monotonic() - started
