"""Shard functions follow DESIGN §3 exactly, spread keys evenly, and reject bad keys clearly."""
from __future__ import annotations

import zlib
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdriver.config import load_config
from mdriver.config.model import Placement, Schema, TableRule
from mdriver.sharding import (
    Location,
    ShardKeyError,
    all_locations,
    iter_physical_databases,
    locate,
    slot_for,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load_config(str(ROOT / "config" / "sharding.yaml"))
APP = CONFIG.schemas["app"]
REL = APP.tables["user_relation"]
PLACEMENT = (Placement("ds0", 0, 15), Placement("ds1", 16, 31))
HASHED = TableRule("ledger", "uid", "hash", 32, 32, PLACEMENT)
RANGED = TableRule("events", "id", "range", 2, 2, (Placement("ds0", 0, 0), Placement("ds1", 1, 1)), boundaries=(100, 200, 300))
SCHEMA = Schema("app", "ds0", {"ledger": HASHED, "events": RANGED})


def test_mod_is_python_modulo_and_layout_names():
    assert locate(APP, REL, 0) == Location("ds0", "app_00", "user_relation_0000", 0)
    assert locate(APP, REL, 1023) == Location("ds1", "app_31", "user_relation_1023", 1023)
    assert locate(APP, REL, 1024 + 517) == Location("ds1", "app_16", "user_relation_0517", 517)
    assert slot_for(REL, -1) == 1023  # Python %, never negative
    assert slot_for(REL, Decimal("2048")) == 0


def test_hash_is_crc32_of_text():
    assert slot_for(HASHED, 12345) == zlib.crc32(b"12345") % 1024
    assert slot_for(HASHED, "12345") == slot_for(HASHED, 12345)  # same text, same slot
    assert slot_for(HASHED, "名字") == zlib.crc32("名字".encode()) % 1024


def test_range_uses_boundaries():
    assert [slot_for(RANGED, k) for k in (-5, 99, 100, 199, 200, 299, 300, 10**12)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert locate(SCHEMA, RANGED, 250) == Location("ds1", "app_01", "events_0002", 2)


@pytest.mark.parametrize("rule,key,message", [
    (REL, "12", "algorithm mod needs an integer key, got str '12'"),
    (REL, 1.5, "algorithm mod needs an integer key, got float 1.5"),
    (REL, True, "True is not an integer shard key"),
    (REL, None, "NULL cannot be a shard key"),
    (HASHED, None, "NULL cannot be a shard key"),
    (RANGED, "x", "algorithm range needs an integer key"),
])
def test_bad_keys_are_refused(rule, key, message):
    with pytest.raises(ShardKeyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        slot_for(rule, key)


def test_custom_function_result_is_checked():
    bad = TableRule("t", "k", "custom", 2, 2, (Placement("ds0", 0, 1),), function="x:y", shard_fn=lambda key, n: n)
    with pytest.raises(ShardKeyError, match=r"returned 4, not a slot in 0..3"):
        slot_for(bad, 1)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(min_value=-(2**63), max_value=2**64), st.text(min_size=1)))
def test_every_key_lands_in_exactly_one_physical_table(key):
    rules = [(HASHED, key)] + ([(REL, key), (RANGED, key)] if isinstance(key, int) else [])
    for rule, k in rules:
        schema = APP if rule is REL else SCHEMA
        loc = locate(schema, rule, k)
        matches = [candidate for candidate in all_locations(schema, rule) if candidate == loc]
        assert len(matches) == 1


@pytest.mark.parametrize("rule", [REL, HASHED], ids=["mod", "hash"])
def test_one_million_keys_spread_uniformly(rule):
    keys = range(7, 7 + 1_000_000 * 7919, 7919)  # a stride, so mod is not trivially perfect
    counts = Counter(slot_for(rule, k) for k in keys)
    assert len(counts) == 1024
    mean = 1_000_000 / 1024
    worst = max(abs(c - mean) / mean for c in counts.values())
    assert worst < 0.15, f"worst table deviates {worst:.1%} from uniform"
    per_db = Counter(slot // 32 for slot in counts.elements())
    assert max(abs(c - mean * 32) / (mean * 32) for c in per_db.values()) < 0.03


def test_all_locations_counts_and_broadcast_copies():
    locations = all_locations(APP, REL)
    assert len(locations) == len(set(locations)) == 1024
    assert Counter(loc.datasource for loc in locations) == {"ds0": 512, "ds1": 512}
    region = all_locations(APP, APP.tables["region"])
    assert region[0] == Location("ds0", "app", "region")
    assert len(region) == 33 and {loc.database for loc in region[1:]} == {f"app_{i:02d}" for i in range(32)}
    assert list(iter_physical_databases(APP))[0] == ("ds0", "app")
