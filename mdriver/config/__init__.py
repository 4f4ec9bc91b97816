"""Config model, loading, validation and sources (DESIGN §3)."""
from mdriver.config.load import config_from_snapshot, load_config
from mdriver.config.model import (
    Config,
    DataSource,
    IdGenerator,
    Migration,
    Placement,
    ProxyOptions,
    ProxyUser,
    Replica,
    RouterOptions,
    Schema,
    TableRule,
)
from mdriver.config.sources import ConfigSource, ConfigSourceError, ConflictError, FileSource, Snapshot, open_source
from mdriver.config.validate import ConfigError, build_config

__all__ = [
    "Config", "ConfigError", "ConfigSource", "ConfigSourceError", "ConflictError", "DataSource", "FileSource",
    "IdGenerator", "Migration", "Placement", "ProxyOptions", "ProxyUser", "Replica", "RouterOptions", "Schema",
    "Snapshot", "TableRule", "build_config", "config_from_snapshot", "load_config", "open_source",
]
