"""Benchmark of the migrator, measured side by side in one run (ratios, not absolutes).

Starts three private MariaDB servers (a source and two shard servers holding the
32 x 32 layout), fills ``legacy.user_relation`` on the source, then measures:

- copy rate: ``mdriver-migrate`` copying the table into its 1024 shards, against
  ``mariadb-dump | mariadb`` of the same table into one unsharded table on a shard
  server, and against ``INSERT ... SELECT`` inside the source server (the ceiling:
  no client, no network, no parsing). Arms are interleaved and repeated; medians.
- binlog apply rate: row events per second applied from a backlog.
- replication lag at 1000 row changes/s: a heartbeat row updated with the wall
  clock every 20 ms is polled on its shard; p50/p99/max of the delay.

Usage: python bench/bench_migrator.py [--rows 200000] [--repeat 3] [--lag-seconds 30]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pymysql  # noqa: E402
import yaml  # noqa: E402
from pymysql.constants import CLIENT  # noqa: E402

from mdriver.config import load_config  # noqa: E402
from mdriver.sandbox.cluster import MariaDBInstance, free_port, start_all, stop_all  # noqa: E402
from mdriver.sandbox.layout import read_schema_file  # noqa: E402
from mdriver.sharding import locate  # noqa: E402
from migrator import checkpoint as ckpt  # noqa: E402
from migrator import state as st  # noqa: E402
from migrator.inspector import create_targets, read_table  # noqa: E402
from migrator.migration import Migration, Options  # noqa: E402
from migrator.state import resolve  # noqa: E402

USER_RELATION = read_schema_file(os.path.join(ROOT, "examples", "schema.sql"))["user_relation"]


def say(text: str) -> None:
    print(text, flush=True)


class Bench:
    def __init__(self, base: str, rows: int):
        self.base = base
        self.rows = rows
        self.servers = {name: MariaDBInstance(name, os.path.join(base, name), server_id=i + 1, die_with_parent=True)
                        for i, name in enumerate(("src", "ds0", "ds1"))}

    def __enter__(self) -> "Bench":
        start_all(self.servers.values())
        doc = yaml.safe_load(open(os.path.join(ROOT, "config", "sharding.yaml")))
        for name, inst in self.servers.items():
            doc["datasources"][name] = {"host": inst.host, "port": inst.port, "user": "root", "password": ""}
        doc["schemas"]["app"]["tables"]["user_relation"]["migration"] = {
            "source": {"datasource": "src", "database": "legacy", "table": "user_relation"}}
        doc["proxy"]["listen"] = f"127.0.0.1:{free_port()}"
        doc["proxy"]["metrics"] = f"127.0.0.1:{free_port()}"
        self.config_path = os.path.join(self.base, "bench.yaml")
        yaml.safe_dump(doc, open(self.config_path, "w"), sort_keys=False)
        self.ident = resolve(load_config(self.config_path), "app.user_relation")
        return self

    def __exit__(self, *exc: object) -> None:
        stop_all(self.servers.values())

    def conn(self, name: str, **kw) -> pymysql.connections.Connection:
        return self.servers[name].connect(**kw)

    def run(self, name: str, *statements: str) -> None:
        c = self.conn(name)
        with c.cursor() as cur:
            for s in statements:
                cur.execute(s)
        c.close()

    # -- setup ------------------------------------------------------------------------

    def fill(self) -> None:
        self.run("src", "CREATE DATABASE legacy", USER_RELATION.for_table("user_relation", "legacy"))
        rnd = random.Random(1)
        c = self.conn("src")
        with c.cursor() as cur:
            for start in range(0, self.rows, 5000):
                cur.executemany(
                    "INSERT INTO legacy.user_relation (id, uid, target_uid, relation_type, remark, score) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    [(i + 1, rnd.randrange(1, 10**9), rnd.randrange(1, 10**9), rnd.randrange(1, 4),
                      f"remark {i}" if i % 3 else None, rnd.randrange(0, 10**6) / 100)
                     for i in range(start, min(self.rows, start + 5000))])
        c.close()
        with self.conn("src") as c:
            info = read_table(c, "legacy", "user_relation")
        for ds in self.ident.targets:
            c = self.conn(ds, client_flag=CLIENT.MULTI_STATEMENTS)
            create_targets(c, info, self.ident.locations_on(ds))
            c.close()
        self.run("ds1", "CREATE DATABASE dumpdst")

    def reset_migration(self) -> None:
        for ds in self.ident.targets:
            c = self.conn(ds, client_flag=CLIENT.MULTI_STATEMENTS)
            with c.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{st.CONTROL_DB}`")
                locs = self.ident.locations_on(ds)
                for i in range(0, len(locs), 256):
                    cur.execute(";".join(f"TRUNCATE TABLE `{l.database}`.`{l.table}`" for l in locs[i:i + 256]))
                    while cur.nextset():
                        pass
            c.close()

    # -- arms --------------------------------------------------------------------------------

    def arm_dump(self) -> float:
        self.run("ds1", "DROP TABLE IF EXISTS dumpdst.user_relation")
        src, dst = self.servers["src"], self.servers["ds1"]
        dump = shutil.which("mariadb-dump") or shutil.which("mysqldump")
        client = shutil.which("mariadb") or shutil.which("mysql")
        t = time.perf_counter()
        p1 = subprocess.Popen([dump, "--no-defaults", "-h", src.host, "-P", str(src.port), "-uroot", "--single-transaction",
                               "legacy", "user_relation"], stdout=subprocess.PIPE)
        p2 = subprocess.run([client, "--no-defaults", "-h", dst.host, "-P", str(dst.port), "-uroot", "dumpdst"],
                            stdin=p1.stdout, check=True)
        p1.wait()
        elapsed = time.perf_counter() - t
        assert p1.returncode == 0 and p2.returncode == 0
        return self.rows / elapsed

    def arm_insert_select(self) -> float:
        self.run("src", "DROP TABLE IF EXISTS legacy.ceiling", USER_RELATION.for_table("ceiling", "legacy"))
        t = time.perf_counter()
        self.run("src", "INSERT INTO legacy.ceiling SELECT * FROM legacy.user_relation")
        return self.rows / (time.perf_counter() - t)

    def arm_migrator(self, chunk_rows: int) -> float:
        self.reset_migration()
        m = Migration(self.ident, Options(chunk_rows=chunk_rows))
        done = threading.Event()
        result: dict = {}

        def progress(stats) -> None:
            if stats.phase == "streaming" and not done.is_set():
                result["t"] = time.perf_counter()
                done.set()
                m.stop()

        m.on_progress = progress
        t = time.perf_counter()
        runner = threading.Thread(target=m.run, daemon=True)
        runner.start()
        done.wait(600)
        runner.join(60)
        copied = self._count_shards()
        assert copied == self.rows, f"copied {copied} of {self.rows} rows"
        return self.rows / (result["t"] - t)

    def _count_shards(self) -> int:
        total = 0
        for ds in self.ident.targets:
            c = self.conn(ds)
            with c.cursor() as cur:
                for database in sorted({l.database for l in self.ident.locations_on(ds)}):
                    tables = [l.table for l in self.ident.locations_on(ds) if l.database == database]
                    cur.execute("SELECT SUM(n) FROM (" + " UNION ALL ".join(
                        f"SELECT COUNT(*) AS n FROM `{database}`.`{t}`" for t in tables) + ") x")
                    total += int(cur.fetchone()[0])
            c.close()
        return total

    # -- streaming -----------------------------------------------------------------------------

    def start_streaming(self) -> tuple[Migration, threading.Thread]:
        m = Migration(self.ident, Options())
        runner = threading.Thread(target=m.run, daemon=True)
        runner.start()
        return m, runner

    def source_position(self) -> st.Position:
        c = self.conn("src")
        with c.cursor() as cur:
            cur.execute("SHOW MASTER STATUS")
            f, p = cur.fetchone()[:2]
        c.close()
        return st.Position(f, int(p))

    def checkpoints_at(self, target: st.Position) -> bool:
        for ds in self.ident.targets:
            c = self.conn(ds)
            try:
                cps = ckpt.load(c, self.ident.name, "forward", ds)
            finally:
                c.close()
            if not cps or cps[0].position < target:
                return False
        return True

    def apply_rate(self, changes: int) -> float:
        """Row events per second applied from a backlog built while the migrator was stopped."""
        c = self.conn("src", autocommit=True)
        with c.cursor() as cur:
            step = 500
            for low in range(1, changes + 1, step):
                cur.execute("UPDATE legacy.user_relation SET score = score + 1 WHERE id BETWEEN %s AND %s",
                            (low, low + step - 1))
        c.close()
        target = self.source_position()
        t = time.perf_counter()
        m, runner = self.start_streaming()
        while not self.checkpoints_at(target):
            time.sleep(0.05)
        elapsed = time.perf_counter() - t
        m.stop()
        runner.join(30)
        return changes / elapsed

    def lag(self, seconds: float, rate: float) -> list[float]:
        """Delays (s) between a heartbeat write on the source and its arrival on its shard, at ``rate`` changes/s."""
        schema, rule = self.ident.schema, self.ident.rule
        hb_id, hb_uid = 10**12, 424242
        loc = locate(schema, rule, hb_uid)
        self.run("src", f"INSERT INTO legacy.user_relation (id, uid, target_uid, remark) VALUES ({hb_id}, {hb_uid}, 0, '0')")
        m, runner = self.start_streaming()
        stop = threading.Event()
        seen: dict[str, float] = {}
        achieved: dict[str, float] = {}

        def load() -> None:
            c = self.conn("src", autocommit=True)
            rnd = random.Random(5)
            n, started = 0, time.perf_counter()
            with c.cursor() as cur:
                while not stop.is_set():
                    op = n % 3
                    if op == 0:
                        cur.execute("INSERT INTO legacy.user_relation (id, uid, target_uid) VALUES (%s, %s, 1)",
                                    (2 * 10**12 + n, rnd.randrange(1, 10**9)))
                    elif op == 1:
                        cur.execute("UPDATE legacy.user_relation SET score = score + 1 WHERE id = %s",
                                    (rnd.randrange(1, self.rows),))
                    else:
                        cur.execute("DELETE FROM legacy.user_relation WHERE id = %s", (2 * 10**12 + n - 2,))
                    n += 1
                    delay = n / rate - (time.perf_counter() - started)
                    if delay > 0:
                        time.sleep(delay)
            achieved["rate"] = n / (time.perf_counter() - started)
            c.close()

        def heartbeat() -> None:
            c = self.conn("src", autocommit=True)
            with c.cursor() as cur:
                while not stop.wait(0.02):
                    cur.execute("UPDATE legacy.user_relation SET remark = %s WHERE id = %s", (repr(time.time()), hb_id))
            c.close()

        def monitor() -> None:
            c = self.conn(loc.datasource, autocommit=True)
            with c.cursor() as cur:
                while not stop.is_set():
                    cur.execute(f"SELECT remark FROM `{loc.database}`.`{loc.table}` WHERE id = %s", (hb_id,))
                    row = cur.fetchone()
                    now = time.time()
                    if row and row[0] not in seen:
                        seen[row[0]] = now - float(row[0])
                    time.sleep(0.005)
            c.close()

        time.sleep(2)  # the migrator connects and catches up first
        threads = [threading.Thread(target=f, daemon=True) for f in (load, heartbeat, monitor)]
        for th in threads:
            th.start()
        time.sleep(2)
        seen.clear()  # warm-up done
        time.sleep(seconds)
        stop.set()
        for th in threads:
            th.join(10)
        m.stop()
        runner.join(30)
        self.achieved_rate = achieved.get("rate", 0.0)
        return [v for k, v in seen.items() if k != "0"]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk-rows", type=int, default=50_000)
    ap.add_argument("--apply-changes", type=int, default=100_000)
    ap.add_argument("--lag-seconds", type=float, default=30.0)
    ap.add_argument("--lag-rate", type=float, default=1000.0)
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="bench-migrator-")
    try:
        with Bench(base, args.rows) as b:
            say(f"servers: {', '.join(f'{n} :{i.port}' for n, i in b.servers.items())}; filling {args.rows:,} rows")
            b.fill()
            dump, mig, ceiling = [], [], []
            for r in range(args.repeat):
                dump.append(b.arm_dump())
                mig.append(b.arm_migrator(args.chunk_rows))
                ceiling.append(b.arm_insert_select())
                say(f"  round {r + 1}: mysqldump|mariadb {dump[-1]:,.0f} rows/s, migrator {mig[-1]:,.0f} rows/s, "
                    f"INSERT...SELECT {ceiling[-1]:,.0f} rows/s")
            d, m, c = statistics.median(dump), statistics.median(mig), statistics.median(ceiling)
            # Ratios per round (the arms of a round ran back to back), then their median: robust to load drift.
            r_dump = statistics.median(x / y for x, y in zip(mig, dump))
            r_ceiling = statistics.median(x / y for x, y in zip(mig, ceiling))
            say(f"copy rate (median of {args.repeat}): migrator {m:,.0f} rows/s into 1024 shards on 2 servers, "
                "end to end (start, checks, copy)")
            say(f"  vs mysqldump | mariadb into one table: {d:,.0f} rows/s -> ratio {r_dump:.2f} (target >= 0.5)")
            say(f"  vs INSERT ... SELECT in the source (ceiling): {c:,.0f} rows/s -> ratio {r_ceiling:.2f}")
            rate = b.apply_rate(min(args.apply_changes, args.rows))
            say(f"binlog apply rate: {rate:,.0f} row events/s (backlog of {min(args.apply_changes, args.rows):,} updates)")
            lags = b.lag(args.lag_seconds, args.lag_rate)
            say(f"replication lag at {b.achieved_rate:,.0f} row changes/s (asked {args.lag_rate:,.0f}) over {args.lag_seconds:g} s "
                f"({len(lags)} heartbeats): p50 {pct(lags, 0.5) * 1000:.0f} ms, p99 {pct(lags, 0.99) * 1000:.0f} ms, "
                f"max {max(lags) * 1000 if lags else float('nan'):.0f} ms (target p99 <= 1000 ms)")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
