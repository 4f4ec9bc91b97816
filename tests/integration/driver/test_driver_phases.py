"""Migration phases from the config: reads and writes to the source, shadow reads, fencing, and reload."""
import time

import pytest

import mdriver
from mdriver.sharding import locate

from driver_helpers import direct_rows, rewrite, table, variant


def migration(reads, writes):
    def edit(doc):
        table(doc, "user_relation")["migration"] = {
            "source": {"datasource": "ds0", "database": "app", "table": "user_relation"},
            "reads": reads,
            "writes": writes,
        }

    return edit


@pytest.fixture
def source_table(mariadb_cluster):
    admin = mariadb_cluster.connect("ds0")
    cur = admin.cursor()
    cur.execute("DROP TABLE IF EXISTS app.user_relation")
    cur.execute("CREATE TABLE app.user_relation LIKE app_ref.user_relation")
    mariadb_cluster.truncate("app", "user_relation", reference=False)
    yield admin
    cur.execute("DROP TABLE IF EXISTS app.user_relation")
    admin.close()
    mariadb_cluster.truncate("app", "user_relation", reference=False)


def shard_of(cluster, uid):
    schema = cluster.config.schemas["app"]
    return locate(schema, schema.tables["user_relation"], uid)


def put_on_shard(cluster, uid, id_, remark):
    loc = shard_of(cluster, uid)
    direct_rows(cluster, loc.datasource, f"INSERT INTO `{loc.database}`.`{loc.table}` (id, uid, target_uid, remark) "
                f"VALUES (%s, %s, 1, %s)", (id_, uid, remark))


def source_rows(admin):
    with admin.cursor() as cur:
        cur.execute("SELECT id, uid, remark FROM app.user_relation ORDER BY id")
        return cur.fetchall()


def test_source_phase_reads_and_writes_the_source(mariadb_cluster, tmp_path, source_table):
    path = variant(mariadb_cluster, tmp_path, "src", migration("source", "source"))
    conn = mdriver.connect(config=path, autocommit=True)
    cur = conn.cursor()
    cur.execute("INSERT INTO user_relation (id, uid, target_uid, remark) VALUES (1, 700, 1, 'src')")
    assert source_rows(source_table) == ((1, 700, "src"),)
    loc = shard_of(mariadb_cluster, 700)
    assert direct_rows(mariadb_cluster, loc.datasource, f"SELECT COUNT(*) FROM `{loc.database}`.`{loc.table}`") == ((0,),)
    cur.execute("SELECT remark FROM user_relation WHERE uid = 700")
    assert cur.fetchall() == (("src",),)


def test_reads_on_shards_while_writes_stay_on_the_source(mariadb_cluster, tmp_path, source_table):
    path = variant(mariadb_cluster, tmp_path, "rs", migration("shards", "source"))
    put_on_shard(mariadb_cluster, 701, 2, "copied")
    conn = mdriver.connect(config=path, autocommit=True)
    cur = conn.cursor()
    cur.execute("INSERT INTO user_relation (id, uid, target_uid, remark) VALUES (3, 701, 1, 'new')")
    assert source_rows(source_table) == ((3, 701, "new"),)
    cur.execute("SELECT remark FROM user_relation WHERE uid = 701")
    assert cur.fetchall() == (("copied",),)


def test_shadow_reads_return_the_source_and_count_differences(mariadb_cluster, tmp_path, source_table):
    path = variant(mariadb_cluster, tmp_path, "shadow", migration("shadow", "source"))
    conn = mdriver.connect(config=path, autocommit=True)
    cur = conn.cursor()
    cur.execute("INSERT INTO user_relation (id, uid, target_uid, remark) VALUES (4, 702, 1, 'same')")
    put_on_shard(mariadb_cluster, 702, 4, "same")
    stats = conn.runtime.shadow
    cur.execute("SELECT id, remark FROM user_relation WHERE uid = 702")
    assert cur.fetchall() == ((4, "same"),)
    assert (stats.compared, stats.mismatched) == (1, 0)
    cur.execute("INSERT INTO user_relation (id, uid, target_uid, remark) VALUES (5, 703, 1, 'only source')")
    cur.execute("SELECT id, remark FROM user_relation WHERE uid = 703")
    assert cur.fetchall() == ((5, "only source"),)
    assert (stats.compared, stats.mismatched) == (2, 1)
    assert "only source" in stats.last and "missing on shards" in stats.last
    # Scatter reads are compared as multisets, whatever order the shards answer in.
    put_on_shard(mariadb_cluster, 703, 5, "only source")
    cur.execute("SELECT uid, remark FROM user_relation")
    assert sorted(cur.fetchall()) == [(702, "same"), (703, "only source")]
    assert (stats.compared, stats.mismatched) == (3, 1)


def test_fenced_writes_are_refused_with_a_retryable_error(mariadb_cluster, tmp_path, source_table):
    path = variant(mariadb_cluster, tmp_path, "fenced", migration("shards", "fenced"))
    conn = mdriver.connect(config=path, autocommit=True)
    cur = conn.cursor()
    with pytest.raises(mdriver.OperationalError) as info:
        cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (6, 704, 1)")
    e = info.value
    assert isinstance(e, mdriver.FencedWriteError) and e.retryable and e.args[0] == 1290
    assert "user_relation" in e.args[1] and "retry" in e.args[1]
    with pytest.raises(mdriver.FencedWriteError):
        cur.executemany("INSERT INTO user_relation (id, uid, target_uid) VALUES (%s, %s, 1)", [(7, 705), (8, 706)])
    cur.execute("SELECT COUNT(*) FROM user_relation")  # reads still work
    assert cur.fetchone() == (0,)
    cur.execute("INSERT INTO user_fans (id, uid, fan_uid) VALUES (1, 1, 1)")  # other tables are not fenced
    mariadb_cluster.truncate("app", "user_fans", reference=False)


def test_config_reload_applies_without_reconnecting(mariadb_cluster, tmp_path, source_table):
    path = variant(mariadb_cluster, tmp_path, "reload", migration("source", "source"))
    conn = mdriver.connect(config=path, poll_interval=0.1)
    cur = conn.cursor()
    cur.execute("INSERT INTO user_relation (id, uid, target_uid, remark) VALUES (10, 710, 1, 'before')")
    started_on = conn.runtime.version().revision
    rewrite(path, migration("shards", "shards"))
    deadline = time.monotonic() + 10
    while conn.runtime.version().revision == started_on and time.monotonic() < deadline:
        time.sleep(0.05)
    assert conn.runtime.version().revision != started_on
    # The open transaction finishes on the version it started with: still the source.
    cur.execute("INSERT INTO user_relation (id, uid, target_uid, remark) VALUES (11, 711, 1, 'same txn')")
    conn.commit()
    assert [r[0] for r in source_rows(source_table)] == [10, 11]
    # The next statement runs on the new version: the shards.
    cur.execute("INSERT INTO user_relation (id, uid, target_uid, remark) VALUES (12, 712, 1, 'after')")
    conn.commit()
    assert [r[0] for r in source_rows(source_table)] == [10, 11]
    loc = shard_of(mariadb_cluster, 712)
    assert direct_rows(mariadb_cluster, loc.datasource, f"SELECT remark FROM `{loc.database}`.`{loc.table}`") == (("after",),)
    # Fencing arrives the same way, and an invalid file is ignored (the last good config stays).
    rewrite(path, migration("shards", "fenced"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (13, 713, 1)")
            conn.rollback()
            time.sleep(0.05)
        except mdriver.FencedWriteError:
            break
    else:
        pytest.fail("the fence was not applied within 10 s")
    with open(path, "a", encoding="utf-8") as f:
        f.write("\nthis: [is not valid\n")
    time.sleep(0.5)
    with pytest.raises(mdriver.FencedWriteError):
        cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (14, 714, 1)")


def test_source_elsewhere_is_refused_clearly(mariadb_cluster, tmp_path):
    def edit(doc):
        table(doc, "user_relation")["migration"] = {
            "source": {"datasource": "ds0", "database": "legacy", "table": "relations"}, "reads": "source", "writes": "source",
        }

    path = variant(mariadb_cluster, tmp_path, "elsewhere", edit)
    conn = mdriver.connect(config=path, autocommit=True)
    with pytest.raises(mdriver.NotSupportedError, match="legacy.relations"):
        conn.cursor().execute("SELECT * FROM user_relation WHERE uid = 1")
