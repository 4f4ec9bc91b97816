"""Server-side prepared statements (the binary protocol) through the proxy, with every parameter type."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from mdriver.wire import constants as c
from wireclient import ServerError, WireClient

INSERT = ("INSERT INTO user_relation (id, uid, target_uid, relation_type, remark, score, created_at) "
          "VALUES (?, ?, ?, ?, ?, ?, ?)")
SELECT = "SELECT id, uid, target_uid, relation_type, remark, score, created_at FROM user_relation WHERE uid = ?"


@pytest.fixture
def client(proxy, mariadb_cluster):
    mariadb_cluster.truncate("app", "user_relation")
    cl = WireClient(proxy.port)
    yield cl
    cl.close()


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_prepare_execute_roundtrip(proxy, mariadb_cluster, deprecate_eof):
    mariadb_cluster.truncate("app", "user_relation")
    cl = WireClient(proxy.port, deprecate_eof=deprecate_eof)
    try:
        ok, params, cols = cl.prepare(INSERT)
        assert (ok.num_params, ok.num_columns, len(params), len(cols)) == (7, 0, 7, 0)
        types = ((c.MYSQL_TYPE_LONGLONG, True), (c.MYSQL_TYPE_LONGLONG, False), (c.MYSQL_TYPE_LONG, False), (c.MYSQL_TYPE_TINY, False),
                 (c.MYSQL_TYPE_VAR_STRING, False), (c.MYSQL_TYPE_NEWDECIMAL, False), (c.MYSQL_TYPE_DATETIME, False))
        created = dt.datetime(2024, 2, 29, 23, 59, 58, 123456)
        res = cl.execute(ok.statement_id, [2**63 + 5, 600, 7, -3, "héllo 'quoted' \\ back", Decimal("-12.50"), created], types)
        assert res.affected_rows == 1
        # types not re-sent: the proxy must reuse the bound ones
        res = cl.execute(ok.statement_id, [9, 5, 8, 1, None, None, created], types, send_types=False)
        assert res.affected_rows == 1
        sel, params, cols = cl.prepare(SELECT)
        assert sel.num_params == 1 and [cd.name for cd in cols] == ["id", "uid", "target_uid", "relation_type", "remark", "score", "created_at"]
        cols, rows = cl.execute(sel.statement_id, [600])
        assert rows == [(2**63 + 5, 600, 7, -3, "héllo 'quoted' \\ back", Decimal("-12.50"), created)]
        assert cols[0].flags & c.UNSIGNED_FLAG and cols[6].type == c.MYSQL_TYPE_DATETIME
        cols, rows = cl.execute(sel.statement_id, [5])
        assert rows == [(9, 5, 8, 1, None, None, created)]
        cols, rows = cl.execute(sel.statement_id, [4242])
        assert rows == []
    finally:
        cl.close()


def test_long_data_and_text_types(client):
    ok, _, _ = client.prepare(INSERT)
    client.send_long_data(ok.statement_id, 4, "long ".encode())
    client.send_long_data(ok.statement_id, 4, "remark".encode())
    types = ((c.MYSQL_TYPE_LONGLONG, False),) * 4 + ((c.MYSQL_TYPE_STRING, False), (c.MYSQL_TYPE_DOUBLE, False), (c.MYSQL_TYPE_DATE, False))
    res = client.execute(ok.statement_id, [1, 77, 0, 2, None, 2.5, dt.date(2020, 1, 2)], types, long_data=frozenset({4}))
    assert res.affected_rows == 1
    cols, rows = client.query("SELECT remark, score, created_at FROM user_relation WHERE uid = 77")
    assert rows == [("long remark", Decimal("2.50"), dt.datetime(2020, 1, 2))]
    # long data is consumed by one execute: the next one sends its own value
    client.execute(ok.statement_id, [2, 78, 0, 2, "second", 1.0, dt.date(2020, 1, 3)], types)
    assert client.query("SELECT remark FROM user_relation WHERE uid = 78")[1] == [("second",)]


def test_scatter_and_merge_in_binary(client):
    ok, _, _ = client.prepare(INSERT)
    for i, uid in enumerate([1, 600, 1025, 70000], start=1):
        client.execute(ok.statement_id, [i, uid, 0, 1, f"r{i}", Decimal(i), dt.datetime(2024, 1, i)])
    sel, _, cols = client.prepare("SELECT COUNT(*), SUM(score) FROM user_relation WHERE uid IN (?, ?, ?)")
    cols, rows = client.execute(sel.statement_id, [1, 600, 70000])
    assert rows == [(3, Decimal("7.00"))]  # scores 1 + 2 + 4
    sel, _, _ = client.prepare("SELECT uid, created_at FROM user_relation ORDER BY uid DESC LIMIT ?")
    cols, rows = client.execute(sel.statement_id, [2])
    assert rows == [(70000, dt.datetime(2024, 1, 4)), (1025, dt.datetime(2024, 1, 3))]


def test_statement_errors(client):
    with pytest.raises(ServerError) as e:
        client.execute(999, [])
    assert e.value.errno == 1243
    with pytest.raises(ServerError) as e:
        client.prepare("SELECT * FROM user_relation WHERE")
    assert e.value.errno == 1064
    ok, _, _ = client.prepare(SELECT)
    client.reset_statement(ok.statement_id)
    client.close_statement(ok.statement_id)
    with pytest.raises(ServerError) as e:
        client.execute(ok.statement_id, [1])
    assert e.value.errno == 1243
    with pytest.raises(ServerError) as e:
        client.reset_statement(ok.statement_id)
    assert e.value.errno == 1243
    assert client.query("SELECT 1")[1] == [(1,)]


def test_text_queries_in_both_eof_modes(proxy, mariadb_cluster):
    mariadb_cluster.truncate("app", "user_relation")
    for deprecate in (False, True):
        cl = WireClient(proxy.port, deprecate_eof=deprecate)
        try:
            assert cl.query("SELECT 1 AS a, 'x' AS b")[1] == [(1, "x")]
            assert cl.query("SELECT COUNT(*) FROM user_relation")[1] == [(0,)]
            assert cl.query("SHOW TABLES")[1] == [("region",), ("user_fans",), ("user_relation",)]
            assert cl.query("INSERT INTO user_relation (id, uid, target_uid) VALUES (1, 3, 4)").affected_rows == 1
            assert cl.query("DELETE FROM user_relation WHERE uid = 3").affected_rows == 1
        finally:
            cl.close()
