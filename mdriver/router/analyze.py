"""What routing needs from a parsed statement: tables, scopes, shard-key predicates.

Every table reference is an *occurrence* in a *scope* (a SELECT, UPDATE,
DELETE or INSERT). Sharded occurrences joined on their shard keys (in ON,
WHERE or USING, also from a correlated subquery to its outer query) and
belonging to one binding group are *co-located*: they form a group that is
always read from the same slot. Each group has a root scope (its outermost
occurrence's), and only shard-key predicates that are conjuncts of the root
scope's WHERE or inner-join ON narrow the group's slots. Anything not
understood narrows nothing, which can only widen routing, never make it wrong.
"""
from __future__ import annotations

from decimal import Decimal

import sqlglot.expressions as exp

from mdriver import err
from mdriver.config.model import Config, Schema, TableRule
from mdriver.router.routing import AllOf, AnyOf, Eq, InList, Pred, Range, ValueRef

_SCOPE_NODES = (exp.Select, exp.Update, exp.Delete, exp.Insert)
DERIVED = "derived"


def refuse(message: str, errno: int = err.ER_NOT_SUPPORTED_YET) -> err.MySQLError:
    return err.error(err.NotSupportedError, errno, message)


class Scope:
    __slots__ = ("node", "parent", "depth", "occs", "sources", "ctes")

    def __init__(self, node: exp.Expression | None, parent: Scope | None):
        self.node = node
        self.parent = parent
        self.depth = 0 if parent is None else parent.depth + 1
        self.occs: list[Occ] = []
        self.sources: dict[str, object] = {}  # qualifier -> Occ or DERIVED
        self.ctes: set[str] = set()


class Occ:
    """One table reference in the statement."""

    __slots__ = ("idx", "name", "kind", "rule", "alias", "scope", "span", "node", "group")

    def __init__(self, idx, name, kind, rule, alias, scope, span, node):
        self.idx = idx
        self.name = name
        self.kind = kind  # sharded | broadcast | unsharded | external
        self.rule: TableRule | None = rule
        self.alias: str | None = alias
        self.scope: Scope = scope
        self.span: tuple[int, int] = span  # template text range of [db.]table
        self.node = node
        self.group: Group | None = None

    def __repr__(self) -> str:
        return f"Occ({self.name} as {self.alias}, {self.kind})"


class Group:
    """Co-located sharded occurrences, routed together."""

    __slots__ = ("occs", "root", "pred", "prunable_ins", "rule")

    def __init__(self, occs: list[Occ]):
        self.occs = occs
        self.root: Scope = min((o.scope for o in occs), key=lambda s: s.depth)
        self.rule: TableRule = occs[0].rule  # type: ignore[assignment]
        self.pred: Pred | None = None
        self.prunable_ins: list[InList] = []

    def slots(self, nv, limit: int):
        return None if self.pred is None else self.pred.slots(self.rule, nv, limit)

    @property
    def tables(self) -> list[str]:
        return sorted({o.name for o in self.occs})


class Analysis:
    def __init__(self, tree: exp.Expression, schema: Schema):
        self.tree = tree
        self.schema = schema
        self.root = Scope(None, None)
        self.scopes: dict[int, Scope] = {}
        self.occs: list[Occ] = []
        self.groups: list[Group] = []
        self.qualifiers: dict[int, list[tuple[int, int]]] = {}  # occ idx -> spans of column qualifiers naming it
        self.has_window = False
        self._next_pid = 0
        self.find = None  # union-find lookup, set once co-location is known

    @property
    def sharded(self) -> list[Occ]:
        return [o for o in self.occs if o.kind == "sharded"]

    def kinds(self) -> set[str]:
        return {o.kind for o in self.occs}

    def top_scopes(self) -> list[Scope]:
        return [s for s in self.scopes.values() if s.parent is self.root]


def _span(t: exp.Table) -> tuple[int, int] | None:
    ident = t.this
    meta = getattr(ident, "meta", None) or {}
    if "start" not in meta:
        return None
    start = meta["start"]
    db = t.args.get("db")
    if isinstance(db, exp.Identifier) and "start" in (db.meta or {}):
        start = db.meta["start"]
    return start, meta["end"] + 1


def _scope_node(node: exp.Expression) -> exp.Expression | None:
    p = node.parent
    while p is not None and not isinstance(p, _SCOPE_NODES):
        p = p.parent
    return p


def analyze(tree: exp.Expression, config: Config, schema: Schema) -> Analysis:
    """Build scopes and occurrences, co-locate groups and attach narrowing predicates."""
    an = Analysis(tree, schema)

    def scope_for(node: exp.Expression | None) -> Scope:
        if node is None:
            return an.root
        s = an.scopes.get(id(node))
        if s is None:
            s = Scope(node, scope_for(_scope_node(node)))
            an.scopes[id(node)] = s
        return s

    if isinstance(tree, _SCOPE_NODES):
        scope_for(tree)
    for node in tree.walk():
        if isinstance(node, _SCOPE_NODES):
            scope_for(node)
        elif isinstance(node, exp.Window):
            an.has_window = True
        elif isinstance(node, exp.CTE):
            owner = _scope_node(node)
            if node.alias:
                scope_for(owner).ctes.add(node.alias)
    # derived tables and CTE bodies are visible as sources by their alias
    for node in tree.walk():
        if isinstance(node, exp.Subquery) and node.alias and isinstance(node.parent, (exp.From, exp.Join)):
            scope_for(_scope_node(node)).sources[node.alias] = DERIVED
    for t in list(tree.find_all(exp.Table)):
        _add_occurrence(an, t, scope_for(_scope_node(t)), config, schema)
    _colocate_and_narrow(an)
    return an


def _visible_cte(scope: Scope, name: str) -> bool:
    s: Scope | None = scope
    while s is not None:
        if name in s.ctes:
            return True
        s = s.parent
    return False


def _add_occurrence(an: Analysis, t: exp.Table, scope: Scope, config: Config, schema: Schema) -> None:
    parent = t.parent
    if isinstance(parent, exp.Delete) and t.arg_key == "tables":
        return  # DELETE t1, t2 FROM ...: targets named by alias, not new references
    if isinstance(parent, exp.Into):
        return  # SELECT ... INTO @var / OUTFILE: not a table read
    if not isinstance(t.this, exp.Identifier):
        raise refuse(f"table expression {t.sql(dialect='mysql')!r} is not supported by mdriver")
    name = t.name
    db = t.args.get("db")
    dbname = db.name if isinstance(db, exp.Identifier) else None
    if not dbname and name.lower() == "dual":
        return
    if not dbname and _visible_cte(scope, name):
        scope.sources.setdefault(name, DERIVED)
        return
    span = _span(t)
    if span is None:
        raise refuse(f"cannot locate table {name!r} in the statement text")
    rule = None
    if dbname and dbname != schema.name:
        if dbname in config.schemas:
            raise refuse(f"a statement in schema {schema.name!r} cannot use tables of schema {dbname!r} ({dbname}.{name}): "
                         "mdriver routes one logical schema per statement")
        kind = "external"
    else:
        rule = schema.tables.get(name)
        if rule is None:
            kind = "unsharded"
        elif rule.sharded:
            kind = "sharded"
        elif rule.broadcast:
            kind = "broadcast"
        else:
            kind = "unsharded"
    alias = t.alias or None
    occ = Occ(len(an.occs), name, kind, rule, alias, scope, span, t)
    an.occs.append(occ)
    scope.occs.append(occ)
    scope.sources[alias or name] = occ


# -- predicates ---------------------------------------------------------------------


def conjuncts(e: exp.Expression | None) -> list[exp.Expression]:
    out: list[exp.Expression] = []
    stack = [e] if e is not None else []
    while stack:
        x = stack.pop()
        while isinstance(x, exp.Paren):
            x = x.this
        if isinstance(x, exp.And):
            stack.append(x.expression)
            stack.append(x.this)
        else:
            out.append(x)
    return out


def disjuncts(e: exp.Expression) -> list[exp.Expression]:
    out: list[exp.Expression] = []
    stack = [e]
    while stack:
        x = stack.pop()
        while isinstance(x, exp.Paren):
            x = x.this
        if isinstance(x, exp.Or):
            stack.append(x.expression)
            stack.append(x.this)
        else:
            out.append(x)
    return out


def value_ref(e: exp.Expression) -> ValueRef | None:
    """A bound value (marker, literal, or their negation), else None."""
    neg = False
    while True:
        if isinstance(e, exp.Paren):
            e = e.this
        elif isinstance(e, exp.Neg):
            neg = not neg
            e = e.this
        else:
            break
    if isinstance(e, exp.Placeholder):
        name = e.name
        if name.startswith("v") and name[1:].isdigit():
            return ValueRef(int(name[1:]), neg)
        return None
    if isinstance(e, exp.Literal):
        if e.is_string:
            return ValueRef(None, neg, e.this)
        text = e.this
        try:
            v: object = int(text) if text.isdigit() else Decimal(text)
        except ArithmeticError:
            return None
        return ValueRef(None, neg, v)
    if isinstance(e, exp.Null):
        return ValueRef(None, False, None)
    if isinstance(e, exp.Boolean):
        return ValueRef(None, neg, 1 if e.this else 0)
    return None


def resolve(an: Analysis, col: exp.Column, scope: Scope) -> Occ | None:
    """The occurrence a column belongs to, if we can tell; unknown qualifiers are errors (1054)."""
    q = col.table
    if q:
        s: Scope | None = scope
        while s is not None and s is not an.root:
            src = s.sources.get(q)
            if src is not None:
                return src if isinstance(src, Occ) else None
            s = s.parent
        raise err.error(err.ProgrammingError, err.ER_BAD_FIELD_ERROR, f"Unknown column '{q}.{col.name}' in 'where clause'")
    name = col.name.lower()
    s = scope
    while s is not None and s is not an.root:
        cands = [o for o in s.occs if o.kind == "sharded" and o.rule.shard_key.lower() == name]  # type: ignore[union-attr]
        if len(cands) == 1:
            return cands[0]
        if len(cands) > 1:
            # USING/NATURAL joins make the name unambiguous; it is then the key of co-located tables
            find = an.find
            if find is not None and len({find(o.idx) for o in cands}) == 1:
                return cands[0]
            return None
        if s.sources:
            return None  # another table of this scope may own the column: do not guess
        s = s.parent
    return None


def key_column(an: Analysis, e: exp.Expression, scope: Scope) -> Occ | None:
    while isinstance(e, exp.Paren):
        e = e.this
    if not isinstance(e, exp.Column):
        return None
    occ = resolve(an, e, scope)
    if occ is None or occ.kind != "sharded" or e.name.lower() != occ.rule.shard_key.lower():  # type: ignore[union-attr]
        return None
    return occ


_FLIP = {exp.GT: exp.LT, exp.GTE: exp.LTE, exp.LT: exp.GT, exp.LTE: exp.GTE}


def key_predicate(an: Analysis, c: exp.Expression, scope: Scope) -> tuple[list[Occ], Pred] | None:
    """A narrowing predicate on shard keys: (occurrences it constrains, predicate)."""
    if isinstance(c, (exp.EQ, exp.NullSafeEQ)):
        for col, val in ((c.this, c.expression), (c.expression, c.this)):
            occ = key_column(an, col, scope)
            ref = value_ref(val) if occ is not None else None
            if ref is not None:
                return [occ], Eq(ref)  # type: ignore[list-item]
        return None
    if isinstance(c, exp.In):
        if c.args.get("query") is not None or c.args.get("unnest") is not None:
            return None
        occ = key_column(an, c.this, scope)
        if occ is None:
            return None
        refs = [value_ref(v) for v in c.expressions]
        if not refs or any(r is None for r in refs):
            return None
        prunable = all(r.index is not None and not r.neg for r in refs)  # type: ignore[union-attr]
        an._next_pid += 1
        return [occ], InList(refs, an._next_pid, prunable)  # type: ignore[arg-type]
    if isinstance(c, exp.Between):
        occ = key_column(an, c.this, scope)
        lo, hi = value_ref(c.args["low"]), value_ref(c.args["high"])
        if occ is None or lo is None or hi is None:
            return None
        return [occ], Range([(lo, True)], [(hi, True)])
    if isinstance(c, (exp.GT, exp.GTE, exp.LT, exp.LTE)):
        cls = type(c)
        col, val = c.this, c.expression
        occ = key_column(an, col, scope)
        if occ is None:
            col, val = val, col
            cls = _FLIP[cls]
            occ = key_column(an, col, scope)
        ref = value_ref(val) if occ is not None else None
        if ref is None:
            return None
        if cls in (exp.GT, exp.GTE):
            return [occ], Range([(ref, cls is exp.GTE)], [])  # type: ignore[list-item]
        return [occ], Range([], [(ref, cls is exp.LTE)])  # type: ignore[list-item]
    if isinstance(c, exp.Or):
        occs: list[Occ] = []
        preds: list[Pred] = []
        for d in disjuncts(c):
            parts = [key_predicate(an, x, scope) for x in conjuncts(d)]
            parts = [p for p in parts if p is not None]
            if not parts:
                return None
            for o, _ in parts:
                occs.extend(o)
            preds.append(parts[0][1] if len(parts) == 1 else AllOf([p for _, p in parts]))
        return occs, AnyOf(preds)
    return None


def _compatible(schema: Schema, a: Occ, b: Occ) -> bool:
    return a.name == b.name or b.name in schema.binding_group(a.name)


def _colocate_and_narrow(an: Analysis) -> None:
    sharded = an.sharded
    parent = {o.idx: o.idx for o in sharded}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: Occ, b: Occ) -> None:
        if _compatible(an.schema, a, b):
            parent[find(a.idx)] = find(b.idx)

    narrowing_terms: list[tuple[Scope, exp.Expression]] = []
    for scope in an.scopes.values():
        node = scope.node
        wheres = [w for w in node.find_all(exp.Where) if _scope_node(w) is node]
        joins = [j for j in node.find_all(exp.Join) if _scope_node(j) is node]
        coloc_terms: list[exp.Expression] = []
        for w in wheres:
            terms = conjuncts(w.this)
            narrowing_terms += [(scope, t) for t in terms]
            coloc_terms += terms
        for j in joins:
            on = j.args.get("on")
            terms = conjuncts(on) if on is not None else []
            coloc_terms += terms
            if j.side not in ("LEFT", "RIGHT", "FULL"):
                narrowing_terms += [(scope, t) for t in terms]
            using = j.args.get("using") or []
            if using and isinstance(j.this, exp.Table):
                _colocate_using(an, scope, j, using, union)
        for c in coloc_terms:
            if isinstance(c, exp.EQ):
                a = key_column(an, c.this, scope)
                b = key_column(an, c.expression, scope) if a is not None else None
                if a is not None and b is not None:
                    union(a, b)
    an.find = find
    narrowing: list[tuple[Scope, list[Occ], Pred]] = []
    for scope, c in narrowing_terms:
        kp = key_predicate(an, c, scope)
        if kp is not None:
            narrowing.append((scope, kp[0], kp[1]))
    members: dict[int, list[Occ]] = {}
    for o in sharded:
        members.setdefault(find(o.idx), []).append(o)
    for occs in members.values():
        g = Group(occs)
        for o in occs:
            o.group = g
        an.groups.append(g)
    per_group: dict[int, list[Pred]] = {}
    for scope, occs, pred in narrowing:
        groups = {id(o.group) for o in occs}
        if len(groups) != 1:
            continue
        g = occs[0].group
        if g is None or g.root is not scope:
            continue
        per_group.setdefault(id(g), []).append(pred)
        if isinstance(pred, InList) and pred.prunable:
            g.prunable_ins.append(pred)
    for g in an.groups:
        preds = per_group.get(id(g))
        if preds:
            g.pred = preds[0] if len(preds) == 1 else AllOf(preds)


def _colocate_using(an: Analysis, scope: Scope, join: exp.Join, using: list, union) -> None:
    right = next((o for o in scope.occs if o.node is join.this), None)
    if right is None or right.kind != "sharded":
        return
    for ident in using:
        name = ident.name.lower() if isinstance(ident, exp.Expression) else str(ident).lower()
        if name != right.rule.shard_key.lower():  # type: ignore[union-attr]
            continue
        for left in scope.occs:
            if left is right:
                break
            if left.kind == "sharded" and left.rule.shard_key.lower() == name:  # type: ignore[union-attr]
                union(left, right)


def qualifier_spans(an: Analysis, occ: Occ) -> list[tuple[int, int]]:
    """Text ranges of column qualifiers (``[db.]table``) that name ``occ`` by its table name."""
    if occ.alias:
        return []
    spans = []
    for col in an.tree.find_all(exp.Column):
        if col.table != occ.name:
            continue
        scope_node = _scope_node(col)
        scope = an.scopes.get(id(scope_node)) if scope_node is not None else None
        if scope is None:
            continue
        try:
            target = resolve(an, col, scope)
        except err.MySQLError:
            continue
        if target is not occ:
            continue
        t = col.args.get("table")
        d = col.args.get("db")
        first = d if isinstance(d, exp.Identifier) and "start" in (d.meta or {}) else t
        if not isinstance(t, exp.Identifier) or "start" not in (first.meta or {}) or "end" not in (t.meta or {}):
            raise refuse(f"cannot locate the qualifier of column {col.sql(dialect='mysql')}")
        spans.append((first.meta["start"], t.meta["end"] + 1))
    return spans
