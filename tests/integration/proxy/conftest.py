"""Proxy fixtures: a real ProxyServer in front of the real 32 x 32 cluster.

``proxy`` (session) serves ``mariadb_cluster``'s config; ``make_proxy(**changes)``
starts another one with config changes (TLS, limits, auth plugin) for one test.
The server runs on its own event loop in a thread, so tests use ordinary
blocking clients.
"""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from mdriver.config import load_config
from mdriver.sandbox.cluster import free_port
from proxy.server import ServerOptions

from proxy_harness import RunningProxy


def derived_config(cluster, tmp_path, name: str = "proxy.yaml", datasources: dict | None = None, **proxy_changes):
    """The cluster's config with ``proxy:`` keys changed (e.g. tls={...}, idle_timeout=1);
    ``datasources={"ds0": {"max_connections": 1}}`` changes datasource keys; ``top_<key>`` a top-level key."""
    with open(cluster.config_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    for ds, changes in (datasources or {}).items():
        doc["datasources"][ds].update(changes)
    doc.setdefault("proxy", {})
    doc["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    doc["proxy"].pop("metrics", None)
    for key, value in proxy_changes.items():
        if key.startswith("top_"):
            doc[key[4:]] = value
        else:
            doc["proxy"][key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return load_config(str(path))


@pytest.fixture(scope="session")
def proxy(mariadb_cluster):
    running = RunningProxy(mariadb_cluster.config)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def make_proxy(mariadb_cluster, tmp_path):
    started: list[RunningProxy] = []

    def make(options: ServerOptions | None = None, config=None, **changes) -> RunningProxy:
        cfg = config or (derived_config(mariadb_cluster, tmp_path, f"proxy{len(started)}.yaml", **changes)
                         if changes else mariadb_cluster.config)
        options = options or ServerOptions(recovery_interval=0)
        if options.listen_port is None:
            # never the shared proxy's ports
            options = dataclasses.replace(options, listen_port=0, metrics=options.metrics and cfg is not mariadb_cluster.config)
        p = RunningProxy(cfg, options)
        started.append(p)
        return p

    try:
        yield make
    finally:
        for p in started:
            p.stop()
