"""INSERT and REPLACE: rows split per physical table, INSERT ... SELECT within one shard."""
from __future__ import annotations

import sqlglot.expressions as exp

from mdriver import err
from mdriver.router import analyze as A
from mdriver.router.analyze import Analysis, Occ, refuse
from mdriver.router.normalize import Normalized
from mdriver.router.plan import Plan
from mdriver.router.planner import (
    BroadcastWriteTemplate,
    HomeTemplate,
    ShardedTemplate,
    Template,
    check_key_assignments,
    check_mixed,
    occ_splices,
    parse,
    tables_of,
)
from mdriver.router.primitives import Write
from mdriver.router.rewrite import Builder, Splice, compact, occ_part, render
from mdriver.router.routing import compact_slots, slot_of
from mdriver.router.scan import Tok, find_word, values_rows
from mdriver.router.types import ShardQuery


def plan_insert(text: str, toks: list[Tok], nv: Normalized, env, replace: bool) -> Template:
    parse_text = text
    if replace:
        first = next(t for t in toks if t.kind == "word")
        parse_text = text[:first.start] + "INSERT " + text[first.end:]  # same length: positions stay valid
    tree = parse(parse_text, nv)
    if not isinstance(tree, exp.Insert):
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, "mdriver cannot parse the statement as INSERT")
    an = A.analyze(tree, env.config, env.schema)
    check_mixed(an)
    top = an.scopes[id(tree)]
    target = next((o for o in top.occs), None)
    if target is None:
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, "INSERT without a target table")
    source = tree.expression
    columns = [c.name for c in tree.this.expressions] if isinstance(tree.this, exp.Schema) else None
    conflict = tree.args.get("conflict")
    if target.kind == "sharded":
        key = target.rule.shard_key
        if columns is None:
            raise refuse(f"INSERT into sharded table {target.name} must name its columns (mdriver routes by the shard key {key})")
        lower = [c.lower() for c in columns]
        if key.lower() not in lower:
            raise refuse(f"INSERT into sharded table {target.name} must include its shard key {key}")
        if conflict is not None:
            check_key_assignments(an, conflict.expressions or [], top)
        key_index = lower.index(key.lower())
        if isinstance(source, exp.Values):
            return InsertTemplate(an, target, key_index, text, toks, tree, env)
        if isinstance(source, (exp.Select, exp.Union)):
            return _insert_select(an, target, key_index, source, text, toks, tree, env)
        raise refuse(f"this form of INSERT into sharded table {target.name} is not supported by mdriver")
    if target.kind == "broadcast":
        if an.groups:
            raise refuse(f"INSERT into broadcast table {target.name} cannot read sharded tables: every copy must get the same rows")
        if any(o.kind in ("unsharded", "external") for o in an.occs):
            raise refuse(f"INSERT into broadcast table {target.name} cannot read unsharded tables (they exist only in the home database)")
        return BroadcastWriteTemplate("insert", an, Builder(text, toks, occ_splices(an)).whole())
    if an.groups:
        raise err.error(err.ProgrammingError, err.ER_NO_SUCH_TABLE,
                        f"INSERT into unsharded table {target.name} cannot read sharded tables")
    return HomeTemplate("insert", True, tables_of(an), "UNSHARDED", Builder(text, toks).whole())


def _insert_select(an: Analysis, target: Occ, key_index: int, source: exp.Expression, text, toks, tree, env) -> Template:
    if not isinstance(source, exp.Select) or key_index >= len(source.expressions):
        raise refuse(f"INSERT ... SELECT into sharded table {target.name} must select its shard key {target.rule.shard_key} "
                     "from a co-located sharded table")
    scope = an.scopes[id(source)]
    item = source.expressions[key_index]
    item = item.this if isinstance(item, exp.Alias) else item
    src = A.key_column(an, item, scope)
    if src is None or not (src.name == target.name or target.name in an.schema.binding_group(src.name)):
        raise refuse(f"INSERT ... SELECT into sharded table {target.name} must select its shard key {target.rule.shard_key} "
                     "from a table of its binding group, so that every row stays on its shard")
    reason = (f"INSERT ... SELECT into {target.name} must read from one shard only (restrict the SELECT with the shard key)")
    target.group = src.group
    an.groups = [g for g in an.groups if any(o is not target for o in g.occs)]
    return ShardedTemplate("insert", an, text, toks, None, reason, tree, env, extra_occs={target.idx: src.group},
                           no_alias=frozenset((target.idx,)))


class InsertTemplate(Template):
    """INSERT ... VALUES into a sharded table: rows grouped per physical table (InsertSplit)."""

    kind = "insert"
    is_write = True

    def __init__(self, an: Analysis, target: Occ, key_index: int, text: str, toks: list[Tok], tree: exp.Insert, env):
        self.tables = (target.name,)
        self.rule = target.rule
        rows_ast = tree.expression.expressions
        found = values_rows(toks)
        if found is None or len(found[0]) != len(rows_ast):
            if len(rows_ast) == 1 and find_word(toks, "SET") >= 0:
                found = None  # INSERT ... SET col = value: one row
            else:
                raise refuse("mdriver cannot locate the rows of this INSERT")
        self.key_refs = []
        for row in rows_ast:
            vals = row.expressions if isinstance(row, exp.Tuple) else [row]
            if key_index >= len(vals):
                raise err.error(err.ProgrammingError, 1136, "Column count doesn't match value count at row 1")
            ref = A.value_ref(vals[key_index])
            if ref is None:
                raise refuse(f"the shard key {self.rule.shard_key} of {target.name} must be a literal or a parameter in every "
                             "row of an INSERT")
            self.key_refs.append(ref)
        splice = Splice(target.span[0], target.span[1], [occ_part(0)])
        b = Builder(text, toks, [splice])
        if found is None:
            self.prefix = b.whole()
            self.rows = []
            self.suffix = []
        else:
            ranges, end = found
            self.prefix = compact(b.range(0, ranges[0][0]))
            self.rows = [compact(b.range(a, z)) for a, z in ranges]
            self.suffix = compact(b.range(end, len(text)))

    def bind(self, nv, env) -> Plan:
        lay = env.layout(self.rule)
        hint = nv.hints.shard
        slots = []
        for i, ref in enumerate(self.key_refs):
            v = ref.get(nv)
            if v is None:
                raise err.error(err.IntegrityError, 1048, f"Column '{self.rule.shard_key}' cannot be null (it is the shard key)")
            slots.append(slot_of(self.rule, v) if hint is None else hint)
        if not self.rows:
            slot = slots[0]
            q = ShardQuery(lay.ds[slot], lay.db[slot], render(self.prefix, nv, [lay.table_sql[slot]]), True)
            return Plan("insert", True, self.tables, env.schema.name, True, single=q,
                        route=("EQUAL", list(self.tables), str(slot)))
        per_slot: dict[int, list[int]] = {}
        for i, s in enumerate(slots):
            per_slot.setdefault(s, []).append(i)
        stmts = []
        first_stmt = 0
        for n, (slot, rows) in enumerate(per_slot.items()):
            if 0 in rows:
                first_stmt = n
            occ = [lay.table_sql[slot]]
            sql = (render(self.prefix, nv, occ) + ", ".join(render(self.rows[i], nv, occ) for i in rows)
                   + render(self.suffix, nv, occ))
            stmts.append(ShardQuery(lay.ds[slot], lay.db[slot], sql, True))
        if len(stmts) == 1:
            slot = next(iter(per_slot))
            return Plan("insert", True, self.tables, env.schema.name, True, single=stmts[0],
                        route=("EQUAL", list(self.tables), str(slot)))
        root = Write("InsertSplit", "IN", list(self.tables), compact_slots(per_slot), stmts, "sum", first_stmt,
                     extra={"rows": len(slots)})
        return Plan("insert", True, self.tables, env.schema.name, True, root=root)
