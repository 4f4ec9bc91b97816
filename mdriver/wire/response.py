"""Follow the packets of one command's response, without decoding rows.

A relay must know where a response ends (to hand the connection back), what
the final server status is (transaction state, more results) and which packets
are the EOFs that differ between the two EOF modes. :class:`ResponseTracker`
classifies each logical packet as it passes.
"""
from __future__ import annotations

from mdriver.wire import constants as c
from mdriver.wire.codec import ProtocolError, Reader

# Packet kinds reported by ResponseTracker.feed.
OK = "ok"  # a final OK (or an OK that ends one result of several)
ERR = "err"
COLUMN_COUNT = "column_count"
COLUMN = "column"
PARAM = "param"
COLUMNS_EOF = "columns_eof"  # the EOF after column/param definitions (absent under DEPRECATE_EOF)
ROW = "row"
ROWS_END = "rows_end"  # EOF, or the 0xFE OK under DEPRECATE_EOF
PREPARE_OK = "prepare_ok"
LOCAL_INFILE = "local_infile"

_START, _PARAMS, _PARAMS_EOF, _COLUMNS, _COLUMNS_EOF, _ROWS, _DONE = range(7)
ROWS_STATE = _ROWS  # ResponseTracker.state while rows are arriving (for relays that skip feed() per row)


def ok_status(payload: bytes) -> int:
    """Server status of an OK packet (or a DEPRECATE_EOF end-of-rows OK)."""
    r = Reader(payload, 1)
    r.lenenc_int()
    r.lenenc_int()
    return r.int2()


class ResponseTracker:
    """Classifies the packets of one response; ``done`` once it is complete.

    ``capabilities`` are those negotiated with the server that sends the
    response; ``prepare`` is for COM_STMT_PREPARE responses.
    """

    __slots__ = ("deprecate_eof", "prepare", "state", "pending", "columns", "params", "status", "done",
                 "statement_id", "errors", "results")

    def __init__(self, capabilities: int, prepare: bool = False):
        self.deprecate_eof = bool(capabilities & c.CLIENT_DEPRECATE_EOF)
        self.prepare = prepare
        self.state = _START
        self.pending = 0
        self.columns = 0
        self.params = 0
        self.status = 0
        self.done = False
        self.statement_id = 0
        self.errors = 0
        self.results = 0

    def feed(self, payload: bytes) -> str:
        state = self.state
        if state == _ROWS:
            first = payload[0] if payload else -1
            if first == c.EOF_HEADER and len(payload) < 0xFFFFFF:
                self.status = ok_status(payload) if self.deprecate_eof else _eof_status(payload)
                self._end_of_result()
                return ROWS_END
            if first == c.ERR_HEADER:
                self._error()
                return ERR
            return ROW
        if state == _COLUMNS:
            self.pending -= 1
            if self.pending == 0:
                self._after_columns()
            return COLUMN
        if state == _PARAMS_EOF or state == _COLUMNS_EOF:
            if not payload or payload[0] != c.EOF_HEADER:
                raise ProtocolError("expected EOF after definitions")
            self.status = _eof_status(payload)
            if state == _PARAMS_EOF:
                self._start_columns()
            elif self.prepare:
                self._finish()
            else:
                self.state = _ROWS
            return COLUMNS_EOF
        if state == _START:
            return self._first(payload)
        if state == _PARAMS:
            self.pending -= 1
            if self.pending == 0:
                if self.deprecate_eof:
                    self._start_columns()
                else:
                    self.state = _PARAMS_EOF
            return PARAM
        raise ProtocolError("packet after the end of the response")

    def _first(self, payload: bytes) -> str:
        if not payload:
            raise ProtocolError("empty response packet")
        first = payload[0]
        if first == c.ERR_HEADER:
            self._error()
            return ERR
        if first == c.OK_HEADER:
            if self.prepare:
                r = Reader(payload, 1)
                self.statement_id = r.int4()
                self.columns = r.int2()
                self.params = r.int2()
                if self.params:
                    self.state = _PARAMS
                    self.pending = self.params
                else:
                    self._start_columns()
                return PREPARE_OK
            self.status = ok_status(payload)
            self._end_of_result()
            return OK
        if first == c.LOCAL_INFILE_HEADER:
            self._finish()
            return LOCAL_INFILE
        count = first if first < 0xFB else Reader(payload).lenenc_int()
        self.columns = count
        self.pending = count
        self.state = _COLUMNS
        return COLUMN_COUNT

    def _start_columns(self) -> None:
        if self.columns:
            self.state = _COLUMNS
            self.pending = self.columns
        else:
            self._finish()

    def _after_columns(self) -> None:
        if self.deprecate_eof:
            if self.prepare:
                self._finish()
            else:
                self.state = _ROWS
        else:
            self.state = _COLUMNS_EOF

    def _end_of_result(self) -> None:
        self.results += 1
        if self.status & c.SERVER_MORE_RESULTS_EXISTS:
            self.state = _START
        else:
            self._finish()

    def _error(self) -> None:
        self.errors += 1
        self._finish()

    def _finish(self) -> None:
        self.state = _DONE
        self.done = True


def _eof_status(payload: bytes) -> int:
    if len(payload) >= 5:
        return payload[3] | payload[4] << 8
    return 0
