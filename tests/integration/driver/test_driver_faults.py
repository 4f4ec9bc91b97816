"""A dead or unreachable datasource: an OperationalError naming it, within a bounded time."""
import signal
import time

import pytest
import yaml
from driver_helpers import freeze

import mdriver
from mdriver.runtime import RuntimeOptions, open_runtime


@pytest.fixture
def two_servers(make_mariadb, tmp_path):
    servers = {"ds0": make_mariadb("f0"), "ds1": make_mariadb("f1")}
    for s in servers.values():
        c = s.connect()
        with c.cursor() as cur:
            cur.execute("CREATE DATABASE app")
            cur.execute("CREATE DATABASE app_00")
            cur.execute("CREATE DATABASE app_01")
            for db in ("app_00", "app_01"):
                cur.execute(f"CREATE TABLE {db}.t_0000 (k INT PRIMARY KEY, v INT)")
                cur.execute(f"CREATE TABLE {db}.t_0001 (k INT PRIMARY KEY, v INT)")
        c.close()
    doc = {
        "version": 1,
        "datasources": {
            n: {"host": s.host, "port": s.port, "user": "root", "password": "", "connect_timeout": 1, "read_timeout": 2}
            for n, s in servers.items()
        },
        "schemas": {"app": {"datasource": "ds0", "tables": {
            "t": {"shard_key": "k", "algorithm": "mod", "databases": 2, "tables_per_database": 1,
                  "placement": {"ds0": "0", "ds1": "1"}},
        }}},
    }
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(doc))
    return servers, str(path)


def test_stopped_datasource_fails_fast_and_others_keep_working(two_servers):
    servers, path = two_servers
    rt = open_runtime(path, RuntimeOptions(recovery_interval=0))
    try:
        conn = mdriver.connect(runtime=rt, autocommit=True)
        cur = conn.cursor()
        cur.execute("INSERT INTO t (k, v) VALUES (1, 1)")  # k=1 -> app_01 on ds1
        servers["ds1"].stop()
        started = time.monotonic()
        with pytest.raises(mdriver.OperationalError) as info:
            cur.execute("SELECT v FROM t WHERE k = 1")
        assert time.monotonic() - started < 2.5
        assert f"ds1 (127.0.0.1:{servers['ds1'].port})" in str(info.value)
        cur.execute("INSERT INTO t (k, v) VALUES (2, 2)")  # k=2 -> ds0 still works
        with pytest.raises(mdriver.OperationalError, match="ds1"):
            cur.execute("SELECT COUNT(*) FROM t")  # a scatter needs every shard: it fails, never a partial answer
        servers["ds1"].start()
        cur.execute("SELECT v FROM t WHERE k = 1")  # the pool reconnects by itself
        assert cur.fetchall() == ((1,),)
    finally:
        rt.close()


def test_frozen_datasource_times_out(two_servers):
    servers, path = two_servers
    rt = open_runtime(path, RuntimeOptions(recovery_interval=0))
    try:
        conn = mdriver.connect(runtime=rt, autocommit=True)
        cur = conn.cursor()
        cur.execute("SELECT v FROM t WHERE k = 1")  # warm a connection to ds1
        freeze(servers["ds1"])
        try:
            started = time.monotonic()
            with pytest.raises(mdriver.OperationalError, match="ds1"):
                cur.execute("SELECT v FROM t WHERE k = 1")
            assert time.monotonic() - started < 4  # read_timeout 2 s
        finally:
            servers["ds1"].kill(signal.SIGCONT)
    finally:
        rt.close()
