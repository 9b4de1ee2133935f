"""``tokenyield bench`` end to end, small: every stage runs and every figure is printed,
consistent, and written as JSON. (The figures themselves are measured, not asserted:
docs/BENCHMARKS.md.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.bench import GOALS
from loadtest.grafana_sql import load_dashboard, panels

pytestmark = [pytest.mark.broker, pytest.mark.clickhouse, pytest.mark.slow]


def test_bench_prints_and_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "bench", "--quick", "--events", "4000",
         "--dashboards", "--calls", "6000", "--json", str(out)],
        capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key, _, _, unit in GOALS:  # every goal's figure, with its verdict
        assert key in figures, key
        assert key in result.stdout and unit in result.stdout
    assert result.stdout.count(" met") + result.stdout.count("NOT met") >= len(GOALS)
    assert "bench: engine:" in result.stderr and "naive Faust" in result.stderr  # progress
    rates = ("engine_events_per_second", "raw_events_per_second", "naive_events_per_second",
             "two_workers_events_per_second")
    assert all(figures[k] > 0 for k in rates)
    assert figures["engine_over_raw"] == round(
        figures["engine_events_per_second"] / figures["raw_events_per_second"], 3)
    assert figures["engine_over_naive"] == round(
        figures["engine_events_per_second"] / figures["naive_events_per_second"], 2)
    assert figures["speedup_two_workers"] == round(
        figures["two_workers_events_per_second"] / figures["engine_events_per_second"], 2)
    for prefix in ("latency_", "latency_sustainable_"):
        assert figures[f"{prefix}rate_events_per_second"] > 0
        for stage in ("attribution", "clickhouse_row"):
            p50, p99 = (figures[f"{prefix}{stage}_{q}_seconds"] for q in ("p50", "p99"))
            assert 0 < p50 <= p99
    assert figures["latency_attribution_p50_seconds"] <= \
        figures["latency_clickhouse_row_p50_seconds"]  # the row comes after the message
    # The cores each drain used, and what they allow two processes on this machine.
    for stage in ("engine", "two_workers", "processes_2"):
        assert figures[f"{stage}_worker_cores"] > 0
        assert figures[f"{stage}_worker_cpu_us_per_event"] > 0
        assert f"{stage}_worker_cores" in result.stdout
    one = figures["engine_worker_cores"] + figures["engine_broker_cores"]
    assert figures["speedup_ceiling_2_processes"] == round(
        min(2, os.cpu_count() or 1) / max(one, 1.0), 2)
    assert "two processes can reach" in result.stderr
    # Where the cores go while publishing at the goal's rate, and what that leaves a worker.
    for prefix in ("latency_", "processes_2_latency_"):
        assert figures[f"{prefix}publisher_cores"] > 0
        assert figures[f"{prefix}worker_cores"] > 0
        assert figures[f"{prefix}worker_stored_events_per_second"] > 0
        assert figures[f"{prefix}worker_cpu_us_per_event"] > 0
        left = (os.cpu_count() or 1) - figures[f"{prefix}publisher_cores"] \
            - figures[f"{prefix}broker_cores"]
        affordable = left / figures[f"{prefix}rate_events_per_second"] * 1e6
        assert abs(figures[f"{prefix}worker_cpu_us_per_event_affordable"] - affordable) \
            <= 0.02 * affordable + 0.1
    assert "a worker could spend" in result.stderr
    assert figures["memory_bytes_per_open_unit"] > 0
    assert figures["checkpoint_bytes_per_open_unit"] > 0
    assert figures["dashboard_calls"] >= 6000
    assert figures["dashboard_panels"] == len(panels(load_dashboard()))
    assert figures["environment"]["cpus"] == os.cpu_count()
    assert not Path(figures["work_dir"]).exists()  # cleaned up without --keep


def test_alternate_drains_each_set_up_and_prints_ratios(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.alternate", "--events", "3000", "one",
         "one:TOKENYIELD_CHECKPOINT_OVERLAP=false", "p2"],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == ["one", "one:TOKENYIELD_CHECKPOINT_OVERLAP=false", "p2"]
    assert all(float(row[1].replace(",", "")) > 0 for row in rows)
    assert rows[0][2] == "1.00"
    refused = subprocess.run([sys.executable, "-m", "loadtest.alternate", "three"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "unknown set-up 'three'" in refused.stderr
