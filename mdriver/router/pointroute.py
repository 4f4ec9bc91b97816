"""The route of a prepared point statement, worked out once.

A prepared statement such as ``SELECT c FROM t WHERE id = ?`` always goes to
one table, chosen by one parameter. Its physical statement, with its ``?``
kept, depends only on the slot. So a proxy that prepares statements on the
backends can route an execute with one hash and a dictionary lookup,
instead of normalizing, binding and rendering each time.
"""
from __future__ import annotations

from mdriver.router.normalize import Normalized
from mdriver.router.rewrite import render
from mdriver.router.routing import Layout, slot_of
from mdriver.router.types import ShardQuery


class PointRoute:
    """Parameters -> the one physical statement (``?`` kept) for a point template."""

    __slots__ = ("rule", "layout", "param", "write", "parts", "nv", "by_slot")

    def __init__(self, layout: Layout, param: int, write: bool, parts: list, nv: Normalized):
        self.rule = layout.rule
        self.layout = layout
        self.param = param  # index of the shard key among the parameters
        self.write = write
        self.parts = parts
        self.nv = nv  # the template's markers: literals as written, parameters as "?"
        self.by_slot: dict[int, ShardQuery] = {}

    def route(self, params) -> ShardQuery | None:
        """The physical statement for these parameters; None for a NULL key (the general path decides)."""
        value = params[self.param]
        if value is None:
            return None
        slot = slot_of(self.rule, value)
        q = self.by_slot.get(slot)
        if q is None:
            lay = self.layout
            sql = render(self.parts, self.nv, [lay.table_sql[slot]])
            q = self.by_slot[slot] = ShardQuery(lay.ds[slot], lay.db[slot], sql, self.write)
        return q


def point_route(tpl, recipe, env) -> PointRoute | None:
    """The PointRoute of a planned template, or None when it is not a plain point statement."""
    if not getattr(tpl, "point", False) or recipe is None or recipe.hints.shard is not None or recipe.hints.primary:
        return None
    ref = tpl.groups[0].pred.ref
    if ref.index is None or ref.neg:
        return None
    param = next((k for i, k in recipe.keys if i == ref.index), None)
    if param is None or recipe.named:
        return None
    texts = list(recipe.texts)
    for i, _ in recipe.keys:
        texts[i] = "?"
    nv = Normalized(recipe.template, texts, [None] * len(texts), recipe.hints, False)
    return PointRoute(env.layout(tpl.groups[0].rule), param, tpl.is_write, tpl.parts, nv)
