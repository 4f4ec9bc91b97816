"""Load and validate config from any source in one call."""
from __future__ import annotations

from mdriver.config.model import Config
from mdriver.config.sources import ConfigSource, Snapshot, open_source
from mdriver.config.validate import build_config


def config_from_snapshot(snapshot: Snapshot, source: str) -> Config:
    return build_config(snapshot.document, source=source, revision=snapshot.revision)


def load_config(source: str | ConfigSource) -> Config:
    """Read and validate; raises ConfigSourceError or ConfigError with every problem listed."""
    src = open_source(source) if isinstance(source, str) else source
    return config_from_snapshot(src.read(), src.url)
