"""Snowflake and segment id generators, driven by an explicit clock and block source."""
import threading

import pytest

from mdriver import err, ids


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_snowflake_layout_roundtrip():
    clock = Clock(1_700_000_000.123)
    gen = ids.Snowflake(worker_id=37, clock=clock)
    a, b = gen.take(2)
    assert b == a + 1
    ms, worker, seq = ids.decode_snowflake(a)
    assert (ms, worker, seq) == (1_700_000_000_123, 37, 0)
    assert 0 < a < 2**63


def test_snowflake_increases_across_milliseconds_and_workers_differ():
    clock = Clock(1_700_000_000.0)
    g1, g2 = ids.Snowflake(1, clock=clock), ids.Snowflake(2, clock=clock)
    first = g1.take(3)
    clock.t += 0.001
    second = g1.take(1)[0]
    assert second > first[-1]
    assert set(first).isdisjoint(g2.take(3))


def test_snowflake_sequence_overflow_borrows_next_millisecond():
    clock = Clock(1_700_000_000.0)
    gen = ids.Snowflake(5, clock=clock)
    got = gen.take(ids.MAX_SEQUENCE + 3)
    assert len(set(got)) == len(got) and got == sorted(got)
    ms0 = ids.decode_snowflake(got[0])[0]
    assert ids.decode_snowflake(got[-1])[0] == ms0 + 1


def test_snowflake_small_clock_step_back_keeps_increasing():
    clock = Clock(1_700_000_000.5)
    gen = ids.Snowflake(5, clock=clock)
    a = gen.take(1)[0]
    clock.t -= 1.0
    b = gen.take(1)[0]
    assert b > a


def test_snowflake_large_clock_step_back_is_refused():
    clock = Clock(1_700_000_000.5)
    gen = ids.Snowflake(5, clock=clock, max_backwards_ms=2000)
    gen.take(1)
    clock.t -= 10
    with pytest.raises(err.OperationalError, match="clock moved backwards"):
        gen.take(1)


def test_snowflake_worker_id_range():
    with pytest.raises(ValueError):
        ids.Snowflake(1024)


def test_snowflake_threads_unique():
    gen = ids.Snowflake(9)
    out: list[int] = []
    lock = threading.Lock()

    def work():
        got = gen.take(2000)
        with lock:
            out.extend(got)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == len(set(out)) == 8000


def test_segment_takes_blocks_and_spans_them():
    ends = iter([11, 21, 31])
    calls = []

    def fetch(name, step):
        calls.append((name, step))
        return next(ends)

    seg = ids.Segment("app.t", 10, fetch)
    assert seg.take(3) == [1, 2, 3]
    assert seg.take(9) == [4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert calls == [("app.t", 10), ("app.t", 10)]
    assert seg.take(1) == [13]


def test_segment_fetch_error_propagates_and_retries_next_time():
    state = {"fail": True}

    def fetch(name, step):
        if state["fail"]:
            raise err.error(err.BackendError, err.CR_CONNECTION_ERROR, "datasource ds0 (h:1): down")
        return 101

    seg = ids.Segment("s", 100, fetch)
    with pytest.raises(err.BackendError, match="ds0"):
        seg.take(1)
    state["fail"] = False
    assert seg.take(2) == [1, 2]
