"""Generated ids (snowflake and segment) through the driver on the sharded layout."""
import pytest

import mdriver
from mdriver.ids import decode_snowflake
from mdriver.sharding import locate

from driver_helpers import direct_rows, table, variant


@pytest.fixture
def id_config(mariadb_cluster, tmp_path):
    def edit(doc):
        table(doc, "user_relation")["id_generator"] = {"column": "id", "kind": "snowflake", "worker_id": 5}
        table(doc, "user_fans")["id_generator"] = {"column": "id", "kind": "segment", "step": 10}

    mariadb_cluster.truncate("app", "user_relation", reference=False)
    mariadb_cluster.truncate("app", "user_fans", reference=False)
    yield variant(mariadb_cluster, tmp_path, "ids", edit)
    mariadb_cluster.truncate("app", "user_relation", reference=False)
    mariadb_cluster.truncate("app", "user_fans", reference=False)
    direct_rows(mariadb_cluster, "ds0", "DROP TABLE IF EXISTS app.mdriver_sequence")


def test_snowflake_id_is_generated_and_returned(mariadb_cluster, id_config):
    conn = mdriver.connect(config=id_config, autocommit=True)
    cur = conn.cursor()
    cur.execute("INSERT INTO user_relation (uid, target_uid, remark) VALUES (%s, %s, %s)", (77, 1, "a"))
    new_id = cur.lastrowid
    assert new_id and decode_snowflake(new_id)[1] == 5
    cur.execute("SELECT id, remark FROM user_relation WHERE uid = 77")
    assert cur.fetchall() == ((new_id, "a"),)
    # A multi-row INSERT gets one id per row; lastrowid is the first (MySQL's rule for AUTO_INCREMENT).
    cur.execute("INSERT INTO user_relation (uid, target_uid) VALUES (%s, %s), (%s, %s)", (78, 1, 1102, 2))
    first = cur.lastrowid
    cur.execute("SELECT id FROM user_relation WHERE uid IN (78, 1102) ORDER BY id")
    ids = [r[0] for r in cur.fetchall()]
    # Snowflake ids of one statement increase; they are consecutive only within one millisecond.
    assert ids[0] == first and ids[1] > first
    assert [decode_snowflake(i)[1] for i in ids] == [5, 5]
    # An explicit id is kept.
    cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (%s, %s, %s)", (5, 79, 1))
    cur.execute("SELECT id FROM user_relation WHERE uid = 79")
    assert cur.fetchall() == ((5,),)
    conn.close()


def test_segment_ids_come_in_blocks_from_the_home_datasource(mariadb_cluster, id_config):
    conn = mdriver.connect(config=id_config, autocommit=True)
    cur = conn.cursor()
    got = []
    for uid in range(20, 33):
        cur.execute("INSERT INTO user_fans (uid, fan_uid, level) VALUES (%(uid)s, %(fan)s, 1)", {"uid": uid, "fan": 9})
        got.append(cur.lastrowid)
    assert got == list(range(1, 14))
    assert direct_rows(mariadb_cluster, "ds0", "SELECT name, next_id FROM app.mdriver_sequence") == (("app.user_fans", 21),)
    schema = mariadb_cluster.config.schemas["app"]
    loc = locate(schema, schema.tables["user_fans"], 32)
    assert direct_rows(mariadb_cluster, loc.datasource, f"SELECT id FROM `{loc.database}`.`{loc.table}` WHERE uid = 32") == ((13,),)
    # Another process (runtime) takes the next block: ids never repeat.
    other = mdriver.connect(config=id_config, autocommit=True, worker_id=1)
    ocur = other.cursor()
    ocur.execute("INSERT INTO user_fans (uid, fan_uid) VALUES (%s, %s)", (40, 1))
    assert ocur.lastrowid == 21
    other.close()
    conn.close()


def test_executemany_generates_ids(mariadb_cluster, id_config):
    conn = mdriver.connect(config=id_config, autocommit=True)
    cur = conn.cursor()
    cur.executemany("INSERT INTO user_fans (uid, fan_uid) VALUES (%s, %s)", [(u, u + 1) for u in range(100, 150)])
    assert cur.rowcount == 50
    first = cur.lastrowid
    cur.execute("SELECT uid, id FROM user_fans WHERE uid BETWEEN 100 AND 149 ORDER BY uid")
    rows = cur.fetchall()
    assert [r[1] for r in rows] == list(range(first, first + 50))
    conn.close()
