"""Backends that die, hang or refuse the proxy: bounded MySQL errors naming the datasource, then recovery."""
from __future__ import annotations

import logging
import signal
import time

import pymysql
import pytest
import yaml

from mdriver.config import load_config
from mdriver.sandbox.cluster import free_port


def q(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def freeze(inst) -> None:
    """SIGSTOP a server and wait until the kernel reports it stopped (state T)."""
    pid = inst.pid
    assert pid is not None, f"{inst.name} is not running"
    inst.kill(signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while True:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        assert time.monotonic() < deadline, f"{inst.name} did not stop"
        time.sleep(0.01)


def until_ok(conn, sql, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return q(conn, sql)
        except pymysql.err.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_killed_backend_gives_an_error_naming_it_and_the_pool_recovers(make_proxy, mariadb_cluster):
    p = make_proxy(backend_timeout=3)
    ds1 = mariadb_cluster.instances["ds1"]
    conn = p.connect(autocommit=True)
    try:
        assert q(conn, "SELECT COUNT(*) FROM user_relation WHERE uid = 600") == ((0,),)  # ds1 has a pooled connection now
        ds1.kill(signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as e:
            q(conn, "SELECT COUNT(*) FROM user_relation WHERE uid = 600")
        assert time.monotonic() - start < 8
        assert f"ds1 (127.0.0.1:{ds1.port})" in e.value.args[1]
        assert q(conn, "SELECT COUNT(*) FROM user_relation WHERE uid = 5") == ((0,),)  # ds0 unaffected
        with pytest.raises(pymysql.err.OperationalError) as e:
            q(conn, "SELECT COUNT(*) FROM user_relation WHERE uid = 601")
        assert "ds1" in e.value.args[1]
        status = dict(q(conn, "SHOW MDRIVER STATUS"))
        assert status["pool.ds1"].startswith("down")
        ds1.start()
        assert until_ok(conn, "SELECT COUNT(*) FROM user_relation WHERE uid = 600") == ((0,),)
        assert dict(q(conn, "SHOW MDRIVER STATUS"))["pool.ds1"].startswith("up")
        time.sleep(0.1)
        assert p.call(lambda: [pl.in_use for pl in p.server.pools.pools.values()]) == [0, 0]
    finally:
        conn.close()
        if not ds1.is_alive():
            ds1.start()


def test_hung_backend_times_out_within_the_configured_bound(make_proxy, mariadb_cluster):
    p = make_proxy(backend_timeout=1.5)
    ds1 = mariadb_cluster.instances["ds1"]
    conn = p.connect(autocommit=True)
    try:
        assert q(conn, "SELECT 1 FROM user_relation WHERE uid = 600") == ()
        freeze(ds1)
        try:
            start = time.monotonic()
            with pytest.raises(pymysql.err.OperationalError) as e:
                q(conn, "SELECT 1 FROM user_relation WHERE uid = 600")
            took = time.monotonic() - start
            assert 1.0 < took < 5, took
            assert f"ds1 (127.0.0.1:{ds1.port}) did not answer within 1.5 s" in e.value.args[1]
            assert q(conn, "SELECT 1 FROM user_relation WHERE uid = 5") == ()
        finally:
            ds1.kill(signal.SIGCONT)
        assert until_ok(conn, "SELECT 1 FROM user_relation WHERE uid = 600") == ()
    finally:
        conn.close()


def _single_server_config(tmp_path, port: int, **ds_options):
    doc = {
        "version": 1,
        "datasources": {"solo": {"host": "127.0.0.1", "port": port, "user": "root", "password": "", **ds_options}},
        "schemas": {"app": {"datasource": "solo", "tables": {}}},
        "proxy": {"listen": f"127.0.0.1:{free_port()}", "users": {"app": {"password": "app-secret", "schemas": ["app"]}},
                  "backend_timeout": 2},
    }
    path = tmp_path / "solo.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return load_config(str(path))


def test_hung_logins_do_not_get_the_proxy_host_blocked(make_proxy, make_mariadb, tmp_path):
    srv = make_mariadb("strict", max_connect_errors=2)
    with srv.connect() as c, c.cursor() as cur:
        cur.execute("CREATE DATABASE app")
    p = make_proxy(config=_single_server_config(tmp_path, srv.port, connect_timeout=1))
    freeze(srv)  # TCP connects still succeed (kernel backlog); the handshake never comes
    try:
        for _ in range(6):
            conn = p.connect(autocommit=True)
            try:
                start = time.monotonic()
                with pytest.raises(pymysql.err.OperationalError) as e:
                    q(conn, "SELECT 1")
                assert time.monotonic() - start < 4
                assert f"solo (127.0.0.1:{srv.port})" in e.value.args[1]
            finally:
                conn.close()
        assert p.call(lambda: p.server.pools["solo"].total) <= 1  # one probe, never a pile of abandoned logins
    finally:
        srv.kill(signal.SIGCONT)
    conn = p.connect(autocommit=True)
    try:
        assert until_ok(conn, "SELECT 1") == ((1,),)
    finally:
        conn.close()
    # Many new backend connections still succeed: the host was never blocked (error 1129).
    conns = [p.connect(autocommit=False) for _ in range(4)]
    try:
        for c in conns:
            assert q(c, "SELECT 1") == ((1,),)  # each holds its own backend connection (open transaction)
        direct = srv.connect()
        direct.close()
    finally:
        for c in conns:
            c.close()


def test_backend_credentials_never_reach_clients_or_logs(make_proxy, caplog):
    caplog.set_level(logging.DEBUG)
    p = make_proxy(datasources={"ds0": {"user": "root", "password": "wrong-secret-xyz"}})
    conn = p.connect(autocommit=True)
    try:
        with pytest.raises(pymysql.err.OperationalError) as e:
            q(conn, "SELECT COUNT(*) FROM user_relation WHERE uid = 5")
        message = e.value.args[1]
        assert "ds0 (127.0.0.1:" in message and "refused the proxy's login" in message
        assert "wrong-secret-xyz" not in message and "root" not in message
        assert q(conn, "SELECT COUNT(*) FROM user_relation WHERE uid = 600") == ((0,),)  # ds1 is fine
    finally:
        conn.close()
    assert "wrong-secret-xyz" not in caplog.text
    assert repr(p.config.datasources["ds0"]).count("wrong-secret-xyz") == 0
