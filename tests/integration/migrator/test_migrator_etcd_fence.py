"""cutover-writes with the config in etcd: the fence waits for every registered driver and proxy to
acknowledge it, and a client that never does makes the cutover fail closed (writes go back)."""
import time

import pytest
import yaml

import mdriver
from mdriver.config.clients import ClientRegistration, list_clients
from mdriver.config.etcd import EtcdSource
from mdriver.config.publish import publish

pytestmark = pytest.mark.etcd


@pytest.fixture
def etcd_harness(harness, etcd_server, etcd_prefix):
    url = f"etcd://{etcd_server.host}:{etcd_server.port}{etcd_prefix}"
    publish(EtcdSource.from_url(url), yaml.safe_dump(yaml.safe_load(open(harness.config_path)), sort_keys=False))
    harness.config_path = url
    return harness


def test_fence_waits_for_acknowledgements_and_fails_closed_on_a_laggard(etcd_harness):
    h = etcd_harness
    h.fill_source(500)
    h.cli("plan", h.logical)
    p = h.start()
    h.caught_up(p)
    h.cli("verify", h.logical)
    h.cli("cutover-reads", h.logical, "--to", "shards")

    # A real driver registers itself in etcd and acknowledges every revision it applies.
    conn = mdriver.connect(config=h.config_path, schema="app", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM user_relation WHERE uid = 1")
        h.wait(lambda: any(c.kind == "driver" for c in list_clients(EtcdSource.from_url(h.config_path))), 20,
               "the driver to register")
        out = h.cli("cutover-writes", h.logical, "--timeout", "20").stdout
        assert "acknowledged revision" in out and "writes -> shards" in out
        assert h.migration.writes == "shards"

        # A client that registered but never applies new revisions: the fence cannot be confirmed.
        laggard = ClientRegistration(EtcdSource.from_url(h.config_path), "proxy", ttl=30, revision="1").start()
        try:
            assert laggard.wait_registered(10)
            started = time.monotonic()
            failed = h.cli("rollback-writes", h.logical, "--timeout", "3", check=False)
            assert failed.returncode != 0 and time.monotonic() - started < 30
            assert "did not apply revision" in failed.stderr and laggard.id in failed.stderr
            assert "Traceback" not in failed.stderr
            assert h.migration.writes == "shards"  # the fence was lifted: writes stay where they were
        finally:
            laggard.stop()
        out = h.cli("rollback-writes", h.logical, "--timeout", "20").stdout
        assert "writes -> source" in out
    finally:
        conn.close()
    h.caught_up(p)
    assert h.compare()["bad"] == 0
    assert h.stop(p) == 0
