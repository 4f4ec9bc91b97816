"""Binlog -> :class:`~migrator.changes.Transaction` objects, one server at a time.

python-mysql-replication does the protocol and decoding. On MariaDB we stream
by file and position with ``is_mariadb=False``: with ``is_mariadb=True`` and no
GTID the library asks for the binlog from its very first file (measured on
10.11), while file/position resumes exactly where we ask. Positions are only
ever reported at transaction boundaries (after ``XID``, a ``COMMIT`` or a DDL
statement, at a rotation, or at an idle heartbeat, which the server sends
only when it has nothing more to send), so any reported position is safe to
checkpoint and to resume from.
"""
from __future__ import annotations

import logging
import queue
import struct
import threading
import time
import zlib
from typing import Iterator, Mapping

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import HeartbeatLogEvent, MariadbGtidEvent, QueryEvent, RotateEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from mdriver.config.model import DataSource
from migrator.changes import DELETE, INSERT, UPDATE, Transaction, ddl_touches, from_rows_event
from migrator.errors import MigrationError, StaleDecodeError, classify
from migrator.faults import NO_FAULTS, Faults
from migrator.state import Position
from migrator.table import TableInfo

log = logging.getLogger(__name__)

_EVENTS = [RotateEvent, MariadbGtidEvent, QueryEvent, XidEvent, WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent,
           HeartbeatLogEvent]
_KIND = {WriteRowsEvent: INSERT, UpdateRowsEvent: UPDATE, DeleteRowsEvent: DELETE}


def server_id_for(migration: str, purpose: int) -> int:
    """A replica server_id unlikely to collide with real replicas (high range, stable per migration)."""
    return 0x80000000 + (zlib.crc32(migration.encode()) % 0x07FFFFFF) * 16 + purpose


class BinlogStreamer:
    """Reads one server's binlog from ``start``, keeping the row changes of ``tables``.

    ``tables`` maps (database, table) to the TableInfo used to fix decoded
    values (None: keep the decoder's values). ``watch_ddl`` is the
    (database, table) whose DDL is reported in ``Transaction.ddl``.
    """

    def __init__(self, ds: DataSource, start: Position, *, server_id: int, tables: Mapping[tuple[str, str], TableInfo | None],
                 watch_ddl: tuple[str, str] | None, role: str, heartbeat: float = 0.5):
        self.ds = ds
        self.position = start
        self.role = role
        self.tables = dict(tables)
        self.watch_ddl = watch_ddl
        self._reader = BinLogStreamReader(
            connection_settings=dict(host=ds.host, port=ds.port, user=ds.user, passwd=ds.password,
                                     connect_timeout=max(1, int(ds.connect_timeout))),
            server_id=server_id,
            log_file=start.file,
            log_pos=start.pos,
            resume_stream=True,
            blocking=True,
            slave_heartbeat=heartbeat,
            only_events=_EVENTS,
            only_schemas=sorted({d for d, _ in self.tables}),
            only_tables=set(t for _, t in self.tables),
            is_mariadb=False,
            enable_logging=False,
        )
        self._closed = False

    def close(self) -> None:
        self._closed = True
        try:
            self._reader.close()
        except Exception:  # noqa: BLE001 - closing a broken socket may fail; nothing to do
            pass

    def transactions(self) -> Iterator[Transaction]:
        """Committed transactions in binlog order; idle heartbeats yield empty ones (position only)."""
        try:
            yield from self._transactions()
        except MigrationError:
            raise
        except UnicodeDecodeError as e:
            raise StaleDecodeError(
                f"{self.role} {self.ds.describe()}: a text value after {self.position} cannot be decoded ({e.reason}, "
                f"byte {e.object[e.start:e.start + 1]!r} as {e.encoding}); the change was not applied",
                "latin1 bytes 0x81, 0x8D, 0x8F, 0x90 and 0x9D have no Python cp1252 mapping: fix those rows on the "
                "source, then run `mdriver-migrate start` again",
            ) from None
        except (pymysql.err.MySQLError, OSError, struct.error) as e:
            if self._closed:
                return
            raise classify(e, self.ds.describe(), self.role) from None

    def _transactions(self) -> Iterator[Transaction]:
        reader = self._reader
        changes: list = []
        in_txn = False
        explicit = False  # the transaction started with BEGIN (ends at XID/COMMIT, not at the next query)
        started = 0.0
        file = self.position.file
        for ev in reader:
            if isinstance(ev, RotateEvent):
                file = ev.next_binlog
                if not in_txn:
                    self.position = Position(file, int(ev.position))
                continue
            end = Position(file, int(ev.packet.log_pos)) if ev.packet.log_pos else None
            if isinstance(ev, MariadbGtidEvent):
                in_txn, explicit, changes, started = True, False, [], float(ev.timestamp)
            elif isinstance(ev, (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)):
                key = (ev.schema, ev.table)
                if key in self.tables:
                    changes.extend(from_rows_event(_KIND[type(ev)], ev.schema, ev.table, ev.rows, self.tables[key],
                                                   end or self.position))
            elif isinstance(ev, XidEvent):
                if end is not None:
                    yield from self._commit(changes, end, started or float(ev.timestamp))
                in_txn, explicit, changes = False, False, []
            elif isinstance(ev, QueryEvent):
                text = ev.query if isinstance(ev.query, str) else bytes(ev.query).decode("utf-8", "replace")
                upper = text.lstrip().upper()
                if upper.startswith("BEGIN") or upper.startswith("XA START"):
                    in_txn, explicit = True, True
                    continue
                if explicit and not upper.startswith(("COMMIT", "ROLLBACK", "XA COMMIT", "XA ROLLBACK")):
                    continue  # SAVEPOINT and the like inside a transaction
                ddl = None
                if self.watch_ddl is not None:
                    schema = ev.schema.decode("utf-8", "replace") if isinstance(ev.schema, bytes) else (ev.schema or "")
                    if ddl_touches(text, schema, *self.watch_ddl):
                        ddl = text
                if end is not None:
                    if upper.startswith(("ROLLBACK", "XA ROLLBACK")):
                        changes = []
                    yield from self._commit(changes, end, started or float(ev.timestamp), ddl)
                in_txn, explicit, changes = False, False, []
            elif isinstance(ev, HeartbeatLogEvent):
                if not in_txn and end is not None:
                    hb = Position(ev.ident if isinstance(ev.ident, str) else file, int(ev.packet.log_pos))
                    if hb > self.position:
                        self.position = hb
                    yield Transaction((), self.position, time.time())

    def _commit(self, changes: list, end: Position, timestamp: float, ddl: str | None = None) -> Iterator[Transaction]:
        self.position = end
        yield Transaction(tuple(changes), end, timestamp, ddl)


class Prefetcher:
    """Reads transactions on a thread so decoding overlaps with applying (bounded look-ahead)."""

    _END = object()

    def __init__(self, streamer: BinlogStreamer, max_pending: int = 20000, faults: Faults = NO_FAULTS):
        self.streamer = streamer
        self.faults = faults
        self.pending_changes = 0  # row changes read but not yet taken (approximate across threads)
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"binlog-{streamer.ds.name}", daemon=True)
        self._peeked: object | None = None

    def start(self) -> "Prefetcher":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for txn in self.streamer.transactions():
                while not self._stop.is_set():
                    try:
                        self._queue.put(txn, timeout=0.2)
                        self.pending_changes += len(txn.changes)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
                if txn.changes:
                    self.faults.crash_point("stream-read")
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put_final(e)
            return
        self._put_final(self._END)

    def _put_final(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    @property
    def pending(self) -> int:
        return self._queue.qsize() + (1 if self._peeked is not None else 0)

    def peek(self, timeout: float) -> Transaction | None:
        """The next transaction without consuming it, or None if none arrived within ``timeout``."""
        if self._peeked is None:
            try:
                self._peeked = self._queue.get(timeout=timeout)
            except queue.Empty:
                return None
        item = self._peeked
        if isinstance(item, BaseException):
            raise item
        if item is self._END:
            raise classify(ConnectionError("the binlog stream ended"), self.streamer.ds.describe(), self.streamer.role)
        return item  # type: ignore[return-value]

    def take(self) -> None:
        if isinstance(self._peeked, Transaction):
            self.pending_changes -= len(self._peeked.changes)
        self._peeked = None

    def stop(self) -> None:
        self._stop.set()
        self.streamer.close()
        self._thread.join(timeout=5)
