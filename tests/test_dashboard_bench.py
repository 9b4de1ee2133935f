"""The dashboard benchmark loads what it says it loads (chdb on a temp path).

The bench multiplies an engine-produced seed with INSERT ... SELECT under new ids; an
earlier version filtered on a column its own alias shadowed and timed the seed alone.
It runs in a subprocess: chdb serves one path per process, and other tests hold theirs.
"""

import json
import subprocess
import sys
from pathlib import Path

from loadtest.dashboard_exact import EXACT_PANELS
from loadtest.grafana_sql import load_dashboard, panels

ROOT = Path(__file__).resolve().parent.parent


def test_copies_multiply_the_seed_under_new_ids(tmp_path: Path) -> None:
    out = tmp_path / "dashboards.json"
    run = subprocess.run(
        [sys.executable, "-m", "loadtest.dashboard_bench", "--calls", "9000",
         "--seed-calls", "3000", "--runs", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out.read_text())

    assert figures["dashboard_calls"] >= 9000, run.stderr
    assert figures["dashboard_distinct_call_ids"] == figures["dashboard_calls"]
    assert "not stored" not in run.stderr
    assert figures["dashboard_panels"] == len(panels(load_dashboard()))
    # Every query of every panel, and the exact form of each pre-aggregated panel.
    assert figures["dashboard_queries"] == sum(len(p["targets"]) for p in panels(load_dashboard()))
    for suffix in ("", "_merged"):
        by_panel = figures[f"dashboard_median_ms_by_panel_30d{suffix}"]
        assert len(by_panel) == figures["dashboard_queries"]
        assert len(figures[f"dashboard_median_ms_by_exact_panel_30d{suffix}"]) == len(EXACT_PANELS)
        assert all(ms > 0 for ms in by_panel.values())
        assert figures[f"dashboard_median_ms_worst_panel{suffix}"] == max(
            max(figures[f"dashboard_median_ms_by_panel_2d{suffix}"].values()),
            max(by_panel.values()))
    assert figures["dashboard_model_calls_parts_merged"] <= figures["dashboard_model_calls_parts"]
