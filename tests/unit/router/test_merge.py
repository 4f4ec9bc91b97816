"""MySQL's ordering and aggregate semantics as the merger implements them."""
from __future__ import annotations

from decimal import Decimal

import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st

from mdriver.router import merge
from mdriver.router.evaluate import Unsupported, compile_expr, truth
from mdriver.router.normalize import normalize
from mdriver.router.primitives import Aggregate, Out, Route
from mdriver.router.types import Column, ShardQuery, ShardResult, decimal_column, int_column

GENERAL_CI = Column("s")
_QUERIES = [ShardQuery("ds0", "app_00", "SELECT 1"), ShardQuery("ds1", "app_16", "SELECT 1")]
BIN = Column("s", charset=46)


# Facts measured on MariaDB 10.11 with utf8mb4_general_ci: equal pairs and ordered pairs.
@pytest.mark.parametrize("a,b", [("é", "E"), ("a", "A "), ("ß", "s"), ("😀", "😁"), ("Zürich", "zurich"), ("ÆON", "æon")])
def test_general_ci_equal(a, b):
    assert merge.general_ci_key(a) == merge.general_ci_key(b)


@pytest.mark.parametrize("a,b", [("ß", "ss"), ("ae", "æ"), ("a", "b"), ("A", "b"), ("b", "é"), ("é", "Z"), ("", "a"),
                                 ("a\t", "a"), ("a", "a!"), ("z", "Ω"), ("ω", "д"), ("Д", "中")])
def test_general_ci_order(a, b):
    assert merge.general_ci_key(a) < merge.general_ci_key(b)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_ascii_keys_take_a_shortcut_to_the_same_weights(s):
    assert merge.general_ci_key(s) == s.rstrip(" ").translate(merge._WEIGHTS) + " "


def test_binary_collation_is_case_sensitive():
    k = merge.value_key_fn(BIN)
    assert k("A") < k("a") and k("a ") == k("a") and k("a\t") < k("a")


def test_nulls_first_ascending_last_descending():
    rows = [(None,), (2,), (1,), (None,), (3,)]
    asc = sorted(rows, key=merge.sort_key_fn([(lambda r: r[0], False, merge.value_key_fn(None))]))
    desc = sorted(rows, key=merge.sort_key_fn([(lambda r: r[0], True, merge.value_key_fn(None))]))
    assert asc == [(None,), (None,), (1,), (2,), (3,)]
    assert desc == [(3,), (2,), (1,), (None,), (None,)]


def test_mixed_directions_and_collation():
    rows = [("b", 1), ("A", 2), ("a", 1), (None, 5), ("é", 0)]
    key = merge.sort_key_fn([(lambda r: r[0], False, merge.value_key_fn(GENERAL_CI)),
                             (lambda r: r[1], True, merge.value_key_fn(None))])
    assert sorted(rows, key=key) == [(None, 5), ("A", 2), ("a", 1), ("b", 1), ("é", 0)]


def test_sum_and_average_follow_mysql_types():
    assert merge.add(None, None) is None
    assert merge.add(None, Decimal("1.5")) == Decimal("1.5")
    assert merge.add(1, Decimal("1.25")) == Decimal("2.25")
    col = decimal_column("s", 2)
    assert str(merge.average(Decimal("10.00"), 3, col)) == "3.333333"  # scale 2 + 4, half up
    assert str(merge.average(Decimal("2.00"), 3, col)) == "0.666667"
    assert str(merge.average(Decimal("7"), 2, decimal_column("s", 0))) == "3.5000"
    assert merge.average(None, 0, col) is None


def _run(prim, results):
    gen = prim.execute()
    batch = next(gen)
    assert len(batch) == len(results)
    try:
        gen.send(results)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("primitive asked for a second batch")


def test_aggregate_combines_partials_per_group():
    cols = (Column("g"), int_column("COUNT(*)"), decimal_column("SUM(x)", 2), decimal_column("s", 2), int_column("c"), Column("d"))
    a = ShardResult(cols, [("x", 2, Decimal("1.50"), Decimal("3.00"), 2, "p"), ("Y", 1, None, None, 0, "q")])
    b = ShardResult(cols, [("X", 3, Decimal("2.00"), Decimal("4.00"), 3, "p"), ("y", 1, Decimal("1.00"), Decimal("1.00"), 1, "r")])
    route = Route("SCATTER", ["t"], "all", _QUERIES, "")
    agg = Aggregate(route, [0], [Out("any", (0,), ""), Out("count", (1,), ""), Out("sum", (2,), ""),
                                 Out("avg", (3, 4), "a"), Out("count_distinct", (5,), "n")])
    rs = _run(agg, [a, b])
    assert sorted(rs.rows, key=lambda r: r[0].lower()) == [
        ("x", 5, Decimal("3.50"), Decimal("1.400000"), 1),
        ("Y", 2, Decimal("1.00"), Decimal("1.000000"), 2),
    ]
    assert [c.name for c in rs.columns] == ["g", "COUNT(*)", "SUM(x)", "a", "n"]


def test_aggregate_without_groups_returns_one_row_for_no_input():
    route = Route("SCATTER", ["t"], "all", _QUERIES, "")
    agg = Aggregate(route, [], [Out("count", (0,), "n"), Out("sum", (1,), "s"), Out("count_distinct", (2,), "d")])
    cols = (int_column("n"), decimal_column("s", 0), Column("d"))
    assert _run(agg, [ShardResult(cols, []), ShardResult(cols, [])]).rows == [(0, None, 0)]


def _compile(text: str, row_values: dict):
    nv = normalize(text)
    tree = sqlglot.parse_one(nv.template, read="mysql")

    def leaf(e):
        if type(e).__name__ == "Column" and e.name in row_values:
            i = list(row_values).index(e.name)
            return lambda row, _nv: row[i]
        return None

    fn = compile_expr(tree.expressions[0], leaf)
    return fn(tuple(row_values.values()), nv)


@pytest.mark.parametrize("text,values,expected", [
    ("SELECT n > 3", {"n": 5}, 1),
    ("SELECT n > 3", {"n": None}, None),
    ("SELECT n > 3 AND m IS NULL", {"n": 5, "m": None}, 1),
    ("SELECT n > 3 OR m = 1", {"n": None, "m": 1}, 1),
    ("SELECT NOT (n > 3)", {"n": None}, None),
    ("SELECT s / c", {"s": Decimal("10.00"), "c": 3}, Decimal("3.333333")),
    ("SELECT s / c", {"s": 7, "c": 0}, None),
    ("SELECT s - 2 * c", {"s": Decimal("1.5"), "c": 2}, Decimal("-2.5")),
    ("SELECT n % 3", {"n": -7}, -1),
    ("SELECT n BETWEEN 1 AND 3", {"n": 2}, 1),
    ("SELECT n IN (1, 2, NULL)", {"n": 5}, None),
    ("SELECT s = 'ABC'", {"s": "abc "}, 1),
    ("SELECT s <=> NULL", {"s": None}, 1),
])
def test_evaluator(text, values, expected):
    assert _compile(text, values) == expected


def test_evaluator_refuses_what_it_cannot_compute():
    with pytest.raises(Unsupported):
        _compile("SELECT n LIKE 'a%'", {"n": "abc"})


def test_truth():
    assert truth(None) is None and truth(0) is False and truth("1x") is True and truth("abc") is False
