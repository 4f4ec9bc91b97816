"""EtcdSource against a real etcd: compare-and-swap, history that outlives compaction, migrator updates."""
from __future__ import annotations

import re
import threading

import pytest
import yaml

from etcd_helpers import BASE_TEXT, variant
from mdriver.config import ConfigError, load_config
from mdriver.config.etcd import ConfigNotFoundError, EtcdSource
from mdriver.config.publish import publish, set_migration_phase, update
from mdriver.config.sources import ConfigSourceError, ConflictError

pytestmark = pytest.mark.etcd

MIGRATING = BASE_TEXT.replace(
    "        placement: {ds0: \"0-15\", ds1: \"16-31\"}\n      user_fans:",
    "        placement: {ds0: \"0-15\", ds1: \"16-31\"}\n"
    "        migration:\n"
    "          source: {datasource: ds0, database: app, table: user_relation}\n"
    "          reads: source\n"
    "          writes: source\n"
    "      user_fans:",
)


def test_nothing_published_is_a_clear_error(source):
    with pytest.raises(ConfigNotFoundError, match=r"no config at key /mdriver-test-\w+/config .*mdriver-config .*push FILE"):
        source.read()
    with pytest.raises(ConfigSourceError, match="no config"):
        load_config(source.url)


def test_write_read_roundtrip_keeps_text_and_records_history(source):
    text = "# 配置 — non-ASCII comment survives\n" + BASE_TEXT
    first = source.write(text, None, message="initial", author="alice@ops")
    snap = source.read()
    assert snap.text == text and snap.revision == first and snap.document["version"] == 1
    config = load_config(source.url)
    assert config.revision == first and config.source == source.url

    second = source.write(variant(5000, text), first, message="smaller offset", author="bob@ops")
    assert int(second) > int(first)
    entries = source.history()
    assert [(e.revision, e.author, e.message, e.previous) for e in entries] == [
        (second, "bob@ops", "smaller offset", first),
        (first, "alice@ops", "initial", ""),
    ]
    assert entries[1].text == text and entries[0].time >= entries[1].time > 0
    assert source.version(first).text == text


def test_stale_expected_revision_is_refused_and_names_the_winner(source):
    r1 = source.write(BASE_TEXT, None, message="initial")
    r2 = source.write(variant(5000), r1, message="carol's change", author="carol@ops")
    with pytest.raises(ConflictError) as e:
        source.write(variant(7000), r1, message="dave's change")
    msg = str(e.value)
    assert f"revision {r1}, now revision {r2}, published by carol@ops: carol's change" in msg
    assert "nothing was written" in msg
    assert source.read().revision == r2
    assert len(source.history()) == 2
    with pytest.raises(ConfigSourceError, match="'abc' is not an etcd revision"):
        source.write(BASE_TEXT, "abc")


def test_two_concurrent_writers_exactly_one_wins(etcd_url):
    base = EtcdSource.from_url(etcd_url).write(BASE_TEXT, None)
    barrier = threading.Barrier(2)
    outcomes: dict[int, object] = {}

    def writer(offset: int) -> None:
        src = EtcdSource.from_url(etcd_url)
        barrier.wait()
        try:
            outcomes[offset] = src.write(variant(offset), base, message=f"offset {offset}")
        except ConflictError as e:
            outcomes[offset] = e

    threads = [threading.Thread(target=writer, args=(n,)) for n in (1111, 2222)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    winners = {k: v for k, v in outcomes.items() if isinstance(v, str)}
    losers = {k: v for k, v in outcomes.items() if isinstance(v, ConflictError)}
    assert len(winners) == 1 and len(losers) == 1, outcomes
    (win_offset, win_rev), = winners.items()
    (lose_offset, err), = losers.items()
    assert f"offset {win_offset}" in str(err)
    now = EtcdSource.from_url(etcd_url).read()
    assert now.revision == win_rev and f"max_offset: {win_offset}" in now.text


def test_first_push_is_also_compare_and_swap(source):
    source.write(BASE_TEXT, None)
    with pytest.raises(ConflictError, match="changed since it was read \\(empty, now revision"):
        source.write(variant(1), None)


def test_history_and_rollback_source_outlive_compaction(source):
    r1 = source.write(BASE_TEXT, None, message="v1")
    r2 = source.write(variant(2000), r1, message="v2")
    r3 = source.write(variant(3000), r2, message="v3")
    source.request("kv/compaction", {"revision": int(r3), "physical": True})
    assert source.version(r1).text == BASE_TEXT
    assert "max_offset: 2000" in source.version(r2).text
    with pytest.raises(ConfigSourceError, match=f"revision {int(r1) - 1} is not a config version"):
        source.version(str(int(r1) - 1))


def test_publish_refuses_invalid_config_and_writes_nothing(source):
    r1 = publish(source, BASE_TEXT).revision
    broken = BASE_TEXT.replace('placement: {ds0: "0-15", ds1: "16-31"}', 'placement: {ds0: "0-15", ds1: "17-31"}', 1)
    with pytest.raises(ConfigError) as e:
        publish(source, broken, where="broken.yaml")
    assert "schemas.app.tables.user_relation.placement: database 16 has no datasource (gap)" in e.value.errors
    with pytest.raises(ConfigSourceError, match="invalid YAML at line 2"):
        publish(source, "version: 1\n  : [\n")
    assert source.read().revision == r1 and len(source.history()) == 1


def test_publish_of_identical_text_writes_nothing(source):
    r1 = publish(source, BASE_TEXT).revision
    result = publish(source, BASE_TEXT)
    assert not result.changed and result.revision == r1 and result.diff == ""
    assert len(source.history()) == 1


def test_endpoint_list_skips_a_dead_member(etcd_server, etcd_prefix):
    from mdriver.sandbox.cluster import free_port

    url = f"etcd://127.0.0.1:{free_port()},{etcd_server.host}:{etcd_server.port}{etcd_prefix}?timeout=2"
    src = EtcdSource.from_url(url)
    rev = src.write(BASE_TEXT, None)
    assert src.read().revision == rev


def test_migration_phase_change_is_a_validated_cas_update(source):
    r1 = publish(source, MIGRATING).revision
    result = set_migration_phase(source, "app", "user_relation", reads="shadow")
    assert result.changed and int(result.revision) > int(r1)
    assert re.search(r"^-\s+reads: source$", result.diff, re.M) and re.search(r"^\+\s+reads: shadow$", result.diff, re.M)
    config = load_config(source.url)
    assert config.schemas["app"].tables["user_relation"].migration.reads == "shadow"
    assert source.history()[0].message == "migration app.user_relation: reads=shadow"

    with pytest.raises(ConfigError, match="schemas.app.tables.user_fans.migration: no migration is configured"):
        set_migration_phase(source, "app", "user_fans", writes="fenced")
    with pytest.raises(ValueError, match="writes must be one of source, fenced, shards"):
        set_migration_phase(source, "app", "user_relation", writes="closed")


def test_concurrent_updates_both_land_by_retrying(etcd_url):
    publish(etcd_url, MIGRATING)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(change, message):
        calls = []

        def edit(doc):
            if not calls:
                barrier.wait(5)  # both have read the same revision before either writes
            calls.append(1)
            change(doc)
        try:
            update(EtcdSource.from_url(etcd_url), edit, message=message)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def reads(doc):
        doc["schemas"]["app"]["tables"]["user_relation"]["migration"]["reads"] = "shards"

    def offset(doc):
        doc["router"]["max_offset"] = 4242

    threads = [threading.Thread(target=run, args=(f, m)) for f, m in ((reads, "reads"), (offset, "offset"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    doc = yaml.safe_load(EtcdSource.from_url(etcd_url).read().text)
    assert doc["schemas"]["app"]["tables"]["user_relation"]["migration"]["reads"] == "shards"
    assert doc["router"]["max_offset"] == 4242
    assert len(EtcdSource.from_url(etcd_url).history()) == 3


def test_update_refuses_a_corrupted_current_config(source):
    source.put(source.config_key, "version: [unclosed\n")
    with pytest.raises(ConfigSourceError, match="invalid YAML"):
        update(source, lambda doc: None, message="noop")
