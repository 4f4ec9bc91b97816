"""kill -9 at chosen points (mid-copy, mid-stream, mid-batch, between checkpoint and next batch,
during cutover-writes and rollback-writes), resume, and lose, add or change no row."""
import signal

from migrator_harness import Workload, write_on_shards

# (crash point, what it interrupts). Points before "stream-read" are reached while copying.
COPY_AND_STREAM_POINTS = [
    ("copy-chunk:3", "mid-copy: one server's chunk is being written, the other may have committed it"),
    ("copy-after-commit:9", "mid-copy: between a chunk's checkpoint and the next chunk"),
    ("stream-read:25", "mid-stream: binlog events read but not applied"),
    ("apply-before-commit:3", "mid-batch: statements and checkpoint sent, not committed"),
    ("apply-between-servers:3", "mid-batch: one server committed the batch, the other not"),
    ("stream-batch-applied:4", "between a checkpoint and the next batch"),
]


def _crash(harness, point, what, *args):
    p = harness.start("--chunk-rows", "300", "--max-lag", "1", *args, crash_at=point)
    try:
        p.wait(90)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGKILL, f"{point} ({what}) was not reached:\n{harness.log_of(p)}"


def test_kill_9_anywhere_then_resume_loses_nothing(harness):
    harness.fill_source(6000)
    harness.cli("plan", harness.logical)
    workload = Workload(harness, rate=250).start()
    try:
        for point, what in COPY_AND_STREAM_POINTS:
            if point.startswith("stream-read"):
                # The copy must be over before the streaming crash points: let a clean run finish it.
                p = harness.start("--chunk-rows", "300")
                harness.wait(lambda: harness.phase() == "streaming", 90, "the streaming phase", p)
                harness.stop(p)
            _crash(harness, point, what)
            assert harness.state().active in ("forward", "none")
    finally:
        result = workload.stop()
    assert not result.errors and result.ops > 500

    p = harness.start()
    harness.caught_up(p)
    check = harness.compare()
    assert check["bad"] == 0, check
    assert harness.cli("verify", harness.logical).returncode == 0

    # Cutover with kills at each step; every rerun continues where the killed one stopped.
    harness.cli("cutover-reads", harness.logical, "--to", "shards")
    fence = ("--confirm-fence", "--fence-grace", "0.5")
    for point in ("cutover-fenced", "cutover-caught-up", "cutover-reverse-recorded"):
        died = harness.cli("cutover-writes", harness.logical, *fence, crash_at=point, check=False)
        assert died.returncode == -signal.SIGKILL, died.stderr
        assert harness.migration.writes == "fenced"
        if point != "cutover-reverse-recorded":
            harness.cli("rollback-writes", harness.logical, *fence)  # an operator may also back out instead
            assert harness.migration.writes == "source"
    harness.cli("cutover-writes", harness.logical, *fence)
    assert harness.migration.writes == "shards"
    harness.wait(lambda: harness.state().active == "reverse", 20, "reverse replication", p)

    write_on_shards(harness, first_id=5_000_000, count=300)
    died = harness.cli("rollback-writes", harness.logical, *fence, crash_at="rollback-forward-recorded", check=False)
    assert died.returncode == -signal.SIGKILL, died.stderr
    harness.cli("rollback-writes", harness.logical, *fence)
    assert harness.migration.writes == "source"
    harness.wait(lambda: harness.state().active == "forward", 20, "forward replication", p)
    harness.caught_up(p)
    check = harness.compare()
    assert check["bad"] == 0, check
    assert check["rows"] > 5000
    assert harness.stop(p) == 0
