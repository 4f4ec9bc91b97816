"""ConfigWatcher on a real etcd: hot reload, bad versions, outages, compaction, a replaced cluster, the cache."""
from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time

import pytest

from etcd_helpers import BASE_TEXT, variant
from mdriver.config.etcd import EtcdSource
from mdriver.config.publish import publish
from mdriver.config.sources import ConfigSourceError
from mdriver.config.watch import ConfigWatcher
from mdriver.sandbox.etcd import EtcdServer

pytestmark = pytest.mark.etcd


def wait_until(predicate, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def test_push_then_watch_switches_within_one_second(source, make_watcher):
    r1 = publish(source, BASE_TEXT).revision
    changes = []
    watcher = make_watcher(source.url, on_change=lambda new, old: changes.append((old.revision, new.revision)))
    before = watcher.current
    assert before.revision == r1 and before.router.max_offset == 100000

    started = time.monotonic()
    r2 = publish(source, variant(5000)).revision
    assert watcher.wait_for_revision(r2, timeout=1.0), f"not switched within 1 s: {watcher.status()}"
    assert time.monotonic() - started < 1.0
    assert watcher.current.router.max_offset == 5000
    assert before.router.max_offset == 100000 and before.revision == r1  # a held Config never changes
    assert changes == [(r1, r2)]


def test_bad_versions_are_ignored_logged_and_counted(source, make_watcher, caplog):
    r1 = publish(source, BASE_TEXT).revision
    rejected = []
    watcher = make_watcher(source.url, on_reject=lambda rev, reason: rejected.append((rev, reason)))
    caplog.set_level(logging.ERROR, logger="mdriver.config.watch")

    bad_yaml = source.put(source.config_key, "version: 1\ndatasources: [unclosed\n")
    assert wait_until(lambda: len(rejected) == 1, 5)  # the hook runs after the count: wait for it
    gap = source.put(source.config_key, variant(9, BASE_TEXT.replace('ds1: "16-31"}', 'ds1: "17-31"}')))
    assert wait_until(lambda: len(rejected) == 2, 5)
    deleted = source.request("kv/deleterange", {"key": base64.b64encode(source.config_key.encode()).decode()})
    assert wait_until(lambda: len(rejected) == 3, 5)

    assert watcher.rejected_versions == 3
    assert watcher.current.revision == r1 and watcher.current.router.max_offset == 100000
    assert [rev for rev, _ in rejected] == [str(bad_yaml), str(gap), deleted["header"]["revision"]]
    assert "invalid YAML" in rejected[0][1]
    assert "schemas.app.tables.user_relation.placement: database 16 has no datasource (gap)" in rejected[1][1]
    assert rejected[2][1] == "the config key was deleted"
    assert watcher.last_rejected == (rejected[2][0], rejected[2][1])
    messages = [r.getMessage() for r in caplog.records]
    assert sum(f"ignoring invalid config revision {bad_yaml} " in m and f"keeping revision {r1}" in m for m in messages) == 1

    r_good = publish(source, variant(4242)).revision
    assert watcher.wait_for_revision(r_good, timeout=5.0)  # the 1 s bound is tested on its own above
    assert watcher.current.router.max_offset == 4242 and watcher.rejected_versions == 3


def test_etcd_killed_keeps_last_good_then_picks_up_a_push_after_restart(source, etcd_server, make_watcher):
    r1 = publish(source, BASE_TEXT).revision
    watcher = make_watcher(source.url)
    etcd_server.kill()
    try:
        reads = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # serving goes on: every read of current succeeds
            assert watcher.current.revision == r1
            reads += 1
            time.sleep(0.001)
        assert reads > 100
        assert wait_until(lambda: not watcher.connected, 2)
        assert "unreachable" in watcher.status()["last_error"] or "broke" in watcher.status()["last_error"]
    finally:
        etcd_server.start()
    r2 = publish(source, variant(777)).revision
    assert watcher.wait_for_revision(r2, timeout=3.0), watcher.status()
    assert watcher.connected and watcher.current.router.max_offset == 777


def test_an_update_made_while_disconnected_is_not_missed(source, relay, etcd_prefix, make_watcher):
    r1 = publish(source, BASE_TEXT).revision
    watcher = make_watcher(f"etcd://127.0.0.1:{relay.port}{etcd_prefix}")
    assert wait_until(lambda: relay.accepted >= 2, 2)  # the initial read and the watch stream
    relay.cut()
    r2 = publish(source, variant(2)).revision  # directly to etcd: the watcher cannot see it now
    assert wait_until(lambda: not watcher.connected, 2)
    assert watcher.current.revision == r1
    relay.restore()
    assert watcher.wait_for_revision(r2, timeout=3.0), watcher.status()  # no further push needed
    assert watcher.current.router.max_offset == 2


def test_compaction_while_disconnected_triggers_a_full_reload(source, relay, etcd_prefix, make_watcher, caplog):
    caplog.set_level(logging.INFO, logger="mdriver.config.watch")
    r1 = publish(source, BASE_TEXT).revision
    watcher = make_watcher(f"etcd://127.0.0.1:{relay.port}{etcd_prefix}")
    assert wait_until(lambda: relay.accepted >= 2, 2)  # the initial read and the watch stream
    relay.cut()
    r2 = publish(source, variant(2)).revision
    r3 = publish(source, variant(3), expected_revision=r2).revision
    source.request("kv/compaction", {"revision": int(r3), "physical": True})
    relay.restore()
    assert watcher.wait_for_revision(r3, timeout=3.0), watcher.status()
    assert watcher.current.router.max_offset == 3 and int(r1) < int(r3)
    assert any("compacted" in r.getMessage() and "reloading" in r.getMessage() for r in caplog.records)


def test_a_replaced_etcd_cluster_with_lower_revisions_is_reloaded(source, relay, etcd_prefix, make_watcher, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="mdriver.config.watch")
    for n in range(5):  # the shared etcd is ahead of a fresh one
        source.put(source.key("padding"), str(n))
    publish(source, BASE_TEXT)
    watcher = make_watcher(f"etcd://127.0.0.1:{relay.port}{etcd_prefix}")
    assert wait_until(lambda: relay.accepted >= 2, 2)
    fresh = EtcdServer(str(tmp_path / "fresh"), die_with_parent=True)
    fresh.start()
    try:
        fresh_rev = publish(f"etcd://{fresh.host}:{fresh.port}{etcd_prefix}", variant(31)).revision
        assert int(fresh_rev) < int(watcher.revision)
        relay.cut()
        relay.target = (fresh.host, fresh.port)
        relay.restore()
        assert wait_until(lambda: watcher.revision == fresh_rev, 3), watcher.status()
        assert watcher.current.router.max_offset == 31
        assert any("went back" in r.getMessage() for r in caplog.records)
    finally:
        relay.cut()
        fresh.stop()


def test_idle_watch_is_renewed_without_missing_updates(source, make_watcher):
    publish(source, BASE_TEXT)
    watcher = make_watcher(source.url, idle_timeout=0.2)
    time.sleep(0.7)  # several idle renewals
    r2 = publish(source, variant(12)).revision
    assert watcher.wait_for_revision(r2, timeout=1.0)
    assert watcher.connected and watcher.rejected_versions == 0


def test_start_from_cache_while_etcd_is_down(source, etcd_server, make_watcher, tmp_path, caplog):
    cache = str(tmp_path / "cache" / "config.json")
    r1 = publish(source, BASE_TEXT).revision
    first = make_watcher(source.url, cache_path=cache)
    r2 = publish(source, variant(88)).revision
    assert first.wait_for_revision(r2, 1.0)
    first.stop()

    etcd_server.kill()
    try:
        started = time.monotonic()
        with pytest.raises(ConfigSourceError, match="etcd unreachable"):
            ConfigWatcher(source.url).start()  # no cache: a clear error, quickly
        assert time.monotonic() - started < 6
        caplog.set_level(logging.WARNING, logger="mdriver.config.watch")
        watcher = make_watcher(source.url, cache_path=cache)
        assert watcher.loaded_from_cache and watcher.current.revision == r2 and watcher.current.router.max_offset == 88
        assert any("serving cached revision" in r.getMessage() for r in caplog.records)
    finally:
        etcd_server.start()
    r3 = publish(source, variant(99)).revision
    assert watcher.wait_for_revision(r3, timeout=3.0), watcher.status()
    assert not watcher.loaded_from_cache and int(r3) > int(r1)


def test_cache_of_another_source_is_not_used(source, etcd_server, make_watcher, tmp_path):
    cache = str(tmp_path / "config.json")
    publish(source, BASE_TEXT)
    make_watcher(source.url, cache_path=cache).stop()
    other = EtcdSource(source.endpoints, source.prefix + "-other").url
    with pytest.raises(ConfigSourceError, match="no config at key"):
        ConfigWatcher(other, cache_path=cache).start()


def test_a_listener_on_an_event_loop_runs_on_that_loop(source, make_watcher):
    publish(source, BASE_TEXT)
    watcher = make_watcher(source.url)

    async def main():
        loop = asyncio.get_running_loop()
        seen = asyncio.Queue()
        watcher.add_listener(lambda new, old: seen.put_nowait((threading.get_ident(), new.revision)), loop=loop)
        rev = await loop.run_in_executor(None, lambda: publish(source, variant(5)).revision)
        ident, got = await asyncio.wait_for(seen.get(), 2)
        return ident, got, rev

    ident, got, rev = asyncio.run(main())
    assert got == rev and ident == threading.get_ident()


def test_a_failing_listener_does_not_stop_the_others(source, make_watcher):
    publish(source, BASE_TEXT)
    seen = []

    def broken(new, old):
        raise RuntimeError("listener bug")

    watcher = make_watcher(source.url, on_change=broken)
    watcher.add_listener(lambda new, old: seen.append(new.revision))
    r2 = publish(source, variant(6)).revision
    r3 = publish(source, variant(7), expected_revision=r2).revision
    assert watcher.wait_for_revision(r3, 1.0)
    assert wait_until(lambda: seen == [r2, r3], 1)


def test_stop_interrupts_a_blocked_watch_promptly(source):
    publish(source, BASE_TEXT)
    watcher = ConfigWatcher(source.url, idle_timeout=30).start()
    time.sleep(0.2)  # the watch is now blocked reading an idle stream
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 1.0
    assert not any(t.name.startswith("mdriver-config-watch") and t.is_alive() for t in threading.enumerate())
