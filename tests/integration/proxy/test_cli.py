"""``mdriver-proxy`` as operators run it: help, config errors, SIGTERM drain, SIGHUP reload, metrics, workers."""
from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pymysql
import pytest
import yaml

from mdriver.sandbox.cluster import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def run_cli(*args, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_help_explains():
    out = run_cli("--help")
    assert out.returncode == 0
    for word in ("--config", "--listen", "SIGTERM", "SIGHUP", "--workers", "proxy.users"):
        assert word in out.stdout


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "cannot read config"),
        ("version: 1\ndatasources: [", "invalid YAML at line"),
        ("version: 1\ndatasources: {}\nschemas: {}\n", "invalid config"),
    ],
)
def test_config_errors_are_one_line_not_a_traceback(tmp_path, content, expected):
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_text(content)
    out = run_cli("--config", str(path))
    assert out.returncode == 2
    assert expected in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.startswith("mdriver-proxy: ")


def test_bad_listen_and_port_in_use(mariadb_cluster):
    out = run_cli("--config", mariadb_cluster.config_path, "--listen", "nonsense")
    assert out.returncode == 2 and "expected HOST:PORT" in out.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run_cli("--config", mariadb_cluster.config_path, "--listen", f"127.0.0.1:{port}")
    assert out.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr


class Proxy:
    """mdriver-proxy as a subprocess on a copy of the cluster's config."""

    def __init__(self, cluster, tmp_path, *extra, **proxy_changes):
        with open(cluster.config_path, encoding="utf-8") as f:
            self.doc = yaml.safe_load(f)
        self.port, self.metrics_port = free_port(), free_port()
        self.doc["proxy"]["listen"] = f"127.0.0.1:{self.port}"
        self.doc["proxy"]["metrics"] = f"127.0.0.1:{self.metrics_port}"
        self.doc["proxy"].update(proxy_changes)
        if self.doc["proxy"].get("metrics") is None:
            self.doc["proxy"].pop("metrics", None)
        self.path = tmp_path / "proxy.yaml"
        self.write()
        self.log = open(tmp_path / "proxy.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "--config", str(self.path), *extra],
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"proxy did not start:\n{self.output()}")
                time.sleep(0.05)

    def write(self) -> None:
        self.path.write_text(yaml.safe_dump(self.doc, sort_keys=False), encoding="utf-8")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def connect(self, **kw):
        kw.setdefault("user", "app")
        kw.setdefault("password", "app-secret")
        return pymysql.connect(host="127.0.0.1", port=self.port, database="app", autocommit=True, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def cli_proxy(mariadb_cluster, tmp_path):
    started = []

    def start(*extra, **changes):
        p = Proxy(mariadb_cluster, tmp_path, *extra, **changes)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def test_sigterm_finishes_running_statements_then_exits(cli_proxy):
    p = cli_proxy("--shutdown-timeout", "10")
    conn = p.connect()
    idle = p.connect()
    result = {}

    def slow():
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT SLEEP(2), 42")
                result["rows"] = cur.fetchall()
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = e

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    p.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(pymysql.err.OperationalError):
        p.connect()  # no longer accepting
    t.join(15)
    assert result.get("rows") == ((0, 42),), result
    assert p.proc.wait(15) == 0
    with pytest.raises(pymysql.err.OperationalError):
        with idle.cursor() as cur:
            cur.execute("SELECT 1")
    assert "shutting down" in p.output()


def test_sighup_reloads_and_refuses_invalid_config(cli_proxy):
    p = cli_proxy()
    with pytest.raises(pymysql.err.OperationalError):
        p.connect(user="ops", password="ops-secret")
    p.doc["proxy"]["users"]["ops"] = {"password": "ops-secret", "schemas": ["app"]}
    p.write()
    p.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        try:
            p.connect(user="ops", password="ops-secret").close()
            break
        except pymysql.err.OperationalError:
            assert time.monotonic() < deadline, p.output()
            time.sleep(0.1)
    p.path.write_text("version: 1\nschemas: [broken\n")
    p.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    c = p.connect(user="ops", password="ops-secret")  # the running config is kept
    c.close()
    assert "config reload refused" in p.output()
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{p.metrics_port}/metrics", timeout=5).read().decode()
    assert "mdriver_proxy_config_reload_errors_total 1.0" in metrics


def test_metrics_endpoint(cli_proxy):
    p = cli_proxy()
    conn = p.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM user_relation WHERE uid = 5")
            cur.execute("SELECT COUNT(*) FROM user_relation")
            with pytest.raises(pymysql.err.MySQLError):
                cur.execute("DELETE FROM user_relation")
            with pytest.raises(pymysql.err.OperationalError):  # the backend's error, relayed as is
                cur.execute("SELECT no_such_column FROM user_relation WHERE uid = 5")
    finally:
        conn.close()
    text = urllib.request.urlopen(f"http://127.0.0.1:{p.metrics_port}/metrics", timeout=5).read().decode()
    assert 'mdriver_proxy_errors_total{code="1054"} 1.0' in text  # backend errors count too
    assert 'mdriver_proxy_statements_total{route="single",type="select"}' in text
    assert 'mdriver_proxy_statements_total{route="scatter",type="select"}' in text
    assert 'mdriver_proxy_errors_total{code="1290"} 1.0' in text
    assert "mdriver_proxy_statement_seconds_bucket" in text
    assert 'mdriver_proxy_pool_in_use{datasource="ds0"}' in text
    assert "mdriver_proxy_config_version{revision=" in text
    assert "mdriver_proxy_scatter_total 1.0" in text


def test_metrics_port_in_use_is_named(mariadb_cluster, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with open(mariadb_cluster.config_path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        doc["proxy"]["metrics"] = f"127.0.0.1:{port}"
        path = tmp_path / "m.yaml"
        path.write_text(yaml.safe_dump(doc))
        out = run_cli("--config", str(path), "--listen", f"127.0.0.1:{free_port()}")
    assert out.returncode == 1 and f"cannot serve metrics on 127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr


def test_workers_share_the_port(cli_proxy):
    p = cli_proxy("--workers", "2", metrics=None)  # worker i would serve metrics on port + i: not reserved here
    workers = set()
    for _ in range(20):
        c = p.connect()
        try:
            workers.add(c.thread_id() >> 24)
            with c.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM user_relation WHERE uid = 5")
        finally:
            c.close()
    assert workers <= {0, 1} and len(workers) >= 1
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(20) == 0


def test_the_start_up_line_names_the_runtime(cli_proxy):
    p = cli_proxy()
    deadline = time.monotonic() + 10  # printed just after the port opens
    while not (lines := [ln for ln in p.output().splitlines() if ln.startswith("mdriver-proxy listening on")]):
        assert time.monotonic() < deadline, p.output()
        time.sleep(0.05)
    line = lines[0]
    impl = sys.implementation
    if impl.name == "pypy":  # this interpreter runs the proxy too (see Proxy)
        expected = f"(PyPy {impl.version.major}.{impl.version.minor}.{impl.version.micro}, asyncio)"
    else:
        v = sys.version_info
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        expected = f"(CPython {v.major}.{v.minor}.{v.micro}, {loop})"
    assert line == f"mdriver-proxy listening on 127.0.0.1:{p.port} {expected}"


def _worker_of(conn) -> int:
    return conn.thread_id() >> 24  # connection ids carry the worker index in their top byte


def test_workers_get_connections_evenly_and_closes_count(cli_proxy):
    # SO_REUSEPORT's address hash would put 8 connections 4/4 on two workers only 27% of the time
    p = cli_proxy("--workers", "2", metrics=None)
    conns = [p.connect() for _ in range(8)]
    by_worker = {0: [], 1: []}
    for c in conns:
        by_worker[_worker_of(c)].append(c)
    assert [len(v) for v in by_worker.values()] == [4, 4]
    for c in by_worker[1][:3]:  # worker 1 now has 1 open, worker 0 has 4: the next three go to worker 1
        c.close()
    time.sleep(0.5)  # the close reports travel to the parent
    fresh = [p.connect() for _ in range(3)]
    assert [_worker_of(c) for c in fresh] == [1, 1, 1]
    counts = []
    for c in fresh + by_worker[0][:1]:  # the new connections serve queries like an old one on the other worker
        with c.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM user_relation WHERE uid = 5")
            counts.append(cur.fetchone()[0])
    assert len(set(counts)) == 1
    for c in fresh + by_worker[0] + by_worker[1][3:]:
        c.close()
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(20) == 0


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: [state, parent pid, ...]; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and (st := _stat(int(e))) is not None and int(st[1]) == pid]


def test_a_killed_worker_is_replaced_and_a_killed_parent_stops_the_workers(cli_proxy):
    p = cli_proxy("--workers", "2", metrics=None)
    deadline = time.monotonic() + 10
    while len(workers := _children(p.proc.pid)) < 2:
        assert time.monotonic() < deadline, p.output()
        time.sleep(0.05)
    time.sleep(2.5)  # a worker that dies within 2 s of its start stops the proxy (a startup failure)
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 15
    while not (m := re.search(r"worker (\d) exited unexpectedly", p.output())):  # reaped: nothing is handed to it now
        assert time.monotonic() < deadline, p.output()
        time.sleep(0.05)
    killed = int(m.group(1))
    seen = set()
    while killed not in seen:  # the other worker takes the connections until the new one is in the rotation
        c = p.connect()
        seen.add(_worker_of(c))
        c.close()
        assert time.monotonic() < deadline, p.output()
        time.sleep(0.1)
    workers = _children(p.proc.pid)
    assert len(workers) == 2
    p.proc.kill()  # no SIGTERM to forward: the workers notice the closed channel and stop by themselves
    p.proc.wait()
    deadline = time.monotonic() + 15
    while any((st := _stat(w)) is not None and st[0] != "Z" for w in workers):
        assert time.monotonic() < deadline, p.output()
        time.sleep(0.1)
    assert "the parent process is gone" in p.output()
