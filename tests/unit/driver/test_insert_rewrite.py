"""Generated-id rewriting of INSERT templates (pure text work, no server)."""
from types import SimpleNamespace

import pytest

from mdriver.config.model import IdGenerator
from mdriver.writes import _EXECUTEMANY, analyze_insert, rewrite_with_ids

VERSION = SimpleNamespace(id_generators={("app", "t"): IdGenerator("id", "snowflake")})


def rewrite(sql, args, ids):
    plan = analyze_insert(sql, "app", VERSION)
    assert plan is not None
    return rewrite_with_ids(sql, args, plan, ids)


def test_positional_single_row():
    assert rewrite("INSERT INTO t (a, b) VALUES (%s, %s)", (1, "x"), [99]) == (
        "INSERT INTO t (`id`, a, b) VALUES (%s, %s, %s)", (99, 1, "x"))


def test_multi_row_and_literals():
    sql, args = rewrite("insert into `t`(a,b) values (%s,'it''s (x)'),(%s, 2)", (1, 3), [7, 8])
    assert sql == "insert into `t`(`id`, a,b) values (%s, %s,'it''s (x)'),(%s, %s, 2)"
    assert args == (7, 1, 8, 3)


def test_named_parameters():
    sql, args = rewrite("INSERT INTO app.t (a) VALUES (%(a)s) ON DUPLICATE KEY UPDATE a = %(a)s", {"a": 5}, [11])
    assert sql == "INSERT INTO app.t (`id`, a) VALUES (%(__mdriver_id_0)s, %(a)s) ON DUPLICATE KEY UPDATE a = %(a)s"
    assert args == {"a": 5, "__mdriver_id_0": 11}


def test_placeholders_after_the_rows_keep_their_order():
    sql, args = rewrite("INSERT INTO t (a) VALUES (%s) ON DUPLICATE KEY UPDATE a = %s", (1, 2), [3])
    assert args == (3, 1, 2)


def test_text_without_parameters_gets_its_percent_escaped():
    sql, args = rewrite("INSERT INTO t (a) VALUES ('100%')", None, [4])
    assert sql == "INSERT INTO t (`id`, a) VALUES (%s, '100%%')" and args == (4,)
    assert sql % ("4",) == "INSERT INTO t (`id`, a) VALUES (4, '100%')"


@pytest.mark.parametrize("sql", [
    "INSERT INTO t (id, a) VALUES (%s, %s)",          # id given
    "INSERT INTO t VALUES (%s, %s)",                  # no column list
    "INSERT INTO t (a) SELECT a FROM u",              # no VALUES rows
    "INSERT INTO other (a) VALUES (%s)",              # no generator for this table
    "UPDATE t SET a = 1",
])
def test_not_applicable(sql):
    assert analyze_insert(sql, "app", VERSION) is None


def test_executemany_pattern():
    m = _EXECUTEMANY.match("INSERT INTO t (a, b) VALUES (%s, %(b)s) ON DUPLICATE KEY UPDATE b = VALUES(b);")
    assert m.group("values") == "(%s, %(b)s)" and m.group("tail") == " ON DUPLICATE KEY UPDATE b = VALUES(b)"
    assert _EXECUTEMANY.match("INSERT INTO t (a) VALUES (%s, NOW())") is None
    assert _EXECUTEMANY.match("INSERT INTO t (a) SELECT %s") is None
