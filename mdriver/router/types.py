"""Values exchanged between plans, runners and backends.

A plan yields batches of :class:`ShardQuery` and receives one
:class:`ShardResult` per query; it returns a merged :class:`Result`. Rows are
Python values as PyMySQL returns them (int, Decimal, float, str, bytes,
datetime, None).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pymysql.constants import FIELD_TYPE

from mdriver.compat import DATACLASS_SLOTS

CHARSET_BINARY = 63
CHARSET_UTF8MB4_GENERAL_CI = 45
NOT_NULL_FLAG = 1
BINARY_FLAG = 128
NUM_FLAG = 32768


@dataclass(frozen=True, **DATACLASS_SLOTS)
class ShardQuery:
    """One physical statement: run ``sql`` with ``database`` as the current database."""

    datasource: str
    database: str
    sql: str
    write: bool = False


@dataclass(frozen=True, **DATACLASS_SLOTS)
class Column:
    """A result column as the MySQL protocol describes it.

    ``type_code`` is a MySQL field type number (``pymysql.constants.FIELD_TYPE``);
    ``charset`` is the collation id (63 = binary, 45 = utf8mb4_general_ci),
    which the merger also uses to compare strings the way the server does.
    """

    name: str
    type_code: int = FIELD_TYPE.VAR_STRING
    length: int = 0
    decimals: int = 0
    flags: int = 0
    charset: int = CHARSET_UTF8MB4_GENERAL_CI
    table: str = ""
    org_table: str = ""
    org_name: str = ""
    schema: str = ""


@dataclass(**DATACLASS_SLOTS)
class ShardResult:
    """What a backend returns for one ShardQuery (columns empty for statements without a result set)."""

    columns: tuple[Column, ...] = ()
    rows: list = field(default_factory=list)
    affected_rows: int = 0
    insert_id: int = 0
    warnings: int = 0


@dataclass(**DATACLASS_SLOTS)
class Result:
    """The merged result of a plan, as the client must see it."""

    columns: tuple[Column, ...] = ()
    rows: list = field(default_factory=list)
    affected_rows: int = 0
    insert_id: int = 0
    warnings: int = 0


def text_column(name: str, length: int = 1024) -> Column:
    return Column(name, FIELD_TYPE.VAR_STRING, length * 4, 0, 0, CHARSET_UTF8MB4_GENERAL_CI)


def int_column(name: str) -> Column:
    return Column(name, FIELD_TYPE.LONGLONG, 21, 0, NOT_NULL_FLAG | NUM_FLAG | BINARY_FLAG, CHARSET_BINARY)


def decimal_column(name: str, decimals: int, length: int = 65) -> Column:
    return Column(name, FIELD_TYPE.NEWDECIMAL, length, decimals, NUM_FLAG | BINARY_FLAG, CHARSET_BINARY)


def double_column(name: str) -> Column:
    return Column(name, FIELD_TYPE.DOUBLE, 23, 31, NUM_FLAG | BINARY_FLAG, CHARSET_BINARY)
