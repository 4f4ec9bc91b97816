"""Shard functions and the slot -> physical location mapping (DESIGN §3).

Everything here is pure and predictable, so an operator can compute where a
row lives with a calculator: ``slot = key % n`` for ``mod``, the CRC32 of the
key's text for ``hash``; ``db_index = slot // tables_per_database``.
"""
from __future__ import annotations

import bisect
import importlib
import zlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Iterator

from mdriver.config.model import Schema, TableRule


class ShardKeyError(ValueError):
    """A shard key value that the table's algorithm cannot place."""


@dataclass(frozen=True, order=True)
class Location:
    """One physical table: where a slot of a logical table lives."""

    datasource: str
    database: str
    table: str
    slot: int = -1  # -1 for unsharded and broadcast copies


def physical_database(schema: str, db_index: int) -> str:
    return f"{schema}_{db_index:02d}"


def physical_table(table: str, slot: int) -> str:
    return f"{table}_{slot:04d}"


def _int_key(rule: TableRule, key: object) -> int:
    if isinstance(key, bool) or key is None:
        raise ShardKeyError(f"{rule.name}.{rule.shard_key}: {key!r} is not an integer shard key")
    if isinstance(key, int):
        return key
    if isinstance(key, Decimal) and key == key.to_integral_value():
        return int(key)
    raise ShardKeyError(
        f"{rule.name}.{rule.shard_key}: algorithm {rule.algorithm} needs an integer key, got {type(key).__name__} {key!r}"
    )


def _hash_text(key: object) -> bytes:
    if isinstance(key, (bytes, bytearray)):
        return bytes(key)
    return str(key).encode("utf-8")


def load_custom(function: str) -> Callable[[object, int], int]:
    """Import ``package.module:function``; raises ImportError/AttributeError/ValueError."""
    module_name, sep, attr = function.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{function!r} is not of the form package.module:function")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise ValueError(f"{function!r} is not callable")
    return fn


def slot_for(rule: TableRule, key: object) -> int:
    """The slot (0 .. databases*tables_per_database-1) holding ``key``."""
    if key is None:
        raise ShardKeyError(f"{rule.name}.{rule.shard_key}: NULL cannot be a shard key")
    n = rule.slots
    algorithm = rule.algorithm
    if algorithm == "mod":
        return _int_key(rule, key) % n
    if algorithm == "hash":
        return zlib.crc32(_hash_text(key)) % n
    if algorithm == "range":
        return bisect.bisect_right(rule.boundaries, _int_key(rule, key))
    if algorithm == "custom":
        fn = rule.shard_fn or load_custom(rule.function or "")
        slot = fn(key, n)
        if not isinstance(slot, int) or not 0 <= slot < n:
            raise ShardKeyError(f"{rule.name}: custom function {rule.function} returned {slot!r}, not a slot in 0..{n - 1}")
        return slot
    raise ShardKeyError(f"{rule.name}: table is not sharded")


def datasource_for_db(rule: TableRule, db_index: int) -> str:
    for p in rule.placement:
        if p.first <= db_index <= p.last:
            return p.datasource
    raise ShardKeyError(f"{rule.name}: database {db_index} has no datasource")


def location_of_slot(schema: Schema, rule: TableRule, slot: int) -> Location:
    db_index = slot // rule.tables_per_database
    return Location(
        datasource_for_db(rule, db_index),
        physical_database(schema.name, db_index),
        physical_table(rule.name, slot),
        slot,
    )


def locate(schema: Schema, rule: TableRule, key: object) -> Location:
    """Where the row with shard key ``key`` of a sharded table lives."""
    return location_of_slot(schema, rule, slot_for(rule, key))


def home_location(schema: Schema, table: str) -> Location:
    """An unsharded table (or the home copy of a broadcast table)."""
    return Location(schema.datasource, schema.name, table)


def shard_databases(schema: Schema) -> list[tuple[str, str]]:
    """Every (datasource, physical database) that some sharded table uses, sorted."""
    seen: set[tuple[str, str]] = set()
    for rule in schema.tables.values():
        if rule.sharded:
            for db_index in range(rule.databases):
                seen.add((datasource_for_db(rule, db_index), physical_database(schema.name, db_index)))
    return sorted(seen)


def all_locations(schema: Schema, rule: TableRule) -> list[Location]:
    """Every physical table of a logical table, in slot order (home copy first for broadcast)."""
    if rule.sharded:
        return [location_of_slot(schema, rule, s) for s in range(rule.slots)]
    if rule.broadcast:
        home = home_location(schema, rule.name)
        return [home] + [Location(ds, db, rule.name) for ds, db in shard_databases(schema) if (ds, db) != (home.datasource, home.database)]
    return [home_location(schema, rule.name)]


def iter_physical_databases(schema: Schema) -> Iterator[tuple[str, str]]:
    """The home database, then every shard database: what the sandbox must create."""
    yield (schema.datasource, schema.name)
    for pair in shard_databases(schema):
        if pair != (schema.datasource, schema.name):
            yield pair
