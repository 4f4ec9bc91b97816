"""Shared fixtures: real MariaDB servers and a real etcd, started by the test run itself.

Servers start lazily (only when a test asks for them), on free ports in temp
dirs, and are stopped at the end even when tests fail; they are also tied to
the pytest process, so a hard kill of pytest leaves nothing running.

- ``mariadb_cluster`` (session): two MariaDB servers with binlog on, the full
  32 x 32 layout of config/sharding.yaml from examples/schema.sql, and the
  unsharded reference database ``app_ref`` on ds0 holding the same tables.
- ``make_mariadb`` (function): ``make_mariadb(name, **server_options)`` -> a fresh extra server.
- ``etcd_server`` (session) and ``etcd_prefix`` (function).

Shared servers that a test stops or kills are restarted after that test.
Slow variants are marked ``@pytest.mark.slow`` and run only with ``--long``.
"""
from __future__ import annotations

import itertools
import logging
import os
import shutil
import time
import uuid
from collections import defaultdict

import pytest
from pymysql.constants import CLIENT

from mdriver.config import Config, load_config
from mdriver.sandbox.cluster import MariaDBInstance, SandboxError, find_binaries, free_port, start_all, stop_all
from mdriver.sandbox.configfile import write_config_with_ports
from mdriver.sandbox.etcd import EtcdServer
from mdriver.sandbox.layout import create_layout, plan_layout, plan_reference, quote_ident, read_schema_file, run_batch
from mdriver.sharding import all_locations, home_location

log = logging.getLogger("tests.fixtures")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "config", "sharding.yaml")
DEFAULT_SCHEMA = os.path.join(ROOT, "examples", "schema.sql")
REFERENCE_DATABASE = "app_ref"

_shared_servers_key = pytest.StashKey[list]()


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true", default=False, help="also run tests marked slow (long variants)")


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: needs real MariaDB servers started by the test run")
    config.addinivalue_line("markers", "etcd: needs a real etcd started by the test run")
    config.addinivalue_line("markers", "slow: long variants, only with --long")
    config.stash[_shared_servers_key] = []


def pytest_collection_modifyitems(config, items):
    integration_dir = os.path.join(ROOT, "tests", "integration") + os.sep
    skip_slow = pytest.mark.skip(reason="slow variant: run with --long")
    for item in items:
        if str(item.path).startswith(integration_dir):
            item.add_marker(pytest.mark.integration)
        if "slow" in item.keywords and not config.getoption("--long"):
            item.add_marker(skip_slow)


# -- MariaDB -------------------------------------------------------------------

class MariaDBCluster:
    """The servers of one config, with its physical layout and a reference database."""

    def __init__(self, config_path: str, config: Config, instances: dict[str, MariaDBInstance], reference_database: str):
        self.config_path = config_path
        self.config = config
        self.instances = instances
        self.reference_database = reference_database
        self.reference_datasource = next(iter(config.schemas.values())).datasource

    def __repr__(self) -> str:
        return f"MariaDBCluster({self.config_path}, {list(self.instances.values())})"

    def connect(self, ds_name: str, database: str | None = None, **kw):
        """A PyMySQL connection to one datasource as root (autocommit on unless given)."""
        return self.instances[ds_name].connect(database, **kw)

    def truncate(self, schema: str, table: str, reference: bool = True) -> None:
        """Empty every physical copy of a logical table (and its ``app_ref`` copy unless ``reference=False``).

        Uses DELETE, which is fast on the nearly empty tables of tests (TRUNCATE
        rebuilds each of the 1024 tablespaces); AUTO_INCREMENT is not reset.
        """
        sch = self.config.schemas[schema]
        rule = sch.tables.get(table)
        locations = all_locations(sch, rule) if rule is not None else [home_location(sch, table)]
        per_ds: dict[str, list[str]] = defaultdict(list)
        for loc in locations:
            per_ds[loc.datasource].append(f"DELETE FROM {quote_ident(loc.database)}.{quote_ident(loc.table)}")
        if reference:
            per_ds[self.reference_datasource].append(f"DELETE FROM {quote_ident(self.reference_database)}.{quote_ident(table)}")
        for ds, statements in per_ds.items():
            conn = self.connect(ds, client_flag=CLIENT.MULTI_STATEMENTS)
            try:
                run_batch(conn, statements)
            finally:
                conn.close()


def _discard_data(inst: MariaDBInstance) -> None:
    """Free the disk of a stopped server but keep its log for post-mortems."""
    if inst.is_alive() or not os.path.isdir(inst.datadir):
        return
    shutil.rmtree(inst.tmpdir, ignore_errors=True)
    for entry in os.listdir(inst.datadir):
        if entry.endswith(".err"):
            continue
        path = os.path.join(inst.datadir, entry)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


@pytest.fixture(scope="session")
def _mariadb_binaries():
    try:
        return find_binaries()
    except SandboxError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def _server_ids():
    return itertools.count(1)


@pytest.fixture(scope="session")
def mariadb_cluster(tmp_path_factory, pytestconfig, _mariadb_binaries, _server_ids):
    base = tmp_path_factory.mktemp("mariadb_cluster")
    config = load_config(DEFAULT_CONFIG)
    instances = {
        name: MariaDBInstance(name, str(base / name), server_id=next(_server_ids), die_with_parent=True, binaries=_mariadb_binaries)
        for name in config.datasources
    }
    started = time.monotonic()
    try:
        start_all(instances.values())
        config_path = write_config_with_ports(
            DEFAULT_CONFIG,
            str(base / "sharding.yaml"),
            {name: inst.port for name, inst in instances.items()},
            proxy_listen=f"127.0.0.1:{free_port()}",
            metrics=f"127.0.0.1:{free_port()}",
        )
        config = load_config(config_path)
        tables = read_schema_file(DEFAULT_SCHEMA)
        cluster = MariaDBCluster(config_path, config, instances, REFERENCE_DATABASE)

        def connect(ds, **kw):
            return instances[ds].connect(**kw)

        create_layout(plan_layout(config, tables), connect)
        create_layout(plan_reference(cluster.reference_datasource, REFERENCE_DATABASE, tables), connect)
        log.info("mariadb_cluster ready in %.1f s: %s", time.monotonic() - started, cluster)
        pytestconfig.stash[_shared_servers_key].extend(instances.values())
        yield cluster
    finally:
        stop_all(instances.values())
        for inst in instances.values():
            _discard_data(inst)


@pytest.fixture
def make_mariadb(tmp_path, _mariadb_binaries, _server_ids):
    """``make_mariadb(name, **server_options)``: a fresh server (binlog ROW/FULL/FULL), stopped after the test.

    Options are mariadbd options (``binlog_format="MIXED"``, ``log_bin=None``
    to turn one off); ``port=`` and ``server_id=`` are taken when given.
    """
    made: list[MariaDBInstance] = []

    def make(name: str, **server_options) -> MariaDBInstance:
        if any(i.name == name for i in made):
            raise ValueError(f"make_mariadb: a server named {name!r} already exists in this test")
        port = server_options.pop("port", None)
        server_id = server_options.pop("server_id", None) or next(_server_ids)
        inst = MariaDBInstance(
            name, str(tmp_path / f"mariadb-{name}"), port=port, server_id=server_id,
            options=server_options, die_with_parent=True, binaries=_mariadb_binaries,
        )
        made.append(inst)
        inst.start()
        return inst

    try:
        yield make
    finally:
        stop_all(made)
        for inst in made:
            _discard_data(inst)


# -- etcd ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory, pytestconfig):
    """A real single-member etcd 3.4: ``.host .port .client_url .start() .stop() .kill()``."""
    base = tmp_path_factory.mktemp("etcd")
    server = EtcdServer(str(base / "data"), die_with_parent=True)
    try:
        try:
            server.start()
        except SandboxError as e:
            pytest.fail(str(e), pytrace=False)
        pytestconfig.stash[_shared_servers_key].append(server)
        yield server
    finally:
        server.stop()


@pytest.fixture
def etcd_prefix() -> str:
    """A key prefix no other test uses, e.g. ``/mdriver-test-ab12cd``."""
    return f"/mdriver-test-{uuid.uuid4().hex[:6]}"


# -- keep shared servers up between tests -------------------------------------------

@pytest.fixture(autouse=True)
def _revive_shared_servers(pytestconfig):
    """A test that stops or kills a shared server must not break the tests after it."""
    yield
    for server in pytestconfig.stash[_shared_servers_key]:
        if not server.is_alive():
            log.warning("restarting %r, stopped by the previous test", server)
            server.start()
