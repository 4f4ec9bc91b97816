"""Read/write split against a real MariaDB replica (CHANGE MASTER TO), started by the test."""
import time

import pytest
import yaml

import mdriver
from mdriver.runtime import RuntimeOptions, open_runtime


def wait_replicated(replica, sql, expected, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        conn = replica.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                got = cur.fetchall()
        finally:
            conn.close()
        if got == expected:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"replica did not catch up: {sql} gave {got}, expected {expected}")
        time.sleep(0.1)


@pytest.fixture
def primary_and_replica(make_mariadb, tmp_path):
    primary = make_mariadb("rw-primary")
    replica = make_mariadb("rw-replica")
    conn = replica.connect()
    with conn.cursor() as cur:
        cur.execute(
            f"CHANGE MASTER TO MASTER_HOST='{primary.host}', MASTER_PORT={primary.port}, MASTER_USER='root', "
            "MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos"
        )
        cur.execute("START SLAVE")
    conn.close()
    admin = primary.connect()
    with admin.cursor() as cur:
        cur.execute("CREATE DATABASE app")
        cur.execute("CREATE TABLE app.kv (k INT PRIMARY KEY, v VARCHAR(20))")
    admin.close()
    wait_replicated(replica, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'app'", ((1,),))
    doc = {
        "version": 1,
        "datasources": {
            "ds0": {
                "host": primary.host, "port": primary.port, "user": "root", "password": "", "connect_timeout": 2,
                "replicas": [{"host": replica.host, "port": replica.port, "weight": 1}],
            }
        },
        "schemas": {"app": {"datasource": "ds0"}},
    }
    path = tmp_path / "rw.yaml"
    path.write_text(yaml.safe_dump(doc))
    return primary, replica, str(path)


def server_id(conn, sql="SELECT @@server_id"):
    cur = conn.cursor()
    cur.execute(sql)
    return cur.fetchone()[0]


def ids_of(primary, replica):
    def sid(inst):
        c = inst.connect()
        try:
            with c.cursor() as cur:
                cur.execute("SELECT @@server_id")
                return cur.fetchone()[0]
        finally:
            c.close()

    return sid(primary), sid(replica)


def test_reads_go_to_the_replica_writes_and_transactions_to_the_primary(primary_and_replica):
    primary, replica, path = primary_and_replica
    primary_id, replica_id = ids_of(primary, replica)
    rt = open_runtime(path, RuntimeOptions(recovery_interval=0))
    try:
        conn = mdriver.connect(runtime=rt, autocommit=True)
        assert server_id(conn) == replica_id
        assert server_id(conn, "/* mdriver:primary */ SELECT @@server_id") == primary_id
        cur = conn.cursor()
        cur.execute("INSERT INTO kv VALUES (1, 'one')")
        wait_replicated(replica, "SELECT v FROM app.kv", (("one",),))
        cur.execute("SELECT v FROM kv WHERE k = 1")
        assert cur.fetchall() == (("one",),)
        conn.begin()  # inside a transaction every read is on the primary
        assert server_id(conn) == primary_id
        conn.rollback()
        no_split = mdriver.connect(runtime=rt, autocommit=True, read_replicas=False)
        assert server_id(no_split) == primary_id
    finally:
        rt.close()


def test_dead_replica_falls_back_to_the_primary(primary_and_replica):
    primary, replica, path = primary_and_replica
    primary_id, _ = ids_of(primary, replica)
    rt = open_runtime(path, RuntimeOptions(recovery_interval=0))
    try:
        conn = mdriver.connect(runtime=rt, autocommit=True)
        replica.stop()
        started = time.monotonic()
        assert server_id(conn) == primary_id
        assert time.monotonic() - started < 3
        # While it cools down, reads skip it without trying again.
        started = time.monotonic()
        assert server_id(conn) == primary_id
        assert time.monotonic() - started < 0.5
    finally:
        rt.close()
