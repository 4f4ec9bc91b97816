"""The Router API the driver and the proxy build on: plans, the execute protocol, the plan cache.

Backends here are small in-memory stand-ins for servers (they answer each
physical statement with a canned result); the router code under test is real.
"""
from __future__ import annotations

import asyncio
import copy
import pathlib
import threading
from decimal import Decimal

import pytest
import yaml

from mdriver import err
from mdriver.config import build_config, load_config
from mdriver.router import Column, PlanCache, Result, Router, ShardQuery, ShardResult, run_async, run_sync
from mdriver.router import planner
from mdriver.router.types import decimal_column, int_column

CONFIG_PATH = pathlib.Path(__file__).resolve().parents[3] / "config" / "sharding.yaml"


@pytest.fixture(scope="module")
def config():
    return load_config(str(CONFIG_PATH))


@pytest.fixture
def router(config):
    return Router(config)


class Canned:
    """Answers every statement with ``answer(query)``; records the batches."""

    def __init__(self, answer):
        self.answer = answer
        self.batches: list[list[ShardQuery]] = []

    def run(self, batch):
        self.batches.append(list(batch))
        return [self.answer(q) for q in batch]


class AsyncCanned(Canned):
    async def run(self, batch):  # type: ignore[override]
        await asyncio.sleep(0)
        return Canned.run(self, batch)


def test_point_plan_attributes(router):
    plan = router.plan("SELECT * FROM user_relation WHERE uid = %s", "app", (1029,))
    assert plan.kind == "select" and not plan.is_write and not plan.force_primary
    assert plan.tables == ("user_relation",) and plan.schema == "app"
    assert plan.single == ShardQuery("ds0", "app_00", "SELECT * FROM `app_00`.`user_relation_0005` AS `user_relation` WHERE uid = 1029")
    assert plan.preview() == [plan.single]


def test_single_statement_result_is_passed_through(router):
    cols = (int_column("id"),)
    backend = Canned(lambda q: ShardResult(cols, [(1,), (2,)], 0, 0, 1))
    result = run_sync(router.plan("SELECT id FROM user_relation WHERE uid = 3", "app", None), backend)
    assert result == Result(cols, [(1,), (2,)], 0, 0, 1)
    assert len(backend.batches) == 1 and len(backend.batches[0]) == 1


def test_scatter_count_merges_one_row_per_database(router):
    plan = router.plan("SELECT COUNT(*) FROM user_relation", "app", None)
    assert plan.single is None
    backend = Canned(lambda q: ShardResult((int_column("COUNT(*)"),), [(1,)] * q.sql.count("SELECT COUNT(*)")))
    result = run_sync(plan, backend)
    assert result.rows == [(1024,)]
    batch = backend.batches[0]
    assert len(batch) == 32 and {q.datasource for q in batch} == {"ds0", "ds1"}
    assert all(q.sql.count("UNION ALL") == 31 for q in batch)


def test_generator_protocol_by_hand(router):
    plan = router.plan("SELECT AVG(score) FROM user_relation WHERE uid IN (1, 2)", "app", None)
    gen = plan.execute()
    batch = next(gen)
    assert [q.database for q in batch] == ["app_00"]
    cols = (decimal_column("SUM(score)", 2), int_column("COUNT(score)"))
    with pytest.raises(StopIteration) as stop:
        gen.send([ShardResult(cols, [(Decimal("1.00"), 1), (Decimal("2.00"), 2)])])
    result = stop.value.value
    assert result.rows == [(Decimal("1.000000"),)]
    assert [c.name for c in result.columns] == ["AVG(score)"]


def test_insert_split_sums_rows_and_reports_the_first_rows_insert_id(router):
    plan = router.plan("INSERT INTO user_relation (id, uid, target_uid) VALUES (%s, %s, 1), (%s, %s, 1), (%s, %s, 1)",
                       "app", (7, 1000, 8, 5, 9, 1000))
    assert plan.is_write and plan.kind == "insert" and plan.single is None
    ids = {"app_31": 70, "app_00": 80}
    backend = Canned(lambda q: ShardResult((), [], q.sql.count("), (") + 1, ids[q.database]))
    result = run_sync(plan, backend)
    assert result.affected_rows == 3 and result.insert_id == 70


def test_broadcast_write_answers_with_the_home_copy(router):
    plan = router.plan("UPDATE region SET name = 'x' WHERE region_id = 1", "app", None)
    backend = Canned(lambda q: ShardResult((), [], 1 if q.database == "app" else 0))
    result = run_sync(plan, backend)
    assert result.affected_rows == 1 and len(backend.batches[0]) == 33


def test_preview_runs_nothing(router):
    plan = router.plan("PREVIEW SELECT * FROM user_relation WHERE uid IN (1, 2, 1025)", "app", None)
    backend = Canned(lambda q: pytest.fail("PREVIEW must not run anything"))
    result = run_sync(plan, backend)
    assert [c.name for c in result.columns] == ["datasource", "database", "sql"]
    assert result.rows == [("ds0", "app_00", q.sql) for q in router.preview("SELECT * FROM user_relation WHERE uid IN (1, 2, 1025)")]
    assert backend.batches == []


def test_run_async(router):
    backend = AsyncCanned(lambda q: ShardResult((int_column("n"),), [(2,)]))
    result = asyncio.run(run_async(router.plan("SELECT COUNT(*) AS n FROM user_fans", "app", None), backend))
    assert result.rows == [(64,)]


def test_backend_errors_propagate_and_close_the_plan(router):
    class Failing:
        def run(self, batch):
            raise err.error(err.BackendError, err.CR_CONNECTION_ERROR, "datasource ds1 (127.0.0.1:1) is down")

    with pytest.raises(err.BackendError):
        run_sync(router.plan("SELECT COUNT(*) FROM user_relation", "app", None), Failing())


def test_a_backend_that_loses_results_is_an_interface_error(router):
    with pytest.raises(err.InterfaceError):
        run_sync(router.plan("SELECT COUNT(*) FROM user_relation", "app", None), _Short())


class _Short:
    def run(self, batch):
        return [ShardResult((int_column("c"),), [(0,)])]


def test_cache_hit_never_parses(router, monkeypatch):
    router.plan("SELECT * FROM user_relation WHERE uid = 1", "app", None)

    def boom(*a, **k):
        raise AssertionError("parsed on a cache hit")

    monkeypatch.setattr(planner.sqlglot, "parse_one", boom)
    for uid in range(2, 50):
        plan = router.plan(f"SELECT * FROM user_relation WHERE uid = {uid}", "app", None)
        assert plan.single.database == f"app_{uid // 32:02d}"
    plan = router.plan("SELECT * FROM user_relation WHERE uid = %s", "app", (77,))
    assert plan.single.sql.endswith("uid = 77")


def test_hit_rate_on_varying_literals(router):
    for i in range(2000):
        router.plan(f"SELECT id, remark FROM user_relation WHERE uid = {i * 7919} AND relation_type = {i % 4}", "app", None)
    stats = router.cache.stats()
    assert stats["misses"] == 1 and stats["hit_rate"] >= 0.99


def test_refusals_are_cached_too(router, monkeypatch):
    with pytest.raises(err.NotSupportedError):
        router.plan("SELECT uid, RANK() OVER (ORDER BY id) FROM user_relation", "app", None)
    monkeypatch.setattr(planner.sqlglot, "parse_one", lambda *a, **k: pytest.fail("parsed again"))
    with pytest.raises(err.NotSupportedError) as e:
        router.plan("SELECT uid, RANK() OVER (ORDER BY id) FROM user_relation", "app", None)
    assert e.value.args[0] == 1235


def test_lru_eviction_and_stats():
    cache = PlanCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    s = cache.stats()
    assert (s["size"], s["evictions"], s["hits"], s["misses"]) == (2, 1, 3, 1)


def test_a_new_config_revision_never_hits_old_plans(config):
    shared = PlanCache(100)
    r1 = Router(config, shared)
    r1.plan("SELECT * FROM user_relation WHERE uid = 1", "app", None)
    doc = yaml.safe_load(open(CONFIG_PATH))
    doc = copy.deepcopy(doc)
    for t in ("user_relation", "user_fans"):
        doc["schemas"]["app"]["tables"][t]["placement"] = {"ds1": "0-15", "ds0": "16-31"}
    r2 = Router(build_config(doc), shared)
    plan = r2.plan("SELECT * FROM user_relation WHERE uid = 1", "app", None)
    assert plan.single.datasource == "ds1"
    assert shared.stats()["misses"] == 2


def test_concurrent_planning_is_consistent(router):
    errors = []

    def work(base):
        try:
            for i in range(300):
                uid = base * 1000 + i
                sql = ("SELECT * FROM user_relation WHERE uid = %s" if i % 2 else
                       "SELECT COUNT(*) FROM user_relation WHERE uid IN (%s, %s)")
                args = (uid,) if i % 2 else (uid, uid + 1)
                plan = router.plan(sql, "app", args)
                if i % 2:
                    assert plan.single.sql.endswith(f"uid = {uid}")
                    assert plan.single.database == f"app_{(uid % 1024) // 32:02d}"
                else:
                    assert len(plan.preview()) in (1, 2)
        except Exception as e:  # noqa: BLE001 - collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_unknown_schema(router):
    with pytest.raises(err.ProgrammingError) as e:
        router.plan("SELECT 1", "nope", None)
    assert e.value.args == (1049, "Unknown database 'nope'")


def test_column_defaults_describe_a_text_column():
    c = Column("x")
    assert (c.type_code, c.charset, c.decimals) == (253, 45, 0)


def test_recipes_render_exactly_like_a_fresh_scan(router):
    """The second time a DB-API text comes, its recipe replaces the scan; the SQL must not change."""
    import pymysql
    from hypothesis import given, settings
    from hypothesis import strategies as st

    conn = pymysql.connections.Connection(defer_connect=True, charset="utf8mb4")
    conn.server_status = 0
    sql = "SELECT %s, %s FROM audit_log WHERE note LIKE '5%%' AND id = %s"

    @settings(max_examples=150, deadline=None)
    @given(st.tuples(st.one_of(st.text(max_size=8), st.integers(), st.none(), st.binary(max_size=4)),
                     st.one_of(st.text(max_size=8), st.floats(allow_nan=False, allow_infinity=False)),
                     st.integers()))
    def check(args):
        assert router.plan(sql, "app", args).single.sql == conn.cursor().mogrify(sql, args)

    check()
    assert len(router.recipes) == 1


def test_recipe_falls_back_to_a_scan_for_other_shapes(router):
    sql = "SELECT * FROM user_relation WHERE uid IN %s AND relation_type = %s"
    assert router.plan(sql, "app", ([1], 2)).single.sql.endswith("uid IN (1) AND relation_type = 2")
    assert len(router.preview(sql, "app", ([1, 2, 3], 2))) == 1
    with pytest.raises(err.ProgrammingError):
        router.plan("SELECT * FROM user_relation WHERE uid = %s", "app", (1, 2))
    router.plan("SELECT * FROM user_relation WHERE uid = %(u)s", "app", {"u": 1})
    with pytest.raises(err.ProgrammingError):
        router.plan("SELECT * FROM user_relation WHERE uid = %(u)s", "app", {"v": 1})
