"""The rollups and v_ views of migration 0002 on generated traffic (chdb 26.9).

Every figure a view reports is checked against the base tables read with FINAL, so the
views are exact even though the data holds replayed duplicates (see
``clickhouse_fixtures``); the incremental rollup is shown to count those duplicates.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from schemas.events import shared_bucket_id
from schemas.partitioner import partition_for
from streams.clickhouse.client import migrate
from tests.clickhouse_fixtures import (
    BUDGETS,
    DATABASE,
    HOURS,
    PARTITIONS,
    TEAMS,
    LoadedClickHouse,
    loaded_clickhouse,
)

pytestmark = pytest.mark.clickhouse

__all__ = ["loaded_clickhouse"]  # the fixture, imported for pytest

DB = DATABASE
DOCS = Path(__file__).resolve().parent.parent / "docs" / "CLICKHOUSE.md"
VIEWS = [
    "v_cost_per_accepted_outcome", "v_cost_per_accepted_outcome_daily", "v_yield_by_workflow",
    "v_attribution_coverage", "v_acceptance_and_intervention", "v_waste",
    "v_budget_spend_hourly", "v_budget_burn", "v_budget_burndown", "v_work_units",
    "v_top_spenders_without_outcomes", "v_agents_without_outcomes", "v_alerts",
]
RANGED_VIEWS = ["v_attribution_coverage_between", "v_work_units_between"]
CALL_SPEND = "coalesce(cost, toDecimal128(0, 18))"
TOLERANCE = 1e-9


def grouped(db: LoadedClickHouse, sql: str, keys: int) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Rows of ``sql`` keyed by their first ``keys`` columns."""
    return {tuple(row[:keys]): tuple(row[keys:])
            for row in db.query(sql).result_rows}


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return abs(float(a) - float(b)) <= TOLERANCE * max(1.0, abs(float(b)))


# -- schema ------------------------------------------------------------------------------

def test_migrations_create_every_view_and_are_idempotent(
        loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    tables = {row[0]: row[1] for row in db.query(
        f"SELECT name, engine FROM system.tables WHERE database = '{DB}'").result_rows}
    for view in VIEWS + RANGED_VIEWS:
        assert tables.get(view) == "View", view
    assert tables["model_usage_hourly"] == "View"  # exact, no longer an incremental rollup
    assert "model_usage_hourly_mv" not in tables
    assert tables["budgets"] == "ReplacingMergeTree"
    assert migrate(db.client, DB) == []
    for view in VIEWS:  # every view runs
        db.query(f"SELECT * FROM {DB}.{view} LIMIT 1")


def test_budgets_table_rejects_an_unknown_period(loaded_clickhouse: LoadedClickHouse) -> None:
    with pytest.raises(Exception, match="known_period"):
        loaded_clickhouse.client.command(
            f"INSERT INTO {DB}.budgets (team, workflow, period, amount, soft_share) "
            "VALUES ('x', '', 'weekly', 1, 0.8)")


# -- exactness under replay ------------------------------------------------------------------

def test_replayed_calls_are_stored_twice_but_counted_once_by_final(
        loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    raw = db.scalar(f"SELECT count() FROM {DB}.model_calls")
    exact = db.scalar(f"SELECT count() FROM {DB}.model_calls FINAL")
    assert db.replayed_calls > 0
    assert raw - exact == db.replayed_calls
    window_spend = db.scalar(f"SELECT sum(spend) FROM {DB}.v_cost_per_accepted_outcome")
    assert window_spend == db.scalar(f"SELECT sum({CALL_SPEND}) FROM {DB}.model_calls FINAL")


def test_model_usage_counts_a_replayed_call_once(loaded_clickhouse: LoadedClickHouse) -> None:
    """Regression: model_usage_hourly was an incremental rollup that counted a replayed
    call again (the "Spend by model" and "Tokens by kind" panels overstated spend after
    any crash). It is now an exact view: it equals model_calls read with FINAL."""
    db = loaded_clickhouse
    usage = grouped(db, f"""
        SELECT hour, team, workflow, model, calls, retries, cost, unpriced_calls,
               input_tokens, context_tokens, cache_write_tokens, cached_input_tokens,
               latency_ms_sum, latency_calls
        FROM {DB}.model_usage_hourly""", 4)
    exact = grouped(db, f"""
        SELECT toStartOfHour(toDateTime(occurred_at, 'UTC')) AS h, team, workflow, model,
               count(), countIf(attempt > 1), sum({CALL_SPEND}), countIf(cost IS NULL),
               sum(input_tokens), sum(context_tokens), sum(cache_write_tokens),
               sum(cached_input_tokens), sum(coalesce(latency_ms, 0)),
               countIf(latency_ms IS NOT NULL)
        FROM {DB}.model_calls FINAL GROUP BY ALL""", 4)
    assert usage == exact
    assert db.replayed_calls > 0
    assert sum(v[0] for v in usage.values()) == db.scalar(
        f"SELECT count() FROM {DB}.model_calls") - db.replayed_calls


# -- cost per accepted outcome, yield ------------------------------------------------------------

def test_cost_per_accepted_outcome_matches_the_base_tables(
        loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    view = grouped(db, f"""
        SELECT hour, team, workflow, spend, outcomes, accepted_outcomes, value, human_cost,
               fully_loaded_cost, cost_per_accepted_outcome, acceptance_rate, yield_ratio,
               attribution_coverage, calls, accepted_value
        FROM {DB}.v_cost_per_accepted_outcome""", 3)
    calls = grouped(db, f"""
        SELECT toStartOfHour(toDateTime(occurred_at, 'UTC')) AS h, team, workflow,
               sum({CALL_SPEND}), count()
        FROM {DB}.model_calls FINAL GROUP BY ALL""", 3)
    outcomes = grouped(db, f"""
        SELECT toStartOfHour(toDateTime(occurred_at, 'UTC')) AS h, team, workflow,
               countIf(verdict = ''), sum(coalesce(value, toDecimal128(0, 18))),
               sum(human_cost)
        FROM {DB}.outcomes FINAL GROUP BY ALL""", 3)
    # Accepted units: successes, counted at their deciding outcome (an overturned one is
    # none); the fixture's outcomes are of their unit's own team and workflow.
    accepted_units = grouped(db, f"""
        SELECT toStartOfHour(toDateTime(decided_at, 'UTC')) AS h, team, workflow,
               sum(accepted)
        FROM {DB}.attributions_latest FINAL WHERE decided_at IS NOT NULL GROUP BY ALL""", 3)
    other = grouped(db, f"""
        SELECT toStartOfHour(toDateTime(occurred_at, 'UTC')) AS h, team, workflow,
               sum(amount) FROM {DB}.cost_items FINAL GROUP BY ALL""", 3)
    assert len(view) >= (len(TEAMS) + 1) * 40  # five workflows, about 48 hours each
    assert set(calls) <= set(view) and set(outcomes) <= set(view)
    for key, (spend, n_out, accepted, value, human, loaded, cpo, rate, yld, cov, n_calls,
              accepted_value) in view.items():
        assert (spend, n_calls) == calls.get(key, (Decimal(0), 0)), key
        assert (n_out, value, human) == outcomes.get(key, (0, Decimal(0), Decimal(0))), key
        assert accepted == accepted_units.get(key, (0,))[0], key
        assert loaded == spend + human + other.get(key, (Decimal(0),))[0], key
        if accepted:
            assert close(cpo, loaded / accepted)
        else:
            assert cpo is None
        assert rate is None if n_out == 0 else 0 <= rate <= 1 and close(rate, accepted / n_out)
        assert yld is None or close(yld, accepted_value / loaded)
        assert cov is None or 0 <= cov <= 1


def test_daily_figures_are_ratios_of_sums(loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    daily = grouped(db, f"""
        SELECT day, team, workflow, spend, fully_loaded_cost, accepted_outcomes, outcomes,
               cost_per_accepted_outcome, acceptance_rate
        FROM {DB}.v_cost_per_accepted_outcome_daily""", 3)
    hourly = grouped(db, f"""
        SELECT toDate(hour) AS d, team, workflow, sum(spend), sum(fully_loaded_cost),
               sum(accepted_outcomes), sum(outcomes)
        FROM {DB}.v_cost_per_accepted_outcome GROUP BY ALL""", 3)
    assert set(daily) == set(hourly) and len({k[0] for k in daily}) >= 2
    for key, (spend, loaded, accepted, n_out, cpo, rate) in daily.items():
        assert (spend, loaded, accepted, n_out) == hourly[key]
        assert cpo is None if not accepted else close(cpo, loaded / accepted)
        assert rate is None if not n_out else close(rate, accepted / n_out)


def test_yield_by_workflow(loaded_clickhouse: LoadedClickHouse) -> None:
    """Yield is the accepted units' value (at their deciding outcome's day) over the fully
    loaded cost; ``outcome_value`` is every outcome's."""
    db = loaded_clickhouse
    rows = db.rows(f"SELECT * FROM {DB}.v_yield_by_workflow")
    value_by_day = grouped(db, f"""
        SELECT toDate(occurred_at) AS d, team, workflow,
               sum(coalesce(value, toDecimal128(0, 18)))
        FROM {DB}.outcomes FINAL GROUP BY ALL""", 3)
    accepted_value = grouped(db, f"""
        SELECT toDate(decided_at) AS d, team, workflow,
               sum(if(accepted = 1, coalesce(value, toDecimal128(0, 18)), toDecimal128(0, 18)))
        FROM {DB}.attributions_latest FINAL WHERE decided_at IS NOT NULL GROUP BY ALL""", 3)
    assert {(r["team"], r["workflow"]) for r in rows} == {
        (t, w) for t, ws in TEAMS.items() for w in ws}
    for r in rows:
        key = (r["day"], r["team"], r["workflow"])
        assert r["outcome_value"] == value_by_day.get(key, (Decimal(0),))[0]
        assert r["value"] == accepted_value.get(key, (Decimal(0),))[0]
        assert r["fully_loaded_cost"] == r["spend"] + r["human_cost"] + r["other_cost"] \
            + r["shared_cost"]
        assert r["net_value"] == r["value"] - r["fully_loaded_cost"]
        if r["fully_loaded_cost"]:
            assert close(r["yield_ratio"], r["value"] / r["fully_loaded_cost"])
    assert any(r["yield_ratio"] and r["yield_ratio"] > 1 for r in rows)
    assert sum(r["outcome_value"] for r in rows) > sum(r["value"] for r in rows)  # audits


# -- attribution -----------------------------------------------------------------------

def test_attribution_coverage_splits_each_days_spend(
        loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    rows = db.rows(f"SELECT * FROM {DB}.v_attribution_coverage")
    spend_by_day = grouped(db, f"""
        SELECT toDate(occurred_at) AS d, team, workflow, sum({CALL_SPEND})
        FROM {DB}.model_calls FINAL GROUP BY ALL""", 3)
    assert {(r["day"], r["team"], r["workflow"]) for r in rows} == set(spend_by_day)
    for r in rows:
        parts = r["attributed_spend"] + r["unattributed_spend"] + r["pending_spend"]
        assert parts == r["total_spend"] == spend_by_day[(r["day"], r["team"], r["workflow"])][0]
        assert r["coverage"] is None or 0 <= r["coverage"] <= 1
        assert r["linked_share"] is None or 0 <= r["linked_share"] <= r["coverage"] + TOLERANCE
    totals = db.rows(f"""
        SELECT sum(attributed_spend) AS a, sum(unattributed_spend) AS u, sum(pending_spend) AS p
        FROM {DB}.v_attribution_coverage""")[0]
    latest = db.rows(f"""
        SELECT sumIf(model_cost, outcomes > 0) AS a, sumIf(model_cost, outcomes = 0) AS u
        FROM {DB}.attributions_latest FINAL""")[0]
    assert (totals["a"], totals["u"]) == (latest["a"], latest["u"])
    assert totals["a"] > 0 and totals["u"] > 0 and totals["p"] > 0


def test_work_units_are_each_counted_once(loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    units = db.rows(f"SELECT work_unit_id, state, spend, outcomes FROM {DB}.v_work_units")
    ids = [u["work_unit_id"] for u in units]
    assert len(ids) == len(set(ids))
    assert set(ids) == {r[0] for r in db.query(
        f"SELECT DISTINCT work_unit_id FROM {DB}.model_calls").result_rows}
    assert {u["state"] for u in units} == {"attributed", "unattributed", "pending"}
    assert sum(u["spend"] for u in units) == db.scalar(
        f"SELECT sum({CALL_SPEND}) FROM {DB}.model_calls FINAL")


def test_top_spenders_without_outcomes(loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    rows = db.rows(f"SELECT * FROM {DB}.v_top_spenders_without_outcomes ORDER BY spend DESC")
    spend = grouped(db, f"""
        SELECT work_unit_id, sum({CALL_SPEND}) FROM {DB}.model_calls FINAL GROUP BY ALL""", 1)
    with_outcome = {r[0] for r in db.query(
        f"SELECT DISTINCT work_unit_id FROM {DB}.outcomes").result_rows}
    assert {r["state"] for r in rows} == {"unattributed", "pending"}
    assert {r["team"] for r in rows} == set(TEAMS)
    for r in rows:
        assert r["work_unit_id"] not in with_outcome
        assert r["spend"] == spend[(r["work_unit_id"],)][0]
    # Unattributed units passed their deadline (1 h) by event time; pending ones have not,
    # by their partition's clock: the lowest of its inputs' newest events (calls, outcomes,
    # cost items: all pumped at once, none idle), minus the allowed lateness (2 min here).
    marks: dict[tuple[int, str], datetime] = {}
    for table in ("model_calls", "outcomes"):
        for unit, at in db.query(f"SELECT work_unit_id, max(occurred_at) FROM {DB}.{table} "
                                 f"GROUP BY work_unit_id").result_rows:
            key = (partition_for(unit, PARTITIONS), table)
            marks[key] = max(marks.get(key, at), at)
    for unit, team, workflow, at in db.query(
            f"SELECT work_unit_id, team, workflow, occurred_at FROM {DB}.cost_items FINAL"
    ).result_rows:
        # A shared item is keyed by its bucket, as the publisher keys it.
        unit = unit or shared_bucket_id(team, workflow, at.replace(tzinfo=UTC))
        key = (partition_for(unit, PARTITIONS), "cost_items")
        marks[key] = max(marks.get(key, at), at)
    newest = max(r["last_event_at"] for r in rows)
    for r in rows:
        partition = partition_for(r["work_unit_id"], PARTITIONS)
        clock = min(marks[(partition, table)]
                    for table in ("model_calls", "outcomes", "cost_items")) \
            - timedelta(minutes=2)
        if r["state"] == "pending":
            assert r["last_event_at"] >= clock - timedelta(hours=1)
        else:
            assert newest - r["last_event_at"] >= timedelta(hours=1)
    assert [r["spend"] for r in rows] == sorted((r["spend"] for r in rows), reverse=True)


def test_agents_without_outcomes(loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    rows = db.rows(f"SELECT * FROM {DB}.v_agents_without_outcomes")
    assert {r["agent"] for r in rows} == {"planner", "writer", ""}
    for r in rows:
        assert 0 < r["units_without_outcome"] < r["work_units"]
        assert 0 < r["spend_without_outcome"] < r["spend"]
        assert close(r["share_without_outcome"], r["spend_without_outcome"] / r["spend"])
    assert sum(r["spend"] for r in rows) == db.scalar(
        f"SELECT sum({CALL_SPEND}) FROM {DB}.model_calls FINAL")


def _utc(moment: datetime) -> datetime:
    """ClickHouse returns naive datetimes for DateTime64(3, 'UTC')."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _between(view: str, start: datetime, end: datetime) -> str:
    """A ranged view with its parameters, as the dashboard calls it."""
    def at(moment: datetime) -> str:
        return f"toDateTime64('{moment:%Y-%m-%d %H:%M:%S}', 3, 'UTC')"
    return f"{DB}.{view}(from_time = {at(start)}, to_time = {at(end)})"


COVERAGE_FIGURES = ("day, team, workflow, attributed_spend, unattributed_spend, pending_spend, "
                    "attributed_units, unattributed_units, pending_units")


def test_ranged_coverage_over_everything_equals_the_full_view(
        loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    everything = _between("v_attribution_coverage_between", db.start - timedelta(hours=2),
                          db.now + timedelta(hours=2))
    full = grouped(db, f"SELECT {COVERAGE_FIGURES} FROM {DB}.v_attribution_coverage", 3)
    assert grouped(db, f"SELECT {COVERAGE_FIGURES} FROM {everything}", 3) == full


def test_ranged_coverage_classifies_the_calls_in_range_by_their_units_attribution(
        loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    # The range starts inside an attributed unit's calls, so units that began before it
    # must be classified through their attribution too.
    first, last = db.query(f"""
        SELECT min(occurred_at) AS first, max(occurred_at) AS last FROM {DB}.model_calls
        WHERE work_unit_id IN (SELECT work_unit_id FROM {DB}.attributions_latest FINAL
                               WHERE outcomes > 0)
        GROUP BY work_unit_id HAVING last - first >= 120
        ORDER BY work_unit_id LIMIT 1""").result_rows[0]
    cut = _utc(first + (last - first) / 2).replace(microsecond=0)
    outcomes = {r[0]: r[1] for r in db.query(
        f"SELECT work_unit_id, outcomes FROM {DB}.attributions_latest FINAL").result_rows}
    expected: dict[tuple[Any, ...], list[Any]] = {}
    units_across_the_cut = 0
    first_call = {r[0]: r[1] for r in db.query(
        f"SELECT work_unit_id, min(occurred_at) FROM {DB}.model_calls GROUP BY ALL").result_rows}
    for unit, day, team, workflow, spend in db.query(f"""
            SELECT work_unit_id, toDate(occurred_at), team, workflow, {CALL_SPEND}
            FROM {DB}.model_calls FINAL
            WHERE occurred_at >= toDateTime64('{cut:%Y-%m-%d %H:%M:%S}', 3, 'UTC')""").result_rows:
        state = ("pending" if unit not in outcomes
                 else "attributed" if outcomes[unit] > 0 else "unattributed")
        figures = expected.setdefault((day, team, workflow), [Decimal(0)] * 3)
        figures[("attributed", "unattributed", "pending").index(state)] += spend
        units_across_the_cut += _utc(first_call[unit]) < cut
    view = _between("v_attribution_coverage_between", cut, db.now + timedelta(hours=2))
    ranged = grouped(db, f"SELECT day, team, workflow, attributed_spend, unattributed_spend, "
                         f"pending_spend FROM {view}", 3)
    assert ranged == {key: tuple(v) for key, v in expected.items()}
    assert units_across_the_cut > 0  # units that began before the range are classified too
    assert sum(v[0] for v in ranged.values()) > 0


def test_ranged_work_units_are_the_units_whose_last_event_is_in_range(
        loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    columns = "work_unit_id, state, outcomes, calls, spend, first_event_at, last_event_at"
    everything = _between("v_work_units_between", db.start - timedelta(hours=2),
                          db.now + timedelta(hours=2))
    full = grouped(db, f"SELECT {columns} FROM {DB}.v_work_units", 1)
    assert grouped(db, f"SELECT {columns} FROM {everything}", 1) == full

    cut = (db.now - timedelta(hours=HOURS // 2)).replace(minute=0, second=0, microsecond=0)
    ranged = grouped(db, f"SELECT {columns} FROM "
                         f"{_between('v_work_units_between', cut, db.now + timedelta(hours=2))}", 1)
    in_range = {k: v for k, v in full.items() if _utc(v[5]) >= cut}
    assert set(ranged) == set(in_range)
    assert db.scalar(f"SELECT count() FROM {_between('v_work_units_between', cut, db.now)}") \
        == len(in_range)  # each unit once: an attributed one is never also pending
    since_cut = grouped(db, f"""
        SELECT work_unit_id, count(), sum({CALL_SPEND}), min(occurred_at)
        FROM {DB}.model_calls FINAL
        WHERE occurred_at >= toDateTime64('{cut:%Y-%m-%d %H:%M:%S}', 3, 'UTC') GROUP BY ALL""", 1)
    states = set()
    for key, row in ranged.items():
        states.add(row[0])
        if row[0] == "pending":  # summed over its calls since the range began
            assert (row[2], row[3], row[4]) == since_cut[key]
        else:
            assert row == in_range[key]
    assert states == {"attributed", "unattributed", "pending"}


# -- outcomes and waste ---------------------------------------------------------------------

def test_acceptance_and_intervention(loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    rows = db.rows(f"SELECT * FROM {DB}.v_acceptance_and_intervention")
    base = grouped(db, f"""
        SELECT toStartOfHour(toDateTime(occurred_at, 'UTC')) AS h, team, workflow, count(),
               sum(accepted), countIf(human_review_minutes > 0), sum(human_review_minutes)
        FROM {DB}.outcomes FINAL GROUP BY ALL""", 3)
    assert len(rows) == len(base)
    for r in rows:
        n, accepted, reviewed, minutes = base[(r["hour"], r["team"], r["workflow"])]
        assert (r["outcomes"], r["accepted_outcomes"], r["reviewed_outcomes"]) == (
            n, accepted, reviewed)
        assert r["review_minutes"] == minutes
        assert close(r["acceptance_rate"], accepted / n)
        assert close(r["intervention_rate"], reviewed / n)
        assert 0 <= r["intervention_rate"] <= 1
        assert close(r["avg_review_minutes"], minutes / n)
    assert 0 < sum(r["reviewed_outcomes"] for r in rows) < sum(r["outcomes"] for r in rows)
    assert sum(r["escalated_outcomes"] for r in rows) > 0


def test_waste_by_model(loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    rows = db.rows(f"SELECT * FROM {DB}.v_waste")
    base = grouped(db, f"""
        SELECT toDate(occurred_at) AS d, team, workflow, model, count(), countIf(attempt > 1),
               countIf(cost IS NULL), sum(system_prompt_tokens + context_tokens),
               sum(input_tokens), sum({CALL_SPEND})
        FROM {DB}.model_calls FINAL GROUP BY ALL""", 4)
    assert {(r["day"], r["team"], r["workflow"], r["model"]) for r in rows} == set(base)
    for r in rows:
        calls, retries, unpriced, overhead, inputs, spend = base[
            (r["day"], r["team"], r["workflow"], r["model"])]
        assert (r["calls"], r["retries"], r["unpriced_calls"]) == (calls, retries, unpriced)
        assert (r["overhead_tokens"], r["input_tokens"], r["spend"]) == (overhead, inputs, spend)
        for share in ("retry_share", "failed_share", "context_share", "unpriced_share"):
            assert 0 <= r[share] <= 1, share
        assert close(r["retry_share"], retries / calls)
        assert close(r["context_share"], overhead / inputs)
        assert r["unpriced_share"] == (1.0 if r["model"] == "acme-internal-llm" else 0.0)


# -- budgets ---------------------------------------------------------------------------

def _period_start(period: str, now: datetime) -> datetime:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "daily" else day.replace(day=1)


def test_budget_burn_of_the_current_period(loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    now = datetime.now(UTC)
    rows = db.rows(f"SELECT * FROM {DB}.v_budget_burn WHERE is_current = 1")
    assert len(rows) == len(BUDGETS)
    for budget in BUDGETS:
        [row] = [r for r in rows if (r["team"], r["workflow"], r["period"])
                 == (budget.team, budget.workflow, budget.period)]
        start = _period_start(budget.period, now)
        workflow = f"AND workflow = '{budget.workflow}'" if budget.workflow else ""
        spend = db.scalar(f"""
            SELECT sum({CALL_SPEND}) FROM {DB}.model_calls FINAL
            WHERE team = '{budget.team}' {workflow}
              AND occurred_at >= toDateTime64('{start:%Y-%m-%d %H:%M:%S}', 3, 'UTC')""")
        assert row["spend"] == spend
        assert row["amount"] == budget.amount and row["soft_share"] == budget.soft_share
        assert row["remaining"] == budget.amount - spend
        assert close(row["burn_share"], spend / budget.amount)
        assert row["projected_spend"] >= float(spend) - TOLERANCE
        assert close(row["projected_share"], row["projected_spend"] / float(budget.amount))
        expected = ("exceeded" if row["burn_share"] >= 1 else
                    "soft_limit" if row["burn_share"] >= float(budget.soft_share) else
                    "projected_over" if row["projected_share"] >= 1 else "ok")
        assert row["status"] == expected


def test_budget_burn_of_past_periods(loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    rows = db.rows(f"""SELECT * FROM {DB}.v_budget_burn
                       WHERE is_current = 0 AND period = 'daily'""")
    assert rows, "two days of data span at least one finished day"
    for row in rows:
        assert row["period_end"] - row["period_start"] == timedelta(days=1)
        assert row["elapsed_seconds"] == row["period_seconds"] == 86400
        assert close(row["projected_spend"], row["spend"])
    # support/triage spends over its daily budget on every day the traffic covers whole
    # (48 hours always hold yesterday whole); the first day holds only the traffic's
    # tail, which stays under the budget late in the day (this failed at 18:30 UTC).
    start = db.start.replace(tzinfo=None)
    exceeded = [r for r in rows if r["team"] == "support" and r["workflow"] == "triage"
                and r["period_start"] >= start]
    assert exceeded and all(r["status"] == "exceeded" for r in exceeded)


def test_burndown_accumulates_to_the_burn(loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    series: dict[tuple[str, str, str, datetime], list[dict[str, Any]]] = defaultdict(list)
    for r in db.rows(f"SELECT * FROM {DB}.v_budget_burndown ORDER BY hour"):
        series[(r["team"], r["workflow"], r["period"], r["period_start"])].append(r)
    burn = grouped(db, f"""SELECT team, workflow, period, period_start, spend, remaining
                           FROM {DB}.v_budget_burn""", 4)
    assert set(series) == set(burn)
    for key, points in series.items():
        cumulative = [p["cumulative_spend"] for p in points]
        assert cumulative == sorted(cumulative)
        assert (cumulative[-1], points[-1]["remaining"]) == burn[key]


def test_a_retired_budget_disappears(loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    columns = ["team", "workflow", "period", "amount", "soft_share", "updated_at", "is_deleted"]
    at = datetime.now(UTC)
    row = ["retired-team", "", "daily", Decimal(5), Decimal("0.8")]
    db.client.insert(f"{DB}.budgets", [[*row, at, 0]], column_names=columns)
    burn = f"SELECT count() FROM {DB}.v_budget_burn WHERE team = 'retired-team'"
    assert db.scalar(burn) == 1  # no spend yet: the zero row of the current period
    db.client.insert(f"{DB}.budgets", [[*row, at + timedelta(seconds=1), 1]],
                     column_names=columns)
    assert db.scalar(burn) == 0


# -- alerts ------------------------------------------------------------------------------

def test_alert_episodes(loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    rows = db.rows(f"""SELECT * FROM {DB}.v_alerts
                       WHERE alert_id LIKE 'budget_hard:%' OR alert_id LIKE 'cpo:%'""")
    assert len(rows) == len({r["alert_id"] for r in rows}) == 2 * len(TEAMS)
    for r in rows:
        if r["status"] == "resolved":
            assert r["resolved_at"] > r["fired_at"]
            assert r["last_change_at"] == r["resolved_at"]
        else:
            assert r["resolved_at"] is None and r["severity"] == "critical"
        assert r["team"] in TEAMS


# -- the documentation ---------------------------------------------------------------------

def test_every_example_query_in_the_docs_runs(loaded_clickhouse: LoadedClickHouse) -> None:
    examples = re.findall(r"```sql\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    assert len(examples) >= 8
    for sql in examples:
        assert f"{DB}." in sql
        rows = loaded_clickhouse.query(sql).result_rows
        assert rows, f"no rows:\n{sql}"
