"""Deterministic crash points for the kill -9 tests.

``MDRIVER_MIGRATE_CRASH_AT=point:n`` makes the process SIGKILL itself the n-th
time it reaches ``point`` (n defaults to 1), exactly as ``kill -9`` would,
so a test can stop the migrator mid-copy, mid-batch or mid-cutover at a
chosen place. The CLI builds one :class:`Faults` from the environment and
passes it down; the default injects nothing.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Mapping

ENV = "MDRIVER_MIGRATE_CRASH_AT"


class Faults:
    def __init__(self, point: str | None = None, count: int = 1):
        self.point = point
        self.count = count
        self._hits = 0
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Faults":
        spec = environ.get(ENV, "")
        if not spec:
            return cls()
        name, _, count = spec.partition(":")
        return cls(name, int(count) if count.isdigit() else 1)

    def crash_point(self, name: str) -> None:
        """Die here with SIGKILL if this is the chosen point and hit."""
        if self.point != name:
            return
        with self._lock:
            self._hits += 1
            hit = self._hits
        if hit >= self.count:
            os.kill(os.getpid(), signal.SIGKILL)


NO_FAULTS = Faults()
