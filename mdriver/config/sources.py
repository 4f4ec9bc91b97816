"""Where config comes from: a YAML file (default) or etcd (``etcd://host:port/prefix``).

A source reads and writes the raw document with a revision, so that writers
can compare-and-swap and readers can tell versions apart. Validation is not
done here; see :func:`mdriver.config.load.load_config`.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Protocol

import yaml


class ConfigSourceError(Exception):
    """The config could not be read or written (missing file, unreachable etcd, bad YAML)."""


class ConflictError(ConfigSourceError):
    """A compare-and-swap write lost: someone else changed the config first."""


@dataclass(frozen=True)
class Snapshot:
    """One version of the raw config document."""

    document: Any
    revision: str
    text: str


class ConfigSource(Protocol):
    url: str

    def read(self) -> Snapshot: ...

    def write(self, text: str, expected_revision: str | None) -> str: ...


def parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigSourceError(f"{where}: invalid YAML{at}: {problem}") from None


def text_revision(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


class FileSource:
    """A YAML file. The revision is a hash of its content."""

    def __init__(self, path: str):
        self.url = path
        self.path = path

    def read(self) -> Snapshot:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ConfigSourceError(f"{self.path}: cannot read config: {e.strerror}") from None
        return Snapshot(parse_yaml(text, self.path), text_revision(text), text)

    def write(self, text: str, expected_revision: str | None) -> str:
        """Replace the file atomically; refuse if it changed since ``expected_revision``."""
        if expected_revision is not None:
            current = self.read().revision
            if current != expected_revision:
                raise ConflictError(f"{self.path} changed since revision {expected_revision} (now {current}); re-read and retry")
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".sharding-", suffix=".yaml", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.path)
        return text_revision(text)


def open_source(url: str) -> ConfigSource:
    """A file path, or an ``etcd://host:port/prefix`` URL."""
    if url.startswith("etcd://"):
        from mdriver.config.etcd import EtcdSource

        return EtcdSource.from_url(url)
    if "://" in url and not url.startswith("file://"):
        raise ConfigSourceError(f"{url}: unsupported config URL (use a file path or etcd://host:port/prefix)")
    return FileSource(url[len("file://"):] if url.startswith("file://") else url)
