"""Text and binary value codecs by column type, byte by byte and against PyMySQL's decoders."""
from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymysql import converters

from mdriver.wire import constants as c
from mdriver.wire.codec import ProtocolError, Reader
from mdriver.wire.values import (
    decode_binary,
    decode_text,
    encode_binary,
    encode_text,
    format_double,
    make_binary_row,
    make_text_row,
    parse_binary_row,
    parse_text_row,
)


@pytest.mark.parametrize(
    "raw, type_, expected",
    [
        (b"42", c.MYSQL_TYPE_LONG, 42),
        (b"-9223372036854775808", c.MYSQL_TYPE_LONGLONG, -(2**63)),
        (b"18446744073709551615", c.MYSQL_TYPE_LONGLONG, 2**64 - 1),
        (b"2024", c.MYSQL_TYPE_YEAR, 2024),
        (b"12.50", c.MYSQL_TYPE_NEWDECIMAL, Decimal("12.50")),
        (b"1.5", c.MYSQL_TYPE_DOUBLE, 1.5),
        (b"2024-02-29", c.MYSQL_TYPE_DATE, dt.date(2024, 2, 29)),
        (b"2024-02-29 23:59:58.000123", c.MYSQL_TYPE_DATETIME, dt.datetime(2024, 2, 29, 23, 59, 58, 123)),
        (b"2024-02-29 23:59:58", c.MYSQL_TYPE_TIMESTAMP, dt.datetime(2024, 2, 29, 23, 59, 58)),
        (b"-838:59:59", c.MYSQL_TYPE_TIME, -dt.timedelta(hours=838, minutes=59, seconds=59)),
        (b"01:02:03.5", c.MYSQL_TYPE_TIME, dt.timedelta(hours=1, minutes=2, seconds=3, microseconds=500000)),
        (b"0000-00-00", c.MYSQL_TYPE_DATE, "0000-00-00"),
        (b"0000-00-00 00:00:00", c.MYSQL_TYPE_DATETIME, "0000-00-00 00:00:00"),
        (None, c.MYSQL_TYPE_LONG, None),
    ],
)
def test_decode_text(raw, type_, expected):
    assert decode_text(raw, type_) == expected


def test_decode_text_strings_by_charset():
    assert decode_text("héllo".encode(), c.MYSQL_TYPE_VAR_STRING, 45) == "héllo"
    assert decode_text(b"\x00\xff", c.MYSQL_TYPE_BLOB, 63) == b"\x00\xff"
    assert decode_text("é".encode("cp1252"), c.MYSQL_TYPE_STRING, 8, "cp1252") == "é"
    assert decode_text(b"\x01", c.MYSQL_TYPE_BIT, 63) == b"\x01"


@given(st.datetimes(min_value=dt.datetime(1000, 1, 1), max_value=dt.datetime(9999, 12, 31)))
def test_datetime_text_roundtrip_and_pymysql_agrees(v):
    raw = encode_text(v, 6)
    assert decode_text(raw, c.MYSQL_TYPE_DATETIME) == v
    assert converters.convert_datetime(raw.decode()) == v


@given(st.timedeltas(min_value=-dt.timedelta(hours=838), max_value=dt.timedelta(hours=838)))
def test_time_text_roundtrip_and_pymysql_agrees(v):
    raw = encode_text(v, 6)
    assert decode_text(raw, c.MYSQL_TYPE_TIME) == v
    assert converters.convert_timedelta(raw.decode()) == v


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-10**12, max_value=10**12))
def test_decimal_text_roundtrip(v):
    assert decode_text(encode_text(v), c.MYSQL_TYPE_NEWDECIMAL) == v


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_double_text_roundtrip(v):
    assert decode_text(encode_text(v), c.MYSQL_TYPE_DOUBLE) == v


def test_format_double_matches_mariadb_spelling():
    assert format_double(1.0) == "1"
    assert format_double(1.5) == "1.5"
    assert format_double(1e20) == "1e20"
    assert format_double(1.5e-7) == "1.5e-7"
    assert format_double(-0.25) == "-0.25"


def test_encode_text_cells():
    assert encode_text(None) is None
    assert encode_text(True) == b"1"
    assert encode_text(Decimal("1E+2")) == b"100"
    assert encode_text(dt.datetime(2024, 1, 2, 3, 4, 5), 6) == b"2024-01-02 03:04:05.000000"
    assert encode_text(dt.datetime(2024, 1, 2, 3, 4, 5, 120000), 2) == b"2024-01-02 03:04:05.12"
    assert encode_text(dt.datetime(2024, 1, 2, 3, 4, 5, 120000), 0) == b"2024-01-02 03:04:05"
    assert encode_text(dt.datetime(2024, 1, 2, 3, 4, 5, 120000)) == b"2024-01-02 03:04:05.120000"
    assert encode_text(dt.date(2024, 1, 2)) == b"2024-01-02"
    assert encode_text(dt.time(1, 2, 3)) == b"01:02:03"
    assert encode_text(-dt.timedelta(seconds=1)) == b"-00:00:01"
    assert encode_text(dt.timedelta(days=2, seconds=1)) == b"48:00:01"
    assert encode_text("é", codec="cp1252") == b"\xe9"


def test_text_row_layout():
    row = make_text_row([1, None, "ab", b""])
    assert row == b"\x011\xfb\x02ab\x00"
    assert parse_text_row(row, 4) == [b"1", None, b"ab", b""]
    with pytest.raises(ProtocolError):
        parse_text_row(row + b"x", 4)
    with pytest.raises(ProtocolError):
        parse_text_row(row, 5)


# Binary protocol examples from the protocol documentation.
@pytest.mark.parametrize(
    "type_, value, wire",
    [
        (c.MYSQL_TYPE_DATETIME, dt.datetime(2010, 10, 17, 19, 27, 30, 1), "0b da 07 0a 11 13 1b 1e 01 00 00 00"),
        (c.MYSQL_TYPE_DATETIME, dt.datetime(2010, 10, 17, 19, 27, 30), "07 da 07 0a 11 13 1b 1e"),
        (c.MYSQL_TYPE_DATETIME, dt.datetime(2010, 10, 17), "04 da 07 0a 11"),
        (c.MYSQL_TYPE_DATE, dt.date(2010, 10, 17), "04 da 07 0a 11"),
        (c.MYSQL_TYPE_TIME, -dt.timedelta(days=120, hours=19, minutes=27, seconds=30, microseconds=1),
         "0c 01 78 00 00 00 13 1b 1e 01 00 00 00"),
        (c.MYSQL_TYPE_TIME, -dt.timedelta(days=120, hours=19, minutes=27, seconds=30), "08 01 78 00 00 00 13 1b 1e"),
        (c.MYSQL_TYPE_TIME, dt.timedelta(0), "00"),
        (c.MYSQL_TYPE_LONGLONG, 1, "01 00 00 00 00 00 00 00"),
        (c.MYSQL_TYPE_LONG, -2, "fe ff ff ff"),
        (c.MYSQL_TYPE_SHORT, 1, "01 00"),
        (c.MYSQL_TYPE_TINY, -1, "ff"),
        (c.MYSQL_TYPE_YEAR, 2024, "e8 07"),
        (c.MYSQL_TYPE_DOUBLE, 1.5, struct.pack("<d", 1.5).hex()),
        (c.MYSQL_TYPE_FLOAT, 1.5, struct.pack("<f", 1.5).hex()),
        (c.MYSQL_TYPE_NEWDECIMAL, Decimal("-1.25"), "05 2d 31 2e 32 35"),
        (c.MYSQL_TYPE_VAR_STRING, "foo", "03 66 6f 6f"),
    ],
)
def test_binary_values(type_, value, wire):
    raw = bytes.fromhex(wire)
    assert encode_binary(value, type_) == raw
    r = Reader(raw)
    assert decode_binary(r, type_, False) == value
    assert r.at_end()


def test_binary_unsigned_integers():
    assert encode_binary(2**64 - 1, c.MYSQL_TYPE_LONGLONG, True) == b"\xff" * 8
    assert decode_binary(Reader(b"\xff" * 8), c.MYSQL_TYPE_LONGLONG, True) == 2**64 - 1
    assert decode_binary(Reader(b"\xff" * 8), c.MYSQL_TYPE_LONGLONG, False) == -1
    assert decode_binary(Reader(b"\xff"), c.MYSQL_TYPE_TINY, True) == 255
    with pytest.raises(ValueError):
        encode_binary(256, c.MYSQL_TYPE_TINY, True)


def test_binary_zero_dates_and_bad_lengths():
    assert decode_binary(Reader(b"\x00"), c.MYSQL_TYPE_DATE, False) == "0000-00-00"
    assert decode_binary(Reader(b"\x00"), c.MYSQL_TYPE_DATETIME, False) == "0000-00-00 00:00:00"
    assert decode_binary(Reader(b"\x04\xe8\x07\x00\x00"), c.MYSQL_TYPE_DATE, False) == "2024-00-00"
    with pytest.raises(ProtocolError):
        decode_binary(Reader(b"\x05\x00\x00\x00\x00\x00"), c.MYSQL_TYPE_DATETIME, False)
    with pytest.raises(ProtocolError):
        decode_binary(Reader(b"\x03\x00\x00\x00"), c.MYSQL_TYPE_TIME, False)


def test_binary_row_null_bitmap_offset_two():
    cols = [(c.MYSQL_TYPE_LONGLONG, 0, 0), (c.MYSQL_TYPE_VAR_STRING, 0, 0), (c.MYSQL_TYPE_DATETIME, 0, 6)]
    row = make_binary_row([7, None, dt.datetime(2010, 10, 17)], cols)
    # header 00, bitmap: column 1 is NULL -> bit 3 -> 0x08
    assert row == b"\x00\x08" + b"\x07" + bytes(7) + b"\x04\xda\x07\x0a\x11"
    parsed = parse_binary_row(row, [(c.MYSQL_TYPE_LONGLONG, 0, 63), (c.MYSQL_TYPE_VAR_STRING, 0, 45), (c.MYSQL_TYPE_DATETIME, 0, 63)])
    assert parsed == [7, None, dt.datetime(2010, 10, 17)]


def test_binary_row_nine_columns_needs_two_bitmap_bytes():
    cols = [(c.MYSQL_TYPE_LONG, 0, 0)] * 9
    values = [None] * 7 + [1, None]
    row = make_binary_row(values, cols)
    assert row[1:3] == bytes((0xFC, 0x05))  # bits 2..8 and 10
    assert parse_binary_row(row, [(c.MYSQL_TYPE_LONG, 0, 63)] * 9) == values


def test_binary_blob_stays_bytes_and_text_decodes():
    r = Reader(b"\x02\xc3\xa9\x02\x00\xff")
    assert decode_binary(r, c.MYSQL_TYPE_VAR_STRING, False, 45) == "é"
    assert decode_binary(r, c.MYSQL_TYPE_BLOB, False, 63) == b"\x00\xff"


@pytest.mark.parametrize(
    "raw, type_, charset",
    [
        (b"-12", c.MYSQL_TYPE_LONGLONG, 63), (b"12.50", c.MYSQL_TYPE_NEWDECIMAL, 63), (b"1e20", c.MYSQL_TYPE_DOUBLE, 63),
        (b"2024-02-29 01:02:03.5", c.MYSQL_TYPE_DATETIME, 63), (b"0000-00-00", c.MYSQL_TYPE_DATE, 63),
        (b"-01:00:00", c.MYSQL_TYPE_TIME, 63), ("héllo".encode(), c.MYSQL_TYPE_VAR_STRING, 45),
        (b"\x00\xff", c.MYSQL_TYPE_BLOB, 63), (b"\x01", c.MYSQL_TYPE_BIT, 63), (b"2024", c.MYSQL_TYPE_YEAR, 63),
    ],
)
def test_text_decoder_equals_decode_text(raw, type_, charset):
    from mdriver.wire.values import text_decoder

    assert text_decoder(type_, charset)(raw) == decode_text(raw, type_, charset)


@pytest.mark.parametrize(
    "value, type_, flags, decimals",
    [
        ("héllo", c.MYSQL_TYPE_VAR_STRING, 0, 0), (b"\x00" * 300, c.MYSQL_TYPE_BLOB, 0, 0),
        (Decimal("-1.50"), c.MYSQL_TYPE_NEWDECIMAL, 0, 2), (2**64 - 1, c.MYSQL_TYPE_LONGLONG, c.UNSIGNED_FLAG, 0),
        (dt.datetime(2024, 1, 2, 3, 4, 5, 6), c.MYSQL_TYPE_DATETIME, 0, 6), (1.5, c.MYSQL_TYPE_DOUBLE, 0, 31),
        (7, c.MYSQL_TYPE_VAR_STRING, 0, 0),
    ],
)
def test_binary_encoder_equals_encode_binary(value, type_, flags, decimals):
    from mdriver.wire.values import binary_encoder

    assert binary_encoder(type_, flags, decimals)(value) == encode_binary(value, type_, bool(flags & c.UNSIGNED_FLAG), decimals)


def test_parse_text_row_long_cells():
    long_cell = b"x" * 70000
    payload = b"\xfd" + len(long_cell).to_bytes(3, "little") + long_cell + b"\xfb\x00"
    assert parse_text_row(payload, 3) == [long_cell, None, b""]
    with pytest.raises(ProtocolError):
        parse_text_row(b"\x05ab", 1)
