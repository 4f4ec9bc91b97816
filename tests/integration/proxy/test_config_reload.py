"""The proxy follows its config in etcd: new users, migration phases, and invalid versions refused."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pymysql
import pytest
import yaml

from mdriver.config.publish import publish, set_migration_phase, update
from mdriver.config.sources import open_source
from mdriver.sandbox.cluster import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def eventually(fn, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = fn()
            if result:
                return result
        except (pymysql.err.MySQLError, OSError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


@pytest.fixture
def source_table(mariadb_cluster):
    """The pre-migration source: table user_relation in database app on ds0, holding a row the shards do not have."""
    conn = mariadb_cluster.connect("ds0")
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE app.user_relation LIKE app_ref.user_relation")
        cur.execute("INSERT INTO app.user_relation (id, uid, target_uid, remark) VALUES (1, 42, 0, 'from the source')")
    try:
        yield
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE app.user_relation")
        conn.close()


def test_proxy_follows_etcd(mariadb_cluster, etcd_server, etcd_prefix, tmp_path, source_table):
    mariadb_cluster.truncate("app", "user_relation")
    with open(mariadb_cluster.config_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    port, metrics_port = free_port(), free_port()
    doc["proxy"]["listen"] = f"127.0.0.1:{port}"
    doc["proxy"]["metrics"] = f"127.0.0.1:{metrics_port}"
    doc["schemas"]["app"]["tables"]["user_relation"]["migration"] = {
        "source": {"datasource": "ds0", "database": "app", "table": "user_relation"}, "reads": "source", "writes": "source"}
    url = f"etcd://{etcd_server.host}:{etcd_server.port}{etcd_prefix}"
    publish(url, yaml.safe_dump(doc, sort_keys=False))
    log = open(tmp_path / "proxy.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "--config", url], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        eventually(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True)

        def connect(user="app", password="app-secret"):
            return pymysql.connect(host="127.0.0.1", port=port, user=user, password=password, database="app", autocommit=True)

        def one(sql, user="app", password="app-secret"):
            c = connect(user, password)
            try:
                with c.cursor() as cur:
                    cur.execute(sql)
                    return cur.fetchall()
            finally:
                c.close()

        # reads from the source while the migration says so
        assert one("SELECT remark FROM user_relation WHERE uid = 42") == (("from the source",),)
        status = dict(one("SHOW MDRIVER STATUS"))
        assert status["migration.app.user_relation"].startswith("reads=source writes=source")
        # a new user appears without a restart
        update(url, lambda d: d["proxy"]["users"].update({"ops": {"password": "ops-secret", "schemas": ["app"]}}), message="add ops")
        eventually(lambda: one("SELECT 1", "ops", "ops-secret") == ((1,),))
        # the migrator moves reads to the shards and fences writes: the proxy follows
        set_migration_phase(url, "app", "user_relation", reads="shards", writes="fenced")
        eventually(lambda: one("SELECT remark FROM user_relation WHERE uid = 42") == ())
        with pytest.raises(pymysql.err.OperationalError) as e:
            one("INSERT INTO user_relation (id, uid, target_uid) VALUES (2, 43, 0)")
        assert e.value.args[0] == 1290 and "fenced" in e.value.args[1]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert 'mdriver_proxy_migration_phase{reads="shards",schema="app",table="user_relation",writes="fenced"} 1.0' in metrics
        # an invalid version written past validation is refused; the proxy keeps serving
        src = open_source(url)
        src.write("version: 1\nschemas: [broken\n", src.read().revision)
        eventually(lambda: "config reload refused" in (log.flush() or open(tmp_path / "proxy.log").read()))
        assert one("SELECT 1", "ops", "ops-secret") == ((1,),)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_proxy_acknowledges_a_revision_only_after_older_transactions_end(mariadb_cluster, etcd_server, etcd_prefix, tmp_path):
    from mdriver.config.clients import AckTimeoutError, list_clients, wait_for_ack

    mariadb_cluster.truncate("app", "user_relation")
    with open(mariadb_cluster.config_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    port = free_port()
    doc["proxy"]["listen"] = f"127.0.0.1:{port}"
    doc["proxy"].pop("metrics", None)
    url = f"etcd://{etcd_server.host}:{etcd_server.port}{etcd_prefix}"
    first = publish(url, yaml.safe_dump(doc, sort_keys=False)).revision
    log = open(tmp_path / "proxy.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "--config", url], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        eventually(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True)
        clients = eventually(lambda: [c for c in list_clients(url) if c.kind == "proxy" and c.pid == proc.pid])
        assert clients[0].revision == str(first)
        conn = pymysql.connect(host="127.0.0.1", port=port, user="app", password="app-secret", database="app")
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (1, 5, 0)")  # open, on the old revision
        second = update(url, lambda d: d["router"].update({"max_offset": 5000}), message="fence").revision
        with pytest.raises(AckTimeoutError):
            wait_for_ack(url, second, timeout=2)  # the open transaction still runs on the old config
        conn.commit()
        wait_for_ack(url, second, timeout=10)
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    assert not [c for c in list_clients(url) if c.pid == proc.pid]  # deregistered on exit
