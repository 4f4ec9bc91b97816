"""Run statements on backend connections: the I/O side of the router and the coordinator.

* :class:`PooledBatch` runs a router batch outside transactions: one pooled
  connection per datasource (reads on a replica when allowed), datasources
  in parallel on the runtime's threads, a single datasource inline (no
  thread hop).
* :class:`PinnedBatch` runs a batch inside a transaction, on the session's
  pinned connection per datasource, starting each branch when first used.
* :func:`run_step` / :func:`drive` / :func:`drive_pooled` execute the steps
  that the sans-IO coordinator in :mod:`mdriver.txn` yields.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Generator, Sequence

from mdriver import err, txn
from mdriver.pool import Backend, Pool
from mdriver.router.types import ShardQuery, ShardResult

if TYPE_CHECKING:
    from mdriver.runtime import Runtime, Version

log = logging.getLogger(__name__)


def shard_result(res) -> ShardResult:
    """A backend response -> the router's ShardResult."""
    columns = res.columns
    rows = res.rows
    return ShardResult(
        columns, list(rows) if rows else [], 0 if columns else res.affected_rows or 0, res.insert_id or 0,
        res.warning_count or 0,
    )


def _in_parallel(runtime: "Runtime", jobs: list[Callable[[], None]]) -> None:
    """Run jobs on the runtime's threads; the first job runs on the caller's thread."""
    if len(jobs) == 1:
        jobs[0]()
        return
    futures = [runtime.executor.submit(job) for job in jobs[1:]]
    first_error = None
    try:
        jobs[0]()
    except BaseException as e:  # noqa: BLE001 - wait for the others before raising
        first_error = e
    for f in futures:
        try:
            f.result()
        except BaseException as e:  # noqa: BLE001
            first_error = first_error or e
    if first_error is not None:
        raise first_error


def _group(batch: Sequence[ShardQuery]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(batch):
        groups.setdefault(q.datasource, []).append(i)
    return groups


class PooledBatch:
    """Outside a transaction: autocommit connections from the pools."""

    __slots__ = ("runtime", "version", "replicas_ok")

    def __init__(self, runtime: "Runtime", version: "Version", replicas_ok: bool):
        self.runtime = runtime
        self.version = version
        self.replicas_ok = replicas_ok

    def pool_for(self, ds: str, write: bool) -> Pool:
        try:
            primary = self.version.pools[ds]
        except KeyError:
            raise err.error(err.InternalError, err.ER_UNKNOWN_ERROR, f"datasource {ds!r} is not in the config") from None
        if write or not self.replicas_ok:
            return primary
        replicas = self.version.replicas.get(ds)
        if replicas is None:
            return primary
        return replicas.choose() or primary

    def run_one(self, q: ShardQuery):
        """One statement on one pooled connection; a failing replica falls back to the primary."""
        pool = self.pool_for(q.datasource, q.write)
        try:
            backend = pool.acquire()
        except err.BackendError:
            if pool is self.version.pools[q.datasource]:
                raise
            return self._fallback(pool, q)
        try:
            return backend.query(q.sql, q.database)
        except err.BackendError:
            if pool is self.version.pools[q.datasource]:
                raise
            backend.broken = True
            return self._fallback(pool, q)
        finally:
            pool.release(backend)

    def _fallback(self, replica: Pool, q: ShardQuery):
        log.warning("replica %s failed; reading from the primary of %s", replica.label, q.datasource)
        self.version.replicas[q.datasource].mark_down(replica)
        pool = self.version.pools[q.datasource]
        backend = pool.acquire()
        try:
            return backend.query(q.sql, q.database)
        finally:
            pool.release(backend)

    def run(self, batch: Sequence[ShardQuery]) -> list[ShardResult]:
        if len(batch) == 1:
            return [shard_result(self.run_one(batch[0]))]
        out: list = [None] * len(batch)
        groups = _group(batch)

        def job(indexes: list[int]) -> Callable[[], None]:
            def run() -> None:
                write = any(batch[i].write for i in indexes)
                pool = self.pool_for(batch[indexes[0]].datasource, write)
                if pool is not self.version.pools[batch[indexes[0]].datasource]:
                    for i in indexes:  # replica reads: each with its own fallback
                        out[i] = shard_result(self.run_one(batch[i]))
                    return
                backend = pool.acquire()
                try:
                    for i in indexes:
                        q = batch[i]
                        out[i] = shard_result(backend.query(q.sql, q.database))
                finally:
                    pool.release(backend)

            return run

        _in_parallel(self.runtime, [job(ix) for ix in groups.values()])
        return out


class PinnedBatch:
    """Inside a transaction: each datasource's statements on the session's pinned connection."""

    __slots__ = ("session",)

    def __init__(self, session):
        self.session = session

    def run(self, batch: Sequence[ShardQuery]) -> list[ShardResult]:
        session = self.session
        t = session.txn
        writes = {q.datasource for q in batch if q.write}
        if writes:
            t.check_write(writes)
        if len(batch) == 1:
            return [shard_result(session.run_pinned(batch[0]))]
        out: list = [None] * len(batch)
        groups = _group(batch)
        for ds in groups:  # join branches first, on this thread, so failures are simple to report
            session.branch(ds)

        def job(indexes: list[int]) -> Callable[[], None]:
            def run() -> None:
                for i in indexes:
                    out[i] = shard_result(session.run_pinned(batch[i]))

            return run

        _in_parallel(session.runtime, [job(ix) for ix in groups.values()])
        return out


# -- coordinator steps --------------------------------------------------------------


def run_step(
    runtime: "Runtime", version: "Version", step: txn.Step, pinned: dict[str, Backend] | None = None
) -> list[txn.Reply]:
    """Execute a coordinator step; every statement's error is returned, not raised."""
    replies: list = [None] * len(step.stmts)
    groups: dict[tuple[str, bool], list[int]] = {}
    for i, st in enumerate(step.stmts):
        groups.setdefault((st.datasource, st.branch), []).append(i)

    def job(ds: str, branch: bool, indexes: list[int]) -> Callable[[], None]:
        def run() -> None:
            pool = None
            if branch:
                backend = (pinned or {}).get(ds)
                if backend is None:
                    for i in indexes:
                        replies[i] = txn.Reply(error=err.error(err.InternalError, err.ER_UNKNOWN_ERROR, f"no connection pinned for {ds}"))
                    return
            else:
                pool = version.pools.get(ds)
                try:
                    if pool is None:
                        raise err.error(err.InternalError, err.ER_UNKNOWN_ERROR, f"datasource {ds!r} is not in the config")
                    backend = pool.acquire()
                except err.Error as e:
                    for i in indexes:
                        replies[i] = txn.Reply(error=e)
                    return
            try:
                for i in indexes:
                    try:
                        res = backend.query(step.stmts[i].sql)
                        replies[i] = txn.Reply(rows=res.rows or (), affected=res.affected_rows or 0)
                    except err.Error as e:
                        replies[i] = txn.Reply(error=e)
            finally:
                if pool is not None:
                    pool.release(backend)

        return run

    _in_parallel(runtime, [job(ds, branch, ix) for (ds, branch), ix in groups.items()])
    return replies


def drive(
    runtime: "Runtime",
    version: "Version",
    gen: Generator,
    pinned: dict[str, Backend] | None = None,
    on_step: Callable[[txn.Step], None] | None = None,
):
    """Run a coordinator generator to its end and return its value (its errors propagate)."""
    try:
        step = next(gen)
        while True:
            if on_step is not None:
                on_step(step)
            step = gen.send(run_step(runtime, version, step, pinned))
    except StopIteration as stop:
        return stop.value


def drive_pooled(runtime: "Runtime", version: "Version", gen: Generator):
    return drive(runtime, version, gen)
