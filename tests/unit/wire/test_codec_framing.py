"""Length-encoded values, the reader cursor and 16 MiB framing, byte by byte."""
from __future__ import annotations

import pytest
from pymysql.protocol import MysqlPacket

from mdriver.wire.codec import ProtocolError, Reader, int3, lenenc_int, lenenc_str
from mdriver.wire.framing import MAX_FRAME, PacketBuffer, PacketTooLarge, frame, frame_count, frame_many


@pytest.mark.parametrize(
    "n, wire",
    [
        (0, b"\x00"),
        (250, b"\xfa"),
        (251, b"\xfc\xfb\x00"),
        (0xFFFF, b"\xfc\xff\xff"),
        (0x10000, b"\xfd\x00\x00\x01"),
        (0xFFFFFF, b"\xfd\xff\xff\xff"),
        (0x1000000, b"\xfe\x00\x00\x00\x01\x00\x00\x00\x00"),
        (2**64 - 1, b"\xfe" + b"\xff" * 8),
    ],
)
def test_lenenc_int_bytes_and_pymysql_reads_them(n, wire):
    assert lenenc_int(n) == wire
    assert Reader(wire).lenenc_int() == n
    assert MysqlPacket(wire, "utf8").read_length_encoded_integer() == n


def test_lenenc_int_out_of_range():
    with pytest.raises(ValueError):
        lenenc_int(-1)
    with pytest.raises(ValueError):
        lenenc_int(2**64)


def test_lenenc_str_and_pymysql():
    data = b"x" * 300
    wire = lenenc_str(data)
    assert wire[:3] == b"\xfc\x2c\x01"
    assert MysqlPacket(wire, "utf8").read_length_coded_string() == data
    assert Reader(wire).lenenc_str() == data


def test_reader_errors_are_protocol_errors():
    with pytest.raises(ProtocolError, match="truncated"):
        Reader(b"\x01\x02").int4()
    with pytest.raises(ProtocolError, match="NUL"):
        Reader(b"abc").nul_str()
    with pytest.raises(ProtocolError):
        Reader(b"\xff").lenenc_int()
    with pytest.raises(ProtocolError, match="truncated"):
        Reader(b"\x05ab").lenenc_str()


def test_reader_fixed_ints():
    r = Reader(b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a" + b"\x01\x00\x00\x00\x00\x00\x00\x80")
    assert r.int1() == 1
    assert r.int2() == 0x0302
    assert r.int3() == 0x060504
    assert r.int4() == 0x0A090807
    assert r.int8() == 0x8000000000000001
    assert r.at_end()
    assert int3(0x123456) == b"\x56\x34\x12"


def test_frame_small():
    assert frame(b"\x0e", 0) == b"\x01\x00\x00\x00\x0e"
    assert frame(b"", 7) == b"\x00\x00\x00\x07"
    assert frame(b"ab", 255) == b"\x02\x00\x00\xffab"


def test_frame_exact_max_needs_empty_trailer():
    payload = b"a" * MAX_FRAME
    wire = frame(payload, 3)
    assert wire[:4] == b"\xff\xff\xff\x03"
    assert wire[4 + MAX_FRAME:] == b"\x00\x00\x00\x04"
    assert len(wire) == 8 + MAX_FRAME
    assert frame_count(MAX_FRAME) == 2


def test_frame_split_and_join_roundtrip():
    payload = bytes(range(256)) * (MAX_FRAME // 256 + 10)  # a little over 16 MiB
    wire = frame(payload, 0)
    assert wire[:4] == b"\xff\xff\xff\x00"
    second = wire[4 + MAX_FRAME:8 + MAX_FRAME]
    assert int.from_bytes(second[:3], "little") == len(payload) - MAX_FRAME
    assert second[3] == 1
    buf = PacketBuffer()
    buf.feed(wire[:1000])
    assert buf.next_packet() is None
    buf.feed(wire[1000:])
    seq, got = buf.next_packet()
    assert seq == 0 and got == payload
    assert buf.last_seq == 1
    assert buf.next_packet() is None


def test_frame_many_sequences():
    wire, nxt = frame_many([b"a", b"bc"], 254)
    assert wire == b"\x01\x00\x00\xfea" + b"\x02\x00\x00\xffbc"
    assert nxt == 0


def test_packet_buffer_byte_at_a_time():
    wire = frame(b"hello", 1) + frame(b"", 2) + frame(b"world", 3)
    buf = PacketBuffer()
    got = []
    for i in range(len(wire)):
        buf.feed(wire[i:i + 1])
        while (p := buf.next_packet()) is not None:
            got.append(p)
    assert got == [(1, b"hello"), (2, b""), (3, b"world")]
    assert buf.buffered() == 0


def test_packet_buffer_refuses_oversized_header_before_payload():
    buf = PacketBuffer(limit=1024)
    buf.feed((2000).to_bytes(3, "little") + b"\x00")  # only the header has arrived
    with pytest.raises(PacketTooLarge) as e:
        buf.next_packet()
    assert e.value.size == 2000 and e.value.limit == 1024


def test_packet_buffer_limit_counts_joined_frames():
    buf = PacketBuffer(limit=MAX_FRAME + 10)
    buf.feed(b"\xff\xff\xff\x00" + b"a" * MAX_FRAME + (20).to_bytes(3, "little") + b"\x01")
    with pytest.raises(PacketTooLarge):
        buf.next_packet()
