"""Distributed ids for sharded tables: ``snowflake`` and ``segment``.

A sharded table cannot use AUTO_INCREMENT: 1024 physical tables would hand
out the same numbers. ``snowflake`` needs no round trip (time, worker id,
sequence packed in 63 bits); ``segment`` takes blocks of ``step`` ids from a
sequence table on the schema's home datasource, so ids stay small and dense.

Both are sans-IO apart from one injected callable: the segment generator is
given ``fetch_block(name, step) -> end`` by the driver (or the proxy).
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from mdriver import err

# Snowflake layout: 41 bits of milliseconds since EPOCH_MS, 10 bits worker, 12 bits sequence.
EPOCH_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
WORKER_BITS = 10
SEQUENCE_BITS = 12
MAX_WORKER = (1 << WORKER_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
MAX_TIMESTAMP = (1 << 41) - 1

SEQUENCE_TABLE = "mdriver_sequence"


class Snowflake:
    """Ids ordered by time; unique as long as every process has its own worker id.

    If the clock steps back a little, ids keep increasing from the last
    timestamp used instead of repeating; a step back larger than
    ``max_backwards_ms`` is refused, because a restart in that state could
    repeat ids handed out before.
    """

    def __init__(
        self,
        worker_id: int,
        clock: Callable[[], float] = time.time,
        epoch_ms: int = EPOCH_MS,
        max_backwards_ms: int = 5000,
    ):
        if not 0 <= worker_id <= MAX_WORKER:
            raise ValueError(f"snowflake worker id must be in 0-{MAX_WORKER}, got {worker_id}")
        self.worker_id = worker_id
        self._clock = clock
        self._epoch_ms = epoch_ms
        self._max_backwards_ms = max_backwards_ms
        self._last = -1
        self._seq = 0
        self._lock = threading.Lock()

    def _next(self) -> int:
        now = int(self._clock() * 1000) - self._epoch_ms
        if now > self._last:
            self._last, self._seq = now, 0
        else:
            if self._last - now > self._max_backwards_ms:
                raise err.error(
                    err.OperationalError,
                    err.ER_UNKNOWN_ERROR,
                    f"snowflake id generator (worker {self.worker_id}) is {self._last - now} ms ahead of the clock: "
                    "the system clock moved backwards; refusing to generate ids that could repeat",
                )
            self._seq += 1
            if self._seq > MAX_SEQUENCE:  # more than 4096 ids in one millisecond: borrow the next one
                self._last += 1
                self._seq = 0
        if self._last > MAX_TIMESTAMP:
            raise err.error(err.OperationalError, err.ER_UNKNOWN_ERROR, "snowflake timestamp overflow (epoch too old)")
        return (self._last << (WORKER_BITS + SEQUENCE_BITS)) | (self.worker_id << SEQUENCE_BITS) | self._seq

    def take(self, n: int = 1) -> list[int]:
        with self._lock:
            return [self._next() for _ in range(n)]


def decode_snowflake(value: int, epoch_ms: int = EPOCH_MS) -> tuple[int, int, int]:
    """(unix milliseconds, worker id, sequence): for operators reading an id."""
    return (
        (value >> (WORKER_BITS + SEQUENCE_BITS)) + epoch_ms,
        (value >> SEQUENCE_BITS) & MAX_WORKER,
        value & MAX_SEQUENCE,
    )


def sequence_ddl(database: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS `{database}`.`{SEQUENCE_TABLE}` ("
        " name VARCHAR(191) NOT NULL PRIMARY KEY,"
        " next_id BIGINT UNSIGNED NOT NULL"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    )


def block_update_sql(database: str) -> str:
    """Reserve a block atomically; LAST_INSERT_ID(expr) returns the new end in the OK packet."""
    return f"UPDATE `{database}`.`{SEQUENCE_TABLE}` SET next_id = LAST_INSERT_ID(next_id + %s) WHERE name = %s"


def block_seed_sql(database: str) -> str:
    return f"INSERT IGNORE INTO `{database}`.`{SEQUENCE_TABLE}` (name, next_id) VALUES (%s, 1)"


class Segment:
    """Hands out ids from blocks ``[end - step, end)`` reserved in the sequence table.

    ``fetch_block(name, step)`` reserves the next block and returns its
    (exclusive) end; it is the only I/O and is called with the lock held, so
    concurrent callers wait for one refill instead of wasting blocks.
    """

    def __init__(self, name: str, step: int, fetch_block: Callable[[str, int], int]):
        if step <= 0:
            raise ValueError("segment step must be positive")
        self.name = name
        self.step = step
        self._fetch = fetch_block
        self._next = 0
        self._end = 0
        self._lock = threading.Lock()

    def take(self, n: int = 1) -> list[int]:
        out: list[int] = []
        with self._lock:
            while len(out) < n:
                if self._next >= self._end:
                    end = self._fetch(self.name, self.step)
                    self._next, self._end = end - self.step, end
                k = min(n - len(out), self._end - self._next)
                out.extend(range(self._next, self._next + k))
                self._next += k
        return out
