"""COM_STMT_EXECUTE parameters for every type, auth scrambles (cross-checked with PyMySQL), response tracking."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from pymysql import _auth as pymysql_auth

from mdriver.wire import auth
from mdriver.wire import constants as c
from mdriver.wire.codec import ProtocolError
from mdriver.wire.packets import ColumnDefinition, EOF, OK, make_column_definition, make_eof, make_err, ERR, make_ok
from mdriver.wire.response import COLUMN, COLUMN_COUNT, COLUMNS_EOF, ERR as K_ERR, OK as K_OK, PARAM, PREPARE_OK, ROW, ROWS_END, ResponseTracker
from mdriver.wire.statements import make_stmt_execute, param_type_for, parse_stmt_execute, peek_statement_id, rebind_stmt_execute
from mdriver.wire.values import make_text_row


def test_stmt_execute_documented_example():
    payload = bytes.fromhex("17 01 00 00 00 00 01 00 00 00 00 01 0f 00 03 66 6f 6f")
    e = parse_stmt_execute(payload, 1)
    assert (e.statement_id, e.flags, e.iteration_count) == (1, 0, 1)
    assert e.types == ((c.MYSQL_TYPE_VARCHAR, False),) and e.values == ("foo",) and e.new_params_bound
    assert make_stmt_execute(1, ["foo"], ((c.MYSQL_TYPE_VARCHAR, False),)) == payload
    assert peek_statement_id(payload) == 1


ALL_TYPES = [
    ((c.MYSQL_TYPE_TINY, False), -5),
    ((c.MYSQL_TYPE_TINY, True), 250),
    ((c.MYSQL_TYPE_SHORT, False), -300),
    ((c.MYSQL_TYPE_SHORT, True), 65535),
    ((c.MYSQL_TYPE_YEAR, False), 2024),
    ((c.MYSQL_TYPE_INT24, False), -70000),
    ((c.MYSQL_TYPE_LONG, False), -(2**31)),
    ((c.MYSQL_TYPE_LONG, True), 2**32 - 1),
    ((c.MYSQL_TYPE_LONGLONG, False), -(2**63)),
    ((c.MYSQL_TYPE_LONGLONG, True), 2**64 - 1),
    ((c.MYSQL_TYPE_FLOAT, False), 0.5),
    ((c.MYSQL_TYPE_DOUBLE, False), -1.25e100),
    ((c.MYSQL_TYPE_NEWDECIMAL, False), Decimal("123.4500")),
    ((c.MYSQL_TYPE_DECIMAL, False), Decimal("-1")),
    ((c.MYSQL_TYPE_DATE, False), dt.date(2024, 2, 29)),
    ((c.MYSQL_TYPE_DATETIME, False), dt.datetime(2024, 2, 29, 1, 2, 3, 456)),
    ((c.MYSQL_TYPE_TIMESTAMP, False), dt.datetime(2024, 2, 29, 1, 2, 3)),
    ((c.MYSQL_TYPE_TIME, False), dt.timedelta(days=-3, seconds=5)),
    ((c.MYSQL_TYPE_VARCHAR, False), "varchar ü"),
    ((c.MYSQL_TYPE_VAR_STRING, False), "var_string"),
    ((c.MYSQL_TYPE_STRING, False), "string"),
    ((c.MYSQL_TYPE_ENUM, False), "enum"),
    ((c.MYSQL_TYPE_SET, False), "a,b"),
    ((c.MYSQL_TYPE_JSON, False), '{"a": 1}'),
    ((c.MYSQL_TYPE_TINY_BLOB, False), b"\x00tiny"),
    ((c.MYSQL_TYPE_BLOB, False), b"\xffblob"),
    ((c.MYSQL_TYPE_MEDIUM_BLOB, False), b"medium"),
    ((c.MYSQL_TYPE_LONG_BLOB, False), b"long" * 100),
    ((c.MYSQL_TYPE_BIT, False), b"\x01\x02"),
    ((c.MYSQL_TYPE_GEOMETRY, False), b"\x00\x00\x00\x00\x01\x01"),
    ((c.MYSQL_TYPE_NULL, False), None),
]


def test_stmt_execute_every_parameter_type_roundtrips():
    types = tuple(t for t, _ in ALL_TYPES)
    values = [v for _, v in ALL_TYPES]
    payload = make_stmt_execute(42, values, types)
    e = parse_stmt_execute(payload, len(values))
    assert e.types == types
    assert list(e.values) == values
    # NULL bitmap: only the last parameter (index 30) is NULL.
    assert payload[10:14] == bytes((0, 0, 0, 0x40))


def test_stmt_execute_null_bitmap_unsigned_flag_and_reused_types():
    types = ((c.MYSQL_TYPE_LONGLONG, True), (c.MYSQL_TYPE_VAR_STRING, False))
    first = make_stmt_execute(3, [2**63, None], types)
    assert first[10] == 0b10 and first[11] == 1
    assert first[12:16] == bytes((c.MYSQL_TYPE_LONGLONG, 0x80, c.MYSQL_TYPE_VAR_STRING, 0))
    e1 = parse_stmt_execute(first, 2)
    assert e1.values == (2**63, None)
    again = make_stmt_execute(3, [5, "x"], types, send_types=False)
    assert again[11] == 0 and len(again) == 12 + 8 + 2
    e2 = parse_stmt_execute(again, 2, previous_types=e1.types)
    assert e2.values == (5, "x") and not e2.new_params_bound
    with pytest.raises(ProtocolError, match="never bound"):
        parse_stmt_execute(again, 2)


def test_rebind_stmt_execute_readdresses_and_always_binds_types():
    types = ((c.MYSQL_TYPE_LONGLONG, True), (c.MYSQL_TYPE_VAR_STRING, False))
    first = make_stmt_execute(3, [2**63, None], types)
    moved, raw = rebind_stmt_execute(first, 77, 2, None)
    assert moved == make_stmt_execute(77, [2**63, None], types) and raw == first[12:16]
    again = make_stmt_execute(3, [5, "x"], types, send_types=False)
    moved, _ = rebind_stmt_execute(again, 78, 2, raw)
    assert moved == make_stmt_execute(78, [5, "x"], types)  # the types come from the earlier execute
    assert parse_stmt_execute(moved, 2).values == (5, "x")
    with pytest.raises(ProtocolError, match="never bound"):
        rebind_stmt_execute(again, 78, 2, None)
    cursor = bytearray(make_stmt_execute(3, [], ()))
    cursor[5] = 1  # CURSOR_TYPE_READ_ONLY
    assert rebind_stmt_execute(bytes(cursor), 9, 0, None) == (make_stmt_execute(9, [], ()), b"")
    assert rebind_stmt_execute(b"\x17\x03\0\0\0\x00", 9, 0, None)[0] == make_stmt_execute(9, [], ())  # iteration count omitted


def test_stmt_execute_long_data_takes_no_room():
    types = ((c.MYSQL_TYPE_BLOB, False), (c.MYSQL_TYPE_LONG, False), (c.MYSQL_TYPE_STRING, False))
    payload = make_stmt_execute(1, [b"ignored", 7, "ignored"], types, long_data_params=frozenset({0, 2}))
    assert payload.endswith(b"\x07\x00\x00\x00")
    e = parse_stmt_execute(payload, 3, long_data={0: b"\x00" * 10, 2: "ü".encode()})
    assert e.values == (b"\x00" * 10, 7, "ü")


def test_stmt_execute_without_params_and_bad_input():
    assert parse_stmt_execute(b"\x17\x01\0\0\0\x00\x01\0\0\0", 0).values == ()
    with pytest.raises(ProtocolError):
        parse_stmt_execute(b"\x17\x01\0\0\0\x00\x01\0\0\0\x00\x01\x03", 1)  # type truncated
    with pytest.raises(ProtocolError, match="after"):
        parse_stmt_execute(make_stmt_execute(1, [1], ((c.MYSQL_TYPE_TINY, False),)) + b"x", 1)
    with pytest.raises(ProtocolError, match="flag"):
        parse_stmt_execute(b"\x17\x01\0\0\0\x00\x01\0\0\0\x00\x07", 1)
    with pytest.raises(ProtocolError):
        peek_statement_id(b"\x17\x01")


def test_param_type_for_python_values():
    assert param_type_for(2**64 - 1) == (c.MYSQL_TYPE_LONGLONG, True)
    assert param_type_for(True) == (c.MYSQL_TYPE_TINY, False)
    assert param_type_for(b"") == (c.MYSQL_TYPE_BLOB, False)
    assert param_type_for(dt.datetime(2020, 1, 1)) == (c.MYSQL_TYPE_DATETIME, False)
    assert param_type_for(dt.date(2020, 1, 1)) == (c.MYSQL_TYPE_DATE, False)
    payload = make_stmt_execute(1, [1, "a", None, Decimal("1.5"), dt.time(1, 2, 3)])
    assert parse_stmt_execute(payload, 5).values == (1, "a", None, Decimal("1.5"), dt.timedelta(hours=1, minutes=2, seconds=3))


NONCE = b"0123456789abcdefghij"


def test_native_scramble_matches_pymysql():
    for pw in (b"app-secret", b"\xff\x00binary", b"x" * 100):
        ours = auth.native_scramble(pw, NONCE)
        assert ours == pymysql_auth.scramble_native_password(pw, NONCE)
        assert auth.native_verify(pw, NONCE, ours)
        assert not auth.native_verify(pw + b"!", NONCE, ours)
    assert auth.native_scramble(b"", NONCE) == b""
    assert auth.native_verify(b"", NONCE, b"")


def test_sha2_scramble_matches_pymysql():
    for pw in (b"app-secret", b"p\xc3\xa4ss"):
        ours = auth.sha2_scramble(pw, NONCE)
        assert ours == pymysql_auth.scramble_caching_sha2(pw, NONCE)
        assert auth.sha2_verify(pw, NONCE, ours)
        assert not auth.verify(auth.CACHING_SHA2_PASSWORD, b"other", NONCE, ours)
    assert auth.scramble(auth.CACHING_SHA2_PASSWORD, b"", NONCE) == b""


def test_rsa_full_auth_with_pymysql_encryption():
    keys = auth.RsaKeyPair(1024)  # small key: fast test; the server uses 2048
    assert keys.public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    cipher = pymysql_auth.sha2_rsa_encrypt(b"app-secret", NONCE, keys.public_pem)
    assert keys.decrypt_password(cipher, NONCE) == b"app-secret"
    ours = auth.rsa_encrypt_password(b"app-secret", NONCE, keys.public_pem)
    assert keys.decrypt_password(ours, NONCE) == b"app-secret"
    assert auth.xor_password(b"ab", b"\x01\x02") == bytes((ord("a") ^ 1, ord("b") ^ 2, 1))


def test_nonce_bytes_are_printable_range_without_nul_or_dollar():
    for _ in range(50):
        n = auth.new_nonce()
        assert len(n) == 20 and all(0 < b < 128 and b != 0x24 for b in n)


def test_unknown_plugin():
    with pytest.raises(ValueError):
        auth.scramble("client_ed25519", b"x", NONCE)
    assert not auth.verify("client_ed25519", b"x", NONCE, b"")


def _result_set(deprecate_eof: bool, rows: int, status: int = c.SERVER_STATUS_AUTOCOMMIT) -> list[bytes]:
    caps = c.CLIENT_PROTOCOL_41 | (c.CLIENT_DEPRECATE_EOF if deprecate_eof else 0)
    packets = [b"\x02", make_column_definition(ColumnDefinition("a", 3)), make_column_definition(ColumnDefinition("b", 253))]
    if not deprecate_eof:
        packets.append(make_eof(EOF(0, status)))
    packets += [make_text_row([i, "x"]) for i in range(rows)]
    packets.append(make_ok(OK(0, 0, status), caps, eof=True) if deprecate_eof else make_eof(EOF(0, status)))
    return packets


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_tracker_result_set(deprecate_eof):
    caps = c.CLIENT_PROTOCOL_41 | (c.CLIENT_DEPRECATE_EOF if deprecate_eof else 0)
    t = ResponseTracker(caps)
    kinds = [t.feed(p) for p in _result_set(deprecate_eof, 2, c.SERVER_STATUS_IN_TRANS)]
    expected = [COLUMN_COUNT, COLUMN, COLUMN] + ([] if deprecate_eof else [COLUMNS_EOF]) + [ROW, ROW, ROWS_END]
    assert kinds == expected
    assert t.done and t.columns == 2 and t.status == c.SERVER_STATUS_IN_TRANS
    with pytest.raises(ProtocolError):
        t.feed(b"\x00")


def test_tracker_multi_results_ok_and_error_midway():
    t = ResponseTracker(c.CLIENT_PROTOCOL_41)
    assert t.feed(make_ok(OK(1, 0, c.SERVER_MORE_RESULTS_EXISTS))) == K_OK
    assert not t.done
    for p in _result_set(False, 1, c.SERVER_MORE_RESULTS_EXISTS | 2)[:-1]:
        t.feed(p)
    assert t.feed(make_eof(EOF(0, c.SERVER_MORE_RESULTS_EXISTS))) == ROWS_END and not t.done
    assert t.feed(make_err(ERR(1146, "no such table", "42S02"))) == K_ERR
    assert t.done and t.errors == 1 and t.results == 2


def test_tracker_row_starting_with_fe_byte_is_a_row_only_when_huge():
    t = ResponseTracker(c.CLIENT_PROTOCOL_41 | c.CLIENT_DEPRECATE_EOF)
    for p in (b"\x01", make_column_definition(ColumnDefinition("a", 251))):
        t.feed(p)
    assert t.feed(b"\xfb") == ROW  # a NULL cell
    assert t.feed(b"\x00\x00\x00\x02\x00\x00\x00") == ROW  # OK-shaped but header 0x00: a row with empty cells
    assert t.feed(b"\xfe\x00\x00\x02\x00\x00\x00") == ROWS_END and t.done


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_tracker_prepare_response(deprecate_eof):
    caps = c.CLIENT_PROTOCOL_41 | (c.CLIENT_DEPRECATE_EOF if deprecate_eof else 0)
    t = ResponseTracker(caps, prepare=True)
    col = make_column_definition(ColumnDefinition("?", 253))
    packets = [bytes.fromhex("00 05 00 00 00 01 00 02 00 00 00 00"), col, col]
    if not deprecate_eof:
        packets.append(make_eof(EOF()))
    packets.append(col)
    if not deprecate_eof:
        packets.append(make_eof(EOF()))
    kinds = [t.feed(p) for p in packets]
    assert kinds[0] == PREPARE_OK and kinds.count(PARAM) == 2 and kinds.count(COLUMN) == 1
    assert t.done and t.statement_id == 5 and (t.params, t.columns) == (2, 1)


def test_tracker_prepare_without_params_or_columns():
    t = ResponseTracker(c.CLIENT_PROTOCOL_41, prepare=True)
    assert t.feed(bytes.fromhex("00 01 00 00 00 00 00 00 00 00 00 00")) == PREPARE_OK
    assert t.done
