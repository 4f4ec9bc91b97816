"""Clients' prepared statements run as prepared statements on the backends (proxy.stmtcache).

Checked on the servers themselves: their statement counters, and what they
do with an execute of "the last prepared statement" after a failed prepare.
"""
from __future__ import annotations

import asyncio

import pytest

from mdriver.wire import constants as c
from mdriver.wire.framing import frame
from mdriver.wire.statements import make_stmt_execute
from proxy.backend import BackendConnection, Collect
from proxy.pool import PoolSettings
from proxy.server import ServerOptions
from proxy.stmtcache import LAST_PREPARED

from wireclient import WireClient

INSERT = "INSERT INTO user_relation (id, uid, target_uid, remark) VALUES (?, ?, ?, ?)"
SELECT = "SELECT id, remark FROM user_relation WHERE uid = ?"
UIDS = [1, 600, 1025, 70000, 5, 6]  # on several tables of both datasources


def status(cluster, name: str) -> dict[str, int]:
    out = {}
    for ds in cluster.config.datasources:
        conn = cluster.connect(ds)
        try:
            with conn.cursor() as cur:
                cur.execute(f"SHOW GLOBAL STATUS LIKE '{name}'")
                out[ds] = int(cur.fetchone()[1])
        finally:
            conn.close()
    return out


def set_global(cluster, sql: str) -> None:
    for ds in cluster.config.datasources:
        conn = cluster.connect(ds)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()


@pytest.fixture
def rows(mariadb_cluster, proxy):
    """One row per uid in UIDS, remark f"r{uid}"."""
    mariadb_cluster.truncate("app", "user_relation")
    cl = WireClient(proxy.port)
    try:
        ins, _, _ = cl.prepare(INSERT)
        for i, uid in enumerate(UIDS, start=1):
            cl.execute(ins.statement_id, [i, uid, 0, f"r{uid}"])
    finally:
        cl.close()
    return {uid: (i, f"r{uid}") for i, uid in enumerate(UIDS, start=1)}


def select_all(cl: WireClient, stmt_id: int, rows: dict) -> None:
    for uid, row in rows.items():
        assert cl.execute(stmt_id, [uid])[1] == [row]
    assert cl.execute(stmt_id, [424242])[1] == []


def test_single_shard_executes_are_prepared_once_per_backend_connection(proxy, mariadb_cluster, rows):
    cl = WireClient(proxy.port)
    try:
        sel, _, _ = cl.prepare(SELECT)
        for _ in range(2):  # warm: each physical statement prepared where it runs (a new connection's first is text)
            select_all(cl, sel.statement_id, rows)
        prepares = status(mariadb_cluster, "Com_stmt_prepare")
        executes = status(mariadb_cluster, "Com_stmt_execute")
        queries = status(mariadb_cluster, "Com_select")
        for _ in range(20):
            select_all(cl, sel.statement_id, rows)
        assert status(mariadb_cluster, "Com_stmt_prepare") == prepares  # nothing prepared again
        assert sum(status(mariadb_cluster, "Com_stmt_execute").values()) - sum(executes.values()) >= 20 * (len(rows) + 1)
        assert sum(status(mariadb_cluster, "Com_select").values()) - sum(queries.values()) >= 20 * (len(rows) + 1)
    finally:
        cl.close()


def test_evicted_statements_are_closed_on_the_server(make_proxy, mariadb_cluster, rows):
    p = make_proxy(ServerOptions(recovery_interval=0, pool=PoolSettings(statements=2)))
    before = status(mariadb_cluster, "Prepared_stmt_count")
    cl = WireClient(p.port)
    try:
        sel, _, _ = cl.prepare(SELECT)
        for _ in range(3):
            select_all(cl, sel.statement_id, rows)
        held = p.call(lambda: {name: [len(conn.statements.ids) for q in pool.idle.values() for conn in q]
                               for name, pool in p.server.pools.pools.items()})
        assert all(n <= 2 for counts in held.values() for n in counts), held
        after = status(mariadb_cluster, "Prepared_stmt_count")
        for ds, counts in held.items():
            assert after[ds] - before[ds] <= sum(counts) + 1, (before, after, held)  # +1: the client's statement's metadata probe
    finally:
        cl.close()


def test_the_proxy_leaves_half_of_max_prepared_stmt_count_to_others(make_proxy, mariadb_cluster, rows):
    held = max(status(mariadb_cluster, "Prepared_stmt_count").values())  # by the session's other proxies
    limit = 2 * held + 8
    set_global(mariadb_cluster, f"SET GLOBAL max_prepared_stmt_count = {limit}")  # read by the new proxy's first connection
    try:
        p = make_proxy(ServerOptions(recovery_interval=0, pool=PoolSettings(statements=1)))
        cl = WireClient(p.port)
        try:
            sel, _, _ = cl.prepare(SELECT)
            for _ in range(3):
                select_all(cl, sel.statement_id, rows)
            budgets = p.call(lambda: {name: (pool.statement_budget.limit, pool.statement_budget.used, pool.total)
                                      for name, pool in p.server.pools.pools.items()})
            for share, used, connections in budgets.values():
                assert share == limit // 2 and 0 < used <= min(share, connections), budgets
        finally:
            cl.close()
    finally:
        set_global(mariadb_cluster, "SET GLOBAL max_prepared_stmt_count = DEFAULT")


def test_a_server_that_refuses_to_prepare_gets_text(make_proxy, mariadb_cluster, rows):
    p = make_proxy()
    cl = WireClient(p.port)
    sel, _, _ = cl.prepare(SELECT)
    set_global(mariadb_cluster, "SET GLOBAL max_prepared_stmt_count = 0")
    try:
        executes = status(mariadb_cluster, "Com_stmt_execute")
        for _ in range(2):
            select_all(cl, sel.statement_id, rows)
        assert status(mariadb_cluster, "Com_stmt_execute") == executes  # every execute ran as text
    finally:
        set_global(mariadb_cluster, "SET GLOBAL max_prepared_stmt_count = DEFAULT")
        cl.close()


def test_a_statement_the_server_no_longer_has_runs_as_text_then_is_prepared_again(make_proxy, mariadb_cluster, rows):
    p = make_proxy()
    cl = WireClient(p.port)
    bogus = 4_000_000

    def cached_ids():
        return [sid for pool in p.server.pools.pools.values() for q in pool.idle.values() for conn in q
                for sid in conn.statements.ids.values()]

    def forget_on_the_server():  # as if each backend had deallocated them: the cached ids now name nothing
        n = 0
        for pool in p.server.pools.pools.values():
            for q in pool.idle.values():
                for conn in q:
                    for sql in conn.statements.ids:
                        conn.statements.ids[sql] = bogus + n
                        n += 1
        return n

    try:
        sel, _, _ = cl.prepare(SELECT)
        for _ in range(2):  # the first execute on a new connection runs on the task path, as text
            select_all(cl, sel.statement_id, rows)
        assert p.call(forget_on_the_server) >= 4
        select_all(cl, sel.statement_id, rows)  # the servers' 1243 is not the client's business
        ids = p.call(cached_ids)
        assert ids and all(sid < bogus for sid in ids)  # forgotten, then prepared again
        select_all(cl, sel.statement_id, rows)
        assert cl.query("SELECT 1")[1] == [(1,)]
    finally:
        cl.close()


def test_execute_of_the_last_prepared_statement_after_a_failed_prepare_runs_nothing(mariadb_cluster):
    """The pipelined prepare + execute relies on this: a failed prepare must not let the execute run an older statement."""
    ds = mariadb_cluster.config.datasources["ds0"]

    async def scenario():
        conn = BackendConnection(ds, asyncio.get_running_loop(), 0, 10.0)
        await conn.open()
        try:
            first = await conn.command(b"\x16SELECT 40 + ?", Collect(conn.capabilities, prepare=True))
            assert first.error is None
            failed, execute = Collect(conn.capabilities, prepare=True), Collect(conn.capabilities)
            await conn.send(frame(b"\x16SELECT no_such_column FROM no_such_table WHERE ?", 0)
                            + frame(make_stmt_execute(LAST_PREPARED, [2], ((c.MYSQL_TYPE_LONGLONG, False),)), 0), [failed, execute])
            ok, again = Collect(conn.capabilities, prepare=True), Collect(conn.capabilities, decode_rows=False)
            await conn.send(frame(b"\x16SELECT 50 + ?", 0)
                            + frame(make_stmt_execute(LAST_PREPARED, [2], ((c.MYSQL_TYPE_LONGLONG, False),)), 0), [ok, again])
            return failed.error, execute.error, execute.result.rows, ok.error, again.error, len(again.result.rows)
        finally:
            conn.close()

    failed, execute_error, executed_rows, ok, again_error, again_rows = asyncio.run(scenario())
    assert failed is not None and execute_error is not None and execute_error.errno == 1243 and executed_rows == []
    assert ok is None and again_error is None and again_rows == 1
