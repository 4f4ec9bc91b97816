"""Sans-IO MySQL client/server protocol: framing, packets, auth scrambles, value codecs.

Nothing here does I/O: bytes in, dataclasses out, and back. The proxy's
frontend and backend both build on it.
"""
from mdriver.wire import auth, constants
from mdriver.wire.codec import ProtocolError, Reader, lenenc_int, lenenc_str
from mdriver.wire.framing import MAX_FRAME, PacketBuffer, PacketTooLarge, frame, frame_many
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
    is_eof,
    is_ssl_request,
    make_auth_more_data,
    make_auth_switch_request,
    make_column_definition,
    make_eof,
    make_err,
    make_handshake_response41,
    make_handshake_v10,
    make_ok,
    make_ssl_request,
    make_stmt_prepare_ok,
    parse_auth_switch_request,
    parse_change_user,
    parse_column_definition,
    parse_eof,
    parse_err,
    parse_handshake_response41,
    parse_handshake_v10,
    parse_ok,
    parse_send_long_data,
    parse_stmt_prepare_ok,
)
from mdriver.wire.response import ResponseTracker
from mdriver.wire.statements import StmtExecute, make_stmt_execute, param_type_for, parse_stmt_execute
from mdriver.wire.values import decode_binary, decode_text, encode_binary, encode_text, make_binary_row, make_text_row, parse_binary_row, parse_text_row

__all__ = [
    "EOF", "ERR", "MAX_FRAME", "OK", "AuthSwitchRequest", "ChangeUser", "ColumnDefinition", "HandshakeResponse41",
    "HandshakeV10", "PacketBuffer", "PacketTooLarge", "ProtocolError", "Reader", "ResponseTracker", "SendLongData",
    "StmtExecute", "StmtPrepareOK", "auth", "constants", "decode_binary", "decode_text", "encode_binary", "encode_text",
    "frame", "frame_many", "is_eof", "is_ssl_request", "lenenc_int", "lenenc_str", "make_auth_more_data",
    "make_auth_switch_request", "make_binary_row", "make_column_definition", "make_eof", "make_err",
    "make_handshake_response41", "make_handshake_v10", "make_ok", "make_ssl_request", "make_stmt_execute",
    "make_stmt_prepare_ok", "make_text_row", "param_type_for", "parse_auth_switch_request", "parse_binary_row",
    "parse_change_user", "parse_column_definition", "parse_eof", "parse_err", "parse_handshake_response41",
    "parse_handshake_v10", "parse_ok", "parse_send_long_data", "parse_stmt_execute", "parse_stmt_prepare_ok",
    "parse_text_row",
]
