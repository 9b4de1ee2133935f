"""The README's first command: ``tokenyield demo`` runs everything and leaves data.

Runs the real CLI as a new user would (a fresh data dir, no TOKENYIELD_* settings), then
reads ClickHouse with ``tokenyield sql`` and draws ``tokenyield report`` from it.
"""

from __future__ import annotations

import json
import os
import re
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


def test_the_demo_exercises_the_value_side(demo_run: tuple[dict[str, str], str]) -> None:
    """Cost items and shared costs, customers, the conversion chain, audits and each
    workflow's business case: every value view has something to show at once."""
    env, _ = demo_run
    items = sql(env, f"SELECT shared, count() AS n FROM {DB}.cost_items FINAL GROUP BY shared")
    assert {int(r["shared"]) for r in items} == {0, 1}
    assert int(sql(env, f"SELECT count() AS n FROM {DB}.workflows FINAL")[0]["n"]) == 6
    for view in ("v_business_case", "v_conversion_funnel", "v_cycle_time", "v_portfolio",
                 "v_unit_cost_spread", "v_quality_by_workflow", "v_shared_cost_allocation"):
        assert int(sql(env, f"SELECT count() AS n FROM {DB}.{view}")[0]["n"]) > 0, view
    chain = sql(env, f"SELECT sum(action_taken) AS a, sum(value_captured) AS v "
                     f"FROM {DB}.v_conversion_funnel")[0]
    assert int(chain["a"]) > int(chain["v"]) > 0
    assert int(sql(env, f"SELECT count() AS n FROM {DB}.attributions_latest FINAL "
                        f"WHERE verdict != ''")[0]["n"]) > 0
    customers = sql(env, f"SELECT uniqExact(value) AS n FROM {DB}.v_dimension_hourly "
                         f"WHERE dimension = 'customer'")
    assert int(customers[0]["n"]) > 5
    case = sql(env, f"SELECT sum(time_saved_minutes) AS t FROM {DB}.v_business_case")
    assert Decimal(case[0]["t"]) > 0
    # Weeks of one workflow come first: the detectors that need days have them.
    plateau = sql(env, f"SELECT subject['workflow'] AS w, message FROM {DB}.alerts FINAL "
                       f"WHERE kind = 'spend_plateau'")
    assert plateau and plateau[0]["w"] == "incident-summary", plateau
    seasonal = sql(env, f"SELECT count() AS n FROM {DB}.spend_forecasts FINAL "
                        f"WHERE team = 'ops' AND method = 'seasonal'")
    assert int(seasonal[0]["n"]) > 0


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


def what_next(out: str) -> list[str]:
    """The commands of the demo's "What next:" lines, as printed (descriptions cut off)."""
    lines = out.split("What next:\n", 1)[1].strip().splitlines()
    return [re.split(r"\s{2,}", line.strip(), maxsplit=1)[0] for line in lines]


def test_what_next_lines_work_as_printed(demo_run: tuple[dict[str, str], str],
                                         tmp_path: Path) -> None:
    """Each line runs, pasted into a shell whose PATH does not hold the virtualenv (as
    after `python3 run.py demo`), in the project folder (where run.py's .venv is)."""
    env, out = demo_run
    commands = what_next(out)
    assert len(commands) == 5
    # PYTHONPATH: the printed tokenyield is the virtualenv's, whose editable install may
    # name another checkout of the project (a venv shared by worktrees); this one's code
    # is what is under test, as it would be with run.py's own .venv.
    shell_env = {**env, "PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    report, yield_sql, alerts_sql, worker, compose = commands
    assert compose == "docker compose up -d"  # needs a Docker engine: not run here
    page = ROOT / "tokenyield-report.html"
    existed = page.exists()
    try:
        for line in (report, yield_sql, alerts_sql):
            done = subprocess.run(["bash", "-c", line], env=shell_env, cwd=ROOT,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{line}\n{done.stderr[-2000:]}"
        assert page.exists()
    finally:
        if not existed:
            page.unlink(missing_ok=True)
    assert "yield_ratio" in subprocess.run(["bash", "-c", yield_sql], env=shell_env, cwd=ROOT,
                                           capture_output=True, text=True, timeout=120).stdout
    # The worker runs until stopped: its command is checked to exist as printed.
    assert worker.endswith(" worker")
    done = subprocess.run(["bash", "-c", f"{worker} --help"], env=shell_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr


def test_the_printed_command_is_the_one_the_shell_can_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.app import demo

    project = tmp_path / "project"
    bin_dir = project / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "tokenyield").touch()
    monkeypatch.setattr(demo.sys, "executable", str(bin_dir / "python"))
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    assert demo.tokenyield_command(project) == ".venv/bin/tokenyield"  # run.py's venv
    assert demo.tokenyield_command(tmp_path / "elsewhere") == str(bin_dir / "tokenyield")
    monkeypatch.setattr(demo.shutil, "which", lambda name: str(bin_dir / "tokenyield"))
    assert demo.tokenyield_command(project) == "tokenyield"  # an activated venv
