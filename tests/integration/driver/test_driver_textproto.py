"""The driver's response reader gives exactly what PyMySQL gives, for every column type."""
import datetime
import decimal

import pytest

from mdriver import err
from mdriver.pool import Pool
from mdriver.config.model import DataSource

TYPES = """
CREATE TABLE app.drv_types (
  i INT, bu BIGINT UNSIGNED, ti TINYINT, d DECIMAL(30,10), f FLOAT, db DOUBLE, bt BIT(10), y YEAR,
  dt DATE, dtm DATETIME(6), tm TIME(3), ts TIMESTAMP NULL,
  c CHAR(5), vc VARCHAR(300), bn BINARY(4), vb VARBINARY(20), bl BLOB, tx TEXT, lt LONGTEXT,
  j JSON, e ENUM('a','b'), s SET('x','y'), lat VARCHAR(10) CHARACTER SET latin1, n INT
) DEFAULT CHARSET=utf8mb4
"""
ROW = (
    -7, 2**64 - 1, 127, decimal.Decimal("-12345678901234567890.0123456789"), 1.5, -2.25e300, b"\x02\x01", 2024,
    datetime.date(2024, 2, 29), datetime.datetime(2024, 1, 2, 3, 4, 5, 678901), datetime.timedelta(hours=-1, seconds=1, microseconds=500000),
    datetime.datetime(2020, 5, 6, 7, 8, 9), "ab", "ünï 😀 " + "x" * 280, b"\x00\x01\x02\x03", b"\xff\x00", b"\x00" * 300, "text ☃",
    "L" * 70000, '{"k": [1, 2, "ü"]}', "b", "x,y", "café", None,
)


@pytest.fixture
def conns(mariadb_cluster):
    inst = mariadb_cluster.instances["ds0"]
    plain = inst.connect()
    with plain.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS app.drv_types")
        cur.execute(TYPES)
        cur.execute("INSERT INTO app.drv_types VALUES (" + ", ".join(["%s"] * len(ROW)) + ")", ROW)
        cur.execute("INSERT INTO app.drv_types (n) VALUES (1)")
    pool = Pool(DataSource("ds0", inst.host, inst.port, "root", ""))
    backend = pool.acquire()
    yield plain, backend
    pool.release(backend)
    pool.close()
    with plain.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS app.drv_types")
    plain.close()


@pytest.mark.parametrize("sql", [
    "SELECT * FROM app.drv_types ORDER BY n",
    "SELECT i + 1, CONCAT(vc, 'z'), d * 2, NULL, JSON_OBJECT('a', 1), 1.5e3, -0.0, x'00ff' FROM app.drv_types",
    "SELECT COUNT(*), SUM(bu), MAX(dtm), GROUP_CONCAT(c) FROM app.drv_types",
    "SELECT * FROM app.drv_types WHERE 1 = 0",
])
def test_same_rows_and_description_as_pymysql(conns, sql):
    plain, backend = conns
    with plain.cursor() as cur:
        cur.execute(sql)
        expected_rows, expected_desc = cur.fetchall(), cur.description
    for _ in range(2):  # the second time, column metadata comes from the cache
        res = backend.query(sql)
        assert res.rows == expected_rows
        assert res.description == expected_desc
        assert [c.name for c in res.columns] == [d[0] for d in expected_desc]


def test_ok_packets_errors_and_database_switch(conns):
    plain, backend = conns
    res = backend.query("UPDATE app.drv_types SET i = i WHERE n IS NULL")
    assert (res.rows, res.description, res.affected_rows) == (None, None, 0)
    res = backend.query("INSERT INTO app.drv_types (n) VALUES (2), (3)")
    assert res.affected_rows == 2
    with pytest.raises(err.ProgrammingError) as info:
        backend.query("SELECT nope FROM app.drv_types")
    assert info.value.args[0] == 1054 and info.value.sqlstate == "42S22"
    assert backend.query("SELECT DATABASE()", "app_05").rows == (("app_05",),)
    with pytest.raises(err.ProgrammingError) as info:
        backend.query("SELECT 1", "no_such_db")
    assert info.value.args[0] == 1049
    assert backend.query("SELECT DATABASE()").rows == (("app_05",),)  # a failed switch keeps the old database
    assert not backend.broken
    backend.ping()


def test_multi_packet_values(make_mariadb):
    inst = make_mariadb("bigpackets", max_allowed_packet="64M")
    pool = Pool(DataSource("big", inst.host, inst.port, "root", ""))
    try:
        backend = pool.acquire()
        size = 17 * 1024 * 1024  # one row larger than a 16 MB protocol packet
        res = backend.query(f"SELECT REPEAT('a', {size}) AS big, 7 AS after")
        assert len(res.rows[0][0]) == size and res.rows[0][1] == 7
        assert backend.query("SELECT 1").rows == ((1,),)
        pool.release(backend)
    finally:
        pool.close()


def test_killed_query_marks_the_connection_broken(conns, mariadb_cluster):
    _, backend = conns
    admin = mariadb_cluster.connect("ds0")
    admin.cursor().execute(f"KILL {backend.raw.thread_id()}")
    admin.close()
    with pytest.raises(err.OperationalError) as info:
        backend.query("SELECT 1")
    assert backend.broken and "ds0" in str(info.value)
