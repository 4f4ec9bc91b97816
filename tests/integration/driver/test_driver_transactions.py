"""Transactions through the driver on the shared cluster: local, XA one-phase and two-phase, modes."""
import pytest

import mdriver
from mdriver.txn import Phase

from driver_helpers import direct_rows

ON_DS0, ON_DS1 = 7, 700  # slots 7 (app_00 on ds0) and 700 (app_21 on ds1)


@pytest.fixture(autouse=True)
def clean(mariadb_cluster):
    mariadb_cluster.truncate("app", "user_relation", reference=False)
    yield
    mariadb_cluster.truncate("app", "user_relation", reference=False)


def count(conn, uid):
    cur = conn.cursor()
    cur.execute("SELECT COUNT(*) FROM user_relation WHERE uid = %s", (uid,))
    return cur.fetchone()[0]


def insert(cur, uid, id_=None):
    cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (%s, %s, %s)", (id_ or uid, uid, 1))


def observe(conn):
    phases = []
    conn.runtime.txn_hook = lambda phase, t: phases.append(phase)
    return phases


def test_cross_datasource_commit_is_two_phase(connect, mariadb_cluster):
    conn = connect()
    phases = observe(conn)
    try:
        cur = conn.cursor()
        insert(cur, ON_DS0)
        insert(cur, ON_DS1)
        assert sorted(conn.txn.branches) == ["ds0", "ds1"]
        reader = connect(autocommit=True)
        assert count(reader, ON_DS0) == 0 and count(reader, ON_DS1) == 0
        conn.commit()
        assert phases == [Phase.END, Phase.PREPARE, Phase.DECIDE, Phase.COMMIT, Phase.FORGET]
        assert count(reader, ON_DS0) == 1 and count(reader, ON_DS1) == 1
        # The decision was removed once every branch committed; nothing is left in doubt.
        assert direct_rows(mariadb_cluster, "ds0", "SELECT COUNT(*) FROM app.mdriver_xa_log") == ((0,),)
        for ds in ("ds0", "ds1"):
            assert [r for r in direct_rows(mariadb_cluster, ds, "XA RECOVER") if b"mdrv" in r[3]] == []
    finally:
        conn.runtime.txn_hook = None


def test_single_datasource_commit_is_one_phase(connect):
    conn = connect()
    phases = observe(conn)
    try:
        cur = conn.cursor()
        insert(cur, ON_DS1)
        insert(cur, ON_DS1 + 1024, 2)  # another physical table and database on the same datasource
        cur.execute("SELECT COUNT(*) FROM user_relation WHERE uid = %s", (ON_DS0,))  # a read joins ds0 read-only
        conn.commit()
        assert phases == [Phase.END, Phase.ONE_PHASE]
        assert count(connect(autocommit=True), ON_DS1) == 1
    finally:
        conn.runtime.txn_hook = None


def test_rollback_across_datasources(connect):
    conn = connect()
    cur = conn.cursor()
    insert(cur, ON_DS0)
    insert(cur, ON_DS1)
    conn.rollback()
    assert not conn.in_transaction
    reader = connect(autocommit=True)
    assert count(reader, ON_DS0) == 0 and count(reader, ON_DS1) == 0
    # Pinned connections went back to the pools.
    assert all(p.idle_connections >= 1 for p in conn.runtime.pools.all_pools())


def test_reads_before_the_first_write_pin_nothing(connect):
    conn = connect()
    cur = conn.cursor()
    cur.execute("SELECT COUNT(*) FROM user_relation WHERE uid = %s", (ON_DS0,))
    assert not conn.in_transaction
    cur.execute("SELECT uid FROM user_relation WHERE uid = %s FOR UPDATE", (ON_DS0,))
    assert conn.in_transaction  # a locking read starts the transaction
    conn.rollback()


def test_read_your_writes_inside_a_transaction(connect):
    conn = connect()
    cur = conn.cursor()
    insert(cur, ON_DS0)
    cur.execute("SELECT COUNT(*) FROM user_relation WHERE uid = %s", (ON_DS0,))
    assert cur.fetchone() == (1,)
    cur.execute("SELECT COUNT(*) FROM user_relation")  # scatter inside the transaction
    assert cur.fetchone() == (1,)
    conn.rollback()


def test_mode_single_refuses_a_second_written_datasource(connect):
    conn = connect(transaction_mode="single")
    cur = conn.cursor()
    insert(cur, ON_DS0)
    insert(cur, ON_DS0 + 1024, 2)  # same datasource: fine
    with pytest.raises(mdriver.NotSupportedError, match="transaction_mode single") as info:
        insert(cur, ON_DS1)
    assert info.value.args[0] == 1235
    conn.commit()
    reader = connect(autocommit=True)
    assert count(reader, ON_DS0) == 1 and count(reader, ON_DS1) == 0


def test_mode_best_effort_commits_each_datasource(connect):
    conn = connect(transaction_mode="best_effort")
    phases = observe(conn)
    try:
        cur = conn.cursor()
        insert(cur, ON_DS0)
        insert(cur, ON_DS1)
        conn.commit()
        assert set(phases) == {Phase.LOCAL_COMMIT}
        reader = connect(autocommit=True)
        assert count(reader, ON_DS0) == 1 and count(reader, ON_DS1) == 1
    finally:
        conn.runtime.txn_hook = None


def test_begin_commits_an_open_transaction(connect):
    conn = connect()
    cur = conn.cursor()
    insert(cur, ON_DS0)
    conn.begin()
    assert conn.in_transaction
    insert(cur, ON_DS1)
    conn.rollback()
    reader = connect(autocommit=True)
    assert count(reader, ON_DS0) == 1 and count(reader, ON_DS1) == 0


def test_ddl_commits_the_open_transaction(connect):
    conn = connect()
    cur = conn.cursor()
    insert(cur, ON_DS1)
    cur.execute("CREATE TABLE IF NOT EXISTS drv_ddl_commit (a INT)")
    assert not conn.in_transaction
    conn.rollback()
    cur.execute("DROP TABLE drv_ddl_commit")
    assert count(connect(autocommit=True), ON_DS1) == 1


def test_lost_branch_dooms_the_transaction(connect, mariadb_cluster):
    conn = connect()
    cur = conn.cursor()
    insert(cur, ON_DS0)
    insert(cur, ON_DS1)
    victim = conn._pinned["ds1"].raw.thread_id()
    admin = mariadb_cluster.connect("ds1")
    admin.cursor().execute(f"KILL {victim}")
    admin.close()
    with pytest.raises(mdriver.OperationalError) as info:
        insert(cur, ON_DS1 + 1024, 3)
    assert "ds1" in str(info.value)
    with pytest.raises(mdriver.OperationalError, match="aborted"):
        insert(cur, ON_DS0 + 1024, 4)
    with pytest.raises(mdriver.OperationalError, match="rolled back"):
        conn.commit()
    assert not conn.in_transaction
    reader = connect(autocommit=True)
    assert count(reader, ON_DS0) == 0 and count(reader, ON_DS1) == 0
    insert(cur, ON_DS0)  # the connection works again
    conn.commit()
    assert count(reader, ON_DS0) == 1


def test_close_rolls_back(connect):
    conn = connect()
    insert(conn.cursor(), ON_DS0)
    insert(conn.cursor(), ON_DS1)
    conn.close()
    reader = connect(autocommit=True)
    assert count(reader, ON_DS0) == 0 and count(reader, ON_DS1) == 0
