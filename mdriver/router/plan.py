"""A bound plan: what one statement with its values does, ready to execute."""
from __future__ import annotations

from typing import Generator

from mdriver.router.primitives import Primitive, Route, RowSet
from mdriver.router.types import Result, ShardQuery, ShardResult


class Plan:
    """The result of ``Router.plan()``.

    ``single`` is set when the statement is exactly one physical statement
    whose result needs no merging (the proxy relays its packets verbatim).
    ``execute()`` is a generator: it yields ``list[ShardQuery]`` batches,
    receives ``list[ShardResult]`` in the same order and returns a Result.
    """

    __slots__ = ("kind", "is_write", "single", "tables", "schema", "force_primary", "root", "_route")

    def __init__(self, kind: str, is_write: bool, tables: tuple[str, ...], schema: str, force_primary: bool,
                 single: ShardQuery | None = None, root: Primitive | None = None, route: tuple | None = None):
        self.kind = kind
        self.is_write = is_write
        self.tables = tables
        self.schema = schema
        self.force_primary = force_primary
        self.single = single
        self.root = root
        self._route = route  # (opcode, tables, slots) describing a single statement

    def __repr__(self) -> str:
        where = f"single={self.single}" if self.single else f"root={type(self.root).__name__}"
        return f"Plan({self.kind}, {where})"

    def _single_route(self) -> Route:
        opcode, tables, slots = self._route or ("UNSHARDED", list(self.tables), "")
        return Route(opcode, list(tables), slots, [self.single])  # type: ignore[list-item]

    def describe(self) -> dict:
        """A JSON-able tree of primitives (what PREVIEW, EXPLAIN and the case files print)."""
        d = self.root.describe() if self.root is not None else self._single_route().describe()
        if self.force_primary and not self.is_write:
            d["force_primary"] = True
        return d

    def preview(self) -> list[ShardQuery]:
        """Every physical statement that would run, without running anything."""
        if self.root is not None:
            return self.root.queries()
        return [self.single] if self.single is not None else []

    def execute(self) -> Generator[list[ShardQuery], list[ShardResult], Result]:
        if self.root is None:
            results = yield [self.single]  # type: ignore[list-item]
            r = results[0]
            return Result(tuple(r.columns), r.rows, r.affected_rows, r.insert_id, r.warnings)
        out = yield from self.root.execute()
        if isinstance(out, RowSet):
            return Result(tuple(out.columns), out.rows, 0, 0, out.warnings)
        return out
