"""The full walk-through with the driver and the proxy serving traffic throughout:

start -> verify -> cutover-reads -> cutover-writes -> rollback-writes -> cutover-writes -> finish.

No application query may fail except writes refused as fenced (retryable), and
no acknowledged write may be lost: the test keeps its own model of every row
the applications wrote and compares it with the shards at the end. (A read may
be stale while reads are on the shards and writes still on the source: that
phase trades read-your-writes for a cheap rollback, as designed.)
"""
import os
import random
import socket
import subprocess
import sys
import threading
import time

import pymysql
import pytest

import mdriver
from mdriver.sandbox.cluster import free_port
from migrator_harness import ROOT

FENCE = ("--confirm-fence", "--fence-grace", "2.5")


class App(threading.Thread):
    """An application writing and reading its own rows (ids from ``first_id``) through a connection factory."""

    def __init__(self, name, connect, first_id, fenced_errnos=(1290,), seed=0):
        super().__init__(daemon=True, name=name)
        self.connect = connect
        self.next_id = first_id
        self.rows: dict[int, tuple[int, str]] = {}  # id -> (uid, remark): what the application believes is stored
        self.fenced = 0
        self.stale_reads = 0  # reads on the shards while writes still go to the source trail by the replication lag
        self.failures: list[str] = []
        self.ops = 0
        self.rnd = random.Random(seed)
        self.fenced_errnos = fenced_errnos
        self._halt = threading.Event()

    def stop(self):
        self._halt.set()
        self.join(30)

    def _run_one(self, cur):
        op = self.rnd.random()
        if op < 0.45 or not self.rows:
            i, uid = self.next_id, self.rnd.randrange(1, 10**7)
            cur.execute("INSERT INTO user_relation (id, uid, target_uid, remark) VALUES (%s, %s, %s, %s)",
                        (i, uid, 1, f"{self.name}-{i}"))
            self.next_id += 1
            self.rows[i] = (uid, f"{self.name}-{i}")
        elif op < 0.7:
            i = self.rnd.choice(list(self.rows))
            uid = self.rows[i][0]
            remark = f"{self.name}-upd-{self.ops}"
            cur.execute("UPDATE user_relation SET remark = %s WHERE uid = %s AND id = %s", (remark, uid, i))
            self.rows[i] = (uid, remark)
        elif op < 0.8:
            i = self.rnd.choice(list(self.rows))
            cur.execute("DELETE FROM user_relation WHERE uid = %s AND id = %s", (self.rows[i][0], i))
            del self.rows[i]
        else:
            i = self.rnd.choice(list(self.rows))
            uid, remark = self.rows[i]
            cur.execute("SELECT id, remark FROM user_relation WHERE uid = %s AND id = %s", (uid, i))
            got = cur.fetchall()
            if [tuple(r) for r in got] != [(i, remark)]:
                self.stale_reads += 1

    def run(self):
        conn = self.connect()
        cur = conn.cursor()
        while not self._halt.is_set():
            try:
                self._run_one(cur)
                self.ops += 1
            except Exception as e:  # noqa: BLE001 - classified below
                errno = e.args[0] if e.args else None
                if errno in self.fenced_errnos:
                    self.fenced += 1
                    time.sleep(0.05)  # retryable: the same statement succeeds once the cutover is done
                    continue
                self.failures.append(f"{type(e).__name__}: {e}")
                time.sleep(0.1)
            time.sleep(0.01)
        conn.close()


def _wait_port(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"the proxy did not listen on {port}")


@pytest.fixture
def proxy(harness, tmp_path):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=ROOT)
    log = open(tmp_path / "proxy.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "--config", harness.config_path,
                             "--listen", f"127.0.0.1:{port}", "--no-uvloop"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(port)
        yield port  # the proxy polls the config file every second, the driver below every 0.2 s
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_full_walkthrough_with_driver_and_proxy_serving_traffic(harness, proxy):
    harness.fill_source(3000)
    harness.cli("plan", harness.logical)
    migrator = harness.start()

    def driver_conn():
        return mdriver.connect(config=harness.config_path, schema="app", autocommit=True, poll_interval=0.2)

    def proxy_conn():
        return pymysql.connect(host="127.0.0.1", port=proxy, user="app", password="app-secret", database="app",
                               autocommit=True)

    apps = [App("driver", driver_conn, 2_000_000, seed=1), App("proxy", proxy_conn, 3_000_000, seed=2)]
    for app in apps:
        app.start()
    try:
        harness.wait(lambda: harness.phase() == "streaming", 60, "the streaming phase", migrator)
        harness.caught_up(migrator)
        assert "ok: source and shards are identical" in harness.cli("verify", harness.logical).stdout
        assert "reads -> shadow" in harness.cli("cutover-reads", harness.logical).stdout
        time.sleep(1.5)
        assert "reads -> shards" in harness.cli("cutover-reads", harness.logical).stdout
        time.sleep(1.5)
        out = harness.cli("cutover-writes", harness.logical, *FENCE).stdout
        assert "writes -> shards" in out and "replicates shards -> source" in out
        time.sleep(2)
        out = harness.cli("rollback-writes", harness.logical, *FENCE).stdout
        assert "writes -> source" in out and "replicates source -> shards" in out
        time.sleep(2)
        harness.cli("cutover-writes", harness.logical, *FENCE)
        time.sleep(2)
    finally:
        for app in apps:
            app.stop()
    for app in apps:
        assert not app.failures, app.failures[:5]
        assert app.ops > 50, f"{app.name} barely ran ({app.ops} statements)"
    assert sum(app.fenced for app in apps) > 0, "no write ever met the fence: the cutovers were not observed"

    # Reverse replication keeps the source equal to the shards until finish.
    targets = {ds: harness.master_position(ds) for ds in ("ds0", "ds1")}
    harness.wait(lambda: _reverse_caught_up(harness, targets), 30, "reverse replication to catch up", migrator)
    assert harness.compare()["bad"] == 0
    assert "served by its shards alone" in harness.cli("finish", harness.logical).stdout
    assert migrator.wait(30) == 0
    assert harness.config.schemas["app"].tables["user_relation"].migration is None

    shards = harness.shard_rows("uid, remark")
    for app in apps:
        for i, (uid, remark) in app.rows.items():
            assert [row for _, row in shards.get(i, [])] == [(uid, remark)], f"{app.name} row {i} lost or wrong"
        written = range(app.next_id - (app.next_id % 1_000_000), app.next_id)
        deleted = [i for i in written if i not in app.rows and i in shards]
        assert not deleted, f"{app.name}: deleted rows came back: {deleted[:5]}"


def _reverse_caught_up(harness, targets):
    from migrator.cutover import read_reverse

    cps = read_reverse(harness.config_identity())
    return set(cps) == set(targets) and all(cps[ds].position >= pos for ds, pos in targets.items())
