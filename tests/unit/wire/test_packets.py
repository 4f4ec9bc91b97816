"""Connection-phase and response packets, byte by byte (examples from the protocol documentation)."""
from __future__ import annotations

import pytest
from pymysql.protocol import EOFPacketWrapper, FieldDescriptorPacket, MysqlPacket, OKPacketWrapper

from mdriver.wire import constants as c
from mdriver.wire.codec import ProtocolError
from mdriver.wire.framing import PacketBuffer
from mdriver.wire.packets import (
    EOF,
    ERR,
    OK,
    AuthSwitchRequest,
    ChangeUser,
    ColumnDefinition,
    HandshakeResponse41,
    HandshakeV10,
    SendLongData,
    StmtPrepareOK,
    is_end_of_rows,
    is_eof,
    is_ssl_request,
    make_auth_more_data,
    make_auth_switch_request,
    make_change_user,
    make_column_definition,
    make_eof,
    make_err,
    make_handshake_response41,
    make_handshake_v10,
    make_ok,
    make_send_long_data,
    make_ssl_request,
    make_stmt_prepare_ok,
    parse_auth_more_data,
    parse_auth_switch_request,
    parse_change_user,
    parse_column_definition,
    parse_eof,
    parse_err,
    parse_field_list,
    parse_handshake_response41,
    parse_handshake_v10,
    parse_ok,
    parse_send_long_data,
    parse_set_option,
    parse_stmt_prepare_ok,
)


def payload_of(hexdump: str) -> tuple[int, bytes]:
    """The (sequence id, payload) of one framed packet given as hex."""
    buf = PacketBuffer()
    buf.feed(bytes.fromhex(hexdump))
    got = buf.next_packet()
    assert got is not None and buf.buffered() == 0
    return got


HANDSHAKE_564 = (
    "50 00 00 00 0a 35 2e 36 2e 34 2d 6d 37 2d 6c 6f 67 00 56 0a 00 00 52 42 33 76 7a 26 47 72 00 ff"
    "ff 08 02 00 0f c0 15 00 00 00 00 00 00 00 00 00 00 2b 79 44 26 2f 5a 5a 33 30 35 5a 47 00 6d 79"
    "73 71 6c 5f 6e 61 74 69 76 65 5f 70 61 73 73 77 6f 72 64 00"
)


def test_handshake_v10_parse_documented_example():
    seq, payload = payload_of(HANDSHAKE_564)
    h = parse_handshake_v10(payload)
    assert seq == 0
    assert h.server_version == "5.6.4-m7-log"
    assert h.connection_id == 2646
    assert h.auth_data == b"RB3vz&Gr+yD&/ZZ305ZG"
    assert h.capabilities == 0xC00FFFFF
    assert h.charset == 8
    assert h.status == c.SERVER_STATUS_AUTOCOMMIT
    assert h.auth_plugin == "mysql_native_password"
    assert make_handshake_v10(h) == payload


def test_handshake_v10_old_server_without_plugin_auth():
    _, payload = payload_of(
        "36 00 00 00 0a 35 2e 35 2e 32 2d 6d 32 00 0b 00 00 00 64 76 48 40 49 2d 43 4a 00 ff f7 08 02 00"
        "00 00 00 00 00 00 00 00 00 00 00 00 00 2a 34 64 7c 63 5a 77 6b 34 5e 5d 3a 00"
    )
    h = parse_handshake_v10(payload)
    assert h.server_version == "5.5.2-m2" and h.connection_id == 11
    assert h.auth_data == b"dvH@I-CJ*4d|cZwk4^]:"
    assert h.capabilities == 0xF7FF
    assert h.auth_plugin == "mysql_native_password"


def test_handshake_v10_make_layout_and_mariadb_extension():
    h = HandshakeV10("10.11.6-MariaDB", 7, bytes(range(1, 21)), c.CLIENT_PROTOCOL_41 | c.CLIENT_SECURE_CONNECTION | c.CLIENT_PLUGIN_AUTH,
                     45, 2, "caching_sha2_password", mariadb_capabilities=0x1F)
    p = make_handshake_v10(h)
    assert p[0] == 10
    assert p[1:17] == b"10.11.6-MariaDB\0"
    assert p[17:21] == b"\x07\0\0\0"
    assert p[21:29] == bytes(range(1, 9)) and p[29] == 0
    caps = int.from_bytes(p[30:32], "little") | int.from_bytes(p[35:37], "little") << 16
    assert caps == h.capabilities and p[32] == 45 and p[33:35] == b"\x02\x00"
    assert p[37] == 21 and p[38:44] == bytes(6) and p[44:48] == b"\x1f\0\0\0"
    assert p[48:61] == bytes(range(9, 21)) + b"\0"
    assert p[61:] == b"caching_sha2_password\0"
    back = parse_handshake_v10(p)
    assert back == h  # CLIENT_LONG_PASSWORD clear: MariaDB capabilities are read


def test_handshake_v10_rejects_other_protocol_versions():
    with pytest.raises(ProtocolError, match="version 9"):
        parse_handshake_v10(b"\x09abc\0")
    with pytest.raises(ProtocolError):
        parse_handshake_v10(b"\x0a5.5")  # truncated


RESPONSE_558 = (
    "54 00 00 01 8d a6 0f 00 00 00 00 01 08 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
    "00 00 00 00 70 61 6d 00 14 ab 09 ee f6 bc b1 32 3e 61 14 38 65 c0 99 1d 95 7d 75 d4 47 74 65 73"
    "74 00 6d 79 73 71 6c 5f 6e 61 74 69 76 65 5f 70 61 73 73 77 6f 72 64 00"
)


def test_handshake_response41_documented_example():
    seq, payload = payload_of(RESPONSE_558)
    r = parse_handshake_response41(payload)
    assert seq == 1
    assert r.capabilities == 0x000FA68D
    assert r.max_packet == 16 * 1024 * 1024
    assert r.charset == 8
    assert r.user == "pam"
    assert r.auth_response == bytes.fromhex("ab09eef6bcb1323e61143865c0991d957d75d447")
    assert r.database == "test"
    assert r.auth_plugin == "mysql_native_password"
    assert r.attrs == {}
    assert make_handshake_response41(r) == payload


def test_handshake_response41_lenenc_auth_and_attrs_roundtrip():
    caps = (c.CLIENT_PROTOCOL_41 | c.CLIENT_SECURE_CONNECTION | c.CLIENT_PLUGIN_AUTH | c.CLIENT_CONNECT_ATTRS
            | c.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | c.CLIENT_CONNECT_WITH_DB)
    r = HandshakeResponse41(caps, 1 << 24, 45, "app", b"\x01" * 32, "app", "caching_sha2_password",
                            {"_client_name": "libmariadb", "program_name": "sysbench"})
    p = make_handshake_response41(r)
    assert p[32:36] == b"app\0" and p[36] == 32  # lenenc length of the auth response
    assert parse_handshake_response41(p) == r


def test_handshake_response_without_protocol41_is_refused():
    with pytest.raises(ProtocolError, match="4.1"):
        parse_handshake_response41(bytes(32) + b"u\0")


def test_ssl_request():
    p = make_ssl_request(c.CLIENT_PROTOCOL_41, 1 << 24, 45)
    assert len(p) == 32 and is_ssl_request(p)
    assert int.from_bytes(p[:4], "little") == c.CLIENT_PROTOCOL_41 | c.CLIENT_SSL
    assert not is_ssl_request(p + b"user\0")


def test_auth_switch_and_more_data():
    p = make_auth_switch_request(AuthSwitchRequest("mysql_native_password", b"12345678901234567890"))
    assert p == b"\xfemysql_native_password\x0012345678901234567890\x00"
    assert parse_auth_switch_request(p) == AuthSwitchRequest("mysql_native_password", b"12345678901234567890")
    assert MysqlPacket(p, "utf8").is_auth_switch_request()
    assert make_auth_more_data(b"\x03") == b"\x01\x03"
    assert parse_auth_more_data(b"\x01\x04") == b"\x04"
    with pytest.raises(ProtocolError):
        parse_auth_more_data(b"\x00")


def test_change_user_roundtrip():
    caps = c.CLIENT_PROTOCOL_41 | c.CLIENT_SECURE_CONNECTION | c.CLIENT_PLUGIN_AUTH | c.CLIENT_CONNECT_ATTRS
    cu = ChangeUser("bob", b"\xaa" * 20, "app", 45, "mysql_native_password", {"k": "v"})
    p = make_change_user(cu, caps)
    assert p[:5] == b"\x11bob\0" and p[5] == 20
    assert parse_change_user(p, caps) == cu
    old = parse_change_user(b"\x11bob\0\x00app\0", c.CLIENT_PROTOCOL_41 | c.CLIENT_SECURE_CONNECTION)
    assert old == ChangeUser("bob", b"", "app", None, None, {})


def test_ok_documented_example_and_pymysql():
    seq, payload = payload_of("07 00 00 02 00 00 00 02 00 00 00")
    ok = parse_ok(payload)
    assert seq == 2 and ok == OK(0, 0, 2, 0, b"")
    assert make_ok(ok) == payload
    big = OK(300, 2**40, c.SERVER_STATUS_IN_TRANS | c.SERVER_MORE_RESULTS_EXISTS, 3, b"Rows matched: 1")
    p = make_ok(big)
    w = OKPacketWrapper(MysqlPacket(p, "utf8"))
    assert (w.affected_rows, w.insert_id, w.server_status, w.warning_count, w.message) == (300, 2**40, 9, 3, b"Rows matched: 1")
    assert w.has_next
    assert parse_ok(p) == big


def test_ok_as_end_of_rows_under_deprecate_eof():
    p = make_ok(OK(0, 0, 0x22, 1), c.CLIENT_PROTOCOL_41 | c.CLIENT_DEPRECATE_EOF, eof=True)
    assert p == b"\xfe\x00\x00\x22\x00\x01\x00"
    assert is_end_of_rows(p) and is_eof(p)
    assert parse_ok(p).status == 0x22


def test_ok_with_session_track():
    caps = c.CLIENT_PROTOCOL_41 | c.CLIENT_SESSION_TRACK
    ok = OK(1, 0, c.SERVER_SESSION_STATE_CHANGED | 2, 0, b"info", b"\x01\x05\x04app1")
    p = make_ok(ok, caps)
    assert p == b"\x00\x01\x00\x02\x40\x00\x00\x04info\x07\x01\x05\x04app1"
    assert parse_ok(p, caps) == ok


def test_err_documented_example():
    seq, payload = payload_of("17 00 00 01 ff 48 04 23 48 59 30 30 30 4e 6f 20 74 61 62 6c 65 73 20 75 73 65 64")
    e = parse_err(payload)
    assert e == ERR(1096, "No tables used", "HY000")
    assert make_err(e) == payload
    pk = MysqlPacket(payload, "utf8")
    assert pk.is_error_packet()


def test_err_without_sqlstate_during_handshake():
    p = b"\xff\x69\x04Host '1.2.3.4' is blocked"
    assert parse_err(p) == ERR(1129, "Host '1.2.3.4' is blocked", "HY000")
    assert make_err(ERR(1129, "x"), 0) == b"\xff\x69\x04x"


def test_eof_documented_example_and_pymysql():
    seq, payload = payload_of("05 00 00 05 fe 00 00 02 00")
    assert seq == 5
    assert parse_eof(payload) == EOF(0, 2)
    assert make_eof(EOF(0, 2)) == payload
    w = EOFPacketWrapper(MysqlPacket(make_eof(EOF(4, 0x0A)), "utf8"))
    assert (w.warning_count, w.server_status) == (4, 0x0A)


def test_column_definition_documented_example_and_pymysql():
    _, payload = payload_of(
        "27 00 00 02 03 64 65 66 00 00 00 11 40 40 76 65 72 73 69 6f 6e 5f 63 6f 6d 6d 65 6e 74 00 0c 08 00"
        "1c 00 00 00 fd 00 00 1f 00 00"
    )
    col = parse_column_definition(payload)
    assert col == ColumnDefinition("@@version_comment", c.MYSQL_TYPE_VAR_STRING, charset=8, length=28, decimals=31)
    assert make_column_definition(col) == payload


def test_column_definition_pymysql_reads_ours():
    col = ColumnDefinition("uid", c.MYSQL_TYPE_LONGLONG, "app", "user_relation", "user_relation_0007", "uid",
                           63, 20, c.NOT_NULL_FLAG | c.PRI_KEY_FLAG | c.NUM_FLAG, 0)
    p = make_column_definition(col)
    f = FieldDescriptorPacket(p, "utf8")
    assert (f.db, f.table_name, f.org_table, f.name, f.org_name) == (b"app", "user_relation", "user_relation_0007", "uid", "uid")
    assert (f.charsetnr, f.length, f.type_code, f.flags, f.scale) == (63, 20, 8, col.flags, 0)
    assert parse_column_definition(p) == col


def test_column_definition_field_list_default():
    col = ColumnDefinition("name", c.MYSQL_TYPE_VAR_STRING, default=b"abc")
    p = make_column_definition(col, field_list=True)
    assert p.endswith(b"\x03abc")
    assert parse_column_definition(p).default == b"abc"
    p_null = make_column_definition(ColumnDefinition("n", 3), field_list=True)
    assert p_null.endswith(b"\xfb") and parse_column_definition(p_null).default is None


def test_stmt_prepare_ok_documented_example():
    _, payload = payload_of("0c 00 00 01 00 01 00 00 00 01 00 02 00 00 00 00")
    assert parse_stmt_prepare_ok(payload) == StmtPrepareOK(1, 1, 2, 0)
    assert make_stmt_prepare_ok(StmtPrepareOK(1, 1, 2, 0)) == payload


def test_simple_commands():
    assert parse_send_long_data(make_send_long_data(SendLongData(9, 2, b"chunk"))) == SendLongData(9, 2, b"chunk")
    assert make_send_long_data(SendLongData(9, 2, b"x")) == b"\x18\x09\0\0\0\x02\0x"
    assert parse_field_list(b"\x04user_fans\0") == (b"user_fans", b"")
    assert parse_field_list(b"\x04t\0a%") == (b"t", b"a%")
    assert parse_set_option(b"\x1b\x01\x00") == c.MYSQL_OPTION_MULTI_STATEMENTS_OFF
