"""Cross-shard XA transactions with a backend (or the coordinator) dying between PREPARE and COMMIT.

Each test runs its own two MariaDB servers (so killing one disturbs no other
test) with a small sharded layout: database 0 on ds0 (also the home, holding
the decision log) and database 1 on ds1. A hook on the coordinator's steps
kills a server at the exact point. After restart, recovery (as a new process
would run it when its pools start) must leave every branch with the same
outcome: both rows committed, or neither.
"""
import os

import pytest
import yaml

import mdriver
from mdriver.runtime import RuntimeOptions, open_runtime
from mdriver.sandbox.layout import create_layout, plan_layout, read_schema_file
from mdriver.txn import Phase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
UID_DS0, UID_DS1 = 4, 6  # slot 0 -> app_00 on ds0; slot 2 -> app_01 on ds1 (4 slots: 2 databases x 2 tables)


class Crash(BaseException):
    """Stands for the coordinator process dying at a step."""


@pytest.fixture
def cluster(make_mariadb, tmp_path):
    servers = {"ds0": make_mariadb("xa0"), "ds1": make_mariadb("xa1")}
    doc = {
        "version": 1,
        "datasources": {
            name: {"host": s.host, "port": s.port, "user": "root", "password": "", "connect_timeout": 2, "read_timeout": 10}
            for name, s in servers.items()
        },
        "schemas": {
            "app": {
                "datasource": "ds0",
                "tables": {
                    "user_relation": {
                        "shard_key": "uid", "algorithm": "mod", "databases": 2, "tables_per_database": 2,
                        "placement": {"ds0": "0", "ds1": "1"},
                    }
                },
            }
        },
        "transaction_mode": "xa",
    }
    path = tmp_path / "xa.yaml"
    path.write_text(yaml.safe_dump(doc))
    config = mdriver_config(str(path))
    tables = read_schema_file(os.path.join(ROOT, "examples", "schema.sql"))
    create_layout(plan_layout(config, {"user_relation": tables["user_relation"]}), lambda ds, **kw: servers[ds].connect(**kw))
    runtimes = []

    def runtime():
        rt = open_runtime(str(path), RuntimeOptions(recovery_grace=0, recovery_interval=0))
        runtimes.append(rt)
        return rt

    yield servers, runtime
    for rt in runtimes:
        rt.close()


def mdriver_config(path):
    from mdriver.config import load_config

    return load_config(path)


def rows_on(server, database, table, uid):
    conn = server.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {table} WHERE uid = %s", (uid,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def prepared(server):
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("XA RECOVER")
            return [r for r in cur.fetchall() if r[3].startswith(b"mdrv.")]
    finally:
        conn.close()


def outcome(servers):
    """(row on ds0, row on ds1): (1, 1) committed everywhere, (0, 0) rolled back everywhere."""
    return (
        rows_on(servers["ds0"], "app_00", "user_relation_0000", UID_DS0),
        rows_on(servers["ds1"], "app_01", "user_relation_0002", UID_DS1),
    )


def start_cross_shard_transaction(rt):
    conn = mdriver.connect(runtime=rt, schema="app")
    cur = conn.cursor()
    cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (%s, %s, %s)", (1, UID_DS0, 10))
    cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (%s, %s, %s)", (2, UID_DS1, 20))
    assert sorted(conn.txn.branches) == ["ds0", "ds1"]
    return conn


def test_backend_killed_after_decision_is_committed_by_recovery(cluster):
    servers, runtime = cluster
    rt = runtime()
    conn = start_cross_shard_transaction(rt)

    def hook(phase, t):
        if phase is Phase.COMMIT:
            servers["ds1"].kill()

    rt.txn_hook = hook
    conn.commit()  # decided: the commit stands although ds1 could not be told yet
    assert not conn.in_transaction
    servers["ds1"].start()
    assert len(prepared(servers["ds1"])) == 1  # the branch survived the crash, in doubt
    assert outcome(servers)[0] == 1
    report = runtime().recover("app")
    assert [ds for ds, _ in report.committed] == ["ds1"] and not report.rolled_back
    assert outcome(servers) == (1, 1)
    assert prepared(servers["ds0"]) == [] and prepared(servers["ds1"]) == []


def test_home_killed_before_decision_is_rolled_back_by_recovery(cluster):
    servers, runtime = cluster
    rt = runtime()
    conn = start_cross_shard_transaction(rt)

    def hook(phase, t):
        if phase is Phase.DECIDE:
            servers["ds0"].kill()  # both branches are prepared; the decision log dies with ds0

    rt.txn_hook = hook
    with pytest.raises(mdriver.OperationalError, match="commit outcome unknown") as info:
        conn.commit()
    assert "ds0" in str(info.value)
    servers["ds0"].start()
    assert len(prepared(servers["ds0"])) == 1 and len(prepared(servers["ds1"])) == 1
    report = runtime().recover("app")
    assert sorted(ds for ds, _ in report.rolled_back) == ["ds0", "ds1"]
    assert outcome(servers) == (0, 0)
    assert prepared(servers["ds0"]) == [] and prepared(servers["ds1"]) == []


def test_coordinator_crash_after_prepare_rolls_back(cluster):
    servers, runtime = cluster
    rt = runtime()
    conn = start_cross_shard_transaction(rt)

    def hook(phase, t):
        if phase is Phase.DECIDE:
            raise Crash()

    rt.txn_hook = hook
    with pytest.raises(Crash):
        conn.commit()
    rt.close()  # the process is gone: its connections close and the prepared branches detach
    assert len(prepared(servers["ds0"])) == 1 and len(prepared(servers["ds1"])) == 1
    runtime().recover("app")
    assert outcome(servers) == (0, 0)
    assert prepared(servers["ds0"]) == [] and prepared(servers["ds1"]) == []


def test_coordinator_crash_after_decision_commits(cluster):
    servers, runtime = cluster
    rt = runtime()
    conn = start_cross_shard_transaction(rt)

    def hook(phase, t):
        if phase is Phase.COMMIT:
            raise Crash()

    rt.txn_hook = hook
    with pytest.raises(Crash):
        conn.commit()
    rt.close()
    assert outcome(servers) == (0, 0)  # nothing visible yet: both branches are prepared
    # A new process recovers when its pools start.
    conn2 = mdriver.connect(runtime=runtime(), schema="app")
    assert outcome(servers) == (1, 1)
    cur = conn2.cursor()
    cur.execute("SELECT COUNT(*) FROM user_relation")
    assert cur.fetchone() == (2,)


def test_recovery_leaves_a_live_transaction_alone(cluster):
    servers, runtime = cluster
    rt = runtime()
    conn = start_cross_shard_transaction(rt)
    seen = {}

    def hook(phase, t):
        if phase is Phase.DECIDE:
            # Another process recovers while this coordinator sits between PREPARE and its decision:
            # the branches are still attached to live sessions, so nothing may be resolved.
            other = open_runtime(rt.provider.current.source, RuntimeOptions(recovery_grace=0, recovery_interval=0, recover_on_start=False))
            try:
                seen["report"] = other.recover("app")
            finally:
                other.close()

    rt.txn_hook = hook
    with pytest.raises(mdriver.OperationalError, match="recovery decided to abort"):
        conn.commit()
    report = seen["report"]
    assert not report.committed and not report.rolled_back
    assert outcome(servers) == (0, 0)
    assert prepared(servers["ds0"]) == [] and prepared(servers["ds1"]) == []
