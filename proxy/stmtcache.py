"""The statements prepared on one backend connection, shared by every session that uses it.

A client's prepared statement that lands on one shard runs on the backend as
a prepared statement too (as ProxySQL does): the client's parameters are
forwarded as they are, the backend skips parsing, and its binary rows go
back to the client unconverted. Each connection prepares a physical
statement the first time it needs it (pipelined with the execute, which
names it as "the last prepared statement") and keeps at most ``limit`` of
them, closing the least recently used, so that the backends'
``max_prepared_stmt_count`` is respected. A connection whose server refuses
to prepare more stops trying; statements then run as text. All the
connections to one server together hold at most half of that server's
``max_prepared_stmt_count`` (a :class:`StatementBudget`), so that the
server's other clients can still prepare theirs.
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


class StatementBudget:
    """How many prepared statements the connections to one server may hold together."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int | None = None):
        self.limit = limit  # None until learned from the server
        self.used = 0

    @staticmethod
    def share_of(max_prepared_stmt_count: int) -> int:
        return max_prepared_stmt_count // 2


class BackendStatements:
    """Physical SQL -> statement id on one connection, least recently used first."""

    __slots__ = ("ids", "limit", "budget", "to_close", "refused")

    def __init__(self, limit: int, budget: StatementBudget | None = None):
        self.ids: OrderedDict[str, int] = OrderedDict()
        self.limit = limit
        self.budget = budget if budget is not None else StatementBudget()
        self.to_close: list[int] = []  # evicted ids, closed before the connection's next command
        self.refused = limit <= 0 or self.budget.limit == 0  # prepare nothing more on this connection

    def get(self, sql: str) -> int | None:
        sid = self.ids.get(sql)
        if sid is not None:
            self.ids.move_to_end(sql)
        return sid

    def add(self, sql: str, statement_id: int) -> None:
        ids = self.ids
        budget = self.budget
        ids[sql] = statement_id
        budget.used += 1
        shared = budget.limit if budget.limit is not None else len(ids) + budget.used
        while ids and (len(ids) > self.limit or budget.used > shared):
            self.to_close.append(ids.popitem(last=False)[1])
            budget.used -= 1

    def forget(self, sql: str) -> None:
        sid = self.ids.pop(sql, None)
        if sid is not None:
            self.to_close.append(sid)
            self.budget.used -= 1

    def release(self) -> None:
        """The connection is gone, and its statements with it."""
        self.budget.used -= len(self.ids)
        self.ids.clear()
        self.to_close.clear()

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
