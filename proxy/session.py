"""Client session state, and replaying it on whichever backend connection serves the session.

Backend connections are shared, so everything a client sets on "its"
connection is tracked here and re-applied (one SET statement, pipelined with
the next command) when a connection last used with another state serves it.
Values are captured from the server after the client's SET ran (``SELECT
@@session.x``), so replay is exact even for expressions such as
``CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')`` and user variables.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mdriver import err
from mdriver.wire import constants as c
from proxy.sqltext import EXEC_COMMENT, IDENT, PUNCT, VARIABLE, WORD, SqlSyntaxError, Token, quote_ident, quote_string, split_top_level, tokenize

DEFAULT_CHARSET = "utf8mb4"
DEFAULT_COLLATION = "utf8mb4_general_ci"


@dataclass(frozen=True)
class Assignment:
    """One item of a SET statement."""

    kind: str  # "system" | "user" | "names"
    name: str  # lowercase variable name ("" for names)
    value: str  # SQL text of the value expression (charset for names)
    collation: str | None = None


class StateKey:
    """Identity of one session state; connections remember the key they were synced to."""

    __slots__ = ("charset", "collation", "vars", "user_vars")

    def __init__(self, charset: str, collation: str, vars_: dict[str, str], user_vars: dict[str, str]):
        self.charset = charset
        self.collation = collation
        self.vars = vars_
        self.user_vars = user_vars


DEFAULT_STATE = StateKey(DEFAULT_CHARSET, DEFAULT_COLLATION, {}, {})

# Variables whose change the proxy must refuse: they would change how the
# proxy itself or the routing works, not only the session.
REFUSED_VARIABLES = {
    "sql_log_bin": "it would hide writes from the binlog that the migrator reads",
    "pseudo_thread_id": "backend connections are shared",
    "gtid_seq_no": "backend connections are shared",
    "session_track_system_variables": "the proxy does not relay session tracking",
    "session_track_schema": "the proxy does not relay session tracking",
    "session_track_state_change": "the proxy does not relay session tracking",
    "session_track_transaction_info": "the proxy does not relay session tracking",
}


def parse_set(sql: str) -> list[Assignment]:
    """The assignments of a SET statement; raises a PEP 249 error for forms the proxy refuses."""
    try:
        tokens = tokenize(sql)
    except SqlSyntaxError as e:
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, f"You have an error in your SQL syntax: {e}") from None
    if any(t.kind == EXEC_COMMENT for t in tokens):
        raise _unsupported("executable comments /*! ... */ in SET")
    if not tokens or tokens[0].upper != "SET":
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, "not a SET statement")
    body = tokens[1:]
    if body and body[-1].kind == PUNCT and body[-1].text == ";":
        body = body[:-1]
    if not body:
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, "You have an error in your SQL syntax near 'SET'")
    head = body[0].upper
    if head in ("TRANSACTION", "PASSWORD", "ROLE", "DEFAULT", "STATEMENT") or (head in ("GLOBAL", "SESSION", "LOCAL") and len(body) > 1 and body[1].upper == "TRANSACTION"):
        return _special(sql, body)
    out: list[Assignment] = []
    scope = "session"
    for part in split_top_level(body):
        if not part:
            raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, "You have an error in your SQL syntax near ','")
        first = part[0].upper
        if first in ("GLOBAL", "PERSIST", "PERSIST_ONLY"):
            raise _global()
        if first in ("SESSION", "LOCAL"):
            scope = "session"
            part = part[1:]
            if not part:
                raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, "You have an error in your SQL syntax near 'SESSION'")
            first = part[0].upper
        if first == "NAMES":
            out.append(_names(part[1:]))
            continue
        if first in ("CHARSET", "CHARACTER"):
            rest = part[2:] if first == "CHARACTER" and len(part) > 1 and part[1].upper == "SET" else part[1:]
            out.append(_charset(rest))
            continue
        eq = next((i for i, t in enumerate(part) if t.kind == PUNCT and t.text in ("=", ":=")), None)
        if eq is None or eq == 0 or eq == len(part) - 1:
            raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, f"You have an error in your SQL syntax near '{sql[part[0].start:][:40]}'")
        target = part[:eq]
        value = sql[part[eq + 1].start:part[-1].end]
        if len(target) == 1 and target[0].kind == VARIABLE and not target[0].text.startswith("@@"):
            name = target[0].text[1:]
            if name[:1] in "'\"`":
                name = tokenize(name)[0].value()
            out.append(Assignment("user", name, value))
            continue
        name = _system_name(target)
        if name in REFUSED_VARIABLES:
            raise _unsupported(f"SET {name} ({REFUSED_VARIABLES[name]})")
        out.append(Assignment("system", name, value))
    return out


def _system_name(target: list[Token]) -> str:
    if len(target) == 1 and target[0].kind == VARIABLE:
        text = target[0].text[2:].lower()
        if text.startswith("global."):
            raise _global()
        for prefix in ("session.", "local."):
            if text.startswith(prefix):
                text = text[len(prefix):]
        return text
    if len(target) == 1 and target[0].kind in (WORD, IDENT):
        return target[0].value().lower()
    if len(target) == 3 and target[1].text == "." and target[0].kind == WORD:
        # structured variables (default.key_buffer_size) are global
        raise _global()
    raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, f"You have an error in your SQL syntax near '{target[0].text}'")


def _names(rest: list[Token]) -> Assignment:
    if not rest:
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, "You have an error in your SQL syntax near 'NAMES'")
    if rest[0].upper == "DEFAULT":
        return Assignment("names", "", DEFAULT_CHARSET, DEFAULT_COLLATION)
    charset = rest[0].value().lower()
    collation = None
    if len(rest) >= 3 and rest[1].upper == "COLLATE":
        collation = rest[2].value().lower()
    elif len(rest) != 1:
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, f"You have an error in your SQL syntax near '{rest[1].text}'")
    return Assignment("names", "", charset, collation)


def _charset(rest: list[Token]) -> Assignment:
    if len(rest) != 1:
        raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, "You have an error in your SQL syntax near 'CHARACTER SET'")
    charset = DEFAULT_CHARSET if rest[0].upper == "DEFAULT" else rest[0].value().lower()
    # SET CHARACTER SET x: client and results in x, connection in the server's default
    return Assignment("charset", "", charset)


def _special(sql: str, body: list[Token]) -> list[Assignment]:
    words = [t.upper for t in body if t.kind == WORD]
    if words[:1] == ["GLOBAL"]:
        raise _global()
    if words[:2] in (["SESSION", "TRANSACTION"], ["LOCAL", "TRANSACTION"]):
        rest = words[2:]
        out = []
        text = " ".join(rest)
        if "ISOLATION" in rest:
            level = text.split("LEVEL", 1)[1].strip().split(",")[0].strip() if "LEVEL" in text else ""
            levels = {"READ UNCOMMITTED": "READ-UNCOMMITTED", "READ COMMITTED": "READ-COMMITTED",
                      "REPEATABLE READ": "REPEATABLE-READ", "SERIALIZABLE": "SERIALIZABLE"}
            if level not in levels:
                raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, f"You have an error in your SQL syntax near '{level}'")
            out.append(Assignment("system", "tx_isolation", quote_string(levels[level])))
        if "ONLY" in rest or "WRITE" in rest:
            out.append(Assignment("system", "tx_read_only", "1" if "ONLY" in rest else "0"))
        if not out:
            raise err.error(err.ProgrammingError, err.ER_PARSE_ERROR, f"You have an error in your SQL syntax near '{text[:40]}'")
        return out
    if words[:1] == ["TRANSACTION"]:
        raise _unsupported("SET TRANSACTION for the next transaction only (use SET SESSION TRANSACTION, or START TRANSACTION READ ONLY)")
    if words[:1] == ["STATEMENT"]:
        raise _unsupported("SET STATEMENT ... FOR")
    raise err.error(err.ProgrammingError, 1227, f"Access denied; SET {words[0]} cannot be run through the proxy")


def _global() -> err.MySQLError:
    return err.error(err.ProgrammingError, 1227, "Access denied; global variables of the backends cannot be changed through the proxy")


def _unsupported(what: str) -> err.MySQLError:
    return err.error(err.NotSupportedError, err.ER_NOT_SUPPORTED_YET, f"{what} is not supported through the proxy")


@dataclass
class PreparedStatement:
    """A client's prepared statement: planned once, bound per execute."""

    id: int
    sql: str
    num_params: int
    columns: list = field(default_factory=list)  # ColumnDefinitions announced at prepare time
    param_types: tuple | None = None
    long_data: dict[int, bytearray] = field(default_factory=dict)
    kind: str = ""  # first keyword
    local: object = None  # set when the proxy itself answers this statement
    guarded: tuple | None = None  # the schemas the statement guard let it use (proxy.fastpath) ...
    guard: object = None  # ... under that guard (one per config version)
    raw_types: bytes | None = None  # the parameter types as the client last bound them
    forward: bool | None = None  # runs as a backend prepared statement when single-shard (None: not tried yet)
    point: object = None  # its router PointRoute, if it is a point statement ...
    routed_by: object = None  # ... for this Routing (config version) ...
    routed_in: str | None = None  # ... and this current schema


class Session:
    """Everything the proxy knows about one client session."""

    def __init__(self, session_id: int, user: str, schemas: tuple[str, ...], capabilities: int, collation_id: int):
        self.id = session_id
        self.user = user
        self.schemas = schemas
        self.schema: str | None = None
        self.capabilities = capabilities
        self.flavor = capabilities & c.CLIENT_FOUND_ROWS
        charset, collation = c.COLLATIONS.get(collation_id, (DEFAULT_CHARSET, DEFAULT_COLLATION))
        self.charset = charset
        self.collation = collation
        self.codec = c.python_codec(charset)
        self.vars: dict[str, str] = {}
        self.user_vars: dict[str, str] = {}
        self.state: StateKey = DEFAULT_STATE
        self._refresh_state()
        self.autocommit = True
        self.no_backslash_escapes = False
        self.multi_statements = bool(capabilities & c.CLIENT_MULTI_STATEMENTS)
        self.txn = None  # mdriver.txn.Transaction while a transaction is open
        self.txn_routing = None  # the Routing (config version) that transaction runs on
        self.txn_read_only = False
        self.pinned: dict[str, object] = {}  # datasource -> BackendConnection held by this session
        self.sticky: dict[str, str] = {}  # datasource -> why the pinned connection must stay (lock, temporary table)
        self.statements: dict[int, PreparedStatement] = {}
        self.next_statement_id = 1
        self.last_insert_id = 0
        self.affected_rows = 0
        self.warnings = 0
        self.warnings_conn = None  # the connection whose warnings SHOW WARNINGS must read
        self.found_rows = 0

    # -- state ---------------------------------------------------------------

    def _refresh_state(self) -> None:
        if not self.vars and not self.user_vars and self.charset == DEFAULT_CHARSET and self.collation == DEFAULT_COLLATION:
            self.state = DEFAULT_STATE
        else:
            self.state = StateKey(self.charset, self.collation, dict(self.vars), dict(self.user_vars))

    def set_names(self, charset: str, collation: str) -> None:
        self.charset = charset
        self.collation = collation
        self.codec = c.python_codec(charset)
        self._refresh_state()

    def set_vars(self, system: dict[str, str], user: dict[str, str]) -> None:
        """Record captured values (SQL literals); a value equal to the default is dropped."""
        for name, value in system.items():
            if name == "autocommit":
                self.autocommit = value in ("1", "ON")
            self.vars[name] = value
        self.user_vars.update(user)
        self._refresh_state()

    def reset(self) -> None:
        """COM_RESET_CONNECTION / COM_CHANGE_USER: back to a fresh session (same user unless changed)."""
        self.vars.clear()
        self.user_vars.clear()
        self.charset, self.collation = DEFAULT_CHARSET, DEFAULT_COLLATION
        self.codec = "utf-8"
        self.autocommit = True
        self.no_backslash_escapes = False
        self.statements.clear()
        self.last_insert_id = 0
        self.warnings = 0
        self.warnings_conn = None
        self._refresh_state()

    @property
    def in_transaction(self) -> bool:
        return self.txn is not None

    def status_flags(self) -> int:
        flags = 0
        if self.autocommit:
            flags |= c.SERVER_STATUS_AUTOCOMMIT
        if self.txn is not None:
            flags |= c.SERVER_STATUS_IN_TRANS
            if self.txn_read_only:
                flags |= c.SERVER_STATUS_IN_TRANS_READONLY
        if self.no_backslash_escapes:
            flags |= c.SERVER_STATUS_NO_BACKSLASH_ESCAPES
        return flags


def replay_sql(state: StateKey, conn) -> str | None:
    """One SET statement that brings ``conn`` from its applied state to ``state`` (None if nothing differs)."""
    parts = []
    if conn.charset != state.charset or conn.collation != state.collation:
        parts.append(f"NAMES {quote_string(state.charset)} COLLATE {quote_string(state.collation)}")
    applied = conn.applied
    for name, value in state.vars.items():
        if applied.get(name) != value:
            parts.append(f"@@session.{name}={value}")
    for name in applied:
        if name not in state.vars and not name.startswith("@"):
            parts.append(f"@@session.{name}=DEFAULT")
    for name, value in state.user_vars.items():
        if applied.get("@" + name) != value:
            parts.append(f"@{quote_ident(name)}={value}")
    for name in applied:
        if name.startswith("@") and name[1:] not in state.user_vars:
            parts.append(f"@{quote_ident(name[1:])}=NULL")
    if not parts:
        return None
    return "SET " + ", ".join(parts)


def mark_applied(state: StateKey, conn) -> None:
    conn.charset = state.charset
    conn.collation = state.collation
    applied = dict(state.vars)
    for name, value in state.user_vars.items():
        applied["@" + name] = value
    conn.applied = applied
    conn.state_key = state

