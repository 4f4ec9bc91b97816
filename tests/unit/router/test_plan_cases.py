"""Plans as data: every case in cases/*.yaml is a statement and the plan or error it must give.

Each case has ``query`` and either ``plan`` (``Plan.describe()``) and
``kind``, or ``error`` (``"errno: message"``). Optional keys: ``params``
and ``paramstyle``, ``schema``, ``router`` (overrides of the config's router
options), ``config`` (merged into config/sharding.yaml, e.g. extra tables),
``preview: true`` (also compare every physical statement) and ``comment``. Regenerate the expectations after an intended change with
``MDRIVER_REGEN_CASES=1 pytest tests/unit/router/test_plan_cases.py`` and
review the diff.
"""
from __future__ import annotations

import copy
import os
import pathlib

import pytest
import yaml

from mdriver import err
from mdriver.config import build_config
from mdriver.router import Router

ROOT = pathlib.Path(__file__).resolve().parents[3]
CASES_DIR = pathlib.Path(__file__).with_name("cases")
CONFIG_PATH = ROOT / "config" / "sharding.yaml"
REGEN = os.environ.get("MDRIVER_REGEN_CASES") == "1"


def _load(path: pathlib.Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or []


def _doc() -> dict:
    with open(CONFIG_PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


_ROUTERS: dict[str, Router] = {}


def _merge(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def _router(overrides: dict | None, extra: dict | None = None) -> Router:
    key = repr((overrides, extra))
    if key not in _ROUTERS:
        doc = copy.deepcopy(_doc())
        doc.setdefault("router", {}).update(overrides or {})
        _merge(doc, copy.deepcopy(extra or {}))
        _ROUTERS[key] = Router(build_config(doc, source=str(CONFIG_PATH)))
    return _ROUTERS[key]


def outcome(case: dict) -> dict:
    """What the router does with a case now: plan and kind, or the error."""
    router = _router(case.get("router"), case.get("config"))
    params = case.get("params")
    paramstyle = case.get("paramstyle", "pyformat" if params is not None else None)
    try:
        plan = router.plan(case["query"], case.get("schema", "app"), params, paramstyle)
    except err.MySQLError as e:
        assert isinstance(e, err.Error), f"{type(e).__name__} is not a PEP 249 error"
        return {"error": f"{e.args[0]}: {e.args[1]}"}
    out = {"kind": plan.kind, "plan": plan.describe()}
    if case.get("preview"):
        out["statements"] = [f"{q.datasource} {q.database}: {q.sql}" for q in plan.preview()]
    return out


def _all_cases():
    for path in sorted(CASES_DIR.glob("*.yaml")):
        for i, case in enumerate(_load(path)):
            yield pytest.param(path, i, case, id=f"{path.stem}-{i}-{case['query'][:50]}")


@pytest.mark.parametrize("path,index,case", list(_all_cases()))
def test_case(path, index, case):
    got = outcome(case)
    expected = {k: case[k] for k in ("kind", "plan", "statements", "error") if k in case}
    if REGEN:
        pytest.skip("regenerating")
    assert expected, f"{path.name} case {index} has no expectation; run with MDRIVER_REGEN_CASES=1"
    assert got == expected


def test_case_files_cover_every_construct():
    """The case files exercise each construct the router promises (by a marker word in ``comment``)."""
    comments = " ".join(str(c.get("comment", "")) for p in CASES_DIR.glob("*.yaml") for c in _load(p))
    required = [
        "point", "in-prune", "between-enumerate", "range-scatter", "or-keys", "scatter", "order-multi", "nulls",
        "limit-offset", "max-offset", "count", "sum", "min-max", "avg", "distinct", "count-distinct", "group-having",
        "agg-expression", "alias", "binding-join", "broadcast-join", "subquery-one-shard", "insert-single",
        "insert-split", "odku", "insert-no-key", "insert-select", "update-key", "delete-key", "scatter-dml-refused",
        "scatter-dml-allowed", "shard-key-update", "ddl-fanout", "index-fanout", "unsharded-passthrough",
        "broadcast-read", "broadcast-write", "union-per-database", "multi-statement", "executable-comment",
        "unknown-table", "unknown-column", "window-across-shards", "join-not-binding-key", "correlated-across-shards",
        "hint-shard", "hint-primary", "preview",
    ]
    missing = [w for w in required if w not in comments]
    assert not missing, f"no case is marked with: {missing}"


def regenerate() -> None:
    for path in sorted(CASES_DIR.glob("*.yaml")):
        cases = _load(path)
        for case in cases:
            for k in ("kind", "plan", "statements", "error"):
                case.pop(k, None)
            case.update(outcome(case))
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(cases, f, sort_keys=False, allow_unicode=True, width=140)


@pytest.fixture(scope="module", autouse=True)
def _regen():
    yield
    if REGEN:
        regenerate()
