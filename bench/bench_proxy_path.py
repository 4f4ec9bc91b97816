"""The proxy's Python cost per statement, without sockets or servers.

A real ProxyServer (config/sbtest.yaml) gets one logged-in client and idle
backend connections whose transports are stand-ins: what the proxy writes to
a backend is answered at once with a canned response (a prepare, a binary
result, a text result). Each statement is the whole hot path: the client's
packet in, routing, the backend command out, the response relayed, the
connection given back. CPU time per statement is reported for:

* ``execute``: COM_STMT_EXECUTE of ``SELECT c FROM sbtest1 WHERE id=?`` (what
  sysbench oltp_point_select sends), forwarded to backend prepared statements;
* ``execute-text``: the same with backend prepared statements off
  (``--backend-statements 0``): text SQL, rows converted to binary;
* ``query``: COM_QUERY of the same statement with the id as a literal.

This is the part of the proxy's CPU per query that the code controls; the
socket system calls and wake-ups (measured by bench_proxy.py) come on top.
Each runtime (CPython: this interpreter; PyPy: .venv-pypy) runs in its own
process, one per round, rounds and runtimes interleaved; each process first
runs WARM statements per arm uncounted (plan cache, PyPy's JIT); medians are
printed.

    .venv/bin/python bench/bench_proxy_path.py --rounds 5 --statements 20000
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mdriver.config import load_config  # noqa: E402
from mdriver.wire import auth  # noqa: E402
from mdriver.wire import constants as c  # noqa: E402
from mdriver.wire.framing import frame  # noqa: E402
from mdriver.wire.packets import (  # noqa: E402
    EOF,
    OK,
    ColumnDefinition,
    HandshakeResponse41,
    StmtPrepareOK,
    make_column_definition,
    make_eof,
    make_handshake_response41,
    make_ok,
    make_stmt_prepare_ok,
)
from mdriver.wire.values import make_binary_row, make_text_row  # noqa: E402
from proxy.backend import BackendConnection  # noqa: E402
from proxy.frontend import ClientConnection  # noqa: E402
from proxy.pool import PoolSettings  # noqa: E402
from proxy.server import ProxyServer, ServerOptions  # noqa: E402
from proxy.session import PreparedStatement  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_proxy import RUNTIMES, runtimes_arg  # noqa: E402

CONFIG = os.path.join(ROOT, "config", "sbtest.yaml")
SQL = "SELECT c FROM sbtest1 WHERE id=?"
VALUE = "59031098615-61840096525-74997930170-34803068136-80542335836-88073528934-19685291134-58"
COLUMN = ColumnDefinition("c", c.MYSQL_TYPE_STRING, "sbtest_29", "sbtest1", "sbtest1_0940", "c", c.UTF8MB4_GENERAL_CI, 480)
STATUS = c.SERVER_STATUS_AUTOCOMMIT


def _response(payloads) -> bytes:
    return b"".join(frame(p, i + 1) for i, p in enumerate(payloads))


PREPARE_RESPONSE = _response([make_stmt_prepare_ok(StmtPrepareOK(7, 1, 1)), make_column_definition(ColumnDefinition("?", c.MYSQL_TYPE_LONGLONG)),
                              make_eof(EOF(0, STATUS)), make_column_definition(COLUMN), make_eof(EOF(0, STATUS))])
BINARY_RESPONSE = _response([b"\x01", make_column_definition(COLUMN), make_eof(EOF(0, STATUS)),
                             make_binary_row([VALUE], [(c.MYSQL_TYPE_STRING, 0, 0)]), make_eof(EOF(0, STATUS))])
TEXT_RESPONSE = _response([b"\x01", make_column_definition(COLUMN), make_eof(EOF(0, STATUS)), make_text_row([VALUE]),
                           make_eof(EOF(0, STATUS))])
OK_RESPONSE = frame(make_ok(OK(0, 0, STATUS)), 1)


class ClientSide:
    """The client's end of the socket: collects what the proxy writes."""

    def __init__(self):
        self.out: list[bytes] = []

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 50000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def close(self) -> None:
        pass

    abort = close

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    resume_reading = pause_reading


class BackendSide(ClientSide):
    """A backend's end: answers each command the proxy sends with a canned response."""

    def __init__(self):
        super().__init__()
        self.pending: list[bytes] = []
        self.commands: set[int] = set()

    def write(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            n = int.from_bytes(data[pos:pos + 3], "little")
            cmd = data[pos + 4]
            self.commands.add(cmd)
            pos += 4 + n
            if cmd == c.COM_STMT_PREPARE:
                self.pending.append(PREPARE_RESPONSE)
            elif cmd == c.COM_STMT_EXECUTE:
                self.pending.append(BINARY_RESPONSE)
            elif cmd == c.COM_QUERY:
                self.pending.append(TEXT_RESPONSE if data[pos - n + 1:pos - n + 7].upper() == b"SELECT" else OK_RESPONSE)
            elif cmd != c.COM_STMT_CLOSE:
                self.pending.append(OK_RESPONSE)


class Path:
    """One proxy, one logged-in client, two idle connections per datasource."""

    def __init__(self, backend_statements: int):
        self.loop = asyncio.new_event_loop()
        config = load_config(CONFIG)
        options = ServerOptions(metrics=False, pool=PoolSettings(statements=backend_statements))
        self.server = srv = ProxyServer(config, options, self.loop)
        srv.accepting = True
        self.backends = []
        for pool in srv.pools.pools.values():
            for _ in range(2):
                conn = BackendConnection(pool.ds, self.loop, 0, 10.0, backend_statements)
                conn.connection_made(BackendSide())
                conn.connection_id = len(self.backends) + 1
                conn.pool, conn.watchdog = pool, pool.inflight
                pool.total += 1
                pool._hand_over(conn)  # noqa: SLF001 - as a finished login does
                self.backends.append(conn)
        self.client = ClientConnection(srv)
        self.wire = ClientSide()
        self.client.connection_made(self.wire)
        user, spec = next(iter(config.proxy.users.items()))
        caps = (c.CLIENT_PROTOCOL_41 | c.CLIENT_SECURE_CONNECTION | c.CLIENT_PLUGIN_AUTH | c.CLIENT_CONNECT_WITH_DB
                | c.CLIENT_TRANSACTIONS | c.CLIENT_MULTI_RESULTS)
        login = HandshakeResponse41(caps, 1 << 24, c.UTF8MB4_GENERAL_CI, user,
                                    auth.native_scramble(spec.password.encode(), self.client.nonce), database=spec.schemas[0],
                                    auth_plugin=auth.NATIVE_PASSWORD)
        self.client.data_received(frame(make_handshake_response41(login), 1))
        if self.client.session is None:
            raise RuntimeError(f"login failed: {b''.join(self.wire.out)!r}")
        session = self.client.session
        session.statements[1] = PreparedStatement(1, SQL, 1, [], kind="SELECT")

    def run(self, packet: bytes) -> bytes:
        """One statement through the whole path; returns what the client got."""
        self.wire.out.clear()
        self.client.data_received(packet)
        for conn in self.backends:
            side = conn.transport
            while side.pending:
                data = b"".join(side.pending)
                side.pending.clear()
                conn.data_received(data)
        return b"".join(self.wire.out)


def execute_packet(key: int) -> bytes:
    return frame(b"\x17" + (1).to_bytes(4, "little") + b"\x00" + (1).to_bytes(4, "little") + b"\x00\x01"
                 + bytes((c.MYSQL_TYPE_LONGLONG, 0)) + key.to_bytes(8, "little"), 0)


def query_packet(key: int) -> bytes:
    return frame(b"\x03" + f"SELECT c FROM sbtest1 WHERE id={key}".encode(), 0)


ARMS = {
    "execute": (1024, execute_packet),
    "execute-text": (0, execute_packet),
    "query": (1024, query_packet),
}


WARM = 5000


def measure(path: Path, make, statements: int) -> float:
    packets = [make(1 + (i * 7919) % 100_000) for i in range(1000)]
    for i in range(WARM):  # warm: plans, point routes, backend statements, a JIT
        path.run(packets[i % 1000])
    start = time.process_time()
    for i in range(statements):
        path.run(packets[i % 1000])
    return (time.process_time() - start) / statements * 1e6


def one_round(statements: int, reverse: bool) -> dict[str, float]:
    """One process's round: every arm once, checked first (what the proxy sends and answers)."""
    paths = {name: Path(stmts) for name, (stmts, _) in ARMS.items()}
    for name, (_, make) in ARMS.items():
        got = paths[name].run(make(5))
        if VALUE.encode() not in got or got[4] != 1:
            raise RuntimeError(f"{name}: unexpected response {got[:80]!r}")
        forwarded = any(c.COM_STMT_EXECUTE in conn.transport.commands for conn in paths[name].backends)
        if forwarded != (name == "execute"):
            raise RuntimeError(f"{name}: the backends {'got' if forwarded else 'did not get'} COM_STMT_EXECUTE")
    names = list(reversed(ARMS)) if reverse else list(ARMS)
    return {name: measure(paths[name], ARMS[name][1], statements) for name in names}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--statements", type=int, default=20000, help="statements per arm and round")
    runtimes_arg(ap)
    ap.add_argument("--one-round", action="store_true", help=argparse.SUPPRESS)  # a child: print one round as JSON
    ap.add_argument("--reverse", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one_round:
        print(json.dumps(one_round(args.statements, args.reverse)))
        return 0
    results: dict[str, dict[str, list[float]]] = {rt: {name: [] for name in ARMS} for rt in args.runtimes}
    for r in range(args.rounds):
        for runtime in (args.runtimes if r % 2 == 0 else list(reversed(args.runtimes))):
            cmd = [RUNTIMES[runtime], os.path.abspath(__file__), "--one-round", "--statements", str(args.statements)]
            out = subprocess.run(cmd + (["--reverse"] if r % 2 else []), capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"the {runtime} round failed ({out.returncode}):\n{out.stderr[-3000:]}")
            for name, us in json.loads(out.stdout).items():
                results[runtime][name].append(us)
    print("| statement | " + " | ".join(f"{rt} (median)" for rt in args.runtimes) + " |")
    print("|---|" + "---|" * len(args.runtimes))
    for name in ARMS:
        print(f"| {name} | " + " | ".join(f"{statistics.median(results[rt][name]):.1f} us" for rt in args.runtimes) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
