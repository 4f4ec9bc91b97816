"""Token positions in a template: clause boundaries, list items, VALUES rows.

sqlglot gives positions only for identifiers, so the rewriter finds clause
boundaries itself. The template has its literals replaced by markers, so a
small tokenizer that skips comments and quoted text is exact; every finding
is cross-checked against the parsed tree by the planner before it is used.
Runs only on a plan-cache miss.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from mdriver.compat import DATACLASS_SLOTS

_TOKEN = re.compile(
    r"""
 (?P<ws>\s+)
|(?P<comment>/\*.*?\*/|(?:--[ \t]|\#)[^\n]*)
|(?P<ident>`(?:[^`]|``)*`)
|(?P<str>(?:_[A-Za-z0-9]+[ \t]*|[nNxXbB])?(?:'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"))
|(?P<marker>:v\d+)
|(?P<word>[A-Za-z0-9_$][\w$]*)
|(?P<op>.)
""",
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True, **DATACLASS_SLOTS)
class Tok:
    kind: str  # ident | str | marker | word | op
    start: int
    end: int  # exclusive
    text: str  # upper-cased for words
    depth: int  # parenthesis depth before the token


def tokenize(text: str) -> list[Tok]:
    toks: list[Tok] = []
    depth = 0
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind in ("ws", "comment"):
            continue
        s = m.group()
        if kind == "word":
            s = s.upper()
        elif kind == "op" and s == ")":
            depth -= 1
        toks.append(Tok(kind, m.start(), m.end(), s, depth))
        if kind == "op" and s == "(":
            depth += 1
    return toks


def first_words(toks: list[Tok], n: int = 3) -> list[str]:
    """The first ``n`` words (after leading parentheses), upper-cased."""
    out = []
    for t in toks:
        if t.kind == "op" and t.text == "(":
            continue
        if t.kind != "word":
            break
        out.append(t.text)
        if len(out) == n:
            break
    return out


def marker_positions(toks: list[Tok]) -> dict[int, tuple[int, int]]:
    """Marker index -> (start, end) in the template."""
    return {int(t.text[2:]): (t.start, t.end) for t in toks if t.kind == "marker"}


def split_items(toks: list[Tok], lo: int, hi: int, depth: int) -> list[tuple[int, int]]:
    """Split tokens with index in [lo, hi) at commas of ``depth``: [(start, end)] text ranges."""
    items = []
    first = lo
    for i in range(lo, hi):
        t = toks[i]
        if t.kind == "op" and t.text == "," and t.depth == depth:
            if i > first:
                items.append((toks[first].start, toks[i - 1].end))
            first = i + 1
    if hi > first:
        items.append((toks[first].start, toks[hi - 1].end))
    return items


_SELECT_MODIFIERS = {
    "ALL", "DISTINCT", "DISTINCTROW", "HIGH_PRIORITY", "STRAIGHT_JOIN", "SQL_SMALL_RESULT", "SQL_BIG_RESULT",
    "SQL_BUFFER_RESULT", "SQL_CACHE", "SQL_NO_CACHE", "SQL_CALC_FOUND_ROWS",
}
_CLAUSES = ("FROM", "WHERE", "GROUP", "HAVING", "WINDOW", "ORDER", "LIMIT", "FOR", "LOCK", "INTO", "PROCEDURE")


@dataclass
class SelectClauses:
    """Where each clause of one SELECT starts, as token indexes and text positions."""

    select: int  # text position of SELECT
    modifiers: list[str]
    modifiers_end: int  # text position after the last modifier (start of the select list)
    items: list[tuple[int, int]]  # select list items
    starts: dict[str, int]  # clause keyword -> text position of the keyword
    item_ranges: dict[str, list[tuple[int, int]]]  # GROUP/ORDER -> item ranges
    end: int  # text position after the last token of this SELECT

    def clause_end(self, name: str) -> int:
        """Text position where clause ``name`` ends (the next clause or the end)."""
        pos = self.starts[name]
        later = [p for p in self.starts.values() if p > pos]
        return min(later) if later else self.end


def select_clauses(toks: list[Tok], first: int = 0, depth: int = 0) -> SelectClauses | None:
    """Clauses of the SELECT whose keyword is the first ``depth``-level token at or after ``first``."""
    i = first
    n = len(toks)
    while i < n and not (toks[i].kind == "word" and toks[i].text == "SELECT" and toks[i].depth == depth):
        i += 1
    if i == n:
        return None
    select_pos = toks[i].start
    i += 1
    modifiers = []
    while i < n and toks[i].kind == "word" and toks[i].text in _SELECT_MODIFIERS:
        modifiers.append(toks[i].text)
        i += 1
    modifiers_end = toks[i - 1].end
    list_first = i
    # clause keywords at this depth, in order
    marks: list[tuple[str, int]] = []
    last = i
    while i < n:
        t = toks[i]
        if t.depth < depth:  # the parenthesis that encloses this SELECT
            break
        if t.depth == depth and t.kind == "word":
            if t.text in ("UNION", "EXCEPT", "INTERSECT"):
                break
            if t.text in _CLAUSES and not (t.text == "FOR" and _next_word(toks, i) not in ("UPDATE", "SHARE")):
                marks.append((t.text, i))
        last = i
        i += 1
    end = toks[last].end if last < n else toks[-1].end
    starts = {name: toks[idx].start for name, idx in marks}
    list_last = marks[0][1] if marks else last + 1
    items = split_items(toks, list_first, list_last, depth)
    item_ranges: dict[str, list[tuple[int, int]]] = {}
    for k, (name, idx) in enumerate(marks):
        nxt = marks[k + 1][1] if k + 1 < len(marks) else last + 1
        if name in ("GROUP", "ORDER"):
            lo = idx + 2 if idx + 1 < n and toks[idx + 1].text == "BY" else idx + 1
            hi = nxt
            # WITH ROLLUP is not an item
            if hi - 2 > lo and toks[hi - 2].text == "WITH" and toks[hi - 1].text == "ROLLUP":
                hi -= 2
            item_ranges[name] = split_items(toks, lo, hi, depth)
    return SelectClauses(select_pos, modifiers, modifiers_end, items, starts, item_ranges, end)


def _next_word(toks: list[Tok], i: int) -> str:
    return toks[i + 1].text if i + 1 < len(toks) and toks[i + 1].kind == "word" else ""


def values_rows(toks: list[Tok]) -> tuple[list[tuple[int, int]], int] | None:
    """Rows of ``INSERT ... VALUES (..), (..)``: their text ranges and where the list ends."""
    i = 0
    n = len(toks)
    while i < n and not (toks[i].depth == 0 and toks[i].kind == "word" and toks[i].text in ("VALUES", "VALUE")):
        i += 1
    if i == n:
        return None
    i += 1
    rows = []
    while i < n:
        t = toks[i]
        if not (t.kind == "op" and t.text == "(" and t.depth == 0):
            return None
        j = i + 1
        while j < n and not (toks[j].kind == "op" and toks[j].text == ")" and toks[j].depth == 0):
            j += 1
        if j == n:
            return None
        rows.append((t.start, toks[j].end))
        i = j + 1
        if i < n and toks[i].kind == "op" and toks[i].text == "," and toks[i].depth == 0:
            i += 1
            continue
        break
    end = toks[i - 1].end
    return rows, end


def find_word(toks: list[Tok], word: str, depth: int = 0, start: int = 0) -> int:
    """Token index of the first ``word`` at ``depth`` from token ``start``, or -1."""
    for i in range(start, len(toks)):
        t = toks[i]
        if t.kind == "word" and t.text == word and t.depth == depth:
            return i
    return -1
