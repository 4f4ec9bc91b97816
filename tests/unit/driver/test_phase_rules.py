"""Migration phase decisions and shadow comparison (no server)."""
import pytest

from mdriver import err, phases
from mdriver.config import build_config

BASE = {
    "version": 1,
    "datasources": {"ds0": {"host": "h", "port": 1, "user": "u"}, "ds1": {"host": "h", "port": 2, "user": "u"}},
    "schemas": {"app": {"datasource": "ds0", "tables": {
        "a": {"shard_key": "k", "algorithm": "mod", "databases": 2, "tables_per_database": 1, "placement": {"ds0": "0", "ds1": "1"}},
        "b": {"shard_key": "k", "algorithm": "mod", "databases": 2, "tables_per_database": 1, "placement": {"ds0": "0", "ds1": "1"}},
        "c": {},
    }, "binding": [["a", "b"]]}},
}


def config(**migrations):
    import copy

    doc = copy.deepcopy(BASE)
    for table, (reads, writes, *src) in migrations.items():
        source = src[0] if src else {"datasource": "ds0", "database": "app", "table": table}
        doc["schemas"]["app"]["tables"][table]["migration"] = {"source": source, "reads": reads, "writes": writes}
    return build_config(doc)


def test_no_migration_means_shards():
    p = phases.Phases(config())
    assert not p
    assert p.decide("app", ["a", "c"], True) == phases.SHARDS


def test_reads_and_writes_follow_the_table():
    p = phases.Phases(config(a=("shadow", "source")))
    assert p.decide("app", ["a"], False) == phases.SHADOW
    assert p.decide("app", ["a", "c"], True) == phases.SOURCE
    assert p.decide("app", ["b"], True) == phases.SHARDS


def test_fenced_write_is_retryable_1290():
    p = phases.Phases(config(a=("shards", "fenced")))
    assert p.decide("app", ["a"], False) == phases.SHARDS
    with pytest.raises(err.FencedWriteError) as info:
        p.decide("app", ["a"], True)
    assert info.value.args[0] == 1290 and info.value.retryable and "app.a" in info.value.args[1]


def test_mixed_phases_are_refused():
    p = phases.Phases(config(a=("source", "source"), b=("shards", "source")))
    with pytest.raises(err.NotSupportedError, match="different migration phases"):
        p.decide("app", ["a", "b"], False)
    assert p.decide("app", ["a", "b"], True) == phases.SOURCE


def test_source_view_unshards_migrating_tables():
    cfg = config(a=("source", "source"))
    view, problems = phases.source_view(cfg)
    assert problems == {}
    rule = view.schemas["app"].tables["a"]
    assert not rule.sharded and not rule.broadcast
    assert view.schemas["app"].tables["b"].sharded
    assert view.schemas["app"].binding == ()  # a is no longer sharded: its binding group goes
    assert view.revision != cfg.revision


def test_source_view_names_unreachable_sources():
    cfg = config(a=("source", "source", {"datasource": "ds1", "database": "legacy", "table": "old_a"}))
    _, problems = phases.source_view(cfg)
    assert "legacy.old_a" in problems[("app", "a")]


def test_source_on_another_datasource_moves_the_view_home():
    cfg = config(a=("source", "source", {"datasource": "ds1", "database": "app", "table": "a"}))
    view, problems = phases.source_view(cfg)
    assert problems == {} and view.schemas["app"].datasource == "ds1"


def test_compare_rows_as_multisets():
    assert phases.compare_rows([(1, "a"), (2, "b")], [(2, "b"), (1, "a")]) is None
    diff = phases.compare_rows([(1, "a"), (1, "a")], [(1, "a"), (3, "c")])
    assert diff.missing == ((1, "a"),) and diff.extra == ((3, "c"),)
    assert "missing on shards" in diff.summary()


def test_shadow_stats():
    s = phases.ShadowStats()
    s.record("SELECT 1", None)
    s.record("SELECT 2", phases.Difference(((1,),), ()))
    s.record_failure("SELECT 3", RuntimeError("down"))
    snap = s.snapshot()
    assert (snap["compared"], snap["mismatched"], snap["failed"]) == (2, 1, 1) and "down" in snap["last"]
