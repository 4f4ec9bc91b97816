"""Positions, checkpoints, grants, the crash hook, progress text: the pure parts of the migrator."""
import datetime
from decimal import Decimal

import pytest

from migrator.checkpoint import Checkpoint, decode_pk, encode_pk, resume_position
from migrator.faults import Faults
from migrator.inspector import has_privilege, parse_grants, shard_ddl, table_problems
from migrator.migration import Stats, copy_filters, min_key
from migrator.progress import format_status, progress_line
from migrator.state import Position
from migrator.table import Column, TableInfo


def test_positions_order_by_file_sequence_then_offset():
    a = Position("mysql-bin.999999", 500)
    b = Position("mysql-bin.1000000", 4)
    assert a < b and b > a and a <= a
    assert Position.parse("mysql-bin.000003:1234") == Position("mysql-bin.000003", 1234)
    with pytest.raises(ValueError):
        Position.parse("nonsense")
    cps = [Checkpoint("m", "forward", ds, "src", p) for ds, p in (("ds0", b), ("ds1", a))]
    assert resume_position(cps) == a


def test_primary_keys_round_trip_with_their_types():
    key = (7, -1, "abc", b"\x00\xff", Decimal("1.50"), datetime.datetime(2024, 1, 2, 3, 4, 5, 6), datetime.date(2024, 1, 2))
    assert decode_pk(encode_pk(key)) == key
    assert encode_pk(None) is None and decode_pk(None) is None
    with pytest.raises(TypeError):
        encode_pk((None,))


def test_copy_filters_admit_only_copied_keys():
    cps = {
        "ds0": Checkpoint("m", "forward", "ds0", "src", Position("f.1", 4), last_pk=(100,)),
        "ds1": Checkpoint("m", "forward", "ds1", "src", Position("f.1", 4), last_pk=None),
        "ds2": Checkpoint("m", "forward", "ds2", "src", Position("f.1", 4), last_pk=(5,), copy_done=True),
    }
    f = copy_filters(cps)
    assert f["ds0"]((100,)) and not f["ds0"]((101,))
    assert not f["ds1"]((1,))
    assert "ds2" not in f  # copy done: everything applies
    assert min_key([(3,), (2,)]) == (2,) and min_key([(3,), None]) is None


def test_grants_are_parsed_with_wildcards():
    grants = parse_grants([
        "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `m`@`%`",
        "GRANT SELECT, INSERT ON `app\\_%`.* TO `m`@`%`",
        "GRANT SELECT (id) ON `legacy`.`t` TO `m`@`%`",
    ])
    assert has_privilege(grants, "REPLICATION SLAVE")
    assert has_privilege(grants, "INSERT", "app_07", "user_relation_0001")
    assert not has_privilege(grants, "INSERT", "appx07", "t")
    assert not has_privilege(grants, "DELETE", "app_07", "t")
    assert has_privilege(parse_grants(["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"]),
                         "DELETE", "x", "y")


def test_shard_ddl_is_the_source_ddl_renamed():
    info = TableInfo("legacy", "t", (Column("id", "int", nullable=False),), ("id",),
                     "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB "
                     "AUTO_INCREMENT=42 DEFAULT CHARSET=utf8mb4")
    ddl = shard_ddl(info, "app_03", "t_0099")
    assert ddl.startswith("CREATE TABLE IF NOT EXISTS `app_03`.`t_0099` (")
    assert "AUTO_INCREMENT=42" not in ddl and "PRIMARY KEY (`id`)" in ddl


def test_table_problems_name_the_fix():
    info = TableInfo("legacy", "t", (Column("id", "varchar", "varchar(10)", False, "utf8mb4", "utf8mb4_general_ci"),
                                     Column("uid", "bigint", "bigint(20)", True),
                                     Column("g", "point", "point", True)), ("id",))
    problems = table_problems(info, "uid", "MyISAM")
    text = "\n".join(p.what + " | " + p.fix for p in problems)
    assert "ENGINE=InnoDB" in text
    assert "allows NULL" in text and "NOT NULL" in text
    assert "utf8mb4_general_ci" in text
    assert "point" in text
    assert any("ADD PRIMARY KEY" in p.fix for p in table_problems(TableInfo("d", "t", (Column("uid", "int", nullable=False),), ()), "uid", "InnoDB"))


def test_crash_point_spec():
    f = Faults.from_env({"MDRIVER_MIGRATE_CRASH_AT": "copy-chunk:3"})
    assert (f.point, f.count) == ("copy-chunk", 3)
    assert Faults.from_env({}).point is None
    f.crash_point("other")  # not the chosen point: nothing happens


def test_progress_line_and_status_text():
    s = Stats(phase="copying", rows_copied=500, total_rows=1000, rows_per_s=100.0, lag_seconds=1.5)
    line = progress_line(s)
    assert "50.0%" in line and "500/1,000 rows" in line and "ETA 0:05" in line and "lag 1.5 s" in line
    doc = {"migration": "app.t", "source": "ds0.app.t", "reads": "source", "writes": "source", "phase": "streaming",
           "running": True, "pid": 1, "host": "h", "replication": "forward", "active": "forward", "rows_copied": 10,
           "rows_total": 10, "copy_done": True, "percent": 100.0, "rows_per_s": 0.0, "lag_seconds": 0.25,
           "lag_events": 3, "lag_bytes": 2048, "events_per_s": 12.0, "events_applied": 5, "throttled": None,
           "heartbeat_age": 0.2, "checkpoints": {"ds0": {"position": "f.1:4", "copy_done": True, "rows_copied": 10}},
           "reverse_checkpoints": {}, "last_verify": {"ok": False, "position": "f.1:4", "chunks": 2, "source_rows": 10,
                                                      "mismatched_chunks": 1, "differences": [{}], "finished_at": 0},
           "error": None}
    text = format_status(doc)
    assert "lag 0.2 s, 3 events pending, 2.0 KiB of binlog behind, 12 events/s" in text
    assert "DIFFERENT (1 chunks, 1 keys listed)" in text
