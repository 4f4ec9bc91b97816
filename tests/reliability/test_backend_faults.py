"""Backend faults under load: ``kill -9`` one MariaDB and bring it back; ``SIGSTOP`` it, then
``SIGCONT``. Driver and proxy clients run at the same time against two servers of their own.

While ds1 is down: operations that need it fail with a MySQL error naming it within the
configured timeout (never a hang); clients that use only ds0 see no error and no stall.
After it returns: every client succeeds again within a few seconds, every pooled
connection works, no XA branch stays prepared, and no cross-datasource transfer was
half applied (the sum of the balances is unchanged).
"""
from __future__ import annotations

import decimal
import signal
import threading
import time
from dataclasses import dataclass

import pytest

import mdriver
from mdriver.config import load_config
from mdriver.sharding import all_locations
from reliability_helpers import (
    DB_ERRORS, create_small_layout, errno_of, message_of, small_layout_doc, wait_until, write_doc,
)

TIMEOUT = 2.0  # connect_timeout, read_timeout and the proxy's backend_timeout
MARGIN = 2.0  # scheduling slack on two shared cores
MAX_CONNECTIONS = 8
WARMUP, OUTAGE, AFTER = 3.0, 6.0, 10.0
# The proxy probes a datasource that is down with a backoff growing to 5 s; the driver reconnects on demand.
RECOVERY_BOUND = 7.0
ROLES = ("healthy", "ds1", "transfer")  # what each client does; one client per role and arm
CLIENTS_PER_ROLE = 2
BALANCE = decimal.Decimal("1000.00")


@dataclass(frozen=True)
class Event:
    arm: str
    role: str
    client: int
    start: float
    end: float
    errno: int = 0
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.errno == 0

    @property
    def took(self) -> float:
        return self.end - self.start


def freeze(inst, timeout: float = 5.0) -> None:
    """SIGSTOP a server and wait until the kernel reports it stopped."""
    inst.kill(signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{inst.pid}/stat", encoding="ascii") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.01)
    raise AssertionError(f"{inst!r} did not stop")


class Client:
    """One client of one arm and role, recording every operation it runs."""

    def __init__(self, arm, role, index, connect, uid_a, uid_b, stop: threading.Event):
        self.arm, self.role, self.index = arm, role, index
        self.connect = connect
        self.uid_a, self.uid_b = uid_a, uid_b  # on ds0 and on ds1
        self.ids = (index * 10 + 1, index * 10 + 2)
        self.stop = stop
        self.events: list[Event] = []
        self.crashed: str | None = None
        self.conn = connect()
        self.thread = threading.Thread(target=self._run, name=f"fault-{arm}-{role}-{index}", daemon=True)

    def _op(self, n: int) -> None:
        with self.conn.cursor() as cur:
            if self.role == "healthy":
                if n % 2:
                    cur.execute("SELECT score FROM user_relation WHERE uid = %s AND id = %s", (self.uid_a, self.ids[0]))
                else:
                    cur.execute("UPDATE user_relation SET remark = %s WHERE uid = %s AND id = %s", (f"h{n}", self.uid_a, self.ids[0]))
            elif self.role == "ds1":
                if n % 2:
                    cur.execute("SELECT score FROM user_relation WHERE uid = %s AND id = %s", (self.uid_b, self.ids[1]))
                else:
                    cur.execute("UPDATE user_relation SET remark = %s WHERE uid = %s AND id = %s", (f"b{n}", self.uid_b, self.ids[1]))
            else:
                amount = decimal.Decimal(n % 7 + 1)
                src, dst = ((self.uid_a, self.ids[0]), (self.uid_b, self.ids[1]))[:: 1 if n % 2 else -1]
                self.conn.begin()
                try:
                    cur.execute("UPDATE user_relation SET score = score - %s WHERE uid = %s AND id = %s", (amount, *src))
                    cur.execute("UPDATE user_relation SET score = score + %s WHERE uid = %s AND id = %s", (amount, *dst))
                except BaseException:
                    try:
                        self.conn.rollback()
                    except DB_ERRORS:
                        pass
                    raise
                self.conn.commit()

    def _run(self) -> None:
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                t0 = time.monotonic()
                try:
                    self._op(n)
                except DB_ERRORS as e:
                    self.events.append(Event(self.arm, self.role, self.index, t0, time.monotonic(), errno_of(e) or -1, message_of(e)))
                    if self.arm == "proxy" and not self.conn.open:
                        self.conn = self.connect()  # the proxy closed the session: a client reconnects
                    time.sleep(0.05)
                else:
                    self.events.append(Event(self.arm, self.role, self.index, t0, time.monotonic()))
                    time.sleep(0.02)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.crashed = f"{type(e).__name__}: {e}"


@pytest.fixture
def fault_env(make_mariadb, tmp_path, start_proxy):
    servers = {"ds0": make_mariadb("bf0"), "ds1": make_mariadb("bf1")}
    doc = small_layout_doc(servers, connect_timeout=TIMEOUT, read_timeout=TIMEOUT, max_connections=MAX_CONNECTIONS)
    doc["proxy"]["backend_timeout"] = TIMEOUT
    path = write_doc(doc, tmp_path / "faults.yaml")
    create_small_layout(path, servers)
    proxy = start_proxy(path)
    try:
        yield servers, path, proxy
    finally:
        for inst in servers.values():
            if inst.is_alive():
                inst.kill(signal.SIGCONT)  # never leave a server stopped


def uids_for(client: int) -> tuple[int, int]:
    """A key on ds0 (slots 0-7 of 16) and one on ds1 (slots 8-15)."""
    return 16_000 + client * 16 + client % 8, 16_000 + client * 16 + 8 + client % 8


def sum_balances(servers, config_path: str) -> decimal.Decimal:
    """The sum of every score in every physical user_relation table, read from the servers."""
    schema = load_config(config_path).schemas["app"]
    total = decimal.Decimal(0)
    for loc in all_locations(schema, schema.tables["user_relation"]):
        conn = servers[loc.datasource].connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT COALESCE(SUM(score), 0) FROM `{loc.database}`.`{loc.table}`")
                total += cur.fetchone()[0]
        finally:
            conn.close()
    return total


def xa_prepared(servers) -> int:
    n = 0
    for inst in servers.values():
        conn = inst.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("XA RECOVER")
                n += len(cur.fetchall())
        finally:
            conn.close()
    return n


def every_pooled_connection_works(open_conn, uids) -> list[str]:
    """MAX_CONNECTIONS transactions at once, each pinning its own connection to ds0 and ds1."""
    conns, problems = [], []
    try:
        for i in range(MAX_CONNECTIONS):
            conns.append(open_conn())
        for i, conn in enumerate(conns):
            a, b = uids[i % len(uids)]
            try:
                conn.begin()
                with conn.cursor() as cur:
                    cur.execute("SELECT COUNT(*) FROM user_relation WHERE uid = %s", (b,))
                    cur.execute("SELECT COUNT(*) FROM user_relation WHERE uid = %s", (a,))
            except DB_ERRORS as e:
                problems.append(f"transaction {i}: ({errno_of(e)}) {message_of(e)}")
        for conn in conns:
            try:
                conn.rollback()
            except DB_ERRORS as e:
                problems.append(f"rollback: ({errno_of(e)}) {message_of(e)}")
    finally:
        for conn in conns:
            conn.close()
    return problems


def run_fault(fault: str, servers, path, proxy, figures) -> None:
    ds1 = servers["ds1"]
    port = ds1.port
    n_clients = len(ROLES) * CLIENTS_PER_ROLE * 2
    driver_kw = dict(config=path, schema="app", autocommit=True, recovery_interval=1, recovery_grace=2)
    setup = mdriver.connect(**driver_kw)
    with setup.cursor() as cur:
        for i in range(n_clients):
            a, b = uids_for(i)
            ids = (i * 10 + 1, i * 10 + 2)
            cur.execute("INSERT INTO user_relation (id, uid, target_uid, score) VALUES (%s, %s, 0, %s), (%s, %s, 0, %s)",
                        (ids[0], a, BALANCE, ids[1], b, BALANCE))
    setup.close()
    expected_total = BALANCE * 2 * n_clients

    stop = threading.Event()
    clients: list[Client] = []
    index = 0
    for arm in ("driver", "proxy"):
        for role in ROLES:
            for _ in range(CLIENTS_PER_ROLE):
                connect = (lambda: mdriver.connect(**driver_kw)) if arm == "driver" else (lambda: proxy.connect(autocommit=True))
                clients.append(Client(arm, role, index, connect, *uids_for(index), stop))
                index += 1
    for c in clients:
        c.thread.start()
    try:
        time.sleep(WARMUP)
        t_fault = time.monotonic()
        if fault == "kill":
            ds1.kill(signal.SIGKILL)
        else:
            freeze(ds1)
        time.sleep(OUTAGE)
        t_restore = time.monotonic()
        if fault == "kill":
            ds1.start()
        else:
            ds1.kill(signal.SIGCONT)
        t_ready = time.monotonic()
        prepared_at_return = xa_prepared(servers)
        time.sleep(AFTER)
    finally:
        stop.set()
        if fault == "stop" and ds1.is_alive():
            ds1.kill(signal.SIGCONT)
        for c in clients:
            c.thread.join(3 * TIMEOUT + 10)
    stuck = [c.thread.name for c in clients if c.thread.is_alive()]
    crashed = [f"{c.thread.name}: {c.crashed}" for c in clients if c.crashed]
    events = [e for c in clients for e in c.events]

    # -- while ds1 was down -------------------------------------------------------------------
    failures = [e for e in events if not e.ok]
    outage = [e for e in events if e.end >= t_fault and e.start <= t_ready]
    healthy = [e for e in outage if e.role == "healthy"]
    healthy_errors = [e for e in events if e.role == "healthy" and not e.ok]
    unnamed = [e for e in failures if "ds1" not in e.message or str(port) not in e.message]
    single_bound, txn_bound = TIMEOUT + MARGIN, 2 * TIMEOUT + MARGIN
    slow_failures = [e for e in failures if e.took > (single_bound if e.role == "ds1" else txn_bound)]
    ds1_failures = [e for e in failures if e.role == "ds1"]
    healthy_max = max((e.took for e in healthy), default=float("inf"))
    # -- after it came back ----------------------------------------------------------------------
    recovery = {}
    for arm in ("driver", "proxy"):
        per_client = []
        for c in clients:
            if c.arm != arm or c.role == "healthy":
                continue
            first = next((e for e in c.events if e.ok and e.start >= t_ready), None)
            per_client.append(first.end - t_ready if first else float("inf"))
        recovery[arm] = max(per_client)
    late_errors = [e for e in failures if e.start > t_ready + RECOVERY_BOUND]
    pool_problems = {
        "driver": every_pooled_connection_works(lambda: mdriver.connect(**driver_kw), [uids_for(i) for i in range(n_clients)]),
        "proxy": every_pooled_connection_works(lambda: proxy.connect(autocommit=True), [uids_for(i) for i in range(n_clients)]),
    }
    left = wait_until(lambda: xa_prepared(servers) == 0, 20, 0.5)
    prepared = xa_prepared(servers)
    total = sum_balances(servers, path)
    proxy_alive = proxy.alive()
    what = "kill -9" if fault == "kill" else "SIGSTOP"

    figures.add("backend", f"{what}: operations during the test (driver + proxy clients)", len(events))
    figures.add("backend", f"{what}: operations that failed (all while ds1 was down or coming back)", len(failures))
    figures.add("backend", f"{what}: slowest failure of a ds1 statement (bound {single_bound:g} s)",
                max((e.took for e in ds1_failures), default=0.0), "s")
    figures.add("backend", f"{what}: failures not naming the datasource", len(unnamed))
    figures.add("backend", f"{what}: errors on ds0-only clients", len(healthy_errors))
    figures.add("backend", f"{what}: slowest ds0-only operation while ds1 was down", healthy_max, "s")
    figures.add("backend", f"{what}: ds0-only operations completed while ds1 was down", sum(e.ok for e in healthy))
    figures.add("backend", f"{what}: recovery time, driver clients", recovery["driver"], "s")
    figures.add("backend", f"{what}: recovery time, proxy clients", recovery["proxy"], "s")
    figures.add("backend", f"{what}: errors later than {RECOVERY_BOUND:g} s after ds1 was back", len(late_errors))
    figures.add("backend", f"{what}: pooled connections left broken", sum(len(p) for p in pool_problems.values()))
    if fault == "kill":
        figures.add("backend", f"{what}: time for ds1 to restart (not counted in recovery)", t_ready - t_restore, "s")
    figures.add("backend", f"{what}: XA branches prepared when ds1 came back (resolved by recovery)", prepared_at_return)
    figures.add("backend", f"{what}: XA branches left prepared", prepared)
    figures.add("backend", f"{what}: balance drift after transfers", str(total - expected_total))

    assert not stuck, f"clients hung: {stuck}"
    assert not crashed, crashed
    assert proxy_alive, proxy.output()[-3000:]
    assert ds1_failures, "the fault was not noticed by any ds1 client"
    assert not unnamed, [f"{e.arm}/{e.role}: ({e.errno}) {e.message}" for e in unnamed[:5]]
    assert not slow_failures, [f"{e.arm}/{e.role} took {e.took:.2f} s: {e.message}" for e in slow_failures[:5]]
    assert not healthy_errors, [f"{e.arm}: ({e.errno}) {e.message}" for e in healthy_errors[:5]]
    assert healthy_max < TIMEOUT, f"a ds0-only operation took {healthy_max:.2f} s while ds1 was down (waited on ds1?)"
    for arm in ("driver", "proxy"):
        assert sum(e.ok and e.arm == arm for e in healthy) > 10, f"{arm}: ds0 traffic stopped while ds1 was down"
        assert recovery[arm] < RECOVERY_BOUND, f"{arm}: recovered only after {recovery[arm]:.2f} s"
    assert not late_errors, [f"{e.arm}/{e.role}: ({e.errno}) {e.message}" for e in late_errors[:5]]
    assert pool_problems == {"driver": [], "proxy": []}, pool_problems
    assert left and prepared == 0, f"{prepared} XA branches still prepared"
    assert total == expected_total, f"transfers were half applied: total {total}, expected {expected_total}"


@pytest.mark.parametrize("fault", ["kill", "stop"])
def test_backend_fault_under_load(fault_env, figures, fault):
    servers, path, proxy = fault_env
    run_fault(fault, servers, path, proxy, figures)
