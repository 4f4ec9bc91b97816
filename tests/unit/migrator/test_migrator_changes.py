"""Decoded binlog rows -> RowChange values, and DDL detection."""
import datetime

import pytest

from migrator.changes import DELETE, INSERT, UPDATE, ddl_touches, from_rows_event, normalize_row
from migrator.errors import StaleDecodeError
from migrator.sql import ZERO_DATETIME
from migrator.state import Position
from migrator.table import Column, TableInfo

INFO = TableInfo("legacy", "t", (
    Column("id", "int", nullable=False),
    Column("k", "varbinary"),
    Column("bt", "bit"),
    Column("st", "set"),
    Column("ts", "timestamp"),
    Column("yr", "year"),
    Column("dd", "date"),
    Column("e", "varchar", charset="utf8mb4"),
), ("id",))


def test_values_the_decoder_gets_wrong_are_fixed():
    names, values = normalize_row(
        {"id": 1, "k": "", "bt": "101010101010", "st": {"z", "x"}, "ts": datetime.datetime(1970, 1, 1), "yr": 1900,
         "dd": datetime.date(2024, 1, 2), "e": "😀"},
        {}, INFO, "here")
    assert names == ("id", "k", "bt", "st", "ts", "yr", "dd", "e")
    assert values == (1, b"", 0b101010101010, "x,z", ZERO_DATETIME, 0, datetime.date(2024, 1, 2), "😀")


@pytest.mark.parametrize("decoded, truth", [
    ("-00:00:01.750000", "-00:00:01.250000"),
    ("-838:59:59.001000", "-838:59:59.999000"),
    ("-00:00:00.999999", "-00:00:00.000001"),
    ("-00:00:00.500000", "-00:00:00.500000"),
    ("-01:00:00", "-01:00:00"),
])
def test_negative_times_with_fractions_are_corrected(decoded, truth):
    def td(text):
        sign = -1 if text.startswith("-") else 1
        h, m, s = text.lstrip("-").split(":")
        return sign * datetime.timedelta(hours=int(h), minutes=int(m), seconds=float(s))
    info = TableInfo("d", "t", (Column("tm", "time"),), ())
    assert normalize_row({"tm": td(decoded)}, {}, info, "here")[1] == (td(truth),)


def test_null_and_empty_set_are_told_apart():
    _, values = normalize_row({"id": 2, "st": None, "e": None}, {"st": "empty set", "e": "null"}, INFO, "here")
    assert values == (2, "", None)


def test_zero_dates_refuse_rather_than_become_null():
    with pytest.raises(StaleDecodeError) as e:
        normalize_row({"id": 3, "dd": None}, {"dd": "out of date range"}, INFO, "legacy.t at mysql-bin.000001:4")
    assert "zero or partial date" in str(e.value) and "dd" in str(e.value)
    assert e.value.hint


def test_minimal_row_image_is_refused():
    with pytest.raises(StaleDecodeError) as e:
        normalize_row({"id": 3, "e": None}, {"e": "cols bitmap"}, INFO, "here")
    assert "binlog_row_image=FULL" in e.value.hint


def test_rows_event_kinds():
    pos = Position("mysql-bin.000001", 100)
    ins = from_rows_event(INSERT, "legacy", "t", [{"values": {"id": 1}, "none_sources": {}}], INFO, pos)
    upd = from_rows_event(UPDATE, "legacy", "t", [{"before_values": {"id": 1}, "after_values": {"id": 2},
                                                   "before_none_sources": {}, "after_none_sources": {}}], INFO, pos)
    dele = from_rows_event(DELETE, "legacy", "t", [{"values": {"id": 2}, "none_sources": {}}], INFO, pos)
    assert (ins[0].kind, ins[0].before, ins[0].after) == (INSERT, None, (1,))
    assert (upd[0].kind, upd[0].before, upd[0].after) == (UPDATE, (1,), (2,))
    assert (dele[0].kind, dele[0].before, dele[0].after) == (DELETE, (2,), None)


@pytest.mark.parametrize("query, schema, expected", [
    ("ALTER TABLE legacy.t ADD COLUMN x INT", "", True),
    ("ALTER TABLE `legacy`.`t` ADD COLUMN x INT", "other", True),
    ("alter table t add index (e)", "legacy", True),
    ("ALTER TABLE t ADD COLUMN x INT", "other", False),
    ("ALTER TABLE legacy.t2 ADD COLUMN x INT", "legacy", False),
    ("TRUNCATE TABLE legacy.t", "", True),
    ("TRUNCATE t", "legacy", True),
    ("DROP TABLE IF EXISTS a, legacy.t", "", True),
    ("RENAME TABLE legacy.t TO legacy.t_old, legacy.t_new TO legacy.t", "", True),
    ("CREATE TABLE legacy.copy LIKE legacy.t", "", False),
    ("CREATE OR REPLACE TABLE legacy.t (id INT PRIMARY KEY)", "", True),
    ("CREATE INDEX ix ON legacy.t (e)", "", True),
    ("DROP DATABASE legacy", "", True),
    ("DROP DATABASE other", "", False),
    ("BEGIN", "legacy", False),
    ("COMMIT", "legacy", False),
    ("OPTIMIZE TABLE legacy.t", "", False),
    ("/* comment */ ALTER TABLE legacy.t ENGINE=InnoDB", "", True),
    ("GRANT SELECT ON legacy.t TO 'u'@'%'", "", False),
])
def test_ddl_detection(query, schema, expected):
    assert ddl_touches(query, schema, "legacy", "t") is expected
