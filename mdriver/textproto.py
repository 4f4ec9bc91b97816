"""Reading MySQL text-protocol responses on a PyMySQL connection's socket, with column metadata cached.

PyMySQL builds a packet object per packet and a descriptor object per column
for every result; for a point select that is most of its CPU time. Here a
response is read straight from the buffered socket, and the column
definitions, which are byte-identical each time a statement shape runs on a
physical table, are parsed once and looked up by their bytes afterwards.
Values are converted exactly as PyMySQL converts them (same decoders, same
charset rules), so results are identical.

PyMySQL still does the connecting and the authentication; this module only
sends commands and reads their answers (COM_QUERY, COM_INIT_DB, COM_PING).

Timeouts are set on the socket itself (SO_RCVTIMEO/SO_SNDTIMEO) rather than
as Python socket timeouts, which would add a poll() before every read.
"""
from __future__ import annotations

import socket
import struct
from typing import Any

from pymysql import converters
from pymysql.constants import COMMAND, FIELD_TYPE
from pymysql.protocol import FieldDescriptorPacket

from mdriver import err
from mdriver.router.types import Column

_TEXT_TYPES = frozenset((
    FIELD_TYPE.BIT, FIELD_TYPE.BLOB, FIELD_TYPE.LONG_BLOB, FIELD_TYPE.MEDIUM_BLOB, FIELD_TYPE.STRING,
    FIELD_TYPE.TINY_BLOB, FIELD_TYPE.VAR_STRING, FIELD_TYPE.VARCHAR, FIELD_TYPE.GEOMETRY,
))
_MAX_PACKET = 0xFFFFFF
META_CACHE_LIMIT = 4096
_U16 = struct.Struct("<H")


class Lost(Exception):
    """The socket failed or timed out mid-response: the connection is unusable."""


class Response:
    """One statement's answer (the attributes of PyMySQL's MySQLResult that mdriver uses)."""

    __slots__ = ("description", "rows", "affected_rows", "insert_id", "warning_count", "server_status", "columns")

    def __init__(self) -> None:
        self.description = None
        self.rows = None
        self.affected_rows = 0
        self.insert_id = 0
        self.warning_count = 0
        self.server_status = 0
        self.columns: tuple[Column, ...] = ()


class Meta:
    """Parsed column definitions of one result shape."""

    __slots__ = ("description", "converters", "columns")

    def __init__(self, description: tuple, convs: list, columns: tuple[Column, ...]):
        self.description = description
        self.converters = convs
        self.columns = columns


def set_socket_timeouts(raw: Any, read_timeout: float, write_timeout: float) -> None:
    """Blocking socket with kernel-level timeouts: a stalled server ends the read after the timeout."""
    sock: socket.socket = raw._sock
    sock.settimeout(None)
    for opt, seconds in ((socket.SO_RCVTIMEO, read_timeout), (socket.SO_SNDTIMEO, write_timeout)):
        whole = int(seconds)
        sock.setsockopt(socket.SOL_SOCKET, opt, struct.pack("ll", whole, int((seconds - whole) * 1_000_000)))
    raw._read_timeout = raw._write_timeout = raw._current_timeout = None


def _read(rf: Any, n: int) -> bytes:
    data = rf.read(n)
    if data is None or len(data) < n:
        raise Lost("Lost connection to MySQL server during query (the server closed it or the read timed out)")
    return data


def _packet(rf: Any) -> bytes:
    h = _read(rf, 4)
    n = h[0] | h[1] << 8 | h[2] << 16
    data = _read(rf, n)
    if n == _MAX_PACKET:
        parts = [data]
        while n == _MAX_PACKET:
            h = _read(rf, 4)
            n = h[0] | h[1] << 8 | h[2] << 16
            parts.append(_read(rf, n))
        data = b"".join(parts)
    return data


def _lenenc(data: bytes, pos: int) -> tuple[int, int]:
    c = data[pos]
    if c < 0xFB:
        return c, pos + 1
    if c == 0xFC:
        return data[pos + 1] | data[pos + 2] << 8, pos + 3
    if c == 0xFD:
        return data[pos + 1] | data[pos + 2] << 8 | data[pos + 3] << 16, pos + 4
    return int.from_bytes(data[pos + 1:pos + 9], "little"), pos + 9


def _error(data: bytes) -> err.Error:
    errno = _U16.unpack_from(data, 1)[0]
    if data[3:4] == b"#":
        sqlstate, message = data[4:9].decode("ascii", "replace"), data[9:]
    else:
        sqlstate, message = None, data[3:]
    return err.from_backend(errno, message.decode("utf-8", "replace"), sqlstate)


def _ok(data: bytes, res: Response) -> Response:
    res.affected_rows, pos = _lenenc(data, 1)
    res.insert_id, pos = _lenenc(data, pos)
    if len(data) >= pos + 4:
        res.server_status = _U16.unpack_from(data, pos)[0]
        res.warning_count = _U16.unpack_from(data, pos + 2)[0]
    return res


def _meta(raw: Any, defs: list[bytes]) -> Meta:
    """Column definitions -> description, converters and router columns, as PyMySQL derives them."""
    encoding = raw.encoding
    fields = [FieldDescriptorPacket(d, encoding) for d in defs]
    convs = []
    for f in fields:
        t = f.type_code
        if t == FIELD_TYPE.JSON:
            enc = encoding
        elif t in _TEXT_TYPES:
            enc = None if f.charsetnr == 63 else encoding
        else:
            enc = "ascii"
        conv = raw.decoders.get(t)
        if conv is converters.through:
            conv = None
        convs.append((enc, conv))
    columns = tuple(
        Column(f.name, f.type_code, f.length, f.scale, f.flags, f.charsetnr, f.table_name, f.org_table, f.org_name, f.db)
        for f in fields
    )
    return Meta(tuple(f.description() for f in fields), convs, columns)


SERVER_MORE_RESULTS_EXISTS = 0x0008


def command(raw: Any, cmd: int, payload: str | bytes, cache: dict) -> Response:
    """Send one command and read its whole response. Raises Lost or an mdriver.err error.

    Several statements in one COM_QUERY (only ever sent by the driver itself,
    for batched INSERTs) give several results: their affected rows are
    added up, the first result set is kept, and the first error is raised
    (the server runs nothing after it).
    """
    raw._execute_command(cmd, payload)
    rf = raw._rfile
    res = _response(raw, rf, cache)
    more = res
    while more.server_status & SERVER_MORE_RESULTS_EXISTS:
        more = _response(raw, rf, cache)
        res.affected_rows += more.affected_rows if more.rows is None else 0
        res.warning_count += more.warning_count
        res.server_status = more.server_status
    raw.server_status = res.server_status or raw.server_status
    return res


def _response(raw: Any, rf: Any, cache: dict) -> Response:
    try:
        first = _packet(rf)
    except OSError as e:
        raise Lost(f"Lost connection to MySQL server during query ({e})") from None
    res = Response()
    kind = first[0]
    if kind == 0x00 and len(first) >= 7 or kind == 0xFE and len(first) < 9:
        if kind == 0x00:
            _ok(first, res)
        return res
    if kind == 0xFF:
        raise _error(first)
    if kind == 0xFB:
        raise err.error(err.NotSupportedError, err.ER_NOT_SUPPORTED_YET, "LOAD DATA LOCAL INFILE is not supported by mdriver")
    try:
        ncols, _ = _lenenc(first, 0)
        defs = [_packet(rf) for _ in range(ncols)]
        key = b"\x00".join(defs)
        meta = cache.get(key)
        if meta is None:
            if len(cache) >= META_CACHE_LIMIT:
                cache.clear()
            meta = cache[key] = _meta(raw, defs)
        _packet(rf)  # EOF after the column definitions
        convs = meta.converters
        rows = []
        append = rows.append
        while True:
            p = _packet(rf)
            if p[0] == 0xFE and len(p) < 9:
                if len(p) >= 5:
                    res.warning_count = _U16.unpack_from(p, 1)[0]
                    res.server_status = _U16.unpack_from(p, 3)[0]
                break
            if p[0] == 0xFF:
                raise _error(p)  # e.g. a query killed while sending rows
            pos = 0
            row = []
            for enc, conv in convs:
                c = p[pos]
                if c == 0xFB:
                    row.append(None)
                    pos += 1
                    continue
                if c < 0xFB:
                    end = pos + 1 + c
                    v = p[pos + 1:end]
                else:
                    n, start = _lenenc(p, pos)
                    end = start + n
                    v = p[start:end]
                pos = end
                if enc is not None:
                    v = v.decode(enc)
                if conv is not None:
                    v = conv(v)
                row.append(v)
            append(tuple(row))
    except (OSError, IndexError) as e:
        raise Lost(f"Lost connection to MySQL server during query ({e})") from None
    res.description = meta.description
    res.columns = meta.columns
    res.rows = tuple(rows)
    res.affected_rows = len(rows)
    return res


def query(raw: Any, sql: str, cache: dict) -> Response:
    return command(raw, COMMAND.COM_QUERY, sql, cache)


def init_db(raw: Any, database: str) -> None:
    command(raw, COMMAND.COM_INIT_DB, database, {})


def ping(raw: Any) -> None:
    command(raw, COMMAND.COM_PING, b"", {})
