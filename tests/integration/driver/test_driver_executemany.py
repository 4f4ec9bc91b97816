"""executemany: rows batched into one multi-row INSERT per physical table."""
import pytest

import mdriver
from mdriver.sharding import locate

from driver_helpers import direct_rows


def com_insert(cluster):
    return {ds: int(direct_rows(cluster, ds, "SHOW GLOBAL STATUS LIKE 'Com_insert'")[0][1]) for ds in cluster.instances}


@pytest.fixture(autouse=True)
def clean(mariadb_cluster):
    mariadb_cluster.truncate("app", "user_relation", reference=False)
    yield
    mariadb_cluster.truncate("app", "user_relation", reference=False)


def test_batches_per_physical_table(mariadb_cluster, connect):
    conn = connect(autocommit=True)
    cur = conn.cursor()
    rows = [(i, i % 64, i * 3, f"m{i}") for i in range(1, 1001)]  # 64 distinct uids -> 64 physical tables
    before = com_insert(mariadb_cluster)
    n = cur.executemany("INSERT INTO user_relation (id, uid, target_uid, remark) VALUES (%s, %s, %s, %s)", rows)
    after = com_insert(mariadb_cluster)
    assert n == cur.rowcount == 1000
    statements = sum(after[ds] - before[ds] for ds in after)
    assert statements == 64  # one INSERT per physical table (the test's own status queries are not inserts)
    schema = mariadb_cluster.config.schemas["app"]
    loc = locate(schema, schema.tables["user_relation"], 5)
    got = direct_rows(mariadb_cluster, loc.datasource, f"SELECT COUNT(*) FROM `{loc.database}`.`{loc.table}` WHERE uid = 5")
    assert got == ((1000 // 64 + (1 if 5 <= 1000 % 64 else 0),),)
    cur.execute("SELECT COUNT(*), SUM(target_uid) FROM user_relation")
    count, total = cur.fetchone()
    assert count == 1000 and total == sum(r[2] for r in rows)


def test_named_parameters_and_on_duplicate_key(connect):
    conn = connect(autocommit=True)
    cur = conn.cursor()
    sql = ("INSERT INTO user_relation (id, uid, target_uid, remark) VALUES (%(id)s, %(uid)s, 1, %(r)s) "
           "ON DUPLICATE KEY UPDATE remark = VALUES(remark)")
    cur.executemany(sql, [{"id": 1, "uid": 10, "r": "a"}, {"id": 2, "uid": 900, "r": "50%"}])
    cur.executemany(sql, [{"id": 1, "uid": 10, "r": "b"}])
    cur.execute("SELECT id, remark FROM user_relation ORDER BY id")
    assert list(cur.fetchall()) == [(1, "b"), (2, "50%")]


def test_inside_a_transaction_and_rolled_back(connect):
    conn = connect()
    cur = conn.cursor()
    cur.executemany("INSERT INTO user_relation (id, uid, target_uid) VALUES (%s, %s, %s)", [(i, i * 41, 0) for i in range(1, 40)])
    assert conn.in_transaction and len(conn.txn.branches) == 2
    conn.rollback()
    cur.execute("SELECT COUNT(*) FROM user_relation")
    assert cur.fetchone() == (0,)


def test_other_statements_run_row_by_row(connect):
    conn = connect(autocommit=True)
    cur = conn.cursor()
    cur.executemany("INSERT INTO user_relation (id, uid, target_uid) VALUES (%s, %s, %s)", [(1, 1, 0), (2, 2, 0)])
    n = cur.executemany("UPDATE user_relation SET target_uid = %s WHERE uid = %s", [(5, 1), (6, 2), (7, 3)])
    assert n == 2
    with pytest.raises(mdriver.IntegrityError):
        cur.executemany("INSERT INTO user_relation (id, uid, target_uid) VALUES (%s, %s, %s)", [(3, 3, 0), (1, 1, 0)])


def test_autocommit_batch_is_all_or_nothing_across_datasources(connect):
    conn = connect(autocommit=True)
    cur = conn.cursor()
    cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (7, 700, 0)")  # slot 700: ds1
    rows = [(1, 5, 0), (2, 6, 0), (7, 700, 0)]  # the last one collides on ds1
    with pytest.raises(mdriver.IntegrityError) as info:
        cur.executemany("INSERT INTO user_relation (id, uid, target_uid) VALUES (%s, %s, %s)", rows)
    assert info.value.args[0] == 1062
    cur.execute("SELECT COUNT(*) FROM user_relation")
    assert cur.fetchone() == (1,)  # the ds0 rows were rolled back with the rest
    assert not conn.in_transaction
