"""``mdriver-sandbox`` end to end: the real CLI on a temp state folder and free ports."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pymysql
import pytest

from mdriver.sandbox.cli import our_instances
from mdriver.sandbox.cluster import free_port
from mdriver.sandbox.configfile import write_config_with_ports

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join(ROOT, "config", "sharding.yaml")


def sandbox(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mdriver.sandbox.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})},
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"


@pytest.fixture
def sandbox_env(tmp_path):
    """A config with free ports and an empty state folder; whatever the test starts is stopped."""
    ports = {"ds0": free_port(), "ds1": free_port()}
    config = write_config_with_ports(DEFAULT_CONFIG, str(tmp_path / "sharding.yaml"), ports)
    state = str(tmp_path / "state")
    yield config, state, ports
    sandbox("down", "--config", config, "--state", state)
    for inst in our_instances(state):  # last resort if `down` itself is broken
        if inst.is_alive():
            inst.kill(signal.SIGKILL)


def layout_counts(port: int) -> tuple[list[str], int, int, int]:
    conn = pymysql.connect(host="127.0.0.1", port=port, user="root", password="")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'app%' ORDER BY 1")
            dbs = [r[0] for r in cur.fetchall()]
            counts = []
            for pattern in ("user\\_relation\\_%", "user\\_fans\\_%", "region"):
                cur.execute(
                    "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA LIKE 'app%%' AND TABLE_NAME LIKE %s",
                    (pattern,),
                )
                counts.append(cur.fetchone()[0])
    finally:
        conn.close()
    return dbs, *counts


def server_pids(state: str) -> dict[str, int]:
    return {inst.name: inst.pid for inst in our_instances(state) if inst.is_alive()}


def test_up_twice_status_down(sandbox_env):
    config, state, ports = sandbox_env
    args = ("--config", config, "--state", state)

    first = sandbox("up", *args)
    assert first.returncode == 0, first.stderr
    assert "created 33 databases and 2081 tables" in first.stdout
    assert set(os.listdir(state)) >= {"ds0", "ds1"}
    pids = server_pids(state)
    assert set(pids) == {"ds0", "ds1"}

    ds0 = layout_counts(ports["ds0"])
    ds1 = layout_counts(ports["ds1"])
    assert ds0 == (["app"] + [f"app_{i:02d}" for i in range(16)], 512, 512, 17)
    assert ds1 == ([f"app_{i:02d}" for i in range(16, 32)], 512, 512, 16)
    conn = pymysql.connect(host="127.0.0.1", port=ports["ds1"], user="root", database="app_31", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SELECT @@binlog_format, @@binlog_row_image, @@binlog_row_metadata")
        assert cur.fetchone() == ("ROW", "FULL", "FULL")
        cur.execute("INSERT INTO user_relation_1023 (id, uid, target_uid) VALUES (7, 1023, 5)")
    conn.close()

    second = sandbox("up", *args)
    assert second.returncode == 0, second.stderr
    assert "created 0 databases and 0 tables, 2081 tables were already there" in second.stdout
    assert "already running" in second.stdout and "starting" not in second.stdout
    assert server_pids(state) == pids
    assert layout_counts(ports["ds0"]) == ds0 and layout_counts(ports["ds1"]) == ds1
    conn = pymysql.connect(host="127.0.0.1", port=ports["ds1"], user="root", database="app_31")
    with conn.cursor() as cur:
        cur.execute("SELECT id, uid, target_uid FROM user_relation_1023")
        assert cur.fetchall() == ((7, 1023, 5),)
    conn.close()

    status = sandbox("status", *args)
    assert status.returncode == 0, status.stdout + status.stderr
    lines = status.stdout.splitlines()
    assert len(lines) == 2 and all("running" in line and "answers" in line for line in lines)
    assert f"127.0.0.1:{ports['ds0']}: running (pid {pids['ds0']}), answers" in lines[0]

    down = sandbox("down", *args)
    assert down.returncode == 0, down.stderr
    assert "stopped 2 server(s)" in down.stdout
    assert not any(pid_alive(pid) for pid in pids.values())
    assert server_pids(state) == {}

    status = sandbox("status", *args)
    assert status.returncode == 3
    assert status.stdout.count("not running") == 2
    again = sandbox("down", *args)
    assert again.returncode == 0 and "no sandbox server running" in again.stdout


def test_port_of_a_foreign_listener_is_refused(sandbox_env):
    config, state, ports = sandbox_env
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", ports["ds1"]))
    listener.listen(1)
    try:
        result = sandbox("up", "--config", config, "--state", state)
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.strip() == (
            f"mdriver-sandbox: error: ds1: port {ports['ds1']} on 127.0.0.1 is used by a process this sandbox did not start; "
            f"not touching it. Stop it or change the port in {config}"
        )
        assert "Traceback" not in result.stderr
        assert server_pids(state) == {}  # nothing was started, not even ds0
        client = socket.create_connection(("127.0.0.1", ports["ds1"]), timeout=2)  # the foreign listener still works
        client.close()
        status = sandbox("status", "--config", config, "--state", state)
        assert status.returncode == 3
        assert "ds1 127.0.0.1:%d: not running; the port is used by a process the sandbox did not start" % ports["ds1"] in status.stdout
    finally:
        listener.close()


@pytest.mark.parametrize(
    "make_args, env, message",
    [
        (lambda c, s, t: ["up", "--config", c, "--state", s], {"MDRIVER_MARIADB_PATH": "/nonexistent"},
         "MariaDB is not installed (mariadbd, mariadb-install-db not found in MDRIVER_MARIADB_PATH=/nonexistent); "
         "install it with: sudo apt-get install mariadb-server mariadb-client"),
        (lambda c, s, t: ["up", "--config", c, "--state", s, "--schema", str(t / "none.sql")], {},
         "none.sql: cannot read: No such file or directory"),
        (lambda c, s, t: ["up", "--config", str(t / "none.yaml"), "--state", s], {},
         "none.yaml: cannot read config: No such file or directory"),
    ],
    ids=["mariadb-missing", "schema-missing", "config-missing"],
)
def test_clear_one_line_errors(sandbox_env, tmp_path, make_args, env, message):
    config, state, _ = sandbox_env
    result = sandbox(*make_args(config, state, tmp_path), env=env)
    assert result.returncode == 1
    assert message in result.stderr
    assert result.stderr.startswith("mdriver-sandbox: error: ") and result.stderr.count("\n") == 1
    assert server_pids(state) == {}


def test_remote_host_is_refused(tmp_path):
    text = open(DEFAULT_CONFIG).read().replace("host: 127.0.0.1\n    port: 13307", "host: 10.1.2.3\n    port: 13307")
    assert "10.1.2.3" in text
    config = tmp_path / "remote.yaml"
    config.write_text(text)
    result = sandbox("up", "--config", str(config), "--state", str(tmp_path / "state"))
    assert result.returncode == 1
    assert "datasources.ds1.host is 10.1.2.3: the sandbox starts servers on this machine only" in result.stderr


def test_usage_error_exit_code():
    result = sandbox("sideways")
    assert result.returncode == 2
    assert "invalid choice: 'sideways'" in result.stderr


def test_custom_schema_user_and_shared_server(tmp_path):
    """Two datasources on one port share one server; a non-root user is created; --schema is used."""
    port = free_port()
    config = tmp_path / "small.yaml"
    config.write_text(f"""
version: 1
datasources:
  a: {{host: 127.0.0.1, port: {port}, user: shard_admin, password: "s3cret"}}
  b: {{host: localhost, port: {port}, user: shard_admin, password: "s3cret"}}
schemas:
  shop:
    datasource: a
    tables:
      orders: {{shard_key: user_id, algorithm: hash, databases: 2, tables_per_database: 3, placement: {{a: "0", b: "1"}}}}
      country: {{broadcast: true}}
""")
    schema = tmp_path / "shop.sql"
    schema.write_text("CREATE TABLE orders (id INT PRIMARY KEY, user_id INT) ENGINE=InnoDB;\n"
                      "CREATE TABLE country (code CHAR(2) PRIMARY KEY);\nCREATE TABLE audit (n INT);\n")
    state = str(tmp_path / "state")
    args = ("--config", str(config), "--state", state)
    try:
        up = sandbox("up", *args, "--schema", str(schema))
        assert up.returncode == 0, up.stderr
        assert "a+b: creating and starting MariaDB" in up.stdout
        assert "created 3 databases and 10 tables" in up.stdout  # 6 orders + 3 country + audit in shop
        assert set(server_pids(state)) == {"a"}
        conn = pymysql.connect(host="127.0.0.1", port=port, user="shard_admin", password="s3cret")
        with conn.cursor() as cur:
            cur.execute("SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA LIKE 'shop%' ORDER BY 1, 2")
            assert cur.fetchall() == (
                ("shop", "audit"), ("shop", "country"),
                ("shop_00", "country"), ("shop_00", "orders_0000"), ("shop_00", "orders_0001"), ("shop_00", "orders_0002"),
                ("shop_01", "country"), ("shop_01", "orders_0003"), ("shop_01", "orders_0004"), ("shop_01", "orders_0005"),
            )
        conn.close()
        status = sandbox("status", *args)
        assert status.returncode == 0 and "a+b 127.0.0.1:%d: running" % port in status.stdout
    finally:
        down = sandbox("down", *args)
        assert down.returncode == 0 and "stopped 1 server(s)" in down.stdout
