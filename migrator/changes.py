"""Our own row-change types and the mapping from decoded binlog rows (pure).

The binlog reader decodes most types exactly, but a few need fixing before a
value can be written back: BIT comes as a string of bits, SET as a Python set
(and the empty set as None), an empty binary string as ``''``, the zero
TIMESTAMP as 1970-01-01, the zero YEAR as 1900, and a negative TIME with a
fraction with its fraction complemented (measured on MariaDB 10.11 with
mysql-replication 1.0: -00:00:01.25 arrives as -00:00:01.75). Zero and partial dates
come back as None, indistinguishable from NULL: those refuse loudly
(:class:`StaleDecodeError`) rather than turn into NULL.
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Mapping

from migrator.errors import StaleDecodeError
from migrator.sql import ZERO_DATETIME
from migrator.state import Position
from migrator.table import TableInfo

INSERT = "insert"
UPDATE = "update"
DELETE = "delete"

_EPOCH = datetime.datetime(1970, 1, 1)


@dataclass(frozen=True)
class RowChange:
    """One row changed on the read-from server. ``columns`` names the values of ``before``/``after``."""

    kind: str
    database: str
    table: str
    columns: tuple[str, ...]
    before: tuple | None
    after: tuple | None

    def value(self, image: tuple, column: str) -> object:
        return image[self.columns.index(column)]


@dataclass(frozen=True)
class Transaction:
    """A committed source transaction: its row changes for our table(s) and where it ends.

    ``end`` is the binlog position right after its commit: a safe place to resume.
    Transactions with no changes still move ``end`` forward. ``ddl`` is set
    when the transaction is a DDL statement touching the migrated table.
    """

    changes: tuple[RowChange, ...]
    end: Position
    timestamp: float
    ddl: str | None = None


def normalize_row(values: Mapping[str, object], none_sources: Mapping[str, str], info: TableInfo | None,
                  where: str) -> tuple[tuple[str, ...], tuple]:
    """Column names and exact values of one decoded row image."""
    names = []
    out = []
    for name in values:
        v = values[name]
        col = info.column(name) if info is not None and info.has(name) else None
        if col is not None and col.generated:
            continue  # the server computes it on the target too
        names.append(name)
        kind = col.kind if col is not None else None
        if v is None:
            source = none_sources.get(name, "null")
            if source == "null":
                out.append(None)
                continue
            if source == "empty set":
                out.append("")
                continue
            if "range" in source:
                raise StaleDecodeError(
                    f"{where}: column {name} holds a zero or partial date ({source}) that the binlog reader cannot "
                    "decode exactly; the change was not applied",
                    "replace zero dates in the source table (e.g. with NULL) or move this table without them; "
                    "then run `mdriver-migrate start` again",
                )
            raise StaleDecodeError(
                f"{where}: column {name} is missing from the row image ({source})",
                "set binlog_row_image=FULL on the source (see `mdriver-migrate plan`) and start again",
            )
        if kind == "bit" and isinstance(v, str):
            v = int(v, 2) if v else 0
        elif kind == "set" and isinstance(v, (set, frozenset)):
            v = ",".join(sorted(v))
        elif kind == "binary" and isinstance(v, str):
            v = v.encode("utf-8", "surrogateescape")
        elif kind == "timestamp" and v == _EPOCH:
            v = ZERO_DATETIME
        elif kind == "year" and v == 1900:
            v = 0
        elif kind == "time" and isinstance(v, datetime.timedelta) and v < datetime.timedelta(0):
            v = fix_negative_time(v)
        out.append(v)
    return tuple(names), tuple(out)


def fix_negative_time(decoded: datetime.timedelta) -> datetime.timedelta:
    """Undo the decoder's error on negative TIME values with a fraction.

    MySQL stores -(I + f) as integer part -(I + 1) and fraction 1 - f; the
    decoder negates the integer part correctly but keeps the stored fraction,
    giving -(I + (1 - f)).
    """
    magnitude = -decoded
    fraction = magnitude.microseconds
    if not fraction:
        return decoded
    whole = magnitude - datetime.timedelta(microseconds=fraction)
    return -(whole + datetime.timedelta(microseconds=1_000_000 - fraction))


def from_rows_event(kind: str, database: str, table: str, rows: list[dict], info: TableInfo | None,
                    position: Position) -> list[RowChange]:
    """RowChanges for the rows of one decoded rows event."""
    where = f"{database}.{table} at {position}"
    changes = []
    for row in rows:
        if kind == UPDATE:
            names, before = normalize_row(row["before_values"], row.get("before_none_sources", {}), info, where)
            _, after = normalize_row(row["after_values"], row.get("after_none_sources", {}), info, where)
            changes.append(RowChange(UPDATE, database, table, names, before, after))
        else:
            names, image = normalize_row(row["values"], row.get("none_sources", {}), info, where)
            if kind == INSERT:
                changes.append(RowChange(INSERT, database, table, names, None, image))
            else:
                changes.append(RowChange(DELETE, database, table, names, image, None))
    return changes


# -- DDL detection ---------------------------------------------------------------------

_IDENT = r"(?:`(?:[^`]|``)+`|[A-Za-z0-9_$\u0080-\uffff]+)"
_NAME = re.compile(rf"({_IDENT})(?:\s*\.\s*({_IDENT}))?")
_COMMENTS = re.compile(r"/\*(?!!).*?\*/|--[^\n]*|#[^\n]*", re.S)
_VERSIONED = re.compile(r"/\*!\d*|\*/")
_HARMLESS = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "XA ", "ANALYZE", "OPTIMIZE", "CHECK", "REPAIR",
             "FLUSH", "GRANT", "REVOKE", "SET ", "CREATE USER", "DROP USER", "ALTER USER")
_DDL_VERBS = ("ALTER", "DROP", "RENAME", "TRUNCATE", "CREATE")


def _unquote(ident: str) -> str:
    if ident.startswith("`"):
        return ident[1:-1].replace("``", "`")
    return ident


def ddl_touches(query: str, current_schema: str, database: str, table: str) -> bool:
    """Whether a binlogged statement may change or remove ``database.table``.

    Errs on the side of yes: a false alarm stops the migration with a message
    (and ``--on-ddl=ignore`` continues), a miss would corrupt the shards.
    """
    text = _VERSIONED.sub(" ", _COMMENTS.sub(" ", query)).strip()
    upper = text.upper()
    if not upper.startswith(_DDL_VERBS) or upper.startswith(_HARMLESS):
        return False
    words = upper.split()
    if words[0] == "DROP" and len(words) > 1 and words[1] in ("DATABASE", "SCHEMA"):
        names = [_unquote(m.group(1)) for m in _NAME.finditer(text[len("DROP"):])]
        return database in names or database.lower() in (n.lower() for n in names)
    if words[0] == "CREATE":
        # Only a CREATE of our own name can change the table (CREATE ... LIKE ours just reads it).
        m = re.match(r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMPORARY\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?", text, re.I)
        if not m:
            m_index = re.match(r"CREATE\s+(?:UNIQUE\s+|FULLTEXT\s+|SPATIAL\s+)?INDEX\b", text, re.I)
            return bool(m_index) and _mentions(text, current_schema, database, table)
        first = _NAME.match(text, m.end())
        return bool(first) and _is_ours(first, current_schema, database, table)
    return _mentions(text, current_schema, database, table)


def _is_ours(m: re.Match, current_schema: str, database: str, table: str) -> bool:
    a, b = m.group(1), m.group(2)
    if b is not None:
        return _unquote(a) == database and _unquote(b) == table
    return _unquote(a) == table and current_schema == database


def _mentions(text: str, current_schema: str, database: str, table: str) -> bool:
    return any(_is_ours(m, current_schema, database, table) for m in _NAME.finditer(text))
