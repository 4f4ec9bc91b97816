"""The sans-IO transaction coordinator: which statements it asks for, and what it decides.

Each test plays the servers' side by answering the coordinator's steps, so
every failure point (between prepare and decision, during commit, ...) is
reachable deterministically. Real-server behaviour is covered by the
integration tests.
"""
import pytest

from mdriver import err, txn
from mdriver.txn import OK, DecisionLog, Phase, Reply, Transaction

LOG = DecisionLog("ds0", "app")


def lost(ds="ds1"):
    return err.error(err.BackendError, err.CR_SERVER_LOST, f"datasource {ds} (127.0.0.1:1): Lost connection")


def drive(gen, answer=None):
    """Run a coordinator generator; ``answer(step, stmt)`` -> Reply (default OK). Returns (result, steps)."""
    steps = []
    try:
        step = next(gen)
        while True:
            steps.append(step)
            replies = [answer(step, s) if answer else OK for s in step.stmts]
            step = gen.send(replies)
    except StopIteration as stop:
        return stop.value, steps


def sqls(steps):
    return [(s.phase.value, st.datasource, st.sql.split(" '")[0] if st.sql.startswith("XA") else st.sql.split(" (")[0], st.branch)
            for s in steps for st in s.stmts]


def make(mode="xa", written=("ds0", "ds1"), read=()):
    t = Transaction(mode, LOG, gtrid="mdrv.00000001.1.ab")
    for ds in list(written) + list(read):
        assert t.start_sql(ds) is not None
        t.joined(ds)
        assert t.start_sql(ds) is None
    for ds in written:
        t.mark_written(ds)
    return t


def test_start_statements():
    t = Transaction("xa", LOG, gtrid="mdrv.00000001.1.ab")
    assert t.start_sql("ds0") == "XA START 'mdrv.00000001.1.ab','ds0'"
    assert Transaction("best_effort", LOG).start_sql("ds0") == "START TRANSACTION"
    odd = Transaction("xa", LOG, gtrid="mdrv.00000001.1.ab").start_sql("it's")
    assert "'it's'" not in odd and odd.startswith("XA START 'mdrv.00000001.1.ab',")


def test_single_written_branch_commits_one_phase_without_log():
    t = make(written=("ds1",), read=("ds0",))
    outcome, steps = drive(t.commit())
    assert [s.phase for s in steps] == [Phase.END, Phase.ONE_PHASE]
    assert all("ONE PHASE" in st.sql for st in steps[1].stmts)
    assert steps[1].stmts[-1].datasource == "ds1"  # the writer goes last
    assert not outcome.two_phase and sorted(outcome.committed) == ["ds0", "ds1"]


def test_two_writers_use_two_phase_commit_with_decision_log():
    t = make(written=("ds0", "ds1"), read=("ds2",))
    outcome, steps = drive(t.commit())
    assert [s.phase for s in steps] == [Phase.END, Phase.PREPARE, Phase.DECIDE, Phase.COMMIT, Phase.FORGET]
    prep = [st.sql for st in steps[1].stmts]
    assert prep[:2] == ["XA PREPARE 'mdrv.00000001.1.ab','ds0'", "XA PREPARE 'mdrv.00000001.1.ab','ds1'"]
    assert prep[2].endswith("ONE PHASE")  # the read-only branch just finishes
    decide = steps[2].stmts[0]
    assert decide.datasource == "ds0" and not decide.branch
    assert decide.sql.startswith("INSERT INTO `app`.`mdriver_xa_log`") and "'commit', 'ds0,ds1'" in decide.sql
    assert [st.sql for st in steps[3].stmts] == ["XA COMMIT 'mdrv.00000001.1.ab','ds0'", "XA COMMIT 'mdrv.00000001.1.ab','ds1'"]
    assert steps[4].stmts[0].sql.startswith("DELETE FROM `app`.`mdriver_xa_log`")
    assert outcome.two_phase and outcome.committed == ["ds0", "ds1"] and not outcome.pending
    assert not t.discard


def test_prepare_failure_rolls_back_prepared_branches():
    t = make()

    def answer(step, st):
        if step.phase is Phase.PREPARE and st.datasource == "ds1":
            return Reply(error=lost())
        return OK

    with pytest.raises(err.OperationalError, match="commit failed on datasource ds1"):
        drive(t.commit(), answer)
    assert t.discard == {"ds1"}


def test_prepare_failure_steps():
    t = make()
    seen = []

    def answer(step, st):
        seen.append((step.phase, st.datasource, st.sql.split(" ")[1]))
        if step.phase is Phase.PREPARE and st.datasource == "ds1":
            return Reply(error=err.from_backend(1614, "XA_RBDEADLOCK: Transaction branch was rolled back: deadlock was detected"))
        return OK

    with pytest.raises(err.OperationalError, match="deadlock"):
        drive(t.commit(), answer)
    assert (Phase.ROLLBACK, "ds0", "ROLLBACK") in seen
    assert not any(p is Phase.DECIDE for p, _, _ in seen)


def test_commit_failure_after_decision_is_reported_committed_and_pending():
    t = make()

    def answer(step, st):
        if step.phase is Phase.COMMIT and st.datasource == "ds1":
            return Reply(error=lost())
        return OK

    outcome, steps = drive(t.commit(), answer)
    assert outcome.committed == ["ds0"] and outcome.pending == ["ds1"]
    assert Phase.FORGET not in [s.phase for s in steps]  # recovery needs the decision
    assert t.discard == {"ds1"}


def test_decision_lost_is_outcome_unknown_and_keeps_branches_prepared():
    t = make()

    def answer(step, st):
        return Reply(error=lost("ds0")) if step.phase is Phase.DECIDE else OK

    with pytest.raises(err.OperationalError, match="commit outcome unknown") as info:
        drive(t.commit(), answer)
    assert info.value.args[0] == err.CR_SERVER_LOST
    assert t.discard == {"ds0", "ds1"}


def test_decision_duplicate_means_recovery_aborted_us():
    t = make()
    phases = []

    def answer(step, st):
        phases.append(step.phase)
        if step.phase is Phase.DECIDE:
            return Reply(error=err.from_backend(1062, "Duplicate entry"))
        return OK

    with pytest.raises(err.OperationalError, match="recovery decided to abort"):
        drive(t.commit(), answer)
    assert phases[-1] is Phase.ROLLBACK and Phase.COMMIT not in phases


def test_end_failure_rolls_back_the_rest():
    t = make()

    def answer(step, st):
        if step.phase is Phase.END and st.datasource == "ds0":
            return Reply(error=lost("ds0"))
        return OK

    with pytest.raises(err.OperationalError, match="ds0"):
        _, steps = drive(t.commit(), answer)
    assert t.discard == {"ds0"}


def test_rollback_ends_then_rolls_back_and_ignores_unknown_xid():
    t = make()

    def answer(step, st):
        if step.phase is Phase.ROLLBACK and st.datasource == "ds1":
            return Reply(error=err.from_backend(1397, "XAER_NOTA: Unknown XID"))
        return OK

    _, steps = drive(t.rollback(), answer)
    assert [s.phase for s in steps] == [Phase.END, Phase.ROLLBACK]
    assert not t.discard


def test_single_mode_refuses_second_written_datasource():
    t = make(mode="single", written=("ds0",))
    t.check_write(["ds0"])
    with pytest.raises(err.NotSupportedError, match="transaction_mode single") as info:
        t.check_write(["ds1"])
    assert info.value.args[0] == err.ER_NOT_SUPPORTED_YET
    with pytest.raises(err.NotSupportedError):
        Transaction("single", LOG).check_write(["ds0", "ds1"])


def test_best_effort_partial_commit_is_reported():
    t = make(mode="best_effort")

    def answer(step, st):
        return Reply(error=lost("ds1")) if st.datasource == "ds1" and st.sql == "COMMIT" else OK

    with pytest.raises(err.OperationalError, match="partially committed.*committed on ds0.*failed on ds1"):
        drive(t.commit(), answer)


def test_best_effort_commits_each_branch():
    t = make(mode="best_effort", written=("ds0",), read=("ds1",))
    outcome, steps = drive(t.commit())
    assert [st.sql for s in steps for st in s.stmts] == ["COMMIT", "COMMIT"]
    assert steps[-1].stmts[0].datasource == "ds0"  # the written branch last
    assert outcome.committed == ["ds1", "ds0"]


def test_empty_transaction_does_nothing():
    _, steps = drive(Transaction("xa", LOG).commit())
    assert steps == []


# -- recovery ---------------------------------------------------------------------

def xa_row(gtrid: str, bqual: str):
    data = (gtrid + bqual).encode()
    return (1, len(gtrid), len(bqual), data)


def test_parse_xa_recover():
    rows = [xa_row("mdrv.1.2.3", "ds0"), (2, 1, 1, b"ab")]
    assert txn.parse_xa_recover(rows) == [txn.Xid("mdrv.1.2.3", "ds0")]


def test_recover_commits_decided_and_aborts_undecided():
    scope = LOG.scope
    old = f"mdrv.{scope}.{int(1000 * 1000):x}.aa"
    undecided = f"mdrv.{scope}.{int(1000 * 1000):x}.bb"
    young = f"mdrv.{scope}.{int(1999 * 1000):x}.cc"
    foreign = "mdrv.ffffffff.1.dd"
    executed = []

    def answer(step, st):
        executed.append((step.phase, st.datasource, st.sql))
        if step.phase is Phase.SCAN:
            rows = {"ds0": [xa_row(old, "ds0"), xa_row(undecided, "ds0")], "ds1": [xa_row(old, "ds1"), xa_row(young, "ds1"), xa_row(foreign, "ds1")]}
            return Reply(rows=tuple(rows[st.datasource]))
        if step.phase is Phase.LOOKUP:
            rows = ((old, "commit"),) if "INSERT" not in str(executed) else ((old, "commit"), (undecided, "abort"))
            return Reply(rows=rows)
        return OK

    report, steps = drive(txn.recover(["ds0", "ds1"], LOG, grace=30, now=2000.0), answer)
    assert sorted(report.committed) == [("ds0", old), ("ds1", old)]
    assert report.rolled_back == [("ds0", undecided)]
    assert ("ds1", young) in report.skipped
    resolve = [sql for phase, _, sql in executed if phase is Phase.RESOLVE]
    assert not any("ffffffff" in s for s in resolve)
    presume = [sql for phase, _, sql in executed if phase is Phase.PRESUME_ABORT]
    assert len(presume) == 1 and undecided in presume[0] and old not in presume[0]
    assert executed[-1][0] is Phase.CLEANUP


def test_recover_keeps_log_when_a_datasource_is_unreachable():
    def answer(step, st):
        if step.phase is Phase.SCAN and st.datasource == "ds1":
            return Reply(error=lost())
        return OK

    report, steps = drive(txn.recover(["ds0", "ds1"], LOG, grace=0), answer)
    assert report.errors and "ds1" in report.errors[0]
    assert Phase.CLEANUP not in [s.phase for s in steps]


def test_recover_unknown_xid_is_skipped():
    g = f"mdrv.{LOG.scope}.1.aa"

    def answer(step, st):
        if step.phase is Phase.SCAN:
            return Reply(rows=(xa_row(g, "ds0"),) if st.datasource == "ds0" else ())
        if step.phase is Phase.LOOKUP:
            return Reply(rows=((g, "abort"),))
        if step.phase is Phase.RESOLVE:
            return Reply(error=err.from_backend(1397, "XAER_NOTA: Unknown XID"))
        return OK

    report, _ = drive(txn.recover(["ds0", "ds1"], LOG, grace=0, now=10.0), answer)
    assert report.skipped == [("ds0", g)] and not report.rolled_back
