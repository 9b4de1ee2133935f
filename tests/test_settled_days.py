"""Settled days (migration 0015): the unit panels read a quiet day from its copy, and
stay equal to their exact forms whatever happened to the day after it was settled.

The data is tests/test_dashboard_aggregates.py's (late events, crash replays, replayed
inserts, merges stopped), copied into a database of its own so that the changes made
here leave that module's figures alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loadtest.dashboard_exact import EXACT_PANELS
from loadtest.grafana_sql import Selection, TimeRange, load_dashboard, panels, render
from streams.app.worker import settle_once
from streams.clickhouse.client import migrate
from streams.clickhouse.settled_days import SettleReport, settle_day, settle_days
from streams.clickhouse.sink import ClickHouseSink
from streams.settings import Settings
from tests.clickhouse_fixtures import loaded_database
from tests.test_dashboard_aggregates import DB as SOURCE
from tests.test_dashboard_aggregates import aggregates_db  # noqa: F401 (the fixture)

pytestmark = pytest.mark.clickhouse

DB = "tokenyield_settled"
ROOT = Path(__file__).resolve().parents[1]
UNIT_PANELS = sorted(key for key in EXACT_PANELS if key[0] in (15, 34, 37, 38, 39))
ROW_COLUMNS = ("day", "work_unit_id", "version", "state", "team", "workflow", "agent",
               "primary_model", "first_event_at", "last_event_at", "decided_at",
               "cycle_seconds", "calls", "retries", "unpriced_calls", "currency", "model_cost",
               "fully_loaded_cost", "outcomes", "accepted", "stage", "value",
               "evidence_confidence")
_STATE: dict[str, Any] = {}


def _client() -> Any:
    return loaded_database().client


def _rows(sql: str) -> list[tuple[Any, ...]]:
    return _client().query(sql).result_rows


def _scalar(sql: str) -> Any:
    return _rows(sql)[0][0]


@pytest.fixture(scope="module")
def copied(aggregates_db: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    """The aggregates module's events, as its tables hold them, in this module's own
    database: calls, outcomes and attributions (the latest attributions and the decided
    units' rows by day follow through their materialized views), and the engine's
    pending units' rows."""
    if not _STATE:
        client = _client()
        migrate(client, DB)
        for table in ("work_units_by_day", "attributions_latest"):
            client.command(f"SYSTEM STOP MERGES {DB}.{table}")
        for table in ("model_calls", "outcomes", "attributions"):
            client.command(f"INSERT INTO {DB}.{table} SELECT * FROM {SOURCE}.{table}")
        client.command(f"INSERT INTO {DB}.work_units_by_day SELECT * FROM "
                       f"{SOURCE}.work_units_by_day WHERE state = 'pending'")
        _STATE.update(now=aggregates_db["now"])
    return _STATE


def _today(now: datetime) -> date:
    return now.astimezone(UTC).date()


def _ranges(now: datetime) -> list[TimeRange]:
    hour = now.replace(minute=0, second=0)
    return [TimeRange(hour - timedelta(hours=30), now, 3600),
            TimeRange(hour - timedelta(days=30), now, 3600)]


def assert_unit_panels_equal_their_exact_forms(now: datetime) -> None:
    dashboard = {p["id"]: p for p in panels(load_dashboard())}
    shown = 0
    for time_range in _ranges(now):
        for panel_id, index in UNIT_PANELS:
            sql = dashboard[panel_id]["targets"][index]["rawSql"]
            selection = Selection(None, None, None)
            fast = _rows(render(sql, selection, {}, time_range, DB))
            slow = _rows(render(EXACT_PANELS[(panel_id, index)], selection, {}, time_range,
                                DB))
            if panel_id in (34, 39):  # tables: rows with equal sort keys in any order
                fast, slow = sorted(fast), sorted(slow)
            assert fast == slow, (panel_id, time_range.start)
            shown += bool(fast and fast[0][0] is not None)
    assert shown >= len(UNIT_PANELS)


def assert_rows_equal_final(since: datetime) -> None:
    """v_unit_rows_since holds exactly what work_units_by_day FINAL keeps."""
    columns = ", ".join(ROW_COLUMNS)
    moment = f"toDateTime64('{since:%Y-%m-%d %H:%M:%S}', 3, 'UTC')"
    rows = _rows(f"SELECT {columns} FROM {DB}.v_unit_rows_since(from_time = {moment}) "
                 f"ORDER BY day, work_unit_id")
    final = _rows(f"SELECT {columns} FROM {DB}.work_units_by_day FINAL "
                  f"WHERE day >= toDate({moment}) ORDER BY day, work_unit_id")
    assert rows and rows == final


def wait_for(condition: Callable[[], bool], seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _generations(since: date) -> dict[date, int]:
    return dict(_rows(f"""SELECT day, generation FROM {DB}.v_unit_days_since(
        from_time = toDateTime64('{since}', 3, 'UTC'))"""))


def test_settled_days_read_what_final_reads_and_the_panels_stay_exact(
        copied: dict[str, Any]) -> None:
    now: datetime = copied["now"]
    today = _today(now)
    first = today - timedelta(days=3)
    assert set(_generations(first).values()) == {0}  # nothing settled yet: all live
    report = settle_days(_client(), DB, today=today)
    assert report.settled and not report.failed and not report.moved, report.summary()
    assert all(day < today for day in report.settled)
    generations = _generations(first)
    assert {day for day, g in generations.items() if g} == set(report.settled)
    assert all(g == 0 for day, g in generations.items() if day >= today)
    assert report.units == _scalar(f"SELECT count() FROM {DB}.settled_units")
    # A second run finds nothing to do.
    again = settle_days(_client(), DB, today=today)
    assert not again.settled and again.unchanged == len(report.settled)
    for days in (3, 1):
        assert_rows_equal_final(datetime(first.year, first.month, first.day, tzinfo=UTC)
                                + timedelta(days=3 - days))
    assert_unit_panels_equal_their_exact_forms(now)


def _revise_a_unit_on(day: date) -> str:
    """A later revision of one unit decided and last seen on ``day``: cost tripled,
    acceptance flipped (an attribution, as the engine would write it)."""
    unit = _scalar(f"""SELECT work_unit_id FROM {DB}.attributions_latest FINAL
                       WHERE toDate(last_event_at) = '{day}' AND decided_at IS NOT NULL
                         AND toDate(first_event_at) = '{day}'
                       ORDER BY work_unit_id LIMIT 1""")
    _client().command(f"""
        INSERT INTO {DB}.attributions
        SELECT * REPLACE (revision + 1 AS revision, version + 1 AS version,
                          fully_loaded_cost * 3 AS fully_loaded_cost,
                          toUInt8(1 - accepted) AS accepted)
        FROM {DB}.attributions_latest FINAL WHERE work_unit_id = '{unit}'""")
    return str(unit)


def test_a_settled_day_that_changes_is_read_live_until_settled_again(
        copied: dict[str, Any]) -> None:
    now: datetime = copied["now"]
    today = _today(now)
    settle_days(_client(), DB, today=today)
    settled = sorted(day for day, g in _generations(today - timedelta(days=3)).items() if g)
    assert len(settled) >= 2, settled
    changed, replayed = settled[-1], settled[0]
    before = _scalar(f"SELECT sum(fully_loaded_cost) FROM {DB}.v_units_since("
                     f"from_time = toDateTime64('{changed}', 3, 'UTC'))")
    unit = _revise_a_unit_on(changed)
    # A replayed insert of unchanged units (a batch of another shape, so another dedup
    # token): stored twice, the same figures.
    _client().command(f"""
        INSERT INTO {DB}.attributions SETTINGS insert_deduplication_token = 'replay'
        SELECT * FROM {DB}.attributions_latest FINAL
        WHERE toDate(last_event_at) = '{replayed}' ORDER BY work_unit_id LIMIT 3""")
    generations = _generations(today - timedelta(days=3))
    assert generations[changed] == 0 and generations[replayed] == 0
    # The revision counts (the stale copy would still hold the old cost).
    after = _scalar(f"SELECT sum(fully_loaded_cost) FROM {DB}.v_units_since("
                    f"from_time = toDateTime64('{changed}', 3, 'UTC'))")
    revised = _scalar(f"SELECT fully_loaded_cost FROM {DB}.attributions_latest FINAL "
                      f"WHERE work_unit_id = '{unit}'")
    assert after - before == revised - revised / 3
    assert_rows_equal_final(datetime(replayed.year, replayed.month, replayed.day,
                                     tzinfo=UTC))
    assert_unit_panels_equal_their_exact_forms(now)
    report = settle_days(_client(), DB, today=today)
    assert set(report.settled) == {changed, replayed}, report.summary()
    assert all(_generations(today - timedelta(days=3))[day] for day in settled)
    # The copies the new records replaced go, in the background (a mutation).
    assert wait_for(lambda: _scalar(f"""SELECT max(n) FROM (SELECT uniqExact(generation) AS n
                                        FROM {DB}.settled_units GROUP BY day)""") == 1)
    assert_unit_panels_equal_their_exact_forms(now)


def test_a_copy_never_recorded_is_never_read(copied: dict[str, Any]) -> None:
    """A run that saw the day change under it (or crashed before its record) leaves
    rows no record names: the day keeps its last good record, or stays live."""
    now: datetime = copied["now"]
    today = _today(now)
    settle_days(_client(), DB, today=today)
    day = max(d for d, g in _generations(today - timedelta(days=3)).items() if g)
    good = _generations(day)[day]
    _revise_a_unit_on(day)
    rows, checksum = _rows(f"""SELECT rows, checksum FROM {DB}.v_unit_day_checksums_since(
        from_time = toDateTime64('{day}', 3, 'UTC')) WHERE day = '{day}'""")[0]
    report = SettleReport()
    # As if the day's checksum had been read before the revision: the copy is made,
    # the checksum checked again, and the record withheld.
    settle_day(_client(), DB, day, (rows - 1, checksum), report)
    assert report.moved == [day] and not report.settled
    assert _scalar(f"SELECT max(generation) FROM {DB}.settled_days FINAL "
                   f"WHERE day = '{day}'") == good
    assert _scalar(f"SELECT uniqExact(generation) FROM {DB}.settled_units "
                   f"WHERE day = '{day}'") == 2  # the good copy and the withheld one
    assert _generations(day)[day] == 0  # read live: the record no longer matches
    assert_rows_equal_final(datetime(day.year, day.month, day.day, tzinfo=UTC))
    assert_unit_panels_equal_their_exact_forms(now)


@pytest.mark.asyncio
async def test_the_worker_settles_through_its_sink_one_day_at_a_time(
        copied: dict[str, Any]) -> None:
    now: datetime = copied["now"]
    day = _today(now) - timedelta(days=1)
    _revise_a_unit_on(day)
    assert _generations(day)[day] == 0
    sink = ClickHouseSink(_client, DB)
    settings = Settings(clickhouse_database=DB, dashboard_settle_horizon_days=400)
    try:
        report = await settle_once(sink, settings)
    finally:
        sink._client = None  # the process's shared chdb stays open
        sink.stop()
    assert day in report.settled and not report.failed, report.summary()
    assert _generations(day)[day] > 0
    assert_unit_panels_equal_their_exact_forms(now)


def test_the_settle_command_settles_the_days_before_today(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENYIELD_")}
    env.update({"TOKENYIELD_DATA_DIR": str(tmp_path / "data"),
                "TOKENYIELD_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'chdb'}"})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=180)

    assert cli("db", "migrate").returncode == 0
    # Two units in another process (chdb: one process per path): one last seen two days
    # ago, one today (never settled).
    seeded = subprocess.run([sys.executable, "-c", f"""
from streams.clickhouse.client import connect
c = connect("chdb://{tmp_path / 'chdb'}")
for unit, days in (("u-old", 2), ("u-today", 0)):
    c.command(f"INSERT INTO tokenyield.work_units_by_day (day, work_unit_id, version, "
              f"state, team, workflow, first_event_at, last_event_at, calls, currency, "
              f"model_cost, fully_loaded_cost) SELECT today() - {{days}}, '{{unit}}', 1, "
              f"'pending', 't', 'w', now64(3) - INTERVAL {{days}} DAY, "
              f"now64(3) - INTERVAL {{days}} DAY, 1, 'USD', 1, 1")
"""], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert seeded.returncode == 0, seeded.stderr
    first = cli("db", "settle")
    assert first.returncode == 0, first.stderr
    assert "1 day(s) settled (1 units), 0 already settled" in first.stdout
    second = cli("db", "settle")
    assert "0 day(s) settled (0 units), 1 already settled" in second.stdout, second.stdout
    forced = cli("db", "settle", "--again")
    assert "1 day(s) settled (1 units)" in forced.stdout, forced.stdout
