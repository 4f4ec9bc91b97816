"""Read-modify-write of the config document, for file and etcd sources alike.

This is how migration phases reach every driver and proxy: read the current
document, change a deep copy, validate the result with the same checks as
loading (:func:`~mdriver.config.validate.build_config`), and compare-and-swap
it into the source, retrying when another writer got in between. The
compare-and-swap and the history entry (etcd) are :func:`mdriver.config.publish.update`'s;
this module adds the migration-shaped edits and returns the new snapshot.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import yaml

from mdriver.config.publish import update
from mdriver.config.sources import ConfigSource, Snapshot, open_source
from mdriver.config.validate import ConfigError


def update_document(source: str | ConfigSource, mutate: Callable[[dict], None], retries: int = 5,
                    message: str = "config edit") -> Snapshot:
    """Apply ``mutate`` to a deep copy of the current document, validate, and compare-and-swap it.

    Raises ConfigError (the result would be invalid; nothing written),
    ConflictError (lost ``retries`` races in a row) or ConfigSourceError.
    """
    src = open_source(source) if isinstance(source, str) else source
    produced: dict[str, Any] = {}

    def change(document: Any) -> None:
        if not isinstance(document, dict):
            raise ConfigError(["(top): the config is not a mapping"], src.url)
        mutate(document)
        produced["document"] = copy.deepcopy(document)

    result = update(src, change, message=message, attempts=retries)
    document = produced.get("document")
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    return Snapshot(document, str(result.revision), text)


def _table(document: dict, schema: str, table: str, path: str) -> dict:
    try:
        rule = document["schemas"][schema]["tables"][table]
    except (KeyError, TypeError):
        rule = None
    if not isinstance(rule, dict):
        raise ConfigError([f"{path}: table {schema}.{table} is not in the config"])
    return rule


def set_migration(source: str | ConfigSource, schema: str, table: str, migration: Mapping[str, Any]) -> Snapshot:
    """Add or replace the ``migration:`` block of ``schema.table`` (``{source: {...}, reads, writes}``)."""
    block = copy.deepcopy(dict(migration))

    def mutate(document: dict) -> None:
        _table(document, schema, table, f"schemas.{schema}.tables.{table}")["migration"] = block

    return update_document(source, mutate, message=f"migration {schema}.{table}: configured")


def remove_migration(source: str | ConfigSource, schema: str, table: str) -> Snapshot:
    """Drop the ``migration:`` block: the table is served by its shards alone from now on."""

    def mutate(document: dict) -> None:
        _table(document, schema, table, f"schemas.{schema}.tables.{table}").pop("migration", None)

    return update_document(source, mutate, message=f"migration {schema}.{table}: finished")
