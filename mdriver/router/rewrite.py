"""Narrow textual rewriting: physical SQL is the template with a few spans replaced.

A *program* is a list of parts rendered in order:

- ``str``: text copied as is,
- ``int >= 0``: marker ``i``, rendered as the literal's original text (byte
  for byte) or as the escaped parameter,
- ``int < 0``: table occurrence ``-1 - i``, rendered per physical target,
- an object with ``render(nv, ctx)``: computed text (pruned IN lists, LIMIT).

Only table names (and, for scatter, the select list, GROUP BY, ORDER BY and
LIMIT clauses) are ever replaced; everything else, literals included, is the
user's text. No SQL is regenerated from a syntax tree for what is sent,
except small expressions the merger needs extra (hidden aggregate arguments).
"""
from __future__ import annotations

from mdriver.router.scan import Tok

Part = object


class Splice:
    __slots__ = ("start", "end", "parts")

    def __init__(self, start: int, end: int, parts: list):
        self.start = start
        self.end = end
        self.parts = parts


class Builder:
    """Cut template ranges into programs, applying splices and turning markers into parts."""

    def __init__(self, template: str, toks: list[Tok], splices: list[Splice] | None = None):
        self.template = template
        repl: list[Splice] = list(splices or [])
        covered = [(s.start, s.end) for s in repl]
        for t in toks:
            if t.kind == "marker" and not any(a <= t.start < b for a, b in covered):
                repl.append(Splice(t.start, t.end, [int(t.text[2:])]))
        repl.sort(key=lambda s: s.start)
        for a, b in zip(repl, repl[1:]):
            if b.start < a.end:
                raise ValueError(f"overlapping rewrites at {a.start}..{a.end} and {b.start}..{b.end}")
        self.splices = repl

    def range(self, start: int, end: int) -> list:
        out: list = []
        pos = start
        for s in self.splices:
            if s.end <= start or s.start >= end:
                continue
            if s.start < start or s.end > end:
                raise ValueError(f"rewrite {s.start}..{s.end} crosses the range {start}..{end}")
            if s.start > pos:
                out.append(self.template[pos:s.start])
            out.extend(s.parts)
            pos = s.end
        if pos < end:
            out.append(self.template[pos:end])
        return out

    def whole(self) -> list:
        return compact(self.range(0, len(self.template)))


def compact(parts: list) -> list:
    out: list = []
    for p in parts:
        if type(p) is str and out and type(out[-1]) is str:
            out[-1] += p
        elif p != "":
            out.append(p)
    return out


def render(parts: list, nv, occ_text: list[str], ctx=None) -> str:
    out = []
    for p in parts:
        t = type(p)
        if t is str:
            out.append(p)
        elif t is int:
            out.append(nv.text(p) if p >= 0 else occ_text[-1 - p])
        else:
            out.append(p.render(nv, ctx))
    return "".join(out)


def occ_part(idx: int) -> int:
    return -1 - idx


class InSubset:
    """The values of an ``IN`` list that live on the shard being rendered."""

    __slots__ = ("pid", "all")

    def __init__(self, pid: int, markers: list[int]):
        self.pid = pid
        self.all = markers

    def render(self, nv, ctx) -> str:
        chosen = ctx.in_subsets.get(self.pid) if ctx is not None else None
        markers = self.all if chosen is None else chosen
        return ", ".join(nv.text(i) for i in markers)


class LimitText:
    """``LIMIT n`` pushed to each shard: n = offset + count of the client's LIMIT."""

    __slots__ = ()

    def render(self, nv, ctx) -> str:
        return f"LIMIT {ctx.push_limit}" if ctx is not None and ctx.push_limit is not None else ""


def part_text(parts: list) -> str:
    """A readable form of a program (markers as :vN, tables as {tN}) for describe()."""
    out = []
    for p in parts:
        if type(p) is str:
            out.append(p)
        elif type(p) is int:
            out.append(f":v{p}" if p >= 0 else f"{{t{-1 - p}}}")
        else:
            out.append(f"<{type(p).__name__}>")
    return "".join(out)
