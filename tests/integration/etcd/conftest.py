"""Fixtures for the config-center tests: URLs, and watchers/registrations/relays that are always stopped."""
from __future__ import annotations

import pytest

from etcd_helpers import Relay
from mdriver.config.clients import ClientRegistration
from mdriver.config.etcd import EtcdSource
from mdriver.config.watch import ConfigWatcher


@pytest.fixture
def etcd_url(etcd_server, etcd_prefix) -> str:
    return f"etcd://{etcd_server.host}:{etcd_server.port}{etcd_prefix}"


@pytest.fixture
def source(etcd_url) -> EtcdSource:
    return EtcdSource.from_url(etcd_url)


@pytest.fixture
def make_watcher():
    """``make_watcher(url, **kw)``: a started ConfigWatcher with fast backoff, stopped after the test."""
    made: list[ConfigWatcher] = []

    def make(url, **kw) -> ConfigWatcher:
        kw.setdefault("min_backoff", 0.05)
        kw.setdefault("max_backoff", 0.5)
        watcher = ConfigWatcher(url, **kw)
        made.append(watcher)
        return watcher.start()

    yield make
    for watcher in made:
        watcher.stop()


@pytest.fixture
def make_registration():
    made: list[ClientRegistration] = []

    def make(url, kind, **kw) -> ClientRegistration:
        reg = ClientRegistration(url, kind, **kw)
        made.append(reg)
        return reg.start()

    yield make
    for reg in made:
        reg.stop()


@pytest.fixture
def relay(etcd_server):
    r = Relay((etcd_server.host, etcd_server.port))
    yield r
    r.cut()
