"""bench/bench_proxy_path.py runs the real hot path; a short run keeps it (and its checks) working."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "bench"))

import bench_proxy_path  # noqa: E402


def test_each_arm_takes_its_path(capsys):
    assert bench_proxy_path.main(["--rounds", "1", "--statements", "50"]) == 0  # raises if an arm took another path
    out = capsys.readouterr().out
    assert "| execute |" in out and "| execute-text |" in out and "| query |" in out
