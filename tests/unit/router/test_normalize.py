"""Literal stripping: templates, values, parameter rendering and the refusals found on the way."""
from __future__ import annotations

import datetime
from decimal import Decimal

import pymysql
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdriver import err
from mdriver.router.normalize import literal_value, normalize, sql_literal
from mdriver.router.rewrite import Builder, render
from mdriver.router.scan import tokenize


def rendered(n) -> str:
    """The SQL a template renders to when no table is renamed."""
    return render(Builder(n.template, tokenize(n.template)).whole(), n, [])


def test_literals_become_markers_and_keep_their_text():
    n = normalize("SELECT * FROM t WHERE a = 'x''y' AND b = 1.50 AND c = -3 AND d = _utf8mb4'z' AND e = X'0A'")
    assert n.template == "SELECT * FROM t WHERE a = :v0 AND b = :v1 AND c = -:v2 AND d = :v3 AND e = :v4"
    assert n.texts == ["'x''y'", "1.50", "3", "_utf8mb4'z'", "X'0A'"]
    assert [n.value(i) for i in range(5)] == ["x'y", Decimal("1.50"), 3, "z", b"\n"]


def test_same_shape_same_template():
    a = normalize("SELECT * FROM user_relation WHERE uid = 1")
    b = normalize("SELECT * FROM user_relation WHERE uid = 987654321")
    c = normalize("SELECT * FROM user_relation WHERE uid = %s", "pyformat", (5,))
    d = normalize("SELECT * FROM user_relation WHERE uid = ?", "qmark", [5])
    assert a.template == b.template == c.template == d.template


def test_identifiers_with_digits_and_quoted_text_are_not_literals():
    n = normalize("SELECT t1.c2, `weird 'name` FROM t_0005 WHERE `x1` = 5 -- 7\n AND y = '--8' /* 9 */")
    assert n.texts == ["5", "'--8'"]
    assert "t_0005" in n.template and "`weird 'name`" in n.template and "/* 9 */" in n.template


@pytest.mark.parametrize("sql", ["SELECT 1; SELECT 2", "SELECT 1;SELECT 2;", "SELECT ';'; DROP TABLE t",
                                 "SELECT 1; /* c */ DROP TABLE t", "SELECT 1;\nSHOW TABLES", "SELECT 1; ;"])
def test_multiple_statements_are_refused(sql):
    with pytest.raises(err.NotSupportedError) as e:
        normalize(sql)
    assert e.value.args == (1235, "multiple statements in one query are not supported by mdriver")


@pytest.mark.parametrize("sql", ["SELECT 1;", "SELECT 1 ;  -- done", "SELECT 'a;b'", "SELECT 1 /* ; */", "SELECT `a;b` FROM t"])
def test_semicolons_that_do_not_separate_statements(sql):
    assert normalize(sql).template.startswith("SELECT")


@pytest.mark.parametrize("sql", ["SELECT /*! 1 */", "SELECT /*!50000 STRAIGHT_JOIN */ 1", "SELECT /*M!100000 1 */"])
def test_executable_comments_are_refused(sql):
    with pytest.raises(err.NotSupportedError) as e:
        normalize(sql)
    assert e.value.args[0] == 1235 and "executable comments" in e.value.args[1]


def test_optimizer_hints_and_comments_inside_strings_are_kept():
    n = normalize("SELECT /*+ MAX_EXECUTION_TIME(10) */ '/*! not a comment */' FROM t")
    assert n.template == "SELECT /*+ MAX_EXECUTION_TIME(10) */ :v0 FROM t"
    assert n.texts == ["'/*! not a comment */'"]


def test_hints():
    n = normalize("/* mdriver:shard=7 */ SELECT 1 /* mdriver: primary */")
    assert (n.hints.shard, n.hints.primary) == (7, True)
    assert "mdriver" not in n.template
    with pytest.raises(err.ProgrammingError) as e:
        normalize("SELECT /* mdriver:shard=x */ 1")
    assert e.value.args[0] == 1064


@pytest.mark.parametrize("sql,what", [("SELECT 'abc", "string literal"), ('SELECT "abc', "string literal"),
                                       ("SELECT `abc", "quoted identifier"), ("SELECT 1 /* x", "comment")])
def test_unterminated_tokens(sql, what):
    with pytest.raises(err.ProgrammingError) as e:
        normalize(sql)
    assert e.value.args == (1064, f"unterminated {what} at position 7" if what != "comment" else "unterminated comment at position 9")


def test_pyformat_percent_rules_match_python_formatting():
    n = normalize("SELECT a %% 3, '50%%' FROM t WHERE b = %s", "pyformat", (1,))
    assert rendered(n) == "SELECT a % 3, '50%' FROM t WHERE b = 1"
    with pytest.raises(err.ProgrammingError):
        normalize("SELECT '50%' FROM t WHERE b = %s", "pyformat", (1,))
    with pytest.raises(err.ProgrammingError):
        normalize("SELECT a % 3 FROM t WHERE b = %s", "pyformat", (1,))
    # without parameters PyMySQL sends the text as is: % is the modulo operator
    assert rendered(normalize("SELECT a % 3", "pyformat", None)) == "SELECT a % 3"


def test_parameter_count_and_style_errors():
    with pytest.raises(err.ProgrammingError) as e:
        normalize("SELECT %s, %s", "pyformat", (1,))
    assert e.value.args[0] == err.ER_WRONG_ARGUMENTS
    with pytest.raises(err.ProgrammingError):
        normalize("SELECT %s", "pyformat", (1, 2))
    with pytest.raises(err.ProgrammingError):
        normalize("SELECT %(a)s", "pyformat", {"b": 1})
    with pytest.raises(err.ProgrammingError):
        normalize("SELECT %(a)s", "pyformat", (1,))
    with pytest.raises(err.ProgrammingError):
        normalize("SELECT ?", "qmark", [])


def test_keep_literals_mode_leaves_literals_in_the_template():
    n = normalize("SELECT a FROM t WHERE b = 2 AND c = %s ORDER BY 1", "pyformat", ("x",), keep_literals=True)
    assert n.template == "SELECT a FROM t WHERE b = 2 AND c = :v0 ORDER BY 1"
    assert rendered(n) == "SELECT a FROM t WHERE b = 2 AND c = 'x' ORDER BY 1"


def test_literal_values():
    assert literal_value("0x1F") == 31
    assert literal_value("0b101") == 5
    assert literal_value("1e3") == 1000.0
    assert literal_value("'a\\nb\\%'") == "a\nb\\%"
    assert literal_value('"q""q"') == 'q"q'
    assert literal_value("_binary'ab'") == b"ab"
    assert literal_value("N'x'") == "x"
    assert literal_value("b'0000001'") == b"\x01"


def _pymysql_mogrify(sql: str, args) -> str:
    conn = pymysql.connections.Connection(defer_connect=True, charset="utf8mb4")
    conn.server_status = 0
    return conn.cursor().mogrify(sql, args)


values = st.one_of(
    st.none(), st.booleans(), st.integers(-2**63, 2**64), st.text(max_size=20), st.binary(max_size=10),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.datetimes(min_value=datetime.datetime(1000, 1, 1)), st.dates(min_value=datetime.date(1000, 1, 1)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(values, min_size=1, max_size=6))
def test_parameters_render_exactly_as_pymysql_sends_them(args):
    sql = "SELECT " + ", ".join(["%s"] * len(args)) + " FROM t WHERE x LIKE '10%%'"
    assert rendered(normalize(sql, "pyformat", tuple(args))) == _pymysql_mogrify(sql, tuple(args))


def test_list_parameters_expand_like_pymysql():
    sql = "SELECT * FROM t WHERE a IN %s AND b = %s"
    args = ([1, "x", None], 2)
    n = normalize(sql, "pyformat", args)
    assert n.template == "SELECT * FROM t WHERE a IN (:v0,:v1,:v2) AND b = :v3"
    assert rendered(n) == _pymysql_mogrify(sql, args)


@pytest.mark.parametrize("text", ["\0", "\\", "\n", "\r", "\x1a", '"', "'", "it's", 'a"b\\c\nd', "plain", "é中😀", ""])
def test_sql_literal_escapes_strings_as_pymysql_does(text):
    assert sql_literal(text) == _pymysql_mogrify("%s", (text,))


def test_sql_literal_matches_pymysql_for_other_types():
    assert sql_literal(Decimal("1.10")) == _pymysql_mogrify("%s", (Decimal("1.10"),))
    assert sql_literal(datetime.time(1, 2, 3)) == _pymysql_mogrify("%s", (datetime.time(1, 2, 3),))
