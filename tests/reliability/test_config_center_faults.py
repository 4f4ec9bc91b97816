"""Config-center faults under load: etcd down for a long time, and bad config pushed to it.

Driver clients (``config="etcd://..."``) and proxy clients (``mdriver-proxy --config
etcd://...``) serve traffic throughout. With etcd killed they keep routing on the last
good config: not one query may fail. Invalid versions written straight into etcd
(broken YAML, a placement with a gap, a deleted key) are ignored: the running config
stays, and again no query fails. After etcd returns, a valid push is applied.
"""
from __future__ import annotations

import copy
import threading
import time

import pytest
import yaml

import mdriver
from mdriver.config.etcd import EtcdSource
from mdriver.config.publish import publish
from mdriver.config.sources import ConfigSourceError
from mdriver.config.validate import ConfigError
from reliability_helpers import DB_ERRORS, errno_of, message_of, read_doc, wait_until
from mdriver.sandbox.cluster import free_port

CLIENTS_PER_ARM = 3


class Load:
    """Clients of one arm doing point writes and reads, transactions and scatter reads until stopped."""

    def __init__(self, arm: str, connect, first_index: int):
        self.arm = arm
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(connect, first_index + i), daemon=True,
                                          name=f"etcd-load-{arm}-{i}") for i in range(CLIENTS_PER_ARM)]
        self._lock = threading.Lock()

    def start(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)
        assert not any(t.is_alive() for t in self._threads), f"{self.arm} clients hung"

    def _run(self, connect, index: int) -> None:
        conn = None
        n = 0
        next_id = 3_000_000_000 + index * 1_000_000
        while not self._stop.is_set():
            n += 1
            try:
                if conn is None:
                    conn = connect()
                uid = index * 7919 + n % 97
                with conn.cursor() as cur:
                    if n % 7 == 0:
                        conn.begin()
                        cur.execute("INSERT INTO user_fans (id, uid, fan_uid) VALUES (%s, %s, 1)", (next_id, uid))
                        cur.execute("INSERT INTO user_fans (id, uid, fan_uid) VALUES (%s, %s, 2)", (next_id + 1, uid + 600))
                        conn.commit()
                        next_id += 2
                    elif n % 11 == 0:
                        cur.execute("SELECT COUNT(*) FROM user_fans WHERE fan_uid = %s", (n,))
                    elif n % 2:
                        cur.execute("INSERT INTO user_fans (id, uid, fan_uid) VALUES (%s, %s, 3)", (next_id, uid))
                        next_id += 1
                    else:
                        cur.execute("SELECT id, fan_uid FROM user_fans WHERE uid = %s ORDER BY id", (uid,))
                        cur.fetchall()
                with self._lock:
                    self.ok += 1
            except DB_ERRORS as e:
                with self._lock:
                    self.failures.append(f"{self.arm}: ({errno_of(e)}) {message_of(e)}")
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                conn = None
            time.sleep(0.01)
        if conn is not None:
            conn.close()


@pytest.fixture
def etcd_config(mariadb_cluster, etcd_server, etcd_prefix):
    """The cluster's config published to a fresh prefix; user_fans emptied before and after."""
    doc = read_doc(mariadb_cluster.config_path)
    doc["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    doc["proxy"].pop("metrics", None)
    url = f"etcd://{etcd_server.host}:{etcd_server.port}{etcd_prefix}"
    publish(url, yaml.safe_dump(doc, sort_keys=False))
    mariadb_cluster.truncate("app", "user_fans", reference=False)
    yield url, doc
    if not etcd_server.is_alive():
        etcd_server.start()
    mariadb_cluster.truncate("app", "user_fans", reference=False)


def dump_with(doc: dict, edit) -> str:
    changed = copy.deepcopy(doc)
    edit(changed)
    return yaml.safe_dump(changed, sort_keys=False)


def etcd_outage(url, doc, etcd_server, start_proxy, figures, down: float) -> None:
    driver_conn = mdriver.connect(config=url, schema="app", autocommit=True)
    watcher = driver_conn.runtime.provider
    proxy = start_proxy(url)
    loads = [Load("driver", lambda: mdriver.connect(config=url, schema="app", autocommit=True), 0).start(),
             Load("proxy", lambda: proxy.connect(autocommit=True), CLIENTS_PER_ARM).start()]
    try:
        time.sleep(2)
        before = sum(load.ok for load in loads)
        etcd_server.kill()
        t_down = time.monotonic()
        assert wait_until(lambda: not watcher.connected, 15), "the driver did not notice that etcd is down"
        time.sleep(max(0.0, down - (time.monotonic() - t_down)))
        during = sum(load.ok for load in loads) - before
        etcd_server.start()
        t_up = time.monotonic()
        assert wait_until(lambda: watcher.connected, 20), watcher.status()
        reconnected = time.monotonic() - t_up
        pushed = publish(url, dump_with(doc, lambda d: d["router"].update(max_offset=4321)))
        t_push = time.monotonic()
        applied = wait_until(lambda: driver_conn.runtime.version().config.router.max_offset == 4321, 10, 0.01)
        pickup = time.monotonic() - t_push
        proxy_applied = wait_until(lambda: proxy.status()["config_revision"] == str(pushed.revision), 10, 0.05)
        proxy_pickup = time.monotonic() - t_push
        time.sleep(1)
    finally:
        for load in loads:
            load.stop()
        if not etcd_server.is_alive():
            etcd_server.start()
    failures = [f for load in loads for f in load.failures]
    figures.add("config", "etcd down under load", down, "s")
    figures.add("config", "queries served while etcd was down (driver + proxy clients)", during)
    figures.add("config", "failed queries while etcd was down or restarting", len(failures))
    figures.add("config", "driver watcher reconnected after etcd restart", reconnected, "s")
    figures.add("config", "push after etcd restart applied by the driver", pickup, "s")
    figures.add("config", "push after etcd restart applied by the proxy (at most)", proxy_pickup, "s")
    assert not failures, failures[:5]
    assert during > 20 * down, f"only {during} queries in {down} s of outage"
    assert proxy.alive(), proxy.output()[-2000:]
    assert applied and int(driver_conn.runtime.version().revision) == int(pushed.revision)
    assert proxy_applied, f"the proxy did not apply revision {pushed.revision}: {proxy.status()}"
    driver_conn.close()


def test_etcd_down_under_load(etcd_config, etcd_server, start_proxy, figures):
    url, doc = etcd_config
    etcd_outage(url, doc, etcd_server, start_proxy, figures, down=12)


@pytest.mark.slow
def test_etcd_down_for_minutes_under_load(etcd_config, etcd_server, start_proxy, figures):
    url, doc = etcd_config
    etcd_outage(url, doc, etcd_server, start_proxy, figures, down=190)


def test_bad_config_pushed_during_load_is_ignored(etcd_config, start_proxy, figures):
    url, doc = etcd_config
    source = EtcdSource.from_url(url)
    tables = lambda d: d["schemas"]["app"]["tables"]  # noqa: E731
    driver_conn = mdriver.connect(config=url, schema="app", autocommit=True)
    watcher = driver_conn.runtime.provider
    good = driver_conn.runtime.version().revision
    proxy = start_proxy(url)
    loads = [Load("driver", lambda: mdriver.connect(config=url, schema="app", autocommit=True), 0).start(),
             Load("proxy", lambda: proxy.connect(autocommit=True), CLIENTS_PER_ARM).start()]
    bad_versions = [
        "version: 1\ndatasources: [unclosed\n",  # not YAML
        dump_with(doc, lambda d: tables(d)["user_relation"]["placement"].update(ds1="17-31")),  # a gap in the placement
        dump_with(doc, lambda d: tables(d)["user_fans"].update(algorithm="modulo")),  # an unknown shard algorithm
        dump_with(doc, lambda d: d["datasources"]["ds1"].pop("port")),  # a datasource without a port
        "",  # an empty document
    ]
    refused_by_publish = 0
    try:
        time.sleep(1)
        for bad in bad_versions:
            try:
                publish(url, bad)  # the operator's path validates first and writes nothing
            except (ConfigError, ConfigSourceError) as e:
                refused_by_publish += 1
                assert "Traceback" not in str(e)
            source.put(source.config_key, bad)  # what a stray etcdctl put does
            time.sleep(0.5)
        assert wait_until(lambda: watcher.rejected_versions >= len(bad_versions), 5), watcher.status()
        time.sleep(1)
    finally:
        for load in loads:
            load.stop()
    failures = [f for load in loads for f in load.failures]
    served = sum(load.ok for load in loads)
    figures.add("config", "bad versions written to etcd during load", len(bad_versions))
    figures.add("config", "bad versions refused by mdriver-config push (publish)", refused_by_publish)
    figures.add("config", "bad versions ignored by the driver (kept the last good config)", watcher.rejected_versions)
    figures.add("config", "failed queries while bad versions were pushed", len(failures))
    assert not failures, failures[:5]
    assert served > 50
    assert refused_by_publish == len(bad_versions)
    assert driver_conn.runtime.version().revision == good, "the driver switched to an invalid config"
    assert proxy.status()["config_revision"] == good, "the proxy switched to an invalid config"
    assert watcher.rejected_versions == len(bad_versions)
    assert proxy.alive(), proxy.output()[-2000:]
    driver_conn.close()
