"""The per-connection cache of backend prepared statements: LRU, closes, refusal."""
from __future__ import annotations

from mdriver.wire.framing import frame
from proxy.stmtcache import ER_MAX_PREPARED_STMT_COUNT_REACHED, BackendStatements


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
