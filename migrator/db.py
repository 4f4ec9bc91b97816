"""Connections to the servers of a migration, all with the same session settings.

Every connection the migrator opens uses UTC (TIMESTAMP values read on one
server and written on another must not shift), a fixed strict ``sql_mode``
with ``NO_AUTO_VALUE_ON_ZERO`` (an AUTO_INCREMENT column copied with the value
0 keeps 0) and without ``NO_BACKSLASH_ESCAPES`` (our literals use backslash
escapes), and utf8mb4. ``raw`` connections return every value as the bytes
the server sent, which the copier turns into literals without decoding.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import pymysql
import pymysql.converters
from pymysql.constants import CLIENT

from mdriver.config.model import DataSource
from migrator.errors import classify

SESSION_SQL_MODE = "STRICT_TRANS_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION,ERROR_FOR_DIVISION_BY_ZERO"

# Encoders only: without decoders PyMySQL hands back raw bytes (with use_unicode=False).
_RAW_CONV = {k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)}


def connect(
    ds: DataSource,
    *,
    role: str,
    database: str | None = None,
    raw: bool = False,
    multi: bool = False,
    autocommit: bool = True,
    read_timeout: float | None = None,
) -> pymysql.connections.Connection:
    """Open a session on ``ds``; failures become MigrationErrors naming the server and ``role``."""
    kwargs: dict = dict(
        host=ds.host,
        port=ds.port,
        user=ds.user,
        password=ds.password,
        database=database,
        charset="utf8mb4",
        autocommit=autocommit,
        connect_timeout=max(1, int(ds.connect_timeout)),
        read_timeout=read_timeout if read_timeout is not None else None,
        write_timeout=None,
        client_flag=CLIENT.MULTI_STATEMENTS if multi else 0,
        init_command=(
            f"SET SESSION time_zone = '+00:00', SESSION sql_mode = '{SESSION_SQL_MODE}', "
            "SESSION group_concat_max_len = 1048576"
        ),
    )
    if raw:
        kwargs.update(conv=dict(_RAW_CONV), use_unicode=False)
    try:
        return pymysql.connect(**kwargs)
    except pymysql.err.MySQLError as e:
        raise classify(e, ds.describe(), role) from None
    except OSError as e:
        raise classify(e, ds.describe(), role) from None


@contextlib.contextmanager
def session(ds: DataSource, *, role: str, **kwargs) -> Iterator[pymysql.connections.Connection]:
    """A connection closed on exit; driver errors inside become MigrationErrors for ``role``."""
    conn = connect(ds, role=role, **kwargs)
    try:
        yield conn
    except (pymysql.err.MySQLError, OSError) as e:
        raise classify(e, ds.describe(), role) from None
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def query(conn: pymysql.connections.Connection, sql: str, args: object = None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def query_one(conn: pymysql.connections.Connection, sql: str, args: object = None) -> tuple | None:
    rows = query(conn, sql, args)
    return rows[0] if rows else None


def run_script(conn: pymysql.connections.Connection, sql: str | bytes) -> None:
    """Send several statements in one round trip (needs ``multi=True``) and consume every result.

    PyMySQL's ``next_result`` would block if called once too often, so the loop
    follows the server's "more results" flag.
    """
    conn.query(sql)
    while conn._result is not None and conn._result.has_next:  # noqa: SLF001 - PyMySQL exposes no public flag
        conn.next_result()
