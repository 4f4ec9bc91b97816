"""PEP 249 cursors with PyMySQL's shape: ``Cursor`` (tuples) and ``DictCursor`` (dicts).

Results are buffered (as PyMySQL's default cursor does): a routed statement
may merge rows from many shards, so they are complete before the first fetch.
The connection does the routing and fills in the result; the cursor only
holds and hands out rows.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from mdriver import err

if TYPE_CHECKING:
    from mdriver.connection import Connection


def _no_result() -> err.Error:
    return err.error(err.ProgrammingError, err.ER_UNKNOWN_ERROR, "the last statement did not produce a result set")


class Cursor:
    """Rows as tuples."""

    arraysize = 1
    max_stmt_length = 1024 * 1024  # executemany: cap on one multi-row INSERT (as PyMySQL)

    def __init__(self, connection: "Connection"):
        self.connection = connection
        self.description: tuple | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.rownumber = 0
        self.warning_count = 0
        self._rows: Sequence | None = None
        self._executed: str | None = None
        self._closed = False

    # -- PEP 249 ----------------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        self._rows = None

    def __enter__(self) -> "Cursor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self) -> "Connection":
        if self._closed:
            raise err.error(err.ProgrammingError, err.ER_UNKNOWN_ERROR, "cursor is closed")
        conn = self.connection
        if conn is None or conn._closed:
            raise err.error(err.InterfaceError, err.ER_UNKNOWN_ERROR, "connection is closed")
        return conn

    def execute(self, query: str, args: Any = None) -> int:
        """Route and run one statement; returns the affected (or returned) row count, as PyMySQL."""
        conn = self._check()
        if isinstance(query, (bytes, bytearray)):
            query = query.decode("utf-8")
        self._executed = query
        conn._execute(self, query, args)
        return self.rowcount

    def executemany(self, query: str, args: Iterable[Any]) -> int | None:
        """INSERT ... VALUES batches become one multi-row statement per physical table."""
        conn = self._check()
        if isinstance(query, (bytes, bytearray)):
            query = query.decode("utf-8")
        rows = list(args)
        if not rows:
            return None
        self._executed = query
        conn._executemany(self, query, rows)
        return self.rowcount

    def callproc(self, procname: str, args: Sequence = ()) -> Sequence:
        raise err.error(
            err.NotSupportedError, err.ER_NOT_SUPPORTED_YET,
            "stored procedures are not supported by mdriver: a procedure cannot be routed to a shard",
        )

    def mogrify(self, query: str, args: Any = None) -> str:
        """The statement as it would be sent before routing, with parameters escaped like PyMySQL."""
        from mdriver.router.normalize import sql_literal

        if args is None:
            return query
        if isinstance(args, dict):
            return query % {k: sql_literal(v) for k, v in args.items()}
        if not isinstance(args, (tuple, list)):
            args = (args,)
        return query % tuple(sql_literal(v) for v in args)

    def fetchone(self) -> Any:
        rows = self._rows
        if rows is None:
            self._check()
            raise _no_result()
        i = self.rownumber
        if i >= len(rows):
            return None
        self.rownumber = i + 1
        return self._shape(rows[i])

    def fetchmany(self, size: int | None = None) -> list:
        rows = self._rows
        if rows is None:
            self._check()
            raise _no_result()
        start = self.rownumber
        end = start + (self.arraysize if size is None else size)
        self.rownumber = min(end, len(rows))
        return [self._shape(r) for r in rows[start:end]]

    def fetchall(self) -> list:
        rows = self._rows
        if rows is None:
            self._check()
            raise _no_result()
        start = self.rownumber
        self.rownumber = len(rows)
        if type(self) is Cursor:
            return rows if start == 0 else rows[start:]
        return [self._shape(r) for r in rows[start:]]

    def scroll(self, value: int, mode: str = "relative") -> None:
        rows = self._rows
        if rows is None:
            raise _no_result()
        if mode == "relative":
            target = self.rownumber + value
        elif mode == "absolute":
            target = value
        else:
            raise err.error(err.ProgrammingError, err.ER_WRONG_ARGUMENTS, f"unknown scroll mode {mode!r}")
        if not 0 <= target < len(rows):
            raise IndexError("out of range")
        self.rownumber = target

    def nextset(self) -> None:
        """mdriver sends one statement at a time, so there is never a further result set."""
        self._check()
        return None

    def setinputsizes(self, sizes: Any) -> None:
        pass

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        pass

    def __iter__(self) -> Iterator:
        return iter(self.fetchone, None)

    # -- filled in by the connection ------------------------------------------------------

    def _shape(self, row: tuple) -> Any:
        return row

    def _set(
        self, description: tuple | None, rows: Sequence | None, rowcount: int, lastrowid: int | None,
        warnings: int = 0, columns: Sequence | None = None,
    ) -> None:
        self.description = description
        self._rows = rows
        self.rowcount = rowcount
        self.lastrowid = lastrowid
        self.rownumber = 0
        self.warning_count = warnings


class DictCursor(Cursor):
    """Rows as dicts keyed by column name (``table.column`` for a repeated name, as PyMySQL)."""

    dict_type = dict

    def _set(self, description, rows, rowcount, lastrowid, warnings=0, columns=None) -> None:
        super()._set(description, rows, rowcount, lastrowid, warnings)
        if description:
            names: list[str] = []
            seen: set[str] = set()
            for i, col in enumerate(description):
                name = col[0]
                table = columns[i].table if columns else ""
                if name in seen and table:
                    name = f"{table}.{name}"
                seen.add(name)
                names.append(name)
            self._names = names

    def _shape(self, row: tuple) -> dict:
        return self.dict_type(zip(self._names, row))


class SSCursor(Cursor):
    """Accepted for compatibility; results are buffered (merged results must be complete)."""


class SSDictCursor(DictCursor):
    """Accepted for compatibility; results are buffered."""
