"""Runs the shared sans-IO transaction coordinator (:mod:`mdriver.txn`) on the proxy's connections.

The coordinator yields steps; a step's statements run concurrently, each on
the session's pinned branch connection or on a pooled connection in the
default session state (decision log writes must autocommit). XA recovery
runs at startup and periodically, with the same step runner.
"""
from __future__ import annotations

import asyncio
import logging

from mdriver import err, txn
from mdriver.wire.values import decode_text
from proxy.pool import give_back
from proxy.session import DEFAULT_STATE, mark_applied, replay_sql

log = logging.getLogger(__name__)


def decision_log_for(config, schema_name: str | None) -> txn.DecisionLog:
    name = schema_name if schema_name in config.schemas else next(iter(config.schemas))
    schema = config.schemas[name]
    return txn.DecisionLog(schema.datasource, schema.name)


def _rows(result) -> tuple:
    kinds = [(cd.type, cd.charset) for cd in result.columns]
    return tuple(tuple(decode_text(cell, t, cs) for cell, (t, cs) in zip(row, kinds)) for row in result.rows)


class Transactions:
    def __init__(self, server):
        self.server = server
        self.recovered = 0
        self.last_recovery: str = ""
        self._logs_ready: set = set()

    def new(self, session) -> txn.Transaction:
        cfg = self.server.config
        return txn.Transaction(cfg.transaction_mode, decision_log_for(cfg, session.schema))

    async def finish(self, executor, commit: bool) -> txn.Outcome | None:
        """COMMIT or ROLLBACK the session's transaction and unpin its branch connections."""
        s = executor.session
        t = s.txn
        if t is None:
            return None
        if commit and t.mode == "xa" and len(t.branches) > 1 and t.log not in self._logs_ready:
            await self.ensure_log(t.log)
        gen = t.commit() if commit else t.rollback()
        outcome = None
        try:
            replies = None
            while True:
                step = gen.send(replies)
                replies = await self.run_step(step, s.pinned)
        except StopIteration as stop:
            outcome = stop.value
        finally:
            s.txn = None
            s.txn_routing = None
            s.txn_read_only = False
            if self.server.ack_pending:
                self.server.maybe_acknowledge()
            for ds in list(s.pinned):
                conn = s.pinned[ds]
                discard = ds in t.discard or conn.closed
                if discard or ds not in s.sticky:
                    del s.pinned[ds]
                    s.sticky.pop(ds, None)
                    if conn is s.warnings_conn and not discard:
                        continue  # released with the warnings
                    if conn is s.warnings_conn:
                        s.warnings_conn = None
                    give_back(conn, close=discard)
        return outcome

    async def ensure_log(self, dlog: txn.DecisionLog) -> None:
        """Create the decision log before the first two-phase commit that needs it (once per process)."""
        (reply,) = await self.run_step(txn.Step(txn.Phase.SETUP, (dlog.stmt(dlog.ddl()),)), {})
        if reply.error is None:
            self._logs_ready.add(dlog)
        else:
            log.warning("cannot create the XA decision log %s on %s: %s", dlog.table, dlog.datasource, reply.error)

    async def run_step(self, step: txn.Step, pinned: dict) -> list[txn.Reply]:
        return list(await asyncio.gather(*(self._run_stmt(stmt, pinned) for stmt in step.stmts)))

    async def _run_stmt(self, stmt: txn.Stmt, pinned: dict) -> txn.Reply:
        pools = self.server.pools
        if stmt.branch:
            conn = pinned.get(stmt.datasource)
            if conn is None or conn.closed:
                return txn.Reply(error=err.error(err.BackendError, err.CR_SERVER_LOST,
                                                 f"the transaction's connection to datasource {stmt.datasource} was lost"))
            try:
                res = await conn.query(stmt.sql)
            except err.MySQLError as e:
                return txn.Reply(error=e)
            return txn.Reply(_rows(res), res.affected_rows)
        pool = pools.get(stmt.datasource)
        if pool is None:
            return txn.Reply(error=err.error(err.OperationalError, err.ER_UNKNOWN_ERROR, f"no datasource {stmt.datasource}"))
        try:
            conn = await pool.acquire()
        except err.MySQLError as e:
            return txn.Reply(error=e)
        try:
            reset = replay_sql(DEFAULT_STATE, conn)
            if reset is not None:
                await conn.query(reset)
                mark_applied(DEFAULT_STATE, conn)
            res = await conn.query(stmt.sql)
            return txn.Reply(_rows(res), res.affected_rows)
        except err.MySQLError as e:
            return txn.Reply(error=e)
        finally:
            if conn.busy():
                conn.close(abort=True)
            pool.release(conn)

    async def recover(self, grace: float = 30.0) -> list[txn.RecoveryReport]:
        """Finish XA branches left prepared by a coordinator that died (every schema's decision log)."""
        cfg = self.server.config
        reports = []
        seen = set()
        for schema in cfg.schemas.values():
            dlog = txn.DecisionLog(schema.datasource, schema.name)
            if dlog in seen:
                continue
            seen.add(dlog)
            gen = txn.recover(sorted(cfg.datasources), dlog, grace=grace)
            replies = None
            try:
                while True:
                    step = gen.send(replies)
                    replies = await self.run_step(step, {})
            except StopIteration as stop:
                report = stop.value
            reports.append(report)
            if report.committed or report.rolled_back:
                log.info("XA recovery (%s): committed %d, rolled back %d branches", schema.name, len(report.committed), len(report.rolled_back))
            for problem in report.errors:
                log.warning("XA recovery (%s): %s", schema.name, problem)
            self.recovered += len(report.committed) + len(report.rolled_back)
        self.last_recovery = "; ".join(f"{len(r.committed)} committed, {len(r.rolled_back)} rolled back, {len(r.errors)} errors" for r in reports)
        return reports
