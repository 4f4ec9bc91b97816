"""The aggregate shape of a SELECT over several shards (see scatter.py).

Each shard computes partial aggregates per group: COUNT, SUM, MIN and MAX as
written, AVG as SUM and COUNT, and DISTINCT aggregates by also grouping on
their arguments. The merger combines the partials per group, computes
expressions over aggregates, then applies HAVING, ORDER BY and LIMIT.
"""
from __future__ import annotations

import re

import sqlglot.expressions as exp

from mdriver import err
from mdriver.router import analyze as A
from mdriver.router.evaluate import Unsupported, compile_expr, unsupported_error
from mdriver.router.primitives import Out
from mdriver.router.rewrite import compact, part_text

_SIMPLE_AGGS = {exp.Count: "count", exp.Sum: "sum", exp.Min: "min", exp.Max: "max", exp.Avg: "avg"}


def refuse_scatter(msg: str) -> err.MySQLError:
    return A.refuse(msg)


def aggs_in(e: exp.Expression) -> list[exp.AggFunc]:
    """Aggregate calls in ``e``, not looking inside subqueries (those are per row)."""
    out = []
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, (exp.Subquery, exp.Select)) and x is not e:
            continue
        if isinstance(x, exp.AggFunc):
            out.append(x)
            continue
        stack.extend(x.iter_expressions())
    return out


def _agg_kind(a: exp.AggFunc) -> tuple[str, list[exp.Expression], bool]:
    """(kind, argument expressions, distinct) or a refusal."""
    kind = _SIMPLE_AGGS.get(type(a))
    if kind is None:
        name = a.sql_name() if hasattr(a, "sql_name") else type(a).__name__
        raise refuse_scatter(f"aggregate {name} across shards is not supported by mdriver "
                             "(supported: COUNT, SUM, MIN, MAX, AVG and their DISTINCT forms)")
    arg = a.this
    if isinstance(arg, exp.Distinct):
        args = list(arg.expressions)
        if kind in ("min", "max"):
            return kind, args, False
        if kind != "count" and len(args) != 1:
            raise refuse_scatter(f"{kind.upper()}(DISTINCT ...) takes one argument")
        return kind, args, True
    if kind == "count" and isinstance(arg, exp.Star):
        return "count", [], False
    return kind, [arg], False


MARKER_RE = re.compile(r":v(\d+)")


def _gen_parts(e: exp.Expression) -> list:
    """Parts for an expression the merger needs but the user did not write as a select item."""
    text = e.sql(dialect="mysql")
    out: list = []
    pos = 0
    for m in MARKER_RE.finditer(text):
        out.append(text[pos:m.start()])
        out.append(int(m.group(1)))
        pos = m.end()
    out.append(text[pos:])
    return compact(out)


def ordinal(e: exp.Expression) -> int | None:
    if isinstance(e, exp.Literal) and not e.is_string and e.this.isdigit():
        return int(e.this)
    return None


def _sig(a: exp.Expression) -> str:
    return a.sql(dialect="mysql").upper()


def short(e: exp.Expression) -> str:
    text = e.sql(dialect="mysql")
    return text if len(text) <= 80 else text[:77] + "..."


class AggregateShape:
    """Mixin of ScatterSelect: builds ``self.branch`` and the merge spec for aggregates."""

    def _plan_aggregate(self) -> None:
        if any(i.star for i in self.items):
            raise refuse_scatter("SELECT * with aggregates or GROUP BY across shards is not supported by mdriver")
        sel, cl, b = self.sel, self.cl, self.b
        self.cols: list[list] = []  # branch select columns (parts each)
        self.outs: list[Out] = []
        self.agg_out: dict[str, int] = {}  # aggregate signature -> out index
        self.group_by: list[list] = []  # branch GROUP BY expressions (parts each)
        self.group_cols: list[int] = []  # branch columns of the client's group keys
        self.item_out: list[int | None] = []  # out index of each visible item (None: computed)
        self.computed: list[tuple[int, exp.Expression]] = []
        self.name_parts: list[list | str] = []
        self.distinct_cols: dict[str, int] = {}
        group_exprs: list[exp.Expression] = []
        group_texts: list[list] = []
        group = sel.args.get("group")
        if group is not None:
            for g, rng in zip(group.expressions, cl.item_ranges["GROUP"]):
                if isinstance(g, exp.Placeholder):
                    self._placeholder("GROUP BY")
                k = self._item_for(g)
                if k is not None and aggs_in(self.items[k].expr):
                    raise refuse_scatter("GROUP BY an aggregate is not allowed")
                expr = self.items[k].expr if k is not None else g
                parts = b.range(*self.items[k].expr_rng) if k is not None else b.range(*rng)
                group_exprs.append(expr)
                group_texts.append(parts)
        self.group_exprs = group_exprs
        # visible items
        for k, it in enumerate(self.items):
            self.name_parts.append(it.alias if it.alias is not None else compact(b.range(*it.expr_rng)))
            aggs = aggs_in(it.expr)
            if not aggs:
                c = self._col(b.range(*it.rng))
                self.item_out.append(self._out("any", (c,), ""))
                continue
            if it.expr is aggs[0] and len(aggs) == 1:
                kind, args, distinct = _agg_kind(it.expr)
                if not distinct and kind != "avg":
                    c = self._col(b.range(*it.rng))
                    idx = self._out(kind, (c,), "")
                    self.agg_out.setdefault(_sig(it.expr), idx)
                    self.item_out.append(idx)
                    continue
                arg_parts = self._item_arg_parts(it)
                idx = self._agg(it.expr, kind, arg_parts, distinct, name="")
                self.item_out.append(idx)
                continue
            for a in aggs:
                kind, args, distinct = _agg_kind(a)
                self._agg(a, kind, [_gen_parts(x) for x in args], distinct)
            self.item_out.append(None)
            self.computed.append((k, it.expr))
        # group keys: reuse a selected column or add a hidden one
        for expr, parts in zip(group_exprs, group_texts):
            k = next((i for i, it in enumerate(self.items) if self._same(it.expr, expr) and not aggs_in(it.expr)), None)
            if k is not None:
                self.group_cols.append(self.outs[self.item_out[k]].cols[0])  # type: ignore[index]
            else:
                c = self._col(parts)
                self.group_cols.append(c)
                self._out("any", (c,), "")
            self.group_by.append(parts)
        # aggregates used only by HAVING / ORDER BY
        having = sel.args.get("having")
        having = having.this if having is not None else None
        for node in ([having] if having is not None else []) + [o.this for o in (sel.args.get("order").expressions
                                                                                  if sel.args.get("order") else [])]:
            for a in aggs_in(node):
                if _sig(a) not in self.agg_out:
                    kind, args, distinct = _agg_kind(a)
                    self._agg(a, kind, [_gen_parts(x) for x in args], distinct)
        self.n_outs = len(self.outs)
        # evaluators
        leaf = self._leaf
        try:
            self.computed_fns = [(k, compile_expr(e, leaf)) for k, e in self.computed]
        except Unsupported as u:
            raise unsupported_error("a select expression over aggregates", str(u)) from None
        try:
            self.having_fn = compile_expr(having, leaf) if having is not None else None
        except Unsupported as u:
            raise unsupported_error("HAVING", str(u)) from None
        self.sort_keys = []
        keys = self._order_keys()
        if keys:
            for o, e, desc, rng in keys:
                k = self._item_for(e)
                if k is not None:
                    idx = self._item_index(k)
                    self.sort_keys.append(((lambda i: lambda row, nv: row[i])(idx), desc, idx, short(e)))
                    continue
                try:
                    fn = compile_expr(e, leaf)
                except Unsupported as u:
                    raise unsupported_error("ORDER BY", str(u)) from None
                self.sort_keys.append((fn, desc, self._direct_index(e), short(e)))
        elif group_exprs:  # MariaDB returns groups in GROUP BY order when there is no ORDER BY
            for expr in group_exprs:
                idx = self._direct_index(expr)
                fn = compile_expr(expr, leaf)
                self.sort_keys.append((fn, False, idx, short(expr)))
        # the branch statement
        parts: list = ["SELECT "]
        mods = [m for m in cl.modifiers if m not in ("DISTINCT", "DISTINCTROW", "ALL")]
        if mods:
            parts.append(" ".join(mods) + " ")
        for i, c in enumerate(self.cols):
            if i:
                parts.append(", ")
            parts += c
        parts.append(" ")
        tail = min([cl.starts[c] for c in ("GROUP", "HAVING", "ORDER", "LIMIT", "FOR", "LOCK") if c in cl.starts] + [cl.end])
        parts += b.range(cl.starts["FROM"], self._upto(tail))
        if self.group_by:
            parts.append(" GROUP BY ")
            for i, g in enumerate(self.group_by):
                if i:
                    parts.append(", ")
                parts += g
        lock = [cl.starts[c] for c in ("FOR", "LOCK") if c in cl.starts]
        if lock:
            parts.append(" ")
            parts += b.range(min(lock), cl.end)
        self.branch = compact(parts)
        if self.distinct:
            self.distinct_width = len(self.items)

    def _col(self, parts: list) -> int:
        self.cols.append(compact(list(parts)))
        return len(self.cols) - 1

    def _out(self, kind: str, cols: tuple, name: str) -> int:
        self.outs.append(Out(kind, cols, name))
        return len(self.outs) - 1

    def _item_arg_parts(self, it) -> list[list]:
        toks = [t for t in self.toks if it.expr_rng[0] <= t.start < it.expr_rng[1]]
        open_i = next((i for i, t in enumerate(toks) if t.kind == "op" and t.text == "("), None)
        if open_i is None or not (toks[-1].kind == "op" and toks[-1].text == ")"):
            raise refuse_scatter("mdriver cannot rewrite this aggregate for several shards")
        inner = toks[open_i + 1:-1]
        if inner and inner[0].kind == "word" and inner[0].text in ("DISTINCT", "ALL"):
            inner = inner[1:]
        if not inner:
            return []
        depth = toks[open_i].depth + 1
        args = []
        first = 0
        for i, t in enumerate(inner):
            if t.kind == "op" and t.text == "," and t.depth == depth:
                args.append((inner[first].start, inner[i - 1].end))
                first = i + 1
        args.append((inner[first].start, inner[-1].end))
        return [compact(self.b.range(a, z)) for a, z in args]

    def _agg(self, node: exp.AggFunc, kind: str, arg_parts: list[list], distinct: bool, name: str = "") -> int:
        sig = _sig(node)
        if sig in self.agg_out and not name:
            return self.agg_out[sig]
        if distinct:
            cols = []
            for p in arg_parts:
                key = part_text(p)
                c = self.distinct_cols.get(key)
                if c is None:
                    c = self.distinct_cols[key] = self._col(p)
                    self.group_by.append(p)
                cols.append(c)
            idx = self._out(kind + "_distinct", tuple(cols), name)
        elif kind == "count" and not arg_parts:
            idx = self._out("count", (self._col(["COUNT(*)"]),), name)
        elif kind == "avg":
            s = self._col(["SUM("] + arg_parts[0] + [")"])
            c = self._col(["COUNT("] + arg_parts[0] + [")"])
            idx = self._out("avg", (s, c), name)
        else:
            idx = self._out(kind, (self._col([kind.upper() + "("] + arg_parts[0] + [")"]),), name)
        self.agg_out.setdefault(sig, idx)
        return idx

    def _item_index(self, k: int) -> int:
        """Index in the merged row of visible item k."""
        idx = self.item_out[k]
        if idx is not None:
            return idx
        return self.n_outs + [c for c, _ in self.computed].index(k)

    def _direct_index(self, e: exp.Expression) -> int | None:
        for k, it in enumerate(self.items):
            if self._same(it.expr, e):
                return self._item_index(k)
        return None

    def _leaf(self, e: exp.Expression):
        if isinstance(e, exp.AggFunc):
            idx = self.agg_out.get(_sig(e))
            if idx is None:
                raise Unsupported(short(e))
            return lambda row, nv: row[idx]
        if isinstance(e, exp.Column) and not e.table:
            for k, it in enumerate(self.items):
                if it.alias is not None and it.alias.lower() == e.name.lower():
                    if self.item_out[k] is None:
                        raise Unsupported(f"a reference to computed item {it.alias}")
                    i = self.item_out[k]
                    return lambda row, nv: row[i]
        for k, it in enumerate(self.items):
            if self.item_out[k] is not None and self._same(it.expr, e) and not aggs_in(it.expr):
                i = self.item_out[k]
                return lambda row, nv: row[i]
        for g, c in zip(self.group_exprs, self.group_cols):
            if self._same(g, e):
                i = next(j for j, o in enumerate(self.outs) if o.kind == "any" and o.cols[0] == c)
                return lambda row, nv: row[i]
        if isinstance(e, exp.Column):
            raise Unsupported(f"column {e.sql(dialect='mysql')} that is neither selected nor grouped")
        return None

    # -- binding -------------------------------------------------------------------------
