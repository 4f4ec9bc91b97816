"""Soak: 16 concurrent clients, half through the driver and half through the proxy, running
point, IN and scatter reads (ORDER BY/LIMIT, aggregates), joins, single- and multi-shard
writes, broadcast writes and cross-datasource transactions. Reads are checked against the
reference as they run; at the end the sharded data must equal the reference, which
received the same logical writes. Only expected MySQL errors (deadlocks, lock waits) are
allowed, and they are reported by code.
"""
from __future__ import annotations

import time
from collections import Counter

import pytest

import mdriver
from mdriver.sharding import locate
from reliability_helpers import compare_with_reference, generous_timeouts, load_router_dataset, variant_config
from soak_workload import EXPECTED_ERRNOS, READS, SoakClient, run_clients

CLIENTS = 16



def xa_prepared(cluster) -> dict[str, int]:
    out = {}
    for ds in cluster.instances:
        conn = cluster.connect(ds)
        try:
            with conn.cursor() as cur:
                cur.execute("XA RECOVER")
                out[ds] = len(cur.fetchall())
        finally:
            conn.close()
    return out


def soak(cluster, start_proxy, figures, tmp_path, duration: float, clients: int = CLIENTS) -> None:
    load_router_dataset(cluster)
    for table in ("user_relation", "user_fans", "region"):
        assert compare_with_reference(cluster, table)["bad"] == 0, f"{table} differs before the soak"
    config_path = variant_config(cluster.config_path, tmp_path / "soak.yaml", timeouts=None, edit=generous_timeouts)
    proxy = start_proxy(config_path)
    schema = cluster.config.schemas["app"]
    rule = schema.tables["user_relation"]
    ref_db = cluster.reference_database

    def connect_for(arm: str):
        if arm == "driver":
            return lambda: mdriver.connect(config=config_path, schema="app", autocommit=True)
        return lambda: proxy.connect(autocommit=True)

    deadline = time.monotonic() + duration + 5  # setup of all clients takes a moment
    pool = [
        SoakClient(i, "driver" if i % 2 == 0 else "proxy", connect_for("driver" if i % 2 == 0 else "proxy"),
                   lambda: cluster.connect(cluster.reference_datasource, ref_db, autocommit=True),
                   lambda uid: locate(schema, rule, uid).datasource, deadline, max_ops=2_000_000, seed=1000 + i)
        for i in range(clients)
    ]
    for c in pool:
        c.setup()
    elapsed = run_clients(pool, duration + 5)
    proxy_alive = proxy.alive()
    proxy.stop()
    mdriver.close_all()

    reports = [c.report for c in pool]
    crashed = [f"{r.arm}#{r.index}: {r.crashed}" for r in reports if r.crashed]
    mismatches = [m for r in reports for m in r.mismatches]
    errors: Counter = Counter()
    by_arm: Counter = Counter()
    ops: Counter = Counter()
    for r in reports:
        errors.update(r.errors)
        by_arm[r.arm] += r.total
        ops.update(r.ops)
    total = sum(by_arm.values())
    reads = sum(n for op, n in ops.items() if op in READS)
    samples = [s for r in reports for s in r.samples]
    checks = [compare_with_reference(cluster, t) for t in ("user_relation", "user_fans", "region")]
    prepared = xa_prepared(cluster)

    figures.add("soak", "clients (driver + proxy)", f"{clients} ({clients - clients // 2} + {clients // 2})")
    figures.add("soak", "duration", elapsed, "s")
    figures.add("soak", "operations completed", total)
    figures.add("soak", "operations per second, all clients", total / elapsed, "ops/s")
    figures.add("soak", "operations per second, driver clients", by_arm["driver"] / elapsed, "ops/s")
    figures.add("soak", "operations per second, proxy clients", by_arm["proxy"] / elapsed, "ops/s")
    figures.add("soak", "reads checked against the reference while running", reads)
    figures.add("soak", "cross-datasource transactions (committed or rolled back)", ops["transfer"])
    figures.add("soak", "reads that differed from the reference", len(mismatches))
    figures.add("soak", "errors by code", ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "none")
    figures.add("soak", "unexpected errors", sum(v for k, v in errors.items() if k not in EXPECTED_ERRNOS))
    figures.add("soak", "rows compared with the reference at the end", sum(c["rows"] for c in checks))
    figures.add("soak", "rows lost, extra, wrong or misplaced at the end", sum(c["bad"] for c in checks))
    figures.add("soak", "XA branches left prepared", sum(prepared.values()))

    assert not crashed, crashed
    assert proxy_alive, proxy.output()[-3000:]
    assert not mismatches, "\n".join(mismatches[:5])
    unexpected = {k: v for k, v in errors.items() if k not in EXPECTED_ERRNOS}
    assert not unexpected, f"unexpected errors {unexpected}: {samples}"
    assert sum(errors.values()) <= max(5, total // 100), f"too many errors {dict(errors)}: {samples}"
    assert by_arm["driver"] > 0 and by_arm["proxy"] > 0
    for check in checks:
        assert check["bad"] == 0, check
    assert prepared == {ds: 0 for ds in cluster.instances}, prepared
    # The final comparison must be able to fail: change one physical row behind mdriver's back.
    victim = pool[0]
    loc = locate(schema, rule, victim.account_a)
    direct = cluster.connect(loc.datasource, loc.database)
    try:
        with direct.cursor() as cur:
            cur.execute(f"UPDATE `{loc.table}` SET target_uid = target_uid + 1 WHERE id = %s", (victim.account_ids[0],))
        assert compare_with_reference(cluster, "user_relation")["wrong"] == [victim.account_ids[0]]
    finally:
        with direct.cursor() as cur:
            cur.execute(f"UPDATE `{loc.table}` SET target_uid = target_uid - 1 WHERE id = %s", (victim.account_ids[0],))
        direct.close()


def test_soak_short(mariadb_cluster, start_proxy, figures, tmp_path):
    soak(mariadb_cluster, start_proxy, figures, tmp_path, duration=20)


@pytest.mark.slow
def test_soak_long(mariadb_cluster, start_proxy, figures, tmp_path):
    soak(mariadb_cluster, start_proxy, figures, tmp_path, duration=200)
