"""Writes through the router against the same writes on the reference: same affected rows, same tables after."""
from __future__ import annotations

import asyncio
import copy

import pytest
import yaml

from mdriver import err
from mdriver.config import build_config
from mdriver.router import Router, run_async, run_sync


def assert_same_table(env, table: str, key: str = "id") -> None:
    _, want, _ = env.reference(f"SELECT * FROM {table} ORDER BY {key}")
    got = env.run(f"SELECT * FROM {table} ORDER BY {key}")
    assert env.same_rows(got.rows, want, ordered=True), f"{table} differs from the reference"


def write_both(env, sql: str, params=None, router: Router | None = None) -> int:
    _, _, ref_affected = env.reference(sql, params)
    r = router or env.router
    result = run_sync(r.plan(sql, "app", params), env.backend)
    assert result.affected_rows == ref_affected, sql
    return result.affected_rows


WRITES = [
    ("INSERT INTO user_relation (id, uid, target_uid, remark, score, created_at) VALUES "
     "(90001, 5, 1, 'new', 1.25, '2024-05-01 00:00:00'), (90002, 1029, 2, NULL, NULL, '2024-05-01 00:00:01'), "
     "(90003, -1, 3, 'ünï', -2.50, '2024-05-01 00:00:02'), (90004, 424242, 4, '', 0, '2024-05-01 00:00:03')", None),
    ("INSERT INTO user_relation (id, uid, target_uid, created_at) VALUES (%s, %s, %s, %s)", (90005, 77, 5, "2024-05-02 10:00:00")),
    ("INSERT INTO user_relation (id, uid, target_uid, created_at) VALUES (90001, 5, 11, NOW()), (90006, 6, 12, '2024-05-03') "
     "ON DUPLICATE KEY UPDATE target_uid = VALUES(target_uid) + 1000", None),
    ("REPLACE INTO user_fans (id, uid, fan_uid, level, created_at) VALUES (90001, 5, 1, 3, '2024-05-01'), (90002, 6, 2, NULL, '2024-05-01')", None),
    ("UPDATE user_relation SET remark = 'upd', score = score + 1 WHERE uid = 5 AND relation_type = 1", None),
    ("UPDATE user_relation SET remark = CONCAT('in-', id) WHERE uid IN (7, 1029, 2048)", None),
    ("UPDATE user_relation r JOIN user_fans f ON f.uid = r.uid SET r.score = 0 WHERE r.uid = 12 AND f.level > 3", None),
    ("DELETE FROM user_relation WHERE user_relation.uid = -1 AND score < 0", None),
    ("DELETE FROM user_fans WHERE uid IN (1, 2, 3) AND level IS NULL", None),
    ("INSERT INTO user_fans (id, uid, fan_uid, created_at) SELECT id + 500000, uid, target_uid, created_at FROM user_relation WHERE uid = 7", None),
    ("INSERT INTO region (region_id, name) VALUES (11, 'added'), (12, 'ajouté')", None),
    ("UPDATE region SET name = 'North' WHERE region_id = 1", None),
    ("DELETE FROM region WHERE region_id = 12", None),
]


def test_writes_match_the_reference(env):
    for sql, params in WRITES:
        write_both(env, sql, params)
    for table in ("user_relation", "user_fans", "region"):
        assert_same_table(env, table, "region_id" if table == "region" else "id")


def test_returning_rows_from_every_shard(env):
    for sql in ("INSERT INTO user_relation (id, uid, target_uid, created_at) VALUES "
                "(91001, 3, 1, '2024-06-01'), (91002, 1027, 2, '2024-06-01'), (91003, 600, 3, '2024-06-01') RETURNING id, uid",
                "DELETE FROM user_relation WHERE uid IN (3, 1027, 600) AND id > 91000 RETURNING id, target_uid"):
        names, want, _ = env.reference(sql)
        result = env.run(sql)
        assert [c.name for c in result.columns] == names
        assert env.same_rows(result.rows, want, ordered=False) and len(want) == 3, sql
    assert_same_table(env, "user_relation")


def test_broadcast_copies_stay_identical(env, mariadb_cluster):
    write_both(env, "UPDATE region SET name = CONCAT(name, '!') WHERE region_id IN (2, 3)")
    schema = env.config.schemas["app"]
    _, want, _ = env.reference("SELECT region_id, name FROM region ORDER BY region_id")
    from mdriver.sharding import shard_databases

    copies = [(schema.datasource, schema.name)] + shard_databases(schema)
    assert len(copies) == 33
    for ds, db in copies:
        conn = mariadb_cluster.connect(ds)
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT region_id, name FROM `{db}`.region ORDER BY region_id")
                assert list(cur.fetchall()) == list(want), f"copy {ds}/{db} differs"
        finally:
            conn.close()


def test_scatter_dml_when_allowed(env, mariadb_cluster):
    with open(mariadb_cluster.config_path) as f:
        doc = yaml.safe_load(f)
    doc = copy.deepcopy(doc)
    doc.setdefault("router", {})["allow_scatter_dml"] = True
    router = Router(build_config(doc, source="test"))
    with pytest.raises(err.NotSupportedError) as e:
        env.run("DELETE FROM user_fans WHERE level = 9")
    assert e.value.args[0] == 1290
    n = write_both(env, "DELETE FROM user_fans WHERE level = 9", router=router)
    assert n > 0
    write_both(env, "UPDATE user_relation SET relation_type = 4 WHERE remark = 'family'", router=router)
    assert_same_table(env, "user_fans")
    assert_same_table(env, "user_relation")


def test_refused_writes_change_nothing(env):
    before = env.run("SELECT COUNT(*), SUM(uid) FROM user_relation").rows
    for sql in ("UPDATE user_relation SET uid = uid + 1 WHERE uid = 5",
                "INSERT INTO user_relation (id, target_uid) VALUES (99999, 1)",
                "DELETE FROM user_relation WHERE remark = 'x'",
                "INSERT INTO user_fans (id, uid, fan_uid) SELECT id, uid, target_uid FROM user_relation"):
        with pytest.raises(err.Error):
            env.run(sql)
    assert env.run("SELECT COUNT(*), SUM(uid) FROM user_relation").rows == before


def test_server_errors_come_back_as_pep249_errors(env):
    with pytest.raises(err.ProgrammingError) as e:
        env.run("SELECT no_such_column FROM user_relation")
    assert e.value.args[0] == 1054
    with pytest.raises(err.ProgrammingError) as e:
        env.run("SELECT no_such_column FROM user_relation WHERE uid = 1")
    assert e.value.args[0] == 1054
    rid, uid = env.run("SELECT id, uid FROM user_relation WHERE uid = 5 ORDER BY id LIMIT 1").rows[0]
    with pytest.raises(err.IntegrityError) as e:
        env.run("INSERT INTO user_relation (id, uid, target_uid) VALUES (%s, %s, 1)", (rid, uid))
    assert e.value.args[0] == 1062


def test_async_runner_gives_the_same_answers(env):
    class ThreadedBackend:
        async def run(self, batch):
            return await asyncio.to_thread(env.backend.run, batch)

    async def both():
        out = []
        for sql in ("SELECT relation_type, COUNT(*), AVG(score) FROM user_relation GROUP BY relation_type ORDER BY 1",
                    "SELECT id FROM user_relation ORDER BY created_at DESC, id LIMIT 10",
                    "SELECT * FROM user_relation WHERE uid = 5 ORDER BY id"):
            out.append((sql, await run_async(env.router.plan(sql, "app", None), ThreadedBackend())))
        return out

    for sql, result in asyncio.run(both()):
        assert env.canon_rows(result.rows) == env.canon_rows(env.run(sql).rows)
