"""Primitive encodings: fixed and length-encoded integers and strings, a reader cursor.

Every packet module builds on these. A malformed packet raises
:class:`ProtocolError` (never IndexError/struct.error), so a server can answer
a hostile or broken client with a clean error.
"""
from __future__ import annotations

import struct

_U16 = struct.Struct("<H")
_U24_LOW = struct.Struct("<HB")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

NULL_COLUMN = 0xFB  # in a text row, a lone 0xFB byte is SQL NULL


class ProtocolError(ValueError):
    """Bytes that do not form the packet they claim to be."""


def int1(n: int) -> bytes:
    return bytes((n & 0xFF,))


def int2(n: int) -> bytes:
    return _U16.pack(n & 0xFFFF)


def int3(n: int) -> bytes:
    return (n & 0xFFFFFF).to_bytes(3, "little")


def int4(n: int) -> bytes:
    return _U32.pack(n & 0xFFFFFFFF)


def int8(n: int) -> bytes:
    return _U64.pack(n & 0xFFFFFFFFFFFFFFFF)


def lenenc_int(n: int) -> bytes:
    """Length-encoded integer: 1, 3, 4 or 9 bytes."""
    if n < 0:
        raise ValueError(f"length-encoded integers are unsigned, got {n}")
    if n < 0xFB:
        return bytes((n,))
    if n < 1 << 16:
        return b"\xfc" + _U16.pack(n)
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    if n < 1 << 64:
        return b"\xfe" + _U64.pack(n)
    raise ValueError(f"{n} does not fit a length-encoded integer")


def lenenc_str(b: bytes) -> bytes:
    return lenenc_int(len(b)) + b


def nul_str(b: bytes) -> bytes:
    if b"\0" in b:
        raise ValueError("a NUL-terminated string cannot contain NUL")
    return b + b"\0"


class Reader:
    """A cursor over one packet payload."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def _need(self, n: int) -> int:
        p = self.pos
        if p + n > len(self.data):
            raise ProtocolError(f"packet truncated: needed {n} bytes at offset {p}, have {len(self.data) - p}")
        self.pos = p + n
        return p

    def int1(self) -> int:
        return self.data[self._need(1)]

    def int2(self) -> int:
        return _U16.unpack_from(self.data, self._need(2))[0]

    def int3(self) -> int:
        p = self._need(3)
        lo, hi = _U24_LOW.unpack_from(self.data, p)
        return lo | hi << 16

    def int4(self) -> int:
        return _U32.unpack_from(self.data, self._need(4))[0]

    def int8(self) -> int:
        return _U64.unpack_from(self.data, self._need(8))[0]

    def fixed(self, n: int) -> bytes:
        p = self._need(n)
        return bytes(self.data[p:p + n])

    def skip(self, n: int) -> None:
        self._need(n)

    def rest(self) -> bytes:
        p = self.pos
        self.pos = len(self.data)
        return bytes(self.data[p:])

    def nul_str(self) -> bytes:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolError(f"missing NUL terminator after offset {self.pos}")
        s = bytes(self.data[self.pos:end])
        self.pos = end + 1
        return s

    def nul_str_or_rest(self) -> bytes:
        """A NUL-terminated string whose NUL some clients omit at the end of a packet."""
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            return self.rest()
        s = bytes(self.data[self.pos:end])
        self.pos = end + 1
        return s

    def lenenc_int(self) -> int:
        first = self.int1()
        if first < 0xFB:
            return first
        if first == 0xFC:
            return self.int2()
        if first == 0xFD:
            return self.int3()
        if first == 0xFE:
            return self.int8()
        raise ProtocolError(f"0x{first:02x} is not a length-encoded integer")

    def lenenc_str(self) -> bytes:
        return self.fixed(self.lenenc_int())

    def lenenc_str_or_null(self) -> bytes | None:
        """A text-row cell: 0xFB is NULL."""
        if self.pos < len(self.data) and self.data[self.pos] == NULL_COLUMN:
            self.pos += 1
            return None
        return self.lenenc_str()
