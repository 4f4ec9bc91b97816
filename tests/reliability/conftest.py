"""Fixtures of the reliability suite: the figures recorder and proxies run as processes.

Short variants run by default (CI); ``--long`` adds the long ones (marked
``slow``). Figures go to ``<pytest basetemp>/reliability-figures.json`` and the
terminal summary; with ``MDRIVER_WRITE_REPORT=1`` they are also merged into
docs/reliability.md.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import mdriver
from reliability_figures import REPORT_ENV, Figures, write_report
from reliability_helpers import ROOT, ProxyProcess

_figures_key = pytest.StashKey[Figures]()
_json_key = pytest.StashKey[Path]()


def pytest_collection_modifyitems(config, items):
    """Every test here needs real servers started by the run, like the integration tests."""
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def figures(pytestconfig, tmp_path_factory) -> Figures:
    """Where tests record what they measured (see reliability_figures.py)."""
    figs = Figures("long" if pytestconfig.getoption("--long") else "short")
    pytestconfig.stash[_figures_key] = figs
    path = tmp_path_factory.getbasetemp() / "reliability-figures.json"
    pytestconfig.stash[_json_key] = path
    yield figs
    figs.write_json(path)
    if os.environ.get(REPORT_ENV) == "1" and len(figs):
        write_report(ROOT / "docs" / "reliability.md", figs)


@pytest.fixture(scope="session")
def long_run(pytestconfig) -> bool:
    return bool(pytestconfig.getoption("--long"))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    figs = config.stash.get(_figures_key, None)
    if not figs or not len(figs):
        return
    terminalreporter.section(f"reliability figures ({figs.variant} variant)")
    for line in figs.summary_lines():
        terminalreporter.write_line(line)
    path = config.stash.get(_json_key, None)
    if path is not None:
        terminalreporter.write_line(f"written to {path}")
    if os.environ.get(REPORT_ENV) == "1":
        terminalreporter.write_line("docs/reliability.md regenerated from these figures")


@pytest.fixture(autouse=True)
def _close_runtimes():
    """Each test starts with fresh driver pools and watchers, and leaves none behind."""
    yield
    mdriver.close_all()


@pytest.fixture
def start_proxy(tmp_path):
    """``start_proxy(config_path, *cli_args, log_level="INFO")`` -> a running ``mdriver-proxy`` process, stopped after the test."""
    started: list[ProxyProcess] = []

    def start(config_path: str, *extra: str, log_level: str = "INFO") -> ProxyProcess:
        p = ProxyProcess(config_path, tmp_path / f"proxy-{len(started)}.log", *extra, log_level=log_level)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
