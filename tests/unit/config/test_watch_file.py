"""ConfigWatcher on a YAML file: hot reload by polling, bad versions ignored, the on-disk cache."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from mdriver.config import ConfigError
from mdriver.config.sources import ConfigSourceError, ConflictError, FileSource
from mdriver.config.publish import publish
from mdriver.config.watch import ConfigWatcher

ROOT = Path(__file__).resolve().parents[3]
BASE = (ROOT / "config" / "sharding.yaml").read_text(encoding="utf-8")


def variant(max_offset: int) -> str:
    return BASE.replace("max_offset: 100000", f"max_offset: {max_offset}")


def replace_file(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "sharding.yaml"
    path.write_text(BASE, encoding="utf-8")
    return path


@pytest.fixture
def watchers():
    made = []
    yield made
    for w in made:
        w.stop()


def start(watchers, *args, **kw) -> ConfigWatcher:
    kw.setdefault("poll_interval", 0.05)
    w = ConfigWatcher(*args, **kw)
    watchers.append(w)
    return w.start()


def test_a_changed_file_is_applied_within_one_second(config_file, watchers):
    changes = []
    w = start(watchers, str(config_file), on_change=lambda new, old: changes.append((old.router.max_offset, new.router.max_offset)))
    old = w.current
    replace_file(config_file, variant(10))
    assert wait_until(lambda: w.current.router.max_offset == 10, 1.0)
    assert changes == [(100000, 10)] and old.router.max_offset == 100000 and w.current.revision != old.revision


def test_invalid_versions_are_ignored_logged_and_counted_once(config_file, watchers, caplog):
    caplog.set_level(logging.ERROR, logger="mdriver.config.watch")
    rejected = []
    w = start(watchers, str(config_file), on_reject=lambda rev, reason: rejected.append(reason))
    good = w.current
    replace_file(config_file, BASE.replace("algorithm: mod", "algorithm: modulo", 1))
    assert wait_until(lambda: w.rejected_versions == 1, 1.0)
    time.sleep(0.2)  # several more polls of the same bad content
    assert w.rejected_versions == 1 and w.current is good
    assert "schemas.app.tables.user_relation.algorithm: 'modulo' is not one of mod, hash, range, custom" in rejected[0]
    assert len([r for r in caplog.records if "ignoring invalid config revision" in r.getMessage()]) == 1

    replace_file(config_file, "version: 1\n  bad: [\n")
    assert wait_until(lambda: w.rejected_versions == 2, 1.0)
    assert "invalid YAML" in w.last_rejected[1]
    replace_file(config_file, variant(3))
    assert wait_until(lambda: w.current.router.max_offset == 3, 1.0) and w.rejected_versions == 2


def test_a_missing_file_keeps_the_last_good_config(config_file, watchers):
    w = start(watchers, str(config_file))
    rev = w.revision
    config_file.unlink()
    assert wait_until(lambda: not w.connected, 1.0)
    assert w.revision == rev and "cannot read config" in w.last_error
    config_file.write_text(variant(4), encoding="utf-8")
    assert wait_until(lambda: w.connected and w.current.router.max_offset == 4, 1.0)


def test_start_uses_the_cache_when_the_source_is_unusable(config_file, tmp_path, watchers):
    cache = tmp_path / "cache" / "last.json"
    first = start(watchers, str(config_file), cache_path=str(cache))
    replace_file(config_file, variant(55))
    assert wait_until(lambda: first.current.router.max_offset == 55, 1.0)
    first.stop()
    saved = json.loads(cache.read_text())
    assert saved["source"] == str(config_file) and saved["revision"] == first.revision and saved["text"] == variant(55)

    replace_file(config_file, "not: [valid\n")
    w = start(watchers, str(config_file), cache_path=str(cache))
    assert w.loaded_from_cache and w.current.router.max_offset == 55
    config_file.unlink()
    w2 = start(watchers, str(config_file), cache_path=str(cache))
    assert w2.loaded_from_cache and w2.revision == first.revision
    replace_file(config_file, variant(66))
    assert wait_until(lambda: w2.current.router.max_offset == 66 and not w2.loaded_from_cache, 1.0)


def test_without_a_usable_cache_start_fails_clearly(config_file, tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigSourceError, match="missing.yaml: cannot read config: No such file or directory"):
        ConfigWatcher(str(missing)).start()
    broken = tmp_path / "broken.yaml"
    broken.write_text(BASE.replace("version: 1", "version: 3"), encoding="utf-8")
    with pytest.raises(ConfigError, match="version: unsupported config version 3"):
        ConfigWatcher(str(broken), cache_path=str(tmp_path / "none.json")).start()
    other_cache = tmp_path / "other.json"
    other_cache.write_text(json.dumps({"source": str(config_file), "revision": "x", "text": BASE}))
    with pytest.raises(ConfigError):
        ConfigWatcher(str(broken), cache_path=str(other_cache)).start()  # a cache of another source is not used
    with pytest.raises(RuntimeError, match="has not loaded a config"):
        ConfigWatcher(str(config_file)).current


def test_publish_to_a_file_is_compare_and_swap(config_file):
    src = FileSource(str(config_file))
    seen = src.read().revision
    result = publish(src, variant(1))
    assert result.changed and "+  max_offset: 1\n" in result.diff and src.read().revision == result.revision
    with pytest.raises(ConflictError, match=f"is at revision {result.revision}, not {seen}"):
        publish(src, variant(2), expected_revision=seen)
    assert "max_offset: 1\n" in config_file.read_text()
