"""Moving reads and writes between the source and the shards, and back.

Phases live in the config (``migration.reads``/``writes``), so every driver and
proxy follows them; they change only through :mod:`mdriver.config.edit`.
The replication direction lives in the state row and the running ``start``
process follows it. Every step is safe to repeat after a crash: each verb
looks at where the config and the state row are and continues from there.

cutover-writes:
  1. writes -> fenced (drivers and proxies refuse writes with a retryable error)
  2. wait until every driver and proxy applied the fence: acknowledgements in
     etcd, or for a config file the operator's ``--confirm-fence`` plus a
     grace period longer than the file reload interval
  3. wait until the shards applied the source's binlog up to its position now
  4. record each shard server's binlog position as the start of reverse
     replication and ask ``start`` to replicate shards -> source
  5. writes -> shards
If step 2 or 3 fails, writes go back to the source: a failed cutover never
leaves writes fenced. rollback-writes is the mirror image.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from mdriver.config.edit import remove_migration
from mdriver.config.publish import set_migration_phase
from mdriver.config.load import load_config
from mdriver.config.sources import ConfigSource
from migrator import checkpoint as ckpt
from migrator import db
from migrator import state as st
from migrator.checkpoint import Checkpoint
from migrator.errors import MigrationError, RefusedError
from migrator.faults import NO_FAULTS, Faults
from migrator.state import FORWARD, NONE, REVERSE, Identity, Position

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FenceOptions:
    confirm: bool = False  # the operator confirms every client reloads the config file
    grace: float = 3.0  # seconds to wait after fencing a file config (> the clients' reload interval)
    timeout: float = 60.0  # acknowledgements / catch-up must complete within this
    max_lag: float = 5.0  # refuse a cutover while the shards trail by more than this
    prompt: Callable[[str, float], bool] | None = None  # interactive confirmation (question, timeout) -> yes?


Say = Callable[[str], None]


def current_migration(source: ConfigSource, ident: Identity) -> Any:
    config = load_config(source)
    rule = config.schemas[ident.schema.name].tables.get(ident.rule.name)
    if rule is None or rule.migration is None:
        raise RefusedError(f"{ident.name} has no migration block any more", "the migration was finished or removed")
    return rule.migration


def master_position(ds: Any, role: str) -> Position:
    with db.session(ds, role=role) as conn:
        row = db.query_one(conn, "SHOW MASTER STATUS")
    if not row:
        raise RefusedError(f"{role} {ds.describe()} has no binary log", "enable log_bin on it")
    return Position(_s(row[0]), int(row[1]))


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_forward(ident: Identity) -> dict[str, Checkpoint]:
    out = {}
    for ds in ident.targets:
        with db.session(ident.datasource(ds), role="shard") as conn:
            st.ensure_control_tables(conn)
            rows = ckpt.load(conn, ident.name, FORWARD, ds)
        if rows:
            out[ds] = rows[0]
    return out


def read_reverse(ident: Identity) -> dict[str, Checkpoint]:
    with db.session(ident.source, role="source") as conn:
        st.ensure_control_tables(conn)
        return {cp.read_from: cp for cp in ckpt.load(conn, ident.name, REVERSE, ident.source.name)}


def require_streaming(ident: Identity, control: Any, max_lag: float, *, need_verify: bool) -> st.State:
    """The checks shared by cutovers: copy done, migrator running and close behind, verify not failed."""
    state = st.read_state(control, ident.name)
    if state is None:
        raise RefusedError(f"{ident.name} has not been started", "run `mdriver-migrate start` first")
    if not state.running():
        raise RefusedError(f"the migrator of {ident.name} is not running (phase {state.phase})",
                           "start it (`mdriver-migrate start --daemon`) and wait for the streaming phase")
    if state.active == FORWARD and state.phase != st.PHASE_STREAMING:
        rows = state.stats.get("rows_copied", 0)
        raise RefusedError(f"the copy of {ident.name} is not finished ({rows} rows copied)",
                           "wait for `mdriver-migrate status` to show the streaming phase")
    lag = float(state.stats.get("lag_seconds") or 0.0)
    if lag > max_lag:
        raise RefusedError(f"the shards trail the source by {lag:.1f} s (limit {max_lag:g} s)",
                           "wait for the lag to drop (see `mdriver-migrate status`) or pass a larger --max-lag")
    verify = state.verify
    if need_verify and not verify:
        raise RefusedError(f"{ident.name} has not been verified", "run `mdriver-migrate verify` first")
    if verify and not verify.get("ok"):
        what = (f"could not finish: {verify['error']}" if verify.get("error") else
                f"found differences ({len(verify.get('differences') or [])} keys listed)")
        raise RefusedError(f"the last verify of {ident.name} {what}",
                           "find the cause, fix it, and run `mdriver-migrate verify` until it passes")
    return state


# -- reads -----------------------------------------------------------------------------

def cutover_reads(source: ConfigSource, ident: Identity, control: Any, options: FenceOptions, to: str | None,
                  shadow_for: float, say: Say) -> str:
    """source -> shadow -> shards (one step, or both with ``shadow_for`` seconds of shadow reads between)."""
    migration = current_migration(source, ident)
    target = to or {"source": "shadow", "shadow": "shards"}.get(migration.reads, "shards")
    if migration.reads == target:
        say(f"reads of {ident.name} are already on {target}")
        return target
    require_streaming(ident, control, options.max_lag, need_verify=True)
    if target == "shards" and migration.reads == "source" and shadow_for > 0:
        _set(source, ident, say, reads="shadow")
        say(f"shadow reads for {shadow_for:g} s (drivers and proxies compare and log differences)")
        time.sleep(shadow_for)
        require_streaming(ident, control, options.max_lag, need_verify=True)
    _set(source, ident, say, reads=target)
    return target


def rollback_reads(source: ConfigSource, ident: Identity, say: Say) -> None:
    migration = current_migration(source, ident)
    if migration.reads == "source":
        say(f"reads of {ident.name} are already on the source")
        return
    _set(source, ident, say, reads="source")


# -- writes ----------------------------------------------------------------------------

def cutover_writes(source: ConfigSource, ident: Identity, control: Any, options: FenceOptions, say: Say,
                   faults: Faults = NO_FAULTS) -> None:
    migration = current_migration(source, ident)
    state = st.read_state(control, ident.name)
    if migration.writes == "shards":
        if state is not None and state.replication == REVERSE:
            say(f"writes of {ident.name} are already on the shards; reverse replication is "
                f"{'running' if state.running() and state.active == REVERSE else 'requested (start the migrator)'}")
            return
        raise RefusedError(f"writes of {ident.name} are on the shards but no reverse replication was recorded",
                           "run `mdriver-migrate rollback-writes` to return to a known state")
    if migration.reads != "shards":
        raise RefusedError(f"reads of {ident.name} are on {migration.reads}; move them first",
                           "run `mdriver-migrate cutover-reads` until reads are on the shards")
    resuming = migration.writes == "fenced"
    if not resuming:
        require_streaming(ident, control, options.max_lag, need_verify=True)
        check_fence_possible(source, options)
    elif state is not None and state.replication == REVERSE and read_reverse(ident):
        say("resuming an interrupted cutover: reverse replication is already recorded")
        _set(source, ident, say, writes="shards")
        _wait_active(ident, control, REVERSE, say)
        return
    revision = _set(source, ident, say, writes="fenced")
    faults.crash_point("cutover-fenced")
    recorded = False
    try:
        wait_for_fence(source, revision, options, say)
        position = master_position(ident.source, "source")
        say(f"waiting for the shards to apply the source binlog up to {position}")
        _wait_forward(ident, position, options.timeout)
        faults.crash_point("cutover-caught-up")
        starts = {ds: master_position(ident.datasource(ds), "shard") for ds in ident.targets}
        with db.session(ident.source, role="source") as conn:
            st.ensure_control_tables(conn)
            for ds, pos in starts.items():
                ckpt.save(conn, Checkpoint(ident.name, REVERSE, ident.source.name, ds, pos, copy_done=True))
        st.update_state(control, ident.name, replication=REVERSE,
                        cutover={"writes": "shards", "reverse_from": {k: str(v) for k, v in starts.items()},
                                 "source_at": str(position), "at": time.time()})
        recorded = True
        faults.crash_point("cutover-reverse-recorded")
    except BaseException:
        say("cutover failed; moving writes back to the source")
        if recorded:
            st.update_state(control, ident.name, replication=FORWARD)
        _set(source, ident, say, writes="source")
        raise
    _set(source, ident, say, writes="shards")
    faults.crash_point("cutover-writes-on-shards")
    _wait_active(ident, control, REVERSE, say)


def rollback_writes(source: ConfigSource, ident: Identity, control: Any, options: FenceOptions, say: Say,
                    faults: Faults = NO_FAULTS) -> None:
    migration = current_migration(source, ident)
    state = st.read_state(control, ident.name)
    if migration.writes == "source":
        say(f"writes of {ident.name} are already on the source")
        return
    if state is None:
        raise RefusedError(f"{ident.name} has no state row", "was the migration aborted?")
    if migration.writes == "fenced" and state.replication == FORWARD:
        say("resuming an interrupted rollback: forward replication is already recorded")
        _set(source, ident, say, writes="source")
        return
    if migration.writes == "shards":
        check_fence_possible(source, options)
    revision = _set(source, ident, say, writes="fenced")
    faults.crash_point("rollback-fenced")
    recorded = False
    try:
        wait_for_fence(source, revision, options, say)
        targets = {ds: master_position(ident.datasource(ds), "shard") for ds in ident.targets}
        say("waiting for the source to apply the shards' binlogs up to " + ", ".join(f"{k} {v}" for k, v in targets.items()))
        _wait_reverse(ident, targets, options.timeout)
        position = master_position(ident.source, "source")
        forward = read_forward(ident)
        for ds in ident.targets:
            cp = forward.get(ds) or Checkpoint(ident.name, FORWARD, ds, ident.source.name, position, copy_done=True)
            with db.session(ident.datasource(ds), role="shard") as conn:
                ckpt.save(conn, Checkpoint(ident.name, FORWARD, ds, ident.source.name, position, cp.last_pk, True,
                                           cp.rows_copied, cp.events_applied))
        st.update_state(control, ident.name, replication=FORWARD,
                        cutover={"writes": "source", "forward_from": str(position), "at": time.time()})
        recorded = True
        faults.crash_point("rollback-forward-recorded")
    except BaseException:
        say("rollback failed; writes stay on the shards")
        if recorded:
            st.update_state(control, ident.name, replication=REVERSE)
        _set(source, ident, say, writes="shards")
        raise
    _set(source, ident, say, writes="source")
    _wait_active(ident, control, FORWARD, say)


def finish(source: ConfigSource, ident: Identity, control: Any, say: Say) -> None:
    migration = current_migration(source, ident)
    if migration.writes != "shards" or migration.reads != "shards":
        raise RefusedError(f"reads are on {migration.reads} and writes on {migration.writes}; finish needs both on "
                           "the shards", "run cutover-reads and cutover-writes first")
    st.update_state(control, ident.name, replication=NONE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = st.read_state(control, ident.name)
        if state is None or not state.running():
            break
        time.sleep(0.2)
    remove_migration(source, ident.schema.name, ident.rule.name)
    st.update_state(control, ident.name, phase=st.PHASE_FINISHED)
    say(f"{ident.name} is served by its shards alone; the source table {ident.source_table} is no longer updated")


# -- pieces ------------------------------------------------------------------------------

def _set(source: ConfigSource, ident: Identity, say: Say, **phases: str) -> str:
    snap = set_migration_phase(source, ident.schema.name, ident.rule.name, **phases)
    say(", ".join(f"{k} -> {v}" for k, v in phases.items()) + f" (config revision {snap.revision})")
    return str(snap.revision)


def check_fence_possible(source: ConfigSource, options: FenceOptions) -> None:
    """Refuse before fencing when acknowledgements cannot be collected (so writes never stay blocked)."""
    from mdriver.config.etcd import EtcdSource

    if isinstance(source, EtcdSource) or options.confirm or options.prompt is not None:
        return
    raise RefusedError(
        "the config is a file: the migrator cannot see which drivers and proxies have reloaded it",
        "make sure every driver and proxy reads this same file (they reload it within a second), then re-run with "
        "--confirm-fence (it waits --fence-grace seconds after fencing), or run interactively to confirm by hand")


def wait_for_fence(source: ConfigSource, revision: str, options: FenceOptions, say: Say) -> None:
    from mdriver.config.etcd import EtcdSource

    if isinstance(source, EtcdSource):
        from mdriver.config.clients import AckTimeoutError, wait_for_ack

        say(f"waiting for every registered driver and proxy to apply revision {revision}")
        try:
            clients = wait_for_ack(source, revision, options.timeout)
        except AckTimeoutError as e:
            raise MigrationError(str(e), "find the laggard (it may be stuck); once it is gone or caught up, "
                                          "run the command again") from None
        say(f"{len(clients)} client(s) acknowledged revision {revision}")
        return
    if options.confirm:
        say(f"fence written to the config file; waiting {options.grace:g} s for every driver and proxy to reload it")
        time.sleep(options.grace)
        return
    assert options.prompt is not None
    question = (f"writes are fenced in config revision {revision}. Type 'yes' once every driver and proxy has "
                "reloaded the config")
    if not options.prompt(question, options.timeout):
        raise RefusedError("the fence was not confirmed", "run the command again when every client has reloaded")


def _wait_forward(ident: Identity, position: Position, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        cps = read_forward(ident)
        behind = [ds for ds in ident.targets if ds not in cps or cps[ds].position < position]
        if not behind:
            return
        if time.monotonic() >= deadline:
            raise MigrationError(f"the shards did not apply the source binlog up to {position} within {timeout:g} s "
                                 f"({', '.join(behind)} behind)", "check that `mdriver-migrate start` is running")
        time.sleep(0.1)


def _wait_reverse(ident: Identity, targets: dict[str, Position], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        cps = read_reverse(ident)
        behind = [ds for ds, pos in targets.items() if ds not in cps or cps[ds].position < pos]
        if not behind:
            return
        if time.monotonic() >= deadline:
            raise MigrationError(f"the source did not apply the binlogs of {', '.join(behind)} within {timeout:g} s",
                                 "check that `mdriver-migrate start` is running")
        time.sleep(0.1)


def _wait_active(ident: Identity, control: Any, direction: str, say: Say, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = st.read_state(control, ident.name)
        if state is not None and state.running() and state.active == direction:
            say(f"the migrator now replicates {'shards -> source' if direction == REVERSE else 'source -> shards'}")
            return
        time.sleep(0.1)
    say(f"warning: no running migrator picked up the {direction} direction yet; start it with "
        "`mdriver-migrate start --daemon` so that rollback stays possible")
