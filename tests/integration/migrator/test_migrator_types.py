"""Every type survives copy and stream, byte for byte, into shard tables that plan creates from the source DDL."""
import datetime
import json
from decimal import Decimal

import pytest

from migrator_harness import Harness

DDL = """CREATE TABLE {name} (
  id INT NOT NULL,
  k VARBINARY(16) NOT NULL,
  uid BIGINT NOT NULL,
  u BIGINT UNSIGNED NULL,
  ti TINYINT NULL,
  si SMALLINT UNSIGNED NULL,
  mi MEDIUMINT NULL,
  d DECIMAL(30,10) NULL,
  dt DATETIME(6) NULL,
  ts TIMESTAMP(6) NULL DEFAULT NULL,
  j JSON NULL,
  b BLOB NULL,
  e VARCHAR(64) CHARACTER SET utf8mb4 NULL,
  l VARCHAR(64) CHARACTER SET latin1 NULL,
  lt TEXT CHARACTER SET latin1 NULL,
  en ENUM('small','medium','large') NULL,
  st SET('red','green','blue') NULL,
  bt BIT(12) NULL,
  bt64 BIT(64) NULL,
  f FLOAT NULL,
  db DOUBLE NULL,
  tm TIME(3) NULL,
  yr YEAR NULL,
  dd DATE NULL,
  g BIGINT AS (uid DIV 2) STORED,
  vg VARCHAR(80) AS (CONCAT(IFNULL(e, ''), '!')) VIRTUAL,
  PRIMARY KEY (id, k)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""

COLUMNS = ["id", "k", "uid", "u", "ti", "si", "mi", "d", "dt", "ts", "j", "b", "e", "l", "lt", "en", "st", "bt", "bt64",
           "f", "db", "tm", "yr", "dd"]
GENERATED = ["g", "vg"]  # computed on each server: never written by the migrator, compared all the same
ALL_BYTES = bytes(range(256))

ROWS = [
    (1, b"\x00\xff'\\", -1, 18446744073709551615, -128, 65535, -8388608, Decimal("-99999999999999999999.9999999999"),
     datetime.datetime(1000, 1, 1, 0, 0, 0, 1), datetime.datetime(2038, 1, 19, 3, 14, 7, 999999),
     json.dumps({"emoji": "😀", "n": [1, 2.5, None], "s": "é\\\"'"}), ALL_BYTES, "😀 emoji ✓ 'q' \\ \"", "café € Ÿ",
     "naïve façade œuvre", "large", "red,blue", 0b111111111111, 2**64 - 1, 1 / 3, 0.1 + 0.2, "838:59:59.999", 2155,
     datetime.date(9999, 12, 31)),
    (2, b"", 9223372036854775807, 0, 127, 0, 8388607, Decimal("0.0000000001"), datetime.datetime(9999, 12, 31, 23, 59, 59),
     datetime.datetime(1970, 1, 1, 0, 0, 1), "[]", b"", "", "", "", "small", "", 0, 0, -3.4e38, 1.7976931348623157e308,
     "-838:59:59.999", 1901, datetime.date(1000, 1, 1)),
    (3, b"nulls", 42) + (None,) * 21,
    (4, b"\x5c", -9223372036854775808, 1, -1, 1, -1, Decimal("12345678901234567890.0123456789"),
     datetime.datetime(2024, 2, 29, 12, 0), datetime.datetime(2024, 2, 29, 12, 0, 0, 500000), '{"a": {"b": [true, false]}}',
     b"\x00", "Ω≈ç√∫˜µ≤≥÷", "ÿþ", "tab\tnewline\n", "medium", "green", 1, 1, 3.4e38, -2.2250738585072014e-308,
     "-12:30:00.125", 0, datetime.date(2024, 2, 29)),
]

# Changes streamed from the binlog after the copy: new rows, every column updated, a delete, a shard move.
STREAMED_INSERTS = [(100 + r[0],) + r[1:] for r in ROWS]
UPDATE_ALL = ("UPDATE {t} SET u = 123, ti = 5, si = 6, mi = 7, d = 3.1415926535, dt = '2001-02-03 04:05:06.070809', "
              "ts = '2001-02-03 04:05:06.000001', j = '{{\"x\": \"ü\"}}', b = x'DEADBEEF00', e = '🎉 party', "
              "l = 'Ärger', lt = '€uro', en = 'small', st = 'red,green,blue', bt = b'101', bt64 = 1, f = 0.5, "
              "db = 2.5e-300, tm = '01:02:03.004', yr = 1999, dd = '1999-12-31' WHERE id = {id}")


def _compare_exact(h: Harness) -> dict:
    """Every column compared as its exact bytes (hex), numbers as text, floats as their double value."""
    return h.compare(", ".join(_exprs()), shard_key_index=1)


def _exprs() -> list:
    exprs = []
    for c in COLUMNS[1:] + GENERATED:
        if c == "uid":
            exprs.append(c)
        elif c == "f":
            exprs.append(f"CAST(CAST({c} AS DOUBLE) AS CHAR(64))")
        elif c in ("bt", "bt64"):
            exprs.append(f"{c} + 0")
        elif c in ("k", "j", "b", "e", "l", "lt", "en", "st", "vg"):
            exprs.append(f"HEX({c})")
        else:
            exprs.append(f"CAST({c} AS CHAR(64))")  # a declared length: UNION ALL would cut DOUBLE's text at 22
    return exprs


@pytest.fixture
def types_harness(mariadb_cluster, tmp_path):
    rule = {"shard_key": "uid", "algorithm": "hash", "databases": 32, "tables_per_database": 32,
            "placement": {"ds0": "0-15", "ds1": "16-31"}}
    h = Harness(mariadb_cluster, tmp_path, table="type_matrix", extra_tables={"type_matrix": rule})
    h.cleanup(drop_shards=True)
    h.create_source(DDL)
    try:
        yield h
    finally:
        h.cleanup(drop_shards=True)


def _insert(h: Harness, rows) -> None:
    conn = h.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.executemany(f"INSERT INTO app.type_matrix ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})",
                            rows)
    finally:
        conn.close()


def test_every_type_survives_copy_and_stream(types_harness):
    h = types_harness
    _insert(h, ROWS)
    plan = h.cli("plan", h.logical)
    assert "512 tables, 512 created" in plan.stdout, plan.stdout
    source_ddl = h.connect().cursor()
    source_ddl.execute("SHOW CREATE TABLE app.type_matrix")
    shard = h.connect("ds1").cursor()
    shard.execute("SHOW CREATE TABLE app_31.type_matrix_1023")
    assert shard.fetchone()[1].split("(", 1)[1] == source_ddl.fetchone()[1].split("(", 1)[1]

    p = h.start()
    h.wait(lambda: h.phase() == "streaming", 60, "the streaming phase", p)
    _insert(h, STREAMED_INSERTS)
    h.source_sql(*(UPDATE_ALL.format(t="app.type_matrix", id=i) for i in (2, 3, 101, 103)),
                 "UPDATE app.type_matrix SET uid = uid + 1000003 WHERE id IN (1, 104)",  # moves between shards
                 "UPDATE app.type_matrix SET k = x'0102' WHERE id = 4",  # primary key change
                 "DELETE FROM app.type_matrix WHERE id = 102",
                 "UPDATE app.type_matrix SET st = '', e = NULL, b = NULL WHERE id = 100")
    h.caught_up(p)
    check = _compare_exact(h)
    assert check["bad"] == 0 and check["rows"] == 7, check
    verify = h.cli("verify", h.logical)
    assert "ok: source and shards are identical" in verify.stdout
    assert h.stop(p) == 0
