"""Proxy throughput against direct MariaDB and a plain byte relay, measured side by side.

Starts two MariaDB servers (free ports, temp dir), creates the sharded
``sbtest1`` of config/sbtest.yaml (1024 tables) and loads it, prepares an
unsharded ``sbtest1`` for the direct arms, then runs sysbench against three
targets, interleaved and repeated:

* direct: MariaDB itself (unsharded table)
* relay:  socat forwarding bytes to that MariaDB (what any proxy costs at least)
* proxy-cpython, proxy-pypy: mdriver-proxy in front of the 32 x 32 layout, on
  CPython (this interpreter, with uvloop) and on PyPy (.venv-pypy, made by
  scripts/install.sh); ``--runtimes`` picks which

It prints medians and ratios (proxy/direct, proxy/relay; also the median and
range of the per-round proxy/relay ratios, steadier when the machine's speed
drifts between rounds), the proxy's CPU time per query from /proc/<pid>/stat,
and the latency the proxy adds at one thread. Each proxy first serves
``--warm-up`` seconds of point selects that are not counted (plan cache, backend prepared
statements, PyPy's JIT). Ratios are what to compare: the machine is shared
(DESIGN §8).
A second table shows, per arm, how busy the whole machine was (/proc/stat)
and the CPU per query of MariaDB, sysbench and the middle process: on two
cores, a middle process that leaves the cores idle makes every other
process's wake-ups dearer, which the proxy's own CPU does not show.

    .venv/bin/python bench/bench_proxy.py --rounds 3 --time 20
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mdriver.config import load_config  # noqa: E402
from mdriver.sandbox.cluster import MariaDBInstance, free_port, start_all, stop_all  # noqa: E402
from mdriver.sandbox.configfile import write_config_with_ports  # noqa: E402
from mdriver.sandbox.layout import create_layout, plan_layout, read_schema_file  # noqa: E402
from mdriver.sharding import locate  # noqa: E402

SBTEST_CONFIG = os.path.join(ROOT, "config", "sbtest.yaml")
SBTEST_SCHEMA = os.path.join(ROOT, "tests", "integration", "proxy", "sbtest_schema.sql")
USER, PASSWORD = "sbtest", "sbtest-secret"
DIRECT_DB = "sbdirect"


# -- data ---------------------------------------------------------------------------

def _sb_string(rng: random.Random, groups: int) -> str:
    """sysbench's c/pad shape: groups of 11 digits separated by '-'."""
    return "-".join("".join(rng.choice("0123456789") for _ in range(11)) for _ in range(groups))


def sbtest_rows(table_size: int, seed: int = 1):
    rng = random.Random(seed)
    for i in range(1, table_size + 1):
        yield i, rng.randint(1, table_size), _sb_string(rng, 10), _sb_string(rng, 5)


def create_sbtest(config, connect) -> None:
    """Create every physical sbtest1 table of the config (idempotent)."""
    create_layout(plan_layout(config, read_schema_file(SBTEST_SCHEMA)), connect)


def load_sbtest(config, connect, table_size: int, seed: int = 1) -> None:
    """Fill the sharded sbtest1 with ``table_size`` rows (ids 1..n), straight into the physical tables."""
    schema = config.schemas["sbtest"]
    rule = schema.tables["sbtest1"]
    per_table: dict[tuple, list] = {}
    for row in sbtest_rows(table_size, seed):
        loc = locate(schema, rule, row[0])
        per_table.setdefault((loc.datasource, loc.database, loc.table), []).append(row)
    conns = {}
    try:
        for (ds, db, table), rows in sorted(per_table.items()):
            conn = conns.get(ds) or conns.setdefault(ds, connect(ds))
            with conn.cursor() as cur:
                cur.execute(f"DELETE FROM `{db}`.`{table}`")
                cur.executemany(f"INSERT INTO `{db}`.`{table}` (id, k, c, pad) VALUES (%s, %s, %s, %s)", rows)
            conn.commit()
    finally:
        for conn in conns.values():
            conn.close()


def load_direct(connect, ds: str, table_size: int, seed: int = 1) -> None:
    """The same rows in one unsharded table, for the direct and relay arms."""
    conn = connect(ds)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{DIRECT_DB}`")
            ddl = open(SBTEST_SCHEMA, encoding="utf-8").read().split("CREATE TABLE", 1)[1]
            cur.execute(f"DROP TABLE IF EXISTS `{DIRECT_DB}`.sbtest1")
            cur.execute(f"CREATE TABLE `{DIRECT_DB}`." + ddl.strip().rstrip(";").strip())
            rows = list(sbtest_rows(table_size, seed))
            for i in range(0, len(rows), 1000):
                cur.executemany(f"INSERT INTO `{DIRECT_DB}`.sbtest1 (id, k, c, pad) VALUES (%s, %s, %s, %s)", rows[i:i + 1000])
            cur.execute(f"CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'")
            cur.execute(f"GRANT ALL ON `{DIRECT_DB}`.* TO '{USER}'@'127.0.0.1'")
        conn.commit()
    finally:
        conn.close()


# -- processes ----------------------------------------------------------------------------

def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")


RUNTIMES = {  # the proxy's interpreters: this one if it is CPython, and the virtualenvs of scripts/install.sh
    "cpython": sys.executable if sys.implementation.name == "cpython" else os.path.join(ROOT, ".venv", "bin", "python"),
    "pypy": os.path.join(ROOT, ".venv-pypy", "bin", "python"),
}


def runtimes_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runtimes", default="cpython,pypy", type=_runtimes, metavar="LIST",
                        help=f"the proxy's interpreters, comma-separated, from: cpython ({RUNTIMES['cpython']}), "
                             f"pypy ({RUNTIMES['pypy']}) (default %(default)s)")


def _runtimes(value: str) -> list[str]:
    names = [r for r in value.split(",") if r]
    for name in names:
        if name not in RUNTIMES:
            raise argparse.ArgumentTypeError(f"unknown runtime {name!r} (choose from {', '.join(RUNTIMES)})")
        if not os.access(RUNTIMES[name], os.X_OK):
            raise argparse.ArgumentTypeError(f"{name} needs {RUNTIMES[name]}; run scripts/install.sh, or leave {name} out")
    return names


def start_proxy(python: str, config_path: str, port: int, log_path: str, workers: int = 1) -> subprocess.Popen:
    log = open(log_path, "ab")
    proc = subprocess.Popen([python, "-m", "proxy.cli", "--config", config_path, "--listen", f"127.0.0.1:{port}",
                             "--log-level", "WARNING", "--workers", str(workers)], cwd=ROOT, stdout=log, stderr=log)
    wait_port(port)
    time.sleep(0.5 if workers > 1 else 0)  # let every worker bind
    return proc


def start_relay(listen: int, target: int) -> subprocess.Popen:
    socat = shutil.which("socat")
    if socat is None:
        raise RuntimeError("socat is not installed (apt-get install socat)")
    # nodelay on both sides: without it Nagle + delayed ACKs stall multi-packet results for 40 ms
    proc = subprocess.Popen([socat, f"TCP-LISTEN:{listen},bind=127.0.0.1,reuseaddr,fork,nodelay", f"TCP:127.0.0.1:{target},nodelay"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(listen)
    return proc


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, its live children (proxy workers) and its reaped ones (socat's forks)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat(int(entry))
        except OSError:
            continue
        if int(entry) == pid:
            ticks += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        elif int(fields[1]) == pid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)  # idle and iowait are not busy


class MachineMeter:
    """CPU of the whole machine and of each party of one sysbench run: MariaDB, sysbench, the middle process."""

    def __init__(self, mariadb_pids: list[int], middle_pid: int | None):
        self.mariadb_pids = mariadb_pids
        self.middle_pid = middle_pid
        self.start = self._sample()

    def _sample(self) -> tuple:
        t = os.times()
        middle = cpu_seconds(self.middle_pid) if self.middle_pid else 0.0
        return machine_ticks(), sum(cpu_seconds(p) for p in self.mariadb_pids), t.children_user + t.children_system, middle

    def result(self, queries: float) -> dict:
        (busy1, total1), mariadb1, sysbench1, middle1 = self._sample()
        (busy0, total0), mariadb0, sysbench0, middle0 = self.start
        per = 1e6 / max(queries, 1)
        return {"machine_busy": (busy1 - busy0) / max(total1 - total0, 1), "mariadb_us_per_query": (mariadb1 - mariadb0) * per,
                "sysbench_us_per_query": (sysbench1 - sysbench0) * per, "middle_us_per_query": (middle1 - middle0) * per}


# -- sysbench ------------------------------------------------------------------------------------

def sysbench(test: str, port: int, db: str, threads: int, seconds: int, table_size: int, extra=()) -> dict:
    cmd = ["sysbench", test, "--db-driver=mysql", "--mysql-host=127.0.0.1", f"--mysql-port={port}",
           f"--mysql-user={USER}", f"--mysql-password={PASSWORD}", f"--mysql-db={db}", "--tables=1",
           f"--table-size={table_size}", f"--threads={threads}", f"--time={seconds}", "--report-interval=0",
           "--mysql-ssl=off", *extra, "run"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"sysbench {test} on port {port} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return parse_sysbench(out.stdout)


def parse_sysbench(text: str) -> dict:
    def num(pattern: str) -> float:
        m = re.search(pattern, text)
        if not m:
            raise RuntimeError(f"sysbench output has no {pattern!r}:\n{text[-2000:]}")
        return float(m.group(1))

    return {
        "queries": num(r"queries:\s+(\d+)"),
        "qps": num(r"queries:\s+\d+\s+\(([\d.]+) per sec"),
        "tps": num(r"transactions:\s+\d+\s+\(([\d.]+) per sec"),
        "errors": num(r"ignored errors:\s+(\d+)"),
        "avg_ms": num(r"avg:\s+([\d.]+)"),
        "p95_ms": num(r"95th percentile:\s+([\d.]+)"),
    }


# -- the benchmark ----------------------------------------------------------------------------------

def run(args) -> dict:
    base = tempfile.mkdtemp(prefix="mdriver-bench-")
    instances = {name: MariaDBInstance(name, os.path.join(base, name), server_id=i + 1, die_with_parent=True)
                 for i, name in enumerate(("ds0", "ds1"))}
    procs: list[subprocess.Popen] = []
    results: dict = {"config": vars(args), "rounds": []}
    try:
        start_all(instances.values())
        relay_port = free_port()
        ports = {n: i.port for n, i in instances.items()}

        def proxy_config(name: str) -> str:  # each proxy its own listen and metrics port
            return write_config_with_ports(SBTEST_CONFIG, os.path.join(base, f"{name}.yaml"), ports,
                                           proxy_listen=f"127.0.0.1:{free_port()}", metrics=f"127.0.0.1:{free_port()}")

        config = load_config(proxy_config("sbtest"))

        def connect(ds, **kw):
            return instances[ds].connect(**kw)

        print("creating 1024 sbtest1 tables and loading data ...", file=sys.stderr)
        create_sbtest(config, connect)
        load_sbtest(config, connect, args.table_size)
        load_direct(connect, "ds0", args.table_size)
        relay = start_relay(relay_port, instances["ds0"].port)
        procs.append(relay)
        arms = {"direct": (instances["ds0"].port, DIRECT_DB), "relay": (relay_port, DIRECT_DB)}
        middle = {"direct": None, "relay": relay.pid}
        for runtime in args.runtimes:
            port = free_port()
            proxy = start_proxy(RUNTIMES[runtime], proxy_config(f"proxy-{runtime}"), port,
                                os.path.join(base, f"proxy-{runtime}.log"), args.proxy_workers)
            procs.append(proxy)
            arms[f"proxy-{runtime}"] = (port, "sbtest")
            middle[f"proxy-{runtime}"] = proxy.pid
            if args.warm_up > 0:
                sysbench("oltp_point_select", port, "sbtest", args.threads, args.warm_up, args.table_size)
        mariadb_pids = [i.pid for i in instances.values()]
        tests = [("oltp_point_select", args.threads), ("oltp_point_select", 1)]
        if not args.point_select_only:
            tests += [("oltp_read_only", args.threads), ("oltp_read_write", args.threads)]
        for rnd in range(args.rounds):
            order = list(arms)
            if rnd % 2:
                order.reverse()
            row = {}
            for test, threads in tests:
                for arm in order:
                    port, db = arms[arm]
                    meter = MachineMeter(mariadb_pids, middle[arm])
                    r = sysbench(test, port, db, threads, args.time, args.table_size)
                    r.update(meter.result(r["queries"]))
                    row[f"{test}/{threads}/{arm}"] = r
                    print(f"round {rnd + 1} {test} threads={threads} {arm}: {r['qps']:.0f} qps, avg {r['avg_ms']:.3f} ms"
                          + (f", {r['middle_us_per_query']:.0f} us CPU/query" if middle[arm] else ""),
                          file=sys.stderr)
            results["rounds"].append(row)
        results["summary"] = summarize(results["rounds"], tests)
        return results
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        stop_all(instances.values())
        shutil.rmtree(base, ignore_errors=True)


def summarize(rounds: list[dict], tests) -> dict:
    """Medians over rounds per test and arm; ratios per proxy arm (``proxy-<runtime>``), from the medians."""
    out = {}
    for test, threads in tests:
        key = f"{test}/{threads}"
        arms = [k[len(key) + 1:] for k in rounds[0] if k.startswith(key + "/")]

        def median(arm: str, field: str) -> float:
            return statistics.median(r[f"{key}/{arm}"][field] for r in rounds)

        qps = {arm: median(arm, "qps") for arm in arms}
        lat = {arm: median(arm, "avg_ms") for arm in arms}
        proxies = {arm: {"proxy_direct": qps[arm] / qps["direct"], "proxy_relay": qps[arm] / qps["relay"],
                         "proxy_relay_by_round": [r[f"{key}/{arm}"]["qps"] / r[f"{key}/relay"]["qps"] for r in rounds],
                         "cpu_us_per_query": median(arm, "middle_us_per_query"),
                         "errors": sum(r[f"{key}/{arm}"]["errors"] for r in rounds),
                         "added_latency_ms": lat[arm] - lat["direct"]}
                   for arm in arms if arm.startswith("proxy")}
        machine = {arm: {k: median(arm, k) for k in ("machine_busy", "mariadb_us_per_query", "sysbench_us_per_query",
                                                      "middle_us_per_query")}
                   for arm in arms}
        out[key] = {"qps": qps, "avg_ms": lat, "relay_direct": qps["relay"] / qps["direct"], "proxies": proxies, "machine": machine}
    return out


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def markdown(summary: dict) -> str:
    lines = ["| sysbench test | threads | proxy on | direct qps | relay qps | proxy qps | proxy/direct | proxy/relay | "
             "proxy/relay per round: median (range) | proxy CPU/query | avg latency direct / proxy |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, s in summary.items():
        test, threads = key.split("/")
        q, lat = s["qps"], s["avg_ms"]
        for arm, p in s["proxies"].items():
            lines.append(f"| {test} | {threads} | {arm[len('proxy-'):]} | {q['direct']:.0f} | {q['relay']:.0f} | {q[arm]:.0f} | "
                         f"{p['proxy_direct']:.2f} | {p['proxy_relay']:.2f} | {_spread(p['proxy_relay_by_round'])} | "
                         f"{p['cpu_us_per_query']:.0f} us | "
                         f"{lat['direct']:.3f} / {lat[arm]:.3f} ms |")
    lines += ["", "| sysbench test | threads | arm | machine busy | MariaDB CPU/query | sysbench CPU/query | relay or proxy CPU/query |",
              "|---|---|---|---|---|---|---|"]
    for key, s in summary.items():
        test, threads = key.split("/")
        for arm, m in s["machine"].items():
            middle = "-" if arm == "direct" else f"{m['middle_us_per_query']:.0f} us"
            lines.append(f"| {test} | {threads} | {arm} | {m['machine_busy'] * 100:.0f}% | {m['mariadb_us_per_query']:.0f} us | "
                         f"{m['sysbench_us_per_query']:.0f} us | {middle} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--time", type=int, default=20, help="seconds per sysbench run")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--table-size", type=int, default=10000)
    p.add_argument("--point-select-only", action="store_true", help="skip oltp_read_only and oltp_read_write")
    p.add_argument("--proxy-workers", type=int, default=1, help="mdriver-proxy --workers (default %(default)s)")
    p.add_argument("--warm-up", type=int, default=15, metavar="SECONDS",
                   help="uncounted point selects per proxy before the rounds: PyPy's JIT and the backend prepared "
                        "statements of 1024 tables need them; round 1 is otherwise slower (default %(default)s)")
    runtimes_arg(p)
    p.add_argument("--json", metavar="FILE", help="also write all measurements as JSON")
    args = p.parse_args(argv)
    if shutil.which("sysbench") is None:
        print("bench_proxy: sysbench is not installed", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop servers and remove temp files on SIGTERM too
    results = run(args)
    print(markdown(results["summary"]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
