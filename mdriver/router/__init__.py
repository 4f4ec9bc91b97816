"""The SQL router: SQL in, a plan out (DESIGN §4).

``normalize -> plan cache -> plan template -> bind -> execute (sans-IO) -> merge``::

    router = Router(config)
    plan = router.plan("SELECT * FROM user_relation WHERE uid = %s", "app", (42,))
    result = run_sync(plan, backend)

One Router per Config version; it owns a bounded, thread-safe plan cache
(keys: normalized template, schema, config revision) and a cache of how
DB-API template texts normalize. ``plan()`` refuses before anything runs.

A Plan has ``kind`` (select/insert/update/delete/ddl/other), ``is_write``,
``single`` (one physical statement whose result needs no merging),
``tables``, ``schema``, ``force_primary`` (``/* mdriver:primary */``, a
locking read, or a write), ``describe()``, ``preview()`` and ``execute()``
(a generator: yields ``list[ShardQuery]``, receives ``list[ShardResult]``,
returns a Result). ``PREVIEW <statement>`` is a plan of kind ``other`` whose
rows are (datasource, database, sql) and which runs nothing.

Errors (``mdriver.err``, each with a MySQL errno and a stable message):
1235 ER_NOT_SUPPORTED_YET for what mdriver does not do (multiple statements,
executable comments, cross-shard constructs the merger cannot do exactly,
changing a shard key, INSERT without the shard key); 1290
ER_OPTION_PREVENTS_STATEMENT for UPDATE/DELETE without a shard key while
``router.allow_scatter_dml`` is off; 1064 parse errors; 1146 an unsharded
table used with sharded ones; 1054 an unknown column qualifier; 1049 an
unknown schema; 1210 parameters that do not fit or shard keys that cannot be
placed; 1048 a NULL shard key in an INSERT.
"""
from __future__ import annotations

import threading

from mdriver import err
from mdriver.config.model import Config, RouterOptions, Schema, TableRule
from mdriver.router.cache import PlanCache
from mdriver.router.normalize import Hints, Normalized
from mdriver.router.normalize import normalize as _normalize
from mdriver.router.plan import Plan
from mdriver.router.planner import KEEP_LITERALS, Template, build
from mdriver.router.pointroute import PointRoute, point_route
from mdriver.router.routing import Layout
from mdriver.router.runner import run_async, run_sync
from mdriver.router.types import Column, Result, ShardQuery, ShardResult
from mdriver.sharding import shard_databases


class SchemaEnv:
    """What planning and binding need about one logical schema (immutable once built)."""

    def __init__(self, config: Config, schema: Schema):
        self.config = config
        self.schema = schema
        self.options: RouterOptions = config.router
        self._layouts: dict[str, Layout] = {}
        self._lock = threading.Lock()
        home = (schema.datasource, schema.name)
        self._copies = [home] + [p for p in shard_databases(schema) if p != home]

    def layout(self, rule: TableRule) -> Layout:
        lay = self._layouts.get(rule.name)
        if lay is None:
            with self._lock:
                lay = self._layouts.get(rule.name)
                if lay is None:
                    lay = self._layouts[rule.name] = Layout(self.schema, rule)
        return lay

    def broadcast_copies(self) -> list[tuple[str, str]]:
        """(datasource, database) of every copy of a broadcast table, the home copy first."""
        return list(self._copies)


class Router:
    """Plans statements for one Config version."""

    def __init__(self, config: Config, cache: PlanCache | None = None):
        self.config = config
        self.revision = config.revision
        self.cache = cache if cache is not None else PlanCache(config.router.plan_cache_size)
        self._envs: dict[str, SchemaEnv] = {}
        self._lock = threading.Lock()
        # DB-API template text -> how it normalizes (the same text comes with new values)
        self.recipes = PlanCache(config.router.plan_cache_size)

    def env(self, schema: str) -> SchemaEnv:
        e = self._envs.get(schema)
        if e is None:
            sch = self.config.schemas.get(schema)
            if sch is None:
                raise err.error(err.ProgrammingError, err.ER_BAD_DB_ERROR, f"Unknown database '{schema}'")
            with self._lock:
                e = self._envs.get(schema)
                if e is None:
                    e = self._envs[schema] = SchemaEnv(self.config, sch)
        return e

    def template(self, nv: Normalized, env: SchemaEnv) -> Template | str:
        key = (nv.template, env.schema.name, self.revision, nv.keep_literals)
        tpl = self.cache.get(key)
        if tpl is None:
            tpl = build(nv, env)
            self.cache.put(key, tpl)
        return tpl

    def plan(self, sql: str, schema: str = "app", params=None, paramstyle: str | None = "pyformat",
             placeholders: bool = False) -> Plan:
        """Plan one statement. Raises mdriver.err errors (with MySQL errno) before anything runs.

        ``placeholders``: the physical SQL keeps a ``?`` for each parameter
        instead of its value (a proxy prepares it on the backend); the values
        still route. A template that cannot keep them renders values.
        """
        env = self._envs.get(schema) or self.env(schema)
        nv = None
        recipe = None
        if params is not None and paramstyle is not None:
            recipe = self.recipes.get((sql, paramstyle))
            if recipe is not None:
                nv = recipe.apply(params)
        if nv is None:
            nv = _normalize(sql, paramstyle, params)
            recipe = nv.recipe
            if recipe is not None:
                self.recipes.put((sql, paramstyle), recipe)
        if placeholders and recipe is not None:
            texts = nv.texts
            for i, _ in recipe.keys:
                texts[i] = "?"
        key = (nv.template, schema, self.revision, False)
        tpl = self.cache.get(key)
        if tpl is None:
            tpl = build(nv, env)
            self.cache.put(key, tpl)
        if tpl is KEEP_LITERALS:
            nv = _normalize(sql, paramstyle, params, keep_literals=True)
            tpl = self.template(nv, env)
        return tpl.bind(nv, env)  # type: ignore[union-attr]

    def point_route(self, sql: str, schema: str, params, paramstyle: str = "qmark") -> PointRoute | None:
        """For a prepared statement: its PointRoute (one hash per execute), or None if it is not a point statement.

        Plans once with ``params`` (so the router's refusals are raised here).
        """
        plan = self.plan(sql, schema, params, paramstyle)
        recipe = self.recipes.get((sql, paramstyle))
        if plan.single is None or recipe is None:
            return None
        tpl = self.cache.get((recipe.template, schema, self.revision, False))
        return point_route(tpl, recipe, self._envs[schema])

    def preview(self, sql: str, schema: str = "app", params=None, paramstyle: str | None = "pyformat") -> list[ShardQuery]:
        """The physical statements ``sql`` would run, without running anything."""
        return self.plan(sql, schema, params, paramstyle).preview()


__all__ = [
    "Column", "Hints", "Plan", "PlanCache", "Result", "Router", "SchemaEnv", "ShardQuery", "ShardResult",
    "run_async", "run_sync",
]
