"""Publishing config: validate, diff, then compare-and-swap. Used by ``mdriver-config`` and the migrator.

Every writer goes through :func:`publish` (a whole new text, e.g. ``push FILE``
or ``rollback REV``) or :func:`update` (a read-modify-write of the document,
e.g. the migrator moving a table to the next phase). Both refuse invalid config
with the same checks as ``mdriver-config check``, and both write only if the
config is still at the revision they read, so concurrent writers never
overwrite each other: the loser gets ConflictError (``update`` re-reads and
retries a few times, since its change is a function of the current document).

Note: ``update`` rewrites the document with ``yaml.safe_dump``, so comments in
the published text are not kept across a migrator phase change.
"""
from __future__ import annotations

import copy
import difflib
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import yaml

from mdriver.config.etcd import ConfigNotFoundError, EtcdSource
from mdriver.config.model import READ_PHASES, WRITE_PHASES, Config
from mdriver.config.sources import ConfigSource, ConfigSourceError, ConflictError, FileSource, open_source, parse_yaml
from mdriver.config.validate import ConfigError, build_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Current:
    """What the source holds now: ``text``/``revision`` are None when nothing has been published."""

    text: str | None
    revision: str | None


@dataclass(frozen=True)
class PushResult:
    changed: bool
    revision: str | None  # the new revision, or the unchanged current one
    previous: str | None
    diff: str
    config: Config


def read_current(source: ConfigSource) -> Current:
    """The raw current text and revision, even if that text is corrupt."""
    if isinstance(source, EtcdSource):
        raw, _ = source.read_raw()
        return Current(raw.text, str(raw.revision)) if raw else Current(None, None)
    if isinstance(source, FileSource) and not os.path.exists(source.path):
        return Current(None, None)
    try:
        snapshot = source.read()
    except ConfigNotFoundError:
        return Current(None, None)
    return Current(snapshot.text, snapshot.revision)


def validate_text(text: str, where: str) -> Config:
    """The checks of ``mdriver-config check``: raises ConfigSourceError (YAML) or ConfigError."""
    return build_config(parse_yaml(text, where), source=where)


def unified_diff(old: str | None, new: str, old_name: str, new_name: str) -> str:
    lines = difflib.unified_diff((old or "").splitlines(keepends=True), new.splitlines(keepends=True), old_name, new_name)
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def publish(source: str | ConfigSource, text: str, *, expected_revision: str | None = None, base: Current | None = None,
            message: str = "", author: str | None = None, where: str = "new config",
            on_diff: Callable[[str], None] | None = None) -> PushResult:
    """Validate ``text`` and publish it if it differs from the current version.

    ``expected_revision`` pins the write to a revision the caller reviewed
    earlier (ConflictError if the source moved since); by default the write
    is pinned to the revision read here, the one the diff is computed against.
    ``on_diff`` sees the diff before anything is written.
    """
    src = open_source(source) if isinstance(source, str) else source
    config = validate_text(text, where)
    current = base or read_current(src)
    if expected_revision is not None and str(expected_revision) != (current.revision or "0"):
        raise ConflictError(
            f"conflict: the config at {src.url} is at revision {current.revision or 'none'}, not {expected_revision}; "
            "nothing was written. Review with `mdriver-config diff FILE` and push again.")
    old_name = f"{src.url} (revision {current.revision})" if current.revision else f"{src.url} (empty)"
    diff = unified_diff(current.text, text, old_name, where)
    if on_diff is not None:
        on_diff(diff)
    if current.text == text:
        return PushResult(False, current.revision, current.revision, "", config)
    if isinstance(src, EtcdSource):
        revision = src.write(text, current.revision, message=message, author=author)
    else:
        revision = src.write(text, current.revision)
    return PushResult(True, revision, current.revision, diff, config)


def update(source: str | ConfigSource, change: Callable[[Any], None], *, message: str, attempts: int = 5,
           author: str | None = None) -> PushResult:
    """Apply ``change(document)`` (it edits a copy in place) to the current config and publish it.

    Retries on ConflictError (another writer got in between) up to ``attempts`` times.
    """
    src = open_source(source) if isinstance(source, str) else source
    last: ConflictError | None = None
    for _ in range(attempts):
        current = read_current(src)
        if current.text is None:
            raise ConfigSourceError(f"{src.url}: no config has been published yet")
        document = copy.deepcopy(parse_yaml(current.text, f"{src.url} (revision {current.revision})"))
        change(document)
        text = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
        try:
            return publish(src, text, base=current, message=message, author=author, where=f"{src.url} ({message})")
        except ConflictError as e:
            last = e
            log.info("config update %r lost a race, retrying: %s", message, e)
    raise ConflictError(f"{src.url}: gave up on {message!r} after {attempts} conflicting writes: {last}")


def set_migration_phase(source: str | ConfigSource, schema: str, table: str, *, reads: str | None = None,
                        writes: str | None = None, author: str | None = None) -> PushResult:
    """The migrator's phase change (DESIGN §3 ``migration.reads/writes``), published like any push."""
    if reads is not None and reads not in READ_PHASES:
        raise ValueError(f"reads must be one of {', '.join(READ_PHASES)}, got {reads!r}")
    if writes is not None and writes not in WRITE_PHASES:
        raise ValueError(f"writes must be one of {', '.join(WRITE_PHASES)}, got {writes!r}")
    path = f"schemas.{schema}.tables.{table}.migration"

    def change(document: Any) -> None:
        try:
            migration = document["schemas"][schema]["tables"][table]["migration"]
        except (KeyError, TypeError):
            migration = None
        if not isinstance(migration, dict):
            raise ConfigError([f"{path}: no migration is configured for {schema}.{table}"])
        if reads is not None:
            migration["reads"] = reads
        if writes is not None:
            migration["writes"] = writes

    phases = ", ".join(f"{k}={v}" for k, v in (("reads", reads), ("writes", writes)) if v is not None)
    return update(source, change, message=f"migration {schema}.{table}: {phases}", author=author)
