"""Property: a generated SELECT over the sharded schema gives the reference's answer or a clear refusal.

Hypothesis builds queries from the pieces the router must handle (shard-key
and other predicates, OR, ranges, projections, DISTINCT, aggregates with
GROUP BY and HAVING, ORDER BY with LIMIT) and runs each on the unsharded
reference and through the router. A different answer is a failure; a
refusal must be a PEP 249 error with a MySQL errno and a message.
"""
from __future__ import annotations

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mdriver import err

KEYS = [5, 7, 1029, -1, 0, 12, 33, 1024, 2048, 4095, 3107, 100000, -1025, 424242]

key = st.sampled_from(KEYS)
small_int = st.integers(min_value=-3, max_value=5000)


@st.composite
def predicate(draw) -> str:
    kind = draw(st.sampled_from(["eq", "in", "between", "gt", "lt", "or", "type", "score", "remark", "null", "target", "not_in"]))
    if kind == "eq":
        return f"uid = {draw(key)}"
    if kind == "in":
        return f"uid IN ({', '.join(str(k) for k in draw(st.lists(key, min_size=1, max_size=5)))})"
    if kind == "not_in":
        return f"uid NOT IN ({', '.join(str(k) for k in draw(st.lists(key, min_size=1, max_size=3)))})"
    if kind == "between":
        lo = draw(st.integers(-5, 1100))
        return f"uid BETWEEN {lo} AND {lo + draw(st.integers(-1, 80))}"
    if kind == "gt":
        return f"uid {draw(st.sampled_from(['>', '>=']))} {draw(st.integers(-5, 5000))}"
    if kind == "lt":
        return f"uid {draw(st.sampled_from(['<', '<=']))} {draw(st.integers(-5, 5000))}"
    if kind == "or":
        return f"(uid = {draw(key)} OR uid = {draw(key)})"
    if kind == "type":
        return f"relation_type = {draw(st.integers(1, 4))}"
    if kind == "score":
        return f"score {draw(st.sampled_from(['>', '<']))} {draw(st.integers(-1000, 10000))}"
    if kind == "remark":
        return "remark = " + draw(st.sampled_from(["'friend'", "'café'", "'中文备注'", "''", "'straße'"]))
    if kind == "null":
        return draw(st.sampled_from(["remark IS NULL", "score IS NOT NULL"]))
    return f"target_uid < {draw(small_int)}"


@st.composite
def where(draw) -> str:
    preds = draw(st.lists(predicate(), min_size=0, max_size=3))
    return (" WHERE " + " AND ".join(preds)) if preds else ""


COLUMNS = ["uid", "target_uid", "relation_type", "remark", "score", "created_at"]


@st.composite
def row_query(draw) -> tuple[str, bool]:
    cols = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=3, unique=True))
    w = draw(where())
    if draw(st.booleans()):  # DISTINCT rows, compared as sets
        sql = f"SELECT DISTINCT {', '.join(cols)} FROM user_relation{w}"
        if draw(st.booleans()):
            order = ", ".join(f"{c}{draw(st.sampled_from(['', ' DESC']))}" for c in cols)
            return sql + f" ORDER BY {order}", True
        return sql, False
    order_cols = draw(st.lists(st.sampled_from(COLUMNS), min_size=0, max_size=2, unique=True))
    if draw(st.integers(0, 9)) == 0:  # a window function: fine on one shard, refused across shards
        cols = cols + ["ROW_NUMBER() OVER (ORDER BY id) AS rn"]
    sql = f"SELECT id, {', '.join(cols)} FROM user_relation{w}"
    if not order_cols and not draw(st.booleans()):
        return sql, False
    order = ", ".join(f"{c}{draw(st.sampled_from(['', ' DESC']))}" for c in order_cols)
    sql += f" ORDER BY {order + ', ' if order else ''}id{draw(st.sampled_from(['', ' DESC']))}"
    if draw(st.booleans()):
        count = draw(st.integers(0, 40))
        sql += f" LIMIT {draw(st.integers(0, 30))}, {count}" if draw(st.booleans()) else f" LIMIT {count}"
    return sql, True


AGGS = ["COUNT(*)", "COUNT(remark)", "SUM(score)", "MIN(score)", "MAX(score)", "AVG(score)", "MIN(remark)",
        "MAX(created_at)", "COUNT(DISTINCT uid)", "AVG(target_uid)", "SUM(DISTINCT relation_type)", "MAX(uid % 11)",
        "SUM(score) / COUNT(*)", "STDDEV_POP(score)", "GROUP_CONCAT(id ORDER BY id)"]
GROUPS = ["relation_type", "uid % 5", "remark", "uid"]


@st.composite
def aggregate_query(draw) -> tuple[str, bool]:
    aggs = draw(st.lists(st.sampled_from(AGGS), min_size=1, max_size=3, unique=True))
    groups = draw(st.lists(st.sampled_from(GROUPS), min_size=0, max_size=2, unique=True))
    w = draw(where())
    sql = f"SELECT {', '.join(groups + aggs)} FROM user_relation{w}"
    if not groups:
        return sql, False
    sql += f" GROUP BY {', '.join(groups)}"
    if draw(st.booleans()):
        sql += f" HAVING COUNT(*) > {draw(st.integers(0, 30))}"
    if draw(st.booleans()):
        # the group keys make the order total
        sql += " ORDER BY " + ", ".join(f"{g}{draw(st.sampled_from(['', ' DESC']))}" for g in groups)
        if draw(st.booleans()):
            sql += f" LIMIT {draw(st.integers(0, 20))}"
        return sql, True
    return sql, False


@settings(max_examples=160, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.one_of(row_query(), aggregate_query()))
def test_generated_select_matches_reference_or_is_refused(env, query):
    sql, ordered = query
    try:
        result = env.run(sql)
    except err.Error as e:
        assert isinstance(e.args[0], int) and e.args[0] in (1235, 1210, 1290), (sql, e)
        assert len(e.args[1]) > 20
        event(f"refused {e.args[0]}")
        return
    event("answered")
    names, want, _ = env.reference(sql)
    assert [c.name for c in result.columns] == names, sql
    assert env.same_rows(result.rows, want, ordered), (
        f"{sql}\nwant {env.canon_rows(want)[:6]} ({len(want)})\ngot  {env.canon_rows(result.rows)[:6]} ({len(result.rows)})")
