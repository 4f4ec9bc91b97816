"""Pure SQL builders (no I/O): literals, chunk reads, upserts, deletes, checksums.

Two literal paths, both exact:

- Values decoded from the binlog are Python objects; :func:`literal` renders
  them (strings as utf8mb4 literals, bytes as ``_binary``).
- The copier never decodes rows: it reads with ``character_set_results =
  binary`` and renders each column's bytes with :func:`raw_renderers`, using
  the column's own character set as introducer (``_latin1'...'``), so text
  arrives byte for byte whatever its charset.

Writes are ``INSERT ... ON DUPLICATE KEY UPDATE`` (never ``REPLACE``, which
deletes every row a unique key conflicts with) and ``DELETE`` by primary key.
"""
from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Callable, Iterable, Sequence

from migrator.table import Column, TableInfo

ZERO_DATETIME = "0000-00-00 00:00:00"

# Charsets in which the bytes 0x27 (') and 0x5C (\) are never part of a multibyte
# character, so escaping them byte-wise is safe; others are sent as hex.
_BYTE_SAFE_CHARSETS = frozenset({
    "utf8mb4", "utf8mb3", "utf8", "latin1", "latin2", "latin5", "latin7", "ascii", "binary", "cp1250", "cp1251",
    "cp1256", "cp1257", "cp850", "cp852", "cp866", "koi8r", "koi8u", "greek", "hebrew", "swe7", "armscii8", "dec8",
    "hp8", "keybcs2", "macce", "macroman", "geostd8", "tis620", "ucs2_never",
})


def qi(name: str) -> str:
    """Quote an identifier."""
    return "`" + name.replace("`", "``") + "`"


def qualified(database: str, table: str) -> str:
    return f"{qi(database)}.{qi(table)}"


def escape_bytes(raw: bytes) -> bytes:
    """Backslash-escape for a quoted literal (session sql_mode keeps backslash escapes on)."""
    return raw.replace(b"\\", b"\\\\").replace(b"'", b"\\'").replace(b"\x00", b"\\0")


def escape_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'").replace("\x00", "\\0")


def format_timedelta(td: datetime.timedelta) -> str:
    """TIME literal for a (possibly negative) timedelta."""
    total_us = td.days * 86_400_000_000 + td.seconds * 1_000_000 + td.microseconds
    sign = "-" if total_us < 0 else ""
    total_us = abs(total_us)
    seconds, us = divmod(total_us, 1_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    frac = f".{us:06d}" if us else ""
    return f"{sign}{hours:02d}:{minutes:02d}:{secs:02d}{frac}"


def literal(value: object) -> str:
    """An SQL literal for a Python value decoded from the binlog (or a primary key bound)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value!r} cannot be stored in MariaDB")
        return repr(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, str):
        return "'" + escape_text(value) + "'"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "_binary'" + escape_bytes(bytes(value)).decode("ascii", "surrogateescape") + "'"
    if isinstance(value, datetime.datetime):
        return "'" + value.isoformat(" ", "microseconds" if value.microsecond else "seconds") + "'"
    if isinstance(value, datetime.date):
        return "'" + value.isoformat() + "'"
    if isinstance(value, datetime.timedelta):
        return "'" + format_timedelta(value) + "'"
    if isinstance(value, (set, frozenset)):
        return "'" + escape_text(",".join(sorted(value))) + "'"
    raise TypeError(f"no SQL literal for {type(value).__name__} {value!r}")


def encode_sql(sql: str) -> bytes:
    """The bytes to send: utf-8, with ``_binary`` payloads restored byte for byte."""
    return sql.encode("utf-8", "surrogateescape")


# -- the copier's raw path ------------------------------------------------------

def select_expression(col: Column) -> str:
    """How the copier and verifier read a column so that its text form is exact."""
    if col.kind == "bit":
        return f"({qi(col.name)} + 0)"
    if col.kind == "float":
        return f"CAST({qi(col.name)} AS DOUBLE)"  # FLOAT prints 6 digits; its DOUBLE value round-trips
    return qi(col.name)


def raw_renderers(columns: Sequence[Column]) -> list[Callable[[bytes | None], bytes]]:
    """For each column, bytes read over a binary-results session -> the literal that stores the same value."""
    return [_raw_renderer(col) for col in columns]


def _raw_renderer(col: Column) -> Callable[[bytes | None], bytes]:
    if col.kind in ("int", "decimal", "float", "double", "bit", "year"):
        def numeric(v: bytes | None) -> bytes:
            return b"NULL" if v is None else v
        return numeric
    if col.kind == "binary":
        def binary(v: bytes | None) -> bytes:
            return b"NULL" if v is None else b"_binary'" + escape_bytes(v) + b"'"
        return binary
    if col.kind in ("text", "enum", "set"):
        charset = (col.charset or "utf8mb4").lower()
        if charset in _BYTE_SAFE_CHARSETS:
            prefix = b"_" + charset.encode("ascii") + b"'"

            def text(v: bytes | None) -> bytes:
                return b"NULL" if v is None else prefix + escape_bytes(v) + b"'"
            return text
        hexprefix = b"_" + charset.encode("ascii") + b" X'"

        def hextext(v: bytes | None) -> bytes:
            return b"NULL" if v is None else hexprefix + v.hex().encode("ascii") + b"'"
        return hextext

    def quoted(v: bytes | None) -> bytes:  # temporal values print as plain ASCII
        return b"NULL" if v is None else b"'" + v + b"'"
    return quoted


def render_expression(col: Column) -> str:
    """SQL that makes the server write the column's literal itself (binary), as ``raw_renderers`` would.

    Rendering on the server saves decoding every value in Python: the copier
    receives one string per row. ``QUOTE`` escapes backslash, quote, NUL and
    Ctrl-Z, which the session's backslash escapes read back unchanged.
    """
    name = qi(col.name)
    if col.kind in ("int", "decimal", "year"):
        value = f"CAST({name} AS CHAR)"
    elif col.kind in ("float", "double"):
        value = f"CAST(CAST({name} AS DOUBLE) AS CHAR)"
    elif col.kind == "bit":
        value = f"CAST({name} + 0 AS CHAR)"
    elif col.kind == "binary":
        value = f"CONCAT('_binary', CAST(QUOTE({name}) AS BINARY))"
    elif col.kind in ("text", "enum", "set"):
        charset = (col.charset or "utf8mb4").lower()
        if charset in _BYTE_SAFE_CHARSETS:
            value = f"CONCAT('_{charset}', CAST(QUOTE({name}) AS BINARY))"
        else:
            value = "CONCAT('_" + charset + " X''', HEX(" + name + "), '''')"
    else:
        value = f"CAST(QUOTE({name}) AS BINARY)"
    return f"IF({name} IS NULL, 'NULL', CAST({value} AS BINARY))"


def copy_query(info: TableInfo, shard_key: str, after: Sequence[object] | None, limit: int) -> str:
    """Shard key, primary key, and the row's ``(v1,v2,...)`` literal (writable columns) rendered by the server."""
    keys = ", ".join(select_expression(info.column(c)) for c in (shard_key, *info.primary_key))
    row = "CONCAT('(', " + ", ',', ".join(render_expression(c) for c in info.writable) + ", ')')"
    return (
        f"SELECT {keys}, {row} FROM {qualified(info.database, info.table)} WHERE {pk_after(info.primary_key, after)}"
        f" ORDER BY {order_by_pk(info.primary_key)} LIMIT {int(limit)}"
    )


def raw_parsers(columns: Sequence[Column]) -> list[Callable[[bytes | None], object]]:
    """Raw bytes -> the Python value the binlog decoder gives, for key columns (comparisons, routing)."""
    return [_raw_parser(col) for col in columns]


def _raw_parser(col: Column) -> Callable[[bytes | None], object]:
    kind = col.kind
    if kind in ("int", "year"):
        return lambda v: None if v is None else int(v)
    if kind == "bit":
        return lambda v: None if v is None else int(v)
    if kind == "decimal":
        return lambda v: None if v is None else Decimal(v.decode("ascii"))
    if kind in ("float", "double"):
        return lambda v: None if v is None else float(v)
    if kind == "binary":
        return lambda v: v
    if kind in ("text", "enum", "set"):
        encoding = python_encoding(col.charset)
        return lambda v: None if v is None else v.decode(encoding)
    if kind == "date":
        return lambda v: None if v is None else _parse_date(v.decode("ascii"))
    if kind in ("datetime", "timestamp"):
        return lambda v: None if v is None else _parse_datetime(v.decode("ascii"))
    return lambda v: None if v is None else v.decode("ascii")


def _parse_date(text: str) -> object:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        return text  # zero or partial date: kept as text


def _parse_datetime(text: str) -> object:
    head, dot, fraction = text.partition(".")
    if dot:  # as many digits as the column's precision; fromisoformat before 3.11 takes only 3 or 6
        text = f"{head}.{fraction.ljust(6, '0')}"
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return text


_PY_ENCODINGS = {"utf8mb4": "utf-8", "utf8mb3": "utf-8", "utf8": "utf-8", "latin1": "cp1252", "binary": "latin1",
                 "ascii": "ascii", "ucs2": "utf-16-be", "utf16": "utf-16-be", "utf32": "utf-32-be"}


def python_encoding(charset: str | None) -> str:
    """The Python codec of a MySQL charset (as the binlog decoder uses it)."""
    name = (charset or "utf8mb4").lower()
    if name in _PY_ENCODINGS:
        return _PY_ENCODINGS[name]
    from pymysql.charset import charset_by_name

    cs = charset_by_name(name)
    return cs.encoding if cs is not None else "utf-8"


# -- statements ---------------------------------------------------------------------

def pk_after(pk: Sequence[str], values: Sequence[object] | None) -> str:
    """``WHERE`` condition for keys strictly after ``values`` in primary key order (index-friendly form)."""
    if values is None:
        return "1"
    ors = []
    for i in range(len(pk)):
        terms = [f"{qi(pk[j])} = {literal(values[j])}" for j in range(i)]
        terms.append(f"{qi(pk[i])} > {literal(values[i])}")
        ors.append("(" + " AND ".join(terms) + ")")
    return "(" + " OR ".join(ors) + ")"


def pk_at_most(pk: Sequence[str], values: Sequence[object]) -> str:
    return f"NOT {pk_after(pk, values)}"


def order_by_pk(pk: Sequence[str]) -> str:
    return ", ".join(qi(c) for c in pk)


def chunk_query(info: TableInfo, after: Sequence[object] | None, limit: int) -> str:
    """The next ``limit`` rows after ``after`` in primary key order, every column readable exactly."""
    cols = ", ".join(select_expression(c) for c in info.columns)
    return (
        f"SELECT {cols} FROM {qualified(info.database, info.table)} WHERE {pk_after(info.primary_key, after)}"
        f" ORDER BY {order_by_pk(info.primary_key)} LIMIT {int(limit)}"
    )


def upsert_head(database: str, table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {qualified(database, table)} ({', '.join(qi(c) for c in columns)}) VALUES "


def upsert_tail(columns: Sequence[str]) -> str:
    return " ON DUPLICATE KEY UPDATE " + ", ".join(f"{qi(c)} = VALUES({qi(c)})" for c in columns)


def upsert(database: str, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """One multi-row upsert of Python values."""
    values = ", ".join("(" + ", ".join(literal(v) for v in row) + ")" for row in rows)
    return upsert_head(database, table, columns) + values + upsert_tail(columns)


def delete(database: str, table: str, columns: Sequence[str], keys: Iterable[Sequence[object]]) -> str:
    """Delete rows matching ``columns = key`` for each key (the primary key, optionally plus a guard column)."""
    keys = list(keys)
    if len(columns) == 1:
        inlist = ", ".join(literal(k[0]) for k in keys)
        return f"DELETE FROM {qualified(database, table)} WHERE {qi(columns[0])} IN ({inlist})"
    conds = ("(" + " AND ".join(f"{qi(c)} = {literal(v)}" for c, v in zip(columns, k)) + ")" for k in keys)
    return f"DELETE FROM {qualified(database, table)} WHERE " + " OR ".join(conds)


# -- verification ---------------------------------------------------------------------

def row_text_expression(columns: Sequence[Column]) -> str:
    """One binary string per row, equal on two servers iff the rows are equal (NULL-aware)."""
    parts = [f"CAST({select_expression(c)} AS BINARY)" for c in columns]
    nulls = "CONCAT(" + ", ".join(f"ISNULL({qi(c.name)})" for c in columns) + ")"
    return "CONCAT_WS('#', " + ", ".join(parts) + ", " + nulls + ")"


def row_hash_expression(columns: Sequence[Column]) -> str:
    """A 64-bit hash of the row text (the first half of its MD5)."""
    return f"CAST(CONV(LEFT(MD5({row_text_expression(columns)}), 16), 16, 10) AS UNSIGNED)"


def range_condition(pk: Sequence[str], low: Sequence[object] | None, high: Sequence[object] | None) -> str:
    """Keys in ``(low, high]``; ``None`` bounds are open."""
    conds = [pk_after(pk, low)] if low is not None else []
    if high is not None:
        conds.append(pk_at_most(pk, high))
    return " AND ".join(conds) if conds else "1"


def checksum_query(database: str, tables: Sequence[str], columns: Sequence[Column], pk: Sequence[str],
                   low: Sequence[object] | None, high: Sequence[object] | None) -> str:
    """COUNT and BIT_XOR of row hashes over the key range, across ``tables`` (one statement)."""
    cond = range_condition(pk, low, high)
    h = row_hash_expression(columns)
    if len(tables) == 1:
        return f"SELECT COUNT(*), COALESCE(BIT_XOR({h}), 0) FROM {qualified(database, tables[0])} WHERE {cond}"
    branches = " UNION ALL ".join(f"SELECT {h} AS h FROM {qualified(database, t)} WHERE {cond}" for t in tables)
    return f"SELECT COUNT(*), COALESCE(BIT_XOR(h), 0) FROM ({branches}) AS x"


def rows_query(database: str, tables: Sequence[str], columns: Sequence[Column], pk: Sequence[str],
               low: Sequence[object] | None, high: Sequence[object] | None, extra: Sequence[str] = ()) -> str:
    """Every row in the range as (table, pk columns..., extra columns..., row digest), for a row-by-row comparison.

    The digest (MD5 of the row text) has a fixed length: a UNION ALL result column
    takes a declared length, and MariaDB declares 22 characters for a DOUBLE's
    text, which its shortest round-trip form can exceed.
    """
    cond = range_condition(pk, low, high)
    keys = ", ".join(qi(c) for c in (*pk, *extra))
    text = f"MD5({row_text_expression(columns)})"
    return " UNION ALL ".join(
        f"SELECT {literal(t)}, {keys}, {text} FROM {qualified(database, t)} WHERE {cond}" for t in tables
    )


def boundary_query(info: TableInfo, after: Sequence[object] | None, rows: int) -> str:
    """The primary key ``rows`` rows after ``after`` (the end of the next verify chunk)."""
    pkcols = ", ".join(qi(c) for c in info.primary_key)
    return (
        f"SELECT {pkcols} FROM {qualified(info.database, info.table)} WHERE {pk_after(info.primary_key, after)}"
        f" ORDER BY {order_by_pk(info.primary_key)} LIMIT {max(0, int(rows) - 1)}, 1"
    )


def misplaced_condition(info: TableInfo, shard_key: str, algorithm: str, slots: int, slot: int) -> str | None:
    """SQL true for rows that do not belong in physical table ``slot`` (mod and hash only)."""
    col = qi(shard_key)
    if algorithm == "mod":
        return f"MOD(MOD({col}, {slots}) + {slots}, {slots}) <> {slot}"
    if algorithm == "hash":
        return f"MOD(CRC32(CAST({col} AS CHAR CHARACTER SET utf8mb4)), {slots}) <> {slot}"
    return None
