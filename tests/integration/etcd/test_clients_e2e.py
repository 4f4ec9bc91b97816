"""A driver and a proxy following the same config in etcd, end to end.

- A push is applied by both within 1 s (and both acknowledge it in the client registry).
- etcd is killed while both serve traffic: no query fails.
- etcd comes back and a new push is picked up by both.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pymysql
import pytest
import yaml

import mdriver
from mdriver.config.clients import list_clients, wait_for_ack
from mdriver.config.publish import publish
from mdriver.sandbox.cluster import free_port

pytestmark = pytest.mark.etcd

ROOT = Path(__file__).resolve().parents[3]
SWITCH_BOUND = 1.0


class ProxyProcess:
    """``mdriver-proxy --config etcd://...`` as a process."""

    def __init__(self, url: str, port: int, log_path: Path):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "--config", url, "--listen", f"127.0.0.1:{port}"],
                                     cwd=str(ROOT), env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mdriver-proxy did not start:\n{self.output()}")
                time.sleep(0.05)

    def connect(self) -> pymysql.connections.Connection:
        return pymysql.connect(host="127.0.0.1", port=self.port, user="app", password="app-secret", database="app",
                               autocommit=True, connect_timeout=10, read_timeout=30)

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def proxy_revision(conn) -> str:
    with conn.cursor() as cur:
        cur.execute("SHOW MDRIVER STATUS")
        return dict(cur.fetchall())["config_revision"]


class Traffic:
    """Point writes and reads through a driver connection and a proxy connection until stopped."""

    def __init__(self, clients: dict):
        self.clients = clients  # name -> DB-API connection (autocommit)
        self.ok = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(name, i), daemon=True) for i, name in enumerate(clients)]

    def __enter__(self) -> "Traffic":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self, name: str, index: int) -> None:
        conn = self.clients[name]
        n = 0
        while not self._stop.is_set():
            n += 1
            row_id = 4_000_000_000 + index * 1_000_000 + n
            uid = index * 1000 + n % 50
            try:
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO user_fans (id, uid, fan_uid) VALUES (%s, %s, 1)", (row_id, uid))
                    cur.execute("SELECT COUNT(*) FROM user_fans WHERE uid = %s AND id = %s", (uid, row_id))
                    found = cur.fetchone()
                with self._lock:
                    if found != (1,):
                        self.failures.append(f"{name}: row {row_id} not read back")
                    self.ok += 1
            except (mdriver.Error, pymysql.err.Error) as e:
                with self._lock:
                    self.failures.append(f"{name}: {e!r}")
            time.sleep(0.01)


@pytest.fixture
def clients(mariadb_cluster, etcd_server, etcd_prefix, tmp_path):
    """The cluster config published under a fresh prefix, with a driver and a proxy following it."""
    with open(mariadb_cluster.config_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    port = free_port()
    doc["proxy"]["listen"] = f"127.0.0.1:{port}"
    doc["proxy"].pop("metrics", None)
    url = f"etcd://{etcd_server.host}:{etcd_server.port}{etcd_prefix}"
    publish(url, yaml.safe_dump(doc, sort_keys=False))
    mariadb_cluster.truncate("app", "user_fans", reference=False)
    proxy = ProxyProcess(url, port, tmp_path / "proxy.log")
    driver = mdriver.connect(config=url, schema="app", autocommit=True)
    via_proxy = proxy.connect()
    proxy.status_conn = proxy.connect()  # SHOW MDRIVER STATUS from the test thread (connections are not shared)
    try:
        yield url, doc, driver, via_proxy, proxy
    finally:
        proxy.status_conn.close()
        via_proxy.close()
        driver.close()
        mdriver.close_all()
        proxy.stop()
        if not etcd_server.is_alive():
            etcd_server.start()
        mariadb_cluster.truncate("app", "user_fans", reference=False)


def push(url: str, doc: dict, max_offset: int) -> str:
    changed = yaml.safe_load(yaml.safe_dump(doc))
    changed["router"]["max_offset"] = max_offset
    return publish(url, yaml.safe_dump(changed, sort_keys=False)).revision


def wait_switch(driver, proxy, revision: str, timeout: float) -> dict[str, float]:
    """Seconds until each client runs ``revision`` (inf if it did not within ``timeout``)."""
    started = time.monotonic()
    seen: dict[str, float] = {}
    while len(seen) < 2 and time.monotonic() - started < timeout:
        if "driver" not in seen and driver.runtime.version().revision == revision:
            seen["driver"] = time.monotonic() - started
        if "proxy" not in seen and proxy_revision(proxy.status_conn) == revision:
            seen["proxy"] = time.monotonic() - started
        time.sleep(0.005)
    return {k: seen.get(k, float("inf")) for k in ("driver", "proxy")}


def scatter_with_offset(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM user_fans ORDER BY id LIMIT 20, 5")
        return cur.fetchall()


def test_push_then_both_switch_within_one_second(clients):
    url, doc, driver, via_proxy, proxy = clients
    assert scatter_with_offset(driver) == scatter_with_offset(via_proxy) == ()
    kinds = sorted(c.kind for c in list_clients(url))
    assert kinds == ["driver", "proxy"], kinds
    revision = push(url, doc, 10)
    took = wait_switch(driver, proxy, revision, 5)
    assert took["driver"] < SWITCH_BOUND and took["proxy"] < SWITCH_BOUND, took
    for conn in (driver, via_proxy):  # and they route with it: offset + count 25 is now over max_offset 10
        with pytest.raises((mdriver.Error, pymysql.err.Error)) as info:
            scatter_with_offset(conn)
        assert info.value.args[0] == 1235, info.value.args
    acked = wait_for_ack(url, revision, timeout=5)
    assert sorted(c.kind for c in acked) == ["driver", "proxy"]


def test_etcd_killed_while_serving_then_restarted_and_a_push_is_picked_up(clients, etcd_server):
    url, doc, driver, via_proxy, proxy = clients
    with Traffic({"driver": driver, "proxy": via_proxy}) as traffic:
        time.sleep(1)
        etcd_server.kill()
        down_at = traffic.ok
        time.sleep(6)  # longer than the watchers' longest backoff (5 s)
        served_while_down = traffic.ok - down_at
        etcd_server.start()
        revision = push(url, doc, 777)
        took = wait_switch(driver, proxy, revision, 15)
        time.sleep(0.5)
    assert not traffic.failures, traffic.failures[:5]
    assert served_while_down > 50, served_while_down
    assert took["driver"] < 15 and took["proxy"] < 15, took
    assert driver.runtime.version().config.router.max_offset == 777
    assert proxy.proc.poll() is None, proxy.output()[-2000:]
