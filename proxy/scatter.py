"""Running a batch of physical statements for the router's merge: datasources in parallel.

Outside a transaction a datasource gets up to ``SCATTER_PARALLELISM``
connections from its pool for one batch; inside a transaction the batch runs
on the session's pinned branch connection, one statement after another.
Results are decoded to Python values, the only place rows are decoded.
"""
from __future__ import annotations

import asyncio

from mdriver import err
from mdriver.router.types import ShardQuery, ShardResult
from mdriver.wire.framing import frame
from proxy.backend import Collect, Swallow
from proxy.results import shard_result

SCATTER_PARALLELISM = 4  # connections per datasource one scatter statement may use


async def run_batch(ex, batch: list[ShardQuery]) -> list[ShardResult]:
    s = ex.session
    writes = {q.datasource for q in batch if q.write}
    if writes and s.txn is not None:
        s.txn.check_write(writes)
    results: list = [None] * len(batch)
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(batch):
        groups.setdefault(q.datasource, []).append(i)
    failures: list[BaseException] = []

    async def worker(ds: str, todo: list[int]) -> None:
        try:
            conn = await ex.conn_for(ds)
            while todo:
                i = todo.pop()
                results[i] = await collect(ex, conn, batch[i])
        except BaseException as e:  # noqa: BLE001 - collected and re-raised below, after every worker stopped
            failures.append(e)

    async def pipelined(ds: str, idxs: list[int]) -> None:
        try:
            conn = await ex.conn_for(ds)
            for i, r in zip(idxs, await collect_many(ex, conn, [batch[i] for i in idxs])):
                results[i] = r
        except BaseException as e:  # noqa: BLE001 - collected and re-raised below
            failures.append(e)

    jobs = []
    for ds, idxs in groups.items():
        one_conn = s.txn is not None or ds in s.pinned
        if one_conn and len(idxs) > 1 and can_pipeline([batch[i] for i in idxs]):
            jobs.append(pipelined(ds, idxs))
            continue
        todo = list(reversed(idxs))
        n = 1 if one_conn else min(len(idxs), SCATTER_PARALLELISM)
        jobs.extend(worker(ds, todo) for _ in range(n))
    if len(jobs) == 1:
        await jobs[0]
    else:
        await asyncio.gather(*jobs)
    if failures:
        raise failures[0]
    if s.txn is not None:
        for ds in writes:
            s.txn.mark_written(ds)
    return results


def can_pipeline(queries: list[ShardQuery]) -> bool:
    """Reads that name their database: several can go out in one write on one connection."""
    return all(not q.write and (not q.database or f"`{q.database}`." in q.sql) for q in queries)


async def collect_many(ex, conn, queries: list[ShardQuery]) -> list[ShardResult]:
    """Run reads back to back on one connection (one round trip); responses arrive in order."""
    first = queries[0]
    pre = ex.preludes(conn, first)
    handlers = [Swallow(conn.capabilities) for _ in pre]
    finals = [Collect(conn.capabilities) for _ in queries]
    codec = ex.session.codec
    wire = b"".join(frame(p, 0) for p in pre) + b"".join(
        frame(b"\x03" + q.sql.encode(codec, "surrogateescape"), 0) for q in queries)
    try:
        await conn.send(wire, handlers + finals)
    except err.BackendError:
        ex.backend_failed(first.datasource, conn)
        raise
    if handlers:
        ex.preludes_done(conn, first, handlers)
    return [shard_result(f.result.raise_error(), codec) for f in finals]


async def collect(ex, conn, q: ShardQuery) -> ShardResult:
    """Run one physical statement on ``conn`` (preludes first) and decode its result."""
    pre = ex.preludes(conn, q)
    if pre and q.write:
        await ex.run_preludes(conn, q, pre)
        pre = []
    handlers = [Swallow(conn.capabilities) for _ in pre]
    final = Collect(conn.capabilities)
    wire = b"".join(frame(p, 0) for p in pre) + frame(b"\x03" + q.sql.encode(ex.session.codec, "surrogateescape"), 0)
    try:
        await conn.send(wire, handlers + [final])
    except err.BackendError:
        ex.backend_failed(q.datasource, conn)
        raise
    if handlers:
        ex.preludes_done(conn, q, handlers)
    return shard_result(final.result.raise_error(), ex.session.codec)
