"""Plan templates: built once per normalized statement, bound per execution.

``build()`` runs on a plan-cache miss: it parses the template with sqlglot,
analyzes routing and refuses what mdriver cannot do correctly. The template
it returns is immutable and shared across threads; ``bind(nv)`` picks the
slots from the bound values and returns a :class:`Plan`.
"""
from __future__ import annotations

import sqlglot
import sqlglot.errors
import sqlglot.expressions as exp

from mdriver import err
from mdriver.router import analyze as A
from mdriver.router.analyze import Analysis, Group, Occ, refuse
from mdriver.router.normalize import Normalized
from mdriver.router.plan import Plan
from mdriver.router.primitives import Write
from mdriver.router.rewrite import Builder, InSubset, Splice, compact, occ_part, render
from mdriver.router.routing import ALL, Eq, compact_slots, quote, slot_of
from mdriver.router.scan import Tok, first_words, tokenize
from mdriver.router.types import ShardQuery

class NeedsLiterals(Exception):
    """The literal-free template cannot be planned; plan the text with its literals instead."""


KEEP_LITERALS = "keep-literals"  # cache value: re-normalize keeping literals, then look up again


class Template:
    kind = "other"
    is_write = False
    tables: tuple[str, ...] = ()
    locking = False  # SELECT ... FOR UPDATE / LOCK IN SHARE MODE: must read the primary

    def bind(self, nv: Normalized, env) -> Plan:
        raise NotImplementedError


class ErrorTemplate(Template):
    """A refusal found while planning, cached like any plan so repeating it costs no parse."""

    def __init__(self, error: err.MySQLError):
        self.error = error

    def bind(self, nv, env) -> Plan:
        e = self.error
        raise type(e)(*e.args, sqlstate=e.sqlstate)


class Ctx:
    """Per-target rendering context: IN-list subsets and the pushed LIMIT."""

    __slots__ = ("in_subsets", "push_limit")

    def __init__(self, in_subsets: dict | None = None, push_limit: int | None = None):
        self.in_subsets = in_subsets or {}
        self.push_limit = push_limit


def _copy_error(e: err.MySQLError) -> err.MySQLError:
    return type(e)(*e.args, sqlstate=e.sqlstate)


# -- entry point --------------------------------------------------------------------

_SELECT_WORDS = ("SELECT", "WITH")
_DDL_WORDS = ("CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME")
_META_WORDS = ("DESCRIBE", "DESC", "EXPLAIN", "SHOW")
_READ_ONLY_OTHER = ("SHOW", "SET", "USE", "DESCRIBE", "DESC", "EXPLAIN", "HELP", "BEGIN", "START", "COMMIT",
                    "ROLLBACK", "SAVEPOINT", "RELEASE", "XA", "SELECT", "DO")


def build(nv: Normalized, env) -> Template | str:
    """The template for ``nv.template`` (or KEEP_LITERALS); refusals become ErrorTemplates."""
    try:
        return _build(nv.template, nv, env)
    except NeedsLiterals:
        if nv.keep_literals:
            return ErrorTemplate(err.error(err.NotSupportedError, err.ER_NOT_SUPPORTED_YET,
                                           "mdriver cannot plan this statement"))
        return KEEP_LITERALS
    except err.MySQLError as e:
        return ErrorTemplate(e)


def _build(text: str, nv: Normalized, env) -> Template:
    toks = tokenize(text)
    words = first_words(toks, 3)
    if not toks:
        raise err.error(err.ProgrammingError, 1065, "Query was empty")
    if not words:
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, f"mdriver cannot parse the statement starting with {text[:20]!r}")
    verb = words[0]
    if verb == "PREVIEW":
        from mdriver.router.ddl import PreviewTemplate

        inner_text = text[toks[0].end:].lstrip()
        return PreviewTemplate(_build(inner_text, nv, env))
    if verb in _SELECT_WORDS:
        return _plan_select(text, toks, nv, env)
    if verb in ("INSERT", "REPLACE"):
        from mdriver.router.insert import plan_insert

        return plan_insert(text, toks, nv, env, replace=verb == "REPLACE")
    if verb in ("UPDATE", "DELETE"):
        return _plan_dml(text, toks, nv, env, verb.lower())
    if verb in _DDL_WORDS or verb in _META_WORDS:
        from mdriver.router import ddl

        t = ddl.plan_ddl_or_meta(text, toks, words, nv, env)
        if t is not None:
            return t
        if verb == "EXPLAIN" and len(words) > 1 and words[1] in ("SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "REPLACE"):
            return ddl.ExplainTemplate(_build(text[toks[0].end:].lstrip(), nv, env))
    return HomeTemplate("other", verb not in _READ_ONLY_OTHER, (), "UNSHARDED", Builder(text, toks).whole())


def parse(text: str, nv: Normalized) -> exp.Expression:
    try:
        tree = sqlglot.parse_one(text, read="mysql")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError) as e:
        if not nv.keep_literals:
            raise NeedsLiterals() from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, f"mdriver cannot parse the statement: {first}") from None
    if tree is None or isinstance(tree, exp.Command):
        if not nv.keep_literals:
            raise NeedsLiterals()
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, "mdriver cannot parse the statement (unsupported syntax)")
    return tree


# -- shared helpers -------------------------------------------------------------------


def occ_splices(an: Analysis, alias: bool = True, qualify_delete: Occ | None = None,
                no_alias: frozenset[int] = frozenset()) -> list[Splice]:
    """Replace each sharded/broadcast table reference; keep the logical name as an alias."""
    out = []
    for o in an.occs:
        if o.kind not in ("sharded", "broadcast"):
            continue
        parts: list = [occ_part(o.idx)]
        if alias and o.alias is None and o.kind == "sharded" and o is not qualify_delete and o.idx not in no_alias:
            parts.append(" AS " + quote(o.name))
        out.append(Splice(o.span[0], o.span[1], parts))
    if qualify_delete is not None:
        for a, b in A.qualifier_spans(an, qualify_delete):
            out.append(Splice(a, b, [occ_part(qualify_delete.idx)]))
    return out


def check_mixed(an: Analysis) -> None:
    """Unsharded tables live only in the home database: they cannot meet sharded ones."""
    sharded = [o for o in an.occs if o.kind == "sharded"]
    others = [o for o in an.occs if o.kind in ("unsharded", "external")]
    if sharded and others:
        o = others[0]
        where = o.node.args.get("db").name + "." if o.kind == "external" else an.schema.name + "."
        raise err.error(err.ProgrammingError, err.ER_NO_SUCH_TABLE,
                        f"Table '{where}{o.name}' is not in the sharding config, so it exists only in the home database "
                        f"and cannot be used with sharded table '{sharded[0].name}'")


def tables_of(an: Analysis) -> tuple[str, ...]:
    return tuple(dict.fromkeys(o.name for o in an.occs))


class HomeTemplate(Template):
    """One statement to the schema's home database, text unchanged (UNSHARDED / REFERENCE)."""

    def __init__(self, kind: str, is_write: bool, tables: tuple[str, ...], opcode: str, parts: list):
        self.kind = kind
        self.is_write = is_write
        self.tables = tables
        self.opcode = opcode
        self.parts = parts

    def bind(self, nv, env) -> Plan:
        sql = render(self.parts, nv, [])
        q = ShardQuery(env.schema.datasource, env.schema.name, sql, self.is_write)
        return Plan(self.kind, self.is_write, self.tables, env.schema.name, nv.hints.primary or self.locking or self.is_write,
                    single=q, route=(self.opcode, list(self.tables), ""))


class BroadcastWriteTemplate(Template):
    """A write to broadcast tables only: the same statement on every copy; the home copy answers."""

    def __init__(self, kind: str, an: Analysis, parts: list):
        self.kind = kind
        self.is_write = True
        self.tables = tables_of(an)
        self.parts = parts
        self.occs = an.occs

    def bind(self, nv, env) -> Plan:
        stmts = []
        for ds, db in env.broadcast_copies():
            occ_text = [f"{quote(db)}.{quote(o.name)}" for o in self.occs]
            stmts.append(ShardQuery(ds, db, render(self.parts, nv, occ_text), True))
        root = Write("BroadcastWrite", "REFERENCE", list(self.tables), "", stmts, combine="first",
                     extra={"copies": len(stmts)})
        return Plan(self.kind, True, self.tables, env.schema.name, True, root=root)


class Choice:
    __slots__ = ("single", "slots", "opcode", "db")

    def __init__(self, single: bool, slots: list, opcode: str, db: tuple[str, str] | None = None):
        self.single = single
        self.slots = slots  # single: slot per group; multi: sorted slots of the one group
        self.opcode = opcode
        self.db = db


class ShardedTemplate(Template):
    """A statement on sharded tables (SELECT, UPDATE, DELETE, INSERT ... SELECT)."""

    def __init__(self, kind: str, an: Analysis, text: str, toks: list[Tok], top: A.Scope | None,
                 multi_reason: str | None, tree: exp.Expression, env, qualify_delete: Occ | None = None,
                 extra_occs: dict[int, Group] | None = None, no_alias: frozenset[int] = frozenset(),
                 keep_literals: bool = False):
        self.kind = kind
        self.is_write = kind != "select"
        self.an = an
        self.tables = tables_of(an)
        self.groups = an.groups
        self.top = top
        self.multi_reason = multi_reason
        self.tree = tree
        self.text = text
        self.toks = toks
        self.occs = an.occs
        self.occ_group = [extra_occs.get(o.idx) if extra_occs and o.idx in extra_occs else o.group for o in an.occs]
        splices = occ_splices(an, qualify_delete=qualify_delete, no_alias=no_alias)
        self.parts = compact(Builder(text, toks, splices).whole())
        self.splices = splices
        self._multi_parts: list | None = None
        self._scatter = None
        self.limit = env.options.scatter_enumerate_limit
        self.keep_literals = keep_literals
        self.locking = bool(tree.args.get("locks")) if isinstance(tree, exp.Select) else False
        self.primary = self.is_write or self.locking
        single_group = len(self.groups) == 1 and self.groups[0].root is top
        self.point = single_group and isinstance(self.groups[0].pred, Eq) and len(an.occs) == 1
        if kind == "select" and single_group and not isinstance(self.groups[0].pred, Eq):
            from mdriver.router.scatter import ScatterSelect

            try:  # built now so that a literal-dependent rewrite can still re-plan with literals
                self._scatter = ScatterSelect(self, env)
            except err.MySQLError as e:
                self._scatter = e

    # which slots ------------------------------------------------------------------
    def choose(self, nv, env) -> Choice:
        hint = nv.hints.shard
        if hint is not None:
            for g in self.groups:
                if hint >= g.rule.slots:
                    raise err.error(err.ProgrammingError, err.ER_WRONG_ARGUMENTS,
                                    f"hint shard={hint} is out of range: {g.rule.name} has slots 0..{g.rule.slots - 1}")
            return self._single([hint] * len(self.groups), "EQUAL", env)
        sets = [g.slots(nv, self.limit) for g in self.groups]
        if len(self.groups) == 1 and self.groups[0].root is self.top:
            s = sets[0]
            g = self.groups[0]
            if s is ALL:
                return Choice(False, list(range(g.rule.slots)), "SCATTER")
            if not s:
                return Choice(True, [0], "NONE", env.layout(g.rule).loc(0))
            if len(s) == 1:
                slot = next(iter(s))
                return Choice(True, [slot], "EQUAL", env.layout(g.rule).loc(slot))
            return Choice(False, sorted(s), "IN")
        chosen: list[int | None] = []
        for g, s in zip(self.groups, sets):
            if s is ALL or len(s) > 1:
                raise refuse(self.multi_reason or "the statement needs rows from several shards")
            chosen.append(next(iter(s)) if s else None)
        return self._single(chosen, "EQUAL", env)

    def _single(self, chosen: list, opcode: str, env) -> Choice:
        db = None
        for g, slot in zip(self.groups, chosen):
            if slot is not None:
                loc = env.layout(g.rule).loc(slot)
                if db is None:
                    db = loc
                elif loc != db:
                    raise refuse(self.multi_reason or "the statement needs rows from several shards")
        if db is None:  # every group is empty: any shard gives the right (empty) answer
            chosen = [0 if c is None else c for c in chosen]
            opcode = "NONE"
            db = env.layout(self.groups[0].rule).loc(chosen[0])
        out = []
        for g, slot in zip(self.groups, chosen):
            if slot is None:
                lay = env.layout(g.rule)
                slots = lay.by_db.get(db)
                if not slots:
                    raise refuse(self.multi_reason or "the statement needs rows from several shards")
                slot = slots[0]
            out.append(slot)
        return Choice(True, out, opcode, db)

    def occ_texts(self, slot_by_group: dict[int, int], db: tuple[str, str], env) -> list[str]:
        texts = []
        for o, g in zip(self.occs, self.occ_group):
            if o.kind == "sharded":
                texts.append(env.layout(o.rule).table_sql[slot_by_group[id(g)]])
            elif o.kind == "broadcast":
                texts.append(f"{quote(db[1])}.{quote(o.name)}")
            else:
                texts.append("")
        return texts

    def bind(self, nv, env) -> Plan:
        if self.point and nv.hints.shard is None:  # the hot path: one table, key = value
            g = self.groups[0]
            lay = env.layout(g.rule)
            v = g.pred.ref.get(nv)  # type: ignore[union-attr]
            if v is not None:
                slot = slot_of(g.rule, v)
                sql = render(self.parts, nv, [lay.table_sql[slot]])
                q = ShardQuery(lay.ds[slot], lay.db[slot], sql, self.is_write)
                return Plan(self.kind, self.is_write, self.tables, env.schema.name,
                            nv.hints.primary or self.primary, single=q, route=("EQUAL", list(self.tables), str(slot)))
        choice = self.choose(nv, env)
        if choice.single:
            slot_by_group = {id(g): s for g, s in zip(self.groups, choice.slots)}
            occ_text = self.occ_texts(slot_by_group, choice.db, env)  # type: ignore[arg-type]
            sql = render(self.parts, nv, occ_text)
            q = ShardQuery(choice.db[0], choice.db[1], sql, self.is_write)  # type: ignore[index]
            slots = ",".join(str(s) for s in dict.fromkeys(choice.slots))
            return Plan(self.kind, self.is_write, self.tables, env.schema.name, nv.hints.primary or self.primary, single=q,
                        route=(choice.opcode, list(self.tables), slots))
        if self.an.has_window:
            raise refuse("window functions across shards are not supported by mdriver (restrict the query to one shard "
                         "with its shard key)")
        if self.kind == "select":
            if self._scatter is None:
                from mdriver.router.scatter import ScatterSelect

                try:
                    self._scatter = ScatterSelect(self, env)
                except err.MySQLError as e:
                    self._scatter = e
            if isinstance(self._scatter, err.MySQLError):
                raise _copy_error(self._scatter)
            root = self._scatter.bind(nv, choice, env)
            return Plan("select", False, self.tables, env.schema.name, nv.hints.primary or self.primary, root=root)
        return self._bind_scatter_dml(nv, choice, env)

    # multi-shard rendering ----------------------------------------------------------
    def multi_parts(self) -> list:
        """The statement with prunable IN lists replaced by per-shard subsets."""
        if self._multi_parts is None:
            self._multi_parts = compact(Builder(self.text, self.toks, self.splices + self.in_splices()).whole())
        return self._multi_parts

    def in_splices(self) -> list[Splice]:
        g = self.groups[0]
        if g.root is not self.top:
            return []
        pos = {int(t.text[2:]): (t.start, t.end) for t in self.toks if t.kind == "marker"}
        out = []
        for p in g.prunable_ins:
            idx = [r.index for r in p.refs]
            if any(i not in pos for i in idx):
                continue
            out.append(Splice(pos[idx[0]][0], pos[idx[-1]][1], [InSubset(p.pid, idx)]))
        return out

    def targets(self, nv, choice: Choice, env) -> list[tuple[int, str, str, Ctx]]:
        """(slot, datasource, database, ctx) per physical table of the one group."""
        g = self.groups[0]
        lay = env.layout(g.rule)
        per_slot = {p.pid: p.per_slot(g.rule, nv) for p in g.prunable_ins} if choice.opcode == "IN" else {}
        out = []
        for s in choice.slots:
            ctx = Ctx({pid: (m.get(s) or []) for pid, m in per_slot.items()})
            out.append((s, lay.ds[s], lay.db[s], ctx))
        return out

    def render_target(self, parts: list, nv, slot: int, db: tuple[str, str], ctx: Ctx, env) -> str:
        g = self.groups[0]
        return render(parts, nv, self.occ_texts({id(g): slot}, db, env), ctx)

    def _bind_scatter_dml(self, nv, choice: Choice, env) -> Plan:
        g = self.groups[0]
        if choice.opcode == "SCATTER" and not env.options.allow_scatter_dml:
            raise err.error(err.NotSupportedError, err.ER_OPTION_PREVENTS_STATEMENT,
                            f"{self.kind.upper()} without the shard key {g.rule.name}.{g.rule.shard_key} would run on all "
                            f"{g.rule.slots} shards; mdriver refuses it because router.allow_scatter_dml is off")
        if self.tree.args.get("order") is not None or self.tree.args.get("limit") is not None:
            raise refuse(f"{self.kind.upper()} with ORDER BY or LIMIT on several shards is not supported by mdriver")
        parts = self.multi_parts()
        stmts = []
        for slot, ds, db, ctx in self.targets(nv, choice, env):
            stmts.append(ShardQuery(ds, db, self.render_target(parts, nv, slot, (ds, db), ctx, env), True))
        root = Write("DmlRoute", choice.opcode, list(self.tables), compact_slots(choice.slots), stmts, "sum")
        return Plan(self.kind, True, self.tables, env.schema.name, True, root=root)


# -- SELECT -------------------------------------------------------------------------


def _multi_reason(an: Analysis, top: A.Scope | None) -> str | None:
    """Why the statement can only run when everything is on one shard (None: a single group at the top)."""
    groups = an.groups
    if len(groups) == 1 and top is not None and groups[0].root is top:
        return None
    # two groups in one scope: a join not on the binding key
    for scope in an.scopes.values():
        gs = []
        for o in scope.occs:
            if o.kind == "sharded" and o.group not in gs:
                gs.append(o.group)
        if len(gs) > 1:
            a, b = gs[0].occs[0], gs[1].occs[0]
            if b.name not in an.schema.binding_group(a.name) and a.name != b.name:
                return (f"join of sharded tables {a.name} and {b.name} is not supported: they are not in one binding group, "
                        "so mdriver can join them only when both are restricted to one shard")
            return (f"join of {a.name} and {b.name} is not on their shard key {a.rule.shard_key}: mdriver joins sharded "
                    "tables on the shard key, or when both are restricted to one shard")
    for g in groups:
        if top is not None and g.root is top:
            continue
        node = g.root.node
        names = ", ".join(g.tables)
        if isinstance(node.parent, exp.Subquery) and isinstance(node.parent.parent, (exp.From, exp.Join)):
            return f"a derived table over sharded table {names} must stay on one shard (restrict it with the shard key)"
        if _correlated(an, g.root):
            return (f"a correlated subquery on sharded table {names} that is not joined on the shard key would need rows "
                    "from other shards; mdriver supports it only on the shard key or on one shard")
        if g.root.parent is an.root:
            return f"a UNION over sharded table {names} must stay on one shard per part, all in one physical database"
        return f"a subquery on sharded table {names} must stay on one shard (restrict it with the shard key)"
    return "the statement needs rows from several shards"


def _correlated(an: Analysis, scope: A.Scope) -> bool:
    for col in scope.node.find_all(exp.Column):
        q = col.table
        if not q or q in scope.sources:
            continue
        s = scope.parent
        while s is not None and s is not an.root:
            if q in s.sources:
                return True
            s = s.parent
    return False


def _plan_select(text: str, toks: list[Tok], nv: Normalized, env) -> Template:
    tree = parse(text, nv)
    if not isinstance(tree, (exp.Select, exp.Union, exp.Except, exp.Intersect)):
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, "mdriver cannot parse the statement as a SELECT")
    an = A.analyze(tree, env.config, env.schema)
    return _select_template(an, text, toks, tree, env, nv.keep_literals)


def _select_template(an: Analysis, text: str, toks: list[Tok], tree: exp.Expression, env, keep_literals: bool) -> Template:
    check_mixed(an)
    if not an.groups:
        kinds = an.kinds()
        opcode = "REFERENCE" if kinds == {"broadcast"} else "UNSHARDED"
        t = HomeTemplate("select", False, tables_of(an), opcode, Builder(text, toks).whole())
        t.locking = bool(tree.args.get("locks"))
        return t
    top = an.scopes.get(id(tree)) if isinstance(tree, exp.Select) else None
    return ShardedTemplate("select", an, text, toks, top, _multi_reason(an, top), tree, env, keep_literals=keep_literals)


# -- UPDATE / DELETE --------------------------------------------------------------------


def _plan_dml(text: str, toks: list[Tok], nv: Normalized, env, kind: str) -> Template:
    tree = parse(text, nv)
    if not isinstance(tree, (exp.Update, exp.Delete)):
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, f"mdriver cannot parse the statement as {kind.upper()}")
    an = A.analyze(tree, env.config, env.schema)
    check_mixed(an)
    top = an.scopes[id(tree)]
    targets = _dml_targets(an, tree, top)
    kinds = {o.kind for o in targets}
    if not an.groups:
        if "broadcast" in kinds:
            if any(o.kind in ("unsharded", "external") for o in an.occs):
                raise refuse(f"{kind.upper()} of broadcast table {targets[0].name} cannot use unsharded tables "
                             "(they do not exist next to every copy)")
            return BroadcastWriteTemplate(kind, an, Builder(text, toks, occ_splices(an)).whole())
        return HomeTemplate(kind, True, tables_of(an), "UNSHARDED", Builder(text, toks).whole())
    if "broadcast" in kinds:
        raise refuse(f"{kind.upper()} of broadcast table {next(o.name for o in targets if o.kind == 'broadcast')} "
                     "cannot read sharded tables: every copy must get the same change")
    if kind == "update":
        check_key_assignments(an, tree.expressions, top)
    single_delete = None
    if kind == "delete" and not tree.args.get("tables") and len(top.occs) == 1 and not top.occs[0].alias:
        single_delete = top.occs[0]  # MariaDB has no alias in single-table DELETE: rewrite qualifiers instead
    return ShardedTemplate(kind, an, text, toks, top, _multi_reason(an, top), tree, env, qualify_delete=single_delete)


def _dml_targets(an: Analysis, tree: exp.Expression, top: A.Scope) -> list[Occ]:
    if isinstance(tree, exp.Delete) and tree.args.get("tables"):
        out = []
        for t in tree.args["tables"]:
            src = top.sources.get(t.name)
            if isinstance(src, Occ):
                out.append(src)
        return out
    if isinstance(tree, exp.Update) and tree.expressions:
        out = []
        for e in tree.expressions:
            col = e.this if isinstance(e, exp.EQ) else None
            if isinstance(col, exp.Column):
                if col.table:
                    src = top.sources.get(col.table)
                    if isinstance(src, Occ) and src not in out:
                        out.append(src)
                elif len(top.occs) == 1 and top.occs[0] not in out:
                    out.append(top.occs[0])
        if out:
            return out
    return [o for o in top.occs][:1] if top.occs else []


def check_key_assignments(an: Analysis, assignments: list, scope: A.Scope) -> None:
    for e in assignments:
        if not isinstance(e, exp.EQ) or not isinstance(e.this, exp.Column):
            continue
        col = e.this
        name = col.name.lower()
        if col.table:
            src = scope.sources.get(col.table)
            owners = [src] if isinstance(src, Occ) else []
        else:
            owners = [o for o in scope.occs if o.kind == "sharded"]
        for o in owners:
            if o.kind == "sharded" and o.rule.shard_key.lower() == name:
                raise err.error(err.NotSupportedError, err.ER_CANT_CHANGE_SHARD_KEY,
                                f"changing the shard key {o.name}.{o.rule.shard_key} is not supported by mdriver "
                                "(the row would have to move to another shard: delete it and insert it again)")


__all__ = ["build", "KEEP_LITERALS", "Template", "ErrorTemplate"]
