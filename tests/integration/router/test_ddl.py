"""DDL through the router reaches every physical table (sharded) or every copy (broadcast), and nothing else.

Uses probe tables added to the test config (one table in each of the 32
databases, and a broadcast table) so the shared 32 x 32 tables are never altered.
"""
from __future__ import annotations

import copy

import pytest
import yaml

from mdriver import err
from mdriver.config import build_config
from mdriver.router import Router, run_sync
from mdriver.router.backend import SyncBackend
from mdriver.sharding import all_locations


@pytest.fixture(scope="module")
def probe(mariadb_cluster):
    with open(mariadb_cluster.config_path) as f:
        doc = copy.deepcopy(yaml.safe_load(f))
    tables = doc["schemas"]["app"]["tables"]
    tables["router_probe"] = {"shard_key": "k", "algorithm": "mod", "databases": 32, "tables_per_database": 1,
                              "placement": {"ds0": "0-15", "ds1": "16-31"}}
    tables["router_probe_ref"] = {"broadcast": True}
    config = build_config(doc, source="test")
    backend = SyncBackend(config)
    router = Router(config)

    def run(sql, params=None):
        return run_sync(router.plan(sql, "app", params), backend)

    try:
        yield config, run
    finally:
        for t in ("router_probe", "router_probe_ref"):
            try:
                run(f"DROP TABLE IF EXISTS {t}")
            except err.Error:
                pass
        backend.close()


def physical(mariadb_cluster, config, table: str) -> dict[tuple[str, str, str], list[str]]:
    """(datasource, database, table) -> column names, for every physical table that exists."""
    schema = config.schemas["app"]
    out = {}
    for loc in all_locations(schema, schema.tables[table]):
        conn = mariadb_cluster.connect(loc.datasource)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
                            "ORDER BY ORDINAL_POSITION", (loc.database, loc.table))
                cols = [r[0] for r in cur.fetchall()]
        finally:
            conn.close()
        if cols:
            out[(loc.datasource, loc.database, loc.table)] = cols
    return out


def indexes(mariadb_cluster, loc) -> set[str]:
    conn = mariadb_cluster.connect(loc[0])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                        (loc[1], loc[2]))
            return {r[0] for r in cur.fetchall()}
    finally:
        conn.close()


def test_sharded_ddl_fans_out(probe, mariadb_cluster):
    config, run = probe
    run("CREATE TABLE IF NOT EXISTS router_probe (id INT PRIMARY KEY, k BIGINT NOT NULL, note VARCHAR(20) DEFAULT 'n/a')")
    tables = physical(mariadb_cluster, config, "router_probe")
    assert len(tables) == 32 and all(cols == ["id", "k", "note"] for cols in tables.values())
    assert {ds for ds, _, _ in tables} == {"ds0", "ds1"}
    run("INSERT INTO router_probe (id, k) VALUES (1, 1), (2, 2), (3, 20), (4, 31)")
    assert run("SELECT COUNT(*), SUM(k) FROM router_probe").rows == [(4, 54)]
    run("ALTER TABLE router_probe ADD COLUMN extra INT NULL")
    assert all(cols == ["id", "k", "note", "extra"] for cols in physical(mariadb_cluster, config, "router_probe").values())
    run("CREATE INDEX idx_k ON router_probe (k)")
    assert all("idx_k" in indexes(mariadb_cluster, loc) for loc in tables)
    run("DROP INDEX idx_k ON router_probe")
    assert not any("idx_k" in indexes(mariadb_cluster, loc) for loc in tables)
    run("TRUNCATE TABLE router_probe")
    assert run("SELECT COUNT(*) FROM router_probe").rows == [(0,)]
    run("DROP TABLE router_probe")
    assert physical(mariadb_cluster, config, "router_probe") == {}


def test_broadcast_ddl_reaches_every_copy(probe, mariadb_cluster):
    config, run = probe
    run("CREATE TABLE router_probe_ref (id INT PRIMARY KEY, name VARCHAR(10))")
    copies = physical(mariadb_cluster, config, "router_probe_ref")
    assert len(copies) == 33
    run("INSERT INTO router_probe_ref (id, name) VALUES (1, 'a'), (2, 'b')")
    assert run("SELECT name FROM router_probe_ref ORDER BY id").rows == [("a",), ("b",)]
    run("DROP TABLE router_probe_ref")
    assert physical(mariadb_cluster, config, "router_probe_ref") == {}


def test_describe_answers_from_a_physical_table(probe):
    _, run = probe
    result = run("DESCRIBE user_relation")
    assert [r[0] for r in result.rows][:3] == ["id", "uid", "target_uid"]
