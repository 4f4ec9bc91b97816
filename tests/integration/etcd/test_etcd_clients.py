"""Client registration under leases, and the migrator's fence waiting for acknowledgements."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from etcd_helpers import BASE_TEXT, variant
from mdriver.config.clients import AckTimeoutError, ClientRegistration, list_clients, wait_for_ack
from mdriver.config.publish import publish
from mdriver.config.sources import ConfigSourceError

pytestmark = pytest.mark.etcd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_registration_lists_acks_and_leaves(source, make_registration):
    rev = publish(source, BASE_TEXT).revision
    reg = make_registration(source.url, "proxy", ttl=5)
    assert reg.wait_registered(2)
    (info,) = list_clients(source.url)
    assert (info.id, info.kind, info.pid, info.revision) == (reg.id, "proxy", os.getpid(), "")
    assert info.lease and info.started == pytest.approx(reg.started)

    reg.ack(rev)
    assert reg.wait_registered(2)
    assert list_clients(source.url)[0].revision == rev
    reg.stop()
    assert list_clients(source.url) == []  # revoked: gone at once, not after the TTL


def test_fence_returns_once_every_live_client_has_applied(source, make_registration, make_watcher):
    r1 = publish(source, BASE_TEXT).revision
    regs = []
    for kind in ("driver", "proxy"):
        watcher = make_watcher(source.url)
        reg = make_registration(source.url, kind, revision=watcher.revision)
        watcher.add_listener(lambda new, old, reg=reg: reg.ack(new.revision))
        regs.append(reg)
    assert all(r.wait_registered(2) for r in regs)
    assert wait_for_ack(source.url, r1, timeout=1)

    fence = publish(source, variant(1), message="writes: fenced").revision
    started = time.monotonic()
    acked = wait_for_ack(source.url, fence, timeout=3)
    assert time.monotonic() - started < 1.5
    assert sorted(c.kind for c in acked) == ["driver", "proxy"] and all(c.revision == fence for c in acked)


def test_a_client_that_does_not_acknowledge_blocks_until_timeout_named(source, make_registration):
    r1 = publish(source, BASE_TEXT).revision
    good = make_registration(source.url, "driver", revision=r1)
    lagging = make_registration(source.url, "proxy", revision=r1)
    r2 = publish(source, variant(2)).revision
    good.ack(r2)
    assert good.wait_registered(2) and lagging.wait_registered(2)
    started = time.monotonic()
    with pytest.raises(AckTimeoutError) as e:
        wait_for_ack(source.url, r2, timeout=0.6)
    assert 0.6 <= time.monotonic() - started < 2
    assert [c.id for c in e.value.laggards] == [lagging.id]
    assert f"1 live client(s) did not apply revision {r2} within 0.6 s: proxy {lagging.id}" in str(e.value)
    assert f"at revision {r1}" in str(e.value)


FROZEN_CLIENT = textwrap.dedent("""
    import sys, time
    from mdriver.config.clients import ClientRegistration
    reg = ClientRegistration(sys.argv[1], "proxy", ttl=2, revision=sys.argv[2]).start()
    assert reg.wait_registered(5)
    print(reg.id, flush=True)
    time.sleep(60)
""")


def test_a_frozen_client_blocks_the_fence_until_its_lease_expires(source, make_registration):
    r1 = publish(source, BASE_TEXT).revision
    live = make_registration(source.url, "driver", ttl=2, revision=r1)
    proc = subprocess.Popen([sys.executable, "-c", FROZEN_CLIENT, source.url, r1], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        frozen_id = proc.stdout.readline().strip()
        assert frozen_id.startswith("proxy-"), frozen_id
        os.kill(proc.pid, signal.SIGSTOP)  # alive but doing nothing: no acks, no keepalives
        fence = publish(source, variant(3), message="writes: fenced").revision
        live.ack(fence)
        assert live.wait_registered(2)

        with pytest.raises(AckTimeoutError, match=f"proxy {frozen_id} .*at revision {r1}"):
            wait_for_ack(source.url, fence, timeout=0.3)
        started = time.monotonic()
        acked = wait_for_ack(source.url, fence, timeout=10)
        waited = time.monotonic() - started
        assert [c.id for c in acked] == [live.id]
        assert 0.5 < waited < 4.5, waited  # about the 2 s lease, minus what had already elapsed
        assert frozen_id not in [c.id for c in list_clients(source.url)]
    finally:
        proc.kill()
        proc.wait(10)


def test_registration_comes_back_after_its_lease_is_lost(source, make_registration):
    reg = make_registration(source.url, "driver", ttl=2, revision="7")
    assert reg.wait_registered(2)
    source.revoke(list_clients(source.url)[0].lease)  # as if etcd had been unreachable past the TTL
    assert list_clients(source.url) == []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not list_clients(source.url):
        time.sleep(0.05)
    (info,) = list_clients(source.url)
    assert info.id == reg.id and info.revision == "7"


def test_registration_outlives_an_unexpected_error(source, make_registration):
    # seen on PyPy: requests read os.environ while another thread changed it, and KeyError killed the thread
    reg = make_registration(source.url, "proxy", ttl=2, revision="1", retry_interval=0.1)
    assert reg.wait_registered(2)
    real_put = reg._source.put  # noqa: SLF001
    failures = []

    def put_failing_once(*args, **kw):
        if not failures:
            failures.append(1)
            raise KeyError("PYTEST_CURRENT_TEST")
        return real_put(*args, **kw)

    reg._source.put = put_failing_once  # noqa: SLF001 - the fault: one surprise inside the thread
    reg.ack("2")
    assert reg.wait_registered(3), reg.last_error
    assert failures and [c.revision for c in list_clients(source.url)] == ["2"]


def test_registration_survives_an_etcd_restart(source, etcd_server, make_registration):
    reg = make_registration(source.url, "proxy", ttl=3, revision="1", retry_interval=0.1)
    assert reg.wait_registered(2)
    etcd_server.kill()
    try:
        reg.ack("2")  # never blocks, even with etcd down
        time.sleep(0.3)
        assert not reg.registered and "unreachable" in (reg.last_error or "")
    finally:
        etcd_server.start()
    assert reg.wait_registered(3)
    assert [c.revision for c in list_clients(source.url)] == ["2"]


def test_unreadable_client_entries_count_as_not_acknowledged(source):
    source.put(source.key("clients", "garbage"), "{not json")
    (info,) = list_clients(source.url)
    assert info.id == "garbage" and not info.valid
    with pytest.raises(AckTimeoutError, match=r"\? garbage"):
        wait_for_ack(source.url, 1, timeout=0.2)


def test_registration_needs_etcd(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(BASE_TEXT)
    assert ClientRegistration.for_source(str(path), "driver") is None
    with pytest.raises(ConfigSourceError, match="client registration needs an etcd source"):
        ClientRegistration(str(path), "driver")
    with pytest.raises(ValueError, match="ttl must be at least 2"):
        ClientRegistration("etcd://127.0.0.1:1/x", "driver", ttl=1)
