"""The validator against data-driven cases: each mistake yields exactly its one-line errors."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mdriver.config import ConfigError, build_config, load_config
from mdriver.config.sources import ConfigSourceError

ROOT = Path(__file__).resolve().parents[3]
DEFAULT = ROOT / "config" / "sharding.yaml"
CASES = yaml.safe_load((Path(__file__).parent / "cases_invalid.yaml").read_text())


def default_doc() -> dict:
    return yaml.safe_load(DEFAULT.read_text())


def apply(doc: dict, case: dict) -> dict:
    doc = copy.deepcopy(doc)
    for dotted, value in (case.get("set") or {}).items():
        *parents, last = dotted.split(".")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    for dotted in case.get("delete") or []:
        *parents, last = dotted.split(".")
        node = doc
        for key in parents:
            node = node[key]
        del node[last]
    return doc


def test_default_config_is_valid_32x32():
    config = load_config(str(DEFAULT))
    schema = config.schemas["app"]
    rule = schema.tables["user_relation"]
    assert (rule.databases, rule.tables_per_database, rule.slots) == (32, 32, 1024)
    assert schema.binding_group("user_fans") == frozenset({"user_relation", "user_fans"})
    assert schema.tables["region"].broadcast
    assert [(p.datasource, p.first, p.last) for p in rule.placement] == [("ds0", 0, 15), ("ds1", 16, 31)]
    assert config.proxy.listen_port == 3307 and config.proxy.users["app"].schemas == ("app",)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_invalid_config_cases(case):
    with pytest.raises(ConfigError) as info:
        build_config(apply(default_doc(), case))
    assert info.value.errors == case["errors"]


def test_config_objects_are_frozen():
    config = build_config(default_doc())
    with pytest.raises(AttributeError):
        config.version = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.schemas["app"].tables["x"] = None  # type: ignore[index]


def test_revision_changes_with_content():
    a = build_config(default_doc())
    changed = apply(default_doc(), {"set": {"datasources.ds0.max_connections": 10}})
    assert build_config(changed).revision != a.revision
    assert build_config(default_doc()).revision == a.revision


def test_not_a_mapping_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError) as info:
        build_config(["a list"])
    assert "expected a mapping" in info.value.errors[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ndatasources: {ds0: [\n")
    with pytest.raises(ConfigSourceError, match=r"bad.yaml: invalid YAML at line \d+"):
        load_config(str(bad))
    with pytest.raises(ConfigSourceError, match="cannot read config"):
        load_config(str(tmp_path / "missing.yaml"))


def test_custom_and_range_algorithms_load(tmp_path, monkeypatch):
    (tmp_path / "myshard.py").write_text("def by_tens(key, n):\n    return (int(key) // 10) % n\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    doc = apply(default_doc(), {"set": {
        "schemas.app.tables.user_fans.algorithm": "custom",
        "schemas.app.tables.user_fans.function": "myshard:by_tens",
        "schemas.app.binding": [],
        "schemas.app.tables.user_relation.algorithm": "range",
        "schemas.app.tables.user_relation.boundaries": list(range(100, 102400, 100)),
    }})
    config = build_config(doc)
    assert config.schemas["app"].tables["user_fans"].shard_fn(125, 1024) == 12
    assert config.schemas["app"].tables["user_relation"].boundaries[:2] == (100, 200)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "mdriver.config.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_cli_check_prints_summary():
    out = run_cli("check", str(DEFAULT))
    assert out.returncode == 0, out.stderr
    assert "user_relation: sharded by uid (mod), 32 databases x 32 tables = 1024 physical tables" in out.stdout
    assert "app.user_relation 512" in out.stdout and "ds1 127.0.0.1:13307" in out.stdout
    assert "region: broadcast, 33 copies" in out.stdout


def test_cli_check_five_mistakes(tmp_path):
    case = next(c for c in CASES if c["name"] == "five mistakes at once")
    path = tmp_path / "five.yaml"
    path.write_text(yaml.safe_dump(apply(default_doc(), case), sort_keys=False))
    out = run_cli("check", str(path))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[:-1] == [f"error: {e}" for e in case["errors"]]
    assert lines[-1] == f"5 error(s) in {path}"
    assert "Traceback" not in out.stderr


def test_cli_without_verb_shows_help():
    out = run_cli()
    assert out.returncode == 2 and "usage: mdriver-config" in out.stderr
