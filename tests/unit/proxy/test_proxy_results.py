"""Relaying backend responses (EOF styles, sequence ids, text->binary rows) and encoding results, byte by byte."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from mdriver.router.types import Column
from mdriver.wire import constants as c
from mdriver.wire.codec import ProtocolError, lenenc_str
from mdriver.wire.framing import PacketBuffer, frame, frame_many
from mdriver.wire.packets import EOF, ERR, OK, ColumnDefinition, make_column_definition, make_eof, make_err, make_ok, parse_ok
from mdriver.wire.response import ResponseTracker
from mdriver.wire.values import make_binary_row, make_text_row, parse_binary_row
from proxy.backend import Swallow
from proxy.results import PacketWriter, Relay, shard_result, text_row_to_binary, binary_converter, write_result_set

CLASSIC = c.CLIENT_PROTOCOL_41
DEPRECATE = c.CLIENT_PROTOCOL_41 | c.CLIENT_DEPRECATE_EOF
COLS = [ColumnDefinition("id", c.MYSQL_TYPE_LONGLONG, flags=c.UNSIGNED_FLAG, charset=63),
        ColumnDefinition("name", c.MYSQL_TYPE_VAR_STRING),
        ColumnDefinition("at", c.MYSQL_TYPE_DATETIME, decimals=6, charset=63),
        ColumnDefinition("amount", c.MYSQL_TYPE_NEWDECIMAL, decimals=2, charset=63)]
ROWS = [[1, "a", dt.datetime(2024, 1, 2, 3, 4, 5, 6), Decimal("1.50")], [2**64 - 1, None, dt.datetime(2024, 1, 2), Decimal("-3.00")]]


class Sink:
    """Where a relay writes: what a client connection offers it."""

    def __init__(self, caps: int):
        self.capabilities = caps
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


def backend_result(status: int = c.SERVER_STATUS_AUTOCOMMIT) -> list[bytes]:
    """A classic-EOF text result set as a MariaDB backend sends it."""
    out = [bytes((len(COLS),))] + [make_column_definition(cd) for cd in COLS] + [make_eof(EOF(0, status))]
    out += [make_text_row(r, [None, None, 6, None]) for r in ROWS]
    out.append(make_eof(EOF(1, status)))
    return out


def packets_of(data: bytes) -> list[tuple[int, bytes]]:
    buf = PacketBuffer()
    buf.feed(data)
    out = []
    while (p := buf.next_packet()) is not None:
        out.append(p)
    assert buf.buffered() == 0
    return out


def relay_all(relay: Relay, payloads: list[bytes]) -> None:
    done = False
    for p in payloads:
        assert not done
        done = relay.on_packet(p)
    relay.flush()
    assert done


def test_classic_client_gets_the_backend_bytes_unchanged():
    sink = Sink(CLASSIC)
    relay = Relay(sink, CLASSIC, 1)
    payloads = backend_result()
    relay_all(relay, payloads)
    assert sink.data == frame_many(payloads, 1)[0]
    assert (relay.rows, relay.warnings, relay.status) == (2, 1, c.SERVER_STATUS_AUTOCOMMIT)


def test_deprecate_eof_client_gets_no_column_eof_and_a_final_ok():
    sink = Sink(DEPRECATE)
    relay = Relay(sink, CLASSIC, 1)
    relay_all(relay, backend_result(c.SERVER_STATUS_IN_TRANS))
    got = packets_of(sink.data)
    assert [seq for seq, _ in got] == list(range(1, 1 + 1 + len(COLS) + len(ROWS) + 1))
    assert got[len(COLS) + 1][1] == make_text_row(ROWS[0], [None, None, 6, None])  # rows follow the columns directly
    end = got[-1][1]
    assert end[0] == 0xFE and len(end) < 9
    ok = parse_ok(end, DEPRECATE)
    assert (ok.status, ok.warnings) == (c.SERVER_STATUS_IN_TRANS, 1)
    tracker = ResponseTracker(DEPRECATE)
    assert [tracker.feed(p) for _, p in got][-1] == "rows_end" and tracker.done


@pytest.mark.parametrize("caps", [CLASSIC, DEPRECATE])
def test_text_rows_become_binary_rows(caps):
    sink = Sink(caps)
    relay = Relay(sink, CLASSIC, 1, binary=True)
    relay_all(relay, backend_result())
    got = [p for _, p in packets_of(sink.data)]
    rows = [p for p in got if p[:1] == b"\x00" and len(p) > 9]
    meta = [(cd.type, cd.flags, cd.decimals) for cd in COLS]
    assert rows == [make_binary_row(r, meta) for r in ROWS]
    assert [parse_binary_row(r, [(cd.type, cd.flags, cd.charset) for cd in COLS]) for r in rows] == ROWS


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("caps", [CLASSIC, DEPRECATE])
def test_consume_in_place_matches_packet_by_packet(caps, binary):
    payloads = backend_result()
    wire = frame_many(payloads, 1)[0]
    expected = Sink(caps)
    relay_all(Relay(expected, CLASSIC, 1, binary), payloads)
    for cut in range(1, len(wire)):  # data arriving in two reads, split anywhere
        if True:
            sink = Sink(caps)
            relay = Relay(sink, CLASSIC, 1, binary)
            buf = PacketBuffer()
            buf.feed(wire[:cut])
            assert relay.consume(buf) is False
            buf.feed(wire[cut:])
            assert relay.consume(buf) is True
            relay.flush()
            assert sink.data == expected.data and buf.buffered() == 0
            assert (relay.rows, relay.status, relay.warnings) == (2, c.SERVER_STATUS_AUTOCOMMIT, 1)


def test_consume_ok_err_and_multi_results():
    ok1 = make_ok(OK(1, 0, c.SERVER_MORE_RESULTS_EXISTS | c.SERVER_STATUS_AUTOCOMMIT))
    e = make_err(ERR(1146, "no such table", "42S02"))
    for caps in (CLASSIC, DEPRECATE):
        expected = Sink(caps)
        relay_all(Relay(expected, CLASSIC, 1), [ok1, e])
        sink = Sink(caps)
        relay = Relay(sink, CLASSIC, 1)
        buf = PacketBuffer()
        buf.feed(frame_many([ok1, e], 1)[0])
        assert relay.consume(buf) and relay.error.errno == 1146 and relay.affected_rows == 1
        relay.flush()
        assert sink.data == expected.data


def test_ok_and_err_responses_pass_through():
    sink = Sink(CLASSIC)
    relay = Relay(sink, CLASSIC, 1)
    ok = make_ok(OK(3, 77, c.SERVER_STATUS_AUTOCOMMIT, 0, b"Rows matched: 3"))
    relay_all(relay, [ok])
    assert sink.data == frame(ok, 1) and (relay.affected_rows, relay.insert_id) == (3, 77)
    sink = Sink(CLASSIC)
    relay = Relay(sink, CLASSIC, 1)
    e = make_err(ERR(1146, "Table 'x' doesn't exist", "42S02"))
    relay_all(relay, [e])
    assert sink.data == frame(e, 1) and relay.error.errno == 1146


def test_a_failed_prelude_suppresses_the_statement_response():
    prelude = Swallow(CLASSIC)
    assert prelude.on_packet(make_err(ERR(1049, "Unknown database 'app_99'", "42000")))
    sink = Sink(CLASSIC)
    relay = Relay(sink, CLASSIC, 1)
    relay.blocked = [prelude]
    relay_all(relay, backend_result())
    assert sink.data == b"" and relay.suppress


def test_converters_per_type():
    assert binary_converter(c.MYSQL_TYPE_LONG)(b"-2") == b"\xfe\xff\xff\xff"
    assert binary_converter(c.MYSQL_TYPE_DATE)(b"2010-10-17") == b"\x04\xda\x07\x0a\x11"
    assert binary_converter(c.MYSQL_TYPE_DATE)(b"0000-00-00") == b"\x00"
    assert binary_converter(c.MYSQL_TYPE_VAR_STRING) is None  # copied with its length: the same in both protocols
    row = text_row_to_binary(make_text_row([5, None]), [binary_converter(c.MYSQL_TYPE_TINY), binary_converter(c.MYSQL_TYPE_BLOB)])
    assert row == b"\x00\x08\x05"


@pytest.mark.parametrize("size", [0, 250, 251, 65535, 65536, 1 << 24])
def test_text_row_to_binary_copies_long_cells_with_their_length(size):
    convs = [binary_converter(c.MYSQL_TYPE_LONGLONG), binary_converter(c.MYSQL_TYPE_BLOB), binary_converter(c.MYSQL_TYPE_LONG)]
    row = text_row_to_binary(make_text_row([-1, b"x" * size, None]), convs)
    assert row == b"\x00\x10" + b"\xff" * 8 + lenenc_str(b"x" * size)


@pytest.mark.parametrize("text_row", [b"", b"\x01", b"\x05abc", b"\xfc\x10"])
def test_a_truncated_text_row_is_a_protocol_error(text_row):
    with pytest.raises(ProtocolError):
        text_row_to_binary(text_row, [binary_converter(c.MYSQL_TYPE_VAR_STRING)])


@pytest.mark.parametrize("caps", [CLASSIC, DEPRECATE])
@pytest.mark.parametrize("binary", [False, True])
def test_write_result_set_is_a_complete_response(caps, binary):
    w = PacketWriter(1)
    cols = [Column("id", c.MYSQL_TYPE_LONGLONG, 20, 0, c.UNSIGNED_FLAG, 63), Column("name", c.MYSQL_TYPE_VAR_STRING)]
    write_result_set(w, cols, [(1, "a"), (2, None)], caps, c.SERVER_STATUS_AUTOCOMMIT, binary)
    got = packets_of(w.data())
    assert [seq for seq, _ in got] == list(range(1, len(got) + 1))
    tracker = ResponseTracker(caps)
    kinds = [tracker.feed(p) for _, p in got]
    assert tracker.done and kinds.count("row") == 2 and tracker.columns == 2


def test_shard_result_decodes_by_column_type():
    from proxy.backend import QueryResult

    res = QueryResult(columns=COLS, rows=[[b"1", b"a", b"2024-01-02 03:04:05.000006", b"1.50"], [b"2", None, None, None]])
    sr = shard_result(res)
    assert sr.rows == [(1, "a", dt.datetime(2024, 1, 2, 3, 4, 5, 6), Decimal("1.50")), (2, None, None, None)]
    assert [col.name for col in sr.columns] == ["id", "name", "at", "amount"] and sr.columns[0].flags == c.UNSIGNED_FLAG
