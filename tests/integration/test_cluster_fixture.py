"""The shared MariaDB fixtures deliver what other tests rely on."""
from __future__ import annotations

import os
import signal

import pymysql
import pytest

from mdriver.sharding import locate


def _scalar(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


def _count_tables(conn, like):
    return _scalar(
        conn,
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA LIKE 'app\\_%%' AND TABLE_SCHEMA <> 'app_ref' AND TABLE_NAME LIKE %s",
        (like,),
    )


def test_cluster_layout_and_binlog_settings(mariadb_cluster):
    cfg = mariadb_cluster.config
    assert set(mariadb_cluster.instances) == {"ds0", "ds1"}
    assert {ds.port for ds in cfg.datasources.values()} == {i.port for i in mariadb_cluster.instances.values()}
    assert 13306 not in {ds.port for ds in cfg.datasources.values()}
    assert cfg.proxy.listen_port != 3307
    assert os.path.exists(mariadb_cluster.config_path)
    counts = {}
    for ds in ("ds0", "ds1"):
        conn = mariadb_cluster.connect(ds)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata, @@server_id")
                log_bin, fmt, image, metadata, server_id = cur.fetchone()
            assert (log_bin, fmt, image, metadata) == (1, "ROW", "FULL", "FULL")
            counts[ds] = (
                _count_tables(conn, "user\\_relation\\_%"),
                _count_tables(conn, "user\\_fans\\_%"),
                _count_tables(conn, "region"),
                _scalar(conn, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'app\\_%%' AND SCHEMA_NAME <> 'app_ref'"),
            )
        finally:
            conn.close()
    # 512/512 tables per sharded table, 16 shard databases each; region in every shard database
    assert counts == {"ds0": (512, 512, 16, 16), "ds1": (512, 512, 16, 16)}
    ref = mariadb_cluster.connect("ds0", mariadb_cluster.reference_database)
    try:
        assert _scalar(ref, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app_ref'") == 3
        assert _scalar(ref, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = 'region'") == 1
    finally:
        ref.close()


def test_truncate_empties_every_copy(mariadb_cluster):
    schema = mariadb_cluster.config.schema("app")
    rule = schema.tables["user_relation"]
    placed = []
    for uid in (1, 17, 1023, 1024 + 600):
        loc = locate(schema, rule, uid)
        conn = mariadb_cluster.connect(loc.datasource, loc.database)
        try:
            with conn.cursor() as cur:
                cur.execute(f"INSERT INTO {loc.table} (id, uid, target_uid) VALUES (%s, %s, 0)", (uid, uid))
        finally:
            conn.close()
        placed.append(loc)
    ref = mariadb_cluster.connect("ds0", "app_ref")
    with ref.cursor() as cur:
        cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (1, 1, 0)")
    assert {loc.datasource for loc in placed} == {"ds0", "ds1"}

    mariadb_cluster.truncate("app", "user_relation")

    for loc in placed:
        conn = mariadb_cluster.connect(loc.datasource, loc.database)
        try:
            assert _scalar(conn, f"SELECT COUNT(*) FROM {loc.table}") == 0
        finally:
            conn.close()
    assert _scalar(ref, "SELECT COUNT(*) FROM user_relation") == 0
    ref.close()


def test_make_mariadb_options_and_kill_restart(make_mariadb, mariadb_cluster):
    plain = make_mariadb("plain", log_bin=None, binlog_format="MIXED")
    assert plain.port not in {i.port for i in mariadb_cluster.instances.values()}
    conn = plain.connect()
    assert _scalar(conn, "SELECT @@log_bin") == 0
    assert _scalar(conn, "SELECT @@binlog_format") == "MIXED"
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE d")
        cur.execute("CREATE TABLE d.t (id INT PRIMARY KEY) ENGINE=InnoDB")
        cur.execute("INSERT INTO d.t VALUES (1)")
    conn.close()

    pid, port = plain.pid, plain.port
    plain.kill(signal.SIGKILL)
    assert not plain.is_alive()
    with pytest.raises(pymysql.err.OperationalError):
        plain.connect(connect_timeout=1)
    plain.start()
    assert plain.is_alive() and plain.pid != pid and plain.port == port
    conn = plain.connect("d")
    assert _scalar(conn, "SELECT COUNT(*) FROM t") == 1  # committed data survives kill -9
    conn.close()
    with pytest.raises(ValueError):
        make_mariadb("plain")


def test_server_that_cannot_start_reports_its_log(make_mariadb):
    from mdriver.sandbox.cluster import ServerStartError

    with pytest.raises(ServerStartError) as info:
        make_mariadb("broken", binlog_format="NOT_A_FORMAT")
    assert "NOT_A_FORMAT" in str(info.value) or "binlog" in str(info.value).lower()
