"""The source table as the migrator sees it: columns, their kinds, the primary key.

Built by the inspector from information_schema; pure data otherwise, so the
SQL builders and the binlog mapping can be tested without a server.
"""
from __future__ import annotations

from dataclasses import dataclass, field

_KINDS = {
    "tinyint": "int", "smallint": "int", "mediumint": "int", "int": "int", "integer": "int", "bigint": "int",
    "decimal": "decimal", "numeric": "decimal",
    "float": "float", "double": "double", "real": "double",
    "bit": "bit", "year": "year",
    "char": "text", "varchar": "text", "tinytext": "text", "text": "text", "mediumtext": "text", "longtext": "text",
    "json": "text",
    "binary": "binary", "varbinary": "binary", "tinyblob": "binary", "blob": "binary", "mediumblob": "binary",
    "longblob": "binary",
    "enum": "enum", "set": "set",
    "date": "date", "datetime": "datetime", "timestamp": "timestamp", "time": "time",
}

# Key kinds whose order in Python equals their order in the server (so chunk
# bounds and "already copied?" checks agree): numbers, bytes, dates.
ORDERABLE_KEY_KINDS = frozenset({"int", "decimal", "binary", "date", "datetime", "timestamp", "year"})


def kind_of(data_type: str) -> str | None:
    """Our kind for an information_schema DATA_TYPE, None when unsupported (spatial, UUID, INET...)."""
    return _KINDS.get(data_type.lower())


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    column_type: str = ""
    nullable: bool = True
    charset: str | None = None
    collation: str | None = None
    kind: str = ""
    generated: bool = False  # computed by the server (VIRTUAL/STORED): never written, only compared

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", kind_of(self.data_type) or "unsupported")

    @property
    def key_orderable(self) -> bool:
        """Whether Python compares values of this column like the server does."""
        if self.kind in ORDERABLE_KEY_KINDS:
            return True
        # Binary collations compare by code point, like Python strings (trailing-space padding aside).
        return self.kind == "text" and bool(self.collation) and self.collation.endswith("_bin")


@dataclass(frozen=True)
class TableInfo:
    database: str
    table: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    create_sql: str = ""
    unique_keys: tuple[tuple[str, ...], ...] = ()
    _index: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update({c.name: i for i, c in enumerate(self.columns)})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def writable(self) -> tuple[Column, ...]:
        """The columns a copy or an upsert sets (generated columns compute themselves)."""
        return tuple(c for c in self.columns if not c.generated)

    def column(self, name: str) -> Column:
        return self.columns[self._index[name]]

    def has(self, name: str) -> bool:
        return name in self._index

    def position(self, name: str) -> int:
        return self._index[name]

    @property
    def pk_positions(self) -> tuple[int, ...]:
        return tuple(self._index[c] for c in self.primary_key)
