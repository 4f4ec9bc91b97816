"""Keep a client inside its schemas.

The proxy logs in to the backends with the datasources' credentials, which
can read everything on those servers. Statements are routed by the router,
which leaves a table qualified with a database it does not know
(``mysql.user``, ``app_ref.t``, a physical ``app_00.t_0000``) on the home
datasource unchanged. So the proxy refuses, before routing:

* tables qualified with a database that is not one of the user's schemas
  (``information_schema`` is allowed except its privilege and process tables);
* reading or writing server files (``LOAD_FILE``, ``INTO OUTFILE/DUMPFILE``,
  ``LOAD DATA INFILE``);
* statements that manage databases, accounts, plugins or replication.

Cost: most statements have no ``.`` outside numbers and none of the risky
words, which a substring test and one regex rule out; the rest are analyzed
once per statement shape (literals replaced) with sqlglot and cached.
"""
from __future__ import annotations

import re
from collections import OrderedDict

import sqlglot
import sqlglot.errors
import sqlglot.expressions as exp

from mdriver import err
from mdriver.router.normalize import normalize
from proxy.sqltext import IDENT, PUNCT, WORD, SqlSyntaxError, tokenize

ER_DBACCESS_DENIED_ERROR = 1044
ER_SPECIFIC_ACCESS_DENIED = 1227

# Words that make a statement worth a closer look; with "file" (LOAD_FILE, INTO OUTFILE/DUMPFILE, LOAD DATA INFILE).
_RISKY_WORDS = frozenset(("database", "schema", "user", "role", "grant", "revoke", "plugin", "soname", "server", "flush", "purge",
                          "binlog", "master", "slave", "replica", "install", "uninstall", "password", "privileges"))
_WORDS = re.compile(r"\w+")
SYSTEM_DATABASES = frozenset(("mysql", "performance_schema", "sys"))
# information_schema tables that describe accounts, privileges or other sessions' work
HIDDEN_INFORMATION_SCHEMA = frozenset((
    "user_privileges", "schema_privileges", "table_privileges", "column_privileges", "applicable_roles", "enabled_roles",
    "processlist", "user_statistics", "client_statistics", "index_statistics", "table_statistics", "thread_pool_queues",
    "user_variables",
))
# (first word, second word or None): statements refused whatever they name
_PRIVILEGED = {
    "GRANT": None, "REVOKE": None, "FLUSH": None, "PURGE": None, "INSTALL": None, "UNINSTALL": None,
    "CHANGE": ("MASTER", "REPLICATION"), "RESET": ("MASTER", "SLAVE", "REPLICA", "QUERY"),
    "START": ("SLAVE", "REPLICA", "ALL"), "STOP": ("SLAVE", "REPLICA", "ALL"),
    "CREATE": ("DATABASE", "SCHEMA", "USER", "ROLE", "SERVER", "FUNCTION", "PROCEDURE", "TRIGGER", "EVENT", "DEFINER"),
    "DROP": ("DATABASE", "SCHEMA", "USER", "ROLE", "SERVER", "FUNCTION", "PROCEDURE", "TRIGGER", "EVENT"),
    "ALTER": ("DATABASE", "SCHEMA", "USER", "SERVER", "FUNCTION", "PROCEDURE", "EVENT"),
    "RENAME": ("USER",), "LOAD": None, "BINLOG": None, "HANDLER": None, "CACHE": None, "BACKUP": None,
}


def _denied_db(user: str, host: str, db: str) -> err.MySQLError:
    return err.error(err.ProgrammingError, ER_DBACCESS_DENIED_ERROR, f"Access denied for user '{user}'@'{host}' to database '{db}'", "42000")


def _denied(what: str) -> err.MySQLError:
    return err.error(err.ProgrammingError, ER_SPECIFIC_ACCESS_DENIED, f"Access denied; {what} is not allowed through the proxy", "42000")


class StatementGuard:
    """Checks statements against the schemas a user may use (one per config version)."""

    def __init__(self, config, maxsize: int = 8192):
        self.maxsize = maxsize
        self._cache: OrderedDict = OrderedDict()  # (statement shape, allowed schemas) -> problem or None
        self.known_databases = set(SYSTEM_DATABASES)
        for schema in config.schemas.values():
            self.known_databases.add(schema.name.lower())
            for rule in schema.tables.values():
                for i in range(rule.databases if rule.sharded else 0):
                    self.known_databases.add(f"{schema.name}_{i:02d}".lower())

    def check(self, sql: str, word: str, schemas: tuple[str, ...], user: str, host: str, template: str | None = None) -> None:
        """Raise a PEP 249 error if the statement reaches outside ``schemas``."""
        first = _PRIVILEGED.get(word, False)
        if first is not False:
            second = _second_word(sql)
            if first is None or second in first:
                raise _denied(f"{word} {second}".strip() if first is not None else word)
        if "." not in sql:
            lowered = sql.lower()
            if "file" not in lowered and _RISKY_WORDS.isdisjoint(_WORDS.findall(lowered)):
                return
        if template is None:
            try:
                template = normalize(sql, None, None).template
            except err.MySQLError:
                template = sql
        key = (template, schemas)
        cache = self._cache
        problem = cache.get(key, False)
        if problem is False:
            problem = self._analyze(sql, schemas)
            cache[key] = problem
            if len(cache) > self.maxsize:
                cache.popitem(last=False)
        if problem is not None:
            kind, detail = problem
            raise _denied_db(user, host, detail) if kind == "db" else _denied(detail)

    def _analyze(self, sql: str, schemas: tuple[str, ...]):
        allowed = {s.lower() for s in schemas}
        lowered = sql.lower()
        if "load_file" in lowered:
            return ("op", "LOAD_FILE()")
        for word in ("outfile", "dumpfile"):
            if re.search(rf"\binto\s+{word}\b", lowered):
                return ("op", f"INTO {word.upper()}")
        try:
            trees = sqlglot.parse(sql, read="mysql")
        except (sqlglot.errors.ParseError, sqlglot.errors.TokenError, ValueError):
            return self._analyze_tokens(sql, allowed)
        for tree in trees:
            if tree is None:
                continue
            for table in tree.find_all(exp.Table):
                db = table.args.get("db")
                name = (db.name if isinstance(db, exp.Identifier) else str(db or "")).lower()
                if not name or name in allowed:
                    continue
                if name == "information_schema" and table.name.lower() not in HIDDEN_INFORMATION_SCHEMA:
                    continue
                return ("db", name)
            if isinstance(tree, exp.Command) and (tree.this or "").upper() in _PRIVILEGED:
                return ("op", tree.this.upper())
        return None

    def _analyze_tokens(self, sql: str, allowed: set[str]):
        """Fallback when sqlglot cannot parse: refuse ``db.x`` for databases known to exist outside ``allowed``."""
        try:
            toks = tokenize(sql)
        except SqlSyntaxError:
            return None  # the router refuses it with a syntax error
        for a, dot, b in zip(toks, toks[1:], toks[2:]):
            if dot.kind == PUNCT and dot.text == "." and a.kind in (WORD, IDENT) and b.kind in (WORD, IDENT):
                name = a.value().lower()
                if name in self.known_databases and name not in allowed:
                    return ("db", name)
        return None


def _second_word(sql: str) -> str:
    m = re.match(r"\s*(?:/\*.*?\*/\s*)*[A-Za-z_]+\s+([A-Za-z_]+)", sql, re.S)
    return m.group(1).upper() if m else ""
