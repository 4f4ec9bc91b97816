"""The routers of one config version, with migration phases (DESIGN §3), for the proxy.

A table being migrated is read and written where its phase says: the
shards, the source (planned on the pre-migration view of the config), or
both for shadow reads (the source's rows are returned, differences counted).
Fenced writes are refused with a retryable error.
"""
from __future__ import annotations

import logging

from mdriver import err
from mdriver.config.model import Config
from mdriver.phases import SHADOW, SOURCE, Phases, ShadowStats, compare_rows, source_view
from mdriver.router import Router, run_async
from mdriver.router.types import Result

log = logging.getLogger(__name__)

SINGLE, SCATTER = "single", "scatter"
ER_NO_DB_ERROR = 1046


class ShadowPlan:
    """Both plans of a shadow read; runs like a scatter plan."""

    single = None
    is_write = False

    def __init__(self, source, shards):
        self.source = source
        self.shards = shards
        self.tables = source.tables

    def preview(self):
        return self.source.preview() + self.shards.preview()

    def describe(self) -> dict:
        return {"operator": "Shadow", "source": self.source.describe(), "shards": self.shards.describe()}


class Routing:
    def __init__(self, config: Config):
        self.config = config
        self.router = Router(config)
        self.phases = Phases(config)
        self.source_router = None
        self.source_problems: dict = {}
        if self.phases:
            source_config, self.source_problems = source_view(config)
            self.source_router = Router(source_config)
        self.shadow = ShadowStats()

    def plan(self, session, sql: str, params, placeholders: bool = False):
        """(plan, route) for a statement of ``session``; params is a tuple for prepared statements.

        ``placeholders``: keep a ``?`` per parameter in the physical SQL (see
        ``Router.plan``); only without migration phases.
        """
        style = "qmark" if params is not None else None
        schema = session.schema
        if schema is None:
            # No database selected: table-less statements still work, as in MySQL.
            schema = session.schemas[0] if session.schemas else next(iter(self.config.schemas))
            plan = self.router.plan(sql, schema=schema, params=params, paramstyle=style, placeholders=placeholders)
            if plan.tables:
                raise err.error(err.ProgrammingError, ER_NO_DB_ERROR, "No database selected")
        else:
            plan = self.router.plan(sql, schema=schema, params=params, paramstyle=style, placeholders=placeholders)
        if self.phases:
            phase = self.phases.decide(plan.schema, plan.tables, plan.is_write)
            if phase in (SOURCE, SHADOW):
                for table in plan.tables:
                    problem = self.source_problems.get((plan.schema, table))
                    if problem:
                        raise err.error(err.NotSupportedError, err.ER_NOT_SUPPORTED_YET, problem)
                source = self.source_router.plan(sql, schema=schema, params=params, paramstyle=style)
                if phase == SHADOW and not plan.is_write:
                    return ShadowPlan(source, plan), SHADOW
                plan = source
        return plan, (SINGLE if plan.single is not None else SCATTER)

    def point_route(self, session, sql: str, params):
        """The router's PointRoute for a prepared statement (see mdriver.router.pointroute), or None."""
        if self.phases or session.schema is None:
            return None
        return self.router.point_route(sql, session.schema, params)

    async def run(self, backend, plan, sql: str) -> Result:
        if isinstance(plan, ShadowPlan):
            result = await run_async(plan.source, backend)
            try:
                shard_result = await run_async(plan.shards, backend)
            except err.MySQLError as e:
                self.shadow.record_failure(sql, e)
                return result
            self.shadow.record(sql, compare_rows(result.rows, shard_result.rows))
            return result
        return await run_async(plan, backend)
