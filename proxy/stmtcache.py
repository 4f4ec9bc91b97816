"""The statements prepared on one backend connection, shared by every session that uses it.

A client's prepared statement that lands on one shard runs on the backend as
a prepared statement too (as ProxySQL does): the client's parameters are
forwarded as they are, the backend skips parsing, and its binary rows go
back to the client unconverted. Each connection prepares a physical
statement the first time it needs it (pipelined with the execute, which
names it as "the last prepared statement") and keeps at most ``limit`` of
them, closing the least recently used, so that the backends'
``max_prepared_stmt_count`` is respected. A connection whose server refuses
to prepare more stops trying; statements then run as text.
"""
from __future__ import annotations

from collections import OrderedDict

from mdriver.wire.framing import frame

LAST_PREPARED = 0xFFFFFFFF  # MariaDB: a COM_STMT_EXECUTE for this id runs the statement prepared just before it
ER_MAX_PREPARED_STMT_COUNT_REACHED = 1461
# An execute that fails with these had a statement the server no longer has as prepared: run it as text.
ER_UNKNOWN_STMT_HANDLER = 1243
ER_NEED_REPREPARE = 1615
STALE_ERRNOS = frozenset((ER_UNKNOWN_STMT_HANDLER, ER_NEED_REPREPARE))


class BackendStatements:
    """Physical SQL -> statement id on one connection, least recently used first."""

    __slots__ = ("ids", "limit", "to_close", "refused")

    def __init__(self, limit: int):
        self.ids: OrderedDict[str, int] = OrderedDict()
        self.limit = limit
        self.to_close: list[int] = []  # evicted ids, closed before the connection's next command
        self.refused = limit <= 0  # prepare nothing more on this connection

    def get(self, sql: str) -> int | None:
        sid = self.ids.get(sql)
        if sid is not None:
            self.ids.move_to_end(sql)
        return sid

    def add(self, sql: str, statement_id: int) -> None:
        ids = self.ids
        ids[sql] = statement_id
        while len(ids) > self.limit:
            self.to_close.append(ids.popitem(last=False)[1])

    def forget(self, sql: str) -> None:
        sid = self.ids.pop(sql, None)
        if sid is not None:
            self.to_close.append(sid)

    def prepare_failed(self, errno: int) -> None:
        if errno == ER_MAX_PREPARED_STMT_COUNT_REACHED:
            self.refused = True

    def take_closes(self) -> bytes:
        """COM_STMT_CLOSE frames for the evicted statements (they get no response)."""
        if not self.to_close:
            return b""
        wire = b"".join(frame(b"\x19" + sid.to_bytes(4, "little"), 0) for sid in self.to_close)
        self.to_close.clear()
        return wire
