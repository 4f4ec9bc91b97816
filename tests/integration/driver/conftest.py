"""Fixtures of the driver tests: mdriver connections to the shared session cluster."""
import pytest

import mdriver


@pytest.fixture(autouse=True)
def _close_runtimes():
    """Every test starts with fresh pools and watchers, and leaves none behind."""
    yield
    mdriver.close_all()


@pytest.fixture
def connect(mariadb_cluster):
    """``connect(**kw)`` -> an mdriver connection to schema ``app`` of the cluster; closed after the test."""
    opened = []

    def make(**kw):
        kw.setdefault("config", mariadb_cluster.config_path)
        kw.setdefault("schema", "app")
        conn = mdriver.connect(**kw)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()
