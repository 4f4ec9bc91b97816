"""Protocol fuzzing of the proxy, before and after authentication.

Random and mutated packets, truncated and oversized ones, sequence-id errors,
garbage in prepared-statement parameters, and payloads around the 16 MiB frame
boundary. Each connection must get an error, an answer or be closed (never be
left hanging once the client has gone), the proxy must not crash, must keep
serving a well-behaved client all along, must end with no connection or backend
connection stuck, and must not get its own host blocked by the backends
(which run with ``max_connect_errors=3``).
"""
from __future__ import annotations

import random
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pymysql
import pytest

import mdriver

from mdriver.wire.framing import frame
from reliability_helpers import DB_ERRORS, create_small_layout, message_of, small_layout_doc, wait_until, write_doc
from wire_fuzz import FuzzConn, Closed, play, post_auth_cases, pre_auth_cases, prepared_cases, query_of_payload_size, size_cases

PROXY_MAX_PACKET = 40 * 1024 * 1024
BACKEND_MAX_PACKET = "64M"  # every size case fits; over the backend's limit is the next test's subject
POOL_CAP = 16


@pytest.fixture
def fuzz_proxy(make_mariadb, tmp_path, start_proxy):
    servers = {n: make_mariadb(f"fz{i}", max_connect_errors=3, max_allowed_packet=BACKEND_MAX_PACKET)
               for i, n in enumerate(("ds0", "ds1"))}
    doc = small_layout_doc(servers, connect_timeout=2, read_timeout=10, max_connections=POOL_CAP)
    doc["proxy"]["max_allowed_packet"] = PROXY_MAX_PACKET
    path = write_doc(doc, tmp_path / "fuzz.yaml")
    create_small_layout(path, servers)
    return servers, start_proxy(path)


def aborted_connects(servers) -> int:
    total = 0
    for inst in servers.values():
        conn = inst.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW GLOBAL STATUS LIKE 'Aborted_connects'")
                total += int(cur.fetchone()[1])
        finally:
            conn.close()
    return total


def pool_in_use(status: dict) -> dict[str, int]:
    out = {}
    for key, value in status.items():
        if key.startswith("pool."):
            m = re.search(r"in_use=(\d+)", value)
            out[key[5:]] = int(m.group(1)) if m else -1
    return out


def read_length_answer(conn: FuzzConn, timeout: float) -> tuple[str, object]:
    """('value', n) for a one-row one-column result, ('error', message) or ('closed', '')."""
    try:
        first = conn.read(timeout)
        if first is None:
            return "silent", ""
        if first[1][:1] == b"\xff":
            return "error", first[1][3:200].decode("utf-8", "replace")
        conn.read(timeout)  # column definition
        conn.read(timeout)  # EOF
        row = conn.read(timeout)[1]
        conn.read(timeout)  # EOF
        n = row[0]
        return "value", int(row[1:1 + n])
    except Closed:
        return "closed", ""


def fuzz(proxy, servers, figures, rounds: int, seed: int) -> None:
    rnd = random.Random(seed)
    aborted_before = aborted_connects(servers)
    checker = proxy.connect()
    checks = {"ok": 0, "failed": [], "slowest": 0.0}

    def check_healthy(stage: str) -> None:
        t0 = time.monotonic()
        try:
            with checker.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM user_relation WHERE uid = %s", (rnd.randrange(1000),))
                cur.fetchall()
            fresh = proxy.connect()
            fresh.close()
            checks["ok"] += 1
        except DB_ERRORS as e:
            checks["failed"].append(f"after {stage}: {message_of(e)}")
        checks["slowest"] = max(checks["slowest"], time.monotonic() - t0)

    cases = [(case, False) for case in pre_auth_cases()] + [(case, True) for case in post_auth_cases() + prepared_cases()]
    jobs = []
    for i in range(rounds):
        for case, login in cases:
            jobs.append((case, login, random.Random(rnd.getrandbits(64)), f"127.0.1.{(len(jobs) % 250) + 1}"))
    rnd.shuffle(jobs)
    results = []
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        for start in range(0, len(jobs), 64):
            batch = jobs[start:start + 64]
            results += list(pool.map(lambda j: play(proxy.port, j[0], j[2], j[3] if not j[1] else "127.0.0.1", j[1]), batch))
            check_healthy(f"fuzz cases {start}..{start + len(batch)}")
            assert proxy.alive(), f"the proxy died:\n{proxy.output()[-3000:]}"
    fuzz_seconds = time.monotonic() - started

    # Around the 16 MiB frame boundary, and over the backend's and the proxy's limits.
    size_results = []
    for name, size, must_answer in size_cases():
        conn = FuzzConn(proxy.port)
        conn.login()
        conn.sock.sendall(frame(query_of_payload_size(size), 0))
        kind, value = read_length_answer(conn, 120)
        size_results.append((name, size, kind, value))
        conn.close()
        check_healthy(f"{name} ({kind} {str(value)[:80]})")
    conn = FuzzConn(proxy.port)
    conn.login()
    over = PROXY_MAX_PACKET + 1024
    try:
        conn.sock.sendall(frame(query_of_payload_size(over), 0))
    except OSError:
        pass
    kind, value = read_length_answer(conn, 60)
    size_results.append(("over the proxy's max_allowed_packet", over, kind, value))
    conn.close()
    check_healthy(f"over the proxy's max_allowed_packet ({kind} {str(value)[:80]})")

    # Afterwards: nothing stuck, the backends still take new connections from the proxy.
    settled = wait_until(lambda: int(proxy.status()["client_connections"]) <= 2 and
                         not any(pool_in_use(proxy.status()).values()), 15, 0.2)
    status = proxy.status()
    many = [proxy.connect(autocommit=False) for _ in range(POOL_CAP)]
    new_backend_ok = 0
    try:
        for i, c in enumerate(many):
            with c.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM user_relation WHERE uid = %s FOR UPDATE", (i * 16 + 8,))
                cur.fetchall()
            new_backend_ok += 1
    finally:
        for c in many:
            c.rollback()
            c.close()
    check_healthy("the new-connections check")
    checker.close()
    aborted = aborted_connects(servers) - aborted_before

    outcomes = Counter(r.outcome for r in results)
    by_category = Counter(r.category for r in results)
    stuck = [r for r in results if r.outcome == "stuck"]
    refused = [r for r in results if r.outcome == "connect-refused"]
    figures.add("protocol", "fuzz cases run", len(results) + len(size_results))
    for category, n in sorted(by_category.items()):
        figures.add("protocol", f"cases: {category}", n)
    figures.add("protocol", "cases around and over the 16 MiB boundary and the packet limits", len(size_results))
    figures.add("protocol", "outcomes", ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    figures.add("protocol", "connections left hanging after the client's EOF", len(stuck))
    figures.add("protocol", "proxy crashes", 0 if proxy.alive() else 1)
    figures.add("protocol", "well-behaved client: checks passed while fuzzing", checks["ok"])
    figures.add("protocol", "well-behaved client: checks failed while fuzzing", len(checks["failed"]))
    figures.add("protocol", "well-behaved client: slowest check", checks["slowest"], "s")
    figures.add("protocol", "fuzzing time (8 connections at a time)", fuzz_seconds, "s")
    figures.add("protocol", "client connections left open in the proxy afterwards (besides the checker and the status query)",
                max(0, int(status["client_connections"]) - 2))
    figures.add("protocol", "backend connections left in use afterwards", sum(pool_in_use(status).values()))
    figures.add("protocol", "aborted logins on the backends caused by the proxy", aborted)

    assert proxy.alive(), proxy.output()[-3000:]
    assert not stuck, [(r.case, r.detail) for r in stuck[:5]]
    assert not refused, [(r.case, r.detail) for r in refused[:5]]
    assert not checks["failed"], checks["failed"][:5]
    assert settled, f"connections or backend connections still busy after fuzzing: {status}"
    assert new_backend_ok == POOL_CAP
    assert aborted == 0, f"the proxy caused {aborted} aborted logins on the backends (max_connect_errors would block it)"
    for name, size, kind, value in size_results:
        if name.startswith("over the proxy"):
            assert kind in ("error", "closed"), (name, kind, value)
            continue
        must_answer = dict((n, m) for n, _, m in size_cases())[name]
        expected = size - len(query_of_payload_size(0))  # the length of the literal
        if must_answer:
            assert (kind, value) == ("value", expected), (name, kind, str(value)[:200])
        else:
            assert (kind, value) == ("value", expected) or kind in ("error", "closed"), (name, kind, str(value)[:200])
    # These pre-auth attacks must end in an error or a close (a truncated login may still be a valid, shorter
    # one and be answered with an auth switch; that is fine).
    for r in results:
        if r.category == "pre-auth" and r.case in ("oversized login packet", "TLS request when TLS is not offered",
                                                   "empty packet", "login without protocol 4.1", "huge user name"):
            assert r.outcome in ("error", "closed"), r


def test_protocol_fuzz(fuzz_proxy, figures, long_run):
    servers, proxy = fuzz_proxy
    fuzz(proxy, servers, figures, rounds=60 if long_run else 10, seed=4242)




@pytest.mark.parametrize("arm", ["proxy", "driver"])
def test_statement_over_the_backend_packet_limit_does_not_break_other_clients(make_mariadb, tmp_path, start_proxy, arm):
    """A statement bigger than the backend's max_allowed_packet (but within the proxy's) makes the
    backend close that connection. Only that client may see an error; the next client must not get
    the dead connection from the pool. One connection per datasource makes the reuse certain."""
    servers = {n: make_mariadb(f"pk{i}", max_allowed_packet="16M") for i, n in enumerate(("ds0", "ds1"))}  # MariaDB's default
    path = write_doc(small_layout_doc(servers, connect_timeout=2, read_timeout=10, max_connections=1), tmp_path / "pk.yaml")
    create_small_layout(path, servers)
    proxy = start_proxy(path) if arm == "proxy" else None
    big = "a" * 17_000_000  # over the backend's limit and over one 16 MiB frame; under the proxy's 64 MiB
    sql = "SELECT COUNT(*) FROM user_relation WHERE uid = %s AND remark <> %s"
    open_conn = (lambda: proxy.connect()) if arm == "proxy" else (lambda: mdriver.connect(config=path, schema="app", autocommit=True))
    problems = []
    for _ in range(2):
        sender, other = open_conn(), open_conn()
        try:
            with sender.cursor() as cur:
                try:
                    cur.execute(sql, (1, big))
                    cur.fetchall()
                except DB_ERRORS as e:
                    if not isinstance(e, (mdriver.OperationalError, pymysql.err.OperationalError)) or not (
                            "ds0" in message_of(e) or "max_allowed_packet" in message_of(e)):
                        problems.append(f"{arm}: the big statement got {type(e).__name__}: {message_of(e)}")
            for attempt in range(3):
                try:
                    with other.cursor() as cur:
                        cur.execute(sql, (1, "x"))
                        assert cur.fetchall() == ((0,),)
                except DB_ERRORS as e:
                    problems.append(f"{arm}: query {attempt + 1} of another client failed: {message_of(e)}")
        finally:
            sender.close()
            other.close()
    assert not problems, problems
