"""``tokenyield report``: the page's charts and figures come from ClickHouse, and it
opens offline. Against chdb loaded with generated data (tests/clickhouse_fixtures.py);
the CLI end to end is in tests/test_demo.py."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from loadtest.engine_into_clickhouse import UnclosableClient
from streams.clickhouse.client import migrate
from streams.clickhouse.sink import ClickHouseSink
from streams.core.alerts.forecast import Projection, SpendForecast
from streams.core.records import Outputs
from streams.report.html_page import gather, render
from tests.clickhouse_fixtures import LoadedClickHouse, loaded_clickhouse
from tests.value_fixtures import ValueDb, value_db

__all__ = ["loaded_clickhouse", "value_db"]  # the fixture, imported for pytest
pytestmark = [pytest.mark.clickhouse]


CHARTS = 11  # cost, yield, coverage, alerts; and seven value charts


def page_for(db: LoadedClickHouse) -> tuple[dict[str, Any], str]:
    def query(sql: str) -> list[list[Any]]:
        return [list(r) for r in db.client.query(sql).result_rows]

    data = gather(query, db.database)
    return data, render(data, database=db.database, source="chdb (test)", currency="USD",
                        generated=datetime(2026, 11, 23, tzinfo=UTC))


def test_the_charts_draw_every_workflow_from_the_windows(
        loaded_clickhouse: LoadedClickHouse) -> None:
    data, html = page_for(loaded_clickhouse)
    workflows = {f"{t}/{w}" for t, w in loaded_clickhouse.client.query(
        f"SELECT DISTINCT team, workflow FROM {loaded_clickhouse.database}."
        f"cost_per_outcome_windows WHERE model = '*' AND agent = '' AND accepted_outcomes > 0"
    ).result_rows}
    drawn = set(re.findall(r'<polyline class="series" data-series="([^"]+)"', html))
    assert workflows <= drawn | {"attribution coverage"}
    assert workflows <= set(re.findall(r'<rect class="bar" data-label="([^"]+)"', html))
    # One point per bucket with accepted outcomes, as many as the series holds.
    for name, points in data["cpo"].items():
        count = re.search(rf'data-series="{re.escape(name)}" data-points="(\d+)"', html)
        assert count is not None and int(count.group(1)) == len(points)


def test_headline_figures_equal_sums_over_the_windows(
        loaded_clickhouse: LoadedClickHouse) -> None:
    data, html = page_for(loaded_clickhouse)
    spend, flc, accepted = loaded_clickhouse.client.query(
        f"SELECT sum(spend), sum(fully_loaded_cost), sum(accepted_outcomes) FROM "
        f"{loaded_clickhouse.database}.cost_per_outcome_windows FINAL WHERE window_seconds = "
        f"{data['window_seconds'] if data['window_seconds'] in (60, 3600) else 3600} "
        f"AND model = '*' AND agent = ''").result_rows[0]
    headline = data["headline"]
    assert headline.spend == Decimal(spend)
    assert headline.cost_per_accepted == Decimal(flc) / accepted
    assert f"${Decimal(spend):,.2f}" in html


def test_the_page_is_self_contained(loaded_clickhouse: LoadedClickHouse) -> None:
    _, html = page_for(loaded_clickhouse)
    assert html.count("<svg") == CHARTS
    assert "<script" not in html.lower()
    assert not re.search(r'(src|href)="https?://', html)
    assert "http://www.w3.org/2000/svg" in html  # the SVG namespace, not a download


def test_an_empty_database_gives_placeholders_not_an_error(
        loaded_clickhouse: LoadedClickHouse) -> None:
    # chdb opens one path per process: a second, empty database in the same engine.
    client = loaded_clickhouse.client
    migrate(client, "empty_report")

    def query(sql: str) -> list[list[Any]]:
        return [list(r) for r in client.query(sql).result_rows]

    html = render(gather(query, "empty_report"), database="empty_report", source="chdb",
                  currency="USD")
    assert html.count("<svg") == CHARTS and html.count(": no data yet</text>") == CHARTS
    assert "No alerts." in html


def test_the_value_sections_show_what_a_cfo_asks(value_db: ValueDb) -> None:
    """Cost by part, integrity, customers, the funnel, deciles, ROI and the portfolio,
    each equal to its view."""
    db = value_db.db
    # A month-end projection, as the rollup writes it (its engine needs days of history).
    forecast = SpendForecast({"team": "support"}, Projection(
        as_of_ms=int(db.now.timestamp() * 1000), end_ms=int(db.now.timestamp() * 1000) + 10**9,
        spent=Decimal("12.5"), expected=Decimal("40.25"), low=Decimal("35"),
        high=Decimal("47.75"), method="seasonal", history_days=30))
    batch = Outputs(forecasts=[(forecast, "USD")])
    batch.cover("report-forecast", 0, 0)
    sink = ClickHouseSink(lambda: UnclosableClient(db.client), db.database)
    asyncio.run(sink.write(batch))
    sink.stop()
    data, html = page_for(db)
    assert data["value"].forecasts[0][0] == "support"
    assert "$40.25" in html and "$35.00 to $47.75" in html
    value = data["value"]
    loaded = db.scalar(f"SELECT sum(fully_loaded_cost) FROM {db.database}.v_window_totals "
                       f"WHERE window_seconds = 3600 AND scope = 'total'")
    assert sum(amount for _, amount in value.costs) == loaded  # the parts add up
    assert {name for name, _ in value.costs} >= {"model tokens", "human review",
                                                 "tool_call (cost items)", "shared costs"}
    funnel = db.rows(f"SELECT sum(work_units) AS w, sum(output_accepted) AS o, "
                     f"sum(value_captured) AS v FROM {db.database}.v_conversion_funnel")[0]
    assert (value.funnel["work_units"][0], value.funnel["output_accepted"][0],
            value.funnel["value_captured"][0]) == (funnel["w"], funnel["o"], funnel["v"])
    by_customer = {r["value"]: r["cost"] for r in db.rows(
        f"SELECT value, sum(fully_loaded_cost) AS cost FROM {db.database}.v_dimension_hourly "
        f"WHERE dimension = 'customer' GROUP BY value")}
    assert {name: cost for name, cost, _ in value.customers} == by_customer
    assert set(by_customer) == {"c0", "c1", "c2"}
    assert [c[1] for c in value.customers] == sorted(by_customer.values(), reverse=True)
    assert sum(d[1] for d in value.deciles) == db.scalar(
        f"SELECT sum(units) FROM {db.database}.v_acceptance_by_cost_decile "
        f"WHERE team || '/' || workflow = '{value.decile_workflow}'")
    assert "retire" in html and "no accepted outcome" in html  # eng/lab
    assert "ROI against the human baseline" in html and "support/triage" in html
    assert html.count("<svg") == CHARTS and html.count(": no data yet</text>") <= 1  # alerts
