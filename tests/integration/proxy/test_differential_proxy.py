"""The router's differential suite, run through the proxy: every query answered as the unsharded reference answers it.

Queries, refusals and data come from tests/integration/router (one list for
both front doors). Each query runs through the proxy twice: as text (PyMySQL)
and as a server-side prepared statement (binary protocol).
"""
from __future__ import annotations

import importlib.util
import pathlib

import pymysql
import pytest

from wireclient import WireClient

ROUTER_TESTS = pathlib.Path(__file__).resolve().parents[1] / "router"


def _load(name: str, filename: str):
    spec = importlib.util.spec_from_file_location(name, ROUTER_TESTS / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


suite = _load("mdriver_router_differential", "test_differential.py")
fixtures = _load("mdriver_router_differential_fixtures", "conftest.py")
QUERIES = suite.QUERIES
REFUSED = suite.REFUSED


@pytest.fixture(scope="module")
def env(mariadb_cluster):
    e = fixtures.Env(mariadb_cluster)
    e.load()
    try:
        yield e
    finally:
        try:
            e.empty()
        finally:
            e.close()


@pytest.fixture(scope="module")
def text_conn(proxy, env):
    conn = proxy.connect(autocommit=True)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def txn_conn(proxy, env):
    """autocommit off: every query runs inside a transaction, on pinned branch connections (scatter reads pipelined)."""
    conn = proxy.connect(autocommit=False)
    yield conn
    conn.rollback()
    conn.close()


@pytest.fixture(scope="module")
def binary_conn(proxy, env):
    cl = WireClient(proxy.port)
    yield cl
    cl.close()


def _check(env, q, names, rows):
    want_names, want, _ = env.reference(q.sql, q.params)
    assert names == want_names, f"column names differ for {q}"
    if q.any_rows:
        full = env.reference(q.sql.rsplit(" LIMIT ", 1)[0], q.params)[1]
        got = env.canon_rows(rows)
        assert len(got) == len(want) and len(set(got)) == len(got) and set(got) <= set(env.canon_rows(full)), q
        return
    assert env.same_rows(rows, want, q.ordered), (
        f"{q}\nwant {len(want)} rows: {env.canon_rows(want)[:8]}\ngot  {len(rows)} rows: {env.canon_rows(rows)[:8]}")


@pytest.mark.parametrize("q", QUERIES, ids=[f"{i:03d}" for i in range(len(QUERIES))])
def test_text_protocol(env, text_conn, q):
    with text_conn.cursor() as cur:
        cur.execute(q.sql, q.params)
        names = [d[0] for d in cur.description] if cur.description else []
        rows = list(cur.fetchall())
    _check(env, q, names, rows)


@pytest.mark.parametrize("q", QUERIES, ids=[f"{i:03d}" for i in range(len(QUERIES))])
def test_inside_a_transaction(env, txn_conn, q):
    with txn_conn.cursor() as cur:
        cur.execute(q.sql, q.params)
        names = [d[0] for d in cur.description] if cur.description else []
        rows = list(cur.fetchall())
    _check(env, q, names, rows)


@pytest.mark.parametrize("q", [q for q in QUERIES if q.params is None],
                         ids=[f"{i:03d}" for i, q in enumerate(QUERIES) if q.params is None])
def test_binary_protocol(env, binary_conn, q):
    ok, _, _ = binary_conn.prepare(q.sql)
    try:
        cols, rows = binary_conn.execute(ok.statement_id, [])
    finally:
        binary_conn.close_statement(ok.statement_id)
    _check(env, q, [cd.name for cd in cols], rows)


@pytest.mark.parametrize("sql,errno", REFUSED, ids=[f"refused-{i:02d}" for i in range(len(REFUSED))])
def test_refused_through_the_proxy(env, text_conn, sql, errno):
    with pytest.raises(pymysql.err.MySQLError) as info:
        with text_conn.cursor() as cur:
            cur.execute(sql)
    assert info.value.args[0] == errno
    with text_conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchall() == ((1,),)
