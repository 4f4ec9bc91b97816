"""``mdriver-sandbox up|down|status``: local MariaDB servers for a routing config.

``up`` starts one MariaDB per datasource of the config, on the configured
host and port, each with its own data directory under the state folder, and
creates every physical database and table from the logical CREATE TABLEs of
the schema file. Running it again changes nothing. ``down`` stops only the
servers this sandbox started (found by the pid files in the state folder and
checked against their command line). ``status`` shows each server and whether
it answers a query.
"""
from __future__ import annotations

import argparse
import fcntl
import logging
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import pymysql

from mdriver.config import Config, ConfigError, ConfigSourceError, load_config
from mdriver.config.model import DataSource
from mdriver.sandbox.cluster import (
    MariaDBInstance,
    PortInUseError,
    SandboxError,
    find_binaries,
    port_in_use,
    start_all,
    stop_all,
)
from mdriver.sandbox.layout import SchemaFileError, create_layout, plan_layout, read_schema_file

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def project_root() -> str:
    """The checkout this package lives in (editable install), else the current directory."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.exists(os.path.join(here, "setup.cfg")) and os.path.isdir(os.path.join(here, "config")):
        return here
    return os.getcwd()


def build_parser() -> argparse.ArgumentParser:
    root = project_root()
    parser = argparse.ArgumentParser(
        prog="mdriver-sandbox",
        description=(
            "Run local MariaDB servers for a routing config: one per datasource, on its host "
            "and port, binlog on (ROW, FULL row image, FULL metadata), data under the state folder. "
            "Never touches a server it did not start."
        ),
        epilog=(
            "commands:\n"
            "  up      start the servers and create every physical database and table (idempotent)\n"
            "  down    stop the servers this sandbox started, by their pid\n"
            "  status  show each server and whether it answers; exit 3 if one does not\n"
            "\nexit codes: 0 ok, 1 error, 2 bad usage, 3 (status) a server is not answering"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=("up", "down", "status"), help="what to do")
    parser.add_argument("--config", default=os.path.join(root, "config", "sharding.yaml"),
                        help="routing config (default: %(default)s)")
    parser.add_argument("--schema", default=os.path.join(root, "examples", "schema.sql"),
                        help="file of logical CREATE TABLE statements, for up (default: %(default)s)")
    parser.add_argument("--state", default=os.path.join(root, ".state", "sandbox"),
                        help="folder holding one data directory per server (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a server to start (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens in detail")
    return parser


@dataclass
class Server:
    """One server of the sandbox: the datasources it serves and its instance."""

    datasources: list[str]
    instance: MariaDBInstance

    @property
    def label(self) -> str:
        return "+".join(self.datasources)


def servers_for(config: Config, state: str, binaries=None) -> list[Server]:
    """One server per distinct host:port of the config, named after its first datasource."""
    by_address: dict[tuple[str, int], Server] = {}
    for index, ds in enumerate(config.datasources.values()):
        host = "127.0.0.1" if ds.host == "localhost" else ds.host
        key = (host, ds.port)
        if key in by_address:
            by_address[key].datasources.append(ds.name)
            continue
        inst = MariaDBInstance(ds.name, os.path.join(state, ds.name), port=ds.port, host=host, server_id=index + 1,
                                binaries=binaries)
        by_address[key] = Server([ds.name], inst)
    return list(by_address.values())


def running_port(inst: MariaDBInstance) -> int | None:
    """The port a running server of ours was started with (from its command line)."""
    pid = inst.pid
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return None
    for arg in args:
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
    return None


def check_datasources(config: Config) -> None:
    for ds in config.datasources.values():
        where = f"datasources.{ds.name}"
        if ds.host not in LOCAL_HOSTS:
            raise SandboxError(f"{where}.host is {ds.host}: the sandbox starts servers on this machine only (use 127.0.0.1)")
        if ds.user == "root" and ds.password:
            raise SandboxError(
                f"{where}: sandbox servers keep root without a password; set password: \"\" or use another user (it is created)"
            )


def _print(msg: str) -> None:
    print(msg, flush=True)


@contextmanager
def state_lock(state: str) -> Iterator[None]:
    """One ``up``/``down`` at a time per state folder (two ``up`` racing would start two servers)."""
    os.makedirs(state, exist_ok=True)
    with open(os.path.join(state, ".lock"), "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _print(f"waiting for another mdriver-sandbox command on {state} ...")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def ensure_user(inst: MariaDBInstance, ds: DataSource) -> None:
    """Create the configured account when it is not the sandbox's own passwordless root."""
    if ds.user == "root":
        return
    conn = inst.connect()
    try:
        with conn.cursor() as cur:
            for host in ("127.0.0.1", "localhost"):
                cur.execute("CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", (ds.user, host, ds.password))
                cur.execute("ALTER USER %s@%s IDENTIFIED BY %s", (ds.user, host, ds.password))
                cur.execute("GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION", (ds.user, host))
    finally:
        conn.close()


def cmd_up(args, config: Config) -> int:
    check_datasources(config)
    tables = read_schema_file(args.schema)
    plan = plan_layout(config, tables)
    binaries = find_binaries()
    servers = servers_for(config, args.state, binaries)
    to_start = []
    for server in servers:
        inst = server.instance
        if inst.is_alive():
            port = running_port(inst)
            if port is not None and port != inst.port:
                raise SandboxError(
                    f"{server.label}: the sandbox server (pid {inst.pid}) runs on port {port} but the config says {inst.port}; "
                    "run `mdriver-sandbox down` first"
                )
            _print(f"{server.label}: already running (pid {inst.pid}) on {inst.host}:{inst.port}")
            continue
        if port_in_use(inst.host, inst.port):
            raise PortInUseError(
                f"{server.label}: port {inst.port} on {inst.host} is used by a process this sandbox did not start; "
                f"not touching it. Stop it or change the port in {args.config}"
            )
        to_start.append(server)
    if to_start:
        for server in to_start:
            what = "starting" if server.instance.installed else "creating and starting"
            _print(f"{server.label}: {what} MariaDB on {server.instance.host}:{server.instance.port} (data in {server.instance.datadir})")
        began = time.monotonic()
        start_all([s.instance for s in to_start], timeout=args.timeout)
        for server in to_start:
            _print(f"{server.label}: ready (pid {server.instance.pid}) after {time.monotonic() - began:.1f} s")
    by_ds = {}
    for server in servers:
        for name in server.datasources:
            by_ds[name] = server.instance
            ensure_user(server.instance, config.datasources[name])

    _print(f"layout: {plan.database_count()} databases, {plan.table_count()} tables from {args.schema} ...")
    result = create_layout(plan, lambda ds, **kw: by_ds[ds].connect(**kw))
    _print(
        f"layout: created {result.databases_created} databases and {result.tables_created} tables, "
        f"{result.tables_present} tables were already there ({result.seconds:.1f} s)"
    )
    for name, dbs in plan.databases.items():
        ds = config.datasources[name]
        counts = count_tables(by_ds[name], list(dbs))
        _print(f"{name} {ds.host}:{ds.port}: {len(dbs)} databases, {counts} tables    mariadb -h{ds.host} -P{ds.port} -u{ds.user}"
               + (" -p" if ds.password else ""))
    return EXIT_OK


def count_tables(inst: MariaDBInstance, databases: list[str]) -> int:
    conn = inst.connect(connect_timeout=3, read_timeout=30)
    try:
        with conn.cursor() as cur:
            marks = ",".join(["%s"] * len(databases))
            cur.execute(f"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({marks})", databases)
            return cur.fetchone()[0]
    finally:
        conn.close()


def our_instances(state: str) -> list[MariaDBInstance]:
    """Every server whose data directory is in the state folder, running or not."""
    if not os.path.isdir(state):
        return []
    found = []
    for entry in sorted(os.listdir(state)):
        datadir = os.path.join(state, entry)
        if os.path.isdir(datadir) and os.path.exists(os.path.join(datadir, "mysql")):
            found.append(MariaDBInstance(entry, datadir))
    return found


def cmd_down(args) -> int:
    running = [i for i in our_instances(args.state) if i.is_alive()]
    if not running:
        _print(f"no sandbox server running (state {args.state})")
        return EXIT_OK
    pids = {i.name: i.pid for i in running}
    for inst in running:
        _print(f"{inst.name}: stopping pid {pids[inst.name]}")
    stop_all(running, timeout=args.timeout)
    left = [i.name for i in running if i.is_alive()]
    if left:
        raise SandboxError(f"still running after stop: {', '.join(left)}")
    _print(f"stopped {len(running)} server(s); data kept in {args.state}")
    return EXIT_OK


def cmd_status(args, config: Config) -> int:
    all_ok = True
    known = set()
    for server in servers_for(config, args.state):
        inst = server.instance
        known.add(inst.name)
        where = f"{server.label} {inst.host}:{inst.port}"
        if inst.is_alive():
            port = running_port(inst)
            if port is not None and port != inst.port:
                _print(f"{where}: sandbox server pid {inst.pid} runs on port {port}, not the configured one")
                all_ok = False
                continue
            try:
                conn = inst.connect(connect_timeout=3, read_timeout=10)
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT VERSION(), (SELECT COUNT(*) FROM information_schema.TABLES "
                                    "WHERE TABLE_SCHEMA NOT IN ('mysql','information_schema','performance_schema','sys'))")
                        version, tables = cur.fetchone()
                finally:
                    conn.close()
                _print(f"{where}: running (pid {inst.pid}), answers: MariaDB {version}, {tables} tables")
            except pymysql.err.MySQLError as e:
                _print(f"{where}: running (pid {inst.pid}) but does not answer: {e}")
                all_ok = False
        else:
            foreign = port_in_use(inst.host, inst.port) if inst.host in LOCAL_HOSTS else False
            note = "; the port is used by a process the sandbox did not start" if foreign else ""
            _print(f"{where}: not running{note}")
            all_ok = False
    for inst in our_instances(args.state):
        if inst.name not in known and inst.is_alive():
            _print(f"{inst.name}: a sandbox server not in this config is running (pid {inst.pid}); `down` stops it")
    return EXIT_OK if all_ok else EXIT_NOT_RUNNING


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.state = os.path.abspath(args.state)
    try:
        if args.command == "down":
            with state_lock(args.state):
                return cmd_down(args)
        config = load_config(args.config)
        if args.command == "status":
            return cmd_status(args, config)
        with state_lock(args.state):
            return cmd_up(args, config)
    except (SandboxError, SchemaFileError, ConfigSourceError, ConfigError) as e:
        print(f"mdriver-sandbox: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except pymysql.err.MySQLError as e:
        print(f"mdriver-sandbox: error: MariaDB said: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("mdriver-sandbox: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
