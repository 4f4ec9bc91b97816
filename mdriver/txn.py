"""Transactions across datasources, sans-IO: shared by the driver and the proxy.

A transaction has one *branch* per datasource it touched (a datasource is
one server, so several physical databases on it share one local
transaction). The coordinator never does I/O: :meth:`Transaction.commit`,
:meth:`Transaction.rollback` and :func:`recover` are generators that yield a
:class:`Step` (statements, each for a branch's pinned connection or for any
pooled connection of a datasource) and receive one :class:`Reply` per
statement. The sync driver runs steps with threads, the proxy with asyncio.

``transaction_mode``:

* ``xa``: every branch is an XA branch. With at most one written branch the
  commit is ``XA COMMIT ... ONE PHASE`` (no prepare, no log): effectively a
  local commit. Otherwise two-phase commit with presumed abort: prepare the
  written branches, INSERT a ``commit`` decision into the decision log on the
  schema's home datasource (its own autocommit transaction), then
  ``XA COMMIT`` each branch. Recovery finishes branches left prepared: commit
  if the log says commit, else first INSERT an ``abort`` decision and roll
  back. Coordinator and recovery race on the log's primary key, so exactly
  one decision exists per transaction even if recovery runs while the
  coordinator is alive.
* ``best_effort``: local ``START TRANSACTION`` per branch, committed one
  after another; a failure after some commits is reported as a partial commit.
* ``single``: local transactions; a write that would make a second
  datasource part of the transaction is refused.
"""
from __future__ import annotations

import enum
import logging
import os
import re
import time
import zlib
from dataclasses import dataclass, field
from typing import Generator, Iterable, Sequence

from mdriver import err

log = logging.getLogger(__name__)

LOG_TABLE = "mdriver_xa_log"
GTRID_PREFIX = "mdrv"

XAER_NOTA = 1397  # unknown XID: never existed, already resolved, or still attached to a live session
ER_DUP_ENTRY = 1062
CONNECTION_ERRNOS = frozenset((0, 2002, 2003, 2006, 2013, 2055))


class Phase(str, enum.Enum):
    """Names of the steps, so drivers, logs and fault tests agree."""

    END = "end"
    ONE_PHASE = "one_phase"
    PREPARE = "prepare"
    DECIDE = "decide"
    COMMIT = "commit"
    FORGET = "forget"
    ROLLBACK = "rollback"
    LOCAL_COMMIT = "local_commit"
    SETUP = "setup"
    SCAN = "scan"
    LOOKUP = "lookup"
    PRESUME_ABORT = "presume_abort"
    RESOLVE = "resolve"
    CLEANUP = "cleanup"


@dataclass(frozen=True)
class Stmt:
    """One statement. ``branch``: on the transaction's pinned connection to ``datasource``;
    otherwise on any pooled autocommit connection to it."""

    datasource: str
    sql: str
    branch: bool = True


@dataclass(frozen=True)
class Step:
    phase: Phase
    stmts: tuple[Stmt, ...]


@dataclass(frozen=True)
class Reply:
    """What running one Stmt gave: rows, or the error it raised."""

    rows: tuple = ()
    affected: int = 0
    error: BaseException | None = None


OK = Reply()


def is_connection_error(exc: BaseException | None) -> bool:
    """The server's answer is unknown (lost connection, timeout, unreachable)."""
    if exc is None:
        return False
    if isinstance(exc, err.BackendError):
        return True
    errno = getattr(exc, "errno", None)
    if errno is None and getattr(exc, "args", None) and isinstance(exc.args[0], int):
        errno = exc.args[0]
    return errno in CONNECTION_ERRNOS or isinstance(exc, OSError)


def errno_of(exc: BaseException | None) -> int | None:
    if exc is None:
        return None
    if isinstance(exc, err.MySQLError):
        return exc.errno
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


_SAFE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}\Z")


def _literal(text: str) -> str:
    return f"'{text}'" if _SAFE.match(text) else f"X'{text.encode('utf-8').hex()}'"


@dataclass(frozen=True)
class Xid:
    gtrid: str
    bqual: str

    def sql(self) -> str:
        return f"{_literal(self.gtrid)},{_literal(self.bqual)}"


def bqual_for(datasource: str) -> str:
    if _SAFE.match(datasource):
        return datasource
    return f"ds{zlib.crc32(datasource.encode('utf-8')):08x}"


def scope_tag(home_datasource: str, home_database: str) -> str:
    """Identifies one decision log, so recovery only touches transactions it can decide."""
    return f"{zlib.crc32(f'{home_datasource}/{home_database}'.encode('utf-8')):08x}"


def new_gtrid(scope: str, now: float | None = None, rand: bytes | None = None) -> str:
    """``mdrv.<scope>.<ms hex>.<random>``: the timestamp lets recovery leave young transactions alone."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{GTRID_PREFIX}.{scope}.{ms:x}.{(rand if rand is not None else os.urandom(8)).hex()}"


_GTRID = re.compile(rf"{GTRID_PREFIX}\.[0-9a-f]{{8}}\.[0-9a-f]{{1,16}}\.[0-9a-f]{{1,32}}\Z")


def gtrid_time(gtrid: str) -> float | None:
    parts = gtrid.split(".")
    if len(parts) != 4 or parts[0] != GTRID_PREFIX:
        return None
    try:
        return int(parts[2], 16) / 1000
    except ValueError:
        return None


@dataclass(frozen=True)
class DecisionLog:
    """Where the decisions live: a table in the schema's home database on its home datasource."""

    datasource: str
    database: str

    @property
    def table(self) -> str:
        return f"`{self.database}`.`{LOG_TABLE}`"

    @property
    def scope(self) -> str:
        return scope_tag(self.datasource, self.database)

    def ddl(self) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            " gtrid VARCHAR(64) CHARACTER SET ascii NOT NULL PRIMARY KEY,"
            " decision ENUM('commit','abort') NOT NULL,"
            " branches VARCHAR(2048) NOT NULL,"
            " created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),"
            " KEY (created_at)"
            ") ENGINE=InnoDB"
        )

    def stmt(self, sql: str) -> Stmt:
        return Stmt(self.datasource, sql, branch=False)


class TxnError(Exception):
    """Internal: carries the error a commit must raise."""


@dataclass
class Branch:
    datasource: str
    xid: Xid | None
    written: bool = False
    state: str = "active"  # active | idle | prepared | done


@dataclass
class Outcome:
    """How a commit ended, for logs and tests. ``pending``: branches recovery must finish."""

    two_phase: bool = False
    committed: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


class Transaction:
    """The coordinator state of one transaction of one session.

    Use: before a statement runs on datasource ``ds`` inside the transaction,
    call :meth:`start_sql` and, if it returns a statement, run it on the
    connection pinned for ``ds`` and then call :meth:`joined`. Before a write
    call :meth:`check_write`; after it, :meth:`mark_written`. Finish by
    driving :meth:`commit` or :meth:`rollback`. After either, connections of
    datasources in :attr:`discard` must be closed, not pooled: they may hold
    a prepared branch that recovery has to see detached.
    """

    def __init__(self, mode: str, decision_log: DecisionLog, gtrid: str | None = None):
        if mode not in ("xa", "best_effort", "single"):
            raise ValueError(f"unknown transaction mode {mode!r}")
        self.mode = mode
        self.log = decision_log
        self.gtrid = gtrid or new_gtrid(decision_log.scope)
        self.branches: dict[str, Branch] = {}
        self.discard: set[str] = set()
        self.finished = False

    def __repr__(self) -> str:
        return f"<Transaction {self.mode} {self.gtrid} branches={list(self.branches)}>"

    @property
    def written(self) -> list[str]:
        return [b.datasource for b in self.branches.values() if b.written]

    def start_sql(self, datasource: str) -> str | None:
        if datasource in self.branches:
            return None
        if self.mode == "xa":
            return f"XA START {Xid(self.gtrid, bqual_for(datasource)).sql()}"
        return "START TRANSACTION"

    def joined(self, datasource: str) -> None:
        xid = Xid(self.gtrid, bqual_for(datasource)) if self.mode == "xa" else None
        self.branches[datasource] = Branch(datasource, xid)

    def check_write(self, datasources: Iterable[str]) -> None:
        """In ``single`` mode, refuse a write that spans or adds a second written datasource."""
        if self.mode != "single":
            return
        targets = set(datasources) | set(self.written)
        if len(targets) > 1:
            raise err.error(
                err.NotSupportedError, err.ER_NOT_SUPPORTED_YET,
                f"transaction_mode single: this transaction would write to datasources {', '.join(sorted(targets))}; "
                "a transaction may write to one datasource only (use transaction_mode xa for cross-shard transactions)",
            )

    def mark_written(self, datasource: str) -> None:
        branch = self.branches.get(datasource)
        if branch is not None:
            branch.written = True

    # -- commit ------------------------------------------------------------------

    def commit(self) -> Generator[Step, list[Reply], Outcome]:
        """Drive to the end; raises a PEP 249 error if the transaction did not commit."""
        self.finished = True
        if not self.branches:
            return Outcome()
        if self.mode == "xa":
            return (yield from self._commit_xa())
        return (yield from self._commit_local())

    def _commit_local(self) -> Generator[Step, list[Reply], Outcome]:
        branches = list(self.branches.values())
        # Written branches last, so a failing read-only branch cannot follow a real commit.
        branches.sort(key=lambda b: b.written)
        outcome = Outcome()
        for branch in branches:
            (reply,) = yield Step(Phase.LOCAL_COMMIT, (Stmt(branch.datasource, "COMMIT"),))
            if reply.error is None:
                outcome.committed.append(branch.datasource)
                continue
            self.discard.add(branch.datasource)
            rest = [b.datasource for b in branches if b is not branch and b.datasource not in outcome.committed]
            if rest:
                yield Step(Phase.ROLLBACK, tuple(Stmt(ds, "ROLLBACK") for ds in rest))
            written_done = [ds for ds in outcome.committed if self.branches[ds].written]
            if written_done:
                raise err.error(
                    err.OperationalError, errno_of(reply.error) or err.ER_UNKNOWN_ERROR,
                    f"transaction partially committed ({self.mode}): committed on {', '.join(written_done)}; "
                    f"commit failed on {branch.datasource}: {_message(reply.error)}",
                )
            raise _commit_failed(branch.datasource, reply.error)
        return outcome

    def _commit_xa(self) -> Generator[Step, list[Reply], Outcome]:
        branches = list(self.branches.values())
        replies = yield Step(Phase.END, tuple(Stmt(b.datasource, f"XA END {b.xid.sql()}") for b in branches))
        failed = [(b, r.error) for b, r in zip(branches, replies) if r.error is not None]
        for b, r in zip(branches, replies):
            b.state = "idle" if r.error is None else "done"
        if failed:
            yield from self._rollback_idle()
            self.discard.update(b.datasource for b, _ in failed)
            raise _commit_failed(failed[0][0].datasource, failed[0][1])
        writers = [b for b in branches if b.written]
        readers = [b for b in branches if not b.written]
        if len(writers) <= 1:
            order = readers + writers
            replies = yield Step(Phase.ONE_PHASE, tuple(Stmt(b.datasource, f"XA COMMIT {b.xid.sql()} ONE PHASE") for b in order))
            outcome = Outcome()
            for b, r in zip(order, replies):
                b.state = "done"
                if r.error is None:
                    outcome.committed.append(b.datasource)
                else:
                    self.discard.add(b.datasource)
                    if b.written:
                        raise _commit_failed(b.datasource, r.error)
                    log.warning("read-only XA branch %s of %s did not commit: %s", b.datasource, self.gtrid, r.error)
            return outcome
        # Two-phase: prepare the writers; read-only branches just finish.
        stmts = [Stmt(b.datasource, f"XA PREPARE {b.xid.sql()}") for b in writers]
        stmts += [Stmt(b.datasource, f"XA COMMIT {b.xid.sql()} ONE PHASE") for b in readers]
        replies = yield Step(Phase.PREPARE, tuple(stmts))
        for b in readers:
            b.state = "done"
        prepare_failed = None
        for b, r in zip(writers, replies):
            if r.error is None:
                b.state = "prepared"
            else:
                b.state = "done"
                self.discard.add(b.datasource)  # maybe prepared after all: recovery presumes abort
                prepare_failed = prepare_failed or (b, r.error)
        if prepare_failed:
            yield from self._rollback_idle()
            raise _commit_failed(prepare_failed[0].datasource, prepare_failed[1])
        names = ",".join(b.datasource for b in writers)
        (reply,) = yield Step(
            Phase.DECIDE,
            (self.log.stmt(f"INSERT INTO {self.log.table} (gtrid, decision, branches) VALUES ('{self.gtrid}', 'commit', {_quote(names)})"),),
        )
        if reply.error is not None:
            if is_connection_error(reply.error):
                # The decision may or may not be durable: only recovery can tell.
                self.discard.update(b.datasource for b in writers)
                raise err.error(
                    err.OperationalError, err.CR_SERVER_LOST,
                    f"commit outcome unknown for transaction {self.gtrid}: the decision log on datasource "
                    f"{self.log.datasource} did not answer ({_message(reply.error)}); branches {names} stay prepared "
                    "until recovery resolves them",
                )
            yield from self._rollback_idle()
            if errno_of(reply.error) == ER_DUP_ENTRY:
                raise err.error(
                    err.OperationalError, err.ER_XAER_NOTA,
                    f"transaction {self.gtrid} was rolled back: recovery decided to abort it before it could commit",
                )
            raise _commit_failed(self.log.datasource, reply.error)
        replies = yield Step(Phase.COMMIT, tuple(Stmt(b.datasource, f"XA COMMIT {b.xid.sql()}") for b in writers))
        outcome = Outcome(two_phase=True)
        for b, r in zip(writers, replies):
            b.state = "done"
            if r.error is None:
                outcome.committed.append(b.datasource)
            else:
                # Committed by decision: recovery will finish this branch once the server is back.
                self.discard.add(b.datasource)
                outcome.pending.append(b.datasource)
                log.warning(
                    "transaction %s is committed but its branch on %s could not be committed now (%s); "
                    "recovery will commit it", self.gtrid, b.datasource, _message(r.error),
                )
        if not outcome.pending:
            (reply,) = yield Step(Phase.FORGET, (self.log.stmt(f"DELETE FROM {self.log.table} WHERE gtrid = '{self.gtrid}'"),))
            if reply.error is not None:
                log.info("could not delete decision of %s (recovery cleans it up later): %s", self.gtrid, reply.error)
        return outcome

    # -- rollback ----------------------------------------------------------------

    def rollback(self) -> Generator[Step, list[Reply], None]:
        """Roll back every branch; never raises for branches that are already gone."""
        self.finished = True
        if not self.branches:
            return
        if self.mode != "xa":
            branches = list(self.branches.values())
            replies = yield Step(Phase.ROLLBACK, tuple(Stmt(b.datasource, "ROLLBACK") for b in branches))
            self.discard.update(b.datasource for b, r in zip(branches, replies) if r.error is not None)
            return
        active = [b for b in self.branches.values() if b.state == "active"]
        if active:
            replies = yield Step(Phase.END, tuple(Stmt(b.datasource, f"XA END {b.xid.sql()}") for b in active))
            for b, r in zip(active, replies):
                if r.error is None:
                    b.state = "idle"
                elif is_connection_error(r.error):
                    b.state = "done"
                    self.discard.add(b.datasource)
                else:  # e.g. rollback-only after a deadlock: the branch is idle anyway
                    b.state = "idle"
        yield from self._rollback_idle()

    def _rollback_idle(self) -> Generator[Step, list[Reply], None]:
        targets = [b for b in self.branches.values() if b.state in ("idle", "prepared")]
        if not targets:
            return
        replies = yield Step(Phase.ROLLBACK, tuple(Stmt(b.datasource, f"XA ROLLBACK {b.xid.sql()}") for b in targets))
        for b, r in zip(targets, replies):
            b.state = "done"
            if r.error is not None and errno_of(r.error) != XAER_NOTA:
                self.discard.add(b.datasource)
                log.warning("XA ROLLBACK of %s on %s failed (recovery will roll it back): %s", self.gtrid, b.datasource, r.error)


def _message(exc: BaseException | None) -> str:
    if isinstance(exc, err.MySQLError):
        return exc.msg
    return str(exc)


def _commit_failed(datasource: str, exc: BaseException | None) -> err.Error:
    errno = errno_of(exc) or err.ER_UNKNOWN_ERROR
    cls = type(exc) if isinstance(exc, err.Error) else err.OperationalError
    if is_connection_error(exc):
        cls = err.OperationalError
    return err.error(cls, errno, f"transaction rolled back: commit failed on datasource {datasource}: {_message(exc)}")


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# -- recovery ----------------------------------------------------------------------


@dataclass
class RecoveryReport:
    committed: list[tuple[str, str]] = field(default_factory=list)  # (datasource, gtrid)
    rolled_back: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # attached to a live session, or too young
    errors: list[str] = field(default_factory=list)


def parse_xa_recover(rows: Sequence[tuple]) -> list[Xid]:
    """Rows of ``XA RECOVER`` (formatID, gtrid_length, bqual_length, data) -> Xids (format 1 only)."""
    out = []
    for row in rows:
        fmt, glen, blen, data = row[:4]
        if int(fmt) != 1:
            continue
        raw = data if isinstance(data, (bytes, bytearray)) else str(data).encode("utf-8", "surrogateescape")
        gtrid = raw[: int(glen)].decode("utf-8", "replace")
        bqual = raw[int(glen): int(glen) + int(blen)].decode("utf-8", "replace")
        out.append(Xid(gtrid, bqual))
    return out


def recover(
    datasources: Sequence[str],
    decision_log: DecisionLog,
    grace: float = 30.0,
    now: float | None = None,
    log_retention: float = 300.0,
    abort_retention: float = 86400.0,
) -> Generator[Step, list[Reply], RecoveryReport]:
    """Resolve this log's prepared branches older than ``grace`` seconds on every datasource.

    Decided ``commit`` -> XA COMMIT; no decision -> record ``abort`` (losing the
    race to a live coordinator is fine: its INSERT then fails and it rolls
    back) and XA ROLLBACK. Decision rows are deleted only after a scan that
    reached every datasource, so a branch on a server that is down is never
    orphaned.
    """
    now = time.time() if now is None else now
    report = RecoveryReport()
    prefix = f"{GTRID_PREFIX}.{decision_log.scope}."
    (reply,) = yield Step(Phase.SETUP, (decision_log.stmt(decision_log.ddl()),))
    if reply.error is not None:
        report.errors.append(f"cannot create the decision log on {decision_log.datasource}: {_message(reply.error)}")
    replies = yield Step(Phase.SCAN, tuple(Stmt(ds, "XA RECOVER", branch=False) for ds in datasources))
    pending: dict[str, list[tuple[str, Xid]]] = {}
    scan_complete = True
    for ds, reply in zip(datasources, replies):
        if reply.error is not None:
            scan_complete = False
            report.errors.append(f"{ds}: XA RECOVER failed: {_message(reply.error)}")
            continue
        for xid in parse_xa_recover(reply.rows):
            if not xid.gtrid.startswith(prefix) or not _GTRID.match(xid.gtrid):
                continue
            born = gtrid_time(xid.gtrid)
            if born is not None and now - born < grace:
                report.skipped.append((ds, xid.gtrid))
                continue
            pending.setdefault(xid.gtrid, []).append((ds, xid))
    if pending:
        decisions = yield from _lookup(decision_log, list(pending), report)
        if decisions is None:
            return report
        undecided = [g for g in pending if g not in decisions]
        if undecided:
            values = ", ".join(
                f"('{g}', 'abort', {_quote(','.join(ds for ds, _ in pending[g]))})" for g in undecided
            )
            (reply,) = yield Step(
                Phase.PRESUME_ABORT,
                (decision_log.stmt(f"INSERT IGNORE INTO {decision_log.table} (gtrid, decision, branches) VALUES {values}"),),
            )
            if reply.error is not None:
                report.errors.append(f"cannot record abort decisions: {_message(reply.error)}")
                return report
            decisions = yield from _lookup(decision_log, list(pending), report)
            if decisions is None:
                return report
        stmts, targets = [], []
        for gtrid, branches in pending.items():
            verb = "COMMIT" if decisions.get(gtrid) == "commit" else "ROLLBACK"
            for ds, xid in branches:
                stmts.append(Stmt(ds, f"XA {verb} {xid.sql()}", branch=False))
                targets.append((ds, gtrid, verb))
        replies = yield Step(Phase.RESOLVE, tuple(stmts))
        for (ds, gtrid, verb), reply in zip(targets, replies):
            if reply.error is None:
                (report.committed if verb == "COMMIT" else report.rolled_back).append((ds, gtrid))
                log.info("recovery: XA %s %s on %s", verb, gtrid, ds)
            elif errno_of(reply.error) == XAER_NOTA:
                report.skipped.append((ds, gtrid))  # still attached to a live session, or resolved meanwhile
            else:
                scan_complete = False
                report.errors.append(f"{ds}: XA {verb} {gtrid} failed: {_message(reply.error)}")
    if scan_complete:
        keep = set(pending) | {g for _, g in report.skipped}
        not_in = "".join(f" AND gtrid <> '{g}'" for g in sorted(keep))
        (reply,) = yield Step(
            Phase.CLEANUP,
            (
                decision_log.stmt(
                    f"DELETE FROM {decision_log.table} WHERE gtrid LIKE '{prefix}%' AND ("
                    f"(decision = 'commit' AND created_at < NOW(6) - INTERVAL {float(log_retention):.3f} SECOND)"
                    f" OR created_at < NOW(6) - INTERVAL {float(abort_retention):.3f} SECOND){not_in}"
                ),
            ),
        )
        if reply.error is not None:
            report.errors.append(f"cannot clean up the decision log: {_message(reply.error)}")
    return report


def _lookup(decision_log: DecisionLog, gtrids: list[str], report: RecoveryReport):
    in_list = ", ".join(f"'{g}'" for g in gtrids)
    (reply,) = yield Step(
        Phase.LOOKUP,
        (decision_log.stmt(f"SELECT gtrid, decision FROM {decision_log.table} WHERE gtrid IN ({in_list})"),),
    )
    if reply.error is not None:
        report.errors.append(f"cannot read the decision log on {decision_log.datasource}: {_message(reply.error)}")
        return None
    return {(g.decode() if isinstance(g, bytes) else g): d for g, d in reply.rows}
