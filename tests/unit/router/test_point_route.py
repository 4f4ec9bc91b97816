"""Prepared statements with placeholders kept: ``Router.plan(placeholders=True)`` and ``Router.point_route``.

The proxy prepares these physical statements on the backends, so each must
route exactly as the value-rendered plan does and keep every ``?`` in order.
"""
from __future__ import annotations

import pathlib

import pytest

from mdriver import err
from mdriver.config import load_config
from mdriver.router import Router

CONFIG_PATH = pathlib.Path(__file__).resolve().parents[3] / "config" / "sharding.yaml"
POINT = [
    ("SELECT * FROM user_relation WHERE uid = ?", lambda k: (k,)),
    ("SELECT remark FROM user_relation WHERE uid = ? AND target_uid > 3 AND remark <> 'why?'", lambda k: (k,)),
    ("UPDATE user_relation SET remark = ?, score = score + ? WHERE uid = ?", lambda k: ("x", 1, k)),
    ("DELETE FROM user_relation WHERE target_uid = ? AND uid = ?", lambda k: (7, k)),
    ("SELECT uid FROM user_relation WHERE uid = ? FOR UPDATE", lambda k: (k,)),
]


@pytest.fixture(scope="module")
def router():
    return Router(load_config(str(CONFIG_PATH)))


def _with_values(sql: str, params) -> str:
    """The physical SQL with each ``?`` outside quotes replaced by its value, as the router renders it."""
    out, values, quoted = [], iter(params), False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        if ch == "?" and not quoted:
            v = next(values)
            out.append(repr(v) if isinstance(v, str) else str(v))
        else:
            out.append(ch)
    return "".join(out)


@pytest.mark.parametrize("sql, params_for", POINT)
def test_point_route_matches_the_value_rendered_plan(router, sql, params_for):
    route = router.point_route(sql, "app", params_for(1))
    assert route is not None
    for key in [0, 1, 5, 1023, 1024, 1029, 2**40 + 3, -17, "12345"]:
        params = params_for(key)
        q = route.route(params)
        with_values = router.plan(sql, "app", params, "qmark").single
        assert (q.datasource, q.database, q.write) == (with_values.datasource, with_values.database, with_values.write)
        assert _with_values(q.sql, params) == with_values.sql
        assert router.plan(sql, "app", params, "qmark", placeholders=True).single == q


def test_a_null_key_is_left_to_the_general_path(router):
    route = router.point_route("SELECT * FROM user_relation WHERE uid = ?", "app", (1,))
    assert route.route((None,)) is None


@pytest.mark.parametrize("sql, params", [
    ("SELECT * FROM user_relation WHERE uid IN (?, ?)", (1, 2)),  # several shards
    ("SELECT * FROM user_relation WHERE uid BETWEEN ? AND ?", (1, 2)),
    ("SELECT * FROM user_relation WHERE uid = 5 AND remark = ?", ("a",)),  # the key is a literal
    ("SELECT * FROM user_relation WHERE uid = -?", (5,)),
    ("/* mdriver:shard=3 */ SELECT * FROM user_relation WHERE uid = ?", (5,)),
    ("/* mdriver:primary */ SELECT * FROM user_relation WHERE uid = ?", (5,)),
    ("SELECT * FROM region WHERE region_id = ?", (1,)),  # not sharded
])
def test_only_plain_point_statements_get_a_point_route(router, sql, params):
    assert router.point_route(sql, "app", params) is None


def test_point_route_raises_what_the_router_refuses(router):
    with pytest.raises(err.NotSupportedError):
        router.point_route("SELECT GROUP_CONCAT(remark) FROM user_relation WHERE uid > ?", "app", (1,))


def test_placeholders_are_kept_only_for_parameters(router):
    plan = router.plan("SELECT * FROM user_relation WHERE uid = ? AND remark = 'a?' LIMIT 5", "app", (1029,), "qmark", placeholders=True)
    assert plan.single.sql == "SELECT * FROM `app_00`.`user_relation_0005` AS `user_relation` WHERE uid = ? AND remark = 'a?' LIMIT 5"
