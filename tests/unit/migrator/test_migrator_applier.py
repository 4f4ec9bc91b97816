"""How a batch of source transactions becomes per-server, per-table final states (no server needed)."""
import os

from mdriver.config import load_config
from mdriver.sharding import locate
from migrator.applier import ForwardApplier, TableOps, statements_for
from migrator.changes import DELETE, INSERT, UPDATE, RowChange, Transaction
from migrator.checkpoint import Checkpoint
from migrator.state import Position, resolve

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
COLS = ("id", "uid", "v")


def _ident(tmp_path):
    text = open(os.path.join(ROOT, "config", "sharding.yaml")).read().replace(
        "        placement: {ds0: \"0-15\", ds1: \"16-31\"}\n      user_fans:",
        "        placement: {ds0: \"0-15\", ds1: \"16-31\"}\n"
        "        migration: {source: {datasource: ds0, database: app, table: user_relation}}\n      user_fans:", 1)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return resolve(load_config(str(path)), "app.user_relation")


def _applier(tmp_path, at=Position("mysql-bin.000001", 100)):
    ident = _ident(tmp_path)
    cps = {ds: Checkpoint(ident.name, "forward", ds, "ds0", at, copy_done=True) for ds in ident.targets}
    return ident, ForwardApplier(ident, ("id",), cps, connections={})


def _txn(end, *changes):
    return Transaction(tuple(changes), Position("mysql-bin.000001", end), 0.0)


def test_a_shard_key_change_moves_the_row_between_servers(tmp_path):
    ident, applier = _applier(tmp_path)
    low, high = 5, 1023  # slot 5 is on ds0 (database 0), slot 1023 on ds1 (database 31)
    ops, applied, end = applier.plan([_txn(200, RowChange(UPDATE, "app", "user_relation", COLS, (1, low, "a"),
                                                          (1, high, "b")))], {})
    old, new = locate(ident.schema, ident.rule, low), locate(ident.schema, ident.rule, high)
    assert (old.datasource, new.datasource) == ("ds0", "ds1")
    assert ops["ds0"][(old.database, old.table)].deletes == {(1,): ()}
    assert ops["ds1"][(new.database, new.table)].upserts == {(1,): (COLS, (1, high, "b"))}
    assert end == Position("mysql-bin.000001", 200) and sum(applied.values()) == 2


def test_a_batch_collapses_to_the_last_image_per_key(tmp_path):
    ident, applier = _applier(tmp_path)
    ops, _, _ = applier.plan([
        _txn(200, RowChange(INSERT, "app", "user_relation", COLS, None, (1, 7, "a"))),
        _txn(300, RowChange(UPDATE, "app", "user_relation", COLS, (1, 7, "a"), (1, 7, "b"))),
        _txn(400, RowChange(DELETE, "app", "user_relation", COLS, (1, 7, "b"), None),
             RowChange(INSERT, "app", "user_relation", COLS, None, (2, 7, "c"))),
        _txn(500, RowChange(INSERT, "app", "user_relation", COLS, None, (1, 7, "d"))),
    ], {})
    loc = locate(ident.schema, ident.rule, 7)
    table = ops[loc.datasource][(loc.database, loc.table)]
    assert table.upserts == {(1,): (COLS, (1, 7, "d")), (2,): (COLS, (2, 7, "c"))}
    assert table.deletes == {}


def test_servers_skip_what_their_checkpoint_already_has(tmp_path):
    ident, applier = _applier(tmp_path, at=Position("mysql-bin.000001", 300))
    ops, applied, _ = applier.plan([_txn(200, RowChange(INSERT, "app", "user_relation", COLS, None, (1, 7, "a"))),
                                    _txn(400, RowChange(INSERT, "app", "user_relation", COLS, None, (2, 7, "b")))], {})
    loc = locate(ident.schema, ident.rule, 7)
    assert set(ops[loc.datasource][(loc.database, loc.table)].upserts) == {(2,)}


def test_copy_filter_holds_back_rows_not_copied_yet(tmp_path):
    ident, applier = _applier(tmp_path)
    loc = locate(ident.schema, ident.rule, 7)
    filters = {loc.datasource: lambda key: key <= (10,)}
    ops, _, _ = applier.plan([_txn(200, RowChange(INSERT, "app", "user_relation", COLS, None, (5, 7, "a")),
                                   RowChange(INSERT, "app", "user_relation", COLS, None, (50, 7, "b")))], filters)
    assert set(ops[loc.datasource][(loc.database, loc.table)].upserts) == {(5,)}


def test_statements_delete_then_upsert_by_primary_key():
    ops = TableOps()
    ops.upsert((1,), COLS, (1, 7, "a"))
    ops.delete((2,))
    stmts = statements_for("app_00", "user_relation_0007", ("id",), ops)
    assert stmts[0] == "DELETE FROM `app_00`.`user_relation_0007` WHERE `id` IN (2)"
    assert stmts[1].startswith("INSERT INTO `app_00`.`user_relation_0007` (`id`, `uid`, `v`) VALUES (1, 7, 'a')")
    guarded = TableOps()
    guarded.delete((3,), (9,))
    assert statements_for("app", "t", ("id",), guarded, guard_columns=("uid",)) == \
        ["DELETE FROM `app`.`t` WHERE (`id` = 3 AND `uid` = 9)"]
