"""When to slow down: the copy pauses while the source is busy or the shards lag.

Two signals, as in gh-ost: the source's ``Threads_running`` (load the copy
adds to) and replication lag (how far the shards trail the source). The copy
runs in cycles; a cycle ends when its lag budget is spent, so the binlog is
caught up before lag passes ``max_lag``. Load is sampled at most every
``interval`` seconds so checking costs nothing per chunk.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from migrator import db

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_lag: float = 10.0  # seconds the shards may trail the source while copying
    max_threads_running: int = 50  # source Threads_running above which the copy pauses
    interval: float = 0.5  # seconds between load samples
    max_pause: float = 60.0  # longest single pause before the copy proceeds anyway, logging loudly


class Throttler:
    def __init__(self, limits: Limits, source_conn: Any, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.limits = limits
        self.conn = source_conn
        self.clock = clock
        self.sleep = sleep
        self._sampled = -1e9
        self._threads_running = 0
        self.reason: str | None = None  # why we are throttled right now (for status)
        self.throttled_seconds = 0.0

    def threads_running(self) -> int:
        now = self.clock()
        if now - self._sampled >= self.limits.interval:
            row = db.query_one(self.conn, "SHOW GLOBAL STATUS LIKE 'Threads_running'")
            self._threads_running = int(row[1]) if row else 0
            self._sampled = now
        return self._threads_running

    def load_reason(self) -> str | None:
        running = self.threads_running()
        if running > self.limits.max_threads_running:
            return f"source Threads_running={running} > {self.limits.max_threads_running}"
        return None

    def wait_for_load(self, on_wait: Callable[[str], None] | None = None,
                      stopped: Callable[[], bool] = lambda: False) -> None:
        """Block while the source is over its load limit (bounded by ``max_pause``, or until ``stopped()``)."""
        started = self.clock()
        while not stopped():
            reason = self.load_reason()
            if reason is None:
                self.reason = None
                return
            if self.reason != reason:
                log.info("throttling the copy: %s", reason)
            self.reason = reason
            if on_wait is not None:
                on_wait(reason)
            if self.clock() - started >= self.limits.max_pause:
                log.warning("source stayed over its load limit for %.0f s (%s); copying one more chunk",
                            self.limits.max_pause, reason)
                return
            self.sleep(self.limits.interval)
            self.throttled_seconds += self.limits.interval

    def cycle_over(self, cycle_started: float) -> bool:
        """A copy cycle must end (and the binlog catch up) before lag could pass ``max_lag``.

        Lag while copying is at most the cycle's age plus the catch-up, so a
        cycle gets half of the budget.
        """
        return self.clock() - cycle_started >= self.limits.max_lag / 2
