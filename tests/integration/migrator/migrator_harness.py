"""Helpers for the migrator's integration tests: a config with a migration, the CLI as a
subprocess, a random workload on the source, and an independent row-by-row check.

The check does not use the verifier: it reads every source row and every row of
every physical table and compares them by primary key, and checks that each
shard row sits in the physical table its shard key maps to.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import pymysql
import yaml
from pymysql.constants import CLIENT

from mdriver.config import load_config
from mdriver.sandbox.layout import read_schema_file
from mdriver.sharding import all_locations, locate
from migrator import checkpoint as ckpt
from migrator.state import CONTROL_DB, Position, read_state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

USER_RELATION = read_schema_file(os.path.join(ROOT, "examples", "schema.sql"))["user_relation"]


USER_RELATION_COLUMNS = "uid, target_uid, relation_type, remark, score, created_at"


class Harness:
    """One migration of ``app.<table>`` from database ``source_db`` on ``source_ds`` in the test cluster."""

    def __init__(self, cluster, tmp_path, table: str = "user_relation", source_ds: str = "ds0", source_db: str = "app",
                 source_table: str | None = None, extra_tables: dict | None = None, extra_servers: dict | None = None,
                 extra_datasources: dict | None = None):
        self.cluster = cluster
        self.tmp = tmp_path
        self.table = table
        self.logical = f"app.{table}"
        self.source_ds = source_ds
        self.source_db = source_db
        self.source_table = source_table or table
        self.servers = dict(extra_servers or {})  # datasource name -> MariaDBInstance outside the cluster
        doc = yaml.safe_load(open(cluster.config_path))
        for name, inst in self.servers.items():
            doc["datasources"][name] = {"host": inst.host, "port": inst.port, "user": "root", "password": ""}
        doc["datasources"].update(extra_datasources or {})
        # The cluster's metrics port was free when the cluster started, not now; no test here reads metrics.
        doc.get("proxy", {}).pop("metrics", None)
        tables = doc["schemas"]["app"]["tables"]
        for name, rule in (extra_tables or {}).items():
            tables[name] = rule
        tables[table]["migration"] = {"source": {"datasource": source_ds, "database": source_db,
                                                 "table": self.source_table}}
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.config_path = str(tmp_path / "migration.yaml")
        with open(self.config_path, "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
        self.processes: list[subprocess.Popen] = []

    # -- config and servers ---------------------------------------------------------------

    @property
    def targets(self) -> list[str]:
        schema = self.config.schemas["app"]
        return sorted({p.datasource for p in schema.tables[self.table].placement})

    @property
    def config(self):
        return load_config(self.config_path)

    def config_identity(self):
        from migrator.state import resolve

        return resolve(self.config, self.logical)

    @property
    def migration(self):
        return self.config.schemas["app"].tables[self.table].migration

    def connect(self, ds: str | None = None, **kw) -> pymysql.connections.Connection:
        ds = ds or self.source_ds
        if ds in self.servers:
            return self.servers[ds].connect(**kw)
        return self.cluster.connect(ds, **kw)

    def source_sql(self, *statements: str) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                for s in statements:
                    cur.execute(s)
        finally:
            conn.close()

    def create_source(self, ddl: str | None = None) -> None:
        """The source table: ``ddl`` (``{name}`` where the table goes), or the example schema's user_relation."""
        self.source_sql(f"CREATE DATABASE IF NOT EXISTS `{self.source_db}`",
                        f"DROP TABLE IF EXISTS `{self.source_db}`.`{self.source_table}`",
                        USER_RELATION.for_table(self.source_table, self.source_db) if ddl is None
                        else ddl.format(name=f"`{self.source_db}`.`{self.source_table}`"))

    def fill_source(self, rows: int, seed: int = 1) -> None:
        rnd = random.Random(seed)
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                for start in range(0, rows, 2000):
                    batch = [(i + 1, rnd.randrange(1, 10**7), rnd.randrange(1, 10**7), rnd.randrange(1, 4),
                              None if i % 7 == 0 else f"r{i} ✓", None if i % 5 == 0 else rnd.randrange(0, 10**6) / 100)
                             for i in range(start, min(rows, start + 2000))]
                    cur.executemany(f"INSERT INTO `{self.source_db}`.`{self.source_table}` (id, uid, target_uid, "
                                    "relation_type, remark, score) VALUES (%s, %s, %s, %s, %s, %s)", batch)
        finally:
            conn.close()

    def master_position(self, ds: str | None = None) -> Position:
        conn = self.connect(ds)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW MASTER STATUS")
                f, p = cur.fetchone()[:2]
                return Position(f, int(p))
        finally:
            conn.close()

    # -- the CLI -------------------------------------------------------------------------------

    def env(self, crash_at: str | None = None) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("MDRIVER_MIGRATE_CRASH_AT", None)
        if crash_at:
            env["MDRIVER_MIGRATE_CRASH_AT"] = crash_at
        return env

    def cli(self, *args: str, crash_at: str | None = None, timeout: float = 120, check: bool = True,
            stdin: str | None = None, config: str | None = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "migrator.cli", "--config", config or self.config_path, *args]
        p = subprocess.run(cmd, cwd=str(self.tmp), env=self.env(crash_at), capture_output=True, text=True,
                           timeout=timeout, input=stdin if stdin is not None else "")
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        return p

    def start(self, *args: str, crash_at: str | None = None) -> subprocess.Popen:
        """``start`` in the foreground, as its own process (so it can be killed)."""
        n = len(self.processes)
        out = open(self.tmp / f"start-{n}.log", "w")
        cmd = [sys.executable, "-m", "migrator.cli", "--config", self.config_path, "start", self.logical, "--quiet", *args]
        p = subprocess.Popen(cmd, cwd=str(self.tmp), env=self.env(crash_at), stdout=out, stderr=subprocess.STDOUT)
        p.log_path = str(self.tmp / f"start-{n}.log")  # type: ignore[attr-defined]
        self.processes.append(p)
        return p

    def log_of(self, p: subprocess.Popen) -> str:
        return open(p.log_path).read()  # type: ignore[attr-defined]

    def stop(self, p: subprocess.Popen, timeout: float = 30) -> int:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def kill_all(self) -> None:
        """Kill what this test started: foreground processes, and a daemon (its pid is in the state row)."""
        for p in self.processes:
            if p.poll() is None:
                p.kill()
                p.wait()
        try:
            state = self.state()
        except pymysql.err.MySQLError:
            state = None
        if state is not None and state.pid and state.running():
            try:
                os.kill(state.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # -- state -----------------------------------------------------------------------------------

    def state(self):
        conn = self.connect(self.config.schemas["app"].tables[self.table].placement[0].datasource)
        try:
            return read_state(conn, self.logical)
        except pymysql.err.ProgrammingError:
            return None
        finally:
            conn.close()

    def phase(self) -> str | None:
        state = self.state()
        return state.phase if state is not None else None

    def forward_checkpoints(self) -> dict:
        out = {}
        for ds in self.targets:
            conn = self.connect(ds)
            try:
                rows = ckpt.load(conn, self.logical, "forward", ds)
                if rows:
                    out[ds] = rows[0]
            except pymysql.err.ProgrammingError:
                pass
            finally:
                conn.close()
        return out

    def wait(self, predicate, timeout: float, what: str, process: subprocess.Popen | None = None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if process is not None and process.poll() is not None:
                raise AssertionError(f"start exited {process.returncode} while waiting for {what}:\n{self.log_of(process)}")
            time.sleep(0.1)
        log = f"\n{self.log_of(process)}" if process is not None else ""
        raise AssertionError(f"timed out after {timeout} s waiting for {what}{log}")

    def caught_up(self, process: subprocess.Popen | None = None, timeout: float = 60) -> None:
        """Wait until the copy is done and every server applied the source binlog up to its position now."""
        target = self.master_position()

        def done():
            cps = self.forward_checkpoints()
            return len(cps) == len(self.targets) and all(cp.copy_done and cp.position >= target for cp in cps.values())

        self.wait(done, timeout, f"the shards to reach {target}", process)

    # -- the independent check ---------------------------------------------------------------------

    def source_rows(self, columns: str) -> dict:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT id, {columns} FROM `{self.source_db}`.`{self.source_table}`")
                return {r[0]: r[1:] for r in cur.fetchall()}
        finally:
            conn.close()

    def shard_rows(self, columns: str) -> dict:
        """id -> [(physical table, row), ...] over all 1024 tables."""
        config = self.config
        schema = config.schemas["app"]
        rule = schema.tables[self.table]
        by_db = defaultdict(list)
        for loc in all_locations(schema, rule):
            by_db[(loc.datasource, loc.database)].append(loc.table)
        out: dict = defaultdict(list)
        for (ds, database), tables in by_db.items():
            conn = self.connect(ds)
            try:
                with conn.cursor() as cur:
                    cur.execute(" UNION ALL ".join(
                        f"SELECT '{t}', id, {columns} FROM `{database}`.`{t}`" for t in tables))
                    for r in cur.fetchall():
                        out[r[1]].append((r[0], r[2:]))
            finally:
                conn.close()
        return out

    def compare(self, columns: str = USER_RELATION_COLUMNS, shard_key_index: int = 0) -> dict:
        """Lost, extra, wrong and misplaced rows (by id), comparing ``columns`` of every row."""
        schema = self.config.schemas["app"]
        rule = schema.tables[self.table]
        src = self.source_rows(columns)
        shards = self.shard_rows(columns)
        lost = sorted(k for k in src if k not in shards)
        extra = sorted(k for k, found in shards.items() if k not in src or len(found) > 1)
        wrong, misplaced = [], []
        for k, row in src.items():
            found = shards.get(k)
            if not found:
                continue
            table, shard_row = found[0]
            if shard_row != row:
                wrong.append(k)
            if locate(schema, rule, row[shard_key_index]).table != table:
                misplaced.append(k)
        return {"rows": len(src), "lost": lost[:10], "extra": extra[:10], "wrong": wrong[:10],
                "misplaced": misplaced[:10], "bad": len(lost) + len(extra) + len(wrong) + len(misplaced)}

    # -- cleanup ---------------------------------------------------------------------------------

    def cleanup(self, drop_shards: bool = False) -> None:
        """Leave the shared cluster as the fixture made it (servers made for one test are thrown away anyway)."""
        self.kill_all()
        if self.source_ds in self.cluster.instances:
            self.source_sql(f"DROP TABLE IF EXISTS `{self.source_db}`.`{self.source_table}`")
        schema = self.config.schemas["app"]
        rule = schema.tables[self.table]
        per_ds = defaultdict(list)
        for loc in all_locations(schema, rule):
            verb = "DROP TABLE IF EXISTS" if drop_shards else "DELETE FROM"
            per_ds[loc.datasource].append(f"{verb} `{loc.database}`.`{loc.table}`")
        for ds, statements in per_ds.items():
            if ds not in self.cluster.instances:
                continue
            conn = self.connect(ds, client_flag=CLIENT.MULTI_STATEMENTS)
            try:
                with conn.cursor() as cur:
                    for i in range(0, len(statements), 256):
                        cur.execute(";".join(statements[i:i + 256]))
                        while cur.nextset():
                            pass
                    cur.execute(f"DROP DATABASE IF EXISTS `{CONTROL_DB}`")
            finally:
                conn.close()


@dataclass
class WorkloadResult:
    ops: int = 0
    errors: list = field(default_factory=list)


class Workload:
    """Random inserts, updates (including shard key moves), deletes and multi-statement transactions."""

    def __init__(self, harness: Harness, rate: float = 300.0, first_new_id: int = 1_000_000, id_space: int = 6000,
                 seed: int = 2):
        self.h = harness
        self.rate = rate
        self.next_id = first_new_id
        self.id_space = id_space
        self.rnd = random.Random(seed)
        self.result = WorkloadResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Workload":
        self._thread.start()
        return self

    def stop(self) -> WorkloadResult:
        self._stop.set()
        self._thread.join(30)
        return self.result

    def _key(self) -> int:
        if self.rnd.random() < 0.3 and self.next_id > 1_000_000:
            return self.rnd.randrange(1_000_000, self.next_id)
        return self.rnd.randrange(1, self.id_space + 1)

    def _run(self) -> None:
        conn = self.h.connect(autocommit=True)
        t = f"`{self.h.source_db}`.`{self.h.source_table}`"
        started = time.monotonic()
        try:
            with conn.cursor() as cur:
                while not self._stop.is_set():
                    op = self.rnd.random()
                    if op < 0.3:
                        cur.execute(f"INSERT INTO {t} (id, uid, target_uid, remark) VALUES (%s, %s, %s, %s)",
                                    (self.next_id, self.rnd.randrange(1, 10**7), 1, f"w{self.result.ops}"))
                        self.next_id += 1
                    elif op < 0.45:
                        cur.execute(f"UPDATE {t} SET uid = %s WHERE id = %s", (self.rnd.randrange(1, 10**7), self._key()))
                    elif op < 0.65:
                        k = self._key()
                        cur.execute(f"UPDATE {t} SET score = COALESCE(score, 0) + 1, remark = %s WHERE id BETWEEN %s AND %s",
                                    (f"u{self.result.ops}", k, k + 3))
                    elif op < 0.8:
                        k = self._key()
                        cur.execute(f"DELETE FROM {t} WHERE id BETWEEN %s AND %s", (k, k + 2))
                    else:
                        rollback = self.rnd.random() < 0.2
                        cur.execute("BEGIN")
                        cur.execute(f"INSERT INTO {t} (id, uid, target_uid) VALUES (%s, %s, 2)",
                                    (self.next_id, self.rnd.randrange(1, 10**7)))
                        self.next_id += 1
                        cur.execute(f"UPDATE {t} SET id = %s WHERE id = %s", (self.next_id, self._key()))
                        self.next_id += 1
                        cur.execute(f"DELETE FROM {t} WHERE id = %s", (self._key(),))
                        cur.execute("ROLLBACK" if rollback else "COMMIT")
                    self.result.ops += 1
                    delay = self.result.ops / self.rate - (time.monotonic() - started)
                    if delay > 0:
                        time.sleep(delay)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.result.errors.append(repr(e))
        finally:
            conn.close()


def status_json(h: Harness) -> dict:
    return json.loads(h.cli("status", h.logical, "--json").stdout)


def write_on_shards(h: Harness, first_id: int, count: int, seed: int = 3) -> None:
    """What an application does once writes are on the shards: inserts, updates and deletes in the right tables."""
    config = h.config
    schema = config.schemas["app"]
    rule = schema.tables[h.table]
    rnd = random.Random(seed)
    conns = {ds: h.connect(ds, autocommit=True) for ds in ("ds0", "ds1")}
    try:
        for i in range(count):
            uid = rnd.randrange(1, 10**7)
            loc = locate(schema, rule, uid)
            t = f"`{loc.database}`.`{loc.table}`"
            with conns[loc.datasource].cursor() as cur:
                cur.execute(f"INSERT INTO {t} (id, uid, target_uid, remark) VALUES (%s, %s, 3, 'on shards')",
                            (first_id + i, uid))
                if i % 3 == 0:
                    cur.execute(f"UPDATE {t} SET remark = 'updated on shards', score = 2.5 WHERE id = %s", (first_id + i,))
                if i % 4 == 0:
                    cur.execute(f"DELETE FROM {t} WHERE id = %s", (first_id + i,))
        for ds, conn in conns.items():  # touch rows that came from the copy, too
            with conn.cursor() as cur:
                db_name = "app_00" if ds == "ds0" else "app_31"
                slot = 0 if ds == "ds0" else 1023
                cur.execute(f"UPDATE `{db_name}`.`{h.table}_{slot:04d}` SET remark = 'bulk' LIMIT 5")
                cur.execute(f"DELETE FROM `{db_name}`.`{h.table}_{slot + 1 if ds == 'ds0' else slot - 1:04d}` LIMIT 3")
    finally:
        for c in conns.values():
            c.close()
