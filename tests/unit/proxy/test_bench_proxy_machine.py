"""bench/bench_proxy.py's whole-machine figures: CPU of a real child process, and the summary table."""
from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "bench"))

import bench_proxy  # noqa: E402

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"


def test_the_meter_charges_a_busy_middle_process_and_its_reaped_children():
    # a parent that forks a CPU-burning child and reaps it, like socat serving a connection
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys, time\nsubprocess.run([sys.executable, '-c', {BURN!r}])\n"
                                                     "print('reaped', flush=True)\ntime.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        meter = bench_proxy.MachineMeter([], parent.pid)
        assert parent.stdout.readline().strip() == "reaped"
        got = meter.result(queries=1000)
    finally:
        parent.kill()
        parent.wait()
    assert got["middle_us_per_query"] >= 250  # 0.3 s of the child over 1000 queries, minus clock-tick rounding
    assert 0 < got["machine_busy"] <= 1


def test_summary_table_lists_every_arm_and_each_proxy_runtime():
    def arm(qps, busy, mariadb, middle):
        return {"qps": qps, "avg_ms": 4 / qps * 1000, "errors": 0, "machine_busy": busy,
                "mariadb_us_per_query": mariadb, "sysbench_us_per_query": 15.0, "middle_us_per_query": middle}

    rounds = [{"oltp_point_select/4/direct": arm(40000, 1.0, 25, 0), "oltp_point_select/4/relay": arm(20000, 0.99, 40, 41),
               "oltp_point_select/4/proxy-cpython": arm(10000, 0.82, 63, 72),
               "oltp_point_select/4/proxy-pypy": arm(16000, 0.95, 34, 40)},
              {"oltp_point_select/4/direct": arm(40000, 1.0, 25, 0), "oltp_point_select/4/relay": arm(10000, 0.99, 40, 41),
               "oltp_point_select/4/proxy-cpython": arm(10000, 0.82, 63, 72),
               "oltp_point_select/4/proxy-pypy": arm(9000, 0.95, 34, 40)},
              {"oltp_point_select/4/direct": arm(40000, 1.0, 25, 0), "oltp_point_select/4/relay": arm(30000, 0.99, 40, 41),
               "oltp_point_select/4/proxy-cpython": arm(10000, 0.82, 63, 72),
               "oltp_point_select/4/proxy-pypy": arm(21000, 0.95, 34, 40)}]
    summary = bench_proxy.summarize(rounds, [("oltp_point_select", 4)])
    proxies = summary["oltp_point_select/4"]["proxies"]
    assert proxies["proxy-cpython"]["proxy_relay"] == 0.5  # of the medians: 10000 / 20000
    assert proxies["proxy-pypy"]["proxy_relay"] == 0.8  # 16000 / 20000
    assert proxies["proxy-pypy"]["proxy_relay_by_round"] == [0.8, 0.9, 0.7]
    table = bench_proxy.markdown(summary)
    assert "| oltp_point_select | 4 | cpython | 40000 | 20000 | 10000 | 0.25 | 0.50 | 0.50 (0.33-1.00) | 72 us | 0.100 / 0.400 ms |" in table
    assert "| oltp_point_select | 4 | pypy | 40000 | 20000 | 16000 | 0.40 | 0.80 | 0.80 (0.70-0.90) | 40 us | 0.100 / 0.250 ms |" in table
    assert "| oltp_point_select | 4 | proxy-cpython | 82% | 63 us | 15 us | 72 us |" in table
    assert "| oltp_point_select | 4 | proxy-pypy | 95% | 34 us | 15 us | 40 us |" in table
    assert "| oltp_point_select | 4 | direct | 100% | 25 us | 15 us | - |" in table
