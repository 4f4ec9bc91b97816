"""Turn a parsed YAML document into a frozen :class:`Config`, or list every problem.

Each problem names its key path (``schemas.app.tables.t.placement: ...``) so an
operator can fix a file without reading code. All problems are collected and
reported together; nothing here raises anything but :class:`ConfigError`.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from typing import Any

from mdriver.config.model import (
    ALGORITHMS,
    READ_PHASES,
    TRANSACTION_MODES,
    WRITE_PHASES,
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
    frozen_map,
)


class ConfigError(Exception):
    """Invalid config. ``errors`` holds one line per problem, each starting with its key path."""

    def __init__(self, errors: list[str], source: str = ""):
        self.errors = list(errors)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{len(errors)} config error(s):\n" + "\n".join(f"  {e}" for e in errors))


_MISSING = object()


class _Reader:
    """Reads typed values out of nested dicts, recording problems instead of raising."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...] | None = None) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {_kind(value)}")
            return {}
        for key in value:
            if not isinstance(key, str):
                self.error(path, f"key {key!r} is not a string")
            elif allowed is not None and key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else f" (allowed: {', '.join(allowed)})"
                self.error(f"{path}.{key}", f"unknown key{suggestion}")
        return value

    def get(self, d: dict, key: str, path: str, kind: type | tuple, default: Any = _MISSING) -> Any:
        value = d.get(key, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                self.error(f"{path}.{key}", "required key is missing")
                return None
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if bool not in kinds and isinstance(value, bool) or not isinstance(value, kinds):
            if float in kinds and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            self.error(f"{path}.{key}", f"expected {names}, got {_kind(value)} {value!r}")
            return None if default is _MISSING else default
        return value

    def positive(self, d: dict, key: str, path: str, default: Any = _MISSING) -> int | None:
        value = self.get(d, key, path, int, default)
        if isinstance(value, int) and value <= 0:
            self.error(f"{path}.{key}", f"must be a positive integer, got {value}")
            return None
        return value

    def choice(self, d: dict, key: str, path: str, choices: tuple[str, ...], default: Any = _MISSING) -> str | None:
        value = self.get(d, key, path, str, default)
        if value is not None and value not in choices:
            self.error(f"{path}.{key}", f"{value!r} is not one of {', '.join(choices)}")
            return None
        return value


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", float: "a number", list: "a list", dict: "a mapping"}


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__
    )


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def parse_range(text: Any) -> tuple[int, int]:
    """``"0-15"``, ``"7"`` or an integer -> inclusive (first, last)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text, text
    if not isinstance(text, str):
        raise ValueError(f"expected a range like \"0-15\", got {_kind(text)}")
    first, sep, last = text.strip().partition("-")
    try:
        lo = int(first)
        hi = int(last) if sep else lo
    except ValueError:
        raise ValueError(f"{text!r} is not a range like \"0-15\"") from None
    if lo > hi:
        raise ValueError(f"{text!r} is an empty range (first > last)")
    return lo, hi


DATASOURCE_KEYS = ("host", "port", "user", "password", "max_connections", "replicas", "connect_timeout", "read_timeout")
TABLE_KEYS = (
    "shard_key", "algorithm", "databases", "tables_per_database", "placement", "broadcast",
    "boundaries", "function", "migration", "id_generator",
)
MIGRATION_KEYS = ("source", "reads", "writes")


def _datasource(r: _Reader, name: str, raw: Any) -> DataSource | None:
    path = f"datasources.{name}"
    d = r.mapping(raw, path, DATASOURCE_KEYS)
    if not isinstance(raw, dict):
        return None
    host = r.get(d, "host", path, str)
    port = r.positive(d, "port", path)
    user = r.get(d, "user", path, str)
    password = r.get(d, "password", path, (str, int), "")
    max_connections = r.positive(d, "max_connections", path, 64)
    replicas = []
    for i, rep in enumerate(r.get(d, "replicas", path, list, [])):
        rpath = f"{path}.replicas[{i}]"
        rd = r.mapping(rep, rpath, ("host", "port", "weight"))
        rhost, rport, weight = r.get(rd, "host", rpath, str), r.positive(rd, "port", rpath), r.positive(rd, "weight", rpath, 1)
        if rhost and rport and weight:
            replicas.append(Replica(rhost, rport, weight))
    connect_timeout = r.get(d, "connect_timeout", path, float, 5.0)
    read_timeout = r.get(d, "read_timeout", path, float, 30.0)
    if None in (host, port, user, max_connections, connect_timeout, read_timeout):
        return None
    return DataSource(name, host, port, user, str(password), max_connections, tuple(replicas), connect_timeout, read_timeout)


def _placement(r: _Reader, raw: Any, path: str, databases: int, datasources: dict) -> tuple[Placement, ...]:
    d = r.mapping(raw, path)
    placements: list[Placement] = []
    owner: dict[int, str] = {}
    for ds, spec in d.items():
        if ds not in datasources:
            hint = difflib.get_close_matches(str(ds), list(datasources), n=1)
            r.error(f"{path}.{ds}", "datasource is not defined under datasources" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        try:
            first, last = parse_range(spec)
        except ValueError as e:
            r.error(f"{path}.{ds}", str(e))
            continue
        if first < 0 or last >= databases:
            r.error(f"{path}.{ds}", f"range {first}-{last} is outside 0-{databases - 1}")
            continue
        overlap = [i for i in range(first, last + 1) if i in owner]
        if overlap:
            r.error(f"{path}.{ds}", f"database {_ranges_text(overlap)} is also placed on {owner[overlap[0]]} (overlap)")
        for i in range(first, last + 1):
            owner.setdefault(i, ds)
        placements.append(Placement(ds, first, last))
    if d:
        missing = [i for i in range(databases) if i not in owner]
        if missing:
            r.error(path, f"database {_ranges_text(missing)} has no datasource (gap)")
    elif isinstance(raw, dict) or raw is None:
        r.error(path, "required key is missing")
    return tuple(sorted(placements, key=lambda p: p.first))


def _ranges_text(indexes: list[int]) -> str:
    parts, start = [], indexes[0]
    for a, b in zip(indexes, indexes[1:] + [None]):
        if b != a + 1:
            parts.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(parts)


def _migration(r: _Reader, raw: Any, path: str, datasources: dict) -> Migration | None:
    d = r.mapping(raw, path, MIGRATION_KEYS)
    spath = f"{path}.source"
    src = r.mapping(r.get(d, "source", path, dict, {}), spath, ("datasource", "database", "table"))
    ds = r.get(src, "datasource", spath, str)
    db = r.get(src, "database", spath, str)
    table = r.get(src, "table", spath, str)
    if ds and ds not in datasources:
        r.error(f"{spath}.datasource", f"datasource {ds!r} is not defined under datasources")
    reads = r.choice(d, "reads", path, READ_PHASES, "source")
    writes = r.choice(d, "writes", path, WRITE_PHASES, "source")
    if None in (ds, db, table, reads, writes):
        return None
    return Migration(ds, db, table, reads, writes)


def _table(r: _Reader, schema: str, name: str, raw: Any, datasources: dict) -> TableRule | None:
    path = f"schemas.{schema}.tables.{name}"
    errors_before = len(r.errors)
    d = r.mapping(raw, path, TABLE_KEYS)
    broadcast = r.get(d, "broadcast", path, bool, False)
    shard_key = r.get(d, "shard_key", path, str, None)
    id_gen = None
    if "id_generator" in d:
        gpath = f"{path}.id_generator"
        g = r.mapping(d["id_generator"], gpath, ("column", "kind", "worker_id", "step"))
        column, kind = r.get(g, "column", gpath, str), r.choice(g, "kind", gpath, ("snowflake", "segment"))
        worker_id, step = r.get(g, "worker_id", gpath, int, 0), r.positive(g, "step", gpath, 1000)
        if worker_id is not None and not 0 <= worker_id < 1024:
            r.error(f"{gpath}.worker_id", f"must be in 0-1023, got {worker_id}")
        elif column and kind and step:
            id_gen = IdGenerator(column, kind, worker_id, step)
    sharding_keys = [k for k in ("shard_key", "algorithm", "databases", "tables_per_database", "placement") if k in d]
    if broadcast:
        if sharding_keys:
            r.error(path, f"a table cannot be both sharded and broadcast (remove broadcast or {', '.join(sharding_keys)})")
            return None
        return TableRule(name, broadcast=True, id_generator=id_gen)
    if not sharding_keys:
        return TableRule(name, id_generator=id_gen)  # unsharded: lives in the schema's home
    if shard_key is None and "shard_key" not in d:
        r.error(f"{path}.shard_key", "required key is missing")
    algorithm = r.choice(d, "algorithm", path, ALGORITHMS)
    databases = r.positive(d, "databases", path)
    per_db = r.positive(d, "tables_per_database", path)
    placement = _placement(r, d.get("placement"), f"{path}.placement", databases, datasources) if databases else ()
    boundaries: tuple[int, ...] = ()
    shard_fn = None
    function = r.get(d, "function", path, str, None)
    if algorithm == "range":
        raw_b = r.get(d, "boundaries", path, list)
        if raw_b is not None and databases and per_db:
            if not all(isinstance(b, int) and not isinstance(b, bool) for b in raw_b):
                r.error(f"{path}.boundaries", "every boundary must be an integer")
            elif sorted(set(raw_b)) != raw_b:
                r.error(f"{path}.boundaries", "boundaries must be strictly ascending")
            elif len(raw_b) != databases * per_db - 1:
                r.error(f"{path}.boundaries", f"needs {databases * per_db - 1} boundaries for {databases * per_db} slots, got {len(raw_b)}")
            else:
                boundaries = tuple(raw_b)
    elif "boundaries" in d:
        r.error(f"{path}.boundaries", "only used with algorithm: range")
    if algorithm == "custom":
        if function is None:
            r.error(f"{path}.function", "required key is missing (algorithm custom needs package.module:function)")
        else:
            from mdriver.sharding import load_custom

            try:
                shard_fn = load_custom(function)
            except (ImportError, AttributeError, ValueError) as e:
                r.error(f"{path}.function", f"cannot import {function!r}: {e}")
    elif function is not None:
        r.error(f"{path}.function", "only used with algorithm: custom")
    migration = _migration(r, d["migration"], f"{path}.migration", datasources) if d.get("migration") is not None else None
    if len(r.errors) > errors_before or not placement:
        return None  # already reported; a half-built rule would only cause follow-on errors
    return TableRule(
        name, shard_key, algorithm, databases, per_db, placement, False, boundaries, function, shard_fn, migration, id_gen
    )


def _sharding_shape(rule: TableRule) -> tuple:
    return (rule.algorithm, rule.databases, rule.tables_per_database, rule.placement, rule.boundaries, rule.function)


def _schema(r: _Reader, name: str, raw: Any, datasources: dict) -> Schema | None:
    path = f"schemas.{name}"
    d = r.mapping(raw, path, ("datasource", "tables", "binding"))
    home = r.get(d, "datasource", path, str)
    if home and home not in datasources:
        r.error(f"{path}.datasource", f"datasource {home!r} is not defined under datasources")
    tables: dict[str, TableRule] = {}
    for tname, traw in r.mapping(r.get(d, "tables", path, dict, {}), f"{path}.tables").items():
        rule = _table(r, name, str(tname), traw, datasources)
        if rule is not None:
            tables[str(tname)] = rule
    groups: list[frozenset[str]] = []
    for i, group in enumerate(r.get(d, "binding", path, list, [])):
        gpath = f"{path}.binding[{i}]"
        if not isinstance(group, list) or len(group) < 2 or not all(isinstance(t, str) for t in group):
            r.error(gpath, "a binding group is a list of at least two table names")
            continue
        undefined = [t for t in group if t not in d.get("tables", {})]
        if undefined:
            r.error(gpath, f"table {', '.join(undefined)} is not defined under {path}.tables")
            continue
        rules = [tables.get(t) for t in group]
        if any(rule is None for rule in rules):
            continue
        unsharded = [rule.name for rule in rules if not rule.sharded]
        if unsharded:
            r.error(gpath, f"table {', '.join(unsharded)} is not sharded; only sharded tables can be bound")
            continue
        first = rules[0]
        for rule in rules[1:]:
            if _sharding_shape(rule) != _sharding_shape(first):
                r.error(gpath, f"{rule.name} is sharded differently from {first.name} (algorithm, counts and placement must match)")
        if any(g & set(group) for g in groups):
            r.error(gpath, "a table may be in only one binding group")
        groups.append(frozenset(group))
    if home is None or home not in datasources:
        return None
    return Schema(name, home, frozen_map(tables), tuple(groups))


def _proxy(r: _Reader, raw: Any) -> ProxyOptions:
    path = "proxy"
    keys = ("listen", "users", "metrics", "max_client_connections", "idle_timeout", "max_allowed_packet", "backend_timeout", "tls")
    d = r.mapping(raw, path, keys)
    kwargs: dict[str, Any] = {}
    for key, field_name in (("listen", "listen"), ("metrics", "metrics")):
        text = r.get(d, key, path, str, None)
        if text is not None:
            try:
                host, port = parse_host_port(text)
            except ValueError as e:
                r.error(f"{path}.{key}", str(e))
                continue
            kwargs[f"{field_name}_host"], kwargs[f"{field_name}_port"] = host, port
    users = {}
    for uname, uraw in r.mapping(r.get(d, "users", path, dict, {}), f"{path}.users").items():
        upath = f"{path}.users.{uname}"
        u = r.mapping(uraw, upath, ("password", "schemas"))
        password = r.get(u, "password", upath, (str, int), "")
        schemas = r.get(u, "schemas", upath, list, [])
        users[str(uname)] = ProxyUser(str(uname), str(password), tuple(str(s) for s in schemas))
    kwargs["users"] = frozen_map(users)
    for key in ("max_client_connections", "max_allowed_packet"):
        value = r.positive(d, key, path, None)
        if value is not None:
            kwargs[key] = value
    for key in ("idle_timeout", "backend_timeout"):
        value = r.get(d, key, path, float, None)
        if value is not None:
            kwargs[key] = value
    if "tls" in d:
        t = r.mapping(d["tls"], f"{path}.tls", ("cert", "key", "required"))
        kwargs["tls_cert"] = r.get(t, "cert", f"{path}.tls", str)
        kwargs["tls_key"] = r.get(t, "key", f"{path}.tls", str)
        kwargs["tls_required"] = r.get(t, "required", f"{path}.tls", bool, False)
    return ProxyOptions(**kwargs)


def _router(r: _Reader, raw: Any) -> RouterOptions:
    path = "router"
    d = r.mapping(raw, path, ("allow_scatter_dml", "max_offset", "scatter_enumerate_limit", "plan_cache_size"))
    defaults = RouterOptions()
    return RouterOptions(
        allow_scatter_dml=r.get(d, "allow_scatter_dml", path, bool, defaults.allow_scatter_dml),
        max_offset=r.positive(d, "max_offset", path, defaults.max_offset) or defaults.max_offset,
        scatter_enumerate_limit=r.positive(d, "scatter_enumerate_limit", path, defaults.scatter_enumerate_limit)
        or defaults.scatter_enumerate_limit,
        plan_cache_size=r.positive(d, "plan_cache_size", path, defaults.plan_cache_size) or defaults.plan_cache_size,
    )


TOP_KEYS = ("version", "datasources", "schemas", "router", "proxy", "transaction_mode")


def build_config(doc: Any, source: str = "", revision: str | None = None) -> Config:
    """Validate a parsed document completely; raise ConfigError listing every problem."""
    r = _Reader()
    if not isinstance(doc, dict):
        raise ConfigError([f"(top): expected a mapping with keys {', '.join(TOP_KEYS)}, got {_kind(doc)}"], source)
    r.mapping(doc, "(top)", TOP_KEYS)
    r.errors = [e.replace("(top).", "", 1) for e in r.errors]
    version = r.get(doc, "version", "(top)", int)
    if version is not None and version != 1:
        r.error("version", f"unsupported config version {version} (this release reads version 1)")
    raw_ds = r.mapping(r.get(doc, "datasources", "(top)", dict), "datasources")
    if "datasources" in doc and not raw_ds:
        r.error("datasources", "at least one datasource is required")
    datasources = {str(n): _datasource(r, str(n), v) for n, v in raw_ds.items()}
    raw_schemas = r.mapping(r.get(doc, "schemas", "(top)", dict), "schemas")
    schemas = {str(n): _schema(r, str(n), v, datasources) for n, v in raw_schemas.items()}
    proxy = _proxy(r, doc.get("proxy"))
    for uname, user in proxy.users.items():
        for s in user.schemas:
            if s not in raw_schemas:
                r.error(f"proxy.users.{uname}.schemas", f"schema {s!r} is not defined under schemas")
    router = _router(r, doc.get("router"))
    mode = r.choice(doc, "transaction_mode", "(top)", TRANSACTION_MODES, "xa")
    r.errors = [e.replace("(top).", "", 1) for e in r.errors]
    if r.errors:
        raise ConfigError(r.errors, source)
    if revision is None:
        revision = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Config(
        version=version,
        datasources=frozen_map(datasources),
        schemas=frozen_map(schemas),
        router=router,
        proxy=proxy,
        transaction_mode=mode,
        revision=revision,
        source=source,
    )
