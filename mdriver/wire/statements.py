"""COM_STMT_EXECUTE: parameter parsing and building for every parameter type.

The layout after the 10-byte head (command, statement id, flags, iteration
count) is present only when the statement has parameters: a NULL bitmap, the
new-params-bound flag, the types (2 bytes each: type, then 0x80 for unsigned)
when that flag is 1, then the non-NULL values. Parameters already sent with
COM_STMT_SEND_LONG_DATA take no room in the values block.
"""
from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal
from typing import NamedTuple

from mdriver.wire import constants as c
from mdriver.wire.codec import ProtocolError, Reader, int1, int4
from mdriver.wire.values import decode_binary, encode_binary, null_bitmap

ParamType = tuple[int, bool]  # (column type, unsigned)

_TEXT_PARAM_TYPES = frozenset((
    c.MYSQL_TYPE_VARCHAR, c.MYSQL_TYPE_VAR_STRING, c.MYSQL_TYPE_STRING, c.MYSQL_TYPE_ENUM, c.MYSQL_TYPE_SET,
    c.MYSQL_TYPE_JSON, c.MYSQL_TYPE_DECIMAL, c.MYSQL_TYPE_NEWDECIMAL,
))
_DECIMAL_PARAM_TYPES = frozenset((c.MYSQL_TYPE_DECIMAL, c.MYSQL_TYPE_NEWDECIMAL))
_BLOB_PARAM_TYPES = frozenset((c.MYSQL_TYPE_TINY_BLOB, c.MYSQL_TYPE_MEDIUM_BLOB, c.MYSQL_TYPE_LONG_BLOB, c.MYSQL_TYPE_BLOB,
                               c.MYSQL_TYPE_BIT, c.MYSQL_TYPE_GEOMETRY))


class StmtExecute(NamedTuple):  # a NamedTuple: built per execute, and a frozen dataclass costs a microsecond more
    statement_id: int
    flags: int
    iteration_count: int
    types: tuple[ParamType, ...]
    values: tuple
    new_params_bound: bool


def peek_statement_id(payload: bytes) -> int:
    """The statement id of a COM_STMT_EXECUTE/CLOSE/RESET/SEND_LONG_DATA, without parsing the rest."""
    if len(payload) < 5:
        raise ProtocolError("statement command shorter than 5 bytes")
    return int.from_bytes(payload[1:5], "little")


def _long_value(raw: bytes, ptype: ParamType, codec: str):
    type_ = ptype[0]
    if type_ in (c.MYSQL_TYPE_DECIMAL, c.MYSQL_TYPE_NEWDECIMAL):
        return Decimal(raw.decode("ascii"))
    if type_ in _TEXT_PARAM_TYPES:
        return raw.decode(codec, "surrogateescape")
    return raw


_HEAD = struct.Struct("<BIBI")
_INT_WIDTH = {c.MYSQL_TYPE_TINY: 1, c.MYSQL_TYPE_SHORT: 2, c.MYSQL_TYPE_YEAR: 2, c.MYSQL_TYPE_LONG: 4,
              c.MYSQL_TYPE_INT24: 4, c.MYSQL_TYPE_LONGLONG: 8}


def parse_stmt_execute(
    payload: bytes,
    num_params: int,
    previous_types: tuple[ParamType, ...] | None = None,
    long_data: dict[int, bytes] | None = None,
    codec: str = "utf-8",
) -> StmtExecute:
    """Parse a COM_STMT_EXECUTE (command byte included) for a statement with ``num_params``.

    ``previous_types`` are the types bound by an earlier execute, used when the
    client sends new-params-bound = 0. String parameters decode with ``codec``;
    BLOB-typed ones stay bytes. Runs per execute, so integers and strings are
    read by index; everything else goes through :func:`decode_binary`.
    """
    n = len(payload)
    if n < 10:
        if n < 6:
            raise ProtocolError("COM_STMT_EXECUTE shorter than its header")
        payload = payload + b"\x01\x00\x00\x00"[: 10 - n]  # some clients omit the iteration count
        n = len(payload)
    cmd, stmt_id, flags, iterations = _HEAD.unpack_from(payload, 0)
    if cmd != c.COM_STMT_EXECUTE:
        raise ProtocolError("not a COM_STMT_EXECUTE packet")
    if num_params == 0:
        return StmtExecute(stmt_id, flags, iterations, (), (), False)
    nb = (num_params + 7) >> 3
    pos = 10 + nb
    if pos >= n:
        raise ProtocolError("packet truncated: COM_STMT_EXECUTE has no NULL bitmap or new-params-bound flag")
    bitmap = payload[10:pos]
    bound = payload[pos]
    pos += 1
    if bound == 1:
        if pos + 2 * num_params > n:
            raise ProtocolError("packet truncated: parameter types missing")
        ptypes = tuple((payload[i], bool(payload[i + 1] & c.PARAM_UNSIGNED)) for i in range(pos, pos + 2 * num_params, 2))
        pos += 2 * num_params
    elif bound == 0:
        if previous_types is None or len(previous_types) != num_params:
            raise ProtocolError("COM_STMT_EXECUTE reuses parameter types that were never bound")
        ptypes = previous_types
    else:
        raise ProtocolError(f"new-params-bound flag is {bound}, expected 0 or 1")
    values = []
    append = values.append
    for i, ptype in enumerate(ptypes):
        type_ = ptype[0]
        if long_data and i in long_data:
            append(_long_value(long_data[i], ptype, codec))
            continue
        if bitmap[i >> 3] & (1 << (i & 7)) or type_ == c.MYSQL_TYPE_NULL:
            append(None)
            continue
        width = _INT_WIDTH.get(type_)
        if width is not None:
            stop = pos + width
            if stop > n:
                raise ProtocolError(f"packet truncated: parameter {i} needs {width} bytes")
            append(int.from_bytes(payload[pos:stop], "little", signed=not ptype[1] and type_ != c.MYSQL_TYPE_YEAR))
            pos = stop
            continue
        if type_ in _TEXT_PARAM_TYPES or type_ in _BLOB_PARAM_TYPES:
            if pos >= n:
                raise ProtocolError(f"packet truncated: parameter {i} is missing")
            ln = payload[pos]
            if ln < 0xFB:
                pos += 1
            else:
                r = Reader(payload, pos)
                ln = r.lenenc_int()
                pos = r.pos
            stop = pos + ln
            if stop > n:
                raise ProtocolError(f"packet truncated: parameter {i} needs {ln} bytes")
            raw = payload[pos:stop]
            pos = stop
            if type_ in _DECIMAL_PARAM_TYPES:
                try:
                    append(Decimal(raw.decode("ascii")))
                except (ArithmeticError, UnicodeDecodeError):
                    raise ProtocolError(f"parameter {i} is not a DECIMAL: {raw[:40]!r}") from None
            elif type_ in _TEXT_PARAM_TYPES:
                append(raw.decode(codec, "surrogateescape"))
            else:
                append(raw)
            continue
        r = Reader(payload, pos)
        append(decode_binary(r, type_, ptype[1], c.BINARY_COLLATION, codec))
        pos = r.pos
    if pos != n:
        raise ProtocolError(f"COM_STMT_EXECUTE has {n - pos} bytes after its {num_params} parameters")
    return StmtExecute(stmt_id, flags, iterations, ptypes, tuple(values), bound == 1)


def rebind_stmt_execute(payload: bytes, statement_id: int, num_params: int, types: bytes | None) -> tuple[bytes, bytes]:
    """A client's COM_STMT_EXECUTE, re-addressed to ``statement_id`` on another connection.

    Returns (the new packet, the raw parameter types). The types are always
    bound, since the other statement may never have seen them (``types``:
    those of an earlier execute, for a packet that does not bind them). The
    cursor flags are cleared: results come back whole. The packet must have
    passed :func:`parse_stmt_execute`.
    """
    if len(payload) < 10:
        payload = payload + b"\x01\x00\x00\x00"[: 10 - len(payload)]
    head = b"\x17" + statement_id.to_bytes(4, "little") + b"\x00" + payload[6:10]
    if num_params == 0:
        return head, b""
    pos = 10 + ((num_params + 7) >> 3)
    bitmap = payload[10:pos]
    if payload[pos] == 1:
        types = payload[pos + 1:pos + 1 + 2 * num_params]
        pos += 1 + 2 * num_params
    else:
        pos += 1
        if types is None or len(types) != 2 * num_params:
            raise ProtocolError("COM_STMT_EXECUTE reuses parameter types that were never bound")
    return head + bitmap + b"\x01" + types + payload[pos:], types


def param_type_for(v) -> ParamType:
    """The parameter type a Python value is sent as."""
    if v is None:
        return (c.MYSQL_TYPE_NULL, False)
    if isinstance(v, bool):
        return (c.MYSQL_TYPE_TINY, False)
    if isinstance(v, int):
        if v > 0x7FFFFFFFFFFFFFFF:
            return (c.MYSQL_TYPE_LONGLONG, True)
        return (c.MYSQL_TYPE_LONGLONG, False)
    if isinstance(v, float):
        return (c.MYSQL_TYPE_DOUBLE, False)
    if isinstance(v, Decimal):
        return (c.MYSQL_TYPE_NEWDECIMAL, False)
    if isinstance(v, dt.datetime):
        return (c.MYSQL_TYPE_DATETIME, False)
    if isinstance(v, dt.date):
        return (c.MYSQL_TYPE_DATE, False)
    if isinstance(v, (dt.timedelta, dt.time)):
        return (c.MYSQL_TYPE_TIME, False)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return (c.MYSQL_TYPE_BLOB, False)
    return (c.MYSQL_TYPE_VAR_STRING, False)


def make_stmt_execute(
    statement_id: int,
    values,
    types: tuple[ParamType, ...] | None = None,
    flags: int = c.CURSOR_TYPE_NO_CURSOR,
    codec: str = "utf-8",
    long_data_params: frozenset[int] = frozenset(),
    send_types: bool = True,
) -> bytes:
    """Build a COM_STMT_EXECUTE; types default to :func:`param_type_for` of each value."""
    out = bytearray(b"\x17" + int4(statement_id) + int1(flags) + int4(1))
    if not values:
        return bytes(out)
    if types is None:
        types = tuple(param_type_for(v) for v in values)
    out += null_bitmap([None if i not in long_data_params and v is None else 0 for i, v in enumerate(values)], 0)
    out += b"\x01" if send_types else b"\x00"
    if send_types:
        for type_, unsigned in types:
            out += bytes((type_, c.PARAM_UNSIGNED if unsigned else 0))
    for i, (v, (type_, unsigned)) in enumerate(zip(values, types)):
        if v is None or i in long_data_params or type_ == c.MYSQL_TYPE_NULL:
            continue
        if type_ in (c.MYSQL_TYPE_BLOB, c.MYSQL_TYPE_TINY_BLOB, c.MYSQL_TYPE_MEDIUM_BLOB, c.MYSQL_TYPE_LONG_BLOB) and isinstance(v, str):
            v = v.encode(codec, "surrogateescape")
        out += encode_binary(v, type_, unsigned, None, codec)
    return bytes(out)
