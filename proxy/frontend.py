"""One client connection: handshake, authentication, then commands by their first byte.

An ``asyncio.Protocol`` (not Streams) because this is the hot path. The login
runs inside ``data_received`` (it needs no backend); commands run one at a
time on a task per burst of packets, so a pipelining client is served in order.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections import deque

from mdriver import err
from mdriver.wire import auth
from mdriver.wire import constants as c
from mdriver.wire.codec import ProtocolError
from mdriver.wire.framing import PacketBuffer, PacketTooLarge, frame
from mdriver.wire.packets import (
    ERR,
    OK,
    AuthSwitchRequest,
    HandshakeV10,
    is_ssl_request,
    make_auth_more_data,
    make_auth_switch_request,
    make_err,
    make_handshake_v10,
    make_ok,
    parse_handshake_response41,
)
from proxy import fastpath
from proxy.executor import Executor
from proxy.session import Session

log = logging.getLogger(__name__)

SERVER_CAPABILITIES = (
    c.CLIENT_LONG_PASSWORD | c.CLIENT_FOUND_ROWS | c.CLIENT_LONG_FLAG | c.CLIENT_CONNECT_WITH_DB | c.CLIENT_NO_SCHEMA
    | c.CLIENT_IGNORE_SPACE | c.CLIENT_PROTOCOL_41 | c.CLIENT_INTERACTIVE | c.CLIENT_IGNORE_SIGPIPE | c.CLIENT_TRANSACTIONS
    | c.CLIENT_SECURE_CONNECTION | c.CLIENT_MULTI_STATEMENTS | c.CLIENT_MULTI_RESULTS | c.CLIENT_PS_MULTI_RESULTS
    | c.CLIENT_PLUGIN_AUTH | c.CLIENT_CONNECT_ATTRS | c.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | c.CLIENT_DEPRECATE_EOF
)

ER_SERVER_SHUTDOWN = 1053
ER_HOST_IS_BLOCKED = 1129
ER_SECURE_TRANSPORT_REQUIRED = 3159
ER_ABORTING_CONNECTION = 1152

_HANDSHAKE, _AUTH_SWITCH, _SHA2_FULL, _TLS, _COMMAND, _CLOSED = range(6)


class _TlsLayer:
    """Server-side TLS over memory BIOs, so bytes read before the switch are not lost."""

    __slots__ = ("obj", "incoming", "outgoing", "ready")

    def __init__(self, ctx: ssl.SSLContext):
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.ready = False

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """(plaintext, bytes to send back); raises ssl.SSLError."""
        self.incoming.write(data)
        if not self.ready:
            try:
                self.obj.do_handshake()
                self.ready = True
            except ssl.SSLWantReadError:
                return b"", self.outgoing.read()
        chunks = []
        while True:
            try:
                chunk = self.obj.read(1 << 16)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks), self.outgoing.read()

    def send(self, data: bytes) -> bytes:
        self.obj.write(data)
        return self.outgoing.read()


def _password_key(user: str, password: str) -> tuple[str, bytes]:
    return user, hashlib.sha256(password.encode("utf-8")).digest()


class ClientConnection(asyncio.Protocol):
    """The server side of one client connection."""

    def __init__(self, server):
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.state = _HANDSHAKE
        self.buffer = PacketBuffer(server.limits.settings.pre_auth_packet_limit)
        self.capabilities = 0
        self.seq = 0
        self.id = 0
        self.host = "?"
        self.nonce = b""
        self.plugin = server.auth_plugin
        self.user = None
        self.login = None  # the HandshakeResponse41 (or ChangeUser) being authenticated
        self.tls = False
        self.session: Session | None = None
        self.executor = None
        self.queue: deque[tuple[bytes, int]] = deque()  # (command, sequence id of its response)
        self.reply_seq = 1
        self.task: asyncio.Task | None = None
        self.busy = False
        self.last_activity = self.loop.time()
        self.counted = False
        self.closing = False  # close after the command in flight (graceful shutdown)
        self.relaying = None  # backend connection whose response is being relayed (flow control)
        self._auth_timer = None
        self._tls: _TlsLayer | None = None

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        srv = self.server
        peer = transport.get_extra_info("peername")
        self.host = peer[0] if peer else "localhost"
        if not srv.accepting:
            self._refuse(ERR(ER_SERVER_SHUTDOWN, "Server shutdown in progress", "08S01"))
            return
        why = srv.limits.admit(self.host, self.loop.time())
        if why is not None:
            errno = err.ER_CON_COUNT_ERROR if why.startswith("Too many") else ER_HOST_IS_BLOCKED
            self._refuse(ERR(errno, why, "08004" if errno == err.ER_CON_COUNT_ERROR else "HY000"))
            return
        srv.limits.opened()
        self.counted = True
        srv.clients.add(self)
        self.id = srv.next_connection_id()
        self.nonce = auth.new_nonce()
        caps = SERVER_CAPABILITIES | (c.CLIENT_SSL if srv.ssl_context is not None else 0)
        hs = HandshakeV10(srv.server_version, self.id, self.nonce, caps, c.UTF8MB4_GENERAL_CI, c.SERVER_STATUS_AUTOCOMMIT, self.plugin)
        transport.write(frame(make_handshake_v10(hs), 0))
        self._auth_timer = self.loop.call_later(srv.limits.settings.auth_timeout, self._auth_timeout)

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        if self._tls is not None:
            data = self._tls_in(data)
            if not data:
                return
        buf = self.buffer
        buf.feed(data)
        try:
            while True:
                packet = buf.next_packet()
                if packet is None:
                    break
                if self.state == _COMMAND:
                    # the response follows the command's last frame (a command over 16 MiB has several)
                    self.queue.append((packet[1], (buf.last_seq + 1) & 0xFF))
                    if not self.busy:
                        self._pump()
                elif self.state == _CLOSED:
                    return
                else:
                    self.seq = packet[0]
                    self._auth_packet(packet[1])
        except PacketTooLarge as e:
            if self.state == _COMMAND:
                msg = "Got a packet bigger than 'max_allowed_packet' bytes"
            else:
                msg = f"Login packet of {e.size} bytes exceeds the limit of {e.limit} bytes"
            self.send_error(err.ER_NET_PACKET_TOO_LARGE, msg, "08S01", seq=(self.seq + 1) if self.state != _COMMAND else 1)
            self.close()
        except ProtocolError as e:
            self.send_error(err.ER_HANDSHAKE_ERROR if self.state != _COMMAND else err.ER_UNKNOWN_COM_ERROR,
                            f"Bad packet: {e}", "08S01", seq=self.seq + 1)
            self.close()

    def connection_lost(self, exc) -> None:
        was = self.state
        self.state = _CLOSED
        if self.relaying is not None:
            self.relaying.resume_reading()  # let the response drain (writes are dropped) so the backend is reusable
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        srv = self.server
        srv.client_closed()
        if self.counted:
            self.counted = False
            srv.limits.closed()
            srv.clients.discard(self)
        if self.executor is not None and not self.busy:
            srv.track(self.executor.close())
        if was != _COMMAND and was != _CLOSED and self.user is not None:
            log.debug("client %s disconnected during login", self.host)

    def pause_writing(self) -> None:
        if self.relaying is not None:
            self.relaying.pause_reading()

    def resume_writing(self) -> None:
        if self.relaying is not None:
            self.relaying.resume_reading()

    # -- output ----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and self.state != _CLOSED:
            if self._tls is not None:
                if not self._tls.ready:
                    return  # nothing can be said inside an unfinished TLS handshake
                try:
                    data = self._tls.send(data)
                except ssl.SSLError:
                    self.transport.abort()
                    return
            self.transport.write(data)

    def send_packet(self, payload: bytes, seq: int) -> None:
        self.write(frame(payload, seq & 0xFF))

    def send_error(self, errno: int, message: str, sqlstate: str = "HY000", seq: int | None = None) -> None:
        if seq is None:
            seq = self.reply_seq
        self.server.metrics.error(errno)
        self.send_packet(make_err(ERR(errno, message, sqlstate), self.capabilities or c.CLIENT_PROTOCOL_41), seq)

    def _refuse(self, e: ERR) -> None:  # before any TLS: plain bytes
        self.server.metrics.error(e.errno)
        self.transport.write(frame(make_err(e, c.CLIENT_PROTOCOL_41), 0))
        self.state = _CLOSED
        self.transport.close()

    def close(self) -> None:
        if self.state != _CLOSED:
            self.state = _CLOSED
            if self.transport is not None:
                self.transport.close()

    def _auth_timeout(self) -> None:
        self._auth_timer = None
        if self.state not in (_COMMAND, _CLOSED):
            log.info("client %s did not log in within %g s", self.host, self.server.limits.settings.auth_timeout)
            self.send_error(err.ER_HANDSHAKE_ERROR, "Bad handshake: login timed out", "08S01", seq=self.seq + 1)
            self.close()

    # -- login ------------------------------------------------------------------------

    def _auth_packet(self, payload: bytes) -> None:
        state = self.state
        if state == _HANDSHAKE:
            if is_ssl_request(payload):
                if self.server.ssl_context is None or self.tls or self._tls is not None:
                    raise ProtocolError("TLS requested but not offered")
                self.state = _TLS
                self._tls = _TlsLayer(self.server.ssl_context)
                early = self.buffer.take_raw()  # the ClientHello may already be here
                if early:
                    self.data_received(early)
                return
            resp = parse_handshake_response41(payload)
            srv = self.server
            if srv.tls_required and not self.tls:
                self._deny(ER_SECURE_TRANSPORT_REQUIRED, "Connections using insecure transport are prohibited (proxy.tls.required)", "HY000")
                return
            self.capabilities = resp.capabilities & (SERVER_CAPABILITIES | c.CLIENT_SSL)
            self.login = resp
            self.user = resp.user
            plugin = resp.auth_plugin if resp.capabilities & c.CLIENT_PLUGIN_AUTH else auth.NATIVE_PASSWORD
            if not plugin:
                plugin = auth.NATIVE_PASSWORD
            self._authenticate(plugin, resp.auth_response)
        elif state == _AUTH_SWITCH:
            self._authenticate(self.plugin, payload, switched=True)
        elif state == _SHA2_FULL:
            self._sha2_full(payload)
        elif state == _TLS:
            raise ProtocolError("data before the TLS handshake completed")

    def _tls_in(self, data: bytes) -> bytes:
        """Decrypt what arrived; during the TLS handshake, answer it. Returns the plaintext."""
        tls = self._tls
        try:
            plain, out = tls.receive(data)
        except ssl.SSLError as e:
            log.info("TLS with %s failed: %s", self.host, e)
            self._tls = None
            self.transport.abort()
            self.state = _CLOSED
            return b""
        if out:
            self.transport.write(out)
        if tls.ready and not self.tls:
            self.tls = True
            self.state = _HANDSHAKE
        return plain

    def _user_password(self, name: str) -> str | None:
        user = self.server.config.proxy.users.get(name)
        return None if user is None else user.password

    def _authenticate(self, plugin: str, response: bytes, switched: bool = False) -> None:
        if plugin not in auth.SUPPORTED_PLUGINS:
            if switched:
                raise ProtocolError(f"client answered the switch with plugin {plugin}")
            self._switch(self.server.auth_plugin)
            return
        self.plugin = plugin
        password = self._user_password(self.user)
        if plugin == auth.NATIVE_PASSWORD:
            if password is not None and auth.native_verify(password.encode("utf-8"), self.nonce, response):
                self._logged_in()
            else:
                self._access_denied(bool(response))
            return
        # caching_sha2_password
        if password is not None and not password and not response:
            self._logged_in()
            return
        cache = self.server.sha2_cache
        if password is not None and _password_key(self.user, password) in cache:
            if auth.sha2_verify(password.encode("utf-8"), self.nonce, response):
                self.seq += 1
                self.send_packet(make_auth_more_data(bytes((auth.SHA2_FAST_AUTH_SUCCESS,))), self.seq)
                self._logged_in()
            else:
                self._access_denied(bool(response))
            return
        if not response:
            self._access_denied(False)
            return
        # Not in the cache: the password itself is needed (over TLS, or RSA-encrypted).
        self.state = _SHA2_FULL
        self.seq += 1
        self.send_packet(make_auth_more_data(bytes((auth.SHA2_PERFORM_FULL_AUTH,))), self.seq)

    def _sha2_full(self, payload: bytes) -> None:
        if self.tls:
            given = payload[:-1] if payload.endswith(b"\0") else payload
        elif payload == bytes((auth.SHA2_REQUEST_PUBLIC_KEY,)):
            self.seq += 1
            self.send_packet(make_auth_more_data(self.server.rsa_keys().public_pem), self.seq)
            return
        else:
            try:
                given = self.server.rsa_keys().decrypt_password(payload, self.nonce)
            except ValueError:
                self._access_denied(True)
                return
        password = self._user_password(self.user)
        if password is not None and given == password.encode("utf-8"):
            self.server.sha2_cache.add(_password_key(self.user, password))
            self._logged_in()
        else:
            self._access_denied(True)

    def _switch(self, plugin: str) -> None:
        self.plugin = plugin
        self.nonce = auth.new_nonce()
        self.state = _AUTH_SWITCH
        self.seq += 1
        self.send_packet(make_auth_switch_request(AuthSwitchRequest(plugin, self.nonce)), self.seq)

    def _access_denied(self, used_password: bool) -> None:
        self.server.limits.auth_failed(self.host, self.loop.time())
        log.info("access denied for user %r from %s", self.user, self.host)
        self._deny(err.ER_ACCESS_DENIED_ERROR,
                   f"Access denied for user '{self.user}'@'{self.host}' (using password: {'YES' if used_password else 'NO'})", "28000")

    def _deny(self, errno: int, message: str, sqlstate: str) -> None:
        if self.session is not None:  # COM_CHANGE_USER failed: the session is over
            self.send_error(errno, message, sqlstate, seq=self.seq + 1)
            self.close()
            return
        self.send_error(errno, message, sqlstate, seq=self.seq + 1)
        self.close()

    def _logged_in(self) -> None:
        srv = self.server
        srv.limits.auth_succeeded(self.host)
        user = srv.config.proxy.users[self.user]
        login = self.login
        database = login.database
        charset = login.charset if login.charset is not None else c.UTF8MB4_GENERAL_CI
        if self.session is None:
            self.session = Session(self.id, self.user, user.schemas, self.capabilities, charset)
            self.executor = Executor(srv, self, self.session)
        else:
            self.session.user = self.user
            self.session.schemas = user.schemas
            self.session.schema = None
        if database:
            problem = self.executor.check_schema(database)
            if problem is not None:
                self.send_error(*problem, seq=self.seq + 1)
                self.close()
                return
            self.session.schema = database
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        self.state = _COMMAND
        self.buffer.limit = srv.limits.settings.max_allowed_packet
        self.seq += 1
        self.send_packet(make_ok(OK(0, 0, self.session.status_flags()), self.capabilities), self.seq)
        log.debug("client %s logged in as %s (id %d, %s)", self.host, self.user, self.id, self.plugin)

    def change_user(self, cu) -> None:
        """COM_CHANGE_USER: authenticate again with the handshake's nonce, switching if needed."""
        self.user = cu.user
        self.login = cu
        self.seq = 0
        self.state = _HANDSHAKE
        self.buffer.limit = self.server.limits.settings.pre_auth_packet_limit
        plugin = cu.auth_plugin or auth.NATIVE_PASSWORD
        if plugin in auth.SUPPORTED_PLUGINS and self._user_password(cu.user) is not None:
            password = self._user_password(cu.user).encode("utf-8")
            if auth.verify(plugin, password, self.nonce, cu.auth_response) or (not password and not cu.auth_response):
                self.plugin = plugin
                self._logged_in()
                return
        self._switch(self.server.auth_plugin)

    # -- commands ---------------------------------------------------------------------

    def _pump(self) -> None:
        """Serve queued commands: by callbacks when possible, else on a task."""
        executor = self.executor
        while self.queue and not self.busy and self.state == _COMMAND:
            if self.closing and not self.session.in_transaction:
                self._finish_closing()
                return
            payload, self.reply_seq = self.queue.popleft()
            try:
                job = fastpath.serve(executor, payload)
            except Exception:  # noqa: BLE001 - a bug must not kill the server; tell the client
                log.exception("internal error serving client %s", self.host)
                self.send_error(err.ER_UNKNOWN_ERROR, "internal proxy error (see the proxy log)")
                self.close()
                return
            if job is fastpath.DONE:
                continue
            self.busy = True
            if job is fastpath.PENDING:
                return
            self.task = self.loop.create_task(self._run_job(job))

    def command_done(self) -> None:
        """The command in flight finished (called by the fast path's backend callback)."""
        self.busy = False
        self.last_activity = self.loop.time()
        if self.server.ack_pending:
            self.server.maybe_acknowledge()
        if self.state == _CLOSED:
            self.server.track(self.executor.close())
        elif self.closing and not self.session.in_transaction:
            self._finish_closing()
        elif self.queue:
            self._pump()

    def run_on_task(self, job) -> None:
        """Go on with the command in flight on a task (the fast path found it needs one)."""
        self.task = self.loop.create_task(self._run_job(job))

    def _finish_closing(self) -> None:
        self.server.track(self.executor.close())
        self.close()

    async def _run_job(self, job) -> None:
        try:
            await self.executor.run_job(job)
        except Exception:  # noqa: BLE001 - a bug must not kill the server; tell the client
            log.exception("internal error serving client %s", self.host)
            self.send_error(err.ER_UNKNOWN_ERROR, "internal proxy error (see the proxy log)")
            self.close()
        self.command_done()
