"""PEP 249 type objects and constructors."""
import datetime
import time

from pymysql.constants import FIELD_TYPE

import mdriver
from mdriver import types


def test_type_objects_compare_with_type_codes():
    assert types.NUMBER == FIELD_TYPE.LONGLONG
    assert FIELD_TYPE.NEWDECIMAL == types.NUMBER
    assert types.STRING == FIELD_TYPE.VAR_STRING
    assert types.STRING != FIELD_TYPE.LONG
    assert types.DATETIME == FIELD_TYPE.DATETIME
    assert types.BINARY == FIELD_TYPE.BLOB
    assert types.ROWID != FIELD_TYPE.LONG


def test_constructors():
    ticks = time.mktime((2024, 3, 4, 5, 6, 7, 0, 0, -1))
    assert types.DateFromTicks(ticks) == datetime.date(2024, 3, 4)
    assert types.TimeFromTicks(ticks) == datetime.time(5, 6, 7)
    assert types.TimestampFromTicks(ticks) == datetime.datetime(2024, 3, 4, 5, 6, 7)
    assert types.Binary(b"\x00a") == b"\x00a"
    assert mdriver.Date(2020, 1, 2) == datetime.date(2020, 1, 2)
