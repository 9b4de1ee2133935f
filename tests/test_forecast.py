"""Month-end spend forecasts: the model on known series, and through ``AlertEngine`` (the
daily spend it learns from final rows, ``forecasts()``, monthly budgets' projections)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from schemas.outputs import CostPerOutcomeWindow
from streams.core.alerts import AlertConfig, AlertEngine, BudgetRule
from streams.core.alerts.forecast import (
    DAY_MS,
    fit,
    forecast_month_end,
    project,
    weekday,
)
from tests.clickhouse_fixtures import loaded_clickhouse  # noqa: F401

MINUTE = 60_000
NOV = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000)
DEC = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000)
JAN = int(datetime(2027, 1, 1, tzinfo=UTC).timestamp() * 1000)
WEEK = (1.0, 1.1, 1.0, 1.2, 0.9, 0.3, 0.2)  # Monday first
CONFIG = AlertConfig()


def series(first_ms: int, days: int, daily: Any) -> dict[int, Decimal]:
    return {first_ms + d * DAY_MS: Decimal(f"{daily(d, first_ms + d * DAY_MS):.9f}")
            for d in range(days)}


def month_total(daily: Any, first_ms: int) -> float:
    return sum(daily((day - first_ms) // DAY_MS, day) for day in range(DEC, JAN, DAY_MS))


def test_a_steady_weekly_pattern_is_forecast_exactly() -> None:
    def daily(d: int, day: int) -> float:
        return 100 * WEEK[weekday(day)]

    history = series(NOV, 30 + 10, daily)  # November and ten days of December
    p = forecast_month_end(history, NOV, DEC + 10 * DAY_MS)
    assert p.method == "seasonal" and p.history_days == 40
    assert abs(float(p.expected) - month_total(daily, NOV)) < 1e-6
    assert p.spent == sum(v for day, v in history.items() if day >= DEC)
    model = fit(history, NOV, DEC + 10 * DAY_MS, CONFIG)
    assert model is not None and model.slope == 0
    mean = sum(WEEK) / 7
    assert [round(f, 6) for f in model.factors] == [round(w / mean, 6) for w in WEEK]


def test_growth_and_seasonality_without_noise() -> None:
    """3% a day is multiplicative growth: the log-linear trend follows it."""
    def daily(d: int, day: int) -> float:
        return 50 * 1.03 ** d * WEEK[weekday(day)]

    for as_of in (7, 14, 21):
        p = forecast_month_end(series(NOV, 30 + as_of, daily), NOV, DEC + as_of * DAY_MS)
        actual = month_total(daily, NOV)
        assert abs(float(p.expected) / actual - 1) < 0.005, as_of
        linear = float(p.spent) * 31 / as_of  # what the run-rate would have said
        assert abs(linear / actual - 1) > 0.05


def test_the_band_covers_noisy_months_and_narrows_as_they_pass() -> None:
    """40 seeded series (20% day noise, 0.5% daily growth, the weekly pattern): the 90%
    band holds the actual month-end spend for at least 70% of them, a little less
    often than 90% (see docs/ALERTS.md: the band is normal, the days lognormal)."""
    first = NOV - 30 * DAY_MS
    held = {7: 0, 14: 0, 21: 0}
    widths: dict[int, list[Decimal]] = {7: [], 14: [], 21: []}
    for seed in range(40):
        rnd = random.Random(seed)
        noise = [rnd.lognormvariate(-0.02, 0.2) for _ in range(91)]

        def daily(d: int, day: int, noise: list[float] = noise) -> float:
            return 80 * 1.005 ** d * WEEK[weekday(day)] * noise[d]

        actual = Decimal(f"{sum(daily(d, first + d * DAY_MS) for d in range(60, 91)):.9f}")
        for as_of in held:
            p = forecast_month_end(series(first, 60 + as_of, daily), first,
                                   DEC + as_of * DAY_MS)
            assert p.spent <= p.low <= p.expected <= p.high
            held[as_of] += p.low <= actual <= p.high
            widths[as_of].append((p.high - p.low) / p.expected)
    assert all(n >= 28 for n in held.values()), held  # 33, 30 and 34 of 40
    assert sum(widths[7]) > sum(widths[14]) > sum(widths[21])


def test_an_outlier_day_does_not_tilt_the_forecast() -> None:
    def daily(d: int, day: int) -> float:
        return 1000.0 if d == 35 else 100.0 * (1 + 0.01 * (d % 3))

    p = forecast_month_end(series(NOV, 40, daily), NOV, DEC + 10 * DAY_MS)
    remaining = float(p.expected - p.spent) / 21
    assert 99 < remaining < 103  # the runaway day counts in the band, not the level


def test_short_history_falls_back_to_the_linear_run_rate() -> None:
    history = series(DEC, 10, lambda d, day: 100.0)
    assert fit(history, DEC, DEC + 10 * DAY_MS, CONFIG) is None
    p = forecast_month_end(history, DEC, DEC + 10 * DAY_MS)
    assert (p.method, p.expected, p.low, p.high) == ("linear", Decimal(3100), Decimal(3100),
                                                     Decimal(3100))
    assert project(None, Decimal(100), DEC, DEC + DAY_MS, JAN, CONFIG).expected == 3100


# -- through the engine --------------------------------------------------------------------
def row(ms: int, team: str = "acme", workflow: str = "support", spend: float = 1.0,
        **kw: Any) -> CostPerOutcomeWindow:
    scope = "dimension" if kw.get("dimension") else "total"
    return CostPerOutcomeWindow(
        window_id=f"60:{ms}:{team}:{workflow}:{scope}:{kw.get('dimension_value', '')}",
        window_start=datetime.fromtimestamp(ms / 1000, UTC),
        window_end=datetime.fromtimestamp((ms + MINUTE) / 1000, UTC), window_seconds=60,
        team=team, workflow=workflow, model="*", agent="", scope=scope, revision=1,
        final=True, currency="USD", calls=10, spend=Decimal(f"{spend:.9f}"), **kw)


def feed(engine: AlertEngine, first_ms: int, days: int, daily: Any,
         teams: tuple[str, ...] = ("acme",)) -> list[Any]:
    """Each day's spend in four final rows (the last one ends at midnight)."""
    alerts = []
    for d in range(days):
        day = first_ms + d * DAY_MS
        for q in range(4):
            at = day + (q + 1) * 6 * 3_600_000 - MINUTE
            alerts += engine.observe([], [row(at, team=t, spend=daily(d, day) / 4)
                                          for t in teams], [], 0)
    return alerts


def grows(d: int, day: int) -> float:
    return 40 * 1.02 ** d * WEEK[weekday(day)]


def test_the_engine_forecasts_teams_workflows_and_monthly_budgets() -> None:
    e = AlertEngine(AlertConfig(budgets=(
        BudgetRule(team="acme", period="monthly", amount=Decimal(100_000)),
        BudgetRule(team="acme", period="daily", amount=Decimal(100_000)))), "USD")
    feed(e, NOV, 40, grows)
    found = {tuple(sorted(f.subject.items())): f.projection for f in e.forecasts()}
    assert set(found) == {
        (("team", "acme"),), (("team", "acme"), ("workflow", "support")),
        (("budget", "team=acme/period=monthly"), ("period", "monthly"), ("team", "acme"))}
    history = {NOV + d * DAY_MS: Decimal(f"{grows(d, NOV + d * DAY_MS):.9f}")
               for d in range(40)}
    # the engine's first day is partial (its first row came at 05:59): it starts a day on
    mirror = forecast_month_end(history, NOV + DAY_MS, DEC + 10 * DAY_MS)
    for p in found.values():
        assert p.method == "seasonal"
        assert abs(p.expected - mirror.expected) < Decimal("0.0001")
        assert abs(p.high - mirror.high) < Decimal("0.0001")


def test_a_monthly_budget_runs_out_on_the_forecast_day_not_the_run_rate_day() -> None:
    """Spend growing 2% a day with a weekly pattern: by the soft alert the run-rate of
    December so far lags the spend, so it dates the exhaustion late; the forecast does
    not."""
    actual = 0.0
    ran_out = None
    amount = Decimal(2000)
    for d in range(30, 61):
        actual += grows(d, NOV + d * DAY_MS)
        if ran_out is None and actual >= amount:
            ran_out = datetime.fromtimestamp((NOV + d * DAY_MS) / 1000, UTC)
    assert ran_out is not None
    e = AlertEngine(AlertConfig(budgets=(
        BudgetRule(team="acme", period="monthly", amount=amount),)), "USD")
    soft = next(a for a in feed(e, NOV, 61, grows)
                if a.kind == "budget_soft" and a.window_start.month == 12)
    assert soft.details["forecast"] == "seasonal"
    assert soft.details["exhausts_on"] == ran_out.strftime("%Y-%m-%d")
    assert Decimal(soft.details["projected_low"]) <= soft.expected \
        <= Decimal(soft.details["projected_high"])
    assert "On its forecast (weekday pattern and trend of the last" in soft.message
    rate = float(soft.observed) / (soft.window_end.timestamp() - DEC / 1000)
    linear_day = datetime.fromtimestamp(DEC / 1000 + float(amount) / rate, UTC)
    assert linear_day.date() > ran_out.date()


def test_a_young_budget_says_it_used_the_run_rate() -> None:
    e = AlertEngine(AlertConfig(budgets=(
        BudgetRule(team="acme", period="monthly", amount=Decimal(300)),)), "USD")
    soft = next(a for a in feed(e, DEC, 10, grows) if a.kind == "budget_soft")
    assert soft.details["forecast"] == "linear run-rate (under 14 complete days of history)"
    assert "projected_low" not in soft.details and "At this rate" in soft.message


def test_dimension_rows_are_learnt_only_for_budgeted_values() -> None:
    e = AlertEngine(AlertConfig(budgets=(
        BudgetRule(dimension="customer", value="bigco", period="monthly",
                   amount=Decimal(10**6)),)), "USD")
    for value in ("bigco", "smallco"):
        e.observe([], [row(DEC, spend=5, dimension="customer", dimension_value=value)],
                  [], 0)
    assert sorted(e.forecaster.days) == [("acme", "support", "customer", "bigco")]


def test_state_round_trips_and_history_is_bounded() -> None:
    whole = AlertEngine(CONFIG, "USD")
    feed(whole, NOV, 40, grows)
    resumed = AlertEngine(CONFIG, "USD")
    resumed.load(orjson.loads(whole.dump()))
    assert resumed.dump() == whole.dump() and resumed.forecasts() == whole.forecasts()
    feed(whole, NOV + 40 * DAY_MS, 50, lambda d, day: 10.0)
    days = whole.forecaster.days[("acme", "support", "", "")]
    assert len(days) <= CONFIG.forecast_history_days + 1
    assert min(days) >= NOV + (90 - 57) * DAY_MS


def test_an_engine_state_from_before_forecasts_loads() -> None:
    state = orjson.loads(AlertEngine(CONFIG, "USD").dump())
    del state["forecast"], state["plateau"]
    e = AlertEngine(CONFIG, "USD")
    e.load(state)
    assert e.forecasts() == [] and math.isfinite(e.plateau.evaluated_ms)


def test_a_new_workflow_does_not_cost_its_team_the_forecast() -> None:
    """A workflow first seen five days ago spent nothing before: its team keeps the
    history of its older workflow, while the new workflow alone has too little."""
    e = AlertEngine(CONFIG, "USD")
    feed(e, NOV, 30, grows)
    for d in range(5):
        day = DEC + d * DAY_MS
        for q in range(4):
            at = day + (q + 1) * 6 * 3_600_000 - MINUTE
            e.observe([], [row(at, spend=grows(30 + d, day) / 4),
                           row(at, workflow="new", spend=3.0)], [], 0)
    methods = {tuple(sorted(f.subject.values())): f.projection.method
               for f in e.forecasts()}
    assert methods == {("acme",): "seasonal", ("acme", "support"): "seasonal",
                       ("acme", "new"): "linear"}


def test_the_backtest_runs() -> None:
    """``loadtest.alerts_benchmark.forecast_backtest``, small (its figures are measured
    there and reported in docs/ALERTS.md, not asserted here)."""
    from loadtest.alerts_benchmark import forecast_backtest

    result = forecast_backtest(4, seed=2)
    assert set(result["mape"]) == {7, 14, 21}
    assert all(math.isfinite(v) for v in result["mape"].values())
    assert result["seasonal_share"] == 1


# -- into ClickHouse -------------------------------------------------------------------------

class DictStore(dict[bytes, bytes]):
    def set(self, key: bytes, value: bytes) -> None:
        self[key] = value

    def delete(self, key: bytes) -> None:
        self.pop(key, None)


def test_the_rollup_writes_the_forecasts_once_an_hour_into_clickhouse(
        loaded_clickhouse: Any) -> None:  # noqa: F811
    """The rollup runtime hands the engine's projections to the sink once per hour of
    event time; they land exact, and the latest view picks each subject's newest."""
    import asyncio

    from loadtest.engine_into_clickhouse import UnclosableClient
    from streams.clickhouse.client import migrate
    from streams.clickhouse.sink import ClickHouseSink
    from streams.runtime.rollup_runtime import RollupRuntime

    client, database = loaded_clickhouse.client, "forecasts_test"
    migrate(client, database)
    # The shared client is the session's: the sink must not close it when it stops.
    sink = ClickHouseSink(lambda: UnclosableClient(client), database, retry_max_seconds=0.05,
                          reconnect_on_error=False)
    engine = AlertEngine(CONFIG, "USD")
    runtime = RollupRuntime(sink, engine, currency="USD", idle_seconds=30,
                            interval_seconds=0, topic="partials", partitions=1)
    store = DictStore()

    async def checkpoint() -> None:
        async def emit(*_: Any) -> None:
            return None
        await runtime.checkpoint(store, emit, emit)

    feed(engine, NOV, 40, grows)
    asyncio.run(checkpoint())
    asyncio.run(checkpoint())  # the same event hour: nothing written again
    rows = client.query(f"SELECT team, workflow, budget, spent, expected, low, high, method "
                        f"FROM {database}.spend_forecasts").result_rows
    found = {(r[0], r[1], r[2]): r[3:] for r in rows}
    assert len(rows) == len(engine.forecasts()) == 2  # the team, and its one workflow
    for f in engine.forecasts():
        p = f.projection
        assert found[(f.subject["team"], f.subject.get("workflow", ""), "")] == \
            (p.spent, p.expected, p.low, p.high, p.method)
    feed(engine, NOV + 40 * DAY_MS, 1, grows)  # a day later: a new projection
    asyncio.run(checkpoint())
    latest = client.query(f"SELECT spent FROM {database}.v_spend_forecast_latest "
                          f"WHERE team = 'acme' AND workflow = ''").result_rows
    assert latest == [(next(f.projection.spent for f in engine.forecasts()
                            if "workflow" not in f.subject),)]
    sink.stop()
