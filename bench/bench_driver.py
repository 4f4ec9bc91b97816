"""Benchmark: mdriver against plain PyMySQL, arms interleaved in one run.

1. Point select: ``SELECT ... FROM user_relation WHERE uid = %s AND target_uid = %s``
   through mdriver (routed) vs. PyMySQL on the same physical table
   (``app_NN.user_relation_NNNN``). One connection per arm, autocommit on.
2. executemany of 10k rows: mdriver into the sharded ``user_relation``
   (one multi-row INSERT per physical table) vs. PyMySQL's executemany into
   one unsharded table of the same shape.

Each round runs every arm once, alternating which goes first; the report
gives medians over rounds and the ratio mdriver / PyMySQL (higher is better
for queries per second).

    .venv/bin/python bench/bench_driver.py --self-contained      # own temporary servers
    .venv/bin/python bench/bench_driver.py --config config/sharding.yaml   # a running sandbox
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import pymysql

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mdriver  # noqa: E402
from mdriver.config import load_config  # noqa: E402
from mdriver.sharding import all_locations, locate  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNSHARDED = "bench_user_relation_unsharded"


@contextmanager
def temporary_cluster(base_config: str) -> Iterator[str]:
    """Two private MariaDB servers with the full layout; yields a config path with their ports."""
    from mdriver.sandbox.cluster import MariaDBInstance, free_port, start_all, stop_all
    from mdriver.sandbox.configfile import write_config_with_ports
    from mdriver.sandbox.layout import create_layout, plan_layout, read_schema_file

    config = load_config(base_config)
    with tempfile.TemporaryDirectory(prefix="mdriver-bench-") as tmp:
        instances = {
            name: MariaDBInstance(name, os.path.join(tmp, name), server_id=i + 1, die_with_parent=True)
            for i, name in enumerate(config.datasources)
        }
        try:
            start_all(instances.values())
            path = write_config_with_ports(
                base_config, os.path.join(tmp, "sharding.yaml"), {n: i.port for n, i in instances.items()},
                proxy_listen=f"127.0.0.1:{free_port()}", metrics=f"127.0.0.1:{free_port()}",
            )
            cfg = load_config(path)
            create_layout(plan_layout(cfg, read_schema_file(os.path.join(ROOT, "examples", "schema.sql"))),
                          lambda ds, **kw: instances[ds].connect(**kw))
            yield path
        finally:
            stop_all(instances.values())


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    n = fn()
    return time.perf_counter() - start, n


def bench_point_select(config_path: str, rounds: int, queries: int) -> dict[str, list[float]]:
    cfg = load_config(config_path)
    schema = cfg.schemas["app"]
    rule = schema.tables["user_relation"]
    uid = 424242
    loc = locate(schema, rule, uid)
    ds = cfg.datasources[loc.datasource]
    plain = pymysql.connect(host=ds.host, port=ds.port, user=ds.user, password=ds.password, autocommit=True, charset="utf8mb4")
    routed = mdriver.connect(config=config_path, schema="app", autocommit=True)
    with plain.cursor() as cur:
        cur.execute(f"DELETE FROM `{loc.database}`.`{loc.table}` WHERE uid = %s", (uid,))
        cur.execute(
            f"INSERT INTO `{loc.database}`.`{loc.table}` (id, uid, target_uid, remark) VALUES (%s, %s, %s, %s)",
            (1, uid, 7, "bench"),
        )
    plain_sql = f"SELECT id, uid, target_uid, remark FROM `{loc.database}`.`{loc.table}` WHERE uid = %s AND target_uid = %s"
    routed_sql = "SELECT id, uid, target_uid, remark FROM user_relation WHERE uid = %s AND target_uid = %s"
    pcur, rcur = plain.cursor(), routed.cursor()
    args = (uid, 7)

    def run_plain() -> int:
        for _ in range(queries):
            pcur.execute(plain_sql, args)
            pcur.fetchall()
        return queries

    def run_routed() -> int:
        for _ in range(queries):
            rcur.execute(routed_sql, args)
            rcur.fetchall()
        return queries

    rcur.execute(routed_sql, args)
    assert rcur.fetchall() == ((1, uid, 7, "bench"),), "mdriver did not find the row PyMySQL inserted"
    for _ in range(2):  # warm up both
        run_plain(), run_routed()
    qps: dict[str, list[float]] = {"pymysql": [], "mdriver": []}
    for r in range(rounds):
        arms = [("pymysql", run_plain), ("mdriver", run_routed)]
        if r % 2:
            arms.reverse()
        for name, fn in arms:
            elapsed, n = timed(fn)
            qps[name].append(n / elapsed)
    with plain.cursor() as cur:
        cur.execute(f"DELETE FROM `{loc.database}`.`{loc.table}` WHERE uid = %s AND id = 1", (uid,))
    plain.close()
    routed.close()
    return qps


def bench_executemany(config_path: str, rounds: int, rows: int) -> dict[str, list[float]]:
    cfg = load_config(config_path)
    schema = cfg.schemas["app"]
    home = cfg.datasources[schema.datasource]
    plain = pymysql.connect(host=home.host, port=home.port, user=home.user, password=home.password,
                            autocommit=True, charset="utf8mb4", database=schema.name)
    routed = mdriver.connect(config=config_path, schema="app", autocommit=True)
    with plain.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {UNSHARDED}")
        cur.execute(f"CREATE TABLE {UNSHARDED} LIKE `{schema.name}_00`.`user_relation_0000`")
    sql_plain = f"INSERT INTO {UNSHARDED} (id, uid, target_uid, relation_type, remark) VALUES (%s, %s, %s, %s, %s)"
    sql_routed = "INSERT INTO user_relation (id, uid, target_uid, relation_type, remark) VALUES (%s, %s, %s, %s, %s)"
    base = 10_000_000

    def data(r: int) -> list[tuple]:
        start = base + r * rows
        return [(start + i, start + i, i, 1, f"row {i}") for i in range(rows)]

    by_ds: dict[str, list[str]] = {}
    for loc in all_locations(schema, schema.tables["user_relation"]):
        by_ds.setdefault(loc.datasource, []).append(f"DELETE FROM `{loc.database}`.`{loc.table}` WHERE id >= {base}")

    def clear() -> None:
        with plain.cursor() as cur:
            cur.execute(f"DELETE FROM {UNSHARDED}")
        for name, statements in by_ds.items():
            ds = cfg.datasources[name]
            c = pymysql.connect(host=ds.host, port=ds.port, user=ds.user, password=ds.password, autocommit=True)
            with c.cursor() as cur:
                for st in statements:
                    cur.execute(st)
            c.close()

    results: dict[str, list[float]] = {"pymysql": [], "mdriver": []}
    try:
        for r in range(rounds):
            clear()
            batch = data(r)
            arms = [("pymysql", lambda: plain.cursor().executemany(sql_plain, batch)),
                    ("mdriver", lambda: routed.cursor().executemany(sql_routed, batch))]
            if r % 2:
                arms.reverse()
            for name, fn in arms:
                elapsed, n = timed(fn)
                if n != rows:
                    raise SystemExit(f"{name} executemany reported {n} rows, expected {rows}")
                results[name].append(rows / elapsed)
    finally:
        clear()
        with plain.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {UNSHARDED}")
        plain.close()
        routed.close()
    return results


def report(title: str, unit: str, results: dict[str, list[float]]) -> float:
    """Medians per arm, and the median of the per-round ratios (each round runs both arms back to back,
    so a round's ratio is measured under the same machine load)."""
    med = {k: statistics.median(v) for k, v in results.items()}
    paired = statistics.median(m / p for m, p in zip(results["mdriver"], results["pymysql"]))
    print(f"{title}")
    for name in ("pymysql", "mdriver"):
        v = sorted(results[name])
        q1, q3 = v[len(v) // 4], v[(3 * len(v)) // 4]
        print(f"  {name:8s} median {med[name]:>10,.0f} {unit}   (quartiles {q1:,.0f} .. {q3:,.0f}, {len(v)} rounds)")
    print(f"  ratio of medians mdriver / pymysql: {med['mdriver'] / med['pymysql']:.3f}")
    print(f"  median of per-round ratios:        {paired:.3f}")
    return paired


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.path.join(ROOT, "config", "sharding.yaml"))
    p.add_argument("--self-contained", action="store_true", help="start two temporary MariaDB servers for the run")
    p.add_argument("--rounds", type=int, default=41)
    p.add_argument("--queries", type=int, default=500, help="point selects per arm and round")
    p.add_argument("--rows", type=int, default=10_000, help="rows per executemany")
    p.add_argument("--many-rounds", type=int, default=3)
    p.add_argument("--only", choices=("select", "executemany"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    def run(config_path: str) -> int:
        ok = True
        if args.only in (None, "select"):
            ratio = report(f"point select, one connection, {args.queries} queries x {args.rounds} rounds",
                           "queries/s", bench_point_select(config_path, args.rounds, args.queries))
            verdict = "OK" if ratio >= 0.90 else "BELOW TARGET"
            print(f"  target >= 0.90: {verdict}")
            ok = ratio >= 0.90
        if args.only in (None, "executemany"):
            report(f"executemany {args.rows} rows (mdriver: sharded user_relation; pymysql: one unsharded table)",
                   "rows/s", bench_executemany(config_path, args.many_rounds, args.rows))
        mdriver.close_all()
        return 0 if ok else 1

    if args.self_contained:
        with temporary_cluster(args.config) as path:
            return run(path)
    return run(args.config)


if __name__ == "__main__":
    sys.exit(main())
