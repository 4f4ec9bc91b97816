"""PEP 249 compliance, written from the specification (in the manner of the classic dbapi20 suite).

The tables live in the schema's home database (unsharded), so these tests
check the DB-API surface itself; routed behaviour has its own tests.
"""
import datetime
import decimal

import pytest

import mdriver

TABLE_PREFIX = "dbapi20test_"
BOOZE = f"{TABLE_PREFIX}booze"
BARFLYS = f"{TABLE_PREFIX}barflys"
DDL_BOOZE = f"CREATE TABLE {BOOZE} (name VARCHAR(20))"
DDL_BARFLYS = f"CREATE TABLE {BARFLYS} (name VARCHAR(20), drink VARCHAR(30))"
SAMPLES = ["Carlton Cold", "Carlton Draft", "Mountain Goat", "Redback", "Victoria Bitter", "XXXX"]


@pytest.fixture
def con(connect):
    conn = connect()
    yield conn
    conn.close()  # an open transaction would hold metadata locks on the tables
    cleanup = connect(autocommit=True)
    cur = cleanup.cursor()
    for table in (BOOZE, BARFLYS):
        cur.execute(f"DROP TABLE IF EXISTS {table}")


def populate(cur):
    for s in SAMPLES:
        cur.execute(f"INSERT INTO {BOOZE} VALUES ('{s}')")


# -- module ------------------------------------------------------------------------

def test_module_globals():
    assert mdriver.apilevel == "2.0"
    assert mdriver.threadsafety in (0, 1, 2, 3)
    assert mdriver.paramstyle in ("qmark", "numeric", "named", "format", "pyformat")


def test_exception_hierarchy():
    assert issubclass(mdriver.Warning, Exception)
    assert issubclass(mdriver.Error, Exception)
    for name in ("InterfaceError", "DatabaseError"):
        assert issubclass(getattr(mdriver, name), mdriver.Error)
    for name in ("DataError", "OperationalError", "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError"):
        assert issubclass(getattr(mdriver, name), mdriver.DatabaseError)


def test_exceptions_as_connection_attributes(con):
    for name in ("Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
                 "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError"):
        assert getattr(con, name) is getattr(mdriver, name)


# -- connection ---------------------------------------------------------------------

def test_commit_and_rollback_without_transaction(con):
    con.commit()
    con.rollback()


def test_cursor_and_isolation(con):
    cur1, cur2 = con.cursor(), con.cursor()
    cur1.execute(DDL_BOOZE)
    cur1.execute(f"INSERT INTO {BOOZE} VALUES ('Victoria Bitter')")
    cur2.execute(f"SELECT name FROM {BOOZE}")
    assert len(cur2.fetchall()) == 1


def test_close_connection(connect):
    con = connect()
    cur = con.cursor()
    con.close()
    with pytest.raises(mdriver.Error):
        cur.execute("SELECT 1")
    with pytest.raises(mdriver.Error):
        con.commit()
    with pytest.raises(mdriver.Error):
        con.cursor()
    con.close()  # closing twice is harmless


# -- cursor -------------------------------------------------------------------------

def test_description(con):
    cur = con.cursor()
    cur.execute(DDL_BOOZE)
    assert cur.description is None
    cur.execute(f"SELECT name FROM {BOOZE}")
    assert len(cur.description) == 1
    assert cur.description[0][0].lower() == "name"
    assert len(cur.description[0]) == 7
    assert cur.description[0][1] == mdriver.STRING
    cur.execute(DDL_BARFLYS)
    assert cur.description is None


def test_rowcount(con):
    cur = con.cursor()
    cur.execute(DDL_BOOZE)
    assert cur.rowcount in (-1, 0)
    cur.execute(f"INSERT INTO {BOOZE} VALUES ('Victoria Bitter')")
    assert cur.rowcount in (-1, 1)
    cur.execute(f"SELECT name FROM {BOOZE}")
    assert cur.rowcount in (-1, 1)
    cur.execute(DDL_BARFLYS)
    assert cur.rowcount in (-1, 0)


def test_close_cursor(con):
    cur = con.cursor()
    cur.close()
    with pytest.raises(mdriver.Error):
        cur.execute(f"SELECT 1")


def test_execute_pyformat_positional_and_named(con):
    cur = con.cursor()
    cur.execute(DDL_BOOZE)
    cur.execute(f"INSERT INTO {BOOZE} VALUES ('Cooper''s')")
    assert cur.rowcount in (-1, 1)
    cur.execute(f"INSERT INTO {BOOZE} VALUES (%s)", ("Victoria Bitter",))
    cur.execute(f"INSERT INTO {BOOZE} VALUES (%(beer)s)", {"beer": "It's 100%"})
    cur.execute(f"SELECT name FROM {BOOZE} WHERE name LIKE %s ORDER BY name", ("%i%",))
    assert [r[0] for r in cur.fetchall()] == ["It's 100%", "Victoria Bitter"]
    cur.execute(f"SELECT name FROM {BOOZE} ORDER BY name")
    assert [r[0] for r in cur.fetchall()] == ["Cooper's", "It's 100%", "Victoria Bitter"]


def test_executemany(con):
    cur = con.cursor()
    cur.execute(DDL_BOOZE)
    cur.executemany(f"INSERT INTO {BOOZE} VALUES (%s)", [("Cooper's",), ("Boag's",)])
    assert cur.rowcount in (-1, 2)
    cur.executemany(f"INSERT INTO {BOOZE} VALUES (%(beer)s)", [{"beer": "A"}, {"beer": "B"}])
    assert cur.rowcount in (-1, 2)
    cur.execute(f"SELECT name FROM {BOOZE} ORDER BY name")
    assert [r[0] for r in cur.fetchall()] == ["A", "B", "Boag's", "Cooper's"]


def test_fetchone(con):
    cur = con.cursor()
    with pytest.raises(mdriver.Error):
        cur.fetchone()  # nothing executed yet
    cur.execute(DDL_BOOZE)
    with pytest.raises(mdriver.Error):
        cur.fetchone()  # DDL has no result set
    cur.execute(f"SELECT name FROM {BOOZE}")
    assert cur.fetchone() is None
    assert cur.rowcount in (-1, 0)
    cur.execute(f"INSERT INTO {BOOZE} VALUES ('Victoria Bitter')")
    with pytest.raises(mdriver.Error):
        cur.fetchone()  # INSERT has no result set
    cur.execute(f"SELECT name FROM {BOOZE}")
    assert cur.fetchone() == ("Victoria Bitter",)
    assert cur.fetchone() is None


def test_fetchmany(con):
    cur = con.cursor()
    with pytest.raises(mdriver.Error):
        cur.fetchmany(4)
    cur.execute(DDL_BOOZE)
    populate(cur)
    cur.execute(f"SELECT name FROM {BOOZE}")
    assert len(cur.fetchmany()) == 1  # arraysize defaults to 1
    cur.arraysize = 10
    assert len(cur.fetchmany(3)) == 3
    assert len(cur.fetchmany(4)) == 2
    assert cur.fetchmany(4) == []
    cur.arraysize = 4
    cur.execute(f"SELECT name FROM {BOOZE}")
    assert len(cur.fetchmany()) == 4
    assert len(cur.fetchmany()) == 2
    assert cur.fetchmany() == []
    cur.arraysize = 6
    cur.execute(f"SELECT name FROM {BOOZE}")
    rows = sorted(r[0] for r in cur.fetchmany())
    assert rows == SAMPLES
    cur.execute(DDL_BARFLYS)
    cur.execute(f"SELECT name FROM {BARFLYS}")
    assert cur.fetchmany() == []


def test_fetchall(con):
    cur = con.cursor()
    with pytest.raises(mdriver.Error):
        cur.fetchall()
    cur.execute(DDL_BOOZE)
    populate(cur)
    with pytest.raises(mdriver.Error):
        cur.fetchall()  # after INSERT
    cur.execute(f"SELECT name FROM {BOOZE}")
    rows = cur.fetchall()
    assert cur.rowcount in (-1, len(SAMPLES))
    assert sorted(r[0] for r in rows) == SAMPLES
    assert list(cur.fetchall()) == []
    cur.execute(DDL_BARFLYS)
    cur.execute(f"SELECT name FROM {BARFLYS}")
    assert list(cur.fetchall()) == []
    assert cur.rowcount in (-1, 0)


def test_mixed_fetch(con):
    cur = con.cursor()
    cur.execute(DDL_BOOZE)
    populate(cur)
    cur.execute(f"SELECT name FROM {BOOZE} ORDER BY name")
    one = cur.fetchone()
    two = cur.fetchmany(2)
    three = cur.fetchone()
    rest = cur.fetchall()
    names = [one[0]] + [r[0] for r in two] + [three[0]] + [r[0] for r in rest]
    assert names == SAMPLES


def test_iteration(con):
    cur = con.cursor()
    cur.execute(DDL_BOOZE)
    populate(cur)
    cur.execute(f"SELECT name FROM {BOOZE} ORDER BY name")
    assert [r[0] for r in cur] == SAMPLES


def test_nextset(con):
    cur = con.cursor()
    cur.execute(DDL_BOOZE)
    populate(cur)
    cur.execute(f"SELECT name FROM {BOOZE}")
    assert cur.nextset() is None


def test_arraysize_and_sizes(con):
    cur = con.cursor()
    assert cur.arraysize == 1
    cur.setinputsizes((25,))
    cur.setoutputsize(1000)
    cur.setoutputsize(2000, 0)


def test_none_round_trip(con):
    cur = con.cursor()
    cur.execute(DDL_BARFLYS)
    cur.execute(f"INSERT INTO {BARFLYS} VALUES ('a', NULL)")
    cur.execute(f"INSERT INTO {BARFLYS} VALUES (%s, %s)", ("b", None))
    cur.execute(f"SELECT drink FROM {BARFLYS}")
    assert [tuple(r) for r in cur.fetchall()] == [(None,), (None,)]


def test_callproc_is_not_supported(con):
    cur = con.cursor()
    with pytest.raises(mdriver.NotSupportedError, match="stored procedures"):
        cur.callproc("lower", ("FOO",))


def test_transactions_commit_and_rollback(con, connect):
    cur = con.cursor()
    cur.execute(DDL_BOOZE)
    cur.execute(f"INSERT INTO {BOOZE} VALUES ('a')")
    con.rollback()
    cur.execute(f"SELECT COUNT(*) FROM {BOOZE}")
    assert cur.fetchone()[0] == 0
    cur.execute(f"INSERT INTO {BOOZE} VALUES ('b')")
    other = connect()
    ocur = other.cursor()
    ocur.execute(f"SELECT COUNT(*) FROM {BOOZE}")
    assert ocur.fetchone()[0] == 0  # not committed yet
    con.commit()
    ocur.execute(f"SELECT COUNT(*) FROM {BOOZE}")
    assert ocur.fetchone()[0] == 1


def test_types_round_trip(con):
    cur = con.cursor()
    cur.execute(
        f"CREATE TABLE {BARFLYS} (d DATE, t TIME, ts DATETIME(6), b VARBINARY(10), n DECIMAL(10,2), i BIGINT, f DOUBLE)"
    )
    values = (
        mdriver.Date(2002, 12, 25), mdriver.Time(13, 45, 30), mdriver.Timestamp(2002, 12, 25, 13, 45, 30, 123456),
        mdriver.Binary(b"\x00\xffa'"), decimal.Decimal("12.34"), -(2**62), 1.5,
    )
    cur.execute(f"INSERT INTO {BARFLYS} VALUES (%s, %s, %s, %s, %s, %s, %s)", values)
    cur.execute(f"SELECT d, t, ts, b, n, i, f FROM {BARFLYS}")
    row = cur.fetchone()
    assert row[0] == datetime.date(2002, 12, 25)
    assert row[1] == datetime.timedelta(hours=13, minutes=45, seconds=30)  # MySQL TIME, as PyMySQL returns it
    assert row[2:] == values[2:]
    codes = [d[1] for d in cur.description]
    assert codes[0] == mdriver.DATETIME and codes[2] == mdriver.DATETIME
    assert codes[3] == mdriver.BINARY or codes[3] == mdriver.STRING
    assert codes[4] == mdriver.NUMBER and codes[5] == mdriver.NUMBER and codes[6] == mdriver.NUMBER


def test_dict_cursor(con):
    cur = con.cursor(mdriver.DictCursor)
    cur.execute(DDL_BARFLYS)
    cur.execute(f"INSERT INTO {BARFLYS} VALUES (%s, %s)", ("x", "y"))
    cur.execute(f"SELECT name, drink FROM {BARFLYS}")
    assert cur.fetchone() == {"name": "x", "drink": "y"}
    cur.execute(f"SELECT name, drink FROM {BARFLYS}")
    assert cur.fetchall() == [{"name": "x", "drink": "y"}]


def test_dict_cursor_repeated_names_are_qualified_as_pymysql(con):
    cur = con.cursor(mdriver.DictCursor)
    cur.execute(DDL_BOOZE)
    cur.execute(DDL_BARFLYS)
    cur.execute(f"INSERT INTO {BOOZE} VALUES ('b')")
    cur.execute(f"INSERT INTO {BARFLYS} VALUES ('b', 'd')")
    cur.execute(f"SELECT * FROM {BOOZE} JOIN {BARFLYS} USING (name)")
    assert cur.fetchall() == [{"name": "b", "drink": "d"}]
    cur.execute(f"SELECT {BOOZE}.name, {BARFLYS}.name FROM {BOOZE}, {BARFLYS}")
    assert cur.fetchall() == [{"name": "b", f"{BARFLYS}.name": "b"}]
