"""Prometheus metrics of one proxy, on its own registry (never the global one).

The per-statement counters are plain ints and lists on the event loop (no
locks, no label lookups on the hot path); a custom collector turns them into
Prometheus families when /metrics is scraped. The HTTP endpoint is a tiny
asyncio server on the same loop.
"""
from __future__ import annotations

import asyncio
import bisect
import logging

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def family_buckets(self):
        out, acc = [], 0
        for bound, n in zip(LATENCY_BUCKETS + (float("inf"),), self.counts):
            acc += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), acc))
        return out


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.statements: dict[tuple[str, str], int] = {}
        self.latency: dict[str, _Histogram] = {}
        self.errors: dict[int, int] = {}
        self.scatter = 0
        self.pool_wait: dict[str, _Histogram] = {}
        self.clients = 0
        self.config_revision = ""
        self.config_errors = 0
        self.migrations: list[tuple[str, str, str, str]] = []
        self.pools = None  # set by the server: Pools, read at scrape time
        self.shadow = None  # callable returning the shadow-read snapshot
        self.registry.register(self)

    # -- recording (hot path) ----------------------------------------------------

    def statement(self, kind: str, route: str, seconds: float) -> None:
        key = (kind, route)
        st = self.statements
        st[key] = st.get(key, 0) + 1
        h = self.latency.get(kind)
        if h is None:
            h = self.latency[kind] = _Histogram()
        h.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        h.total += seconds
        if route == "scatter":
            self.scatter += 1

    def error(self, code: int) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def pool_wait_seconds(self, datasource: str, seconds: float) -> None:
        h = self.pool_wait.get(datasource)
        if h is None:
            h = self.pool_wait[datasource] = _Histogram()
        h.observe(seconds)

    def set_config(self, config) -> None:
        self.config_revision = config.revision or "unknown"
        self.migrations = [(s.name, t, r.migration.reads, r.migration.writes)
                           for s in config.schemas.values() for t, r in sorted(s.tables.items()) if r.migration is not None]

    # -- exposition ------------------------------------------------------------------

    def describe(self):
        return []

    def collect(self):
        c = CounterMetricFamily("mdriver_proxy_statements", "Statements by type and route", labels=["type", "route"])
        for (kind, route), n in sorted(self.statements.items()):
            c.add_metric([kind, route], n)
        yield c
        h = HistogramMetricFamily("mdriver_proxy_statement_seconds", "Statement latency by type", labels=["type"])
        for kind, hist in sorted(self.latency.items()):
            h.add_metric([kind], hist.family_buckets(), hist.total)
        yield h
        e = CounterMetricFamily("mdriver_proxy_errors", "Errors sent to clients by MySQL error code", labels=["code"])
        for code, n in sorted(self.errors.items()):
            e.add_metric([str(code)], n)
        yield e
        yield CounterMetricFamily("mdriver_proxy_scatter", "Statements that ran on more than one shard", value=self.scatter)
        w = HistogramMetricFamily("mdriver_proxy_pool_wait_seconds", "Time waiting for a backend connection", labels=["datasource"])
        for ds, hist in sorted(self.pool_wait.items()):
            w.add_metric([ds], hist.family_buckets(), hist.total)
        yield w
        if self.pools is not None:
            in_use = GaugeMetricFamily("mdriver_proxy_pool_in_use", "Backend connections in use", labels=["datasource"])
            open_ = GaugeMetricFamily("mdriver_proxy_pool_open", "Backend connections open", labels=["datasource"])
            up = GaugeMetricFamily("mdriver_proxy_datasource_up", "1 if the last connection attempt succeeded", labels=["datasource"])
            for name, pool in sorted(self.pools.pools.items()):
                in_use.add_metric([name], pool.in_use)
                open_.add_metric([name], pool.total)
                up.add_metric([name], 0 if pool.down else 1)
            yield in_use
            yield open_
            yield up
        yield GaugeMetricFamily("mdriver_proxy_client_connections", "Client connections", value=self.clients)
        v = GaugeMetricFamily("mdriver_proxy_config_version", "Config in use (value 1, revision as label)", labels=["revision"])
        v.add_metric([self.config_revision], 1)
        yield v
        yield CounterMetricFamily("mdriver_proxy_config_reload_errors", "Config reloads refused as invalid", value=self.config_errors)
        m = GaugeMetricFamily("mdriver_proxy_migration_phase", "Migration phase per table (value 1 on the current reads/writes labels)",
                              labels=["schema", "table", "reads", "writes"])
        for labels in self.migrations:
            m.add_metric(list(labels), 1)
        yield m
        if self.shadow is not None:
            snap = self.shadow()
            s = CounterMetricFamily("mdriver_proxy_shadow_reads", "Shadow reads by outcome", labels=["outcome"])
            s.add_metric(["compared"], snap["compared"])
            s.add_metric(["mismatched"], snap["mismatched"])
            s.add_metric(["failed"], snap["failed"])
            yield s

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _MetricsHttp(asyncio.Protocol):
    """Answers any GET with the metrics; enough for Prometheus and curl."""

    def __init__(self, metrics: ProxyMetrics):
        self.metrics = metrics
        self.buf = b""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" not in self.buf and b"\n\n" not in self.buf:
            if len(self.buf) > 8192:
                self.transport.close()
            return
        line = self.buf.split(b"\n", 1)[0]
        if not line.startswith(b"GET "):
            self.transport.write(b"HTTP/1.0 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
        else:
            body = self.metrics.render()
            head = f"HTTP/1.0 200 OK\r\nContent-Type: {CONTENT_TYPE_LATEST}\r\nContent-Length: {len(body)}\r\n\r\n"
            self.transport.write(head.encode("ascii") + body)
        self.transport.close()


async def serve_metrics(metrics: ProxyMetrics, host: str, port: int) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _MetricsHttp(metrics), host, port)
