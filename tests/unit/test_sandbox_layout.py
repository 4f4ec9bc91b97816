"""Splitting schema files and renaming CREATE TABLEs for physical copies (no server)."""
from __future__ import annotations

import os

import pytest

from mdriver.config import build_config, load_config
from mdriver.sandbox.configfile import with_ports
from mdriver.sandbox.layout import (
    SchemaFileError,
    parse_create_table,
    parse_schema,
    plan_layout,
    plan_reference,
    read_schema_file,
    split_statements,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_split_ignores_semicolons_in_quotes_and_comments():
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE a (x VARCHAR(10) DEFAULT 'a;b', y INT COMMENT "it's; fine");
    # hash comment;
    /* block; comment */
    CREATE TABLE `b;c` (z INT DEFAULT 0) COMMENT='don''t; split' ;
    CREATE TABLE d (e TEXT DEFAULT 'back\\\\slash\\'; quote')
    """
    parts = split_statements(sql)
    assert [p[0].split("(")[0].strip() for p in parts] == ["CREATE TABLE a", "CREATE TABLE `b;c`", "CREATE TABLE d"]
    assert [p[1] for p in parts] == [3, 6, 7]
    assert parts[0][0].endswith("COMMENT \"it's; fine\")")


def test_split_drops_comment_only_statements_and_reports_unclosed_quotes():
    assert split_statements("-- nothing\n;;  /* x */ ;\n") == []
    with pytest.raises(SchemaFileError, match="line 2: ' is never closed"):
        split_statements("CREATE TABLE a (x INT);\nCREATE TABLE b (y VARCHAR(3) DEFAULT 'oops);")
    with pytest.raises(SchemaFileError, match="comment /\\* is never closed"):
        split_statements("CREATE TABLE a (x INT) /* no end")


def test_rename_changes_only_the_table_name():
    text = "CREATE  TABLE\n  `user_relation` (\n  id INT, note VARCHAR(9) DEFAULT 'user_relation'\n) ENGINE=InnoDB"
    ddl = parse_create_table(text, 1)
    assert ddl.name == "user_relation" and not ddl.if_not_exists
    out = ddl.for_table("user_relation_0007", "app_00")
    assert out == (
        "CREATE  TABLE IF NOT EXISTS `app_00`.`user_relation_0007` (\n"
        "  id INT, note VARCHAR(9) DEFAULT 'user_relation'\n) ENGINE=InnoDB"
    )
    assert out.endswith(text[text.index("(\n"):])  # the body is byte-identical


def test_rename_keeps_existing_if_not_exists_and_unquoted_names():
    ddl = parse_create_table("create table if not exists region(region_id int primary key)", 4)
    assert ddl.name == "region" and ddl.if_not_exists
    assert ddl.for_table("region", "app_03") == "create table if not exists `app_03`.`region`(region_id int primary key)"
    odd = parse_create_table("CREATE TABLE `we``ird` (a INT)", 1)
    assert odd.name == "we`ird"
    assert odd.for_table("we`ird_0001") == "CREATE TABLE IF NOT EXISTS `we``ird_0001` (a INT)"


@pytest.mark.parametrize(
    "sql, message",
    [
        ("INSERT INTO t VALUES (1)", "only CREATE TABLE statements are allowed, got 'INSERT INTO t'"),
        ("CREATE VIEW v AS SELECT 1", "only CREATE TABLE statements are allowed"),
        ("CREATE TEMPORARY TABLE t (a INT)", "no OR REPLACE / TEMPORARY"),
        ("CREATE OR REPLACE TABLE t (a INT)", "no OR REPLACE / TEMPORARY"),
        ("CREATE TABLE app.t (a INT)", "table app.t is qualified"),
        ("CREATE TABLE t LIKE u", "no LIKE / AS SELECT"),
        ("CREATE TABLE t AS SELECT 1", "no LIKE / AS SELECT"),
        ("CREATE TABLE t (LIKE u)", "LIKE is not supported"),
        ("CREATE TABLE IF EXISTS t (a INT)", "expected IF NOT EXISTS"),
    ],
)
def test_refusals_name_the_statement(sql, message):
    with pytest.raises(SchemaFileError) as info:
        parse_schema("\n\n" + sql + ";")
    assert "statement at line 3" in str(info.value)
    assert message in str(info.value)


def test_duplicate_and_empty_files_are_refused():
    with pytest.raises(SchemaFileError, match="table T is already defined at line 1"):
        parse_schema("CREATE TABLE t (a INT);\nCREATE TABLE T (b INT);")
    with pytest.raises(SchemaFileError, match="no CREATE TABLE statement found"):
        parse_schema("-- empty\n")


def test_read_schema_file_errors_name_the_file(tmp_path):
    with pytest.raises(SchemaFileError, match="missing.sql: cannot read"):
        read_schema_file(str(tmp_path / "missing.sql"))
    bad = tmp_path / "bad.sql"
    bad.write_text("DROP TABLE x;")
    with pytest.raises(SchemaFileError, match=r"bad.sql: statement at line 1: only CREATE TABLE"):
        read_schema_file(str(bad))


def test_default_layout_plan():
    config = load_config(os.path.join(ROOT, "config", "sharding.yaml"))
    tables = read_schema_file(os.path.join(ROOT, "examples", "schema.sql"))
    assert list(tables) == ["user_relation", "user_fans", "region"]
    plan = plan_layout(config, tables)
    assert plan.database_count("ds0") == 17 and plan.database_count("ds1") == 16  # app + app_00..15 ; app_16..31
    assert set(plan.databases["ds0"]) == {"app"} | {f"app_{i:02d}" for i in range(16)}
    assert set(plan.databases["ds1"]) == {f"app_{i:02d}" for i in range(16, 32)}
    for ds, first in (("ds0", 0), ("ds1", 512)):
        names = [t for db, tabs in plan.databases[ds].items() for t, _ in tabs]
        assert sorted(n for n in names if n.startswith("user_relation_")) == [f"user_relation_{s:04d}" for s in range(first, first + 512)]
        assert sum(n.startswith("user_fans_") for n in names) == 512
        assert names.count("region") == (17 if ds == "ds0" else 16)
    assert plan.table_count() == 2 * 1024 + 33
    slot_35 = dict(plan.databases["ds0"]["app_01"])["user_relation_0035"]
    assert slot_35.startswith("CREATE TABLE IF NOT EXISTS `app_01`.`user_relation_0035` (\n  id BIGINT UNSIGNED NOT NULL,")


def _small_config(tables):
    return build_config({
        "version": 1,
        "datasources": {"a": {"host": "127.0.0.1", "port": 1, "user": "root"}, "b": {"host": "127.0.0.1", "port": 2, "user": "root"}},
        "schemas": {"s": {"datasource": "a", "tables": tables}},
    })


def test_unconfigured_tables_go_home_and_missing_ones_are_refused():
    config = _small_config({"t": {"shard_key": "k", "algorithm": "mod", "databases": 2, "tables_per_database": 2,
                                  "placement": {"a": "0", "b": "1"}}})
    tables = parse_schema("CREATE TABLE t (k INT);\nCREATE TABLE log (x INT);")
    plan = plan_layout(config, tables)
    assert {ds: {db: [t for t, _ in tabs] for db, tabs in dbs.items()} for ds, dbs in plan.databases.items()} == {
        "a": {"s": ["log"], "s_00": ["t_0000", "t_0001"]},
        "b": {"s_01": ["t_0002", "t_0003"]},
    }
    with pytest.raises(SchemaFileError, match="schema s: no CREATE TABLE for t"):
        plan_layout(config, parse_schema("CREATE TABLE other (x INT);"))


def test_reference_plan_keeps_logical_names():
    tables = parse_schema("CREATE TABLE t (k INT);\nCREATE TABLE u (x INT);")
    plan = plan_reference("ds0", "app_ref", tables)
    assert plan.databases == {"ds0": {"app_ref": [
        ("t", "CREATE TABLE IF NOT EXISTS `app_ref`.`t` (k INT)"),
        ("u", "CREATE TABLE IF NOT EXISTS `app_ref`.`u` (x INT)"),
    ]}}


def test_with_ports_changes_only_ports_and_proxy_addresses():
    doc = {"version": 1, "datasources": {"ds0": {"host": "h", "port": 1, "user": "u"}}, "proxy": {"listen": "127.0.0.1:3307"}}
    out = with_ports(doc, {"ds0": 5555}, proxy_listen="127.0.0.1:6000", metrics="127.0.0.1:6001")
    assert out == {"version": 1, "datasources": {"ds0": {"host": "h", "port": 5555, "user": "u"}},
                   "proxy": {"listen": "127.0.0.1:6000", "metrics": "127.0.0.1:6001"}}
    assert doc["datasources"]["ds0"]["port"] == 1  # the input is not modified
    with pytest.raises(KeyError, match="no datasource named ds9"):
        with_ports(doc, {"ds9": 1})
