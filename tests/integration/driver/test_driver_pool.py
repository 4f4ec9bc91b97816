"""Backend pools against real MariaDB servers: cap, reuse, health checks, recycling, bounded failures."""
import signal
import threading
import time

import pytest
from driver_helpers import freeze

from mdriver import err
from mdriver.config.model import DataSource
from mdriver.pool import Pool, PoolOptions, Pools


def ds_for(inst, name="ds0", **kw) -> DataSource:
    params = dict(max_connections=4, connect_timeout=2.0, read_timeout=5.0)
    params.update(kw)
    return DataSource(name, inst.host, inst.port, "root", "", **params)


@pytest.fixture
def ds0(mariadb_cluster):
    return mariadb_cluster.instances["ds0"]


def test_reuses_connections_lifo(ds0):
    pool = Pool(ds_for(ds0))
    try:
        a = pool.acquire()
        tid = a.raw.thread_id()
        pool.release(a)
        b = pool.acquire()
        assert b is a and b.raw.thread_id() == tid
        c = pool.acquire()
        assert c is not b
        assert pool.open_connections == 2
        pool.release(b)
        pool.release(c)
        assert pool.idle_connections == 2
    finally:
        pool.close()
    assert pool.open_connections == 0


def test_cap_waits_then_fails_naming_the_datasource(ds0):
    pool = Pool(ds_for(ds0, max_connections=2), PoolOptions(acquire_timeout=0.3))
    try:
        held = [pool.acquire(), pool.acquire()]
        started = time.monotonic()
        with pytest.raises(err.BackendError) as info:
            pool.acquire()
        assert 0.25 <= time.monotonic() - started < 2
        assert info.value.args[0] == err.ER_CON_COUNT_ERROR
        assert f"ds0 (127.0.0.1:{ds0.port})" in str(info.value) and "max_connections" in str(info.value)
        # A waiter gets the connection released by another thread.
        got = []
        t = threading.Thread(target=lambda: got.append(pool.acquire()))
        pool2_timeout = pool.acquire_timeout
        pool.acquire_timeout = 5
        t.start()
        time.sleep(0.1)
        pool.release(held.pop())
        t.join(5)
        pool.acquire_timeout = pool2_timeout
        assert got and pool.open_connections == 2
        pool.release(got[0])
        pool.release(held.pop())
    finally:
        pool.close()


def test_broken_connection_is_replaced(ds0):
    pool = Pool(ds_for(ds0))
    try:
        a = pool.acquire()
        a.broken = True
        pool.release(a)
        assert pool.open_connections == 0
        b = pool.acquire()
        assert b is not a
        assert b.query("SELECT 1").rows == ((1,),)
        pool.release(b)
    finally:
        pool.close()


def test_idle_connection_killed_by_server_is_health_checked(ds0):
    pool = Pool(ds_for(ds0), PoolOptions(ping_interval=0.0))
    admin = ds0.connect()
    try:
        a = pool.acquire()
        tid = a.raw.thread_id()
        pool.release(a)
        admin.cursor().execute(f"KILL {tid}")
        time.sleep(0.2)
        b = pool.acquire()
        assert b.query("SELECT 1").rows == ((1,),)
        assert b.raw.thread_id() != tid
        pool.release(b)
    finally:
        admin.close()
        pool.close()


def test_recycle_replaces_old_connections(ds0):
    pool = Pool(ds_for(ds0), PoolOptions(recycle=0.0))
    try:
        a = pool.acquire()
        tid = a.raw.thread_id()
        pool.release(a)
        b = pool.acquire()
        assert b.raw.thread_id() != tid
        assert pool.open_connections == 1
        pool.release(b)
    finally:
        pool.close()


def test_select_db_only_when_the_database_changes(ds0):
    pool = Pool(ds_for(ds0))
    try:
        b = pool.acquire()
        assert b.query("SELECT DATABASE()", "app_00").rows == (("app_00",),)
        assert b.query("SELECT DATABASE()", "app_01").rows == (("app_01",),)
        assert b.query("SELECT DATABASE()").rows == (("app_01",),)
        pool.release(b)
    finally:
        pool.close()


def test_server_error_keeps_connection_usable(ds0):
    pool = Pool(ds_for(ds0))
    try:
        b = pool.acquire()
        with pytest.raises(err.ProgrammingError) as info:
            b.query("SELECT * FROM no_such_table_here", "app")
        assert info.value.args[0] == 1146
        assert not b.broken
        assert b.query("SELECT 2").rows == ((2,),)
        pool.release(b)
        assert pool.idle_connections == 1
    finally:
        pool.close()


def test_read_timeout_is_bounded_and_names_datasource(ds0):
    pool = Pool(ds_for(ds0, read_timeout=0.5))
    try:
        b = pool.acquire()
        started = time.monotonic()
        with pytest.raises(err.BackendError) as info:
            b.query("SELECT SLEEP(3)")
        assert time.monotonic() - started < 2
        assert f"ds0 (127.0.0.1:{ds0.port})" in str(info.value)
        assert b.broken
        pool.release(b)
        assert pool.open_connections == 0
    finally:
        pool.close()


def test_dead_datasource_fails_fast_without_credentials(make_mariadb):
    inst = make_mariadb("pooldead")
    ds = DataSource("ds7", inst.host, inst.port, "root", "s3cret-pw", connect_timeout=2.0)
    inst.stop()
    pool = Pool(ds)
    started = time.monotonic()
    with pytest.raises(err.BackendError) as info:
        pool.acquire()
    assert time.monotonic() - started < 2.5
    message = str(info.value)
    assert f"ds7 (127.0.0.1:{inst.port})" in message and "s3cret" not in message
    assert isinstance(info.value, err.OperationalError)
    assert pool.open_connections == 0  # the failed attempt gave its slot back


def test_frozen_datasource_fails_within_connect_timeout(make_mariadb):
    inst = make_mariadb("poolfrozen")
    ds = DataSource("ds8", inst.host, inst.port, "root", "", connect_timeout=1.0, read_timeout=30.0)
    freeze(inst)
    try:
        pool = Pool(ds)
        started = time.monotonic()
        with pytest.raises(err.BackendError) as info:
            pool.acquire()
        assert time.monotonic() - started < 3
        assert "ds8" in str(info.value)
    finally:
        inst.kill(signal.SIGCONT)


def test_pools_keep_unchanged_datasources_and_retire_changed(ds0):
    pools = Pools()
    try:
        d = ds_for(ds0)
        first = pools.resolve([d])["ds0"][0]
        b = first.acquire()
        again = pools.resolve([d])["ds0"][0]
        assert again is first
        changed = ds_for(ds0, max_connections=9)
        second = pools.resolve([changed])["ds0"][0]
        assert second is not first and second.max_connections == 9
        # The retired pool still serves its holder, and closes the connection on release.
        assert b.query("SELECT 1").rows == ((1,),)
        first.release(b)
        assert first.open_connections == 0
    finally:
        pools.close()
