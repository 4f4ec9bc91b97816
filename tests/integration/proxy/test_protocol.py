"""The proxy's protocol surface with real clients: login, auth plugins, TLS, limits, simple commands."""
from __future__ import annotations

import datetime
import socket
import ssl
import time

import pymysql
import pytest
from pymysql.constants import COMMAND

from mdriver.wire import auth
from mdriver.wire import constants as c
from mdriver.wire.framing import PacketBuffer, frame
from mdriver.wire.packets import (
    HandshakeResponse41,
    make_handshake_response41,
    parse_auth_switch_request,
    parse_err,
    parse_handshake_v10,
)
from proxy.server import ServerOptions


def errno_of(excinfo) -> int:
    return excinfo.value.args[0]


def test_login_ping_and_logical_database(proxy):
    conn = proxy.connect()
    try:
        conn.ping(reconnect=False)
        with conn.cursor() as cur:
            cur.execute("SELECT DATABASE(), CONNECTION_ID()")
            db, cid = cur.fetchone()
        assert db == "app" and cid == conn.thread_id()
        assert conn.get_server_info().startswith("5.5.5-10.11")
    finally:
        conn.close()


def test_wrong_password_and_unknown_user_get_1045(proxy):
    with pytest.raises(pymysql.err.OperationalError) as e:
        proxy.connect(password="wrong")
    assert errno_of(e) == 1045
    assert "Access denied for user 'app'" in e.value.args[1]
    with pytest.raises(pymysql.err.OperationalError) as e:
        proxy.connect(user="nobody", password="x")
    assert errno_of(e) == 1045
    with pytest.raises(pymysql.err.OperationalError) as e:
        proxy.connect(password="")
    assert errno_of(e) == 1045 and "using password: NO" in e.value.args[1]


def test_init_db_known_unknown_and_denied(proxy, make_proxy, mariadb_cluster, tmp_path):
    conn = proxy.connect(database=None)
    try:
        conn.select_db("app")
        with conn.cursor() as cur:
            cur.execute("SELECT DATABASE()")
            assert cur.fetchone() == ("app",)
        with pytest.raises(pymysql.err.OperationalError) as e:
            conn.select_db("nope")
        assert errno_of(e) == 1049
    finally:
        conn.close()
    with pytest.raises(pymysql.err.OperationalError) as e:
        proxy.connect(database="nope")
    assert errno_of(e) == 1049


def test_unknown_command_gets_1047_and_connection_survives(proxy):
    conn = proxy.connect()
    try:
        conn._execute_command(0x20, b"")  # no such command
        with pytest.raises(pymysql.err.MySQLError) as e:
            conn._read_ok_packet()
        assert errno_of(e) == 1047
        conn._execute_command(COMMAND.COM_PROCESS_KILL, b"\x01\x00\x00\x00")
        with pytest.raises(pymysql.err.MySQLError) as e:
            conn._read_ok_packet()
        assert errno_of(e) == 1047
        conn.ping(reconnect=False)
    finally:
        conn.close()


def test_quit_closes_the_connection(proxy):
    conn = proxy.connect()
    cid = conn.thread_id()

    def present() -> bool:
        return proxy.call(lambda: any(c.id == cid for c in proxy.server.clients))

    assert present()
    conn.close()  # sends COM_QUIT
    deadline = time.monotonic() + 5
    while present() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not present()


def _raw_login(port: int, plugin: str | None, password: bytes = b"app-secret", caps_extra: int = 0):
    """Log in with our own wire code, offering ``plugin``; returns (socket, buffer, first reply payload)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    buf = PacketBuffer()

    def read():
        while True:
            p = buf.next_packet()
            if p is not None:
                return p
            data = s.recv(65536)
            if not data:
                raise ConnectionError("closed")
            buf.feed(data)

    seq, payload = read()
    hs = parse_handshake_v10(payload)
    caps = c.CLIENT_PROTOCOL_41 | c.CLIENT_SECURE_CONNECTION | c.CLIENT_PLUGIN_AUTH | caps_extra
    scramble = auth.scramble(plugin, password, hs.auth_data) if plugin in auth.SUPPORTED_PLUGINS else password
    s.sendall(frame(make_handshake_response41(HandshakeResponse41(caps, 1 << 24, 45, "app", scramble, None, plugin)), 1))
    return s, read, hs


def test_auth_switch_for_an_unsupported_client_plugin(proxy):
    s, read, hs = _raw_login(proxy.port, "mysql_clear_password")
    try:
        seq, payload = read()
        assert payload[0] == 0xFE and seq == 2
        sw = parse_auth_switch_request(payload)
        assert sw.plugin == "mysql_native_password" and len(sw.data) == 20 and sw.data != hs.auth_data[:20]
        s.sendall(frame(auth.native_scramble(b"app-secret", sw.data), 3))
        seq, payload = read()
        assert payload[0] == 0x00 and seq == 4
    finally:
        s.close()


def test_handshake_capabilities(proxy):
    s, read, hs = _raw_login(proxy.port, "mysql_native_password")
    try:
        for flag in (c.CLIENT_PROTOCOL_41, c.CLIENT_DEPRECATE_EOF, c.CLIENT_CONNECT_WITH_DB, c.CLIENT_MULTI_RESULTS,
                     c.CLIENT_PLUGIN_AUTH, c.CLIENT_CONNECT_ATTRS, c.CLIENT_SECURE_CONNECTION):
            assert hs.capabilities & flag
        assert hs.capabilities & c.CLIENT_LONG_PASSWORD  # MariaDB clients must not expect MariaDB extensions
        assert hs.auth_plugin == "mysql_native_password"
        assert read()[1][0] == 0x00
    finally:
        s.close()


def test_caching_sha2_full_auth_with_rsa_then_fast_auth(make_proxy):
    p = make_proxy(ServerOptions(auth_plugin="caching_sha2_password", recovery_interval=0))
    # First login: not cached -> full authentication; without TLS, PyMySQL fetches the RSA key.
    conn = p.connect()
    conn.ping(reconnect=False)
    conn.close()
    assert p.call(lambda: len(p.server.sha2_cache)) == 1
    # Second login: fast path (scramble against the cached password).
    s, read, hs = _raw_login(p.port, "caching_sha2_password")
    try:
        seq, payload = read()
        assert payload == bytes((0x01, auth.SHA2_FAST_AUTH_SUCCESS))
        assert read()[1][0] == 0x00
    finally:
        s.close()
    with pytest.raises(pymysql.err.OperationalError) as e:
        p.connect(password="wrong")
    assert errno_of(e) == 1045


def test_caching_sha2_full_auth_rsa_wrong_password(make_proxy):
    p = make_proxy(ServerOptions(auth_plugin="caching_sha2_password", recovery_interval=0))
    with pytest.raises(pymysql.err.OperationalError) as e:
        p.connect(password="wrong")
    assert errno_of(e) == 1045
    assert p.call(lambda: len(p.server.sha2_cache)) == 0


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def _client_tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_tls_required_and_caching_sha2_full_auth_over_tls(make_proxy, tmp_path):
    cert, key = _self_signed(tmp_path)
    p = make_proxy(ServerOptions(auth_plugin="caching_sha2_password", recovery_interval=0),
                   tls={"cert": cert, "key": key, "required": True})
    with pytest.raises(pymysql.err.OperationalError) as e:
        p.connect(ssl_disabled=True)
    assert errno_of(e) == 3159
    conn = p.connect(ssl=_client_tls())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT DATABASE()")
            assert cur.fetchone() == ("app",)
        assert conn._secure
    finally:
        conn.close()
    assert p.call(lambda: len(p.server.sha2_cache)) == 1  # the clear password over TLS was checked and cached


def test_too_many_connections_gets_1040(make_proxy):
    p = make_proxy(max_client_connections=2)
    a, b = p.connect(), p.connect()
    try:
        with pytest.raises(pymysql.err.OperationalError) as e:
            p.connect()
        assert errno_of(e) == 1040
    finally:
        a.close()
        b.close()
    time.sleep(0.2)
    p.connect().close()


def test_pre_auth_packet_limit(proxy):
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    try:
        s.recv(65536)
        s.sendall((100_000).to_bytes(3, "little") + b"\x01")  # announce a 100 kB login packet
        data = s.recv(65536)
        buf = PacketBuffer()
        buf.feed(data)
        e = parse_err(buf.next_packet()[1])
        assert e.errno == 1153
        assert s.recv(65536) == b""  # closed
    finally:
        s.close()


def test_max_allowed_packet_after_login(make_proxy):
    p = make_proxy(max_allowed_packet=4096)
    conn = p.connect()
    try:
        with pytest.raises(pymysql.err.MySQLError) as e:
            with conn.cursor() as cur:
                cur.execute("SELECT '" + "x" * 5000 + "'")
        assert errno_of(e) in (1153, 2013)
    finally:
        conn.close()


def test_idle_timeout_closes_the_connection(make_proxy):
    p = make_proxy(idle_timeout=1.0)
    conn = p.connect()
    try:
        time.sleep(2.5)
        with pytest.raises(pymysql.err.OperationalError) as e:
            conn.ping(reconnect=False)
        assert errno_of(e) in (2006, 2013)
    finally:
        conn.close()


def test_reset_connection_and_set_option(proxy):
    conn = proxy.connect()
    try:
        conn._execute_command(c.COM_RESET_CONNECTION, b"")
        conn._read_ok_packet()
        conn._execute_command(COMMAND.COM_SET_OPTION, b"\x01\x00")
        pkt = conn._read_packet()
        assert pkt.is_eof_packet()
        conn.ping(reconnect=False)
    finally:
        conn.close()


def test_statistics(proxy):
    conn = proxy.connect()
    try:
        conn._execute_command(COMMAND.COM_STATISTICS, b"")
        pkt = conn._read_packet()
        assert pkt.get_all_data().startswith(b"Uptime: ")
    finally:
        conn.close()


def test_change_user_resets_the_session(proxy):
    from mdriver.wire.packets import ChangeUser, make_change_user
    from wireclient import ServerError, WireClient

    cl = WireClient(proxy.port)
    try:
        cl.query("SET @x = 5")
        nonce = None
        caps = cl.caps
        # first try with a scramble of the wrong nonce: the proxy switches to a fresh nonce
        cl.send(make_change_user(ChangeUser("app", b"\x00" * 20, "app", 45, "mysql_native_password"), caps))
        seq, payload = cl.read()
        assert payload[0] == 0xFE
        nonce = parse_auth_switch_request(payload).data
        cl.sock.sendall(frame(auth.native_scramble(b"app-secret", nonce), seq + 1))
        cl.expect_ok()
        assert cl.query("SELECT @x, DATABASE()")[1] == [(None, "app")]
        cl.send(make_change_user(ChangeUser("app", b"\x00" * 20, "app", 45, "mysql_native_password"), caps))
        seq, payload = cl.read()
        sw = parse_auth_switch_request(payload)
        cl.sock.sendall(frame(auth.native_scramble(b"wrong", sw.data), seq + 1))
        with pytest.raises(ServerError) as e:
            cl.expect_ok()
        assert e.value.errno == 1045
    finally:
        cl.sock.close()


def test_field_list_with_logical_names(proxy):
    from mdriver.wire.packets import is_eof, parse_column_definition
    from wireclient import ServerError, WireClient

    cl = WireClient(proxy.port)
    try:
        cl.send(b"\x04user_relation\x00")
        cols = []
        while True:
            payload = cl._check(cl.read()[1])
            if is_eof(payload):
                break
            cols.append(parse_column_definition(payload))
        assert [cd.name for cd in cols][:3] == ["id", "uid", "target_uid"]
        assert {cd.table for cd in cols} == {"user_relation"} and {cd.org_table for cd in cols} == {"user_relation"}
        cl.send(b"\x04no_such_table\x00")
        with pytest.raises(ServerError) as e:
            cl._check(cl.read()[1])
        assert e.value.errno == 1146 and "no_such_table" in str(e.value)
        assert cl.query("SELECT 1")[1] == [(1,)]
    finally:
        cl.close()


def test_malformed_commands_get_an_error_not_a_disconnect(proxy):
    from wireclient import ServerError, WireClient

    cl = WireClient(proxy.port)
    try:
        for payload in (b"\x11", b"\x1b\x01", b"\x17\x01\x00"):  # CHANGE_USER, SET_OPTION, STMT_EXECUTE cut short
            cl.send(payload)
            with pytest.raises(ServerError) as e:
                cl.expect_ok()
            assert e.value.errno in (1835, 1243), payload
        assert cl.query("SELECT 1")[1] == [(1,)]
    finally:
        cl.close()
