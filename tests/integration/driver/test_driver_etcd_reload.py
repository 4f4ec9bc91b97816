"""Config from etcd: a watched change applies without reconnecting, and acknowledgements wait for
transactions still running on the previous version (what the migrator's write fence relies on)."""
import time

import pytest
import yaml

import mdriver
from mdriver.config.clients import AckTimeoutError, list_clients, wait_for_ack
from mdriver.config.publish import publish, set_migration_phase

from driver_helpers import table


@pytest.fixture
def etcd_config(mariadb_cluster, etcd_server, etcd_prefix):
    with open(mariadb_cluster.config_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    table(doc, "user_relation")["migration"] = {
        "source": {"datasource": "ds0", "database": "app", "table": "user_relation"}, "reads": "shards", "writes": "shards",
    }
    url = f"etcd://{etcd_server.host}:{etcd_server.port}{etcd_prefix}"
    publish(url, yaml.safe_dump(doc, sort_keys=False))
    mariadb_cluster.truncate("app", "user_relation", reference=False)
    yield url
    mariadb_cluster.truncate("app", "user_relation", reference=False)


def test_fence_is_acknowledged_only_after_open_transactions_end(etcd_config):
    url = etcd_config
    conn = mdriver.connect(config=url)
    drivers = [c for c in list_clients(url) if c.kind == "driver"]
    assert len(drivers) == 1 and drivers[0].revision == conn.runtime.version().revision
    cur = conn.cursor()
    cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (1, 11, 1)")  # a transaction on this version
    result = set_migration_phase(url, "app", "user_relation", writes="fenced")
    with pytest.raises(AckTimeoutError) as info:
        wait_for_ack(url, result.revision, timeout=1.5)
    assert [c.kind for c in info.value.laggards] == ["driver"]
    cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (2, 12, 1)")  # still its own version
    conn.commit()
    wait_for_ack(url, result.revision, timeout=10)
    # Acknowledged: from now on no write runs on the old config.
    with pytest.raises(mdriver.FencedWriteError):
        cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (3, 13, 1)")
    cur.execute("SELECT COUNT(*) FROM user_relation")
    assert cur.fetchone() == (2,)
    set_migration_phase(url, "app", "user_relation", writes="shards")
    deadline = time.monotonic() + 10
    while True:
        try:
            cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (3, 13, 1)")
            break
        except mdriver.FencedWriteError:
            if time.monotonic() > deadline:
                pytest.fail("unfencing did not arrive through the etcd watch")
            time.sleep(0.05)
    conn.commit()
    conn.close()
    mdriver.close_all()
    assert [c for c in list_clients(url) if c.kind == "driver"] == []  # unregistered on close
