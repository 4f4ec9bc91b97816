"""Shared pieces of the reliability suite: the proxy as a process, config variants, small
layouts on extra servers, data sets on both sides, whole-table comparisons and errnos.

The data set and the query generators of the router's differential suite are
reused (loaded from their files, as those directories are not packages).
"""
from __future__ import annotations

import datetime
import decimal
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import pymysql
import yaml
from pymysql.constants import CLIENT

import mdriver
from mdriver.config import load_config
from mdriver.sandbox.cluster import free_port
from mdriver.sandbox.layout import create_layout, plan_layout, read_schema_file
from mdriver.sharding import all_locations, locate

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "examples" / "schema.sql"
PROXY_USER, PROXY_PASSWORD = "app", "app-secret"
TABLE_COLUMNS = {
    "user_relation": ("id", "uid", "target_uid", "relation_type", "remark", "score", "created_at"),
    "user_fans": ("id", "uid", "fan_uid", "level", "created_at"),
    "region": ("region_id", "name"),
}
KEY_COLUMN = {"user_relation": "id", "user_fans": "id", "region": "region_id"}


def load_module(relative: str, name: str):
    """Import a helper module of another test directory by path (once per process)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def router_data():
    """The deterministic data set of tests/integration/router (3000 + 2000 + 10 rows)."""
    return load_module("tests/integration/router/data.py", "mdriver_router_testdata")


def router_query_strategies():
    """The hypothesis SELECT generators of tests/integration/router/test_generated_queries.py."""
    return load_module("tests/integration/router/test_generated_queries.py", "mdriver_router_generated_queries")


def wait_until(predicate: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


def errno_of(e: BaseException) -> int:
    args = getattr(e, "args", ())
    return args[0] if args and isinstance(args[0], int) else -1


def message_of(e: BaseException) -> str:
    args = getattr(e, "args", ())
    return str(args[1]) if len(args) > 1 else str(e)


DB_ERRORS = (mdriver.Error, pymysql.err.Error)


# -- config variants ---------------------------------------------------------------------

def read_doc(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def write_doc(doc: dict, path: Path) -> str:
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return str(path)


def variant_config(base_path: str, path: Path, edit: Callable[[dict], None] | None = None,
                   timeouts: float | None = 2.0) -> str:
    """A copy of a config with short datasource timeouts, a free proxy port and no metrics port."""
    doc = read_doc(base_path)
    if timeouts is not None:
        for ds in doc["datasources"].values():
            ds["connect_timeout"] = timeouts
            ds["read_timeout"] = timeouts
    doc.setdefault("proxy", {})
    doc["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
    doc["proxy"].pop("metrics", None)
    if timeouts is not None:
        doc["proxy"]["backend_timeout"] = timeouts
    if edit is not None:
        edit(doc)
    return write_doc(doc, path)


def generous_timeouts(doc: dict) -> None:
    """For tests of correctness, not of timeouts: a scatter over 1024 tables may be slow on a busy machine."""
    for ds in doc["datasources"].values():
        ds["read_timeout"] = 120
    doc.setdefault("proxy", {})["backend_timeout"] = 120


def small_layout_doc(servers: dict, databases: int = 4, tables_per_database: int = 4, **ds_options) -> dict:
    """user_relation/user_fans in ``databases`` x ``tables_per_database``, half on each of two servers."""
    names = list(servers)
    half = databases // 2
    placement = {names[0]: f"0-{half - 1}", names[1]: f"{half}-{databases - 1}"}
    sharded = {"shard_key": "uid", "algorithm": "mod", "databases": databases,
               "tables_per_database": tables_per_database, "placement": placement}
    return {
        "version": 1,
        "datasources": {n: {"host": s.host, "port": s.port, "user": "root", "password": "", **ds_options}
                        for n, s in servers.items()},
        "schemas": {"app": {"datasource": names[0], "tables": {
            "user_relation": dict(sharded), "user_fans": dict(sharded), "region": {"broadcast": True}},
            "binding": [["user_relation", "user_fans"]]}},
        "transaction_mode": "xa",
        "proxy": {"listen": f"127.0.0.1:{free_port()}",
                  "users": {PROXY_USER: {"password": PROXY_PASSWORD, "schemas": ["app"]}}},
    }


def create_small_layout(config_path: str, servers: dict) -> None:
    """Every physical database and table of the config on servers made by ``make_mariadb``."""
    config = load_config(config_path)
    create_layout(plan_layout(config, read_schema_file(str(SCHEMA_FILE))),
                  lambda ds, **kw: servers[ds].connect(**kw))


# -- the proxy as a process ------------------------------------------------------------------

class ProxyProcess:
    """``mdriver-proxy --config FILE`` as operators run it, with its log in a file."""

    def __init__(self, config_path: str, log_path: Path, *extra: str, log_level: str = "INFO", port: int | None = None):
        self.config_path = config_path
        self.port = port or load_config(config_path).proxy.listen_port
        self.log_path = log_path
        self._log = open(log_path, "w+", encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "--config", config_path, "--listen", f"127.0.0.1:{self.port}",
             "--log-level", log_level, *extra],
            cwd=str(ROOT), env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mdriver-proxy did not start:\n{self.output()}")
                time.sleep(0.05)

    def connect(self, user: str = PROXY_USER, password: str = PROXY_PASSWORD, database: str | None = "app",
                autocommit: bool = True, **kw) -> pymysql.connections.Connection:
        kw.setdefault("connect_timeout", 10)
        kw.setdefault("read_timeout", 60)
        return pymysql.connect(host="127.0.0.1", port=self.port, user=user, password=password, database=database,
                               autocommit=autocommit, **kw)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def status(self) -> dict:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW MDRIVER STATUS")
                return dict(cur.fetchall())
        finally:
            conn.close()

    def output(self) -> str:
        try:
            return Path(self.log_path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode


# -- data on both sides ----------------------------------------------------------------------

def empty_tables(cluster, tables=("user_relation", "user_fans", "region")) -> None:
    for table in tables:
        cluster.truncate("app", table)


def load_router_dataset(cluster) -> dict[str, int]:
    """Empty the tables, then load the router data set into app_ref (PyMySQL) and the shards (the driver)."""
    empty_tables(cluster)
    data = router_data().dataset()
    ref = cluster.connect(cluster.reference_datasource, cluster.reference_database)
    conn = mdriver.connect(config=cluster.config_path, schema="app", autocommit=True, recovery_interval=0)
    try:
        for table, (cols, rows) in data.items():
            sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"
            with ref.cursor() as cur:
                cur.executemany(sql, rows)
            with conn.cursor() as cur:
                cur.executemany(sql, rows)
    finally:
        conn.close()
        ref.close()
    return {table: len(rows) for table, (_, rows) in data.items()}


def canon(v: Any) -> Any:
    """Values compared exactly, the scale of decimals included."""
    if isinstance(v, decimal.Decimal):
        return ("D", str(v))
    if isinstance(v, float):
        return ("F", float(f"{v:.12g}"))
    if isinstance(v, (datetime.datetime, datetime.date, datetime.timedelta)):
        return ("T", str(v))
    if isinstance(v, (bytes, bytearray)):
        return ("B", bytes(v))
    return v


def canon_rows(rows) -> list[tuple]:
    return [tuple(canon(v) for v in r) for r in rows or ()]


def same_rows(got, want, ordered: bool) -> bool:
    g, w = canon_rows(got), canon_rows(want)
    return g == w if ordered else Counter(g) == Counter(w)


def reference_rows(cluster, table: str) -> dict:
    conn = cluster.connect(cluster.reference_datasource, cluster.reference_database)
    cols = TABLE_COLUMNS[table]
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(cols)} FROM `{table}`")
            return {r[0]: tuple(canon(v) for v in r) for r in cur.fetchall()}
    finally:
        conn.close()


def shard_rows(config, connect: Callable[..., Any], table: str) -> dict:
    """key -> [(datasource, database, physical table, row), ...] read straight from every physical copy."""
    schema = config.schemas["app"]
    cols = TABLE_COLUMNS[table]
    rule = schema.tables[table]
    by_db: dict[tuple[str, str], list[str]] = defaultdict(list)
    for loc in all_locations(schema, rule):  # broadcast tables: every copy
        by_db[(loc.datasource, loc.database)].append(loc.table)
    out: dict = defaultdict(list)
    per_ds: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    for (ds, db), tables in by_db.items():
        per_ds[ds].append((db, tables))
    for ds, items in per_ds.items():
        conn = connect(ds)
        try:
            with conn.cursor() as cur:
                for db, tables in items:
                    cur.execute(" UNION ALL ".join(
                        f"SELECT '{t}', {', '.join(cols)} FROM `{db}`.`{t}`" for t in tables))
                    for r in cur.fetchall():
                        out[r[1]].append((ds, db, r[0], tuple(canon(v) for v in r[1:])))
        finally:
            conn.close()
    return out


def compare_with_reference(cluster, table: str) -> dict:
    """Lost, extra, wrong and misplaced rows of the sharded table against app_ref (by key)."""
    config = cluster.config
    schema = config.schemas["app"]
    rule = schema.tables[table]
    want = reference_rows(cluster, table)
    got = shard_rows(config, cluster.connect, table)
    copies = len(all_locations(schema, rule)) if rule.broadcast else 1
    lost = sorted(k for k in want if k not in got)
    extra = sorted(k for k, found in got.items() if k not in want or len(found) != copies)
    wrong, misplaced = [], []
    for k, row in want.items():
        for ds, db, t, shard_row in got.get(k, ()):
            if shard_row != row:
                wrong.append(k)
                break
            if not rule.broadcast:
                loc = locate(schema, rule, row[1])  # (id, uid, ...): uid is the shard key
                if (loc.datasource, loc.database, loc.table) != (ds, db, t):
                    misplaced.append(k)
    return {"table": table, "rows": len(want), "lost": lost[:10], "extra": extra[:10], "wrong": wrong[:10],
            "misplaced": misplaced[:10], "bad": len(lost) + len(extra) + len(wrong) + len(misplaced)}


# -- the backends' general log -----------------------------------------------------------------

class GeneralLog:
    """Every statement the backends receive, in ``mysql.general_log``, while the context is open."""

    def __init__(self, connect_root: Callable[[str], Any], datasources):
        self.connect_root = connect_root
        self.datasources = list(datasources)

    def _run(self, ds: str, *statements: str):
        conn = self.connect_root(ds)
        try:
            with conn.cursor() as cur:
                for s in statements:
                    cur.execute(s)
                return cur.fetchall()
        finally:
            conn.close()

    def __enter__(self) -> "GeneralLog":
        for ds in self.datasources:
            self._run(ds, "SET GLOBAL general_log = OFF", "TRUNCATE TABLE mysql.general_log",
                      "SET GLOBAL log_output = 'TABLE'", "SET GLOBAL general_log = ON")
        return self

    def __exit__(self, *exc) -> None:
        for ds in self.datasources:
            self._run(ds, "SET GLOBAL general_log = OFF", "TRUNCATE TABLE mysql.general_log")

    def statements_with(self, marker: str) -> list[tuple[str, str, str]]:
        """(datasource, command, text) of every logged statement containing ``marker``.

        The marker is searched for as CONCAT of its halves, so this query's own
        log entry does not match.
        """
        half = len(marker) // 2
        found = []
        for ds in self.datasources:
            rows = self._run(ds, "SELECT command_type, CONVERT(argument USING utf8mb4) FROM mysql.general_log "
                                 f"WHERE CONVERT(argument USING utf8mb4) LIKE CONCAT('%', '{marker[:half]}', "
                                 f"'{marker[half:]}', '%')")
            found += [(ds, r[0], r[1]) for r in rows]
        return found


def multi_statement_client_flag() -> int:
    return CLIENT.MULTI_STATEMENTS
