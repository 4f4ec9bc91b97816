"""Evaluate HAVING, ORDER BY and select expressions over merged aggregates.

After rows from many shards are aggregated, expressions that combine
aggregates (``HAVING COUNT(*) > 2``, ``ORDER BY SUM(x) / COUNT(*)``) must be
computed here. Only a small, exact subset of MySQL is supported: literals and
parameters, arithmetic, comparisons (strings by the column's collation),
AND/OR/NOT/XOR, IS [NOT] NULL, BETWEEN and IN lists. Anything else is refused
when the plan is built, never approximated.
"""
from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Callable

import sqlglot.expressions as exp

from mdriver import err
from mdriver.router.analyze import value_ref
from mdriver.router.merge import general_ci_key

Getter = Callable[[tuple, object], object]  # (merged row, bound values) -> value


class Unsupported(Exception):
    """The expression cannot be evaluated by mdriver; the message names the construct."""


def _num(v):
    if isinstance(v, str):
        m = re.match(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", v)
        if not m:
            return 0
        text = m.group()
        return float(text) if "e" in text.lower() else Decimal(text.strip())
    if isinstance(v, bool):
        return int(v)
    return v


def _arith(op):
    def f(a, b):
        if a is None or b is None:
            return None
        a, b = _num(a), _num(b)
        if isinstance(a, float) or isinstance(b, float):
            return op(float(a), float(b))
        if isinstance(a, Decimal) or isinstance(b, Decimal):
            return op(Decimal(a), Decimal(b))
        return op(a, b)
    return f


def _scale(v) -> int:
    if isinstance(v, Decimal):
        return max(0, -v.as_tuple().exponent)  # type: ignore[operator]
    return 0


def _div(a, b):
    if a is None or b is None:
        return None
    a, b = _num(a), _num(b)
    if b == 0:
        return None
    if isinstance(a, float) or isinstance(b, float):
        return float(a) / float(b)
    try:
        q = Decimal(a) / Decimal(b)
        return q.quantize(Decimal(1).scaleb(-(_scale(a) + 4)), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        return None


def _mod(a, b):
    if a is None or b is None:
        return None
    a, b = _num(a), _num(b)
    if b == 0:
        return None
    if isinstance(a, int) and isinstance(b, int):
        r = abs(a) % abs(b)
        return -r if a < 0 else r
    return Decimal(a) % Decimal(b) if not isinstance(a, float) and not isinstance(b, float) else float(Decimal(a) % Decimal(b))


def _cmp_values(a, b):
    if isinstance(a, str) and isinstance(b, str):
        return general_ci_key(a), general_ci_key(b)
    if isinstance(a, str) or isinstance(b, str):
        return _num(a), _num(b)
    return a, b


def _compare(test):
    def f(a, b):
        if a is None or b is None:
            return None
        x, y = _cmp_values(a, b)
        return 1 if test(x, y) else 0
    return f


def truth(v) -> bool | None:
    if v is None:
        return None
    v = _num(v)
    return v != 0


def _not(v):
    t = truth(v)
    return None if t is None else (0 if t else 1)


def _and(a, b):
    ta, tb = truth(a), truth(b)
    if ta is False or tb is False:
        return 0
    if ta is None or tb is None:
        return None
    return 1


def _or(a, b):
    ta, tb = truth(a), truth(b)
    if ta or tb:
        return 1
    if ta is None or tb is None:
        return None
    return 0


def _xor(a, b):
    ta, tb = truth(a), truth(b)
    if ta is None or tb is None:
        return None
    return 1 if ta != tb else 0


_BINARY: dict[type, Callable] = {
    exp.Add: _arith(lambda a, b: a + b),
    exp.Sub: _arith(lambda a, b: a - b),
    exp.Mul: _arith(lambda a, b: a * b),
    exp.Div: _div,
    exp.Mod: _mod,
    exp.IntDiv: lambda a, b: None if a is None or b is None or _num(b) == 0 else int(Decimal(_num(a)) / Decimal(_num(b))),
    exp.EQ: _compare(lambda x, y: x == y),
    exp.NEQ: _compare(lambda x, y: x != y),
    exp.GT: _compare(lambda x, y: x > y),
    exp.GTE: _compare(lambda x, y: x >= y),
    exp.LT: _compare(lambda x, y: x < y),
    exp.LTE: _compare(lambda x, y: x <= y),
    exp.And: _and,
    exp.Or: _or,
    exp.Xor: _xor,
}


def compile_expr(e: exp.Expression, leaf: Callable[[exp.Expression], Getter | None]) -> Getter:
    """Compile ``e`` to ``f(row, nv)``; ``leaf`` maps columns and aggregates to row getters."""
    g = leaf(e)
    if g is not None:
        return g
    if isinstance(e, exp.Paren):
        return compile_expr(e.this, leaf)
    ref = value_ref(e)
    if ref is not None:
        return lambda row, nv, ref=ref: ref.get(nv)
    if isinstance(e, exp.Neg):
        inner = compile_expr(e.this, leaf)
        return lambda row, nv: (lambda v: None if v is None else -_num(v))(inner(row, nv))
    if isinstance(e, exp.Not):
        if isinstance(e.this, exp.Is):
            inner = compile_expr(e.this, leaf)
            return lambda row, nv: _not(inner(row, nv))
        inner = compile_expr(e.this, leaf)
        return lambda row, nv: _not(inner(row, nv))
    if isinstance(e, exp.Is):
        if not isinstance(e.expression, exp.Null):
            raise Unsupported(f"IS {e.expression.sql(dialect='mysql')}")
        inner = compile_expr(e.this, leaf)
        return lambda row, nv: 1 if inner(row, nv) is None else 0
    if isinstance(e, exp.NullSafeEQ):
        a, b = compile_expr(e.this, leaf), compile_expr(e.expression, leaf)

        def nseq(row, nv):
            x, y = a(row, nv), b(row, nv)
            if x is None or y is None:
                return 1 if x is None and y is None else 0
            x, y = _cmp_values(x, y)
            return 1 if x == y else 0
        return nseq
    fn = _BINARY.get(type(e))
    if fn is not None:
        a, b = compile_expr(e.this, leaf), compile_expr(e.expression, leaf)
        return lambda row, nv: fn(a(row, nv), b(row, nv))
    if isinstance(e, exp.Between):
        x = compile_expr(e.this, leaf)
        lo, hi = compile_expr(e.args["low"], leaf), compile_expr(e.args["high"], leaf)
        ge, le = _BINARY[exp.GTE], _BINARY[exp.LTE]
        return lambda row, nv: _and(ge(x(row, nv), lo(row, nv)), le(x(row, nv), hi(row, nv)))
    if isinstance(e, exp.In) and not e.args.get("query"):
        x = compile_expr(e.this, leaf)
        items = [compile_expr(i, leaf) for i in e.expressions]
        eq = _BINARY[exp.EQ]

        def isin(row, nv):
            v = x(row, nv)
            if v is None:
                return None
            saw_null = False
            for it in items:
                r = eq(v, it(row, nv))
                if r == 1:
                    return 1
                if r is None:
                    saw_null = True
            return None if saw_null else 0
        return isin
    raise Unsupported(_describe(e))


def _describe(e: exp.Expression) -> str:
    text = e.sql(dialect="mysql")
    return text if len(text) <= 60 else text[:57] + "..."


def unsupported_error(where: str, construct: str) -> err.MySQLError:
    return err.error(err.NotSupportedError, err.ER_NOT_SUPPORTED_YET,
                     f"{where} with {construct} cannot be computed by mdriver across shards")
