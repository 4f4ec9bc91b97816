"""Connection-phase and generic response packets as dataclasses with pure parse/make functions.

Payloads only (no frame header); :mod:`mdriver.wire.framing` adds it.
``capabilities`` arguments are the negotiated flags, which decide the layout.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mdriver.wire import constants as c
from mdriver.wire.codec import ProtocolError, Reader, int1, int2, int4, lenenc_int, lenenc_str

_FILLER_23 = bytes(23)


# --- connection phase -------------------------------------------------------

@dataclass(frozen=True)
class HandshakeV10:
    server_version: str
    connection_id: int
    auth_data: bytes  # the scramble (20 bytes for the built-in plugins)
    capabilities: int
    charset: int = c.UTF8MB4_GENERAL_CI
    status: int = c.SERVER_STATUS_AUTOCOMMIT
    auth_plugin: str = "mysql_native_password"
    mariadb_capabilities: int = 0  # extended flags a MariaDB server sends when CLIENT_MYSQL is clear


def make_handshake_v10(h: HandshakeV10) -> bytes:
    caps = h.capabilities
    data = h.auth_data
    part1, part2 = data[:8], data[8:]
    out = bytearray(b"\x0a")
    out += h.server_version.encode("utf-8") + b"\0"
    out += int4(h.connection_id) + part1.ljust(8, b"\0") + b"\0"
    out += int2(caps) + int1(h.charset) + int2(h.status) + int2(caps >> 16)
    out += int1(len(data) + 1 if caps & c.CLIENT_PLUGIN_AUTH else 0)
    out += bytes(6) + int4(h.mariadb_capabilities)
    if caps & c.CLIENT_SECURE_CONNECTION:
        out += part2.ljust(12, b"\0") + b"\0"
    if caps & c.CLIENT_PLUGIN_AUTH:
        out += h.auth_plugin.encode("ascii") + b"\0"
    return bytes(out)


def parse_handshake_v10(payload: bytes) -> HandshakeV10:
    r = Reader(payload)
    version = r.int1()
    if version != 10:
        raise ProtocolError(f"unsupported handshake protocol version {version}")
    server_version = r.nul_str().decode("utf-8", "replace")
    connection_id = r.int4()
    part1 = r.fixed(8)
    r.skip(1)
    caps = r.int2()
    charset = status = 0
    auth_len = 0
    mariadb_caps = 0
    part2 = b""
    plugin = "mysql_native_password"
    if not r.at_end():
        charset = r.int1()
        status = r.int2()
        caps |= r.int2() << 16
        auth_len = r.int1()
        r.skip(6)
        mariadb_caps = r.int4()
        if caps & c.CLIENT_SECURE_CONNECTION:
            n = max(13, auth_len - 8)
            part2 = r.fixed(min(n, r.remaining()))
            if part2.endswith(b"\0"):
                part2 = part2[:-1]
        if caps & c.CLIENT_PLUGIN_AUTH:
            plugin = r.nul_str_or_rest().decode("ascii", "replace")
    return HandshakeV10(server_version, connection_id, part1 + part2, caps, charset, status, plugin,
                        mariadb_caps if not caps & c.CLIENT_LONG_PASSWORD else 0)


@dataclass(frozen=True)
class HandshakeResponse41:
    capabilities: int
    max_packet: int
    charset: int
    user: str
    auth_response: bytes = b""
    database: str | None = None
    auth_plugin: str | None = None
    attrs: dict[str, str] = field(default_factory=dict)


def is_ssl_request(payload: bytes) -> bool:
    """A 32-byte response with CLIENT_SSL set asks to switch to TLS before the real response."""
    return len(payload) == 32 and bool(int.from_bytes(payload[:4], "little") & c.CLIENT_SSL)


def make_ssl_request(capabilities: int, max_packet: int, charset: int) -> bytes:
    return int4(capabilities | c.CLIENT_SSL) + int4(max_packet) + int1(charset) + _FILLER_23


def make_handshake_response41(h: HandshakeResponse41) -> bytes:
    caps = h.capabilities
    out = bytearray(int4(caps) + int4(h.max_packet) + int1(h.charset) + _FILLER_23)
    out += h.user.encode("utf-8") + b"\0"
    if caps & c.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        out += lenenc_str(h.auth_response)
    elif caps & c.CLIENT_SECURE_CONNECTION:
        out += int1(len(h.auth_response)) + h.auth_response
    else:
        out += h.auth_response + b"\0"
    if caps & c.CLIENT_CONNECT_WITH_DB:
        out += (h.database or "").encode("utf-8") + b"\0"
    if caps & c.CLIENT_PLUGIN_AUTH:
        out += (h.auth_plugin or "").encode("ascii") + b"\0"
    if caps & c.CLIENT_CONNECT_ATTRS:
        attrs = b"".join(lenenc_str(k.encode("utf-8")) + lenenc_str(v.encode("utf-8")) for k, v in h.attrs.items())
        out += lenenc_str(attrs)
    return bytes(out)


def parse_handshake_response41(payload: bytes) -> HandshakeResponse41:
    r = Reader(payload)
    caps = r.int4()
    if not caps & c.CLIENT_PROTOCOL_41:
        raise ProtocolError("client does not speak protocol 4.1 (CLIENT_PROTOCOL_41 not set)")
    max_packet = r.int4()
    charset = r.int1()
    r.skip(23)
    user = r.nul_str_or_rest().decode("utf-8", "replace")
    auth = b""
    if not r.at_end():
        if caps & c.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
            auth = r.lenenc_str()
        elif caps & c.CLIENT_SECURE_CONNECTION:
            auth = r.fixed(r.int1())
        else:
            auth = r.nul_str_or_rest()
    database = None
    if caps & c.CLIENT_CONNECT_WITH_DB and not r.at_end():
        database = r.nul_str_or_rest().decode("utf-8", "replace") or None
    plugin = None
    if caps & c.CLIENT_PLUGIN_AUTH and not r.at_end():
        plugin = r.nul_str_or_rest().decode("ascii", "replace") or None
    attrs: dict[str, str] = {}
    if caps & c.CLIENT_CONNECT_ATTRS and not r.at_end():
        block = Reader(r.lenenc_str())
        while not block.at_end():
            key = block.lenenc_str().decode("utf-8", "replace")
            attrs[key] = block.lenenc_str().decode("utf-8", "replace")
    return HandshakeResponse41(caps, max_packet, charset, user, auth, database, plugin, attrs)


@dataclass(frozen=True)
class AuthSwitchRequest:
    plugin: str
    data: bytes  # the new scramble, without the trailing NUL


def make_auth_switch_request(a: AuthSwitchRequest) -> bytes:
    return b"\xfe" + a.plugin.encode("ascii") + b"\0" + a.data + b"\0"


def parse_auth_switch_request(payload: bytes) -> AuthSwitchRequest:
    r = Reader(payload)
    if r.int1() != c.AUTH_SWITCH_HEADER:
        raise ProtocolError("not an auth switch request")
    plugin = r.nul_str_or_rest().decode("ascii", "replace")
    data = r.rest()
    if data.endswith(b"\0"):
        data = data[:-1]
    return AuthSwitchRequest(plugin, data)


def make_auth_more_data(data: bytes) -> bytes:
    return b"\x01" + data


def parse_auth_more_data(payload: bytes) -> bytes:
    if not payload or payload[0] != c.AUTH_MORE_DATA_HEADER:
        raise ProtocolError("not an auth-more-data packet")
    return payload[1:]


@dataclass(frozen=True)
class ChangeUser:
    user: str
    auth_response: bytes
    database: str | None
    charset: int | None
    auth_plugin: str | None
    attrs: dict[str, str] = field(default_factory=dict)


def parse_change_user(payload: bytes, capabilities: int) -> ChangeUser:
    """COM_CHANGE_USER (including its command byte)."""
    r = Reader(payload, 1)
    user = r.nul_str().decode("utf-8", "replace")
    if capabilities & c.CLIENT_SECURE_CONNECTION:
        auth = r.fixed(r.int1())
    else:
        auth = r.nul_str()
    database = r.nul_str_or_rest().decode("utf-8", "replace") or None
    charset = plugin = None
    attrs: dict[str, str] = {}
    if r.remaining() >= 2:
        charset = r.int2()
    if capabilities & c.CLIENT_PLUGIN_AUTH and not r.at_end():
        plugin = r.nul_str_or_rest().decode("ascii", "replace") or None
    if capabilities & c.CLIENT_CONNECT_ATTRS and not r.at_end():
        block = Reader(r.lenenc_str())
        while not block.at_end():
            key = block.lenenc_str().decode("utf-8", "replace")
            attrs[key] = block.lenenc_str().decode("utf-8", "replace")
    return ChangeUser(user, auth, database, charset, plugin, attrs)


def make_change_user(cu: ChangeUser, capabilities: int) -> bytes:
    out = bytearray(b"\x11" + cu.user.encode("utf-8") + b"\0")
    if capabilities & c.CLIENT_SECURE_CONNECTION:
        out += int1(len(cu.auth_response)) + cu.auth_response
    else:
        out += cu.auth_response + b"\0"
    out += (cu.database or "").encode("utf-8") + b"\0"
    out += int2(cu.charset if cu.charset is not None else c.UTF8MB4_GENERAL_CI)
    if capabilities & c.CLIENT_PLUGIN_AUTH:
        out += (cu.auth_plugin or "").encode("ascii") + b"\0"
    if capabilities & c.CLIENT_CONNECT_ATTRS:
        attrs = b"".join(lenenc_str(k.encode("utf-8")) + lenenc_str(v.encode("utf-8")) for k, v in cu.attrs.items())
        out += lenenc_str(attrs)
    return bytes(out)


# --- generic responses ------------------------------------------------------

@dataclass(frozen=True)
class OK:
    affected_rows: int = 0
    last_insert_id: int = 0
    status: int = c.SERVER_STATUS_AUTOCOMMIT
    warnings: int = 0
    info: bytes = b""
    session_state: bytes = b""


def make_ok(ok: OK, capabilities: int = c.CLIENT_PROTOCOL_41, eof: bool = False) -> bytes:
    """An OK packet; ``eof=True`` gives the 0xFE-headed OK that ends a result set under DEPRECATE_EOF."""
    out = bytearray(b"\xfe" if eof else b"\x00")
    out += lenenc_int(ok.affected_rows) + lenenc_int(ok.last_insert_id)
    if capabilities & c.CLIENT_PROTOCOL_41:
        out += int2(ok.status) + int2(ok.warnings)
    if capabilities & c.CLIENT_SESSION_TRACK:
        if ok.info or ok.status & c.SERVER_SESSION_STATE_CHANGED:
            out += lenenc_str(ok.info)
            if ok.status & c.SERVER_SESSION_STATE_CHANGED:
                out += lenenc_str(ok.session_state)
    else:
        out += ok.info
    return bytes(out)


def parse_ok(payload: bytes, capabilities: int = c.CLIENT_PROTOCOL_41) -> OK:
    r = Reader(payload)
    header = r.int1()
    if header not in (c.OK_HEADER, c.EOF_HEADER):
        raise ProtocolError(f"0x{header:02x} is not an OK packet header")
    affected = r.lenenc_int()
    insert_id = r.lenenc_int()
    status = warnings = 0
    if capabilities & c.CLIENT_PROTOCOL_41:
        status = r.int2()
        warnings = r.int2()
    info = state = b""
    if capabilities & c.CLIENT_SESSION_TRACK:
        if not r.at_end():
            info = r.lenenc_str()
            if status & c.SERVER_SESSION_STATE_CHANGED and not r.at_end():
                state = r.lenenc_str()
    else:
        info = r.rest()
    return OK(affected, insert_id, status, warnings, info, state)


@dataclass(frozen=True)
class ERR:
    errno: int
    message: str
    sqlstate: str = "HY000"


def make_err(e: ERR, capabilities: int = c.CLIENT_PROTOCOL_41) -> bytes:
    out = b"\xff" + int2(e.errno)
    if capabilities & c.CLIENT_PROTOCOL_41:
        out += b"#" + e.sqlstate.encode("ascii")[:5].ljust(5, b"0")
    return out + e.message.encode("utf-8")


def parse_err(payload: bytes) -> ERR:
    r = Reader(payload)
    if r.int1() != c.ERR_HEADER:
        raise ProtocolError("not an ERR packet")
    errno = r.int2()
    sqlstate = "HY000"
    if r.remaining() >= 6 and payload[r.pos] == 0x23:  # '#'
        r.skip(1)
        sqlstate = r.fixed(5).decode("ascii", "replace")
    return ERR(errno, r.rest().decode("utf-8", "replace"), sqlstate)


@dataclass(frozen=True)
class EOF:
    warnings: int = 0
    status: int = c.SERVER_STATUS_AUTOCOMMIT


def make_eof(e: EOF) -> bytes:
    return b"\xfe" + int2(e.warnings) + int2(e.status)


def parse_eof(payload: bytes) -> EOF:
    if not is_eof(payload):
        raise ProtocolError("not an EOF packet")
    if len(payload) < 5:
        return EOF(0, 0)
    r = Reader(payload, 1)
    return EOF(r.int2(), r.int2())


def is_eof(payload: bytes) -> bool:
    """EOF (or the OK that replaces it): header 0xFE in a packet too short to be a row."""
    return len(payload) < 9 and bool(payload) and payload[0] == c.EOF_HEADER


def is_end_of_rows(payload: bytes) -> bool:
    """Ends a row stream under either EOF mode: a 0xFE header in a packet shorter than 16 MiB - 1.

    A text row can begin with 0xFE only as a length-encoded string of 2^24 bytes
    or more, which needs a packet of at least 16 MiB.
    """
    return bool(payload) and payload[0] == c.EOF_HEADER and len(payload) < 0xFFFFFF


def status_of_end(payload: bytes, capabilities: int) -> int:
    """Server status of the packet that ends a row stream (EOF, or OK under DEPRECATE_EOF)."""
    if capabilities & c.CLIENT_DEPRECATE_EOF:
        return parse_ok(payload, capabilities).status
    return parse_eof(payload).status


# --- result set metadata ----------------------------------------------------

@dataclass(frozen=True)
class ColumnDefinition:
    name: str
    type: int
    schema: str = ""
    table: str = ""
    org_table: str = ""
    org_name: str = ""
    charset: int = c.UTF8MB4_GENERAL_CI
    length: int = 0
    flags: int = 0
    decimals: int = 0
    catalog: str = "def"
    default: bytes | None = None  # only in COM_FIELD_LIST responses


def make_column_definition(col: ColumnDefinition, field_list: bool = False) -> bytes:
    out = bytearray()
    for s in (col.catalog, col.schema, col.table, col.org_table, col.name, col.org_name):
        out += lenenc_str(s.encode("utf-8"))
    out += b"\x0c" + int2(col.charset) + int4(col.length) + int1(col.type) + int2(col.flags) + int1(col.decimals) + b"\0\0"
    if field_list:
        out += b"\xfb" if col.default is None else lenenc_str(col.default)
    return bytes(out)


def parse_column_definition(payload: bytes) -> ColumnDefinition:
    r = Reader(payload)
    catalog, schema, table, org_table, name, org_name = (r.lenenc_str().decode("utf-8", "replace") for _ in range(6))
    fixed_len = r.lenenc_int()
    if fixed_len < 10:
        raise ProtocolError(f"column definition fixed part is {fixed_len} bytes, expected 12")
    start = r.pos
    charset = r.int2()
    length = r.int4()
    type_ = r.int1()
    flags = r.int2()
    decimals = r.int1()
    r.pos = start
    r.skip(fixed_len)
    default = None
    if not r.at_end():
        default = r.lenenc_str_or_null()
    return ColumnDefinition(name, type_, schema, table, org_table, org_name, charset, length, flags, decimals, catalog, default)


def parse_column_count(payload: bytes) -> int:
    return Reader(payload).lenenc_int()


@dataclass(frozen=True)
class StmtPrepareOK:
    statement_id: int
    num_columns: int
    num_params: int
    warnings: int = 0


def make_stmt_prepare_ok(p: StmtPrepareOK) -> bytes:
    return b"\x00" + int4(p.statement_id) + int2(p.num_columns) + int2(p.num_params) + b"\x00" + int2(p.warnings)


def parse_stmt_prepare_ok(payload: bytes) -> StmtPrepareOK:
    r = Reader(payload)
    if r.int1() != c.OK_HEADER:
        raise ProtocolError("not a COM_STMT_PREPARE OK packet")
    stmt_id = r.int4()
    cols = r.int2()
    params = r.int2()
    warnings = 0
    if r.remaining() >= 3:
        r.skip(1)
        warnings = r.int2()
    return StmtPrepareOK(stmt_id, cols, params, warnings)


# --- simple commands ---------------------------------------------------------

def make_command(command: int, arg: bytes = b"") -> bytes:
    return bytes((command,)) + arg


def make_stmt_id_command(command: int, statement_id: int) -> bytes:
    """COM_STMT_CLOSE / COM_STMT_RESET."""
    return bytes((command,)) + int4(statement_id)


def parse_stmt_id(payload: bytes) -> int:
    return Reader(payload, 1).int4()


@dataclass(frozen=True)
class SendLongData:
    statement_id: int
    param_id: int
    data: bytes


def make_send_long_data(s: SendLongData) -> bytes:
    return b"\x18" + int4(s.statement_id) + int2(s.param_id) + s.data


def parse_send_long_data(payload: bytes) -> SendLongData:
    r = Reader(payload, 1)
    return SendLongData(r.int4(), r.int2(), r.rest())


def parse_field_list(payload: bytes) -> tuple[bytes, bytes]:
    """COM_FIELD_LIST: (table, wildcard)."""
    r = Reader(payload, 1)
    return r.nul_str_or_rest(), r.rest()


def parse_set_option(payload: bytes) -> int:
    return Reader(payload, 1).int2()
