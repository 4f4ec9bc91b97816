"""Fixtures of the router's differential suite: the same data in ``app_ref`` and in the shards."""
from __future__ import annotations

import importlib.util
import pathlib
from collections import Counter
from datetime import datetime
from decimal import Decimal

import pytest

from mdriver.router import Router, run_sync
from mdriver.router.backend import SyncBackend

_spec = importlib.util.spec_from_file_location("mdriver_router_testdata", pathlib.Path(__file__).with_name("data.py"))
data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(data)  # type: ignore[union-attr]

TABLES = ("user_relation", "user_fans", "region")


class Env:
    """A router and backend over the test cluster, and a connection to the reference database."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.config = cluster.config
        self.router = Router(cluster.config)
        self.backend = SyncBackend(cluster.config)
        self.ref = cluster.connect(cluster.reference_datasource, cluster.reference_database)

    def close(self) -> None:
        self.backend.close()
        self.ref.close()

    @staticmethod
    def same_rows(got, want, ordered: bool) -> bool:
        return same_rows(got, want, ordered)

    @staticmethod
    def canon_rows(rows) -> list[tuple]:
        return canon_rows(rows)

    def run(self, sql: str, params=None, schema: str = "app"):
        return run_sync(self.router.plan(sql, schema, params), self.backend)

    def reference(self, sql: str, params=None):
        """(column names, rows) from the unsharded reference database, through PyMySQL as the driver would."""
        with self.ref.cursor() as cur:
            cur.execute(sql, params)
            names = [d[0] for d in cur.description] if cur.description else []
            return names, list(cur.fetchall()), cur.rowcount

    def empty(self) -> None:
        for table in TABLES:
            self.cluster.truncate("app", table)

    def load(self) -> None:
        """Empty every copy of the test tables, then load the data set into both sides."""
        self.empty()
        for table, (cols, rows) in data.dataset().items():
            ph = "(" + ", ".join(["%s"] * len(cols)) + ")"
            with self.ref.cursor() as cur:
                cur.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES {ph}", rows)
            for i in range(0, len(rows), 250):
                chunk = rows[i:i + 250]
                sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES " + ", ".join([ph] * len(chunk))
                res = self.run(sql, [v for row in chunk for v in row])
                assert res.affected_rows == len(chunk), (table, res.affected_rows, len(chunk))


@pytest.fixture(scope="module")
def env(mariadb_cluster):
    e = Env(mariadb_cluster)
    e.load()
    try:
        yield e
    finally:
        try:
            e.empty()  # leave the shared cluster as empty as the session fixture made it
        finally:
            e.close()


def canon(v):
    """Values compared exactly, including the scale of decimals (AVG's scale is part of the answer)."""
    if isinstance(v, Decimal):
        return ("D", str(v))
    if isinstance(v, float):
        return ("F", float(f"{v:.12g}"))
    if isinstance(v, datetime):
        return ("T", v.isoformat())
    return v


def canon_rows(rows) -> list[tuple]:
    return [tuple(canon(v) for v in r) for r in rows]


def same_rows(got, want, ordered: bool) -> bool:
    g, w = canon_rows(got), canon_rows(want)
    if ordered:
        return g == w
    return Counter(g) == Counter(w)
