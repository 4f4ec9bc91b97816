"""Benchmark the router: plan-cache hits and misses, hit rate, and a COUNT(*) over 1024 tables.

1. Plan-cache hit: ``Router.plan()`` of a point query (normalization, cache
   lookup, binding, rendering), each call timed on its own; median in us.
   Target: at most 10 us, and at least 20x faster than a miss.
2. Plan-cache miss: the same call with the cache emptied first (parse and plan).
3. Hit rate over a workload of point queries with varying literals. Target: >= 99%.
4. ``SELECT COUNT(*) FROM user_relation`` through the router vs. a hand-written
   statement per physical database (``SELECT COUNT(*) FROM t_0000 UNION ALL ...``),
   both run by the same backend with the same parallelism, arms interleaved.
   Target: router / hand-written <= 1.5.

Parts 1-3 need no server. Part 4 uses running servers (``--config``) or
starts two temporary ones (``--self-contained``); ``--no-servers`` skips it.

    .venv/bin/python bench/bench_router.py --self-contained
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mdriver.config import load_config  # noqa: E402
from mdriver.router import Router, ShardQuery, run_sync  # noqa: E402
from mdriver.router.backend import SyncBackend  # noqa: E402
from mdriver.sharding import all_locations  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "config", "sharding.yaml")
POINT = "SELECT id, uid, target_uid, remark FROM user_relation WHERE uid = %s AND target_uid = %s"


def timed_calls(fn, n: int) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        fn()
        out.append((clock() - t0) / 1000.0)
    return out


def bench_cache(config, n: int) -> dict:
    router = Router(config)
    rnd = random.Random(7)
    router.plan(POINT, "app", (1, 2))  # warm: one miss

    params = [(rnd.randrange(1 << 40), rnd.randrange(10_000)) for _ in range(n)]
    pit = iter(params)

    def hit_pyformat():
        router.plan(POINT, "app", next(pit))

    literal_sql = [f"SELECT id, uid, target_uid, remark FROM user_relation WHERE uid = {rnd.randrange(1 << 40)} AND target_uid = 7"
                   for _ in range(n)]
    it = iter(literal_sql)

    def hit_literal():
        router.plan(next(it), "app", None)

    def miss():
        router.cache.clear()
        router.plan(POINT, "app", (123456789, 5))

    results = {"hit_pyformat": [], "hit_literal": [], "miss": []}
    rounds = 5
    for _ in range(rounds):  # interleave the arms
        results["hit_pyformat"] += timed_calls(hit_pyformat, n // rounds)
        results["hit_literal"] += timed_calls(hit_literal, n // rounds)
        results["miss"] += timed_calls(miss, max(20, n // (rounds * 50)))
    return {k: statistics.median(v) for k, v in results.items()}


def bench_hit_rate(config, n: int) -> float:
    router = Router(config)
    rnd = random.Random(11)
    templates = [
        lambda: ("SELECT * FROM user_relation WHERE uid = %d" % rnd.randrange(-10**9, 10**9), None),
        lambda: ("SELECT id, remark FROM user_relation WHERE uid = %s AND relation_type = %s", (rnd.randrange(10**9), rnd.randrange(4))),
        lambda: ("SELECT * FROM user_fans WHERE uid = %d AND level > %d" % (rnd.randrange(10**9), rnd.randrange(9)), None),
        lambda: ("UPDATE user_relation SET remark = '%s' WHERE uid = %d AND id = %d" % (rnd.choice("abc"), rnd.randrange(10**9), rnd.randrange(10**6)), None),
        lambda: ("INSERT INTO user_fans (id, uid, fan_uid) VALUES (%s, %s, %s)", (rnd.randrange(10**9), rnd.randrange(10**9), 1)),
        lambda: ("SELECT COUNT(*) FROM user_relation r JOIN user_fans f ON f.uid = r.uid WHERE r.uid = %d" % rnd.randrange(10**6), None),
    ]
    for _ in range(n):
        sql, params = rnd.choice(templates)()
        router.plan(sql, "app", params)
    return router.cache.stats()["hit_rate"]


def handwritten_count(config) -> list[ShardQuery]:
    schema = config.schemas["app"]
    per_db: dict[tuple[str, str], list[str]] = {}
    for loc in all_locations(schema, schema.tables["user_relation"]):
        per_db.setdefault((loc.datasource, loc.database), []).append(f"SELECT COUNT(*) FROM `{loc.database}`.`{loc.table}`")
    return [ShardQuery(ds, db, " UNION ALL ".join(parts)) for (ds, db), parts in per_db.items()]


def bench_scatter_count(config_path: str, rounds: int) -> dict:
    config = load_config(config_path)
    router = Router(config)
    backend = SyncBackend(config)
    try:
        _load_rows(router, backend)
        batch = handwritten_count(config)

        def arm_router():
            return run_sync(router.plan("SELECT COUNT(*) FROM user_relation", "app", None), backend).rows[0][0]

        def arm_hand():
            return sum(r[0] for res in backend.run(batch) for r in res.rows)

        assert arm_router() == arm_hand()
        times = {"router": [], "handwritten": []}
        for i in range(rounds):
            arms = [("router", arm_router), ("handwritten", arm_hand)]
            if i % 2:
                arms.reverse()
            for name, fn in arms:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        return {k: statistics.median(v) for k, v in times.items()}
    finally:
        backend.close()


def _load_rows(router: Router, backend: SyncBackend, n: int = 20_000) -> None:
    """Enough rows for COUNT(*) to read something (only if the table is nearly empty)."""
    have = run_sync(router.plan("SELECT COUNT(*) FROM user_relation", "app", None), backend).rows[0][0]
    if have >= n:
        return
    rnd = random.Random(3)
    for start in range(10_000_000, 10_000_000 + n, 1000):
        rows = [(start + i, rnd.randrange(1 << 30), rnd.randrange(1000)) for i in range(1000)]
        sql = "INSERT IGNORE INTO user_relation (id, uid, target_uid) VALUES " + ", ".join(["(%s, %s, %s)"] * len(rows))
        run_sync(router.plan(sql, "app", [v for r in rows for v in r]), backend)


@contextmanager
def temporary_servers() -> Iterator[str]:
    """Two private MariaDB servers with the 32 x 32 layout; yields a config path with their ports."""
    from mdriver.sandbox.cluster import MariaDBInstance, free_port, start_all, stop_all
    from mdriver.sandbox.configfile import write_config_with_ports
    from mdriver.sandbox.layout import create_layout, plan_layout, read_schema_file

    base = load_config(DEFAULT_CONFIG)
    with tempfile.TemporaryDirectory(prefix="mdriver-bench-router-") as tmp:
        servers = {name: MariaDBInstance(name, os.path.join(tmp, name), server_id=i + 1, die_with_parent=True)
                   for i, name in enumerate(base.datasources)}
        try:
            start_all(servers.values())
            path = write_config_with_ports(DEFAULT_CONFIG, os.path.join(tmp, "sharding.yaml"),
                                           {n: s.port for n, s in servers.items()},
                                           proxy_listen=f"127.0.0.1:{free_port()}", metrics=f"127.0.0.1:{free_port()}")
            config = load_config(path)
            create_layout(plan_layout(config, read_schema_file(os.path.join(ROOT, "examples", "schema.sql"))),
                          lambda ds, **kw: servers[ds].connect(**kw))
            yield path
        finally:
            stop_all(servers.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--config", help="config of running servers with the 32 x 32 layout")
    where.add_argument("--self-contained", action="store_true", help="start two temporary servers")
    where.add_argument("--no-servers", action="store_true", help="only the plan-cache parts")
    ap.add_argument("--calls", type=int, default=50_000, help="plan() calls per cache arm")
    ap.add_argument("--rounds", type=int, default=31, help="rounds of the COUNT(*) comparison")
    args = ap.parse_args(argv)

    config = load_config(DEFAULT_CONFIG)
    cache = bench_cache(config, args.calls)
    rate = bench_hit_rate(config, args.calls)
    print("plan cache (median per call):")
    print(f"  hit, DB-API template : {cache['hit_pyformat']:8.2f} us")
    print(f"  hit, literal SQL     : {cache['hit_literal']:8.2f} us")
    print(f"  miss (parse + plan)  : {cache['miss']:8.2f} us")
    print(f"RATIO miss / hit             = {cache['miss'] / cache['hit_pyformat']:.1f}x   (target >= 20x; hit target <= 10 us)")
    print(f"RATIO plan-cache hit rate    = {rate:.4%}   (target >= 99%, {args.calls} point queries with varying literals)")
    if args.no_servers:
        return 0
    if args.self_contained:
        with temporary_servers() as path:
            t = bench_scatter_count(path, args.rounds)
    else:
        t = bench_scatter_count(args.config or DEFAULT_CONFIG, args.rounds)
    print("SELECT COUNT(*) over 1024 physical tables (median):")
    print(f"  router       : {t['router'] * 1000:8.2f} ms")
    print(f"  hand-written : {t['handwritten'] * 1000:8.2f} ms   (one UNION ALL statement per physical database)")
    print(f"RATIO router / hand-written  = {t['router'] / t['handwritten']:.2f}   (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
