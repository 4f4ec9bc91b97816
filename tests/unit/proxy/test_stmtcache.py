"""The per-connection cache of backend prepared statements: LRU, closes, refusal."""
from __future__ import annotations

from mdriver.wire.framing import frame
from proxy.stmtcache import ER_MAX_PREPARED_STMT_COUNT_REACHED, BackendStatements, StatementBudget


def close_frames(*ids: int) -> bytes:
    return b"".join(frame(b"\x19" + i.to_bytes(4, "little"), 0) for i in ids)


def test_least_recently_used_statements_are_closed_beyond_the_limit():
    st = BackendStatements(2)
    st.add("a", 1)
    st.add("b", 2)
    assert st.get("a") == 1  # a is now the most recent
    st.add("c", 3)
    assert st.get("b") is None and st.get("a") == 1 and st.get("c") == 3
    assert st.take_closes() == close_frames(2) and st.take_closes() == b""
    st.forget("a")
    st.forget("zzz")
    assert st.get("a") is None and st.take_closes() == close_frames(1)


def test_a_full_server_stops_the_preparing_and_no_limit_means_none():
    st = BackendStatements(10)
    st.prepare_failed(1064)
    assert not st.refused  # a statement the server cannot prepare says nothing about the others
    st.prepare_failed(ER_MAX_PREPARED_STMT_COUNT_REACHED)
    assert st.refused
    assert BackendStatements(0).refused


def test_the_connections_of_one_server_share_half_its_budget():
    budget = StatementBudget(StatementBudget.share_of(7))
    assert budget.limit == 3
    a, b = BackendStatements(10, budget), BackendStatements(10, budget)
    a.add("a1", 1)
    a.add("a2", 2)
    b.add("b1", 3)
    assert budget.used == 3 and not a.to_close
    b.add("b2", 4)  # over the shared limit: b gives up its own oldest
    assert budget.used == 3 and b.get("b1") is None and b.take_closes() == close_frames(3)
    a.release()  # a's connection closed
    assert budget.used == 1
    assert BackendStatements(10, StatementBudget(0)).refused  # the server could not say how many: text only
