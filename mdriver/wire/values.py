"""Value encoders/decoders by column type: the text protocol and the binary protocol.

Decoding gives the Python values the router merges (int, float, Decimal,
str, bytes, date, datetime, timedelta). Encoding turns merged values back
into cells. A text cell that is not a valid date/time (a zero date) decodes
to its text, so it re-encodes byte for byte.
"""
from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal, InvalidOperation

from mdriver.wire import constants as c
from mdriver.wire.codec import ProtocolError, Reader, lenenc_str

_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")
_BINARY_CHARSET = c.BINARY_COLLATION

# Binary-protocol fixed widths by type (everything else is a length-encoded string).
INT_WIDTH = {
    c.MYSQL_TYPE_TINY: 1, c.MYSQL_TYPE_SHORT: 2, c.MYSQL_TYPE_YEAR: 2,
    c.MYSQL_TYPE_LONG: 4, c.MYSQL_TYPE_INT24: 4, c.MYSQL_TYPE_LONGLONG: 8,
}


# --- text protocol ------------------------------------------------------------

def _parse_date(s: str) -> dt.date | str:
    try:
        return dt.date(int(s[0:4]), int(s[5:7]), int(s[8:10]))
    except (ValueError, IndexError):
        return s


def _parse_datetime(s: str) -> dt.datetime | str:
    try:
        date_part, _, time_part = s.partition(" ")
        y, mo, d = date_part.split("-")
        hms, _, frac = time_part.partition(".")
        h, mi, sec = hms.split(":") if hms else ("0", "0", "0")
        micro = int(frac.ljust(6, "0")[:6]) if frac else 0
        return dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec), micro)
    except (ValueError, IndexError):
        return s


def _parse_time(s: str) -> dt.timedelta | str:
    try:
        negative = s.startswith("-")
        body = s[1:] if negative else s
        hms, _, frac = body.partition(".")
        h, mi, sec = hms.split(":")
        micro = int(frac.ljust(6, "0")[:6]) if frac else 0
        td = dt.timedelta(hours=int(h), minutes=int(mi), seconds=int(sec), microseconds=micro)
        return -td if negative else td
    except (ValueError, IndexError):
        return s


def decode_text(raw: bytes | None, type_: int, charset: int = c.UTF8MB4_GENERAL_CI, codec: str = "utf-8"):
    """One text-protocol cell -> Python value."""
    if raw is None:
        return None
    if type_ in c.INTEGER_TYPES:
        return int(raw)
    if type_ in c.DECIMAL_TYPES:
        return Decimal(raw.decode("ascii"))
    if type_ in c.FLOAT_TYPES:
        return float(raw)
    if type_ in c.DATETIME_TYPES:
        return _parse_datetime(raw.decode("ascii"))
    if type_ in c.DATE_TYPES:
        return _parse_date(raw.decode("ascii"))
    if type_ in c.TIME_TYPES:
        return _parse_time(raw.decode("ascii"))
    if type_ == c.MYSQL_TYPE_NULL:
        return None
    if charset == _BINARY_CHARSET or type_ in (c.MYSQL_TYPE_BIT, c.MYSQL_TYPE_GEOMETRY):
        return bytes(raw)
    return raw.decode(codec, "surrogateescape")


def format_double(v: float) -> str:
    """MariaDB's spelling of a double: shortest round-trip digits, exponent without '+'."""
    s = repr(v)
    if s.endswith(".0"):
        return s[:-2]
    if "e" in s:
        mantissa, _, exp = s.partition("e")
        if mantissa.endswith(".0"):
            mantissa = mantissa[:-2]
        return f"{mantissa}e{int(exp)}"
    return s


def format_datetime(v: dt.datetime, decimals: int | None = None) -> str:
    s = f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}"
    return s + _fraction(v.microsecond, decimals)


def format_time(v: dt.timedelta | dt.time, decimals: int | None = None) -> str:
    if isinstance(v, dt.time):
        return f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}" + _fraction(v.microsecond, decimals)
    total = v.days * 86400 * 1_000_000 + v.seconds * 1_000_000 + v.microseconds
    sign = "-" if total < 0 else ""
    total = abs(total)
    seconds, micro = divmod(total, 1_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours:02d}:{minutes:02d}:{secs:02d}" + _fraction(micro, decimals)


def _fraction(micro: int, decimals: int | None) -> str:
    """``decimals`` from the column (0..6); None or 31 (not fixed) shows microseconds when present."""
    if decimals is None or decimals > 6:
        return f".{micro:06d}" if micro else ""
    if decimals == 0:
        return ""
    return "." + f"{micro:06d}"[:decimals]


def encode_text(v, decimals: int | None = None, codec: str = "utf-8") -> bytes | None:
    """Python value -> text-protocol cell bytes (None for NULL)."""
    if v is None:
        return None
    t = type(v)
    if t is bytes:
        return v
    if t is str:
        return v.encode(codec, "surrogateescape")
    if t is int:
        return str(v).encode("ascii")
    if t is bool:
        return b"1" if v else b"0"
    if t is float:
        return format_double(v).encode("ascii")
    if isinstance(v, Decimal):
        return format(v, "f").encode("ascii")
    if isinstance(v, dt.datetime):
        return format_datetime(v, decimals).encode("ascii")
    if isinstance(v, dt.date):
        return v.isoformat().encode("ascii")
    if isinstance(v, (dt.timedelta, dt.time)):
        return format_time(v, decimals).encode("ascii")
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, int):
        return str(int(v)).encode("ascii")
    if isinstance(v, float):
        return format_double(float(v)).encode("ascii")
    return str(v).encode(codec, "surrogateescape")


def make_text_row(values, decimals=None, codec: str = "utf-8") -> bytes:
    """A text-protocol row; ``decimals`` is an optional per-column list for temporal columns."""
    out = bytearray()
    for i, v in enumerate(values):
        raw = encode_text(v, decimals[i] if decimals else None, codec)
        if raw is None:
            out += b"\xfb"
        else:
            out += lenenc_str(raw)
    return bytes(out)


def parse_text_row(payload: bytes, ncols: int) -> list[bytes | None]:
    """The cells of a text row (None for NULL). Runs for every row of a merged result, so it reads by index."""
    cells = []
    pos = 0
    n = len(payload)
    for _ in range(ncols):
        if pos >= n:
            raise ProtocolError(f"text row ends after {len(cells)} of {ncols} columns")
        first = payload[pos]
        if first < 0xFB:
            stop = pos + 1 + first
            if stop > n:
                raise ProtocolError(f"packet truncated: cell {len(cells)} needs {first} bytes")
            cells.append(payload[pos + 1:stop])
            pos = stop
        elif first == 0xFB:
            cells.append(None)
            pos += 1
        else:
            r = Reader(payload, pos)
            cells.append(r.lenenc_str())
            pos = r.pos
    if pos != n:
        raise ProtocolError(f"text row has {n - pos} bytes after {ncols} columns")
    return cells


def text_decoder(type_: int, charset: int = c.UTF8MB4_GENERAL_CI, codec: str = "utf-8"):
    """A function decoding one non-NULL text cell of this column, chosen once per result (same as :func:`decode_text`)."""
    if type_ in c.INTEGER_TYPES:
        return int
    if type_ in c.DECIMAL_TYPES:
        return lambda raw: Decimal(raw.decode("ascii"))
    if type_ in c.FLOAT_TYPES:
        return float
    if type_ in c.DATETIME_TYPES or type_ in c.DATE_TYPES or type_ in c.TIME_TYPES or type_ == c.MYSQL_TYPE_NULL:
        return lambda raw: decode_text(raw, type_, charset, codec)
    if charset == _BINARY_CHARSET or type_ in (c.MYSQL_TYPE_BIT, c.MYSQL_TYPE_GEOMETRY):
        return bytes
    return lambda raw: raw.decode(codec, "surrogateescape")


def binary_encoder(type_: int, flags: int = 0, decimals: int | None = None, codec: str = "utf-8"):
    """A function encoding one non-NULL value for a binary row of this column (chosen once per result)."""
    unsigned = bool(flags & c.UNSIGNED_FLAG)
    if type_ in c.STRING_TYPES or type_ in c.DECIMAL_TYPES:
        def enc(v):
            t = type(v)
            if t is str:
                raw = v.encode(codec, "surrogateescape")
            elif t is bytes:
                raw = v
            else:
                raw = encode_text(v, decimals, codec)
            n = len(raw)
            return bytes((n,)) + raw if n < 0xFB else lenenc_str(raw)
        return enc
    return lambda v: encode_binary(v, type_, unsigned, decimals, codec)


# --- binary protocol ----------------------------------------------------------

def encode_binary_temporal(v, type_: int) -> bytes:
    """DATE/DATETIME/TIMESTAMP and TIME values in their shortest binary form."""
    if type_ in c.TIME_TYPES:
        if isinstance(v, dt.time):
            v = dt.timedelta(hours=v.hour, minutes=v.minute, seconds=v.second, microseconds=v.microsecond)
        negative = v < dt.timedelta(0)
        if negative:
            v = -v
        days = v.days
        hours, rest = divmod(v.seconds, 3600)
        minutes, secs = divmod(rest, 60)
        micro = v.microseconds
        if not (days or hours or minutes or secs or micro):
            return b"\x00"
        body = bytes((1 if negative else 0,)) + days.to_bytes(4, "little") + bytes((hours, minutes, secs))
        if micro:
            return b"\x0c" + body + micro.to_bytes(4, "little")
        return b"\x08" + body
    if isinstance(v, dt.datetime):
        date = v.year.to_bytes(2, "little") + bytes((v.month, v.day))
        if v.microsecond:
            return b"\x0b" + date + bytes((v.hour, v.minute, v.second)) + v.microsecond.to_bytes(4, "little")
        if v.hour or v.minute or v.second:
            return b"\x07" + date + bytes((v.hour, v.minute, v.second))
        return b"\x04" + date
    if isinstance(v, dt.date):
        return b"\x04" + v.year.to_bytes(2, "little") + bytes((v.month, v.day))
    raise TypeError(f"{type(v).__name__} is not a date/time value")


def decode_binary_temporal(r: Reader, type_: int):
    n = r.int1()
    if type_ in c.TIME_TYPES:
        if n == 0:
            return dt.timedelta(0)
        if n not in (8, 12):
            raise ProtocolError(f"binary TIME of {n} bytes")
        negative = r.int1()
        days = r.int4()
        h, m, s = r.int1(), r.int1(), r.int1()
        micro = r.int4() if n == 12 else 0
        td = dt.timedelta(days=days, hours=h, minutes=m, seconds=s, microseconds=micro)
        return -td if negative else td
    if n not in (0, 4, 7, 11):
        raise ProtocolError(f"binary DATE/DATETIME of {n} bytes")
    if n == 0:
        return "0000-00-00" if type_ in c.DATE_TYPES else "0000-00-00 00:00:00"
    y, mo, d = r.int2(), r.int1(), r.int1()
    h = mi = s = micro = 0
    if n >= 7:
        h, mi, s = r.int1(), r.int1(), r.int1()
    if n == 11:
        micro = r.int4()
    try:
        if type_ in c.DATE_TYPES:
            return dt.date(y, mo, d)
        return dt.datetime(y, mo, d, h, mi, s, micro)
    except ValueError:  # a zero-in-date value such as 2024-00-00
        text = f"{y:04d}-{mo:02d}-{d:02d}"
        if type_ in c.DATE_TYPES:
            return text
        return text + f" {h:02d}:{mi:02d}:{s:02d}" + (f".{micro:06d}" if micro else "")


def encode_binary(v, type_: int, unsigned: bool = False, decimals: int | None = None, codec: str = "utf-8") -> bytes:
    """One non-NULL value in the binary protocol, as a column of ``type_`` expects it."""
    width = INT_WIDTH.get(type_)
    if width is not None:
        n = int(v)
        if not -(1 << (8 * width - 1)) <= n < (1 << (8 * width)):
            raise ValueError(f"{n} does not fit a {8 * width}-bit integer column")
        return (n & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    if type_ == c.MYSQL_TYPE_DOUBLE:
        return _F64.pack(float(v))
    if type_ == c.MYSQL_TYPE_FLOAT:
        return _F32.pack(float(v))
    if type_ in c.DATETIME_TYPES or type_ in c.DATE_TYPES or type_ in c.TIME_TYPES:
        if isinstance(v, (dt.date, dt.timedelta, dt.time)):
            return encode_binary_temporal(v, type_)
        return lenenc_str(encode_text(v, decimals, codec) or b"")  # zero dates kept as text
    raw = encode_text(v, decimals, codec)
    return lenenc_str(raw if raw is not None else b"")


def decode_binary(r: Reader, type_: int, unsigned: bool, charset: int = c.UTF8MB4_GENERAL_CI, codec: str = "utf-8"):
    """Read one non-NULL binary-protocol value of ``type_`` at the reader's position."""
    width = INT_WIDTH.get(type_)
    if width is not None:
        raw = r.fixed(width)
        return int.from_bytes(raw, "little", signed=not unsigned and type_ != c.MYSQL_TYPE_YEAR)
    if type_ == c.MYSQL_TYPE_DOUBLE:
        return _F64.unpack(r.fixed(8))[0]
    if type_ == c.MYSQL_TYPE_FLOAT:
        return _F32.unpack(r.fixed(4))[0]
    if type_ in c.DATETIME_TYPES or type_ in c.DATE_TYPES or type_ in c.TIME_TYPES:
        return decode_binary_temporal(r, type_)
    if type_ == c.MYSQL_TYPE_NULL:
        return None
    raw = r.lenenc_str()
    if type_ in c.DECIMAL_TYPES:
        try:
            return Decimal(raw.decode("ascii"))
        except (InvalidOperation, UnicodeDecodeError):
            raise ProtocolError(f"{raw[:40]!r} is not a DECIMAL") from None
    if charset == _BINARY_CHARSET or type_ in (c.MYSQL_TYPE_BIT, c.MYSQL_TYPE_GEOMETRY):
        return raw
    return raw.decode(codec, "surrogateescape")


def null_bitmap(values, offset: int) -> bytearray:
    """NULL bitmap with ``offset`` leading bits (2 for result rows, 0 for parameters)."""
    bitmap = bytearray((len(values) + offset + 7) // 8)
    for i, v in enumerate(values):
        if v is None:
            bit = i + offset
            bitmap[bit >> 3] |= 1 << (bit & 7)
    return bitmap


def make_binary_row(values, columns, codec: str = "utf-8", encoders=None) -> bytes:
    """A binary-protocol row; ``columns`` gives (type, flags, decimals) per value.

    ``encoders`` (from :func:`binary_encoder`, one per column) skip the per-value type dispatch.
    """
    out = bytearray(b"\x00")
    out += null_bitmap(values, 2)
    if encoders is not None:
        for v, enc in zip(values, encoders):
            if v is not None:
                out += enc(v)
        return bytes(out)
    for v, (type_, flags, decimals) in zip(values, columns):
        if v is not None:
            out += encode_binary(v, type_, bool(flags & c.UNSIGNED_FLAG), decimals, codec)
    return bytes(out)


def parse_binary_row(payload: bytes, columns, codec: str = "utf-8") -> list:
    """Decode a binary row; ``columns`` gives (type, flags, charset) per column."""
    r = Reader(payload)
    if r.int1() != 0:
        raise ProtocolError("binary row must start with 0x00")
    n = len(columns)
    bitmap = r.fixed((n + 9) // 8)
    out = []
    for i, (type_, flags, charset) in enumerate(columns):
        bit = i + 2
        if bitmap[bit >> 3] & (1 << (bit & 7)):
            out.append(None)
        else:
            out.append(decode_binary(r, type_, bool(flags & c.UNSIGNED_FLAG), charset, codec))
    if not r.at_end():
        raise ProtocolError(f"binary row has {r.remaining()} bytes after {n} columns")
    return out
