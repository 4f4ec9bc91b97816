"""Packet framing: 3-byte length + 1-byte sequence id, 16 MiB splitting and joining.

A logical packet of ``n`` bytes travels as frames of at most 0xFFFFFF bytes;
a frame of exactly 0xFFFFFF bytes means "more follows", so a payload whose
length is a multiple of 0xFFFFFF ends with an empty frame.
"""
from __future__ import annotations

MAX_FRAME = 0xFFFFFF
HEADER = 4


class PacketTooLarge(Exception):
    """A peer announced a packet above the configured limit."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"packet of at least {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


def frame(payload: bytes, seq: int) -> bytes:
    """The wire bytes of one logical packet starting at sequence id ``seq``."""
    n = len(payload)
    if n < MAX_FRAME:
        return n.to_bytes(3, "little") + bytes((seq & 0xFF,)) + payload
    out = bytearray()
    pos = 0
    while True:
        chunk = payload[pos:pos + MAX_FRAME]
        out += len(chunk).to_bytes(3, "little") + bytes((seq & 0xFF,))
        out += chunk
        seq += 1
        pos += MAX_FRAME
        if len(chunk) < MAX_FRAME:
            return bytes(out)


def frame_count(payload_len: int) -> int:
    """How many frames (and so sequence ids) a payload of this length uses."""
    return payload_len // MAX_FRAME + 1


def frame_many(payloads: list[bytes], seq: int) -> tuple[bytes, int]:
    """Frame consecutive packets; returns the bytes and the next sequence id."""
    parts = []
    for p in payloads:
        if len(p) < MAX_FRAME:
            parts.append(len(p).to_bytes(3, "little") + bytes((seq & 0xFF,)) + p)
            seq += 1
        else:
            parts.append(frame(p, seq))
            seq += frame_count(len(p))
    return b"".join(parts), seq & 0xFF


class PacketBuffer:
    """Accumulates received bytes and returns complete logical packets.

    ``limit`` bounds a logical packet; it is checked from the frame headers as
    soon as they arrive, so an oversized packet is refused before it is buffered.
    """

    __slots__ = ("_buf", "_pos", "limit", "last_seq")

    def __init__(self, limit: int = 1 << 30):
        self._buf = bytearray()
        self._pos = 0
        self.limit = limit
        self.last_seq = 0  # sequence id of the last frame of the last packet returned

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def view(self) -> tuple[bytearray, int]:
        """(buffer, position of the next unread byte): for callers that scan frames in place."""
        return self._buf, self._pos

    def advance_to(self, pos: int) -> None:
        """Mark everything before ``pos`` (a position from :meth:`view`) as consumed."""
        self._consume(pos)

    def take_raw(self) -> bytes:
        """Remove and return the bytes not yet returned as packets (e.g. a TLS ClientHello after an SSLRequest)."""
        raw = bytes(self._buf[self._pos:])
        self._buf.clear()
        self._pos = 0
        return raw

    def next_packet(self) -> tuple[int, bytes] | None:
        """``(sequence id of the first frame, payload)`` or None until one is complete."""
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < HEADER:
            return None
        n = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
        seq = buf[pos + 3]
        if n > self.limit:
            raise PacketTooLarge(n, self.limit)
        if n < MAX_FRAME:
            if avail < HEADER + n:
                return None
            start = pos + HEADER
            payload = bytes(buf[start:start + n])
            self._consume(start + n)
            self.last_seq = seq
            return seq, payload
        return self._next_joined(seq)

    def _next_joined(self, first_seq: int) -> tuple[int, bytes] | None:
        buf = self._buf
        pos = self._pos
        end = len(buf)
        total = 0
        spans = []
        seq = first_seq
        while True:
            if end - pos < HEADER:
                return None
            n = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            seq = buf[pos + 3]
            total += n
            if total > self.limit:
                raise PacketTooLarge(total, self.limit)
            if end - pos < HEADER + n:
                return None
            spans.append((pos + HEADER, pos + HEADER + n))
            pos += HEADER + n
            if n < MAX_FRAME:
                break
        payload = b"".join(bytes(buf[a:b]) for a, b in spans)
        self._consume(pos)
        self.last_seq = seq
        return first_seq, payload

    def _consume(self, new_pos: int) -> None:
        if new_pos >= len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif new_pos > 65536 and new_pos * 2 > len(self._buf):
            del self._buf[:new_pos]
            self._pos = 0
        else:
            self._pos = new_pos
