"""Differential suite: every query runs on the unsharded reference and through the router.

The results must be equal: as multisets, or in order where ORDER BY fixes
the order (every ordered query here sorts by a unique column last). Column
names must be equal too. Queries the router refuses are listed separately
and must be refused with a clear error, never answered differently.
"""
from __future__ import annotations

import pytest

from mdriver import err


class Q:
    def __init__(self, sql: str, params=None, ordered: bool = False, any_rows: bool = False):
        self.sql = sql
        self.params = params
        self.ordered = ordered
        self.any_rows = any_rows  # LIMIT without ORDER BY: any rows of the full result are right

    def __repr__(self) -> str:
        return self.sql if self.params is None else f"{self.sql} % {self.params!r}"


def O(sql: str, params=None) -> Q:  # noqa: E743 - an ordered query
    return Q(sql, params, ordered=True)


UR = "user_relation"
QUERIES = [
    # -- routing: point, IN, ranges, OR ----------------------------------------------------
    Q("SELECT * FROM user_relation WHERE uid = 5"),
    Q("SELECT * FROM user_relation WHERE uid = 1029"),
    Q("SELECT * FROM user_relation WHERE uid = -1"),
    Q("SELECT * FROM user_relation WHERE uid = -1025"),
    Q("SELECT * FROM user_relation WHERE uid = 0"),
    Q("SELECT * FROM user_relation WHERE uid = 9007199254740993"),
    Q("SELECT * FROM user_relation WHERE uid = 1099511627779"),
    Q("SELECT * FROM user_relation WHERE uid = '7'"),
    Q("SELECT * FROM user_relation WHERE 7 = uid"),
    Q("SELECT * FROM user_relation WHERE uid = 424242"),
    Q("SELECT id, remark FROM user_relation WHERE uid = 5 AND relation_type = 1"),
    Q("SELECT * FROM user_relation WHERE uid IN (5, 7, 1029, -1)"),
    Q("SELECT * FROM user_relation WHERE uid IN (1, 2, 3, 1025, 2048, 4095)"),
    Q("SELECT * FROM user_relation WHERE uid IN (5, 1029, 2053, 3077)"),
    Q("SELECT * FROM user_relation WHERE uid IN (NULL, 5)"),
    Q("SELECT id FROM user_relation WHERE uid NOT IN (5, 7, 1029, -1)"),
    Q("SELECT * FROM user_relation WHERE uid BETWEEN 1 AND 10"),
    Q("SELECT * FROM user_relation WHERE uid BETWEEN 1020 AND 1030"),
    Q("SELECT * FROM user_relation WHERE uid BETWEEN 10 AND 1"),
    Q("SELECT * FROM user_relation WHERE uid > 1020 AND uid < 1030"),
    Q("SELECT * FROM user_relation WHERE uid >= -2 AND uid <= 2"),
    Q("SELECT id FROM user_relation WHERE uid > 100000"),
    Q("SELECT id FROM user_relation WHERE uid < 0"),
    Q("SELECT id FROM user_relation WHERE uid >= 1 AND uid < 3000"),
    Q("SELECT * FROM user_relation WHERE uid = 5 OR uid = 1029 OR uid = 77"),
    Q("SELECT * FROM user_relation WHERE (uid = 5 AND relation_type = 2) OR uid IN (6, 8)"),
    Q("SELECT id FROM user_relation WHERE uid = 5 OR remark = 'friend'"),
    Q("SELECT * FROM user_relation WHERE uid = 1 AND uid = 2"),
    Q("SELECT * FROM user_relation WHERE uid = NULL"),
    Q("SELECT * FROM user_relation WHERE uid IN (5, 6) AND uid IN (6, 7)"),
    Q("SELECT * FROM user_relation AS r WHERE r.uid = 12"),
    Q("SELECT user_relation.id, user_relation.uid FROM user_relation WHERE user_relation.uid IN (3, 4)"),
    Q("SELECT * FROM user_fans WHERE uid = 5"),
    Q("SELECT * FROM user_fans WHERE uid IN (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)"),
    # -- scatter without a key -------------------------------------------------------------
    Q("SELECT id FROM user_relation WHERE relation_type = 2"),
    Q("SELECT id, uid FROM user_relation WHERE remark IS NULL"),
    Q("SELECT id FROM user_relation WHERE remark = 'café'"),
    Q("SELECT id FROM user_relation WHERE remark = 'CAFÉ'"),
    Q("SELECT id FROM user_relation WHERE remark LIKE 'fri%'"),
    Q("SELECT id FROM user_relation WHERE remark LIKE '%50\\%%'"),
    Q("SELECT id, remark FROM user_relation WHERE remark = ''"),
    Q("SELECT id FROM user_relation WHERE score > 9000"),
    Q("SELECT id FROM user_relation WHERE score BETWEEN -10 AND 10"),
    Q("SELECT id FROM user_relation WHERE created_at = '2024-01-01 12:00:00'"),
    Q("SELECT id, target_uid - uid AS d FROM user_relation WHERE target_uid < 0"),
    Q("SELECT id FROM user_relation WHERE remark = 'with \\'quote\\''"),
    Q("SELECT id FROM user_relation WHERE remark = 'back\\\\slash'"),
    Q("SELECT * FROM user_fans WHERE level IS NULL"),
    Q("SELECT id, fan_uid FROM user_fans WHERE level > 7"),
    # -- ORDER BY / LIMIT ---------------------------------------------------------------
    O("SELECT * FROM user_relation ORDER BY id LIMIT 10"),
    O("SELECT * FROM user_relation ORDER BY id DESC LIMIT 10"),
    O("SELECT * FROM user_relation ORDER BY created_at DESC, id LIMIT 20"),
    O("SELECT * FROM user_relation ORDER BY created_at, id DESC LIMIT 20"),
    O("SELECT id, score FROM user_relation ORDER BY score, id LIMIT 25"),
    O("SELECT id, score FROM user_relation ORDER BY score DESC, id LIMIT 25"),
    O("SELECT id, score FROM user_relation ORDER BY score, id LIMIT 7, 13"),
    O("SELECT id, remark FROM user_relation ORDER BY remark, id LIMIT 60"),
    O("SELECT id, remark FROM user_relation ORDER BY remark DESC, id LIMIT 60"),
    O("SELECT id FROM user_relation ORDER BY remark, score DESC, id LIMIT 40"),
    O("SELECT id FROM user_relation ORDER BY created_at DESC, id"),
    O("SELECT id, uid FROM user_relation WHERE uid IN (5, 7) ORDER BY uid DESC, id"),
    O("SELECT id, uid FROM user_relation WHERE uid BETWEEN 1 AND 20 ORDER BY id LIMIT 5 OFFSET 3"),
    O("SELECT * FROM user_relation ORDER BY 2, 1 LIMIT 30"),
    O("SELECT id, uid FROM user_relation ORDER BY 2 DESC, 1 LIMIT 30"),
    O("SELECT *, uid * 2 AS d FROM user_relation ORDER BY d, id LIMIT 10"),
    O("SELECT id, uid * 2 AS d FROM user_relation ORDER BY d DESC, id LIMIT 10"),
    O("SELECT id, uid FROM user_relation ORDER BY uid % 7, id LIMIT 15"),
    O("SELECT id FROM user_relation ORDER BY id LIMIT 0"),
    O("SELECT id FROM user_relation ORDER BY id LIMIT 2995, 10"),
    O("SELECT id, level FROM user_fans ORDER BY level DESC, id LIMIT 30"),
    O("SELECT id, level FROM user_fans ORDER BY level, id LIMIT 30"),
    O("SELECT id, created_at FROM user_fans ORDER BY created_at, id LIMIT 12"),
    Q("SELECT id FROM user_relation LIMIT 5", any_rows=True),
    Q("SELECT DISTINCT uid FROM user_relation LIMIT 7", any_rows=True),
    # -- aggregates without GROUP BY -----------------------------------------------------
    Q("SELECT COUNT(*) FROM user_relation"),
    Q("SELECT COUNT(*) FROM user_fans"),
    Q("SELECT COUNT(*) FROM user_relation WHERE uid = 5"),
    Q("SELECT COUNT(*) FROM user_relation WHERE uid IN (5, 6, 7)"),
    Q("SELECT COUNT(*) FROM user_relation WHERE uid = 424242"),
    Q("SELECT COUNT(*), SUM(score) FROM user_relation WHERE relation_type = 99"),
    Q("SELECT COUNT(remark), COUNT(score), COUNT(1) FROM user_relation"),
    Q("SELECT SUM(score), MIN(score), MAX(score) FROM user_relation"),
    Q("SELECT AVG(score) FROM user_relation"),
    Q("SELECT AVG(uid), AVG(target_uid) FROM user_relation"),
    Q("SELECT AVG(score) AS a, COUNT(*) AS n FROM user_relation WHERE uid BETWEEN 1 AND 30"),
    Q("SELECT MIN(remark), MAX(remark) FROM user_relation"),
    Q("SELECT MIN(created_at), MAX(created_at) FROM user_relation"),
    Q("SELECT SUM(score * 2), MAX(target_uid - uid), MIN(uid % 13) FROM user_relation"),
    Q("SELECT SUM(relation_type), AVG(relation_type) FROM user_relation"),
    Q("SELECT MAX(uid), MIN(uid) FROM user_relation"),
    Q("SELECT SUM(level), AVG(level), COUNT(level) FROM user_fans"),
    Q("SELECT COUNT(*) FROM user_relation WHERE remark IS NULL"),
    Q("SELECT SUM(score) / COUNT(*) AS mean FROM user_relation"),
    Q("SELECT COUNT(*) * 2 AS twice FROM user_relation"),
    # -- GROUP BY / HAVING ---------------------------------------------------------------
    Q("SELECT uid, COUNT(*) FROM user_relation GROUP BY uid"),
    O("SELECT uid, COUNT(*) FROM user_relation GROUP BY uid ORDER BY uid"),
    O("SELECT uid, COUNT(*) AS n FROM user_relation GROUP BY uid ORDER BY n DESC, uid LIMIT 10"),
    O("SELECT relation_type, COUNT(*), SUM(score), AVG(score), MIN(score), MAX(score) FROM user_relation GROUP BY relation_type"),
    O("SELECT relation_type, AVG(score) AS a FROM user_relation GROUP BY relation_type ORDER BY a DESC"),
    O("SELECT relation_type AS t, COUNT(*) AS n FROM user_relation GROUP BY t HAVING n > 300 ORDER BY t"),
    O("SELECT relation_type, COUNT(*) FROM user_relation GROUP BY relation_type HAVING COUNT(*) > 300 AND MAX(score) > 0 ORDER BY 1"),
    O("SELECT relation_type, COUNT(*) FROM user_relation GROUP BY relation_type HAVING SUM(score) < 0 OR COUNT(*) < 400 ORDER BY 1"),
    Q("SELECT remark, COUNT(*) FROM user_relation GROUP BY remark"),
    O("SELECT remark, COUNT(*) FROM user_relation GROUP BY remark ORDER BY remark"),
    O("SELECT remark FROM user_relation GROUP BY 1 ORDER BY COUNT(*) DESC, 1 LIMIT 3"),
    O("SELECT uid % 7 AS g, SUM(score) / COUNT(*) AS x FROM user_relation GROUP BY g ORDER BY 2 DESC, 1"),
    O("SELECT uid % 10 AS bucket, SUM(score * 2), MAX(target_uid - uid) FROM user_relation GROUP BY bucket ORDER BY bucket"),
    O("SELECT relation_type, uid % 3 AS m, COUNT(*) FROM user_relation GROUP BY relation_type, m ORDER BY relation_type, m"),
    O("SELECT COUNT(*) AS n, relation_type FROM user_relation GROUP BY 2 ORDER BY n DESC, 2"),
    Q("SELECT uid, COUNT(*) FROM user_relation WHERE uid IN (5, 7, 1029) GROUP BY uid"),
    Q("SELECT uid, MAX(created_at), MIN(id) FROM user_relation GROUP BY uid HAVING COUNT(*) > 20"),
    O("SELECT level, COUNT(*) FROM user_fans GROUP BY level ORDER BY level"),
    O("SELECT level, COUNT(*) FROM user_fans GROUP BY level ORDER BY level DESC"),
    Q("SELECT uid, COUNT(*) FROM user_fans GROUP BY uid HAVING COUNT(*) BETWEEN 2 AND 4"),
    O("SELECT relation_type, COUNT(*) FROM user_relation GROUP BY relation_type HAVING relation_type IN (1, 3) ORDER BY 1"),
    O("SELECT relation_type, COUNT(*) FROM user_relation WHERE score IS NOT NULL GROUP BY relation_type HAVING AVG(score) > 100 ORDER BY 1"),
    O("SELECT relation_type, SUM(score) - MIN(score) AS spread FROM user_relation GROUP BY relation_type ORDER BY spread, 1"),
    O("SELECT remark, COUNT(*) FROM user_relation GROUP BY remark HAVING remark IS NOT NULL ORDER BY 2 DESC, 1 LIMIT 5"),
    O("SELECT uid, AVG(score) FROM user_relation WHERE uid BETWEEN 1 AND 3 GROUP BY uid HAVING COUNT(*) > 1 ORDER BY 2 DESC"),
    # -- DISTINCT -----------------------------------------------------------------------
    Q("SELECT DISTINCT remark FROM user_relation"),
    Q("SELECT DISTINCT relation_type, remark FROM user_relation"),
    O("SELECT DISTINCT uid FROM user_relation ORDER BY uid DESC LIMIT 5"),
    O("SELECT DISTINCT relation_type, remark FROM user_relation ORDER BY 1, 2"),
    O("SELECT DISTINCT uid % 5 AS m FROM user_relation ORDER BY m"),
    O("SELECT DISTINCT remark FROM user_relation ORDER BY remark LIMIT 5"),
    O("SELECT DISTINCT relation_type FROM user_relation ORDER BY 1 DESC LIMIT 3"),
    O("SELECT DISTINCT relation_type, remark FROM user_relation ORDER BY 2 DESC, 1 LIMIT 4, 6"),
    Q("SELECT DISTINCT level FROM user_fans"),
    Q("SELECT COUNT(DISTINCT remark) FROM user_relation"),
    Q("SELECT COUNT(DISTINCT uid), COUNT(*) FROM user_relation"),
    Q("SELECT COUNT(DISTINCT uid, relation_type) FROM user_relation"),
    Q("SELECT COUNT(DISTINCT target_uid), SUM(score) FROM user_relation WHERE uid > 5"),
    O("SELECT relation_type, COUNT(DISTINCT uid), SUM(DISTINCT score), AVG(DISTINCT score) FROM user_relation GROUP BY relation_type"),
    O("SELECT relation_type, AVG(score) AS a, COUNT(DISTINCT uid) FROM user_relation GROUP BY relation_type HAVING COUNT(*) > 10 ORDER BY a DESC"),
    Q("SELECT SUM(DISTINCT relation_type), AVG(DISTINCT uid) FROM user_relation"),
    Q("SELECT COUNT(DISTINCT level), COUNT(DISTINCT uid) FROM user_fans"),
    O("SELECT DISTINCT COUNT(*) FROM user_relation GROUP BY relation_type ORDER BY 1"),
    # -- joins ----------------------------------------------------------------------------
    Q("SELECT r.id, f.id FROM user_relation r JOIN user_fans f ON r.uid = f.uid WHERE r.uid IN (5, 7)"),
    Q("SELECT r.id, f.id FROM user_relation r JOIN user_fans f ON r.uid = f.uid"),
    Q("SELECT r.id, f.id FROM user_relation r JOIN user_fans f ON f.uid = r.uid WHERE f.uid = 5"),
    Q("SELECT r.id, f.level FROM user_relation r LEFT JOIN user_fans f ON f.uid = r.uid AND f.level > 5 WHERE r.uid BETWEEN 1 AND 5"),
    Q("SELECT COUNT(*) FROM user_relation r JOIN user_fans f ON r.uid = f.uid"),
    O("SELECT r.uid, COUNT(*) AS n FROM user_relation r JOIN user_fans f ON r.uid = f.uid GROUP BY r.uid ORDER BY n DESC, r.uid LIMIT 5"),
    Q("SELECT user_relation.id FROM user_relation JOIN user_fans USING (uid) WHERE uid = 12"),
    Q("SELECT r.id, g.name FROM user_relation r JOIN region g ON g.region_id = r.relation_type WHERE r.uid = 8"),
    Q("SELECT r.id, g.name FROM user_relation r JOIN region g ON g.region_id = r.relation_type WHERE r.uid > 100"),
    O("SELECT g.name, COUNT(*) FROM user_relation r JOIN region g ON g.region_id = r.relation_type GROUP BY g.name ORDER BY g.name"),
    Q("SELECT a.id, b.id FROM user_relation a JOIN user_relation b ON a.uid = b.uid AND a.id < b.id WHERE a.uid = 7"),
    Q("SELECT r.id FROM user_relation r JOIN user_fans f ON f.fan_uid = r.target_uid WHERE r.uid = 5 AND f.uid = 1029"),
    Q("SELECT * FROM region"),
    O("SELECT * FROM region ORDER BY name"),
    Q("SELECT name FROM region WHERE region_id IN (1, 7, 9)"),
    # -- subqueries -----------------------------------------------------------------------
    Q("SELECT id FROM user_relation WHERE uid = 5 AND target_uid IN (SELECT fan_uid FROM user_fans WHERE uid = 5)"),
    Q("SELECT id FROM user_relation r WHERE EXISTS (SELECT 1 FROM user_fans f WHERE f.uid = r.uid AND f.level > 5)"),
    Q("SELECT id FROM user_relation r WHERE NOT EXISTS (SELECT 1 FROM user_fans f WHERE f.uid = r.uid)"),
    Q("SELECT COUNT(*) FROM (SELECT DISTINCT target_uid FROM user_relation WHERE uid = 3) d"),
    Q("SELECT id FROM user_relation WHERE relation_type IN (SELECT region_id FROM region WHERE name LIKE 'n%')"),
    Q("SELECT id, (SELECT name FROM region g WHERE g.region_id = r.relation_type) AS rn FROM user_relation r WHERE uid IN (1, 2)"),
    Q("SELECT id FROM user_relation WHERE uid = 1 UNION ALL SELECT id FROM user_fans WHERE uid = 2"),
    Q("SELECT uid FROM user_relation WHERE uid = 1 UNION SELECT uid FROM user_fans WHERE uid = 1"),
    # -- templates with parameters, as the driver sends them --------------------------------
    Q("SELECT * FROM user_relation WHERE uid = %s", (1029,)),
    Q("SELECT * FROM user_relation WHERE uid = %s AND relation_type = %s", (5, 1)),
    Q("SELECT * FROM user_relation WHERE uid IN %s", ([5, 7, 1029],)),
    Q("SELECT id FROM user_relation WHERE uid BETWEEN %s AND %s", (1, 12)),
    Q("SELECT id FROM user_relation WHERE remark = %s", ("café",)),
    Q("SELECT id FROM user_relation WHERE remark = %(r)s AND uid > %(u)s", {"r": "中文备注", "u": 0}),
    O("SELECT id, uid FROM user_relation ORDER BY id LIMIT %s OFFSET %s", (5, 40)),
    O("SELECT uid, COUNT(*) FROM user_relation WHERE uid IN %s GROUP BY uid ORDER BY uid", ([1, 2, 3, 1025],)),
    Q("SELECT id FROM user_relation WHERE remark LIKE %s", ("percent 50%%",)),
    Q("SELECT id FROM user_relation WHERE remark LIKE 'percent 50%%' AND uid > %s", (0,)),
    # -- text and NULL edges --------------------------------------------------------------
    O("SELECT id, remark FROM user_relation WHERE remark IN ('Zürich', 'Ölfeld', 'straße', 'ÆON') ORDER BY remark, id"),
    O("SELECT id, remark FROM user_relation WHERE remark > 'm' ORDER BY remark DESC, id LIMIT 30"),
    Q("SELECT id FROM user_relation WHERE remark = 'emoji 😀'"),
    Q("SELECT remark, LENGTH(remark), CHAR_LENGTH(remark) FROM user_relation WHERE uid = 5"),
    O("SELECT name FROM region ORDER BY name DESC"),
    Q("SELECT COUNT(*), COUNT(remark) FROM user_relation WHERE uid IN (-1, -2, -1024, -1025, -77777)"),
    O("SELECT uid, COUNT(*) FROM user_relation WHERE uid < 0 GROUP BY uid ORDER BY uid"),
    Q("SELECT 1 + 1 AS two"),
    Q("SELECT id FROM user_relation WHERE uid = 5 AND remark IS NOT NULL AND score IS NULL"),
]

REFUSED = [
    ("SELECT uid, RANK() OVER (ORDER BY score) FROM user_relation", 1235),
    ("SELECT * FROM user_relation r JOIN user_fans f ON f.uid = r.target_uid", 1235),
    ("SELECT id FROM user_relation r WHERE EXISTS (SELECT 1 FROM user_fans f WHERE f.fan_uid = r.uid)", 1235),
    ("SELECT uid, GROUP_CONCAT(remark) FROM user_relation GROUP BY uid", 1235),
    ("SELECT COUNT(*) FROM (SELECT uid FROM user_relation GROUP BY uid) d", 1235),
    ("SELECT id FROM user_relation ORDER BY id LIMIT 100000, 10", 1235),
    ("UPDATE user_relation SET remark = 'x' WHERE id = 3", 1290),
    ("UPDATE user_relation SET uid = 6 WHERE uid = 5", 1235),
    ("INSERT INTO user_relation (id, target_uid) VALUES (99999, 2)", 1235),
    ("SELECT 1; SELECT 2", 1235),
    ("SELECT /*! 1 */ * FROM user_relation", 1235),
    ("SELECT * FROM user_relation r JOIN audit_log a ON a.id = r.id", 1146),
]


def test_enough_distinct_queries():
    assert len({repr(q) for q in QUERIES}) >= 150


@pytest.mark.parametrize("q", QUERIES, ids=[f"{i:03d}" for i in range(len(QUERIES))])
def test_same_answer_as_reference(env, q):
    names, want, _ = env.reference(q.sql, q.params)
    result = env.run(q.sql, q.params)
    got_names = [c.name for c in result.columns]
    assert got_names == names, f"column names differ for {q}"
    if q.any_rows:
        full = env.reference(q.sql.rsplit(" LIMIT ", 1)[0], q.params)[1]
        got = env.canon_rows(result.rows)
        assert len(got) == len(want) and len(set(got)) == len(got) and set(got) <= set(env.canon_rows(full)), q
        return
    assert env.same_rows(result.rows, want, q.ordered), (
        f"{q}\nwant {len(want)} rows: {env.canon_rows(want)[:8]}\ngot  {len(result.rows)} rows: {env.canon_rows(result.rows)[:8]}")


@pytest.mark.parametrize("sql,errno", REFUSED, ids=[f"refused-{i:02d}" for i in range(len(REFUSED))])
def test_refused_before_reaching_a_backend(env, sql, errno):
    class Exploding:
        def run(self, batch):  # pragma: no cover - must never be called
            raise AssertionError(f"reached a backend: {batch}")

    with pytest.raises(err.Error) as info:
        from mdriver.router import run_sync

        run_sync(env.router.plan(sql, "app", None), Exploding())
    assert info.value.args[0] == errno
    assert len(info.value.args[1]) > 20


def test_rows_are_on_their_physical_tables(env, mariadb_cluster):
    """Placement of rows written through the router, checked directly on the physical tables."""
    from mdriver.sharding import all_locations, locate

    schema = env.config.schemas["app"]
    rule = schema.tables["user_relation"]
    rows = env.reference("SELECT id, uid FROM user_relation WHERE id % 97 = 0")[1]
    assert len(rows) > 20
    conns = {name: mariadb_cluster.connect(name) for name in env.config.datasources}
    try:
        for rid, uid in rows:
            loc = locate(schema, rule, uid)
            with conns[loc.datasource].cursor() as cur:
                cur.execute(f"SELECT uid FROM `{loc.database}`.`{loc.table}` WHERE id = %s", (rid,))
                assert cur.fetchall() == ((uid,),), f"row {rid} (uid {uid}) is not in {loc}"
        # and nowhere else: count the sampled ids over every physical table, directly
        ids = ", ".join(str(rid) for rid, _ in rows)
        per_db: dict = {}
        for loc in all_locations(schema, rule):
            per_db.setdefault((loc.datasource, loc.database), []).append(
                f"SELECT id FROM `{loc.database}`.`{loc.table}` WHERE id IN ({ids})")
        found = 0
        for (ds, _db), selects in per_db.items():
            with conns[ds].cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM (" + " UNION ALL ".join(selects) + ") x")
                found += cur.fetchone()[0]
        assert found == len(rows)
    finally:
        for c in conns.values():
            c.close()
