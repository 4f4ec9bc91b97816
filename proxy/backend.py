"""One backend connection: an asyncio MySQL client built on :mod:`mdriver.wire`.

Our own client (not aiomysql) so a single-shard result can be relayed to the
client as packets, with sequence ids and EOF style fixed up, without decoding
rows. Commands can be pipelined: e.g. COM_INIT_DB + SET + the statement go out
in one write, and each response is consumed by its own handler in order.

Every failure becomes :class:`mdriver.err.BackendError` naming the datasource
by ``DataSource.describe()`` (name, host, port), never its credentials.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field

from mdriver import err
from mdriver.config.model import DataSource
from mdriver.wire import auth
from mdriver.wire import constants as c
from mdriver.wire.codec import ProtocolError
from mdriver.wire.framing import MAX_FRAME, PacketBuffer, frame
from mdriver.wire.packets import (
    ERR,
    ColumnDefinition,
    HandshakeResponse41,
    make_handshake_response41,
    parse_auth_switch_request,
    parse_column_definition,
    parse_err,
    parse_handshake_v10,
    parse_ok,
)
from mdriver.wire.response import COLUMN, OK as K_OK, PARAM, PREPARE_OK, ROW, ROWS_END, ROWS_STATE, ResponseTracker
from mdriver.wire.values import parse_text_row
from proxy.stmtcache import BackendStatements

log = logging.getLogger(__name__)

BACKEND_CAPABILITIES = (
    c.CLIENT_LONG_PASSWORD | c.CLIENT_LONG_FLAG | c.CLIENT_PROTOCOL_41 | c.CLIENT_TRANSACTIONS
    | c.CLIENT_SECURE_CONNECTION | c.CLIENT_MULTI_RESULTS | c.CLIENT_PS_MULTI_RESULTS | c.CLIENT_PLUGIN_AUTH
    | c.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | c.CLIENT_CONNECT_ATTRS
)
CONNECT_ATTRS = {"_client_name": "mdriver-proxy", "program_name": "mdriver-proxy"}
# Server errors after which MariaDB/MySQL close the connection (packet too large, aborted, network errors).
CONNECTION_FATAL_ERRNOS = frozenset((1152, 1153, 1154, 1155, 1156, 1157, 1158, 1159, 1160, 1161, 1184))


@dataclass
class QueryResult:
    """A fully read response: an OK, an ERR, or a result set with raw text cells."""

    columns: list[ColumnDefinition] = field(default_factory=list)
    rows: list[list[bytes | None]] = field(default_factory=list)
    affected_rows: int = 0
    insert_id: int = 0
    status: int = 0
    warnings: int = 0
    info: bytes = b""
    error: ERR | None = None
    statement_id: int = 0
    params: list[ColumnDefinition] = field(default_factory=list)

    def raise_error(self) -> "QueryResult":
        if self.error is not None:
            raise err.from_backend(self.error.errno, self.error.message, self.error.sqlstate)
        return self


class Handler:
    """Consumes the packets of one response."""

    error: ERR | None = None
    status: int = 0
    consume = None  # optional fast reader of frames in place (see results.Relay.consume)

    def on_packet(self, payload: bytes) -> bool:  # True once the response is complete
        raise NotImplementedError

    def flush(self) -> None:
        pass


class Collect(Handler):
    """Reads a whole response into a :class:`QueryResult` (internal queries and scatter)."""

    __slots__ = ("tracker", "result", "decode_rows")

    def __init__(self, capabilities: int, prepare: bool = False, decode_rows: bool = True):
        self.tracker = ResponseTracker(capabilities, prepare)
        self.result = QueryResult()
        self.decode_rows = decode_rows

    def on_packet(self, payload: bytes) -> bool:
        t = self.tracker
        kind = t.feed(payload)
        res = self.result
        if kind is ROW:
            res.rows.append(parse_text_row(payload, t.columns) if self.decode_rows else payload)
        elif kind is COLUMN:
            res.columns.append(parse_column_definition(payload))
        elif kind is PARAM:
            res.params.append(parse_column_definition(payload))
        elif kind is K_OK:
            ok = parse_ok(payload)
            res.affected_rows += ok.affected_rows
            res.insert_id = ok.last_insert_id or res.insert_id
            res.warnings += ok.warnings
            res.info = ok.info
        elif kind is ROWS_END:
            res.warnings += payload[1] | payload[2] << 8 if len(payload) >= 5 else 0
        elif kind is PREPARE_OK:
            res.statement_id = t.statement_id
        elif kind == "err":
            self.error = res.error = parse_err(payload)
        elif kind == "local_infile":
            res.error = self.error = ERR(err.ER_NOT_SUPPORTED_YET, "LOAD DATA LOCAL INFILE is not supported through the proxy", "42000")
        res.status = self.status = t.status
        return t.done


    def consume(self, pb) -> bool:
        """Read rows in place from the PacketBuffer (the bulk of a scatter result); True once complete."""
        if not self.decode_rows:
            return False
        buf, pos = pb.view()
        end = len(buf)
        t = self.tracker
        rows = self.result.rows
        done = False
        while end - pos >= 4:
            n = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            if n >= MAX_FRAME:
                break
            stop = pos + 4 + n
            if stop > end:
                break
            payload = bytes(buf[pos + 4:stop])
            pos = stop
            if t.state == ROWS_STATE and n and payload[0] < 0xFE:
                rows.append(parse_text_row(payload, t.columns))
                continue
            if self.on_packet(payload):
                done = True
                break
        pb.advance_to(pos)
        return done


class FieldList(Handler):
    """The response to COM_FIELD_LIST: column definitions up to an EOF (no column count)."""

    def __init__(self):
        self.result = QueryResult()

    def on_packet(self, payload: bytes) -> bool:
        if payload[:1] == b"\xff":
            self.error = self.result.error = parse_err(payload)
            return True
        if payload[:1] == b"\xfe" and len(payload) < 9:
            return True
        self.result.columns.append(parse_column_definition(payload))
        return False


class Swallow(Collect):
    """A pipelined preliminary response (COM_INIT_DB, SET ...): only its error matters."""

    def __init__(self, capabilities: int):
        super().__init__(capabilities, decode_rows=False)


class BackendConnection(asyncio.Protocol):
    """A client connection to one datasource; not shared by two requests at once."""

    def __init__(self, ds: DataSource, loop: asyncio.AbstractEventLoop, flavor: int = 0, timeout: float = 10.0,
                 statements: int = 0):
        self.ds = ds
        self.loop = loop
        self.flavor = flavor  # extra capability flags (CLIENT_FOUND_ROWS) fixed for the connection's life
        self.timeout = timeout  # no progress for this long fails the request
        self.capabilities = BACKEND_CAPABILITIES | flavor
        self.transport: asyncio.Transport | None = None
        self.buffer = PacketBuffer()
        self.handlers: deque[Handler] = deque()
        self.future: asyncio.Future | None = None
        self.closed = False
        self.connection_id = 0
        self.server_version = ""
        self.database: str | None = None  # current physical database
        self.applied: dict[str, str] = {}  # session variables set on this connection (lowercase name -> SQL value)
        self.charset = "utf8mb4"
        self.collation = "utf8mb4_general_ci"
        self.state_key: object = None  # the session state last replayed here (identity-compared)
        self.in_transaction = False
        self.checked_out = False  # handed out by the pool and not given back yet
        self.statements = BackendStatements(statements)  # prepared here for clients' prepared statements
        self.created = loop.time()
        self.last_used = self.created
        self.pool = None  # set by the pool that owns it
        self.watchdog: set | None = None  # the pool's set of connections with a request in flight
        self._last_progress = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False

    def __repr__(self) -> str:
        return f"<backend {self.ds.describe()} id={self.connection_id}>"

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._last_progress = self.loop.time()
        buf = self.buffer
        buf.feed(data)
        handlers = self.handlers
        try:
            while handlers:
                h = handlers[0]
                if h.consume is not None:
                    # relays read frames in place; they stop before anything unusual
                    if h.consume(buf):
                        handlers.popleft()
                        h.flush()
                        if not handlers:
                            self._finish(h)
                            break
                        continue
                packet = buf.next_packet()
                if packet is None:
                    handlers[0].flush()
                    return
                h = handlers[0]
                if h.on_packet(packet[1]):
                    handlers.popleft()
                    h.flush()
                    if not handlers:
                        self._finish(h)
                        break
            if buf.buffered():
                self._fail(err.error(err.BackendError, err.CR_SERVER_LOST, f"{self.ds.describe()} sent data nobody asked for"))
        except _HandshakeFailed as e:
            self._fail(e.error)
        except (ProtocolError, ValueError) as e:
            self._fail(err.error(err.BackendError, err.CR_SERVER_LOST, f"{self.ds.describe()} sent a malformed packet: {e}"))
        except Exception:  # noqa: BLE001 - a bug must fail this request, not the event loop
            log.exception("internal error reading from %s", self.ds.describe())
            self._fail(err.error(err.BackendError, err.CR_SERVER_LOST, f"internal proxy error reading from {self.ds.describe()}"))

    def connection_lost(self, exc) -> None:
        was_closed = self.closed
        self.closed = True
        if self.future is not None and not self.future.done():
            why = "closed the connection" if exc is None else f"connection lost: {exc}"
            self._fail(err.error(err.BackendError, err.CR_SERVER_LOST, f"{self.ds.describe()} {why}"))
        if self.pool is not None and not was_closed:
            self.pool.forget(self)

    # -- requests ------------------------------------------------------------------

    def busy(self) -> bool:
        return self.future is not None

    def send(self, wire: bytes, handlers: list[Handler], callback=None) -> asyncio.Future | None:
        """Write framed commands and expect one response per handler.

        Returns a future resolving with the last handler, or, with ``callback``,
        calls ``callback(handler, None)`` or ``callback(None, error)`` instead
        (the task-free fast path).
        """
        if self.closed or self.transport is None:
            raise err.error(err.BackendError, err.CR_SERVER_GONE_ERROR, f"{self.ds.describe()}: connection is closed")
        if self.future is not None:
            raise RuntimeError("backend connection is already busy")
        fut = self.loop.create_future() if callback is None else _Callback(callback)
        self.future = fut
        self.handlers.extend(handlers)
        self._last_progress = self.loop.time()
        if self.watchdog is not None:
            self.watchdog.add(self)  # swept periodically: cheaper than a timer per request
        elif self.timeout:
            self._timer = self.loop.call_at(self._last_progress + self.timeout, self._check_timeout)
        self.transport.write(wire)
        return fut

    def command(self, payload: bytes, handler: Handler | None = None) -> asyncio.Future:
        return self.send(frame(payload, 0), [handler or Collect(self.capabilities)])

    async def query(self, sql: str | bytes) -> QueryResult:
        """Run one statement and read its whole response (raises on ERR)."""
        data = sql.encode("utf-8") if isinstance(sql, str) else sql
        h = await self.command(b"\x03" + data)
        return h.result.raise_error()

    def _finish(self, handler: Handler) -> None:
        fut = self.future
        self.future = None
        if self._paused:  # the response is complete: flow control (see the client's pause_writing) is over
            self.resume_reading()
        if handler.error is not None and handler.error.errno in CONNECTION_FATAL_ERRNOS:
            # The server closes the connection after these: never hand it out again.
            self.close()
        self.last_used = self._last_progress
        if self.watchdog is not None:
            self.watchdog.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if fut is not None and not fut.done():
            fut.set_result(handler)

    def overdue(self, now: float) -> bool:
        return self.future is not None and now - self._last_progress > self.timeout

    def _check_timeout(self) -> None:
        self._timer = None
        if self.future is None:
            return
        due = self._last_progress + self.timeout
        if self.loop.time() < due - 0.001:
            self._timer = self.loop.call_at(due, self._check_timeout)
            return
        self._fail(err.error(err.BackendError, err.ER_QUERY_TIMEOUT if self.connection_id else err.CR_CONNECTION_ERROR,
                             f"{self.ds.describe()} did not answer within {self.timeout:g} s"))

    def _fail(self, e: Exception) -> None:
        """The connection is unusable: fail the pending request and close."""
        fut = self.future
        self.future = None
        self.handlers.clear()
        if self.watchdog is not None:
            self.watchdog.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.close(abort=True)
        if fut is not None and not fut.done():
            fut.set_exception(e)

    def close(self, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if self.pool is not None:
            self.pool.forget(self)
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                try:
                    self.transport.write(b"\x01\x00\x00\x00\x01")  # COM_QUIT
                except Exception:  # noqa: BLE001 - closing anyway
                    pass
                self.transport.close()

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    # -- connecting --------------------------------------------------------------

    async def open(self, charset: int = c.UTF8MB4_GENERAL_CI) -> "BackendConnection":
        """Connect and authenticate; the caller bounds the time (see the pool)."""
        # The greeting may arrive before create_connection returns: expect it first.
        self.handlers.append(_Handshake(self, charset))
        fut = self.future = self.loop.create_future()
        self._last_progress = self.loop.time()
        if self.timeout:
            self._timer = self.loop.call_at(self._last_progress + self.timeout, self._check_timeout)
        try:
            await self.loop.create_connection(lambda: self, self.ds.host, self.ds.port)
        except OSError as e:
            self.closed = True
            self.handlers.clear()
            self.future = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            raise err.error(err.BackendError, err.CR_CONNECTION_ERROR, f"cannot connect to {self.ds.describe()}: {e.strerror or e}") from None
        await fut
        return self


class _Handshake(Handler):
    """Client side of the connection phase: native and caching_sha2 (fast, or full via RSA)."""

    def __init__(self, conn: BackendConnection, charset: int):
        self.conn = conn
        self.charset = charset
        self.nonce = b""
        self.plugin = ""
        self.seq = 0
        self.awaiting_key = False

    def _send(self, payload: bytes) -> None:
        self.seq += 1
        self.conn.transport.write(frame(payload, self.seq))

    def _password(self) -> bytes:
        return self.conn.ds.password.encode("utf-8")

    def _refused(self, e: ERR) -> Exception:
        ds = self.conn.ds.describe()
        if e.errno in (1045, 1044, 1698, 1251):
            # The server's text names the user; keep credentials out of messages.
            return err.error(err.BackendError, err.CR_CONNECTION_ERROR, f"{ds} refused the proxy's login (error {e.errno}); check datasources.{self.conn.ds.name}.user/password")
        return err.error(err.BackendError, err.CR_CONNECTION_ERROR, f"{ds} refused the connection: ({e.errno}) {e.message}")

    def on_packet(self, payload: bytes) -> bool:
        conn = self.conn
        self.seq = conn.buffer.last_seq
        if payload[:1] == b"\xff":
            raise _HandshakeFailed(self._refused(parse_err(payload)))
        if not self.nonce:
            hs = parse_handshake_v10(payload)
            if not hs.capabilities & c.CLIENT_PROTOCOL_41:
                raise _HandshakeFailed(err.error(err.BackendError, err.CR_CONNECTION_ERROR, f"{conn.ds.describe()} does not speak protocol 4.1"))
            conn.connection_id = hs.connection_id
            conn.server_version = hs.server_version
            conn.capabilities &= hs.capabilities | c.CLIENT_LONG_PASSWORD
            self.nonce = hs.auth_data[:20]
            self.plugin = hs.auth_plugin if hs.auth_plugin in auth.SUPPORTED_PLUGINS else auth.NATIVE_PASSWORD
            resp = HandshakeResponse41(conn.capabilities, 1 << 30, self.charset, conn.ds.user,
                                       auth.scramble(self.plugin, self._password(), self.nonce), None, self.plugin, CONNECT_ATTRS)
            self._send(make_handshake_response41(resp))
            return False
        first = payload[0]
        if first == c.OK_HEADER:
            return True
        if first == c.AUTH_SWITCH_HEADER:
            sw = parse_auth_switch_request(payload)
            if sw.plugin not in auth.SUPPORTED_PLUGINS:
                raise _HandshakeFailed(err.error(err.BackendError, err.CR_CONNECTION_ERROR,
                                                 f"{conn.ds.describe()} asks for authentication plugin {sw.plugin}, which the proxy does not support"))
            self.plugin, self.nonce = sw.plugin, sw.data[:20]
            self._send(auth.scramble(self.plugin, self._password(), self.nonce))
            return False
        if first == c.AUTH_MORE_DATA_HEADER and self.plugin == auth.CACHING_SHA2_PASSWORD:
            data = payload[1:]
            if self.awaiting_key:
                self._send(auth.rsa_encrypt_password(self._password(), self.nonce, data))
                self.awaiting_key = False
            elif data[:1] == bytes((auth.SHA2_PERFORM_FULL_AUTH,)):
                self.awaiting_key = True
                self._send(bytes((auth.SHA2_REQUEST_PUBLIC_KEY,)))
            return False
        raise _HandshakeFailed(err.error(err.BackendError, err.CR_CONNECTION_ERROR, f"{conn.ds.describe()}: unexpected packet 0x{first:02x} during login"))


class _Callback:
    """Stands in for a future when a request completes by callback."""

    __slots__ = ("fn", "_done")

    def __init__(self, fn):
        self.fn = fn
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, handler) -> None:
        self._done = True
        self.fn(handler, None)

    def set_exception(self, e: Exception) -> None:
        self._done = True
        self.fn(None, e)


class _HandshakeFailed(Exception):
    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error
