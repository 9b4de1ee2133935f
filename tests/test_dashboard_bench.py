"""The dashboard benchmark loads what it says it loads (chdb on a temp path).

The bench multiplies an engine-produced seed with INSERT ... SELECT under new ids; an
earlier version filtered on a column its own alias shadowed and timed the seed alone.
"""

from pathlib import Path

from loadtest.dashboard_bench import run_dashboards
from loadtest.grafana_sql import load_dashboard, panels


def test_copies_multiply_the_seed_under_new_ids(tmp_path: Path) -> None:
    said: list[str] = []
    figures = run_dashboards(9000, tmp_path, said.append, runs=1, seed_calls=3000)

    assert figures["dashboard_calls"] >= 9000, said
    assert figures["dashboard_distinct_call_ids"] == figures["dashboard_calls"]
    assert not any("not stored" in line for line in said), said
    assert figures["dashboard_panels"] == len(panels(load_dashboard()))
    assert all(ms > 0 for ms in figures["dashboard_median_ms_by_panel_30d"].values())
