"""Checks before anything moves, and the facts about the source table.

Each check either passes or yields a :class:`Problem` with the exact fix
(gh-ost's inspector): binlog settings on the source, a primary key, a NOT NULL
shard key, supported column types, privileges, and target tables that are
absent (then created from the source's own DDL) or empty and alike.
"""
from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from migrator import db
from migrator.errors import RefusedError
from migrator.sql import qi, qualified
from migrator.state import CONTROL_DB, Identity, Position
from migrator.table import Column, TableInfo

log = logging.getLogger(__name__)

REQUIRED_BINLOG = (("log_bin", "ON"), ("binlog_format", "ROW"), ("binlog_row_image", "FULL"),
                   ("binlog_row_metadata", "FULL"))


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str


@dataclass
class PlanReport:
    """What ``plan`` found and what ``start`` will do."""

    source_table: str
    rows: int
    rows_exact: bool
    chunk_rows: int
    targets: dict[str, int]  # datasource -> physical tables
    databases: dict[str, int]  # datasource -> physical databases
    to_create: dict[str, int] = field(default_factory=dict)  # datasource -> tables created by plan
    non_empty: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def chunks(self) -> int:
        return max(1, -(-self.rows // self.chunk_rows)) if self.rows else 0


# -- the source table ---------------------------------------------------------------

def read_table(conn: Any, database: str, table: str) -> TableInfo | None:
    """Columns, primary key and DDL of ``database.table``; None when the table does not exist."""
    rows = db.query(
        conn,
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_SET_NAME, COLLATION_NAME, EXTRA"
        " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (database, table),
    )
    if not rows:
        return None
    columns = tuple(
        Column(_s(r[0]), _s(r[1]).lower(), _s(r[2]).lower(), _s(r[3]) == "YES", _opt(r[4]), _opt(r[5]),
               generated="GENERATED" in _s(r[6] or "").upper())
        for r in rows
    )
    keys: dict[str, list[str]] = defaultdict(list)
    for name, column, _seq in db.query(
        conn,
        "SELECT INDEX_NAME, COLUMN_NAME, SEQ_IN_INDEX FROM information_schema.STATISTICS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX",
        (database, table),
    ):
        keys[_s(name)].append(_s(column))
    pk = tuple(keys.pop("PRIMARY", ()))
    create = db.query_one(conn, f"SHOW CREATE TABLE {qualified(database, table)}")
    return TableInfo(database, table, columns, pk, _s(create[1]) if create else "",
                     tuple(tuple(v) for v in keys.values()))


def table_problems(info: TableInfo, shard_key: str, engine: str) -> list[Problem]:
    where = f"{info.database}.{info.table}"
    problems = []
    if engine.lower() != "innodb":
        problems.append(Problem(f"{where} uses the {engine} engine; a consistent snapshot needs InnoDB",
                                f"ALTER TABLE {qualified(info.database, info.table)} ENGINE=InnoDB"))
    if not info.primary_key:
        problems.append(Problem(f"{where} has no primary key; rows are copied, upserted and deleted by primary key",
                                f"ALTER TABLE {qualified(info.database, info.table)} ADD PRIMARY KEY (...)"))
    for name in info.primary_key:
        col = info.column(name)
        if not col.key_orderable:
            problems.append(Problem(
                f"{where}: primary key column {name} is {col.column_type}"
                + (f" with collation {col.collation}" if col.collation else "")
                + "; chunk bounds need a key that compares the same in the server and in the migrator",
                "use an integer, DECIMAL, binary, date/time key, or a text key with a *_bin collation"))
    if not info.has(shard_key):
        problems.append(Problem(f"{where} has no column {shard_key!r}, the shard key of the config",
                                f"fix shard_key in the config or add the column to {where}"))
    elif info.column(shard_key).nullable:
        problems.append(Problem(f"{where}: shard key column {shard_key} allows NULL; a NULL row has no shard",
                                f"ALTER TABLE {qualified(info.database, info.table)} MODIFY {qi(shard_key)} "
                                f"{info.column(shard_key).column_type} NOT NULL (after fixing NULL rows)"))
    for col in info.columns:
        if col.kind == "unsupported":
            problems.append(Problem(f"{where}: column {col.name} has type {col.column_type}, which the migrator "
                                    "cannot copy exactly", "migrate this table with another tool"))
    return problems


def table_engine(conn: Any, database: str, table: str) -> str:
    row = db.query_one(conn, "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                       (database, table))
    return _s(row[0]) if row and row[0] is not None else "unknown"


def count_rows(conn: Any, info: TableInfo, exact_below: int = 5_000_000) -> tuple[int, bool]:
    """(rows, exact): an exact COUNT for tables estimated small, else InnoDB's estimate."""
    row = db.query_one(conn, "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                       (info.database, info.table))
    estimate = int(row[0] or 0) if row else 0
    if estimate < exact_below:
        exact = db.query_one(conn, f"SELECT COUNT(*) FROM {qualified(info.database, info.table)}")
        return int(exact[0]), True
    return estimate, False


# -- binlog settings --------------------------------------------------------------------

def binlog_problems(conn: Any, where: str) -> list[Problem]:
    values = {_s(k).lower(): _s(v) for k, v in db.query(
        conn, "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', 'binlog_row_image',"
              " 'binlog_row_metadata')")}
    problems = []
    for name, wanted in REQUIRED_BINLOG:
        got = values.get(name)
        if got is None or got.upper() != wanted:
            if name == "log_bin":
                fix = "start the server with --log-bin=mysql-bin (needs a restart)"
            else:
                fix = (f"SET GLOBAL {name} = '{wanted}' (and {name.replace('_', '-')}={wanted} in the server's "
                       "config file so it survives a restart); existing sessions keep the old value until they reconnect")
            problems.append(Problem(f"{where}: {name} is {got or 'missing'}, the migrator needs {wanted}", fix))
    return problems


def expire_warning(conn: Any, where: str) -> str | None:
    row = db.query_one(conn, "SELECT @@binlog_expire_logs_seconds, @@expire_logs_days")
    if row is None:
        return None
    seconds = int(row[0] or 0) or int(float(row[1] or 0) * 86400)
    if 0 < seconds < 3 * 86400:
        return (f"{where}: binlogs expire after {seconds // 3600} h; if the migrator stops for longer it cannot resume "
                "(raise binlog_expire_logs_seconds)")
    return None


# -- privileges ---------------------------------------------------------------------------

_GRANT = re.compile(r"^GRANT\s+(?P<privs>.+?)\s+ON\s+(?P<target>\S+)\s+TO\s", re.I | re.S)


def parse_grants(lines: Iterable[str]) -> dict[tuple[str, str], set[str]]:
    """SHOW GRANTS lines -> {(database pattern, table): {privileges}} (``*`` for any)."""
    grants: dict[tuple[str, str], set[str]] = defaultdict(set)
    for line in lines:
        m = _GRANT.match(line.strip())
        if not m:
            continue
        db_part, _, table_part = m.group("target").partition(".")
        key = (db_part.strip("`").replace("``", "`"), table_part.strip("`").replace("``", "`") or "*")
        privs = {p.strip().upper() for p in re.sub(r"\([^)]*\)", "", m.group("privs")).split(",")}
        grants[key] |= {"ALL" if p.startswith("ALL") else p for p in privs}
    return grants


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern == "*":
        return True
    regex = ""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            regex += re.escape(pattern[i + 1])
            i += 2
            continue
        regex += ".*" if ch == "%" else "." if ch == "_" else re.escape(ch)
        i += 1
    return re.fullmatch(regex, name) is not None


def has_privilege(grants: dict[tuple[str, str], set[str]], privilege: str, database: str = "*", table: str = "*") -> bool:
    for (db_pat, tbl), privs in grants.items():
        if not ({"ALL", privilege} & privs):
            continue
        if db_pat == "*" and tbl == "*":
            return True
        if database != "*" and _pattern_matches(db_pat, database) and (tbl == "*" or tbl == table):
            return True
    return False


def privilege_problems(conn: Any, where: str, user: str, needs: list[tuple[str, str, str]]) -> list[Problem]:
    """``needs``: (privilege, database, table) triples; ``*`` for global."""
    lines = [_s(r[0]) for r in db.query(conn, "SHOW GRANTS")]
    if any(line.upper().startswith("GRANT") and " ON " not in line.upper() for line in lines):
        return []  # privileges come through roles: not verifiable here, failures surface when used
    grants = parse_grants(lines)
    problems = []
    for privilege, database, table in needs:
        alternatives = [privilege]
        if privilege == "BINLOG MONITOR":
            alternatives += ["REPLICATION CLIENT", "SUPER"]
        if any(has_privilege(grants, p, database, table) for p in alternatives):
            continue
        on = "*.*" if database == "*" else f"{qi(database)}.{'*' if table == '*' else qi(table)}"
        problems.append(Problem(f"{where}: user {user!r} lacks {privilege} on {on}",
                                f"GRANT {privilege} ON {on} TO '{user}'@'%'"))
    return problems


def source_needs(info: TableInfo) -> list[tuple[str, str, str]]:
    return [
        ("SELECT", info.database, info.table),
        ("REPLICATION SLAVE", "*", "*"),
        ("BINLOG MONITOR", "*", "*"),
        # For reverse replication after cutover-writes and its checkpoint.
        ("INSERT", info.database, info.table), ("UPDATE", info.database, info.table),
        ("DELETE", info.database, info.table),
        ("CREATE", CONTROL_DB, "*"), ("INSERT", CONTROL_DB, "*"), ("UPDATE", CONTROL_DB, "*"),
    ]


def target_needs(databases: Iterable[str]) -> list[tuple[str, str, str]]:
    needs = [("REPLICATION SLAVE", "*", "*"), ("BINLOG MONITOR", "*", "*"),
             ("CREATE", CONTROL_DB, "*"), ("INSERT", CONTROL_DB, "*"), ("UPDATE", CONTROL_DB, "*"),
             ("SELECT", CONTROL_DB, "*")]
    for database in sorted(set(databases)):
        needs += [(p, database, "*") for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE")]
    return needs


# -- targets ---------------------------------------------------------------------------------

def column_signature(rows: list[tuple]) -> tuple:
    return tuple((_s(r[0]), _s(r[1]).lower(), _s(r[2]), _opt(r[3])) for r in rows)


def survey_targets(conn: Any, ident: Identity, ds: str, info: TableInfo) -> tuple[list, list, list[Problem]]:
    """(missing locations, non-empty tables, problems) for the shards of ``ident`` on ``ds``."""
    locations = ident.locations_on(ds)
    databases = sorted({loc.database for loc in locations})
    marks = ", ".join(["%s"] * len(databases))
    existing: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for r in db.query(
        conn,
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLLATION_NAME FROM information_schema.COLUMNS"
        f" WHERE TABLE_SCHEMA IN ({marks}) AND TABLE_NAME LIKE %s ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
        (*databases, ident.rule.name.replace("_", "\\_") + "\\_%"),
    ):
        existing[(_s(r[0]), _s(r[1]))].append(r[2:])
    wanted = tuple((c.name, c.column_type, "YES" if c.nullable else "NO", c.collation) for c in info.columns)
    missing, present, problems = [], [], []
    for loc in locations:
        cols = existing.get((loc.database, loc.table))
        if cols is None:
            missing.append(loc)
            continue
        present.append(loc)
        got = column_signature(cols)
        if got != wanted:
            diff = _first_difference(wanted, got)
            problems.append(Problem(
                f"{ds}: {loc.database}.{loc.table} differs from the source {info.database}.{info.table}: {diff}",
                "make the shard tables match the source (or drop them: plan creates missing ones from the source DDL)"))
            if len(problems) >= 5:
                break
    non_empty = []
    for i in range(0, len(present), 256):
        part = present[i:i + 256]
        sql = " UNION ALL ".join(f"(SELECT %s AS t FROM {qualified(loc.database, loc.table)} LIMIT 1)"
                                 for loc in part)
        for (name,) in db.query(conn, sql, tuple(f"{loc.database}.{loc.table}" for loc in part)):
            non_empty.append(_s(name))
    return missing, non_empty, problems


def _first_difference(wanted: tuple, got: tuple) -> str:
    for i in range(max(len(wanted), len(got))):
        a = wanted[i] if i < len(wanted) else None
        b = got[i] if i < len(got) else None
        if a != b:
            if a is None:
                return f"extra column {b[0]} on the shard"
            if b is None:
                return f"column {a[0]} is missing on the shard"
            return f"column {a[0]} is {a[1]} {a[2]} {a[3]} on the source but {b[0]} {b[1]} {b[2]} {b[3]} on the shard"
    return "definitions differ"


def shard_ddl(info: TableInfo, database: str, table: str) -> str:
    """The source's CREATE TABLE, renamed for one shard (AUTO_INCREMENT counter dropped)."""
    ddl = info.create_sql
    m = re.match(r"\s*CREATE\s+TABLE\s+(`(?:[^`]|``)+`|\S+)", ddl, re.I)
    if not m:
        raise RefusedError(f"cannot read the CREATE TABLE of {info.database}.{info.table}",
                           "create the shard tables yourself, then run plan again")
    body = ddl[m.end():]
    body = re.sub(r"\s+AUTO_INCREMENT=\d+", "", body)
    return f"CREATE TABLE IF NOT EXISTS {qualified(database, table)}{body}"


def create_targets(conn: Any, info: TableInfo, missing: list) -> int:
    """Create missing shard databases and tables on one server; returns how many tables."""
    if not missing:
        return 0
    statements = [f"CREATE DATABASE IF NOT EXISTS {qi(d)}" for d in sorted({loc.database for loc in missing})]
    statements += [shard_ddl(info, loc.database, loc.table) for loc in missing]
    for i in range(0, len(statements), 200):
        db.run_script(conn, ";\n".join(statements[i:i + 200]))
    return len(missing)


def _s(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v)


def _opt(v: Any) -> str | None:
    return None if v is None else _s(v)


def inspect_source(ident: Identity) -> TableInfo:
    """The source table, refusing (with the first fix) if it cannot be migrated as it is."""
    with db.session(ident.source, role="source") as conn:
        problems = binlog_problems(conn, ident.source.describe())
        info = read_table(conn, ident.migration.source_database, ident.migration.source_table)
        if info is None:
            raise RefusedError(f"the source table {ident.source_table} does not exist on {ident.source.describe()}",
                               "fix migration.source in the config")
        problems += table_problems(info, ident.rule.shard_key or "",
                                             table_engine(conn, info.database, info.table))
    if problems:
        first = problems[0]
        raise RefusedError(first.what + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""),
                           f"{first.fix}; `mdriver-migrate plan` lists every problem")
    return info


def binlog_distance(conn: Any, position: Position) -> int | None:
    """Bytes of binlog between ``position`` and the server's head (None if unknown)."""
    try:
        logs = [(r[0].decode() if isinstance(r[0], bytes) else r[0], int(r[1])) for r in db.query(conn, "SHOW BINARY LOGS")]
    except Exception:  # noqa: BLE001 - a statistic; never fail the run for it
        return None
    total, counting = 0, False
    for name, size in logs:
        if name == position.file:
            counting = True
            total += max(0, size - position.pos)
        elif counting:
            total += size
    return total if counting else None


# -- the plan verb -----------------------------------------------------------------------------

def run_plan(ident: Identity, *, create: bool, chunk_rows: int) -> PlanReport:
    """Every check, in one report; creates missing shard tables when nothing else is wrong and ``create``."""
    from migrator import checkpoint as ckpt
    from migrator.state import FORWARD

    src = ident.migration
    report = PlanReport(ident.source_table, 0, True, chunk_rows, {}, {})
    with db.session(ident.source, role="source") as conn:
        where = f"source {ident.source.describe()}"
        report.problems += binlog_problems(conn, where)
        warning = expire_warning(conn, where)
        if warning:
            report.warnings.append(warning)
        info = read_table(conn, src.source_database, src.source_table)
        if info is None:
            report.problems.append(Problem(f"{where}: table {ident.source_table} does not exist",
                                           "fix migration.source in the config"))
            return report
        report.problems += table_problems(info, ident.rule.shard_key or "", table_engine(conn, info.database, info.table))
        report.problems += privilege_problems(conn, where, ident.source.user, source_needs(info))
        report.rows, report.rows_exact = count_rows(conn, info)
        if info.unique_keys:
            report.warnings.append(
                f"{ident.source_table} has unique keys besides the primary key ({', '.join('/'.join(k) for k in info.unique_keys)});"
                " the shards enforce them per physical table only")
    missing_by_ds: dict[str, list] = {}
    for ds in ident.targets:
        dsrc = ident.datasource(ds)
        locations = ident.locations_on(ds)
        report.targets[ds] = len(locations)
        report.databases[ds] = len({loc.database for loc in locations})
        with db.session(dsrc, role="shard") as conn:
            where = f"shard server {dsrc.describe()}"
            report.problems += privilege_problems(conn, where, dsrc.user, target_needs(loc.database for loc in locations))
            report.problems += binlog_problems(conn, where)  # reverse replication reads the shards' binlogs
            started = False
            if db.query_one(conn, "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = "
                                  "'checkpoint'", (CONTROL_DB,)):
                started = bool(ckpt.load(conn, ident.name, FORWARD, ds))
            missing, non_empty, problems = survey_targets(conn, ident, ds, info)
            report.problems += problems
            missing_by_ds[ds] = missing
            if non_empty and not started:
                report.non_empty += non_empty
                report.problems.append(Problem(
                    f"{where}: {len(non_empty)} shard table(s) already hold rows (e.g. {non_empty[0]})",
                    "the migrator copies into empty tables: empty them, or point the config at other ones"))
            elif started:
                report.warnings.append(f"{ds}: a migration of {ident.name} is in progress (see `mdriver-migrate status`)")
    if create and not report.problems:
        for ds, missing in missing_by_ds.items():
            if missing:
                with db.session(ident.datasource(ds), role="shard", multi=True) as conn:
                    report.to_create[ds] = create_targets(conn, info, missing)
    else:
        report.to_create = {ds: len(m) for ds, m in missing_by_ds.items() if m}
    return report
