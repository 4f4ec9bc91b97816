"""Migrator faults: ``kill -9`` at random points of the copy and the binlog stream, under
concurrent writes to the source, many times over; each run resumes from its checkpoints.
At the end every source row is in exactly one shard, in the right physical table, with the
same values: 0 lost, extra or wrong rows (checked row by row, independently of the
migrator's own verifier, which must agree).

Kill points are drawn at random: either a named crash point of the migrator
(``MDRIVER_MIGRATE_CRASH_AT=point:n``, the n-th time it is reached) or a plain
``SIGKILL`` from outside after a random delay. The helpers (harness, workload, row
check) are the migrator suite's.
"""
from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter

import pytest

from reliability_helpers import load_module

COPY_POINTS = ("copy-chunk", "copy-after-commit", "copy-handed-off")
STREAM_POINTS = ("stream-read", "apply-before-commit", "apply-between-servers", "stream-batch-applied")
POINT_TIMEOUT = 25.0  # a crash point not reached by then (e.g. the copy ended first): killed from outside


def harness_module():
    return load_module("tests/integration/migrator/migrator_harness.py", "migrator_harness")


@pytest.fixture
def harness(mariadb_cluster, tmp_path):
    h = harness_module().Harness(mariadb_cluster, tmp_path)
    h.cleanup()
    h.create_source()
    try:
        yield h
    finally:
        h.cleanup()


def kill_once(h, rnd: random.Random) -> tuple[str, str, str]:
    """Start the migrator and kill it at a random point; returns (how, where, phase)."""
    phase = h.phase() or "copying"
    copying = phase != "streaming"
    args = ("--chunk-rows", str(rnd.choice((150, 300, 500))), "--max-lag", "1", "--batch", str(rnd.choice((50, 500, 5000))))
    if rnd.random() < 0.5:
        if copying:
            point = f"{rnd.choice(COPY_POINTS + STREAM_POINTS[:1])}:{rnd.randrange(1, 7)}"
        else:
            point = f"{rnd.choice(STREAM_POINTS)}:{rnd.randrange(1, 12)}"
        p = h.start(*args, crash_at=point)
        try:
            p.wait(POINT_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return "outside (point not reached)", point, phase
        if p.returncode != -signal.SIGKILL:
            raise AssertionError(f"start exited {p.returncode} instead of dying at {point}:\n{h.log_of(p)}")
        return "crash point", point, phase
    delay = rnd.uniform(0.3, 2.0) if copying else rnd.uniform(0.3, 6.0)
    p = h.start(*args)
    time.sleep(delay)
    if p.poll() is not None:
        raise AssertionError(f"start exited {p.returncode} by itself before the kill:\n{h.log_of(p)}")
    p.kill()
    p.wait()
    return "outside", f"after {delay:.1f} s", phase


def kill_matrix(h, figures, rounds: int, per_round: int, rows: int, seed: int) -> None:
    """``rounds`` fresh migrations, each killed ``per_round`` times under writes, then resumed and checked."""
    mod = harness_module()
    rnd = random.Random(seed)
    kills: list[tuple[str, str, str]] = []
    checks, verifies, writes, errors = [], [], 0, []
    started = time.monotonic()
    for r in range(rounds):
        if r:
            h.cleanup()
            h.create_source()
        h.fill_source(rows, seed=seed + r)
        h.cli("plan", h.logical)
        workload = mod.Workload(h, rate=200, id_space=rows, seed=seed + r).start()
        try:
            for _ in range(per_round):
                kills.append(kill_once(h, rnd))
                state = h.state()
                assert state is None or state.active in ("forward", "none"), state
        finally:
            result = workload.stop()
        writes += result.ops
        errors += result.errors
        p = h.start()
        try:
            h.caught_up(p, timeout=180)
            checks.append(h.compare())
            verifies.append(h.cli("verify", h.logical, check=False))
        finally:
            assert h.stop(p) == 0, h.log_of(p)
    hows = Counter(k[0] for k in kills)
    where = Counter(k[1].split(":")[0] for k in kills if k[0] == "crash point")
    figures.add("migrator", "kill -9 iterations, then resume", len(kills))
    figures.add("migrator", "fresh migrations (rounds) the kills were spread over", rounds)
    figures.add("migrator", "kills while copying", sum(k[2] != "streaming" for k in kills))
    figures.add("migrator", "kills while streaming the binlog", sum(k[2] == "streaming" for k in kills))
    figures.add("migrator", "kills at a named crash point", hows["crash point"])
    figures.add("migrator", "kills from outside at a random time", hows["outside"] + hows["outside (point not reached)"])
    figures.add("migrator", "crash points hit", ", ".join(f"{k} {v}" for k, v in sorted(where.items())) or "none")
    figures.add("migrator", "concurrent writes to the source during the kills", writes)
    figures.add("migrator", "source rows compared row by row", sum(c["rows"] for c in checks))
    figures.add("migrator", "rows lost, extra, wrong or misplaced", sum(c["bad"] for c in checks))
    figures.add("migrator", "migrator verify after the kills", "ok" if all(v.returncode == 0 for v in verifies) else
                ", ".join(f"exit {v.returncode}" for v in verifies))
    figures.add("migrator", "time for all rounds", time.monotonic() - started, "s")
    assert not errors and writes > 0, errors
    for check in checks:
        assert check["bad"] == 0, (check, kills)
        assert check["rows"] >= rows // 2
    for verify in verifies:
        assert verify.returncode == 0, verify.stdout + verify.stderr


def test_migrator_kill_matrix_short(harness, figures):
    kill_matrix(harness, figures, rounds=1, per_round=3, rows=3000, seed=7)


@pytest.mark.slow
def test_migrator_kill_matrix_30_times(harness, figures):
    kill_matrix(harness, figures, rounds=3, per_round=10, rows=20000, seed=11)
