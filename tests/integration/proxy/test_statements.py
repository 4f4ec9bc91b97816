"""Statements through the proxy on the real 32 x 32 layout, checked against the physical tables and app_ref."""
from __future__ import annotations

import decimal
import time

import pymysql
import pytest

from mdriver.sharding import locate

ROWS = [(i, uid, uid + 1, i % 3, f"r{i}", decimal.Decimal(f"{i}.25")) for i, uid in enumerate(
    [1, 2, 31, 32, 33, 511, 512, 513, 600, 1023, 1024, 1025, 4096, 70000, 123456789], start=1)]


@pytest.fixture
def clean(mariadb_cluster):
    for table in ("user_relation", "user_fans"):
        mariadb_cluster.truncate("app", table)
    yield


@pytest.fixture
def conn(proxy, clean):
    c = proxy.connect(autocommit=True)
    yield c
    c.close()


def q(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def insert_rows(conn, rows=ROWS):
    with conn.cursor() as cur:
        for row in rows:
            cur.execute("INSERT INTO user_relation (id, uid, target_uid, relation_type, remark, score) VALUES (%s, %s, %s, %s, %s, %s)", row)


def test_rows_land_in_their_physical_tables(conn, mariadb_cluster):
    insert_rows(conn)
    schema = mariadb_cluster.config.schemas["app"]
    rule = schema.tables["user_relation"]
    for row in ROWS:
        loc = locate(schema, rule, row[1])
        direct = mariadb_cluster.connect(loc.datasource, loc.database)
        try:
            with direct.cursor() as cur:
                cur.execute(f"SELECT id, uid FROM `{loc.table}` WHERE id = %s", (row[0],))
                assert cur.fetchall() == ((row[0], row[1]),)
        finally:
            direct.close()
        assert q(conn, "SELECT id, remark, score FROM user_relation WHERE uid = %s", (row[1],)) == ((row[0], row[4], row[5]),)


def test_scatter_reads_match_the_reference_table(conn, mariadb_cluster):
    insert_rows(conn)
    ref = mariadb_cluster.connect("ds0", mariadb_cluster.reference_database)
    try:
        with ref.cursor() as cur:
            cur.executemany("INSERT INTO user_relation (id, uid, target_uid, relation_type, remark, score) VALUES (%s, %s, %s, %s, %s, %s)", ROWS)
        for sql in [
            "SELECT COUNT(*), SUM(score), MIN(uid), MAX(uid) FROM user_relation",
            "SELECT relation_type, COUNT(*), SUM(score) FROM user_relation GROUP BY relation_type ORDER BY relation_type",
            "SELECT id, uid FROM user_relation ORDER BY uid DESC LIMIT 5",
            "SELECT id, uid FROM user_relation WHERE uid IN (1, 600, 70000) ORDER BY id",
            "SELECT DISTINCT relation_type FROM user_relation ORDER BY relation_type",
        ]:
            with ref.cursor() as cur:
                cur.execute(sql)
                expected = cur.fetchall()
            assert q(conn, sql) == expected, sql
    finally:
        mariadb_cluster.truncate("app", "user_relation")
        ref.close()


def test_update_and_delete_by_shard_key(conn):
    insert_rows(conn)
    with conn.cursor() as cur:
        assert cur.execute("UPDATE user_relation SET remark = 'changed' WHERE uid = 600") == 1
        assert cur.execute("DELETE FROM user_relation WHERE uid = 1") == 1
    assert q(conn, "SELECT remark FROM user_relation WHERE uid = 600") == (("changed",),)
    assert q(conn, "SELECT COUNT(*) FROM user_relation") == ((len(ROWS) - 1,),)


def test_cross_shard_transaction_commit_and_rollback(proxy, clean):
    a = proxy.connect()  # PyMySQL default: autocommit off -> every statement is in a transaction
    b = proxy.connect(autocommit=True)
    try:
        with a.cursor() as cur:
            cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (1, 5, 0)")  # ds0
            cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (2, 600, 0)")  # ds1
        assert q(b, "SELECT COUNT(*) FROM user_relation") == ((0,),)  # not committed yet
        a.commit()
        assert q(b, "SELECT uid FROM user_relation ORDER BY uid") == ((5,), (600,))
        with a.cursor() as cur:
            cur.execute("DELETE FROM user_relation WHERE uid = 5")
            cur.execute("UPDATE user_relation SET remark = 'x' WHERE uid = 600")
        a.rollback()
        assert q(b, "SELECT uid, remark FROM user_relation ORDER BY uid") == ((5, None), (600, None))
        with a.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (3, 7, 0)")
            cur.execute("COMMIT")
        assert q(b, "SELECT COUNT(*) FROM user_relation") == ((3,),)
    finally:
        a.close()
        b.close()


def test_disconnect_rolls_back(proxy, clean):
    a = proxy.connect()
    with a.cursor() as cur:
        cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (1, 5, 0)")
        cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (2, 600, 0)")
    a.close()
    b = proxy.connect(autocommit=True)
    try:
        assert q(b, "SELECT COUNT(*) FROM user_relation") == ((0,),)
    finally:
        b.close()


def test_session_state_is_replayed_on_shared_connections(make_proxy, clean):
    # One backend connection per datasource: both sessions must share it.
    p = make_proxy(datasources={"ds0": {"max_connections": 1}, "ds1": {"max_connections": 1}})
    a = p.connect(autocommit=True)
    b = p.connect(autocommit=True)
    try:
        with a.cursor() as cur:
            cur.execute("SET time_zone = '+08:00', sql_mode = 'NO_ENGINE_SUBSTITUTION', @who = CONCAT('ses', 'sion a')")
        for _ in range(3):
            assert q(a, "SELECT @@time_zone, @@sql_mode, @who") == (("+08:00", "NO_ENGINE_SUBSTITUTION", "session a"),)
            assert q(b, "SELECT @@time_zone, @who") == (("SYSTEM", None),)
            assert q(a, "SELECT COUNT(*) FROM user_relation WHERE uid = 600") == ((0,),)  # on ds1
        with b.cursor() as cur:
            cur.execute("SET NAMES latin1")
        assert q(b, "SELECT @@character_set_client, @@character_set_results") == (("latin1", "latin1"),)
        assert q(a, "SELECT @@character_set_client") == (("utf8mb4",),)
        with a.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        assert q(a, "SELECT @@tx_isolation") == (("READ-COMMITTED",),)
        assert q(b, "SELECT @@tx_isolation") == (("REPEATABLE-READ",),)
    finally:
        a.close()
        b.close()


def test_metadata_with_logical_names(conn):
    assert q(conn, "SHOW DATABASES") == (("information_schema",), ("app",))
    assert q(conn, "SHOW TABLES") == (("region",), ("user_fans",), ("user_relation",))
    assert q(conn, "SHOW TABLES LIKE 'user%'") == (("user_fans",), ("user_relation",))
    assert ("user_relation", "BASE TABLE") in q(conn, "SHOW FULL TABLES")
    cols = q(conn, "DESCRIBE user_relation")
    assert [r[0] for r in cols] == ["id", "uid", "target_uid", "relation_type", "remark", "score", "created_at"]
    assert q(conn, "SHOW COLUMNS FROM user_relation LIKE 'uid'")[0][:2] == ("uid", "bigint(20)")
    create = q(conn, "SHOW CREATE TABLE user_relation")[0]
    assert create[0] == "user_relation" and create[1].startswith("CREATE TABLE `user_relation` (")
    index = q(conn, "SHOW INDEX FROM user_relation")
    assert {r[0] for r in index} == {"user_relation"} and {r[2] for r in index} == {"PRIMARY", "idx_uid_target"}
    assert q(conn, "SHOW VARIABLES LIKE 'autocommit'")[0][0] == "autocommit"


def test_warnings_are_read_from_the_connection_that_made_them(conn):
    assert q(conn, "SELECT CAST('12abc' AS SIGNED)") == ((12,),)
    warnings = q(conn, "SHOW WARNINGS")
    assert len(warnings) == 1 and warnings[0][1] == 1292
    assert q(conn, "SHOW WARNINGS") == ()


def test_preview_and_status(conn):
    rows = q(conn, "PREVIEW SELECT * FROM user_relation WHERE uid IN (5, 600)")
    assert [r[:2] for r in rows] == [("ds0", "app_00"), ("ds1", "app_18")]
    assert "`app_18`.`user_relation_0600`" in rows[1][2]
    status = dict(q(conn, "SHOW MDRIVER STATUS"))
    assert status["transaction_mode"] == "xa" and status["config_revision"]
    assert status["pool.ds0"].startswith("up ") and "max" not in status["pool.ds0"].split()[0]


def test_connect_time_queries(conn):
    assert q(conn, "SELECT @@version_comment LIMIT 1") == (("mdriver sharding proxy",),)
    assert q(conn, "SELECT DATABASE(), @@autocommit") == (("app", 1),)
    assert q(conn, "SELECT @@max_allowed_packet")[0][0] > 0
    assert q(conn, "SELECT 1 + 1") == ((2,),)
    assert q(conn, "SELECT LAST_INSERT_ID()") == ((0,),)


@pytest.mark.parametrize(
    "sql, errno",
    [
        ("UPDATE user_relation SET uid = 5 WHERE uid = 7", 1235),
        ("DELETE FROM user_relation", 1290),
        ("SELECT 1; SELECT 2", 1235),
        ("SET GLOBAL max_connections = 5", 1227),
        ("LOCK TABLES user_relation WRITE", 1235),
        ("XA START 'x'", 1235),
        ("SAVEPOINT s1", 1235),
        ("CREATE TEMPORARY TABLE t (a INT)", 1235),
        ("SELECT * FROM no_such_table", 1146),
        ("SELEC 1", 1064),
    ],
)
def test_refusals_are_mysql_errors(conn, sql, errno):
    with pytest.raises(pymysql.err.MySQLError) as e:
        q(conn, sql)
    assert e.value.args[0] == errno, e.value.args
    assert q(conn, "SELECT 1") == ((1,),)  # the session still works


def test_no_database_selected(proxy, clean):
    c = proxy.connect(database=None, autocommit=True)
    try:
        assert q(c, "SELECT 1") == ((1,),)
        with pytest.raises(pymysql.err.MySQLError) as e:
            q(c, "SELECT * FROM user_relation")
        assert e.value.args[0] == 1046
        q(c, "USE app")
        assert q(c, "SELECT COUNT(*) FROM user_relation") == ((0,),)
    finally:
        c.close()


def test_pool_accounting_returns_to_zero(make_proxy, clean):
    """After transactions, errors, scatter reads, warnings and disconnects, nothing stays checked out."""
    p = make_proxy()
    a = p.connect()  # autocommit off: transactions
    b = p.connect(autocommit=True)
    with a.cursor() as cur:
        cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (1, 5, 0)")
        cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (2, 600, 0)")
        with pytest.raises(pymysql.err.MySQLError):
            cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (1, 5, 0)")  # duplicate key
    a.commit()
    q(b, "SELECT CAST('1x' AS SIGNED)")  # a warning keeps its connection until the next statement
    q(b, "SELECT COUNT(*) FROM user_relation")
    with pytest.raises(pymysql.err.MySQLError):
        q(b, "SELECT * FROM user_relation WHERE")
    q(b, "SELECT GET_LOCK('mdriver-test', 1)")  # pins a connection for the session
    with a.cursor() as cur:
        cur.execute("SELECT * FROM user_relation WHERE uid = 600")  # left open: rolled back on disconnect
    a.close()
    b.close()

    def counts():
        return {n: (pl.in_use, pl.total, pl.idle_count()) for n, pl in p.server.pools.pools.items()}

    deadline = time.monotonic() + 5
    while any(in_use for in_use, _, _ in p.call(counts).values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for name, (in_use, total, idle) in p.call(counts).items():
        assert in_use == 0 and total == idle, (name, in_use, total, idle)


def test_large_result_to_a_slow_client_is_streamed_with_backpressure(proxy, clean):
    """50 x 1 MB rows: the proxy pauses the backend while the client's socket is full, so its buffer stays small."""
    conn = proxy.connect(autocommit=True, cursorclass=pymysql.cursors.SSCursor)
    cid = conn.thread_id()

    def proxy_buffer() -> int:
        return max((c.transport.get_write_buffer_size() for c in proxy.server.clients if c.id == cid), default=0)

    try:
        with conn.cursor() as cur:
            cur.execute("SELECT seq, REPEAT(CHAR(65 + seq % 26), 1000000) FROM seq_1_to_50")
            biggest = 0
            for i, (seq, text) in enumerate(cur, start=1):
                assert seq == i and len(text) == 1_000_000 and text[0] == 65 + seq % 26  # CHAR() is binary: bytes
                if i % 5 == 0:
                    time.sleep(0.2)  # a slow reader
                    biggest = max(biggest, proxy.call(proxy_buffer))
        assert i == 50
        assert biggest < 8_000_000, biggest
    finally:
        conn.close()


def test_deadlock_rolls_back_the_whole_transaction_like_mysql(proxy, clean, mariadb_cluster):
    import threading

    setup = proxy.connect(autocommit=True)
    monitor = mariadb_cluster.connect("ds0")
    try:
        q(setup, "INSERT INTO user_relation (id, uid, target_uid) VALUES (1, 5, 0), (2, 6, 0)")  # both on ds0 (app_00)
    except pymysql.err.MySQLError:
        with monitor.cursor() as cur:  # what holds the rows (diagnostics for a failure)
            cur.execute("SELECT trx_id, trx_state, trx_started, trx_mysql_thread_id, trx_query FROM information_schema.INNODB_TRX")
            trx = cur.fetchall()
            cur.execute("XA RECOVER")
            xa = cur.fetchall()
            cur.execute("SELECT ID, USER, DB, COMMAND, TIME, STATE, INFO FROM information_schema.PROCESSLIST")
            procs = cur.fetchall()
        raise AssertionError(f"setup insert blocked: trx={trx} xa={xa} processlist={procs}")
    a, b = proxy.connect(), proxy.connect()
    try:
        for c in (a, b):
            q(c, "SET innodb_lock_wait_timeout = 10")  # a missed deadlock fails fast with 1205
        q(a, "INSERT INTO user_relation (id, uid, target_uid) VALUES (3, 600, 0)")  # a's branch on ds1
        q(a, "UPDATE user_relation SET remark = 'a' WHERE uid = 5")
        q(b, "UPDATE user_relation SET remark = 'b' WHERE uid = 6")
        outcome = {}

        def a_waits():
            try:
                q(a, "UPDATE user_relation SET remark = 'a' WHERE uid = 6")
                outcome["a"] = "ok"
            except pymysql.err.MySQLError as e:
                outcome["a"] = e.args[0]

        t = threading.Thread(target=a_waits)
        t.start()
        # Either order closes the cycle. (Polling INNODB_TRX for the lock wait here kept MariaDB from seeing the
        # deadlock: both sides then timed out with 1205.)
        time.sleep(0.5)
        try:
            q(b, "UPDATE user_relation SET remark = 'b' WHERE uid = 5")
            outcome["b"] = "ok"
        except pymysql.err.MySQLError as e:
            outcome["b"] = e.args[0]
        t.join(30)
        with monitor.cursor() as cur:
            cur.execute("SELECT trx_id, trx_state, trx_mysql_thread_id, trx_query, trx_rows_locked FROM information_schema.INNODB_TRX")
            trx = cur.fetchall()
            cur.execute("SELECT ID, DB, COMMAND, TIME, STATE, INFO FROM information_schema.PROCESSLIST")
            procs = cur.fetchall()
        assert sorted(map(str, outcome.values())) == ["1213", "ok"], (outcome, trx, procs)
        victim, winner = (a, b) if outcome["a"] == 1213 else (b, a)
        # like MySQL: the transaction is gone; BEGIN and COMMIT just work
        q(victim, "BEGIN")
        q(victim, "COMMIT")
        winner.commit()
        rows = q(setup, "SELECT uid, remark FROM user_relation ORDER BY uid")
        if victim is a:
            assert rows == ((5, None), (6, "b")), (outcome, rows)  # a's insert on ds1 was rolled back with the rest
        else:
            assert rows == ((5, "a"), (6, "a"), (600, None)), (outcome, rows)
    finally:
        for c in (a, b, setup, monitor):
            c.close()


@pytest.mark.parametrize(
    "sql, errno",
    [
        ("SELECT User FROM mysql.user", 1044),
        ("SELECT * FROM app_ref.user_relation", 1044),
        ("SELECT * FROM app_00.user_relation_0000", 1044),
        ("SELECT * FROM `app_ref`.`region` r JOIN region g ON g.region_id = r.region_id", 1044),
        ("SELECT * FROM information_schema.USER_PRIVILEGES", 1044),
        ("SELECT LOAD_FILE('/etc/hostname')", 1227),
        ("SELECT 1 INTO OUTFILE '/tmp/mdriver-x'", 1227),
        ("CREATE DATABASE mdriver_probe", 1227),
        ("DROP DATABASE app_ref", 1227),
        ("GRANT ALL ON *.* TO 'x'@'%'", 1227),
        ("LOAD DATA INFILE '/etc/hostname' INTO TABLE region", 1227),
        ("SET @x = (SELECT COUNT(*) FROM mysql.user)", 1044),
        ("SHOW TABLES FROM app_ref", 1049),
        ("SHOW ENGINE INNODB STATUS", 1227),
        ("EXPLAIN SELECT * FROM mysql.user", 1044),
    ],
)
def test_statements_cannot_leave_the_users_schemas(conn, sql, errno):
    with pytest.raises(pymysql.err.MySQLError) as e:
        q(conn, sql)
    assert e.value.args[0] == errno, e.value.args
    assert q(conn, "SELECT COUNT(*) FROM app.user_relation WHERE uid = 5") == ((0,),)  # its own schema, qualified, works
    assert q(conn, "SELECT COUNT(*) FROM information_schema.COLLATIONS WHERE COLLATION_NAME = 'utf8mb4_bin'") == ((1,),)


def test_show_grants_and_processlist_describe_the_proxy_session(conn):
    grants = [r[0] for r in q(conn, "SHOW GRANTS")]
    assert grants == ["GRANT USAGE ON *.* TO `app`@`%`", "GRANT ALL PRIVILEGES ON `app`.* TO `app`@`%`"]
    rows = q(conn, "SHOW PROCESSLIST")
    mine = [r for r in rows if r[0] == conn.thread_id()]
    assert mine and mine[0][1] == "app" and mine[0][3] == "app" and mine[0][7] == "SHOW PROCESSLIST"


def test_connection_used_by_a_slow_client_is_reusable_afterwards(make_proxy, clean):
    """A relay paused for a slow client must not leave its backend connection paused in the pool."""
    p = make_proxy(datasources={"ds0": {"max_connections": 1}}, backend_timeout=3)
    slow = p.connect(autocommit=True, cursorclass=pymysql.cursors.SSCursor)
    other = p.connect(autocommit=True)
    try:
        for _ in range(2):
            with slow.cursor() as cur:
                cur.execute("SELECT seq, REPEAT('x', 1000000) FROM seq_1_to_30")
                for i, _row in enumerate(cur, start=1):
                    if i % 3 == 0:
                        time.sleep(0.1)
            start = time.monotonic()
            assert q(other, "SELECT COUNT(*) FROM user_relation WHERE uid = 5") == ((0,),)  # the same backend connection
            assert time.monotonic() - start < 1
    finally:
        slow.close()
        other.close()
