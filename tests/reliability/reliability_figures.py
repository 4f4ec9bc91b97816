"""The figures the reliability suite measures, and the report generated from them.

Each test records what it measured (``figures.add(area, name, value, unit)``).
At the end of the run the figures are written as JSON under the pytest temp
directory, printed in the terminal summary, and, when ``MDRIVER_WRITE_REPORT=1``,
merged into ``docs/reliability.md``: the document is regenerated from the
figures the suite produced, never edited by hand. The JSON of every figure is
kept inside the document (an HTML comment), so a short run and a ``--long``
run fill their own columns without erasing each other.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import textwrap
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

REPORT_ENV = "MDRIVER_WRITE_REPORT"
AREAS = (
    ("soak", "Soak: concurrent clients through the driver and the proxy"),
    ("backend", "Backend faults under load"),
    ("config", "Config-center (etcd) faults"),
    ("migrator", "Migrator: kill -9 and resume under writes"),
    ("protocol", "Protocol fuzzing of the proxy"),
    ("sql", "SQL fuzzing against the reference database"),
    ("security", "Security"),
)
AREA_TITLES = dict(AREAS)
AREA_NOTES = {
    "soak": "16 clients, half through the driver and half through the proxy, mix point, IN and scatter reads "
            "(ORDER BY/LIMIT, aggregates), joins, single- and multi-shard writes, broadcast writes and "
            "cross-datasource transactions. Each client's reads are compared with the reference database as they "
            "run; at the end every physical table is compared with the reference, which received the same "
            "logical writes. Only deadlocks and lock-wait timeouts would be accepted errors.",
    "backend": "Two servers of the test's own; driver and proxy clients run at the same time. ds1 is killed with "
               "SIGKILL and restarted, or frozen with SIGSTOP and resumed, after 3 s of load, for 6 s. Bounds "
               "asserted: a failed ds1 statement within timeout (2 s) + 2 s, every error names ds1 and its "
               "address, no error and no stall on ds0-only clients, recovery within 7 s (the proxy probes a down "
               "datasource with a backoff growing to 5 s), every pooled connection usable afterwards, no XA branch "
               "left prepared, and the sum of all balances unchanged by the transfers.",
    "config": "Driver clients (config=etcd://...) and proxy clients (mdriver-proxy --config etcd://...) run while "
              "etcd is killed, and while invalid versions are written straight into etcd.",
    "migrator": "Random kill -9 of `mdriver-migrate start` (at a named crash point, or from outside after a random "
                "delay) while the source takes writes; each run resumes from its checkpoints. Every source row is "
                "then checked row by row in every physical table, independently of the migrator's verifier.",
    "protocol": "Fresh connections, eight at a time, send random, mutated, truncated and oversized packets, wrong "
                "sequence ids and garbage prepared-statement parameters, before and after logging in; then the "
                "client half-closes. A connection still open 5 s after that counts as hanging. A well-behaved "
                "client queries throughout. The backends run with max_connect_errors=3.",
    "sql": "Hypothesis generates SELECTs (the router suite's generators plus joins, UNIONs and subqueries); each "
           "runs on the reference database, through the driver and through the proxy. A refusal must be a clear "
           "MySQL error (1235, 1290 or 1210); any other difference is a wrong answer.",
    "security": "Logins, schema access, TLS, secrets in every text the system produces, and the refusal matrix "
                "checked in the backends' general log (with accepted statements as a control).",
}
VARIANTS = ("short", "long")
_JSON_START = "<!-- figures-json"
_JSON_END = "figures-json -->"


@dataclass(frozen=True)
class Figure:
    area: str
    name: str
    value: object  # int, float, str or bool
    unit: str = ""
    variant: str = "short"
    when: str = ""
    order: int = 0  # the order tests recorded figures in, within their area

    @property
    def key(self) -> str:
        return f"{self.variant}/{self.area}/{self.name}"


class Figures:
    """Collects the figures of one pytest run (thread-safe: soak clients record too)."""

    def __init__(self, variant: str):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
        self.variant = variant
        self._lock = threading.Lock()
        self._figures: dict[str, Figure] = {}
        self._counter = 0

    def add(self, area: str, name: str, value: object, unit: str = "") -> None:
        if area not in AREA_TITLES:
            raise ValueError(f"unknown area {area!r}; known: {', '.join(AREA_TITLES)}")
        if isinstance(value, float):
            value = round(value, 3)
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with self._lock:
            self._counter += 1
            fig = Figure(area, name, value, unit, self.variant, when, self._counter)
            self._figures[fig.key] = fig

    def all(self) -> list[Figure]:
        with self._lock:
            return sorted(self._figures.values(), key=lambda f: f.order)

    def __len__(self) -> int:
        return len(self._figures)

    def write_json(self, path: Path) -> None:
        doc = {"variant": self.variant, "machine": machine(), "figures": [asdict(f) for f in self.all()]}
        path.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")

    def summary_lines(self) -> list[str]:
        return [f"[{f.area}] {f.name}: {format_value(f)}" for f in self.all()]


def machine() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cpus": os.cpu_count(), "load_average_1m": round(load[0], 2), "python": platform.python_version()}


def format_value(f: Figure) -> str:
    v = f.value
    if isinstance(v, bool):
        text = "yes" if v else "no"
    elif isinstance(v, float):
        text = f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
    elif isinstance(v, int):
        text = f"{v:,}"
    else:
        text = str(v)
    return f"{text} {f.unit}".strip()


# -- the report --------------------------------------------------------------------------

def read_embedded(text: str) -> dict:
    """The figures JSON kept inside an earlier report (empty if none)."""
    m = re.search(re.escape(_JSON_START) + r"\n(.*?)\n" + re.escape(_JSON_END), text, re.S)
    if not m:
        return {"figures": [], "machines": {}}
    return json.loads(m.group(1))


def merge(old: dict, figures: Figures) -> dict:
    """This run's figures replace every earlier figure of the same variant and area; other areas stay.

    (A run of only some areas, e.g. ``-k soak``, leaves the others as they were.)
    """
    fresh = {(f.variant, f.area) for f in figures.all()}
    by_key = {f"{d['variant']}/{d['area']}/{d['name']}": d for d in old.get("figures", [])
              if (d["variant"], d["area"]) not in fresh}
    for f in figures.all():
        by_key[f.key] = asdict(f)
    machines = dict(old.get("machines", {}))
    machines[figures.variant] = machine()
    return {"figures": list(by_key.values()), "machines": machines}


def render(data: dict) -> str:
    """docs/reliability.md from the merged figures."""
    figs = [Figure(**d) for d in data["figures"]]
    rows: dict[tuple[str, str], dict[str, Figure]] = {}
    first_seen: dict[tuple[str, str], tuple[int, int]] = {}
    for f in figs:
        k = (f.area, f.name)
        rows.setdefault(k, {})[f.variant] = f
        rank = (VARIANTS.index(f.variant), f.order)
        first_seen[k] = min(first_seen.get(k, rank), rank)
    out = [
        "# Reliability and security report",
        "",
        "Every number below was produced by the suite in `tests/reliability/`, not typed",
        "in. The suite records what it measures; this page is regenerated from those",
        "records:",
        "",
        "```sh",
        "MDRIVER_WRITE_REPORT=1 .venv/bin/python -m pytest tests/reliability            # short variants (CI)",
        "MDRIVER_WRITE_REPORT=1 .venv/bin/python -m pytest tests/reliability --long     # long variants",
        "```",
        "",
        "The *short* column comes from the default run (the one CI runs); the *long* column",
        "from a `--long` run (soak of several minutes, etcd down for minutes, 30 migrator",
        "kills). A dash means that variant has not recorded the figure. Throughput figures",
        "come from two CPU cores shared with the servers, the proxy and the load generator",
        "itself: compare them with each other, not with production numbers.",
        "",
    ]
    machines = data.get("machines", {})
    for variant in VARIANTS:
        m = machines.get(variant)
        if m:
            out.append(f"- {variant} run: {m.get('cpus')} CPUs, load average {m.get('load_average_1m')} at the end, "
                       f"Python {m.get('python')}")
    out.append("")
    for area, title in AREAS:
        keys = sorted((k for k in rows if k[0] == area), key=lambda k: first_seen[k])
        if not keys:
            continue
        out += [f"## {title}", "", textwrap.fill(AREA_NOTES[area], 100), "", "| figure | short | long | recorded |",
                "|---|---:|---:|---|"]
        for k in keys:
            cells = [format_value(rows[k][v]) if v in rows[k] else "—" for v in VARIANTS]
            when = max(f.when for f in rows[k].values())
            out.append(f"| {k[1]} | {cells[0]} | {cells[1]} | {when} |")
        out.append("")
    body = ",\n".join(json.dumps(d, sort_keys=True, ensure_ascii=False, default=str)
                       for d in sorted(data["figures"], key=lambda d: (d["variant"], d["area"], d["order"])))
    machines = json.dumps(data.get("machines", {}), sort_keys=True)
    out += [_JSON_START, f'{{"machines": {machines},\n"figures": [\n{body}\n]}}', _JSON_END, ""]
    return "\n".join(out)


def write_report(path: Path, figures: Figures) -> None:
    old = read_embedded(path.read_text(encoding="utf-8")) if path.exists() else {"figures": [], "machines": {}}
    path.write_text(render(merge(old, figures)), encoding="utf-8")
