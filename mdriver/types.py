"""PEP 249 type objects and constructors.

``cursor.description[i][1]`` holds the MySQL column type code of the backend
(the same numbers PyMySQL reports), so ``description[i][1] == mdriver.NUMBER``
works for routed and merged results alike.
"""
from __future__ import annotations

import datetime
import time

from pymysql.constants import FIELD_TYPE


class DBAPITypeObject(frozenset):
    """Compares equal to every type code it groups (PEP 249 "type objects")."""

    def __eq__(self, other: object) -> bool:
        if isinstance(other, frozenset):
            return frozenset.__eq__(self, other)
        return other in self

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return frozenset.__hash__(self)


STRING = DBAPITypeObject((FIELD_TYPE.ENUM, FIELD_TYPE.STRING, FIELD_TYPE.VAR_STRING, FIELD_TYPE.VARCHAR, FIELD_TYPE.SET))
BINARY = DBAPITypeObject(
    (FIELD_TYPE.BLOB, FIELD_TYPE.LONG_BLOB, FIELD_TYPE.MEDIUM_BLOB, FIELD_TYPE.TINY_BLOB, FIELD_TYPE.GEOMETRY, FIELD_TYPE.BIT)
)
NUMBER = DBAPITypeObject(
    (
        FIELD_TYPE.DECIMAL, FIELD_TYPE.NEWDECIMAL, FIELD_TYPE.DOUBLE, FIELD_TYPE.FLOAT, FIELD_TYPE.INT24,
        FIELD_TYPE.LONG, FIELD_TYPE.LONGLONG, FIELD_TYPE.TINY, FIELD_TYPE.SHORT, FIELD_TYPE.YEAR,
    )
)
DATETIME = DBAPITypeObject((FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP, FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE, FIELD_TYPE.TIME))
DATE = DBAPITypeObject((FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE))
TIME = DBAPITypeObject((FIELD_TYPE.TIME,))
TIMESTAMP = DBAPITypeObject((FIELD_TYPE.TIMESTAMP, FIELD_TYPE.DATETIME))
ROWID = DBAPITypeObject()

Date = datetime.date
Time = datetime.time
Timestamp = datetime.datetime
Binary = bytes


def DateFromTicks(ticks: float) -> datetime.date:  # noqa: N802 - PEP 249 name
    return datetime.date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> datetime.time:  # noqa: N802 - PEP 249 name
    return datetime.time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> datetime.datetime:  # noqa: N802 - PEP 249 name
    return datetime.datetime(*time.localtime(ticks)[:6])


__all__ = [
    "BINARY", "DATE", "DATETIME", "NUMBER", "ROWID", "STRING", "TIME", "TIMESTAMP", "Binary", "DBAPITypeObject",
    "Date", "DateFromTicks", "Time", "TimeFromTicks", "Timestamp", "TimestampFromTicks",
]
