"""``mdriver-config``: check a config file, and (with etcd) publish and inspect it.

Every verb prints one-line errors naming the offending key path and exits 1 on
invalid config; it never shows a traceback for a user mistake.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Callable, Sequence

from mdriver.config.load import load_config
from mdriver.config.model import Config
from mdriver.config.sources import ConfigSourceError
from mdriver.config.validate import ConfigError
from mdriver.sharding import all_locations, physical_database, physical_table

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def summarize(config: Config) -> list[str]:
    """Per logical table: algorithm, physical databases and tables; then tables per datasource."""
    lines = [f"config {config.source or '-'}  version {config.version}  revision {config.revision}"]
    per_ds: Counter[str] = Counter()
    per_ds_table: dict[str, Counter[str]] = {}
    for schema in config.schemas.values():
        lines.append(f"schema {schema.name} (home: database {schema.name} on {schema.datasource})")
        for rule in schema.tables.values():
            locations = all_locations(schema, rule)
            per_ds.update(loc.datasource for loc in locations)
            for loc in locations:
                per_ds_table.setdefault(loc.datasource, Counter())[f"{schema.name}.{rule.name}"] += 1
            if rule.sharded:
                placement = ", ".join(f"{p.datasource}: {p.first}-{p.last}" for p in rule.placement)
                last = rule.slots - 1
                lines.append(
                    f"  {rule.name}: sharded by {rule.shard_key} ({rule.algorithm}), "
                    f"{rule.databases} databases x {rule.tables_per_database} tables = {rule.slots} physical tables, "
                    f"{physical_database(schema.name, 0)}..{physical_database(schema.name, rule.databases - 1)}, "
                    f"{physical_table(rule.name, 0)}..{physical_table(rule.name, last)}; placement {placement}"
                )
            elif rule.broadcast:
                lines.append(f"  {rule.name}: broadcast, {len(locations)} copies (home + every shard database)")
            else:
                lines.append(f"  {rule.name}: unsharded, in {schema.name} on {schema.datasource}")
            if rule.migration:
                m = rule.migration
                lines.append(
                    f"    migration from {m.source_datasource}.{m.source_database}.{m.source_table}: "
                    f"reads={m.reads} writes={m.writes}"
                )
        for group in schema.binding:
            lines.append(f"  binding: {', '.join(sorted(group))}")
    lines.append("physical tables per datasource:")
    for name, ds in config.datasources.items():
        detail = ", ".join(f"{t} {n}" for t, n in per_ds_table.get(name, Counter()).items())
        lines.append(f"  {name} {ds.host}:{ds.port}: {per_ds.get(name, 0)}" + (f" ({detail})" if detail else ""))
    return lines


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    print("\n".join(summarize(config)))
    print("OK")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mdriver-config",
        description="Validate mdriver routing config and, with etcd, publish and inspect it.",
        epilog="Errors name the key path of each problem, e.g. "
        "'schemas.app.tables.user_relation.placement: database 31 has no datasource (gap)'. Exit 1 on invalid config.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    check = sub.add_parser("check", help="validate a config file or URL and print a summary of the physical layout")
    check.add_argument("file", metavar="FILE", help="a YAML file (or etcd://host:port/prefix)")
    check.set_defaults(func=cmd_check)
    return parser


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse and dispatch; user-facing failures become one-line messages and exit codes."""
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return func(args)
    except ConfigError as e:
        for line in e.errors:
            print(f"error: {line}", file=sys.stderr)
        print(f"{len(e.errors)} error(s) in {e.source or 'config'}", file=sys.stderr)
        return EXIT_INVALID
    except ConfigSourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
