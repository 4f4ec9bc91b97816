"""Literal stripping: SQL text -> (template, values, hints) in one regex pass.

This runs on every statement, so it must cost a few microseconds: one compiled
regex finds only the tokens that matter (string and number literals, quoted
identifiers, comments, placeholders, semicolons) and everything between them
is copied as is. Literals become markers ``:v0, :v1, ...`` in the template;
their original text is kept so physical SQL carries them byte for byte.

Three parameter styles share the pass:

- ``None``: literal SQL (the proxy's COM_QUERY); ``%`` and ``?`` mean nothing special.
- ``"pyformat"``: a DB-API template as PyMySQL takes it (``%s``, ``%(name)s``,
  ``%%``). Values are rendered as PyMySQL's ``Connection.escape`` renders them;
  a list/tuple value expands to ``(a,b,...)`` as PyMySQL does. ``%%`` becomes
  ``%`` everywhere (also inside literals), as Python's ``%`` operator does.
- ``"qmark"``: ``?`` placeholders (prepared statements).

The template is therefore real SQL with markers, independent of the parameter
style, so the driver and the proxy share plan-cache entries.

``keep_literals=True`` leaves literals in the template and replaces only
placeholders: the fallback when the literal-free template cannot be planned
(e.g. ``ORDER BY 2`` where the number is a column position, or a string alias).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from mdriver import err

# Groups (by name, checked in order of likelihood): a string literal (with an
# optional charset introducer or N/X/B prefix), a quoted identifier, a block
# comment, a line comment, a number, a placeholder, ``%%``, ``;``, and the
# malformed rest (unterminated quote or comment, a stray ``%`` in pyformat).
_COMMON = r"""
 (?P<str>(?:(?<![\w$])(?:_[A-Za-z0-9]+[ \t]*|[nNxXbB]))?(?:'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"))
|(?P<ident>`(?:[^`]|``)*`)
|(?P<block>/\*.*?\*/)
|(?P<line>(?:--(?=[ \t\r\n]|$)|\#)[^\n]*)
|(?P<num>(?<![\w$.])(?:0[xX][0-9a-fA-F]+|0[bB][01]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?![\w$]))
|(?P<semi>;)
"""
_BAD = r"""|(?P<bad>['"`]|/\*)"""
_PYFORMAT = r"""|(?P<ph>%s)|(?P<named>%\((?P<pname>[^)]*)\)s)|(?P<pct>%%)|(?P<badpct>%)"""
_QMARK = r"""|(?P<ph>\?)"""

# A cheap lookahead first, so the alternation is only tried where a token can
# start (this makes the scan about 5x faster than the bare alternation).
_START = r"""(?=['"`/\#\-0-9.;%?]|[nNxXbB]['"]|_[A-Za-z0-9]+[ \t]*['"])"""
_FLAGS = re.VERBOSE | re.DOTALL


def _compile(*parts: str) -> re.Pattern:
    return re.compile(_START + "(?:" + "".join(parts) + _BAD + ")", _FLAGS)


_RE_LITERAL = _compile(_COMMON)
_RE_PYFORMAT = _compile(_COMMON, _PYFORMAT)
_RE_QMARK = _compile(_COMMON, _QMARK)
_RE_HINT = re.compile(r"/\*\s*mdriver:(.*?)\*/\Z", re.DOTALL)
_MARKERS = tuple(f":v{i}" for i in range(4096))


def marker(i: int) -> str:
    return _MARKERS[i] if i < len(_MARKERS) else f":v{i}"


@dataclass(frozen=True)
class Hints:
    """``/* mdriver:shard=N */`` forces a slot; ``/* mdriver:primary */`` forces the primary."""

    shard: int | None = None
    primary: bool = False


NO_HINTS = Hints()


class Normalized:
    """A template and the values of its markers.

    Marker ``i`` has either ``texts[i]`` (the literal's SQL text, kept byte for
    byte) or, for a placeholder, ``params[i]`` (a Python value, rendered the way
    PyMySQL renders it). Both conversions are lazy: routing needs Python values
    only for shard-key markers, rendering needs text only for what is sent.
    """

    __slots__ = ("template", "texts", "params", "hints", "keep_literals", "recipe")

    def __init__(self, template: str, texts: list, params: list, hints: Hints, keep_literals: bool):
        self.template = template
        self.texts = texts
        self.params = params
        self.hints = hints
        self.keep_literals = keep_literals
        self.recipe: Recipe | None = None

    def text(self, i: int) -> str:
        t = self.texts[i]
        if t is None:
            t = self.texts[i] = sql_literal(self.params[i])
        return t

    def value(self, i: int) -> object:
        """The Python value of marker ``i`` (for routing)."""
        t = self.texts[i]
        if t is None or self.params[i] is not _LITERAL:
            return self.params[i]
        v = self.params[i] = literal_value(t)
        return v

    def __len__(self) -> int:
        return len(self.texts)


_LITERAL = object()  # params[i] for a literal whose Python value has not been computed yet


def _multi() -> err.MySQLError:
    return err.error(err.NotSupportedError, err.ER_NOT_SUPPORTED_YET, "multiple statements in one query are not supported by mdriver")


def _parse_error(message: str) -> err.MySQLError:
    return err.error(err.ProgrammingError, err.ER_PARSE_ERROR, message)


def _parse_hint(body: str, hints: Hints) -> Hints:
    shard, primary = hints.shard, hints.primary
    for item in re.split(r"[\s,]+", body.strip()):
        if not item:
            continue
        name, _, arg = item.partition("=")
        name = name.lower()
        if name == "primary" and not arg:
            primary = True
        elif name == "shard" and arg.isdigit():
            shard = int(arg)
        else:
            raise _parse_error(f"unknown mdriver hint {item!r} (known: shard=N, primary)")
    return Hints(shard, primary)


def normalize(sql: str, paramstyle: str | None = None, params=None, keep_literals: bool = False) -> Normalized:
    """Strip literals and placeholders; refuse multi-statements and executable comments.

    Raises ProgrammingError (1064) for malformed text and for parameters that
    do not match the placeholders, NotSupportedError (1235) for several
    statements in one text and for ``/*! ... */`` comments.
    """
    if params is None:
        paramstyle = None  # PyMySQL sends a text without arguments as is
    if paramstyle is None:
        rx = _RE_LITERAL
    elif paramstyle == "pyformat":
        rx = _RE_PYFORMAT
        if not isinstance(params, (tuple, list, dict)):
            params = (params,)
    elif paramstyle == "qmark":
        rx = _RE_QMARK
        if not isinstance(params, (tuple, list)):
            raise err.error(err.ProgrammingError, err.ER_WRONG_ARGUMENTS, "qmark parameters must be a list or tuple")
    else:
        raise err.error(err.InterfaceError, err.ER_WRONG_ARGUMENTS, f"unknown paramstyle {paramstyle!r}")
    pyformat = paramstyle == "pyformat"
    out: list[str] = []
    texts: list = []
    values: list = []
    hints = NO_HINTS
    pos = 0
    nparam = 0
    keys: list | None = []  # (marker, parameter key) of each placeholder, for a Recipe
    end_seen = -1  # position of a ';' after which only blanks/comments may follow
    for m in rx.finditer(sql):
        kind = m.lastgroup
        start = m.start()
        if end_seen >= 0:  # after a ';' only blanks and comments may follow
            if kind not in ("block", "line") or sql[pos:start].strip():
                raise _multi()
            pos = m.end()
            continue
        if kind == "str" or kind == "num":
            if keep_literals:
                if pyformat and kind == "str":
                    out.append(sql[pos:start])
                    out.append(_pyformat_literal(m.group()))
                    pos = m.end()
                continue
            out.append(sql[pos:start])
            out.append(_MARKERS[len(texts)] if len(texts) < 4096 else marker(len(texts)))
            text = m.group()
            if pyformat and kind == "str":
                text = _pyformat_literal(text)
            texts.append(text)
            values.append(_LITERAL)
        elif kind == "ph" or kind == "named":
            if kind == "named":
                if not isinstance(params, dict):
                    raise err.error(err.ProgrammingError, err.ER_WRONG_ARGUMENTS,
                                    f"%({m.group('pname')})s needs parameters given as a dict")
                key = m.group("pname")
                try:
                    value = params[key]
                except KeyError:
                    raise err.error(err.ProgrammingError, err.ER_WRONG_ARGUMENTS,
                                    f"no value for parameter %({m.group('pname')})s") from None
            else:
                if isinstance(params, dict):
                    raise err.error(err.ProgrammingError, err.ER_WRONG_ARGUMENTS,
                                    "positional placeholders need parameters given as a list or tuple")
                if nparam >= len(params):
                    raise err.error(err.ProgrammingError, err.ER_WRONG_ARGUMENTS,
                                    f"the statement has more placeholders than the {len(params)} parameter(s) given")
                key = nparam
                value = params[nparam]
            nparam += 1
            out.append(sql[pos:start])
            if type(value) in (tuple, list, set, frozenset):
                if not value:
                    raise err.error(err.ProgrammingError, err.ER_WRONG_ARGUMENTS, "an empty list cannot be a parameter")
                keys = None  # the template depends on the list's length: no recipe
                items = []
                for item in value:
                    items.append(marker(len(texts)))
                    texts.append(None)
                    values.append(item)
                out.append("(" + ",".join(items) + ")")
            else:
                if keys is not None:
                    keys.append((len(texts), key))
                out.append(marker(len(texts)))
                texts.append(None)
                values.append(value)
        elif kind == "ident":
            continue
        elif kind == "line":  # a line comment would swallow whatever is appended after it
            out.append(sql[pos:start])
            out.append(" ")
        elif kind == "block":
            text = m.group()
            if text.startswith(("/*!", "/*M!")):
                raise err.error(err.NotSupportedError, err.ER_NOT_SUPPORTED_YET,
                                "executable comments /*! ... */ are not supported by mdriver (they could change routing)")
            h = _RE_HINT.match(text)
            if h is not None:
                hints = _parse_hint(h.group(1), hints)
                out.append(sql[pos:start])
                out.append(" ")
            elif pyformat and "%" in text:
                out.append(sql[pos:start])
                out.append(text.replace("%%", "%"))
            else:
                continue
        elif kind == "pct":
            out.append(sql[pos:start])
            out.append("%")
        elif kind == "semi":
            out.append(sql[pos:start])
            end_seen = start
        elif kind == "badpct":
            raise _parse_error(f"unsupported format character after '%' at position {start} (write %% for a literal %)")
        else:  # bad
            what = {"'": "string literal", '"': "string literal", "`": "quoted identifier", "/*": "comment"}[m.group()]
            raise _parse_error(f"unterminated {what} at position {start}")
        pos = m.end()
    if pyformat and not isinstance(params, dict) and nparam != len(params):
        raise err.error(err.ProgrammingError, err.ER_WRONG_ARGUMENTS,
                        f"the statement has {nparam} placeholder(s) but {len(params)} parameter(s) were given")
    if paramstyle == "qmark" and nparam != len(params):
        raise err.error(err.ProgrammingError, err.ER_WRONG_ARGUMENTS,
                        f"the statement has {nparam} placeholder(s) but {len(params)} parameter(s) were given")
    if end_seen < 0:
        out.append(sql[pos:])
    elif sql[pos:].strip():
        raise _multi()
    template = "".join(out).strip() if out else sql.strip()
    n = Normalized(template, texts, values, hints, keep_literals)
    if keys and paramstyle is not None and not keep_literals:
        n.recipe = Recipe(n, keys, isinstance(params, dict), nparam)
    return n


class Recipe:
    """How a DB-API template text normalizes, to skip the scan when the same text comes again.

    Valid for any parameters of the same shape (same count, or a dict with the
    names); a list parameter changes the template, so it never uses a recipe.
    """

    __slots__ = ("template", "texts", "values", "keys", "named", "count", "hints")

    def __init__(self, n: Normalized, keys: list, named: bool, count: int):
        self.template = n.template
        self.texts = [None if any(i == k for k, _ in keys) else t for i, t in enumerate(n.texts)]
        self.values = [_LITERAL if t is not None else None for t in self.texts]
        self.keys = keys
        self.named = named
        self.count = count
        self.hints = n.hints

    def apply(self, params) -> Normalized | None:
        """The normalization for these parameters, or None when they do not fit (then scan)."""
        if self.named:
            if type(params) is not dict:
                return None
        elif type(params) not in (tuple, list) or len(params) != self.count:
            return None
        values = list(self.values)
        try:
            for i, k in self.keys:
                v = params[k]
                if type(v) in (tuple, list, set, frozenset):
                    return None
                values[i] = v
        except KeyError:
            return None
        return Normalized(self.template, list(self.texts), values, self.hints, False)


def _pyformat_literal(text: str) -> str:
    if "%" not in text:
        return text
    if re.search(r"%(?:s|\()", text.replace("%%", "")):
        raise _parse_error("a placeholder inside a quoted string is not supported (pass the whole value as a parameter)")
    if re.search(r"%(?!%)", text.replace("%%", "")):
        raise _parse_error("unsupported format character after '%' inside a string (write %% for a literal %)")
    return text.replace("%%", "%")


# -- values --------------------------------------------------------------------------

_UNESCAPE = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a", "%": "\\%", "_": "\\_"}
_RE_ESCAPE = re.compile(r"\\(.)|''|\"\"", re.DOTALL)
_RE_INTRODUCER = re.compile(r"_[A-Za-z0-9]+[ \t]*|[nN]")


def _unescape(m: re.Match) -> str:
    c = m.group(1)
    if c is None:
        return m.group()[0]
    return _UNESCAPE.get(c, c)


def literal_value(text: str) -> object:
    """The Python value of a SQL literal's text, as MySQL reads it.

    Numbers give int, Decimal (exact) or float (with an exponent); strings are
    unescaped (backslash escapes and doubled quotes); ``X'..'``/``0x..`` give
    bytes/int; ``_binary'..'`` gives bytes.
    """
    c = text[0]
    if c.isdigit() or c == ".":
        if text[:2] in ("0x", "0X"):
            return int(text, 16)
        if text[:2] in ("0b", "0B"):
            return int(text, 2)
        if text.isdigit():
            return int(text)
        if "e" in text or "E" in text:
            return float(text)
        return Decimal(text)
    if c in "xX" and text[1] == "'":
        return bytes.fromhex(text[2:-1])
    if c in "bB" and text[1] == "'":
        bits = text[2:-1]
        return int(bits, 2).to_bytes((len(bits) + 7) // 8, "big") if bits else b""
    binary = text[:7].lower() == "_binary"
    m = _RE_INTRODUCER.match(text)
    if m is not None and text[m.end()] in "'\"":
        text = text[m.end():]
    s = _RE_ESCAPE.sub(_unescape, text[1:-1])
    return s.encode("utf-8") if binary else s


_ESCAPE_TABLE = {0: "\\0", ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", 0x1A: "\\Z", ord('"'): '\\"', ord("'"): "\\'"}
_NEEDS_ESCAPE = re.compile("[\\0\\\\\n\r\x1a\"']")  # most values have none: skip translate(), slow on PyPy


def sql_literal(value: object) -> str:
    """Render a parameter as PyMySQL's ``Connection.escape`` does (backslash escapes on)."""
    if type(value) is int:
        return str(value)
    if isinstance(value, str):
        return "'" + (value.translate(_ESCAPE_TABLE) if _NEEDS_ESCAPE.search(value) else value) + "'"
    if isinstance(value, (bytes, bytearray)):
        return f"X'{bytes(value).hex()}'"
    if type(value) in (tuple, list, set, frozenset):
        return "(" + ",".join(sql_literal(v) for v in value) + ")"
    from pymysql import converters

    try:
        return converters.escape_item(value, "utf8mb4", converters.encoders)
    except TypeError as e:
        raise err.error(err.ProgrammingError, err.ER_WRONG_ARGUMENTS, str(e)) from None
