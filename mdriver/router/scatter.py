"""A SELECT over several shards: the per-shard rewrite and the merge on top.

Two shapes:

- *rows*: each shard runs the SELECT with ``ORDER BY`` and ``LIMIT offset+count``
  (hidden columns carry sort keys that are not selected); the merger
  merge-sorts the sorted streams, applies DISTINCT, LIMIT and drops hidden columns.
- *aggregate*: each shard computes partial aggregates per group (``AVG`` as
  SUM and COUNT; ``COUNT(DISTINCT x)`` by also grouping on ``x``); the merger
  combines them per group, then applies HAVING, ORDER BY and LIMIT.

The physical tables of one database are combined into one statement with
``UNION ALL`` (one round trip per database instead of one per table).
Anything this cannot do exactly is refused with a message saying what.
"""
from __future__ import annotations

import sqlglot.expressions as exp

from mdriver import err
from mdriver.router import analyze as A
from mdriver.router.primitives import (
    Aggregate,
    Compute,
    Concatenate,
    Distinct,
    Filter,
    Limit,
    MergeSort,
    Out,
    Project,
    Route,
    Sort,
)
from mdriver.router.rewrite import Builder, LimitText, compact, render
from mdriver.router.routing import compact_slots, quote
from mdriver.router.scatter_agg import MARKER_RE, AggregateShape, aggs_in, ordinal, refuse_scatter, short
from mdriver.router.scan import select_clauses
from mdriver.router.types import ShardQuery

_HIDDEN_ORDER = "__mdr_o{}"


class Item:
    __slots__ = ("expr", "alias", "rng", "expr_rng", "star")

    def __init__(self, expr, alias, rng, expr_rng, star):
        self.expr = expr
        self.alias = alias
        self.rng = rng
        self.expr_rng = expr_rng
        self.star = star


class ScatterSelect(AggregateShape):
    def __init__(self, tpl, env):
        from mdriver.router.planner import NeedsLiterals

        self.NeedsLiterals = NeedsLiterals
        sel: exp.Select = tpl.tree
        if not isinstance(sel, exp.Select):
            raise refuse_scatter("this statement cannot run on several shards")
        self.tpl = tpl
        self.sel = sel
        self.toks = tpl.toks
        cl = select_clauses(tpl.toks)
        if cl is None:
            raise refuse_scatter("mdriver cannot rewrite this SELECT for several shards")
        self.cl = cl
        self._check_clauses()
        self.b = Builder(tpl.text, tpl.toks, tpl.splices + tpl.in_splices())
        self.items = self._items()
        self.distinct = sel.args.get("distinct") is not None
        self.limit_refs = self._limit_refs()
        self.max_offset = env.options.max_offset
        has_aggs = any(aggs_in(i.expr) for i in self.items if not i.star)
        having = sel.args.get("having")
        self.aggregate = bool(has_aggs or sel.args.get("group") is not None or (having is not None and aggs_in(having)))
        if self.aggregate:
            self._plan_aggregate()
        else:
            self._plan_rows()
        from mdriver.router.rewrite import InSubset

        self.has_in_subsets = any(isinstance(p, InSubset) for p in self.branch)
        self.occ_uses = {}
        for p in self.branch:
            if type(p) is int and p < 0:
                self.occ_uses[-1 - p] = self.occ_uses.get(-1 - p, 0) + 1

    # -- checks ------------------------------------------------------------------------
    def _check_clauses(self) -> None:
        sel, cl = self.sel, self.cl
        if "SQL_CALC_FOUND_ROWS" in cl.modifiers:
            raise refuse_scatter("SQL_CALC_FOUND_ROWS across shards is not supported by mdriver")
        if "INTO" in cl.starts or sel.args.get("into") is not None:
            raise refuse_scatter("SELECT ... INTO across shards is not supported by mdriver")
        if "PROCEDURE" in cl.starts or "WINDOW" in cl.starts:
            raise refuse_scatter("this SELECT clause is not supported by mdriver across shards")
        group = sel.args.get("group")
        if group is not None and (group.args.get("rollup") or group.args.get("with_rollup") or "ROLLUP" in
                                  {t.text for t in self.toks if t.kind == "word" and t.depth == 0}):
            raise refuse_scatter("GROUP BY ... WITH ROLLUP across shards is not supported by mdriver")
        checks = [
            ("FROM", sel.args.get("from_") or sel.args.get("from")),
            ("WHERE", sel.args.get("where")),
            ("GROUP", group),
            ("HAVING", sel.args.get("having")),
            ("ORDER", sel.args.get("order")),
            ("LIMIT", sel.args.get("limit")),
        ]
        ok = len(cl.items) == len(sel.expressions)
        for name, node in checks:
            ok = ok and ((name in cl.starts) == (node is not None))
        if group is not None and ok:
            ok = len(cl.item_ranges.get("GROUP", [])) == len(group.expressions)
        order = sel.args.get("order")
        if order is not None and ok:
            ok = len(cl.item_ranges.get("ORDER", [])) == len(order.expressions)
        if not ok:
            raise refuse_scatter("mdriver cannot rewrite this SELECT for several shards (unrecognized clause layout)")

    def _items(self) -> list[Item]:
        items = []
        for e, rng in zip(self.sel.expressions, self.cl.items):
            star = isinstance(e, exp.Star) or isinstance(e, exp.Column) and isinstance(e.this, exp.Star)
            alias = None
            expr_rng = rng
            inner = e
            if isinstance(e, exp.Alias):
                inner = e.this
                a = e.args.get("alias")
                if not isinstance(a, exp.Identifier) or "start" not in (a.meta or {}):
                    raise self.NeedsLiterals()
                alias = a.name
                cut = a.meta["start"]
                toks = [t for t in self.toks if rng[0] <= t.start < cut]
                if toks and toks[-1].text == "AS":
                    toks = toks[:-1]
                if not toks:
                    raise refuse_scatter("mdriver cannot rewrite this SELECT for several shards (select item)")
                expr_rng = (rng[0], toks[-1].end)
            items.append(Item(inner, alias, rng, expr_rng, star))
        return items

    def _limit_refs(self):
        lim = self.sel.args.get("limit")
        if lim is None:
            return None
        off = self.sel.args.get("offset")
        count = A.value_ref(lim.expression)
        offset = A.value_ref(off.expression) if off is not None else None
        if count is None or off is not None and offset is None:
            raise refuse_scatter("LIMIT across shards needs numbers or parameters")
        return offset, count

    def _limit_values(self, nv) -> tuple[int, int | None]:
        if self.limit_refs is None:
            return 0, None
        offset_ref, count_ref = self.limit_refs

        def num(ref, what):
            v = ref.get(nv) if ref is not None else 0
            if isinstance(v, str) and v.isdigit():
                v = int(v)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise err.error(err.ProgrammingError, err.ER_WRONG_ARGUMENTS, f"LIMIT {what} must be a non-negative integer, got {v!r}")
            return v

        return num(offset_ref, "offset"), num(count_ref, "count")

    def _order_keys(self):
        """[(Ordered node, expression, descending, text range of the expression)]."""
        order = self.sel.args.get("order")
        if order is None:
            return []
        out = []
        for o, rng in zip(order.expressions, self.cl.item_ranges["ORDER"]):
            e = o.this
            if isinstance(e, exp.Placeholder):
                self._placeholder("ORDER BY")
            toks = [t for t in self.toks if rng[0] <= t.start < rng[1]]
            if toks and toks[-1].kind == "word" and toks[-1].text in ("ASC", "DESC"):
                toks = toks[:-1]
            out.append((o, e, bool(o.args.get("desc")), (rng[0], toks[-1].end)))
        return out

    def _same(self, a: exp.Expression, b: exp.Expression) -> bool:
        """Equal expressions. Equal up to their literals (``uid % 5`` and ``uid % 5`` became
        ``uid % :v0`` and ``uid % :v3``) can only be decided with the literals: re-plan with them."""
        if a == b:
            return True
        if not self.tpl.keep_literals and MARKER_RE.sub("?", a.sql(dialect="mysql")) == MARKER_RE.sub("?", b.sql(dialect="mysql")):
            raise self.NeedsLiterals()
        return False

    def _upto(self, pos: int) -> int:
        """End of the last token before ``pos`` (no trailing blanks or comments)."""
        return max((t.end for t in self.toks if t.end <= pos), default=pos)

    def _placeholder(self, clause: str) -> None:
        """A marker where a literal number may be a column position: plan the text with its literals."""
        if not self.tpl.keep_literals:
            raise self.NeedsLiterals()
        raise refuse_scatter(f"{clause} a parameter is not supported by mdriver across shards")

    def _item_for(self, e: exp.Expression) -> int | None:
        """Index of the select item an ORDER BY / GROUP BY expression refers to."""
        if isinstance(e, exp.Literal) and not e.is_string and e.this.isdigit():
            k = int(e.this) - 1
            if not 0 <= k < len(self.items) or self.items[k].star:
                raise err.error(err.ProgrammingError, err.ER_BAD_FIELD_ERROR, f"Unknown column '{e.this}' in 'order clause'")
            return k
        if isinstance(e, exp.Column) and not e.table:
            for k, it in enumerate(self.items):
                if it.alias is not None and it.alias.lower() == e.name.lower():
                    return k
        for k, it in enumerate(self.items):
            if not it.star and self._same(it.expr, e):
                return k
        return None

    # -- rows shape --------------------------------------------------------------------
    def _plan_rows(self) -> None:
        cl, b = self.cl, self.b
        keys = self._order_keys()
        star = any(i.star for i in self.items)
        n = len(self.items)
        hidden: list[list] = []
        keyspec: list[tuple[bool, int, bool]] = []  # (hidden?, index, descending)
        outer: list[str] = []
        for o, e, desc, rng in keys:
            suffix = " DESC" if desc else ""
            pos = ordinal(e)
            if pos is not None:  # a column position counts result columns, * expanded: same on every shard
                if pos < 1 or not star and pos > n:
                    raise err.error(err.ProgrammingError, err.ER_BAD_FIELD_ERROR, f"Unknown column '{pos}' in 'order clause'")
                keyspec.append((False, pos - 1, desc))
                outer.append(f"{pos}{suffix}")
                continue
            k = self._item_for(e)
            if k is not None and not star:
                keyspec.append((False, k, desc))
                outer.append(f"{k + 1}{suffix}")
                continue
            if self.distinct:
                raise refuse_scatter("ORDER BY with DISTINCT across shards must use selected columns (and no *)")
            parts = b.range(*self.items[k].expr_rng) if k is not None else b.range(*rng)
            name = _HIDDEN_ORDER.format(len(hidden))
            hidden.append([", "] + parts + [f" AS `{name}`"])
            keyspec.append((True, len(hidden) - 1, desc))
            outer.append(f"`{name}`{suffix}" if star else f"{n + len(hidden)}{suffix}")
        nh = len(hidden)
        self.merge_keys = [(i - nh if is_hidden else i, d) for is_hidden, i, d in keyspec]
        self.hidden = nh
        self.outer_order = ", ".join(outer)
        parts: list = ["SELECT "]
        if cl.modifiers:
            parts.append(" ".join(cl.modifiers) + " ")
        parts += b.range(cl.items[0][0], cl.items[-1][1])
        for h in hidden:
            parts += h
        tail = min([cl.starts[c] for c in ("ORDER", "LIMIT", "FOR", "LOCK") if c in cl.starts] + [cl.end])
        parts.append(" ")
        parts += b.range(cl.starts["FROM"], self._upto(tail))
        if "ORDER" in cl.starts:
            rngs = cl.item_ranges["ORDER"]
            parts.append(" ORDER BY ")
            parts += b.range(rngs[0][0], rngs[-1][1])
        if self.limit_refs is not None:
            parts += [" ", LimitText()]
        lock = [cl.starts[c] for c in ("FOR", "LOCK") if c in cl.starts]
        if lock:
            parts.append(" ")
            parts += b.range(min(lock), cl.end)
        self.branch = compact(parts)

    # -- aggregate shape -----------------------------------------------------------------
    def _render_branches(self, nv, choice, env, push) -> dict[tuple[str, str], list[str]]:
        """The branch statement for every target slot, grouped per physical database.

        Without per-shard IN lists every branch is the same text but for its table
        names: render once with sentinels and substitute (1024 renders cost more
        than the statement they describe).
        """
        tpl = self.tpl
        per_db: dict[tuple[str, str], list[str]] = {}
        if not self.has_in_subsets:
            from mdriver.router.planner import Ctx

            sentinels = [_SENTINEL.format(i) for i in range(len(tpl.occs))]
            base = render(self.branch, nv, sentinels, Ctx(None, push))
            routed = [o for o in tpl.occs if o.kind in ("sharded", "broadcast")]
            if all(base.count(sentinels[o.idx]) == self.occ_uses[o.idx] for o in routed):
                layouts = [(sentinels[o.idx], env.layout(o.rule).table_sql if o.kind == "sharded" else None, o.name)
                           for o in routed]
                lay = env.layout(tpl.groups[0].rule)
                for slot in choice.slots:
                    ds, db = lay.ds[slot], lay.db[slot]
                    sql = base
                    for sentinel, tables, name in layouts:
                        sql = sql.replace(sentinel, tables[slot] if tables is not None else f"{quote(db)}.{quote(name)}")
                    per_db.setdefault((ds, db), []).append(sql)
                return per_db
        for slot, ds, db, ctx in tpl.targets(nv, choice, env):
            ctx.push_limit = push
            per_db.setdefault((ds, db), []).append(tpl.render_target(self.branch, nv, slot, (ds, db), ctx, env))
        return per_db

    def bind(self, nv, choice, env):
        tpl = self.tpl
        offset, count = self._limit_values(nv)
        push = None
        if count is not None and not self.aggregate:
            push = offset + count
            if push > self.max_offset:
                raise refuse_scatter(f"LIMIT {offset}, {count} over several shards needs {push} rows from each shard, more than "
                                     f"router.max_offset = {self.max_offset}; page by the sort key instead of a deep OFFSET")
        per_db = self._render_branches(nv, choice, env, push)
        sample = next(iter(per_db.values()))[0]
        stmts = []
        for (ds, db), branches in per_db.items():
            if len(branches) == 1:
                sql = branches[0]
            else:
                # DISTINCT rows must stay distinct across the tables of a database, or the
                # outer LIMIT could keep duplicates and drop distinct rows
                glue = ") UNION (" if self.distinct and not self.aggregate else ") UNION ALL ("
                sql = "(" + glue.join(branches) + ")"
                if not self.aggregate and self.outer_order:
                    sql += " ORDER BY " + self.outer_order
                if push is not None:
                    sql += f" LIMIT {push}"
            stmts.append(ShardQuery(ds, db, sql, False))
        pushed = {"physical_tables": len(choice.slots)}
        if any(len(v) > 1 for v in per_db.values()):
            pushed["union_all_per_database"] = True
        route = Route(choice.opcode, list(tpl.tables), compact_slots(choice.slots), stmts, sample, pushed)
        if not self.aggregate:
            node = MergeSort(route, self.merge_keys) if self.merge_keys else Concatenate(route)
            if self.distinct:
                node = Distinct(node, -self.hidden if self.hidden else None)
            if count is not None:
                node = Limit(node, offset, count)
            if self.hidden:
                node = Project(node, drop_last=self.hidden)
            return node
        outs = [Out(o.kind, o.cols, o.name) for o in self.outs]
        for k, idx in enumerate(self.item_out):
            if idx is not None:
                np = self.name_parts[k]
                name = np if isinstance(np, str) else render(np, nv, [""] * len(tpl.occs))
                o = self.outs[idx]
                if o.kind not in ("any", "count", "sum", "min", "max") or self.items[k].alias is not None:
                    outs[idx] = Out(o.kind, o.cols, name)
        node = Aggregate(route, self.group_cols, outs)
        if self.computed_fns:
            exprs = []
            for k, fn in self.computed_fns:
                np = self.name_parts[k]
                name = np if isinstance(np, str) else render(np, nv, [""] * len(tpl.occs))
                exprs.append((name, fn, _bound(short(self.items[k].expr), nv)))
            node = Compute(node, exprs, nv)
        if self.having_fn is not None:
            node = Filter(node, self.having_fn, _bound(short(self.sel.args["having"].this), nv), nv)
        if self.sort_keys:
            node = Sort(node, [(f, d, i, _bound(t, nv)) for f, d, i, t in self.sort_keys], nv)
        if self.distinct:
            node = Project(node, indexes=[self._item_index(k) for k in range(len(self.items))])
            node = Distinct(node, None)
        if count is not None:
            node = Limit(node, offset, count)
        if not self.distinct:
            node = Project(node, indexes=[self._item_index(k) for k in range(len(self.items))])
        return node


_SENTINEL = "\x00mdriver-table-{}\x00"


def _bound(text: str, nv) -> str:
    """Describe texts with the statement's own values instead of markers."""
    return MARKER_RE.sub(lambda m: nv.text(int(m.group(1))) if int(m.group(1)) < len(nv) else m.group(), text)
