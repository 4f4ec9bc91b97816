"""A minimal blocking MySQL client made of mdriver.wire, to test the binary protocol byte for byte.

It is a second, independent client for the proxy (PyMySQL has no
server-side prepared statements); every packet it reads is parsed strictly.
"""
from __future__ import annotations

import socket

from mdriver.wire import auth
from mdriver.wire import constants as c
from mdriver.wire.framing import PacketBuffer, frame
from mdriver.wire.packets import (
    HandshakeResponse41,
    SendLongData,
    is_eof,
    make_handshake_response41,
    make_send_long_data,
    parse_column_definition,
    parse_err,
    parse_handshake_v10,
    parse_ok,
    parse_stmt_prepare_ok,
)
from mdriver.wire.statements import make_stmt_execute
from mdriver.wire.values import decode_text, parse_binary_row, parse_text_row


class ServerError(Exception):
    def __init__(self, errno: int, message: str):
        super().__init__(errno, message)
        self.errno = errno


class WireClient:
    def __init__(self, port: int, user: str = "app", password: str = "app-secret", database: str | None = "app",
                 deprecate_eof: bool = False, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.buf = PacketBuffer()
        self.caps = (c.CLIENT_PROTOCOL_41 | c.CLIENT_SECURE_CONNECTION | c.CLIENT_PLUGIN_AUTH | c.CLIENT_LONG_FLAG
                     | c.CLIENT_TRANSACTIONS | c.CLIENT_MULTI_RESULTS | (c.CLIENT_CONNECT_WITH_DB if database else 0)
                     | (c.CLIENT_DEPRECATE_EOF if deprecate_eof else 0))
        _, payload = self.read()
        hs = parse_handshake_v10(payload)
        resp = HandshakeResponse41(self.caps, 1 << 24, 45, user, auth.native_scramble(password.encode(), hs.auth_data),
                                   database, "mysql_native_password")
        self.sock.sendall(frame(make_handshake_response41(resp), 1))
        self.expect_ok()

    def read(self) -> tuple[int, bytes]:
        while True:
            p = self.buf.next_packet()
            if p is not None:
                return p
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buf.feed(data)

    def send(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload, 0))

    def _check(self, payload: bytes) -> bytes:
        if payload[:1] == b"\xff":
            e = parse_err(payload)
            raise ServerError(e.errno, e.message)
        return payload

    def expect_ok(self):
        return parse_ok(self._check(self.read()[1]), self.caps)

    def _definitions(self, n: int) -> list:
        defs = [parse_column_definition(self.read()[1]) for _ in range(n)]
        if n and not self.caps & c.CLIENT_DEPRECATE_EOF:
            assert is_eof(self.read()[1])
        return defs

    def _result(self, binary: bool):
        """(columns, rows) or an OK packet."""
        first = self._check(self.read()[1])
        if first[0] == 0x00:
            return parse_ok(first, self.caps)
        n = first[0]
        cols = [parse_column_definition(self.read()[1]) for _ in range(n)]
        if not self.caps & c.CLIENT_DEPRECATE_EOF:
            assert is_eof(self.read()[1])
        rows = []
        while True:
            payload = self._check(self.read()[1])
            if payload[0] == 0xFE and len(payload) < 0xFFFFFF:
                break
            if binary:
                rows.append(tuple(parse_binary_row(payload, [(cd.type, cd.flags, cd.charset) for cd in cols])))
            else:
                rows.append(tuple(decode_text(v, cd.type, cd.charset) for v, cd in zip(parse_text_row(payload, n), cols)))
        return cols, rows

    def query(self, sql: str):
        self.send(b"\x03" + sql.encode())
        return self._result(False)

    def prepare(self, sql: str):
        self.send(b"\x16" + sql.encode())
        ok = parse_stmt_prepare_ok(self._check(self.read()[1]))
        params = self._definitions(ok.num_params)
        cols = self._definitions(ok.num_columns)
        return ok, params, cols

    def execute(self, stmt_id: int, values, types=None, send_types: bool = True, long_data=frozenset()):
        self.send(make_stmt_execute(stmt_id, values, types, send_types=send_types, long_data_params=long_data))
        return self._result(True)

    def send_long_data(self, stmt_id: int, param: int, data: bytes) -> None:
        self.send(make_send_long_data(SendLongData(stmt_id, param, data)))

    def close_statement(self, stmt_id: int) -> None:
        self.send(b"\x19" + stmt_id.to_bytes(4, "little"))

    def reset_statement(self, stmt_id: int):
        self.send(b"\x1a" + stmt_id.to_bytes(4, "little"))
        return self.expect_ok()

    def close(self) -> None:
        try:
            self.send(b"\x01")
        finally:
            self.sock.close()
