"""Turning results into client packets, and backend packets into router values.

Single-shard results are relayed (see :class:`Relay`); only merged results and
the proxy's own answers are encoded here. A prepared statement's result must
be in the binary protocol, while backends run text SQL, so :class:`Relay`
can convert text rows to binary rows on the fly (column definitions are
relayed as they are).
"""
from __future__ import annotations

import datetime as dt
import struct

from mdriver.router.types import Column, ShardResult
from mdriver.wire import constants as c
from mdriver.wire.codec import ProtocolError, Reader, lenenc_int
from mdriver.wire.framing import MAX_FRAME, frame
from mdriver.wire.packets import (
    EOF,
    OK,
    ColumnDefinition,
    make_column_definition,
    make_eof,
    make_ok,
    parse_column_definition,
    parse_err,
)
from mdriver.wire.response import ROWS_STATE as _ROWS, COLUMN, COLUMN_COUNT, COLUMNS_EOF, ERR as K_ERR, ROW, ROWS_END, ResponseTracker
from mdriver.wire.values import binary_encoder, decode_text, encode_binary, make_binary_row, make_text_row, text_decoder

_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")


# -- metadata ------------------------------------------------------------------

def to_column_definition(col: Column) -> ColumnDefinition:
    return ColumnDefinition(col.name, col.type_code, col.schema, col.table, col.org_table, col.org_name,
                            col.charset, col.length, col.flags, col.decimals)


def to_column(cd: ColumnDefinition) -> Column:
    return Column(cd.name, cd.type, cd.length, cd.decimals, cd.flags, cd.charset, cd.table, cd.org_table, cd.org_name, cd.schema)


def shard_result(res, codec: str = "utf-8") -> ShardResult:
    """A backend QueryResult -> the router's ShardResult (rows decoded to Python values)."""
    if not res.columns:
        return ShardResult((), [], res.affected_rows, res.insert_id, res.warnings)
    cols = tuple(to_column(cd) for cd in res.columns)
    decoders = [text_decoder(cd.type, cd.charset, codec) for cd in res.columns]
    if len(decoders) == 1:
        dec = decoders[0]
        rows = [(None if row[0] is None else dec(row[0]),) for row in res.rows]
    else:
        rows = [tuple(None if cell is None else d(cell) for cell, d in zip(row, decoders)) for row in res.rows]
    return ShardResult(cols, rows, res.affected_rows, res.insert_id, res.warnings)


# -- encoding our own results ----------------------------------------------------

def add_framed(parts: list, payload: bytes, seq: int) -> int:
    """Append ``payload`` framed from sequence id ``seq`` (several frames past 16 MiB); returns the next id."""
    n = len(payload)
    if n < MAX_FRAME:
        parts.append(n.to_bytes(3, "little") + bytes((seq & 0xFF,)) + payload)
        return seq + 1
    parts.append(frame(payload, seq & 0xFF))
    return seq + n // MAX_FRAME + 1


class PacketWriter:
    """Frames payloads for one client response, tracking the sequence id."""

    __slots__ = ("parts", "seq")

    def __init__(self, seq: int = 1):
        self.parts: list[bytes] = []
        self.seq = seq

    def add(self, payload: bytes) -> None:
        self.seq = add_framed(self.parts, payload, self.seq)

    def data(self) -> bytes:
        out = b"".join(self.parts)
        self.parts = []
        return out


def write_ok(w: PacketWriter, caps: int, status: int, affected: int = 0, insert_id: int = 0, warnings: int = 0, info: bytes = b"") -> None:
    w.add(make_ok(OK(affected, insert_id, status, warnings, info), caps))


def write_result_set(w: PacketWriter, columns, rows, caps: int, status: int, binary: bool = False,
                     codec: str = "utf-8", warnings: int = 0) -> None:
    """Column count, definitions, (EOF), rows, end: a whole text or binary result set."""
    defs = [col if isinstance(col, ColumnDefinition) else to_column_definition(col) for col in columns]
    deprecate_eof = caps & c.CLIENT_DEPRECATE_EOF
    w.add(lenenc_int(len(defs)))
    for cd in defs:
        w.add(make_column_definition(cd))
    if not deprecate_eof:
        w.add(make_eof(EOF(0, status)))
    if binary:
        meta = [(cd.type, cd.flags, cd.decimals) for cd in defs]
        encoders = [binary_encoder(cd.type, cd.flags, cd.decimals, codec) for cd in defs]
        for row in rows:
            w.add(make_binary_row(row, meta, codec, encoders))
    else:
        decimals = [cd.decimals if cd.type in c.DATETIME_TYPES or cd.type in c.TIME_TYPES else None for cd in defs]
        for row in rows:
            w.add(make_text_row(row, decimals, codec))
    if deprecate_eof:
        w.add(make_ok(OK(0, 0, status, warnings), caps, eof=True))
    else:
        w.add(make_eof(EOF(warnings, status)))


def write_definitions(w: PacketWriter, defs, caps: int, status: int) -> None:
    """Parameter or column definitions of a COM_STMT_PREPARE response."""
    for cd in defs:
        w.add(make_column_definition(cd))
    if defs and not caps & c.CLIENT_DEPRECATE_EOF:
        w.add(make_eof(EOF(0, status)))


# -- text row -> binary row ----------------------------------------------------------

def _int_converter(width: int):
    mask = (1 << (8 * width)) - 1

    def conv(raw: bytes) -> bytes:
        return (int(raw) & mask).to_bytes(width, "little")
    return conv


def _double(raw: bytes) -> bytes:
    return _F64.pack(float(raw))


def _float(raw: bytes) -> bytes:
    return _F32.pack(float(raw))


def _temporal(type_: int):
    def conv(raw: bytes) -> bytes:
        v = decode_text(raw, type_)
        if isinstance(v, (dt.date, dt.timedelta)):
            return encode_binary(v, type_)
        return b"\x00"  # zero date
    return conv


_INT_WIDTH = {c.MYSQL_TYPE_TINY: 1, c.MYSQL_TYPE_SHORT: 2, c.MYSQL_TYPE_YEAR: 2, c.MYSQL_TYPE_LONG: 4,
              c.MYSQL_TYPE_INT24: 4, c.MYSQL_TYPE_LONGLONG: 8}


def binary_converter(type_: int):
    """How a text cell of this column type becomes a binary cell; None: copied as it is.

    Strings, decimals, blobs, BIT, JSON and the like are length-encoded the
    same way in both protocols, so their cells are copied with their length.
    """
    width = _INT_WIDTH.get(type_)
    if width is not None:
        return _int_converter(width)
    if type_ == c.MYSQL_TYPE_DOUBLE:
        return _double
    if type_ == c.MYSQL_TYPE_FLOAT:
        return _float
    if type_ in c.DATETIME_TYPES or type_ in c.DATE_TYPES or type_ in c.TIME_TYPES:
        return _temporal(type_)
    return None


def text_row_to_binary(payload: bytes, converters) -> bytes:
    """A text-protocol row -> a binary-protocol row (header, NULL bitmap, cells); runs per relayed row."""
    cells = []
    nulls = 0
    pos = 0
    end = len(payload)
    for i, conv in enumerate(converters):
        if pos >= end:
            raise ProtocolError("text row has fewer cells than columns")
        first = payload[pos]
        if first < 251:
            start = pos + 1
            stop = start + first
        elif first == 251:
            nulls |= 1 << (i + 2)
            pos += 1
            continue
        else:
            start = pos + (3 if first == 252 else 4 if first == 253 else 9)
            stop = start + int.from_bytes(payload[pos + 1:start], "little")
        if stop > end or start > end:
            raise ProtocolError("text row cell runs past the end of the packet")
        cells.append(payload[pos:stop] if conv is None else conv(payload[start:stop]))
        pos = stop
    return b"\x00" + nulls.to_bytes((len(converters) + 9) >> 3, "little") + b"".join(cells)


_UNKNOWN = object()


# -- relaying a backend response to the client ------------------------------------------

class Relay:
    """Forwards one backend response to a client transport.

    Backends run in classic EOF mode; a client that negotiated DEPRECATE_EOF
    gets the column EOF dropped and the final EOF turned into an OK. Sequence
    ids are renumbered for the client. ``binary`` converts text rows to
    binary rows (the client ran a prepared statement that runs as text).
    An error whose code is in ``retry_on`` is kept from the client and sets
    ``retry``: the caller runs the statement another way.
    """

    __slots__ = ("client", "tracker", "out", "seq", "deprecate_eof", "binary", "converters", "error", "status",
                 "warnings", "affected_rows", "insert_id", "rows", "started", "blocked", "suppress", "cache",
                 "retry_on", "retry")

    def __init__(self, client, backend_caps: int, seq: int = 1, binary: bool = False, cache: dict | None = None):
        self.client = client  # has .write(bytes) and .capabilities
        self.tracker = ResponseTracker(backend_caps)
        self.out: list[bytes] = []
        self.seq = seq
        self.deprecate_eof = bool(client.capabilities & c.CLIENT_DEPRECATE_EOF)
        self.binary = binary
        self.converters: list = []
        self.error = None
        self.status = 0
        self.warnings = 0
        self.affected_rows = 0
        self.insert_id = 0
        self.rows = 0
        self.started = False  # something was sent to the client
        self.blocked = None  # prelude handlers: if one failed, this response is not sent
        self.suppress = False
        self.cache = cache if cache is not None else {}  # column definition bytes -> binary converter
        self.retry_on: frozenset | None = None
        self.retry = False

    def _add(self, payload: bytes) -> None:
        self.seq = add_framed(self.out, payload, self.seq)

    def _add_converter(self, definition: bytes) -> None:
        cache = self.cache
        conv = cache.get(definition, _UNKNOWN)
        if conv is _UNKNOWN:
            if len(cache) > 10000:
                cache.clear()
            conv = cache[definition] = binary_converter(parse_column_definition(definition).type)
        self.converters.append(conv)

    def on_packet(self, payload: bytes) -> bool:
        if self.tracker.state == _ROWS and payload and payload[0] < 0xFE and not self.suppress:
            # the common case, kept short: one more row
            self.rows += 1
            if self.binary:
                payload = text_row_to_binary(payload, self.converters)
            n = len(payload)
            if n < MAX_FRAME:
                self.out.append(n.to_bytes(3, "little") + bytes((self.seq & 0xFF,)) + payload)
                self.seq += 1
            else:
                self._add(payload)
            return False
        if self.blocked is not None:
            self.suppress = any(h.error is not None for h in self.blocked)
            self.blocked = None
        kind = self.tracker.feed(payload)
        if self.suppress:
            self.status = self.tracker.status
            return self.tracker.done
        if kind is ROW:
            self.rows += 1
            self._add(text_row_to_binary(payload, self.converters) if self.binary else payload)
        elif kind is COLUMN:
            if self.binary:
                self._add_converter(payload)
            self._add(payload)
        elif kind is ROWS_END:
            self.status = st = self.tracker.status
            self.warnings = w = payload[1] | payload[2] << 8 if len(payload) >= 5 else 0
            self._add(make_ok(OK(0, 0, st, w), self.client.capabilities, eof=True) if self.deprecate_eof else payload)
        elif kind is COLUMNS_EOF:
            if not self.deprecate_eof:
                self._add(payload)
        elif kind is COLUMN_COUNT:
            self._add(payload)
        elif kind is K_ERR:
            self.error = parse_err(payload)
            if self._held(self.error):
                return True
            self._add(payload)
        else:  # OK (possibly one of several results)
            r = Reader(payload, 1)
            self.affected_rows += r.lenenc_int()
            self.insert_id = r.lenenc_int() or self.insert_id
            self.status = r.int2()
            self.warnings += r.int2()
            self._add(payload)
        return self.tracker.done

    def _held(self, error) -> bool:
        if self.retry_on is not None and error.errno in self.retry_on and not self.started and not self.out:
            self.retry = True
        return self.retry

    def consume(self, pb) -> bool:
        """Relay every complete frame in the backend's PacketBuffer; True once the response is complete.

        Frames are read in place. A frame whose sequence id is already right
        and that needs no conversion (the usual case: both sides number a
        response from 1) joins a run forwarded as one slice; only converted
        packets (binary rows, EOF style) are rebuilt. Frames of 16 MiB and
        responses behind pipelined preludes are left to :meth:`on_packet`.
        """
        if self.blocked is not None or self.suppress:
            return False
        buf, pos = pb.view()
        end = len(buf)
        t = self.tracker
        out = self.out
        binary = self.binary
        deprecate = self.deprecate_eof
        run = pos  # start of the frames forwarded unchanged
        done = False
        payload = None
        with memoryview(buf) as mv:
            while end - pos >= 4:
                n = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
                if n >= MAX_FRAME:
                    break
                stop = pos + 4 + n
                if stop > end:
                    break
                start = pos + 4
                same_seq = buf[pos + 3] == self.seq & 0xFF
                if t.state == _ROWS and n and buf[start] < 0xFE:
                    self.rows += 1
                    if binary:
                        if run < pos:
                            out.append(bytes(buf[run:pos]))
                        row = text_row_to_binary(bytes(mv[start:stop]), self.converters)
                        out.append(len(row).to_bytes(3, "little") + bytes((self.seq & 0xFF,)) + row)
                        run = stop
                    elif not same_seq:
                        if run < pos:
                            out.append(bytes(buf[run:pos]))
                        out.append(n.to_bytes(3, "little") + bytes((self.seq & 0xFF,)) + bytes(mv[start:stop]))
                        run = stop
                    self.seq += 1
                    pos = stop
                    continue
                payload = mv[start:stop]
                kind = t.feed(payload)
                keep = same_seq
                if kind is COLUMN:
                    if binary:
                        self._add_converter(bytes(payload))
                elif kind is COLUMNS_EOF:
                    if deprecate:  # a DEPRECATE_EOF client gets no EOF after the column definitions
                        if run < pos:
                            out.append(bytes(buf[run:pos]))
                        run = pos = stop
                        continue
                elif kind is ROWS_END:
                    self.status = t.status
                    self.warnings = buf[start + 1] | buf[start + 2] << 8 if n >= 5 else 0
                    if deprecate:
                        keep = False
                        payload = make_ok(OK(0, 0, self.status, self.warnings), self.client.capabilities, eof=True)
                elif kind is K_ERR:
                    self.error = parse_err(bytes(payload))
                    if self._held(self.error):
                        if run < pos:
                            out.append(bytes(buf[run:pos]))
                        run = pos = stop
                        done = True
                        break
                elif kind is not COLUMN_COUNT:  # an OK (one of several results, or the only one)
                    r = Reader(bytes(payload), 1)
                    self.affected_rows += r.lenenc_int()
                    self.insert_id = r.lenenc_int() or self.insert_id
                    self.status = r.int2()
                    self.warnings += r.int2()
                if not keep:
                    if run < pos:
                        out.append(bytes(buf[run:pos]))
                    data = bytes(payload)
                    out.append(len(data).to_bytes(3, "little") + bytes((self.seq & 0xFF,)) + data)
                    run = stop
                self.seq += 1
                pos = stop
                if t.done:
                    done = True
                    break
            if run < pos:
                out.append(bytes(buf[run:pos]))
            del payload  # release views before the buffer changes size
        pb.advance_to(pos)
        return done

    def flush(self) -> None:
        if self.out:
            self.started = True
            self.client.write(b"".join(self.out))
            self.out = []
