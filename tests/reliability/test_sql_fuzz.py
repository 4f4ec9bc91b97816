"""SQL fuzzing: generated SELECTs over the sharded schema, through the driver and through the
proxy, checked against the unsharded reference database. A different answer is a failure;
a refusal is allowed if it is a clear MySQL error (1235 not supported, 1290 prevented by
config, 1210 wrong arguments). The refusals are counted by reason and reported.

The generators are the router suite's (row queries and aggregates over user_relation),
plus joins over the bound tables and the broadcast table, UNIONs and subqueries.
"""
from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mdriver
from reliability_helpers import (
    DB_ERRORS, canon_rows, empty_tables, errno_of, generous_timeouts, load_router_dataset, message_of, router_query_strategies,
    same_rows, variant_config,
)

REFUSAL_ERRNOS = {1235, 1290, 1210}
KEYS = [5, 7, 1029, -1, 0, 12, 33, 1024, 2048, 3107, 100000, -1025]


@st.composite
def join_query(draw) -> tuple[str, bool]:
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True))
    where = draw(st.sampled_from([
        f"r.uid = {keys[0]}", f"r.uid IN ({', '.join(map(str, keys))})", f"f.uid = {keys[0]}", "r.relation_type = 2",
        f"r.uid BETWEEN {keys[0]} AND {keys[0] + draw(st.integers(0, 40))}", "f.level IS NULL", "1 = 1",
    ]))
    kind = draw(st.sampled_from(["bound", "bound_agg", "broadcast", "off_key", "subquery", "union", "exists"]))
    if kind == "bound":
        sql = (f"SELECT r.id, r.uid, f.id, f.fan_uid, f.level FROM user_relation r JOIN user_fans f ON f.uid = r.uid "
               f"WHERE {where} ORDER BY r.id, f.id")
        if draw(st.booleans()):
            sql += f" LIMIT {draw(st.integers(0, 25))}"
        return sql, True
    if kind == "bound_agg":
        return (f"SELECT r.uid, COUNT(*), MAX(f.level), SUM(r.score) FROM user_relation r JOIN user_fans f ON f.uid = r.uid "
                f"WHERE {where} GROUP BY r.uid ORDER BY r.uid LIMIT {draw(st.integers(1, 30))}"), True
    if kind == "broadcast":
        return (f"SELECT r.id, g.name FROM user_relation r JOIN region g ON g.region_id = r.relation_type "
                f"WHERE {where.replace('f.', 'r.')} ORDER BY r.id LIMIT {draw(st.integers(1, 40))}"), True
    if kind == "off_key":  # not on the shard key: the rows to join may live on other shards
        return (f"SELECT r.id, f.id FROM user_relation r JOIN user_fans f ON f.fan_uid = r.target_uid "
                f"WHERE r.uid = {keys[0]} ORDER BY r.id, f.id"), True
    if kind == "subquery":
        return (f"SELECT COUNT(*) FROM user_relation WHERE uid IN (SELECT uid FROM user_fans WHERE level > "
                f"{draw(st.integers(0, 9))})"), False
    if kind == "exists":
        return (f"SELECT r.id FROM user_relation r WHERE r.uid = {keys[0]} AND EXISTS "
                f"(SELECT 1 FROM user_fans f WHERE f.uid = r.uid AND f.level > 3) ORDER BY r.id"), True
    return (f"SELECT uid FROM user_relation WHERE uid = {keys[0]} UNION SELECT uid FROM user_fans WHERE uid = "
            f"{keys[-1]} ORDER BY uid"), True



def reason(message: str) -> str:
    """A refusal message without its specifics (names, numbers), to count refusals by reason."""
    text = re.sub(r"'[^']*'|`[^`]*`|\b\d+\b", "…", message)
    return re.split(r" \(|: |; ", text)[0][:90]


class Fuzz:
    def __init__(self, ref, arms: dict):
        self.ref = ref
        self.arms = arms  # name -> DB-API connection
        self.ran: Counter = Counter()
        self.answered: Counter = Counter()
        self.refused: Counter = Counter()  # (arm, errno, reason)
        self.wrong: list[str] = []
        self.skipped = 0

    @staticmethod
    def _run(conn, sql):
        with conn.cursor() as cur:
            cur.execute(sql)
            names = [d[0] for d in cur.description] if cur.description else []
            return names, cur.fetchall()

    def check(self, query: tuple[str, bool]) -> None:
        sql, ordered = query
        try:
            want_names, want = self._run(self.ref, sql)
        except DB_ERRORS:
            self.skipped += 1  # not valid MySQL to begin with: nothing to compare
            return
        for arm, conn in self.arms.items():
            self.ran[arm] += 1
            try:
                names, got = self._run(conn, sql)
            except DB_ERRORS as e:
                code = errno_of(e)
                if code not in REFUSAL_ERRNOS or len(message_of(e)) < 20:
                    self.wrong.append(f"{arm}: {sql}\n  refused with ({code}) {message_of(e)}")
                    raise AssertionError(self.wrong[-1])
                self.refused[(arm, code, reason(message_of(e)))] += 1
                continue
            if names != want_names or not same_rows(got, want, ordered):
                self.wrong.append(f"{arm}: {sql}\n  want {want_names} {canon_rows(want)[:5]} ({len(want)})\n"
                                  f"  got  {names} {canon_rows(got)[:5]} ({len(got)})")
                raise AssertionError(self.wrong[-1])
            self.answered[arm] += 1


@pytest.fixture(scope="module")
def fuzz_data(mariadb_cluster):
    load_router_dataset(mariadb_cluster)
    yield mariadb_cluster
    empty_tables(mariadb_cluster)


def test_generated_queries_match_the_reference(fuzz_data, start_proxy, figures, tmp_path, long_run):
    cluster = fuzz_data
    gen = router_query_strategies()
    path = variant_config(cluster.config_path, tmp_path / "fuzz.yaml", timeouts=None, edit=generous_timeouts)
    proxy = start_proxy(path)
    ref = cluster.connect(cluster.reference_datasource, cluster.reference_database)
    driver = mdriver.connect(config=path, schema="app", autocommit=True)
    via_proxy = proxy.connect()
    fuzz = Fuzz(ref, {"driver": driver, "proxy": via_proxy})
    examples = 1500 if long_run else 200

    @settings(max_examples=examples, deadline=None, database=None, derandomize=not long_run,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(st.one_of(gen.row_query(), gen.aggregate_query(), join_query()))
    def run(query):
        fuzz.check(query)

    try:
        run()
    finally:
        for c in (driver, via_proxy, ref):
            c.close()
    refused_total = sum(fuzz.refused.values())
    by_reason: Counter = Counter()
    for (arm, code, why), n in fuzz.refused.items():
        by_reason[(code, why)] += n
    figures.add("sql", "generated queries run (driver + proxy)", sum(fuzz.ran.values()))
    figures.add("sql", "answered, and equal to the reference", sum(fuzz.answered.values()))
    figures.add("sql", "wrong answers", len(fuzz.wrong))
    figures.add("sql", "refused", refused_total)
    for (code, why), n in by_reason.most_common():
        figures.add("sql", f"refused ({code}): {why}", n)
    driver_refusals = Counter({(c, w): n for (a, c, w), n in fuzz.refused.items() if a == "driver"})
    proxy_refusals = Counter({(c, w): n for (a, c, w), n in fuzz.refused.items() if a == "proxy"})
    assert not fuzz.wrong, fuzz.wrong[:3]
    assert fuzz.ran["driver"] == fuzz.ran["proxy"] > examples // 2
    assert sum(fuzz.answered.values()) > refused_total, "mostly refusals: the generators test nothing"
    # The driver and the proxy share the router: they must refuse the same queries for the same reasons.
    assert driver_refusals == proxy_refusals, (driver_refusals, proxy_refusals)
