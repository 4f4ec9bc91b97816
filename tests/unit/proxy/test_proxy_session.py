"""The proxy's own statement recognition, SET parsing, state replay and limits (no server needed)."""
from __future__ import annotations

import pytest

from mdriver import err
from mdriver.wire import constants as c
from proxy.limits import ClientLimits, LimitSettings
from proxy.session import DEFAULT_STATE, Assignment, Session, mark_applied, parse_set, replay_sql
from proxy.sqltext import first_word, quote_string, tokenize


@pytest.mark.parametrize(
    "sql, word",
    [
        ("select 1", "SELECT"),
        ("  /* hint */ SET x=1", "SET"),
        ("-- comment\nBEGIN", "BEGIN"),
        ("# mysql comment\n  show tables", "SHOW"),
        ("/*!40101 SET NAMES utf8 */", ""),
        ("(SELECT 1)", ""),
        ("", ""),
    ],
)
def test_first_word(sql, word):
    assert first_word(sql) == word


def test_tokenizer_strings_comments_and_variables():
    toks = tokenize("SET @a = 'it''s \\' ok', @@session.sql_mode=`x``y` /* c */ -- tail")
    kinds = [(t.kind, t.text) for t in toks]
    assert kinds[1] == ("var", "@a")
    assert toks[3].value() == "it's ' ok"
    assert ("var", "@@session.sql_mode") in kinds
    assert toks[-1].value() == "x`y"


def test_parse_set_forms():
    got = parse_set("SET NAMES utf8mb4 COLLATE utf8mb4_bin, autocommit=0, @@session.time_zone = '+08:00', "
                    "SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), @`my var` := 1 + 2")
    assert got == [
        Assignment("names", "", "utf8mb4", "utf8mb4_bin"),
        Assignment("system", "autocommit", "0"),
        Assignment("system", "time_zone", "'+08:00'"),
        Assignment("system", "sql_mode", "CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')"),
        Assignment("user", "my var", "1 + 2"),
    ]
    assert parse_set("SET CHARACTER SET latin1") == [Assignment("charset", "", "latin1")]
    assert parse_set("set session transaction isolation level read committed") == [
        Assignment("system", "tx_isolation", "'READ-COMMITTED'")]
    assert parse_set("SET SESSION TRANSACTION READ ONLY") == [Assignment("system", "tx_read_only", "1")]


@pytest.mark.parametrize(
    "sql, errno, text",
    [
        ("SET GLOBAL max_connections = 10", 1227, "global"),
        ("SET @@global.sql_mode = ''", 1227, "global"),
        ("SET sql_log_bin = 0", 1235, "binlog"),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", 1235, "next transaction"),
        ("SET PASSWORD = 'x'", 1227, "PASSWORD"),
        ("SET x", 1064, "syntax"),
        ("SET /*!40101 NAMES utf8 */", 1235, "executable comments"),
        ("SET a = 'unterminated", 1064, "unterminated"),
    ],
)
def test_parse_set_refusals(sql, errno, text):
    with pytest.raises(err.MySQLError) as e:
        parse_set(sql)
    assert e.value.errno == errno and text.lower() in e.value.msg.lower()


class FakeConn:
    """Just the attributes replay reads and writes (a plain record, not a stand-in for a server)."""

    def __init__(self):
        self.charset, self.collation, self.applied, self.state_key = "utf8mb4", "utf8mb4_general_ci", {}, None


def test_replay_brings_a_connection_to_the_session_state_and_back():
    s = Session(1, "app", ("app",), c.CLIENT_PROTOCOL_41, 45)
    assert s.state is DEFAULT_STATE
    conn = FakeConn()
    assert replay_sql(s.state, conn) is None
    s.set_vars({"sql_mode": "'STRICT_ALL_TABLES'", "time_zone": "'+08:00'"}, {"x": "42"})
    s.set_names("latin1", "latin1_swedish_ci")
    assert s.codec == "cp1252"
    sql = replay_sql(s.state, conn)
    assert sql == ("SET NAMES 'latin1' COLLATE 'latin1_swedish_ci', @@session.sql_mode='STRICT_ALL_TABLES', "
                   "@@session.time_zone='+08:00', @`x`=42")
    mark_applied(s.state, conn)
    assert replay_sql(s.state, conn) is None and conn.state_key is s.state
    other = Session(2, "app", ("app",), c.CLIENT_PROTOCOL_41, 45)
    back = replay_sql(other.state, conn)
    assert back == ("SET NAMES 'utf8mb4' COLLATE 'utf8mb4_general_ci', @@session.sql_mode=DEFAULT, "
                    "@@session.time_zone=DEFAULT, @`x`=NULL")


def test_session_status_flags_and_found_rows_flavor():
    s = Session(1, "app", ("app",), c.CLIENT_PROTOCOL_41 | c.CLIENT_FOUND_ROWS, 8)
    assert s.flavor == c.CLIENT_FOUND_ROWS and s.charset == "latin1"
    assert s.status_flags() == c.SERVER_STATUS_AUTOCOMMIT
    s.autocommit = False
    s.txn = object()
    assert s.status_flags() == c.SERVER_STATUS_IN_TRANS


def test_quote_string():
    assert quote_string("a'b\\c\n") == "'a\\'b\\\\c\\n'"
    assert quote_string("a'b\\c", no_backslash_escapes=True) == "'a''b\\c'"


def test_client_limits():
    lim = ClientLimits(LimitSettings(max_connections=2, max_auth_failures=3, auth_failure_window=10, auth_block_time=5))
    assert lim.admit("h", 0) is None
    lim.opened()
    lim.opened()
    assert lim.admit("h", 0) == "Too many connections"
    lim.closed()
    for t in (1, 2, 3):
        lim.auth_failed("h", t)
    assert "blocked" in lim.admit("h", 4)
    assert lim.admit("other", 4) is None
    assert lim.admit("h", 9) is None  # block expired
    lim.auth_failed("h", 10)
    lim.auth_failed("h", 30)  # outside the window: the first no longer counts
    lim.auth_failed("h", 31)
    assert lim.admit("h", 32) is None
    assert lim.idle_expired(0, 28801)
