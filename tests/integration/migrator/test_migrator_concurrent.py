"""Copy and stream under concurrent writes: the shards end equal to the source, row by row."""
import json

from migrator_harness import Workload


def test_concurrent_writes_during_copy_and_stream_converge(harness):
    harness.fill_source(6000)
    plan = harness.cli("plan", harness.logical)
    assert "rows:    6,000" in plan.stdout and "target:  ds0" in plan.stdout and "target:  ds1" in plan.stdout

    workload = Workload(harness, rate=300).start()
    # Small chunks and a small lag budget: many copy cycles, each catching up with the workload.
    proc = harness.start("--chunk-rows", "400", "--max-lag", "1")
    harness.wait(lambda: harness.phase() == "streaming", 90,
                 "the streaming phase", proc)
    harness.wait(lambda: workload.result.ops > 600, 30, "more writes while streaming", proc)
    result = workload.stop()
    assert not result.errors
    harness.caught_up(proc)

    verify = harness.cli("verify", harness.logical, "--json")
    report = json.loads(verify.stdout)
    assert report["ok"] and report["differences"] == [] and report["mode"] == "held"
    assert report["source_rows"] == report["shard_rows"] > 5000

    check = harness.compare()
    assert check["bad"] == 0, check

    status = json.loads(harness.cli("status", harness.logical, "--json").stdout)
    assert status["phase"] == "streaming" and status["running"] and status["copy_done"]
    assert status["last_verify"]["ok"] is True
    assert harness.stop(proc) == 0


def test_copy_pauses_while_the_source_is_over_its_load_limit(harness):
    harness.fill_source(2000)
    harness.cli("plan", harness.logical)
    # Threads_running is at least 1 (the statement asking): a limit of 0 keeps the copy paused.
    proc = harness.start("--max-threads-running", "0", "--chunk-rows", "500")
    status = harness.wait(lambda: (lambda s: s if s.get("throttled") else None)(json.loads(
        harness.cli("status", harness.logical, "--json").stdout)), 30, "the copy to be throttled", proc)
    assert "Threads_running" in status["throttled"] and status["phase"] == "copying"
    assert status["rows_copied"] == 0
    assert "[throttled" not in status  # the text form carries it; the JSON has its own field
    text = harness.cli("status", harness.logical).stdout
    assert "throttled:    source Threads_running=" in text
    assert harness.stop(proc) == 0
    # Without the limit the same migration resumes and completes.
    proc = harness.start()
    harness.caught_up(proc)
    assert harness.compare()["bad"] == 0
    assert harness.stop(proc) == 0


def test_daemon_mode_and_stop(harness):
    harness.fill_source(500)
    harness.cli("plan", harness.logical)
    started = harness.cli("start", harness.logical, "--daemon", "--log-file", "daemon.log", "--pid-file", "daemon.pid")
    assert started.stdout.startswith("started: pid ")
    pid = int(started.stdout.split()[2].rstrip(","))
    assert int((harness.tmp / "daemon.pid").read_text()) == pid
    harness.caught_up()
    status = json.loads(harness.cli("status", harness.logical, "--json").stdout)
    assert status["running"] and status["pid"] == pid and status["phase"] == "streaming"
    assert "stopped the migrator" in harness.cli("stop", harness.logical).stdout
    harness.wait(lambda: not (harness.tmp / "daemon.pid").exists(), 10, "the pid file to go")
    status = json.loads(harness.cli("status", harness.logical, "--json").stdout)
    assert not status["running"] and status["lag_seconds"] is None
    assert "copy of app.user_relation finished" in (harness.tmp / "daemon.log").read_text()
