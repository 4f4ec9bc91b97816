"""Drive a plan's generator with a backend: the only place where I/O meets a plan.

``backend.run(batch: list[ShardQuery]) -> list[ShardResult]`` (a coroutine
for :func:`run_async`) must return one result per query, in order, or raise
an ``mdriver.err`` error; the plan is then closed and the error propagates.
"""
from __future__ import annotations

from mdriver import err
from mdriver.router.plan import Plan
from mdriver.router.types import Result


def _check(batch: list, results: list) -> None:
    if len(results) != len(batch):
        raise err.error(err.InterfaceError, err.ER_UNKNOWN_ERROR,
                        f"backend returned {len(results)} results for {len(batch)} statements")


def run_sync(plan: Plan, backend) -> Result:
    gen = plan.execute()
    try:
        batch = next(gen)
        while True:
            results = backend.run(batch)
            _check(batch, results)
            batch = gen.send(results)
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()


async def run_async(plan: Plan, backend) -> Result:
    gen = plan.execute()
    try:
        batch = next(gen)
        while True:
            results = await backend.run(batch)
            _check(batch, results)
            batch = gen.send(results)
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()
