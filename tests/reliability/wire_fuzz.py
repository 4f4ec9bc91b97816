"""Protocol fuzz cases for the proxy and the raw client that plays them.

A case is bytes sent on a fresh connection, before or after a correct login.
The client then watches what the proxy does: an ERR packet (``error``), a
normal answer (``answered``), a close (``closed``) or nothing (``silent``,
e.g. it waits for the rest of a packet we never send). Finally it half-closes
its side: a proxy that does not close the connection then is ``stuck``.
"""
from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass
from typing import Callable

from mdriver.wire import auth
from mdriver.wire import constants as c
from mdriver.wire.framing import MAX_FRAME, PacketBuffer, frame
from mdriver.wire.packets import (
    HandshakeResponse41, make_handshake_response41, make_ssl_request, parse_handshake_v10, parse_stmt_prepare_ok,
)
from mdriver.wire.statements import make_stmt_execute

CAPS = (c.CLIENT_PROTOCOL_41 | c.CLIENT_SECURE_CONNECTION | c.CLIENT_PLUGIN_AUTH | c.CLIENT_LONG_FLAG
        | c.CLIENT_TRANSACTIONS | c.CLIENT_MULTI_RESULTS | c.CLIENT_CONNECT_WITH_DB)
PREPARED_SQL = "SELECT id, remark FROM user_relation WHERE uid = ? AND remark <> ?"


class Closed(Exception):
    pass


@dataclass(frozen=True)
class Case:
    name: str
    category: str  # pre-auth | post-auth | prepared | size
    payload: Callable[["FuzzConn", random.Random], bytes]  # the bytes to send, built on the live connection
    respond_wait: float = 1.0


@dataclass(frozen=True)
class Result:
    case: str
    category: str
    outcome: str  # error | answered | closed | silent | stuck | connect-refused
    detail: str = ""


class FuzzConn:
    """A raw MySQL client connection that can log in and then send anything."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 10.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = PacketBuffer()
        seq, payload = self.read(timeout)
        if payload[:1] == b"\xff":
            raise Closed(f"refused at connect: {payload[3:].decode('utf-8', 'replace')}")
        self.handshake = parse_handshake_v10(payload)
        self.nonce = self.handshake.auth_data[:20]

    def read(self, timeout: float) -> tuple[int, bytes] | None:
        deadline = time.monotonic() + timeout
        while True:
            p = self.buf.next_packet()
            if p is not None:
                return p
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                return None
            except OSError as e:
                raise Closed(str(e)) from None
            if not data:
                raise Closed("closed by the proxy")
            self.buf.feed(data)

    def login_payload(self, user: str = "app", password: str = "app-secret", database: str | None = "app") -> bytes:
        return make_handshake_response41(HandshakeResponse41(
            CAPS, 1 << 24, 45, user, auth.native_scramble(password.encode(), self.nonce), database, "mysql_native_password"))

    def login(self) -> None:
        self.sock.sendall(frame(self.login_payload(), 1))
        p = self.read(10)
        if p is None or p[1][:1] != b"\x00":
            raise AssertionError(f"the fuzz client could not log in: {p!r}")

    def command(self, payload: bytes, timeout: float = 10) -> list[bytes]:
        """Send a well-formed command and read its response (for set-up steps)."""
        self.sock.sendall(frame(payload, 0))
        first = self.read(timeout)
        if first is None:
            raise AssertionError("no answer to a set-up command")
        return [first[1]]

    def prepare(self, sql: str) -> tuple[int, int]:
        """COM_STMT_PREPARE; returns (statement id, number of parameters)."""
        self.sock.sendall(frame(b"\x16" + sql.encode(), 0))
        p = self.read(10)
        if p is None or p[1][:1] != b"\x00":
            raise AssertionError(f"prepare failed: {p!r}")
        ok = parse_stmt_prepare_ok(p[1])
        for n in (ok.num_params, ok.num_columns):
            if n:
                for _ in range(n + 1):  # definitions and their EOF
                    if self.read(10) is None:
                        raise AssertionError("prepare response incomplete")
        return ok.statement_id, ok.num_params

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def play(port: int, case: Case, rnd: random.Random, source: str, login: bool, close_wait: float = 5.0) -> Result:
    """Run one case on a fresh connection and classify what the proxy did."""
    try:
        conn = FuzzConn(port, source)
    except Closed as e:
        return Result(case.name, case.category, "connect-refused", str(e))
    except OSError as e:
        return Result(case.name, case.category, "connect-refused", f"{type(e).__name__}: {e}")
    try:
        if login:
            conn.login()
        data = case.payload(conn, rnd)
        try:
            conn.sock.sendall(data)
        except OSError:
            return Result(case.name, case.category, "closed", "closed while we were sending")
        try:
            first = conn.read(case.respond_wait)
        except Closed:
            return Result(case.name, case.category, "closed")
        if first is None:
            outcome, detail = "silent", ""
        elif first[1][:1] == b"\xff":
            outcome, detail = "error", first[1][3:120].decode("utf-8", "replace")
        else:
            outcome, detail = "answered", first[1][:16].hex()
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return Result(case.name, case.category, outcome, detail)
        deadline = time.monotonic() + close_wait
        try:
            while time.monotonic() < deadline:
                conn.read(max(0.01, deadline - time.monotonic()))
        except Closed:
            return Result(case.name, case.category, outcome, detail)
        return Result(case.name, case.category, "stuck", f"after {outcome}: still open {close_wait:g} s after our EOF")
    finally:
        conn.close()


# -- the cases ----------------------------------------------------------------------------------

def mutate(data: bytes, rnd: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randrange(1, 6)):
        kind = rnd.randrange(4)
        if kind == 0 and b:
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        elif kind == 1 and b:
            i = rnd.randrange(len(b))
            del b[i:i + rnd.randrange(1, 8)]
        elif kind == 2:
            i = rnd.randrange(len(b) + 1)
            b[i:i] = rnd.randbytes(rnd.randrange(1, 16))
        elif b:
            i = rnd.randrange(len(b))
            b[i] ^= 1 << rnd.randrange(8)
    return bytes(b)


def _lenenc_huge() -> bytes:
    return b"\xfe" + (2 ** 62).to_bytes(8, "little")


VALID_COMMANDS = [
    b"\x03SELECT 1", b"\x03SELECT id, remark FROM user_relation WHERE uid = 5", b"\x03SELECT COUNT(*) FROM user_relation",
    b"\x02app", b"\x04user_relation\x00", b"\x16" + PREPARED_SQL.encode(), b"\x0e", b"\x09", b"\x1b\x00\x00",
    b"\x19\x01\x00\x00\x00", b"\x1a\x01\x00\x00\x00", b"\x1c\x01\x00\x00\x00\x01\x00\x00\x00", b"\x1f",
    b"\x03BEGIN", b"\x03INSERT INTO user_relation (id, uid, target_uid) VALUES (1, 5, 1)", b"\x03ROLLBACK",
    b"\x11app\x00\x00app\x00\x2d\x00mysql_native_password\x00",
]


def pre_auth_cases() -> list[Case]:
    return [
        Case("random bytes", "pre-auth", lambda conn, r: r.randbytes(r.randrange(0, 400))),
        Case("random packet", "pre-auth", lambda conn, r: frame(r.randbytes(r.randrange(0, 400)), 1)),
        Case("mutated login", "pre-auth", lambda conn, r: frame(mutate(conn.login_payload(), r), 1)),
        Case("truncated login", "pre-auth",
             lambda conn, r: frame(conn.login_payload()[: r.randrange(0, len(conn.login_payload()))], 1)),
        Case("truncated frame", "pre-auth", lambda conn, r: frame(conn.login_payload(), 1)[: r.randrange(1, 40)]),
        Case("login with wrong sequence id", "pre-auth", lambda conn, r: frame(conn.login_payload(), r.choice([0, 2, 3, 200, 255]))),
        Case("oversized login packet", "pre-auth",
             lambda conn, r: (r.randrange(17_000, MAX_FRAME)).to_bytes(3, "little") + b"\x01" + r.randbytes(2000)),
        Case("huge user name", "pre-auth", lambda conn, r: frame(conn.login_payload(user="u" * r.randrange(300, 15000)), 1)),
        Case("TLS request when TLS is not offered", "pre-auth", lambda conn, r: frame(make_ssl_request(CAPS, 1 << 24, 45), 1)),
        Case("empty packet", "pre-auth", lambda conn, r: frame(b"", 1)),
        Case("login without protocol 4.1", "pre-auth", lambda conn, r: frame(b"\x00\x00\x00\x00" + conn.login_payload()[4:], 1)),
        Case("unknown auth plugin", "pre-auth", lambda conn, r: frame(
            make_handshake_response41(HandshakeResponse41(CAPS, 1 << 24, 45, "app", r.randbytes(20), "app", r.choice(
                ["dialog", "auth_gssapi_client", "x" * 200, ""]))), 1)),
        Case("login followed by garbage", "pre-auth", lambda conn, r: frame(conn.login_payload(), 1) + r.randbytes(r.randrange(1, 200))),
    ]


def post_auth_cases() -> list[Case]:
    return [
        Case("random command", "post-auth", lambda conn, r: frame(bytes((r.randrange(256),)) + r.randbytes(r.randrange(0, 300)), 0)),
        Case("mutated command", "post-auth", lambda conn, r: frame(mutate(r.choice(VALID_COMMANDS), r), 0)),
        Case("command with wrong sequence id", "post-auth", lambda conn, r: frame(r.choice(VALID_COMMANDS), r.randrange(1, 256))),
        Case("query of random bytes", "post-auth", lambda conn, r: frame(b"\x03" + r.randbytes(r.randrange(1, 500)), 0)),
        Case("truncated command frame", "post-auth", lambda conn, r: frame(r.choice(VALID_COMMANDS), 0)[: r.randrange(1, 12)]),
        Case("server-only command", "post-auth", lambda conn, r: frame(r.choice([
            b"\x08\x00", b"\x0d", b"\x12" + r.randbytes(10), b"\x05evil", b"\x06app", b"\x07\x01", b"\x0a",
            b"\x0c" + r.randbytes(4), b"\x1d", b"\x13"]), 0)),
        Case("two commands in one write", "post-auth", lambda conn, r: frame(b"\x03SELECT 1", 0) + frame(mutate(b"\x03SELECT 2", r), 0)),
    ]


def _prepared(kind: str) -> Callable[[FuzzConn, random.Random], bytes]:
    def build(conn: FuzzConn, r: random.Random) -> bytes:
        stmt, nparams = conn.prepare(PREPARED_SQL)
        valid = make_stmt_execute(stmt, [5, "x"])
        if kind == "mutated execute":
            body = mutate(valid, r)
        elif kind == "random parameter bytes":
            body = valid[:10] + r.randbytes(r.randrange(0, 200))
        elif kind == "huge length-encoded string":
            body = valid[:10] + b"\x00" + b"\x01" + bytes((c.MYSQL_TYPE_LONGLONG, 0, c.MYSQL_TYPE_VAR_STRING, 0)) \
                + (5).to_bytes(8, "little") + _lenenc_huge() + b"abc"
        elif kind == "unknown statement id":
            body = make_stmt_execute(stmt + r.randrange(1, 1000), [5, "x"])
        elif kind == "no types bound yet":
            body = valid[:10] + b"\x00" + b"\x00" + (5).to_bytes(8, "little")
        elif kind == "wrong parameter count":
            body = make_stmt_execute(stmt, [5, "x", 7, None][: r.choice([0, 1, 3, 4])])
        elif kind == "unknown parameter type":
            body = valid[:10] + b"\x00" + b"\x01" + bytes((r.randrange(20, 240), 0, r.randrange(256), 0)) + r.randbytes(16)
        elif kind == "long data for a missing parameter":
            body = b"\x18" + stmt.to_bytes(4, "little") + r.randrange(2, 60000).to_bytes(2, "little") + r.randbytes(50)
        else:  # truncated execute
            body = valid[: r.randrange(1, len(valid))]
        return frame(body, 0)
    return build


def prepared_cases() -> list[Case]:
    kinds = ["mutated execute", "random parameter bytes", "huge length-encoded string", "unknown statement id",
             "no types bound yet", "wrong parameter count", "unknown parameter type", "long data for a missing parameter",
             "truncated execute"]
    return [Case(f"prepared: {k}", "prepared", _prepared(k)) for k in kinds]


def query_of_payload_size(size: int) -> bytes:
    """A COM_QUERY payload of exactly ``size`` bytes: ``SELECT LENGTH('aaa...')``."""
    head, tail = b"\x03SELECT LENGTH('", b"')"
    return head + b"a" * (size - len(head) - len(tail)) + tail


def size_cases() -> list[tuple[str, int, bool]]:
    """(name, payload size, whether the answer must be the length) around the 16 MiB frame boundary."""
    return [
        ("one byte below a full frame", MAX_FRAME - 1, True),
        ("exactly one full frame (then an empty one)", MAX_FRAME, True),
        ("one byte over a full frame", MAX_FRAME + 1, True),
        ("two full frames and a bit", 2 * MAX_FRAME + 3, True),
    ]
