"""Checkpoints: how far each applied-to server is, stored next to the rows they cover.

A batch written to one datasource cannot share a transaction with a batch
written to another, so there is one checkpoint row per (stream, applied-to
datasource, read-from datasource), living in ``_mdriver_migrate.checkpoint``
*on the applied-to server* and written in the same transaction as the rows.
So a checkpoint never runs ahead of the rows it describes: after a crash,
each server's row says exactly what that server holds, and the migrator
resumes each binlog from the minimum position over the servers it feeds,
skipping for each server what it already has.

A forward checkpoint means: on this target datasource, every row whose
primary key is ``<= copy_last_pk`` (all rows once ``copy_done``) equals the
source as of binlog position ``binlog_file:binlog_pos``, and no other row of
the table exists there.
"""
from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Iterable

from migrator import db
from migrator.state import CONTROL_DB, Position


@dataclass(frozen=True)
class Checkpoint:
    migration: str
    stream: str  # forward | reverse
    applied_to: str
    read_from: str
    position: Position
    last_pk: tuple | None = None  # None: nothing copied yet
    copy_done: bool = False
    rows_copied: int = 0
    events_applied: int = 0

    def advanced(self, position: Position, events: int = 0) -> "Checkpoint":
        return replace(self, position=position, events_applied=self.events_applied + events)

    def copied(self, last_pk: tuple, rows: int, position: Position) -> "Checkpoint":
        return replace(self, last_pk=last_pk, rows_copied=self.rows_copied + rows, position=position)


def encode_pk(values: tuple | None) -> str | None:
    """JSON for a primary key tuple, keeping the types the comparisons need."""
    if values is None:
        return None
    return json.dumps([_encode_value(v) for v in values])


def decode_pk(text: str | bytes | None) -> tuple | None:
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return tuple(_decode_value(v) for v in json.loads(text))


def _encode_value(v: Any) -> Any:
    if isinstance(v, bool) or v is None:
        raise TypeError(f"primary key value {v!r} cannot be stored in a checkpoint")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        return {"s": v}
    if isinstance(v, (bytes, bytearray)):
        return {"b": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, Decimal):
        return {"d": str(v)}
    if isinstance(v, datetime.datetime):
        return {"dt": v.isoformat()}
    if isinstance(v, datetime.date):
        return {"da": v.isoformat()}
    raise TypeError(f"primary key value {v!r} ({type(v).__name__}) cannot be stored in a checkpoint")


def _decode_value(v: Any) -> Any:
    if isinstance(v, int):
        return v
    (kind, text), = v.items()
    if kind == "s":
        return text
    if kind == "b":
        return base64.b64decode(text)
    if kind == "d":
        return Decimal(text)
    if kind == "dt":
        return datetime.datetime.fromisoformat(text)
    if kind == "da":
        return datetime.date.fromisoformat(text)
    raise ValueError(f"unknown checkpoint value kind {kind!r}")


def save_sql(cp: Checkpoint) -> tuple[str, tuple]:
    """The statement that stores ``cp``; run it inside the transaction of the rows it covers."""
    sql = (
        f"INSERT INTO `{CONTROL_DB}`.`checkpoint` (migration, stream, applied_to, read_from, binlog_file, binlog_pos,"
        " copy_last_pk, copy_done, rows_copied, events_applied, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, UTC_TIMESTAMP(6))"
        " ON DUPLICATE KEY UPDATE binlog_file = VALUES(binlog_file), binlog_pos = VALUES(binlog_pos),"
        " copy_last_pk = VALUES(copy_last_pk), copy_done = VALUES(copy_done), rows_copied = VALUES(rows_copied),"
        " events_applied = VALUES(events_applied), updated_at = VALUES(updated_at)"
    )
    args = (cp.migration, cp.stream, cp.applied_to, cp.read_from, cp.position.file, cp.position.pos,
            encode_pk(cp.last_pk), int(cp.copy_done), cp.rows_copied, cp.events_applied)
    return sql, args


def save(conn: Any, cp: Checkpoint) -> None:
    sql, args = save_sql(cp)
    with conn.cursor() as cur:
        cur.execute(sql, args)


def load(conn: Any, migration: str, stream: str, applied_to: str | None = None) -> list[Checkpoint]:
    where = "migration = %s AND stream = %s"
    args: list = [migration, stream]
    if applied_to is not None:
        where += " AND applied_to = %s"
        args.append(applied_to)
    rows = db.query(
        conn,
        "SELECT applied_to, read_from, binlog_file, binlog_pos, copy_last_pk, copy_done, rows_copied, events_applied"
        f" FROM `{CONTROL_DB}`.`checkpoint` WHERE {where} ORDER BY applied_to, read_from",
        tuple(args),
    )
    return [
        Checkpoint(migration, stream, _s(r[0]), _s(r[1]), Position(_s(r[2]), int(r[3])), decode_pk(r[4]), bool(r[5]),
                   int(r[6]), int(r[7]))
        for r in rows
    ]


def delete(conn: Any, migration: str, stream: str | None = None) -> None:
    with conn.cursor() as cur:
        if stream is None:
            cur.execute(f"DELETE FROM `{CONTROL_DB}`.`checkpoint` WHERE migration = %s", (migration,))
        else:
            cur.execute(f"DELETE FROM `{CONTROL_DB}`.`checkpoint` WHERE migration = %s AND stream = %s",
                        (migration, stream))


def resume_position(checkpoints: Iterable[Checkpoint]) -> Position:
    """Where a binlog must be read from so that every server gets what it lacks: the minimum."""
    return min((cp.position for cp in checkpoints), key=Position.key)


def _s(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)
