"""The etcd fixture is a real etcd that keeps its data across a kill and restart."""
from __future__ import annotations

import etcd3gw
import pytest

pytestmark = pytest.mark.etcd


def test_put_get_survives_kill_and_restart(etcd_server, etcd_prefix):
    assert etcd_server.client_url == f"http://{etcd_server.host}:{etcd_server.port}"
    assert etcd_prefix.startswith("/mdriver-test-")
    client = etcd3gw.client(host=etcd_server.host, port=etcd_server.port)
    key = f"{etcd_prefix}/config"
    assert client.put(key, "v1")
    assert client.get(key) == [b"v1"]
    assert client.get(f"{etcd_prefix}/absent") == []

    etcd_server.kill()
    assert not etcd_server.is_alive()
    with pytest.raises(Exception):
        etcd3gw.client(host=etcd_server.host, port=etcd_server.port, timeout=1).get(key)
    etcd_server.start()
    assert client.get(key) == [b"v1"]
