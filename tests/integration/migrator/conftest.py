"""Fixtures of the migrator tests: a harness per test, cleaned up even when the test fails."""
import pytest

from migrator_harness import Harness


@pytest.fixture
def harness(mariadb_cluster, tmp_path):
    """``app.user_relation`` migrating from database ``app`` on ds0 into the cluster's 32 x 32 shards."""
    h = Harness(mariadb_cluster, tmp_path)
    h.cleanup()
    h.create_source()
    try:
        yield h
    finally:
        h.cleanup()
