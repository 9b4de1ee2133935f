"""The soak's judgement and charts (the soak itself runs on demand: docs/RELIABILITY.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadtest.soak import (
    charts,
    cpu_seconds,
    descendants,
    main,
    memory_holders,
    messages_in,
    rss_bytes,
    verdict,
)

METRICS = """# HELP tokenyield_memory_bytes Worker memory by holder
# TYPE tokenyield_memory_bytes gauge
tokenyield_memory_bytes{holder="resident"} 8.388608e+08
tokenyield_memory_bytes{holder="rocksdb_memtables"} 3.3554432e+07
tokenyield_memory_bytes{holder="clickhouse"} 4.194304e+07
tokenyield_open_work_units{partition="0"} 12.0
"""


def samples(rss: list[float], lag: list[int], memtables: list[float]) -> list[dict[str, Any]]:
    return [{"seconds": 15.0 * (i + 1), "published": 1500 * 15 * (i + 1), "rss_mb": r,
             "broker_rss_mb": 100.0 * i, "lag": g, "open_units": 1000,
             "rocksdb_memtables_mb": m}
            for i, (r, g, m) in enumerate(zip(rss, lag, memtables, strict=True))]


def test_memory_holders_are_read_from_the_worker_metrics_in_mib() -> None:
    assert memory_holders(METRICS) == {"resident": 800.0, "rocksdb_memtables": 32.0,
                                       "clickhouse": 40.0}


def test_flat_memory_and_drained_lag_pass_and_growth_fails() -> None:
    flat = verdict(samples([500, 700, 800, 810, 805, 812, 808, 815, 811],
                           [0, 10, 5, 20, 0, 30, 10, 0, 40],
                           [10, 20, 30, 40, 20, 30, 50, 60, 70]), rate=1500)
    assert flat["rss_flat"] and flat["lag_flat"]
    assert flat["rss_growth_ratio"] < 1.15
    assert flat["achieved_rate"] == 1500
    assert flat["growth_by_holder_mb"] == {"rocksdb_memtables": 30.0}  # median 30 -> 60

    leaking = verdict(samples([500, 700, 800, 900, 1000, 1100, 1300, 1400, 1500],
                              [0] * 9, [10] * 9), rate=1500)
    assert not leaking["rss_flat"] and leaking["rss_growth_ratio"] > 1.3

    falling_behind = verdict(samples([800] * 9, [0, 0, 0, 100, 500, 900, 3000, 9000, 21000],
                                     [10] * 9), rate=1500)
    assert falling_behind["rss_flat"] and not falling_behind["lag_flat"]


def test_lag_in_seconds_of_input_must_not_keep_growing() -> None:
    def run(lag_seconds: list[float]) -> dict[str, Any]:
        rows = samples([800] * 9, [int(100 * s) for s in lag_seconds], [10] * 9)
        for row, value in zip(rows, lag_seconds, strict=True):
            row["lag_seconds"] = value
        return verdict(rows, rate=1500)

    steady = run([0.5, 1, 4, 5, 6, 5, 6, 5, 6])  # above the floor, not growing
    assert steady["lag_flat"] and steady["lag_seconds_last_third"] == 6
    small = run([0, 0.1, 0.2, 0.3, 0.4, 1, 2, 2.5, 2])  # growing, but seconds at most
    assert small["lag_flat"]
    doubling = run([0.5, 1, 2, 4, 5, 6, 10, 12, 14])
    assert not doubling["lag_flat"]
    assert doubling["lag_seconds_middle_third"] == 5 and doubling["lag_seconds_last_third"] == 12


def test_charts_are_drawn_and_a_stored_run_can_be_redrawn(tmp_path: Path) -> None:
    run = samples([500, 700, 800, 810, 805, 812], [0, 1, 2, 3, 4, 5], [10, 20, 30, 40, 20, 30])
    drawn = charts({"samples": run})
    assert list(drawn) == ["memory", "memory-by-holder", "open-units", "lag", "lag-seconds",
                           "cpu"]
    assert all(svg.startswith("<svg") for svg in drawn.values())
    assert "rocksdb_memtables_mb" in drawn["memory-by-holder"]
    assert "01:30" in drawn["lag"]  # minutes:seconds since the start, not clock times

    stored = tmp_path / "soak.json"
    stored.write_text(json.dumps({"samples": run, "verdict": verdict(run, 1500)}))
    assert main(["--from-json", str(stored), "--svg-dir", str(tmp_path / "svg")]) == 0
    assert sorted(p.name for p in (tmp_path / "svg").iterdir()) == [
        "soak-cpu.svg", "soak-lag-seconds.svg", "soak-lag.svg", "soak-memory-by-holder.svg",
        "soak-memory.svg", "soak-open-units.svg"]
    growing = samples([500, 700, 900, 1100, 1300, 1500], [0] * 6, [10] * 6)
    stored.write_text(json.dumps({"samples": growing, "verdict": verdict(growing, 1500)}))
    assert main(["--from-json", str(stored)]) == 1


def test_process_tree_figures_include_the_children() -> None:
    # The child says when it is up: while the interpreter starts, its memory grows between
    # two readings and the comparison below would race it.
    child = subprocess.Popen([sys.executable, "-c",
                              "import time; print('up', flush=True); time.sleep(30)"],
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"up\n"
        deadline = time.monotonic() + 10
        while child.pid not in descendants(os.getpid()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.pid in descendants(os.getpid())
        assert sum(map(rss_bytes, descendants(os.getpid()))) >= rss_bytes(child.pid) > 0
        spent = cpu_seconds(os.getpid())
        sum(i * i for i in range(2_000_000))  # burn a little CPU
        assert cpu_seconds(os.getpid()) > spent
        assert cpu_seconds(2**31) == 0.0  # no such process
    finally:
        child.kill()
        child.wait()


def test_messages_in_sums_every_input_topic() -> None:
    text = ('tokenyield_messages_in_total{topic="t.calls"} 120.0\n'
            'tokenyield_messages_in_total{topic="t.outcomes"} 30.0\n')
    assert messages_in(text) == 150.0
