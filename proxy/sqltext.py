"""A small SQL tokenizer for the statements the proxy answers itself.

The router owns real SQL. The proxy only needs to recognise session and
admin statements (SET, USE, BEGIN, SHOW, PREVIEW ...) cheaply, so this is a
hand-written scanner, not a parser: words, quoted strings, identifiers,
numbers, punctuation; comments are skipped (``/*! ... */`` kept as a token so
that callers can refuse it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

WORD, STRING, IDENT, NUMBER, PUNCT, VARIABLE, EXEC_COMMENT = "word", "string", "ident", "number", "punct", "var", "exec_comment"

_LEADING = re.compile(r"(?:\s+|/\*(?!!).*?\*/|--(?:\s[^\n]*|$)|#[^\n]*)*", re.S)
_FIRST_WORD = re.compile(r"[A-Za-z_]+")


@dataclass(frozen=True)
class Token:
    kind: str
    text: str  # source text (with quotes for strings and identifiers)
    start: int
    end: int

    @property
    def upper(self) -> str:
        return self.text.upper()

    def value(self) -> str:
        """Strings and identifiers without their quotes (escapes resolved)."""
        if self.kind == STRING:
            return unquote_string(self.text)
        if self.kind == IDENT:
            return self.text[1:-1].replace("``", "`")
        return self.text


class SqlSyntaxError(ValueError):
    pass


def first_word(sql: str) -> str:
    """The first keyword, upper-cased ('' if none): skips whitespace and comments."""
    m = _LEADING.match(sql)
    pos = m.end() if m else 0
    w = _FIRST_WORD.match(sql, pos)
    return w.group(0).upper() if w else ""


def strip_leading(sql: str) -> str:
    m = _LEADING.match(sql)
    return sql[m.end():] if m else sql


def unquote_string(text: str) -> str:
    q = text[0]
    body = text[1:-1]
    out = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append({"n": "\n", "t": "\t", "r": "\r", "0": "\0", "b": "\b", "Z": "\x1a"}.get(nxt, nxt))
            i += 2
            continue
        if ch == q and i + 1 < len(body) and body[i + 1] == q:
            out.append(q)
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def tokenize(sql: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            if end < 0:
                raise SqlSyntaxError("unterminated comment")
            if sql.startswith("/*!", i) or sql.startswith("/*M!", i):
                tokens.append(Token(EXEC_COMMENT, sql[i:end + 2], i, end + 2))
            i = end + 2
            continue
        if ch == "#" or (ch == "-" and sql.startswith("--", i) and (i + 2 == n or sql[i + 2].isspace())):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if ch in "'\"":
            j = i + 1
            while True:
                if j >= n:
                    raise SqlSyntaxError("unterminated string")
                c = sql[j]
                if c == "\\":
                    j += 2
                    continue
                if c == ch:
                    if j + 1 < n and sql[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            tokens.append(Token(STRING, sql[i:j + 1], i, j + 1))
            i = j + 1
            continue
        if ch == "`":
            j = i + 1
            while True:
                end = sql.find("`", j)
                if end < 0:
                    raise SqlSyntaxError("unterminated identifier")
                if end + 1 < n and sql[end + 1] == "`":
                    j = end + 2
                    continue
                break
            tokens.append(Token(IDENT, sql[i:end + 1], i, end + 1))
            i = end + 1
            continue
        if ch == "@":
            j = i + 1
            if j < n and sql[j] == "@":
                j += 1
            if j < n and sql[j] in "'\"`":
                inner = tokenize(sql[j:])[0] if j < n else None
                j += len(inner.text) if inner else 0
            else:
                while j < n and (sql[j].isalnum() or sql[j] in "_.$"):
                    j += 1
            tokens.append(Token(VARIABLE, sql[i:j], i, j))
            i = j
            continue
        if ch.isdigit() or (ch == "." and i + 1 < n and sql[i + 1].isdigit()):
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] in ".+-" and sql[j - 1] in "eE" or sql[j] == "."):
                j += 1
            tokens.append(Token(NUMBER, sql[i:j], i, j))
            i = j
            continue
        if ch.isalpha() or ch == "_" or ch == "$" or ord(ch) > 127:
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] in "_$" or ord(sql[j]) > 127):
                j += 1
            tokens.append(Token(WORD, sql[i:j], i, j))
            i = j
            continue
        if sql.startswith(":=", i):
            tokens.append(Token(PUNCT, ":=", i, i + 2))
            i += 2
            continue
        tokens.append(Token(PUNCT, ch, i, i + 1))
        i += 1
    return tokens


def split_top_level(tokens: list[Token], sep: str = ",") -> list[list[Token]]:
    """Split on ``sep`` outside parentheses."""
    parts: list[list[Token]] = [[]]
    depth = 0
    for t in tokens:
        if t.kind == PUNCT:
            if t.text == "(":
                depth += 1
            elif t.text == ")":
                depth -= 1
            elif t.text == sep and depth == 0:
                parts.append([])
                continue
        parts[-1].append(t)
    return parts


def name_of(tokens: list[Token]) -> str | None:
    """A (possibly quoted) single name, or None when the tokens are something else."""
    if len(tokens) == 1 and tokens[0].kind in (WORD, IDENT, STRING):
        return tokens[0].value()
    return None


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def quote_string(value: str, no_backslash_escapes: bool = False) -> str:
    """A SQL string literal that means exactly ``value``."""
    if no_backslash_escapes:
        return "'" + value.replace("'", "''") + "'"
    out = value.replace("\\", "\\\\").replace("'", "\\'").replace("\0", "\\0").replace("\n", "\\n").replace("\r", "\\r").replace("\x1a", "\\Z")
    return "'" + out + "'"
