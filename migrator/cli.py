"""``mdriver-migrate``: move one live table into its 32 x 32 shards, and cut over.

Every failure prints one line saying what happened and one saying what to do
next, and exits non-zero (codes in :mod:`migrator.errors`); never a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import signal
import sys
import time
from typing import Any, Callable

import pymysql

from mdriver.config.sources import ConfigSourceError, open_source
from mdriver.config.validate import ConfigError
from migrator import db
from migrator import state as st
from migrator.errors import EXIT_ERROR, EXIT_REFUSED, EXIT_USAGE, MigrationError, RefusedError, VerifyMismatchError, text_of
from migrator.faults import Faults
from migrator.progress import Progress, ProgressLogHandler, format_status

log = logging.getLogger("migrator")

DESCRIPTION = """\
Move a live single table into its shards while the application keeps writing.

The table's migration is configured in the routing config (schemas.S.tables.T.migration:
source, reads, writes), so every driver and proxy follows its phases. Typical sequence:

  plan            check everything and create the shard tables from the source's DDL
  start --daemon  copy by primary-key chunks and stream the binlog, then keep replicating
  status          phase, rows copied, lag, events/s, last verify (--json for scripts)
  verify          compare source and shards chunk by chunk at a known binlog position
  cutover-reads   reads -> shadow (compare) -> shards          (rollback-reads: back)
  cutover-writes  fence writes, drain, writes -> shards, replicate shards -> source
  rollback-writes the reverse, without losing a row
  finish          stop replicating and remove the migration block
  stop / abort    stop a running start process / forget the migration's progress
"""

VERB_HELP = {
    "plan": "Check the source (binlog ROW/FULL/FULL, primary key, NOT NULL shard key, column types, privileges) and "
            "the shard tables (absent or empty and alike); create missing shard tables from the source's DDL; print "
            "rows, chunks and targets. Refuses with the fix for every problem.",
    "start": "Copy and replicate: take a consistent snapshot, copy primary-key chunks while applying the binlog, "
             "then stream changes; follow cutover-writes into reverse replication. Resumes from the checkpoints "
             "after any stop or kill -9. Runs in the foreground with a progress bar, or with --daemon.",
    "status": "Show the phase, rows copied of the total, binlog lag (seconds, pending events, bytes), events applied "
              "per second and the last verify result.",
    "verify": "Compare the source and the shards chunk by chunk at a known binlog position (checksums first, rows "
              "in mismatching chunks), print the differing primary keys. Exit code 7 when rows differ.",
    "cutover-reads": "Move reads one step: source -> shadow (read both, return the source, count differences) -> "
                     "shards. Refuses while lag is above --max-lag or the last verify failed.",
    "rollback-reads": "Move reads back to the source.",
    "cutover-writes": "Fence writes, wait until every driver and proxy applied the fence (etcd acknowledgements, or "
                      "--confirm-fence for a config file), wait until the shards caught up, move writes to the shards "
                      "and start reverse replication (shards -> source).",
    "rollback-writes": "Fence writes, wait until the source caught up with the shards, move writes back to the "
                       "source and resume forward replication.",
    "finish": "Stop reverse replication and remove the migration block: the shards alone serve the table.",
    "stop": "Stop a running start process (SIGTERM to the pid in the state row) and wait for it to exit.",
    "abort": "Forget the migration's progress (checkpoints and state); with --empty-targets also empty the shard "
             "tables. Only while reads and writes are on the source.",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mdriver-migrate", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=os.environ.get("MDRIVER_CONFIG", "config/sharding.yaml"),
                   help="config file or etcd://host:port/prefix (default: $MDRIVER_CONFIG or config/sharding.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    def verb(name: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=VERB_HELP[name].split(". ")[0], description=VERB_HELP[name])
        sp.add_argument("table", help="the logical table, SCHEMA.TABLE (e.g. app.user_relation)")
        return sp

    sp = verb("plan")
    sp.add_argument("--source", help="DS.DATABASE.TABLE: add the migration block to the config if it has none")
    sp.add_argument("--no-create", action="store_true", help="report missing shard tables instead of creating them")
    sp.add_argument("--chunk-rows", type=int, default=50000, help="rows per copy chunk (default 50000)")

    sp = verb("start")
    sp.add_argument("--daemon", action="store_true", help="detach; log to --log-file, pid in --pid-file")
    sp.add_argument("--log-file", help="daemon log (default mdriver-migrate-SCHEMA.TABLE.log)")
    sp.add_argument("--pid-file", help="daemon pid file (default mdriver-migrate-SCHEMA.TABLE.pid)")
    sp.add_argument("--chunk-rows", type=int, default=50000,
                    help="rows per copy chunk at most (default 50000; fewer for wide rows, about 16 MiB a chunk)")
    sp.add_argument("--max-lag", type=float, default=10.0, help="seconds the shards may trail while copying (default 10)")
    sp.add_argument("--max-threads-running", type=int, default=50,
                    help="pause the copy while the source's Threads_running exceeds this (default 50)")
    sp.add_argument("--on-ddl", choices=("stop", "ignore"), default="stop",
                    help="DDL on the source table: stop before it (default) or ignore it (e.g. an index change you "
                         "also applied to the shards)")
    sp.add_argument("--batch", type=int, default=20000, help="row changes per applied batch at most (default 20000)")
    sp.add_argument("--retry-for", type=float, default=30.0,
                    help="keep retrying an unreachable server this many seconds before giving up (default 30)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")

    sp = verb("status")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = verb("verify")
    sp.add_argument("--chunk-rows", type=int, default=50000, help="rows per compared chunk (default 50000)")
    sp.add_argument("--max-differences", type=int, default=100, help="differing keys to list at most (default 100)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = verb("cutover-reads")
    sp.add_argument("--to", choices=("shadow", "shards"), help="target phase (default: the next one)")
    sp.add_argument("--shadow-for", type=float, default=0.0,
                    help="with --to shards from source: shadow reads for this many seconds first")
    sp.add_argument("--max-lag", type=float, default=5.0, help="refuse while lag exceeds this (default 5 s)")

    verb("rollback-reads")

    for name in ("cutover-writes", "rollback-writes"):
        sp = verb(name)
        sp.add_argument("--confirm-fence", action="store_true",
                        help="config file only: every driver and proxy reads this file (they reload it within "
                             "a second); wait --fence-grace seconds after fencing instead of asking")
        sp.add_argument("--fence-grace", type=float, default=3.0, help="seconds to wait after fencing a file (default 3)")
        sp.add_argument("--timeout", type=float, default=60.0,
                        help="acknowledgements and catch-up must finish within this (default 60 s); on timeout "
                             "writes go back where they were")
        sp.add_argument("--max-lag", type=float, default=5.0, help="refuse while lag exceeds this (default 5 s)")

    verb("finish")

    sp = verb("stop")
    sp.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the process to exit")

    sp = verb("abort")
    sp.add_argument("--empty-targets", action="store_true", help="also delete every row from the shard tables")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("pymysqlreplication").setLevel(logging.WARNING)
    try:
        return VERBS[args.verb](args)
    except MigrationError as e:
        return _fail(e.message, e.hint, e.exit_code)
    except ConfigError as e:
        return _fail(f"invalid config: {'; '.join(e.errors)}", f"fix {e.source or args.config}", EXIT_REFUSED)
    except ConfigSourceError as e:
        return _fail(str(e), "check --config (a file path or etcd://host:port/prefix)", EXIT_REFUSED)
    except KeyboardInterrupt:
        return _fail("interrupted", "run the same command again to continue", EXIT_ERROR)
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (pymysql.err.MySQLError, OSError) as e:
        return _fail(f"database or system error: {text_of(e)}",
                     "check the servers named in the config; progress is checkpointed, so commands can be re-run",
                     EXIT_ERROR)
    except Exception as e:  # noqa: BLE001 - a bug: one line, the traceback only with --verbose
        log.debug("unexpected error", exc_info=True)
        return _fail(f"unexpected {type(e).__name__}: {e}",
                     "run again with --verbose for the details and report them; progress is checkpointed", EXIT_ERROR)


def _fail(message: str, hint: str, code: int) -> int:
    print(f"mdriver-migrate: error: {message}", file=sys.stderr)
    if hint:
        print(f"  next: {hint}", file=sys.stderr)
    return code


def say(text: str) -> None:
    print(text, flush=True)


# -- helpers ---------------------------------------------------------------------------------

def _identity(args: argparse.Namespace):
    from mdriver.config.load import load_config

    source = open_source(args.config)
    return source, st.resolve(load_config(source), args.table)


def _control(ident: Any) -> Any:
    conn = db.connect(ident.datasource(ident.control), role="control")
    st.ensure_control_tables(conn)
    return conn


# -- verbs -------------------------------------------------------------------------------------

def cmd_plan(args: argparse.Namespace) -> int:
    import copy

    from mdriver.config.edit import set_migration
    from mdriver.config.load import load_config
    from mdriver.config.validate import build_config
    from migrator.inspector import run_plan

    source = open_source(args.config)
    config = load_config(source)
    block = None
    if args.source:
        schema, _, table = args.table.partition(".")
        rule = config.schemas[schema].tables.get(table) if schema in config.schemas else None
        parts = args.source.split(".")
        if len(parts) != 3:
            raise RefusedError(f"--source {args.source!r} is not DS.DATABASE.TABLE", "e.g. --source ds0.app.user_relation")
        if rule is not None and rule.migration is None:
            # Check with the block in memory; it reaches the config only if the plan passes.
            block = {"source": dict(zip(("datasource", "database", "table"), parts)), "reads": "source", "writes": "source"}
            document = copy.deepcopy(source.read().document)
            document["schemas"][schema]["tables"][table]["migration"] = block
            config = build_config(document, source=source.url)
    ident = st.resolve(config, args.table)
    report = run_plan(ident, create=not args.no_create, chunk_rows=args.chunk_rows)
    say(f"plan for {ident.name}: source {ident.source.name} {ident.source_table} -> "
        f"{len(ident.locations)} physical tables")
    say(f"  rows:    {report.rows:,}{'' if report.rows_exact else ' (estimate)'}")
    say(f"  chunks:  {report.chunks:,} of {report.chunk_rows:,} rows")
    for ds in sorted(report.targets):
        created = report.to_create.get(ds, 0)
        note = f", {created} created" if created and not args.no_create and not report.problems else (
            f", {created} missing" if created else "")
        say(f"  target:  {ds} ({ident.datasource(ds).host}:{ident.datasource(ds).port}): {report.databases[ds]} databases, "
            f"{report.targets[ds]} tables{note}")
    for w in report.warnings:
        say(f"  warning: {w}")
    if report.problems:
        for pr in report.problems:
            say(f"  problem: {pr.what}")
            say(f"      fix: {pr.fix}")
        raise RefusedError(f"{len(report.problems)} problem(s) must be fixed before {ident.name} can be migrated",
                           "apply the fixes above and run plan again")
    if block is not None:
        set_migration(source, ident.schema.name, ident.rule.name, block)
        say(f"added the migration block for {ident.name} (source {args.source}) to {source.url}")
    say(f"ready: run `mdriver-migrate --config {args.config} start {ident.name}`")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    from migrator.migration import Migration, Options
    from migrator.throttler import Limits

    source, ident = _identity(args)
    options = Options(chunk_rows=args.chunk_rows, on_ddl=args.on_ddl, batch_changes=args.batch,
                      retry_for=args.retry_for,
                      limits=Limits(max_lag=args.max_lag, max_threads_running=args.max_threads_running))
    ready: Callable[[], None] = lambda: None
    fail: Callable[[MigrationError], None] = lambda e: None
    if args.daemon:
        base = f"mdriver-migrate-{ident.name}"
        ready, fail = daemonize(args.log_file or f"{base}.log", args.pid_file or f"{base}.pid")
    tty = not args.quiet and not args.daemon and sys.stderr.isatty()
    progress = Progress(sys.stderr, enabled=tty, log_every=None if tty or args.quiet else 10.0)
    if progress.enabled:
        for h in logging.getLogger().handlers:
            h.addFilter(ProgressLogHandler(progress))
    migration = Migration(ident, options, Faults.from_env(), on_progress=progress.update, on_ready=ready)
    signal.signal(signal.SIGTERM, lambda *_: migration.stop())
    signal.signal(signal.SIGINT, lambda *_: migration.stop())
    try:
        outcome = migration.run()
    except MigrationError as e:
        progress.close()
        fail(e)
        raise
    finally:
        if args.daemon:
            with contextlib.suppress(OSError):
                os.unlink(os.path.abspath(args.pid_file or f"mdriver-migrate-{ident.name}.pid"))
    progress.close()
    log.info("%s: %s", ident.name, outcome)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from mdriver.config.load import load_config
    from migrator.cutover import current_migration, read_forward, read_reverse

    source = open_source(args.config)
    config = load_config(source)
    try:
        ident = st.resolve(config, args.table)
    except RefusedError:
        if st.control_datasource(config, args.table) is None:
            raise  # not a sharded table of the config: the refusal says so
        return _status_without_migration(args, config)
    control = _control(ident)
    try:
        state = st.read_state(control, ident.name)
    finally:
        control.close()
    migration = current_migration(source, ident)
    forward = read_forward(ident)
    reverse = read_reverse(ident) if state is not None and state.replication != st.FORWARD else {}
    doc = status_document(ident, migration, state, forward, reverse)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True, default=str))
    else:
        print(format_status(doc))
    return 0


def _status_without_migration(args: argparse.Namespace, config: Any) -> int:
    """A table with no migration block: finished (if a state row says so) or never migrated."""
    control = st.control_datasource(config, args.table)
    state = None
    if control is not None:
        with db.session(config.datasources[control], role="control") as conn:
            st.ensure_control_tables(conn)
            state = st.read_state(conn, args.table)
    phase = state.phase if state is not None else "none"
    doc = {"migration": args.table, "phase": phase, "running": bool(state and state.running()),
           "note": "no migration block in the config"}
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    elif phase == st.PHASE_FINISHED:
        print(f"{args.table}: finished (served by its shards; no migration block in the config)")
    else:
        print(f"{args.table}: not migrating (no migration block in the config)")
    return 0


def status_document(ident: Any, migration: Any, state: st.State | None, forward: dict, reverse: dict) -> dict:
    stats = state.stats if state else {}
    rows_copied = sum(cp.rows_copied for cp in forward.values())
    copy_done = bool(forward) and all(cp.copy_done for cp in forward.values())
    total = state.total_rows if state else None
    running = bool(state and state.running())
    return {
        "migration": ident.name,
        "source": f"{ident.source.name}.{ident.source_table}",
        "reads": migration.reads,
        "writes": migration.writes,
        "phase": state.phase if state else st.PHASE_NEW,
        "running": running,
        "pid": state.pid if state and running else None,
        "host": state.host if state and running else None,
        "replication": state.replication if state else st.FORWARD,
        "active": state.active if state and running else st.NONE,
        "rows_copied": rows_copied,
        "rows_total": total,
        "copy_done": copy_done,
        "percent": round(min(100.0, 100.0 * rows_copied / total), 1) if total else (100.0 if copy_done else 0.0),
        "rows_per_s": round(float(stats.get("rows_per_s") or 0.0), 1) if running else 0.0,
        "lag_seconds": round(float(stats.get("lag_seconds") or 0.0), 3) if running else None,
        "lag_events": int(stats.get("lag_events") or 0) if running else None,
        "lag_bytes": stats.get("lag_bytes") if running else None,
        "events_per_s": round(float(stats.get("events_per_s") or 0.0), 1) if running else 0.0,
        "events_applied": int(stats.get("events_applied") or 0),
        "throttled": stats.get("throttled") if running else None,
        "heartbeat_age": round(state.heartbeat_age, 1) if state and state.heartbeat_age is not None else None,
        "checkpoints": {ds: {"position": str(cp.position), "copy_done": cp.copy_done, "rows_copied": cp.rows_copied}
                        for ds, cp in forward.items()},
        "reverse_checkpoints": {ds: str(cp.position) for ds, cp in reverse.items()},
        "last_verify": state.verify if state else None,
        "error": state.error if state else None,
    }


def cmd_verify(args: argparse.Namespace) -> int:
    from migrator.inspector import inspect_source
    from migrator.verifier import Verifier

    source, ident = _identity(args)
    control = _control(ident)
    try:
        info = inspect_source(ident)
        progress = Progress(sys.stderr, enabled=sys.stderr.isatty() and not args.json)
        verifier = Verifier(ident, info, chunk_rows=args.chunk_rows, max_differences=args.max_differences,
                            on_chunk=lambda chunks, rows: progress.line(f"verify: {chunks} chunks, {rows:,} rows"))
        result = verifier.run(control)
        progress.close()
    finally:
        control.close()
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        say(f"verify {ident.name} at source binlog {result.position} ({result.mode}): {result.chunks} chunks, "
            f"{result.source_rows:,} source rows, {result.shard_rows:,} shard rows, {result.seconds:.1f} s")
        for d in result.differences:
            say(f"  {d.describe()}")
        if result.truncated:
            say(f"  ... more differences (raise --max-differences)")
        say("ok: source and shards are identical" if result.ok else
            f"DIFFERENT: {result.mismatched_chunks} chunk(s) differ")
    if not result.ok:
        raise VerifyMismatchError(f"{ident.name}: source and shards differ ({result.mismatched_chunks} chunk(s))",
                                  "inspect the keys listed; cutovers refuse until verify passes")
    return 0


def _fence_options(args: argparse.Namespace):
    from migrator.cutover import FenceOptions

    prompt = ask_with_timeout if sys.stdin.isatty() and not getattr(args, "confirm_fence", False) else None
    return FenceOptions(confirm=getattr(args, "confirm_fence", False), grace=getattr(args, "fence_grace", 3.0),
                        timeout=getattr(args, "timeout", 60.0), max_lag=getattr(args, "max_lag", 5.0), prompt=prompt)


def ask_with_timeout(question: str, timeout: float) -> bool:
    print(f"{question} (timeout {timeout:g} s): ", end="", flush=True)
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    if not ready:
        print()
        return False
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _with_control(fn: Callable[[Any, Any, Any], None]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        source, ident = _identity(args)
        control = _control(ident)
        try:
            fn(args, source, ident, control)
        finally:
            control.close()
        return 0
    return run


def _cutover_reads(args, source, ident, control) -> None:
    from migrator.cutover import cutover_reads

    cutover_reads(source, ident, control, _fence_options(args), args.to, args.shadow_for, say)


def _rollback_reads(args, source, ident, control) -> None:
    from migrator.cutover import rollback_reads

    rollback_reads(source, ident, say)


def _cutover_writes(args, source, ident, control) -> None:
    from migrator.cutover import cutover_writes

    cutover_writes(source, ident, control, _fence_options(args), say, Faults.from_env())


def _rollback_writes(args, source, ident, control) -> None:
    from migrator.cutover import rollback_writes

    rollback_writes(source, ident, control, _fence_options(args), say, Faults.from_env())


def _finish(args, source, ident, control) -> None:
    from migrator.cutover import finish

    finish(source, ident, control, say)


def _stop(args, source, ident, control) -> None:
    state = st.read_state(control, ident.name)
    if state is None or not state.running() or not state.pid:
        say(f"no migrator is running for {ident.name}")
        return
    import socket

    if state.host != socket.gethostname():
        raise RefusedError(f"the migrator of {ident.name} runs on {state.host} (pid {state.pid})",
                           f"run `mdriver-migrate stop` on {state.host}, or kill pid {state.pid} there")
    try:
        os.kill(state.pid, signal.SIGTERM)
    except ProcessLookupError:
        say(f"pid {state.pid} is gone")
        return
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        now = st.read_state(control, ident.name)
        if now is None or now.active == st.NONE or not now.running():
            say(f"stopped the migrator of {ident.name} (pid {state.pid})")
            return
        time.sleep(0.2)
    raise MigrationError(f"pid {state.pid} did not stop within {args.timeout:g} s", f"kill -9 {state.pid} is safe: "
                         "progress is checkpointed")


def _abort(args, source, ident, control) -> None:
    from migrator import checkpoint as ckpt
    from migrator.cutover import current_migration
    from migrator.sql import qualified

    migration = current_migration(source, ident)
    if migration.reads != "source" or migration.writes != "source":
        raise RefusedError(f"reads are on {migration.reads} and writes on {migration.writes}",
                           "abort only while both are on the source: run rollback-writes and rollback-reads first")
    state = st.read_state(control, ident.name)
    if state is not None and state.running():
        raise RefusedError(f"the migrator of {ident.name} is running (pid {state.pid})", "run `mdriver-migrate stop` first")
    for ds in ident.targets:
        with db.session(ident.datasource(ds), role="shard", multi=True) as conn:
            st.ensure_control_tables(conn)
            ckpt.delete(conn, ident.name)
            if args.empty_targets:
                locations = ident.locations_on(ds)
                for i in range(0, len(locations), 128):
                    db.run_script(conn, ";".join(f"DELETE FROM {qualified(l.database, l.table)}"
                                                 for l in locations[i:i + 128]))
            conn.commit()
    with db.session(ident.source, role="source") as conn:
        st.ensure_control_tables(conn)
        ckpt.delete(conn, ident.name)
    with control.cursor() as cur:
        cur.execute(f"DELETE FROM `{st.CONTROL_DB}`.`state` WHERE migration = %s", (ident.name,))
    say(f"forgot the progress of {ident.name}" + (" and emptied its shard tables" if args.empty_targets else ""))


VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "plan": cmd_plan,
    "start": cmd_start,
    "status": cmd_status,
    "verify": cmd_verify,
    "cutover-reads": _with_control(_cutover_reads),
    "rollback-reads": _with_control(_rollback_reads),
    "cutover-writes": _with_control(_cutover_writes),
    "rollback-writes": _with_control(_rollback_writes),
    "finish": _with_control(_finish),
    "stop": _with_control(_stop),
    "abort": _with_control(_abort),
}


# -- daemon ------------------------------------------------------------------------------------

def daemonize(log_file: str, pid_file: str) -> tuple[Callable[[], None], Callable[[MigrationError], None]]:
    """Double fork; the original process waits until the daemon says it started (or why it could not).

    Returns (ready, fail) callbacks for the daemon to report through.
    """
    log_file, pid_file = os.path.abspath(log_file), os.path.abspath(pid_file)
    r, w = os.pipe()
    if os.fork() > 0:
        os.close(w)
        chunks = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready, _, _ = select.select([r], [], [], 1.0)
            if ready:
                data = os.read(r, 4096)
                if not data:
                    break
                chunks.append(data)
        message = b"".join(chunks).decode("utf-8", "replace")
        if message.startswith("ok"):
            print(f"started: pid {message.split()[1]}, log {log_file}, pid file {pid_file}", flush=True)
            os._exit(0)
        lines = message.splitlines() or ["the daemon exited before it was ready (see the log)", ""]
        print(f"mdriver-migrate: error: {lines[0]}", file=sys.stderr)
        if len(lines) > 1 and lines[1]:
            print(f"  next: {lines[1]}", file=sys.stderr)
        print(f"  log: {log_file}", file=sys.stderr)
        os._exit(int(lines[2]) if len(lines) > 2 and lines[2].isdigit() else EXIT_ERROR)
    os.close(r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    with open(pid_file, "w") as f:
        f.write(f"{os.getpid()}\n")
    sent = {"done": False}

    def ready() -> None:
        if not sent["done"]:
            os.write(w, f"ok {os.getpid()}\n".encode())
            os.close(w)
            sent["done"] = True

    def fail(e: MigrationError) -> None:
        if not sent["done"]:
            os.write(w, f"{e.message}\n{e.hint}\n{e.exit_code}\n".encode())
            os.close(w)
            sent["done"] = True

    return ready, fail


if __name__ == "__main__":
    sys.exit(main())
