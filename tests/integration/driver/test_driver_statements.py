"""Routed statements through the driver on the real 32 x 32 layout."""
import pytest

import mdriver
from mdriver.sharding import locate

from driver_helpers import direct_rows

UIDS = [5, 517, 1029, 2000, 123456, 999999]  # slots 5, 517, 5, 976, 576, 575: both datasources, one slot twice


@pytest.fixture
def relations(mariadb_cluster):
    mariadb_cluster.truncate("app", "user_relation", reference=False)
    yield
    mariadb_cluster.truncate("app", "user_relation", reference=False)


def insert_rows(cur):
    for i, uid in enumerate(UIDS):
        cur.execute(
            "INSERT INTO user_relation (id, uid, target_uid, remark) VALUES (%s, %s, %s, %s)",
            (1000 + i, uid, uid * 2, f"r{i}"),
        )
        assert cur.rowcount == 1


def test_inserts_land_in_the_right_physical_table(mariadb_cluster, connect, relations):
    conn = connect(autocommit=True)
    insert_rows(conn.cursor())
    schema = mariadb_cluster.config.schemas["app"]
    rule = schema.tables["user_relation"]
    for i, uid in enumerate(UIDS):
        loc = locate(schema, rule, uid)
        rows = direct_rows(mariadb_cluster, loc.datasource, f"SELECT id, remark FROM `{loc.database}`.`{loc.table}` WHERE uid = %s", (uid,))
        assert rows == ((1000 + i, f"r{i}"),)


def test_point_select_and_scatter_merge(connect, relations):
    conn = connect(autocommit=True)
    cur = conn.cursor()
    insert_rows(cur)
    cur.execute("SELECT id, uid, target_uid FROM user_relation WHERE uid = %s", (517,))
    assert cur.fetchall() == ((1001, 517, 1034),)
    assert cur.rowcount == 1
    assert [d[0] for d in cur.description] == ["id", "uid", "target_uid"]
    assert cur.description[0][1] == mdriver.NUMBER
    cur.execute("SELECT COUNT(*) FROM user_relation")
    assert cur.fetchone()[0] == len(UIDS)
    cur.execute("SELECT uid FROM user_relation ORDER BY uid DESC LIMIT 2")
    assert [r[0] for r in cur.fetchall()] == [999999, 123456]
    cur.execute("SELECT uid, remark FROM user_relation WHERE uid IN %s ORDER BY uid", ([5, 1029, 999999],))
    assert [tuple(r) for r in cur.fetchall()] == [(5, "r0"), (1029, "r2"), (999999, "r5")]


def test_update_delete_rowcount(connect, relations):
    conn = connect(autocommit=True)
    cur = conn.cursor()
    insert_rows(cur)
    assert cur.execute("UPDATE user_relation SET remark = %s WHERE uid = %s", ("x", 5)) == 1
    assert cur.execute("UPDATE user_relation SET remark = %s WHERE uid = %s", ("x", 5)) == 0  # unchanged rows
    assert cur.execute("DELETE FROM user_relation WHERE uid = %s AND id = %s", (1029, 1002)) == 1
    cur.execute("SELECT COUNT(*) FROM user_relation WHERE uid = %s", (5,))
    assert cur.fetchone() == (1,)


def test_dict_cursor_on_sharded_table(connect, relations):
    conn = connect(autocommit=True, cursorclass=mdriver.DictCursor)
    cur = conn.cursor()
    insert_rows(cur)
    cur.execute("SELECT uid, remark FROM user_relation WHERE uid = %(uid)s", {"uid": 2000})
    assert cur.fetchall() == [{"uid": 2000, "remark": "r3"}]


def test_server_errors_keep_pymysql_classes_and_errnos(connect, relations):
    conn = connect(autocommit=True)
    cur = conn.cursor()
    insert_rows(cur)
    with pytest.raises(mdriver.IntegrityError) as info:
        cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (%s, %s, %s)", (1000, 5, 1))
    assert info.value.args[0] == 1062
    with pytest.raises(mdriver.ProgrammingError) as info:
        cur.execute("SELECT nope FROM user_relation WHERE uid = %s", (5,))
    assert info.value.args[0] == 1054
    # The connection is still fine afterwards.
    cur.execute("SELECT COUNT(*) FROM user_relation WHERE uid = %s", (5,))
    assert cur.fetchone() == (1,)


def test_refusals_are_precise(connect):
    conn = connect(autocommit=True)
    cur = conn.cursor()
    with pytest.raises(mdriver.NotSupportedError) as info:
        cur.execute("UPDATE user_relation SET uid = 7 WHERE uid = %s", (5,))
    assert info.value.args[0] == 1235
    with pytest.raises(mdriver.NotSupportedError, match="multiple statements"):
        cur.execute("SELECT 1; SELECT 2")
    with pytest.raises(mdriver.NotSupportedError, match="session variables"):
        cur.execute("SET SESSION sql_mode = 'ANSI'")
    with pytest.raises(mdriver.NotSupportedError, match="XA statements"):
        cur.execute("XA RECOVER")
    with pytest.raises(mdriver.NotSupportedError, match="savepoints"):
        cur.execute("SAVEPOINT a")
    with pytest.raises(mdriver.NotSupportedError, match="LOCK TABLES"):
        cur.execute("LOCK TABLES user_relation WRITE")
    with pytest.raises(mdriver.ProgrammingError) as info:
        cur.execute("USE no_such_schema")
    assert info.value.args[0] == 1049


def test_unknown_schema_at_connect(mariadb_cluster):
    with pytest.raises(mdriver.ProgrammingError) as info:
        mdriver.connect(config=mariadb_cluster.config_path, schema="nope")
    assert info.value.args[0] == 1049 and "app" in info.value.args[1]


def test_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ndatasources: {}\nschemas: {}\n")
    with pytest.raises(mdriver.InterfaceError, match="datasources"):
        mdriver.connect(config=str(bad))
    with pytest.raises(mdriver.InterfaceError, match="cannot read config"):
        mdriver.connect(config=str(tmp_path / "missing.yaml"))
    with pytest.raises(TypeError, match="unexpected keyword"):
        mdriver.connect(config=str(bad), hostname="x")


def test_session_statements(connect, relations):
    conn = connect(autocommit=True)
    cur = conn.cursor()
    cur.execute("SET autocommit = 0")
    assert not conn.autocommit and conn.get_autocommit() is False
    cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (1, 5, 6)")
    assert conn.in_transaction
    cur.execute("ROLLBACK")
    assert not conn.in_transaction
    cur.execute("BEGIN")
    cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (2, 5, 6)")
    cur.execute("COMMIT")
    cur.execute("SET NAMES utf8mb4")
    conn.autocommit(True)
    assert conn.autocommit == True  # noqa: E712 - PyMySQL's method and a property at once
    conn.autocommit = False
    assert not conn.autocommit
    cur.execute("SELECT id FROM user_relation WHERE uid = 5")
    assert cur.fetchall() == ((2,),)
    with pytest.raises(mdriver.NotSupportedError, match="latin1"):
        cur.execute("SET NAMES latin1")


def test_unsharded_auto_increment_lastrowid(connect):
    conn = connect(autocommit=True)
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS drv_autoinc")
    cur.execute("CREATE TABLE drv_autoinc (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(10))")
    try:
        cur.execute("INSERT INTO drv_autoinc (v) VALUES (%s)", ("a",))
        first = cur.lastrowid
        cur.execute("INSERT INTO drv_autoinc (v) VALUES (%s)", ("b",))
        assert cur.lastrowid == first + 1 and conn.insert_id() == first + 1
    finally:
        cur.execute("DROP TABLE drv_autoinc")


def test_broadcast_write_goes_to_every_copy_atomically(mariadb_cluster, connect):
    conn = connect(autocommit=True)
    cur = conn.cursor()
    mariadb_cluster.truncate("app", "region", reference=False)
    try:
        cur.execute("INSERT INTO region (region_id, name) VALUES (%s, %s)", (1, "north"))
        assert direct_rows(mariadb_cluster, "ds0", "SELECT name FROM app.region") == (("north",),)
        assert direct_rows(mariadb_cluster, "ds1", "SELECT name FROM app_31.region") == (("north",),)
        # A copy that already holds id 2 makes the whole statement fail, and no copy keeps it.
        direct = mariadb_cluster.connect("ds1", "app_20")
        direct.cursor().execute("INSERT INTO region VALUES (2, 'pre')")
        direct.close()
        with pytest.raises(mdriver.IntegrityError):
            cur.execute("INSERT INTO region (region_id, name) VALUES (%s, %s)", (2, "south"))
        assert direct_rows(mariadb_cluster, "ds0", "SELECT COUNT(*) FROM app_03.region WHERE region_id = 2") == ((0,),)
        assert direct_rows(mariadb_cluster, "ds1", "SELECT name FROM app_20.region WHERE region_id = 2") == (("pre",),)
        cur.execute("SELECT name FROM region WHERE region_id = 1")
        assert cur.fetchall() == (("north",),)
    finally:
        mariadb_cluster.truncate("app", "region", reference=False)


def test_connection_context_manager_commits(connect, mariadb_cluster, relations):
    conn = connect()
    with conn:
        conn.cursor().execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (9, 600, 1)")
    assert not conn.open
    other = connect(autocommit=True)
    cur = other.cursor()
    cur.execute("SELECT id FROM user_relation WHERE uid = 600")
    assert cur.fetchall() == ((9,),)


def test_mogrify_and_escape_like_pymysql(connect):
    import pymysql.converters

    conn = connect()
    cur = conn.cursor()
    value = "it's \\ \"q\" \n"
    assert cur.mogrify("SELECT %s, %s", (value, None)) == "SELECT " + pymysql.converters.escape_string(value).join("''") + ", NULL"
    assert conn.escape(b"\x00\x01") == "X'0001'"
