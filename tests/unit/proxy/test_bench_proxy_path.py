"""bench/bench_proxy_path.py runs the real hot path; a short run keeps it (and its checks) working."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "bench"))

import bench_proxy_path  # noqa: E402


def test_each_arm_takes_its_path(capsys):
    # the round runs in a child process of this interpreter, which fails (and main raises) if an arm took another path
    runtime = "pypy" if sys.implementation.name == "pypy" else "cpython"
    assert bench_proxy_path.main(["--rounds", "1", "--statements", "50", "--runtimes", runtime]) == 0
    out = capsys.readouterr().out
    assert f"| statement | {runtime} (median) |" in out
    assert "| execute |" in out and "| execute-text |" in out and "| query |" in out


def test_an_unknown_runtime_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        bench_proxy_path.main(["--runtimes", "jython"])
    assert e.value.code == 2
    assert "unknown runtime 'jython' (choose from cpython, pypy)" in capsys.readouterr().err
