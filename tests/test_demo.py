"""The README's first command: ``tokenyield demo`` runs everything and leaves data.

Runs the real CLI as a new user would (a fresh data dir, no TOKENYIELD_* settings), then
reads ClickHouse with ``tokenyield sql`` and draws ``tokenyield report`` from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.broker, pytest.mark.clickhouse, pytest.mark.slow]
DB = "tokenyield"


def tokenyield(env: dict[str, str], *args: str, timeout: float = 120
               ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def sql(env: dict[str, str], query: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        tokenyield(env, "sql", "--format", "json", query).stdout)
    return rows


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str]:
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENYIELD_")}
    env.update({"TOKENYIELD_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"})
    done = tokenyield(env, "demo", "--duration", "45", "--history-units", "4000",
                      timeout=400)
    return env, done.stdout


def test_the_demo_shows_progress_and_says_what_next(demo_run: tuple[dict[str, str], str]
                                                   ) -> None:
    env, out = demo_run
    assert "replaying 3 h of history" in out
    assert "cost/accepted" in out and "yield" in out and "coverage" in out
    assert "What next:" in out and "tokenyield report" in out
    assert env["TOKENYIELD_DATA_DIR"] in out
    # It stopped its worker and broker: nothing keeps the data dir.
    data_dir = Path(env["TOKENYIELD_DATA_DIR"])
    assert not (data_dir / "worker.json").exists()


def test_the_demo_leaves_attributions_windows_and_alerts_in_clickhouse(
        demo_run: tuple[dict[str, str], str]) -> None:
    env, _ = demo_run
    units = sql(env, f"SELECT state, count() AS n FROM {DB}.attributions_latest FINAL "
                     f"GROUP BY state")
    by_state = {r["state"]: int(r["n"]) for r in units}
    # "revised" units are attributed too: a later outcome or call changed them.
    assert by_state.get("attributed", 0) + by_state.get("revised", 0) > 1000, by_state
    windows = sql(env, f"SELECT window_seconds, countIf(final = 1) AS finals, count() AS n, "
                       f"sum(spend) AS spend FROM {DB}.cost_per_outcome_windows FINAL "
                       f"WHERE model = '*' AND agent = '' GROUP BY window_seconds")
    by_size = {int(r["window_seconds"]): r for r in windows}
    assert int(by_size[60]["finals"]) > 60  # hours of one-minute windows closed
    calls_spend = Decimal(sql(env, f"SELECT sum(cost) AS s FROM {DB}.model_calls FINAL")[0]["s"])
    # Every priced call's cost is in exactly one minute window of its workflow.
    assert Decimal(by_size[60]["spend"]) == calls_spend
    kinds = {r["kind"] for r in sql(env, f"SELECT DISTINCT kind FROM {DB}.alerts FINAL")}
    assert "runaway_work_unit" in kinds  # the injected looping agent
    assert kinds & {"spend_spike", "token_spike"}, kinds  # the injected spend spike


def test_the_report_draws_its_charts_from_the_demo_data(
        demo_run: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, _ = demo_run
    page = tmp_path / "report.html"
    tokenyield(env, "report", "-o", str(page))
    html = page.read_text()
    assert html.count("<svg") >= 3
    assert "<script" not in html and "https://" not in html and "http://" not in \
        html.replace("http://www.w3.org/2000/svg", "")
    for row in sql(env, f"SELECT DISTINCT workflow FROM {DB}.cost_per_outcome_windows "
                        f"WHERE model = '*'"):
        assert row["workflow"] in html
    for row in sql(env, f"SELECT DISTINCT kind FROM {DB}.alerts FINAL"):
        assert row["kind"] in html
