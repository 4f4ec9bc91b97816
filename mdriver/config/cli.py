"""``mdriver-config``: check a config file, and (with etcd) publish and inspect it.

Every verb prints one-line errors naming the offending key path and exits 1 on
invalid config; it never shows a traceback for a user mistake.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections import Counter
from typing import Callable, Sequence

from mdriver.config.clients import list_clients
from mdriver.config.etcd import EtcdSource
from mdriver.config.load import load_config
from mdriver.config.model import Config
from mdriver.config.publish import publish, read_current, unified_diff, validate_text
from mdriver.config.sources import ConfigSource, ConfigSourceError, ConflictError, open_source
from mdriver.config.validate import ConfigError
from mdriver.sharding import all_locations, physical_database, physical_table

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
EXIT_CONFLICT = 3  # a compare-and-swap write lost: someone else published first
SOURCE_ENV = "MDRIVER_CONFIG"


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
    add_publish_verbs(sub)
    return parser


# -- publishing verbs: push, get, diff, history, rollback, clients ----------------


def _source(args: argparse.Namespace) -> ConfigSource:
    url = args.source or os.environ.get(SOURCE_ENV)
    if not url:
        raise ConfigSourceError(f"no config source: pass --source etcd://host:port/prefix or set {SOURCE_ENV}")
    return open_source(url)


def _etcd(args: argparse.Namespace) -> EtcdSource:
    source = _source(args)
    if not isinstance(source, EtcdSource):
        raise ConfigSourceError(f"{source.url}: '{args.verb}' needs an etcd source (etcd://host:port/prefix)")
    return source


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigSourceError(f"{path}: cannot read config: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigSourceError(f"{path}: not UTF-8 text: {e.reason}") from None


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _publish(args: argparse.Namespace, text: str, where: str, message: str) -> int:
    source = _source(args)
    def show(diff: str) -> None:
        sys.stdout.write(diff or "no changes\n")

    if args.dry_run:
        validate_text(text, where)
        current = read_current(source)
        show(unified_diff(current.text, text, f"{source.url} (revision {current.revision})", where) if current.text != text else "")
        print(f"dry run: {where} is valid; nothing was written")
        return EXIT_OK
    try:
        result = publish(source, text, expected_revision=args.expect, message=message, where=where, on_diff=show)
    except ConflictError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFLICT
    if result.changed:
        print(f"published revision {result.revision} to {source.url} (was {result.previous or 'empty'})")
    else:
        print(f"{source.url} already holds this config (revision {result.revision}); nothing was written")
    return EXIT_OK


def cmd_push(args: argparse.Namespace) -> int:
    return _publish(args, _read_file(args.file), args.file, args.message or f"push {os.path.basename(args.file)}")


def cmd_rollback(args: argparse.Namespace) -> int:
    source = _etcd(args)
    old = source.version(args.revision)
    message = f"rollback to revision {old.revision}" + (f": {args.message}" if args.message else "")
    return _publish(args, old.text, f"revision {old.revision}", message)


def cmd_get(args: argparse.Namespace) -> int:
    source = _source(args)
    if args.revision:
        text, revision = _etcd(args).version(args.revision).text, args.revision
    else:
        current = read_current(source)
        if current.text is None:
            raise ConfigSourceError(f"{source.url}: no config has been published yet")
        text, revision = current.text, current.revision
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    print(f"# revision {revision} of {source.url}", file=sys.stderr)
    try:
        validate_text(text, f"{source.url} (revision {revision})")
    except (ConfigError, ConfigSourceError) as e:
        print(f"warning: revision {revision} is invalid; running processes ignore it and keep their last good config:",
              file=sys.stderr)
        for line in getattr(e, "errors", [str(e)]):
            print(f"  {line}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    source = _source(args)
    text = _read_file(args.file)
    current = read_current(source)
    name = f"{source.url} (revision {current.revision})" if current.revision else f"{source.url} (empty)"
    diff = unified_diff(current.text, text, name, args.file) if current.text != text else ""
    sys.stdout.write(diff or f"no differences between {name} and {args.file}\n")
    validate_text(text, args.file)
    if current.revision:
        print(f"to publish exactly this change: mdriver-config push {args.file} --source {source.url} --expect {current.revision}",
              file=sys.stderr)
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    source = _etcd(args)
    current = read_current(source).revision
    entries = source.history(limit=args.limit or None)
    if not entries:
        print(f"{source.url}: no history (nothing published with mdriver-config yet)")
    else:
        print(f"  {'REVISION':>9}  {'PUBLISHED':19}  {'AUTHOR':24}  MESSAGE")
    for e in entries:
        mark = "*" if e.revision == current else " "
        print(f"{mark} {e.revision:>9}  {_when(e.time):19}  {e.author[:24]:24}  {e.message}")
    if current and source.history_entry(current) is None:
        print(f"* current revision {current} was written outside mdriver-config (not in history)")
    return EXIT_OK


def cmd_clients(args: argparse.Namespace) -> int:
    source = _etcd(args)
    current = read_current(source).revision
    clients = list_clients(source)
    if args.json:
        print(json.dumps([{**dataclasses.asdict(c), "current": bool(current) and c.revision == current} for c in clients], indent=2))
        return EXIT_OK
    if not clients:
        print(f"{source.url}: no live clients")
        return EXIT_OK
    print(f"{'ID':40}  {'KIND':8}  {'HOST':20}  {'PID':>7}  {'REVISION':>9}  {'STARTED':19}  STATE")
    for c in clients:
        state = "unreadable" if not c.valid else "current" if c.revision == current else "behind" if c.revision else "starting"
        print(f"{c.id:40}  {c.kind:8}  {c.host:20}  {c.pid:>7}  {c.revision or '-':>9}  {_when(c.started):19}  {state}")
    print(f"{len(clients)} live client(s); config revision {current or 'none'}")
    return EXIT_OK


PUBLISH_HELP = """\
Publishing and inspecting central config. SOURCE is etcd://host:port[,host:port]/prefix
(or a YAML file for push/get/diff); it defaults to $MDRIVER_CONFIG.

  push FILE      validate FILE (the checks of `check`), print the diff, publish it with
                 compare-and-swap: if someone else published since it was read, nothing is
                 written and the exit code is 3. --expect REV pins the write to the revision
                 you reviewed (e.g. the one `diff` printed).
  get            print the current config (or --revision REV) on stdout, its revision on stderr
  diff FILE      show what `push FILE` would change
  history        list published versions, newest first (* marks the current one)
  rollback REV   publish the text of revision REV again, as a new revision (same checks)
  clients        list live drivers and proxies and the revision each has applied

Exit codes: 0 ok, 1 invalid config or unreachable source, 2 usage, 3 conflict.
"""


def add_publish_verbs(sub: "argparse._SubParsersAction") -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--source", "--config", dest="source", metavar="SOURCE",
                        help=f"etcd://host:port/prefix (default: ${SOURCE_ENV})")
    write = argparse.ArgumentParser(add_help=False)
    write.add_argument("-m", "--message", default="", help="why, recorded in history")
    write.add_argument("--expect", metavar="REV", help="refuse unless the current revision is REV")
    write.add_argument("--dry-run", action="store_true", help="validate and show the diff; write nothing")

    p = sub.add_parser("push", parents=[common, write], help="validate, diff and publish FILE (compare-and-swap)",
                       description=PUBLISH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_push)
    p = sub.add_parser("get", parents=[common], help="print the published config", description=PUBLISH_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--revision", metavar="REV", help="an older published revision")
    p.set_defaults(func=cmd_get)
    p = sub.add_parser("diff", parents=[common], help="show what pushing FILE would change", description=PUBLISH_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_diff)
    p = sub.add_parser("history", parents=[common], help="list published versions", description=PUBLISH_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=20, help="how many (default 20; 0 for all)")
    p.set_defaults(func=cmd_history)
    p = sub.add_parser("rollback", parents=[common, write], help="publish an older revision again",
                       description=PUBLISH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("revision", metavar="REV")
    p.set_defaults(func=cmd_rollback)
    p = sub.add_parser("clients", parents=[common], help="list live clients and their applied revision",
                       description=PUBLISH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_clients)


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
