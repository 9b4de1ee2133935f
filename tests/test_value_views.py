"""The value views of migrations 0006 and 0009 on generated traffic run through the engine.

Cost items (a unit's and shared ones), quality and latency bars, verdicts: each view's
figures are checked against the base tables read with FINAL, and the shared-cost
allocation against the rule of docs/SEMANTICS.md computed here in exact integers.
A database of its own beside the shared fixture's (one chdb path per process).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from schemas.outputs import WorkUnitAttribution
from tests.core_harness import kind_of
from tests.value_fixtures import ATTO, DB, RULES, STAGES, WORKFLOWS, ValueDb, value_db

pytestmark = pytest.mark.clickhouse

__all__ = ["value_db"]  # the fixture, imported for pytest

def _atto(x: Decimal) -> int:
    return int(x * ATTO)


def test_cost_items_hourly_is_the_items_counted_once(value_db: ValueDb) -> None:
    want: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for e in value_db.events:
        if kind_of(e) != "costs":
            continue
        hour = datetime.fromisoformat(e["occurred_at"]).replace(minute=0, second=0,
                                                                 microsecond=0)
        amount = Decimal(e["amount"]) if "amount" in e else \
            Decimal(e["quantity"]) * Decimal(e["unit_price"])
        cell = want[(hour, e["team"], e["workflow"], e["kind"], int("work_unit_id" not in e))]
        cell[0] += 1
        cell[1] += amount
    got = {(r["hour"].replace(tzinfo=UTC), r["team"], r["workflow"], r["kind"], r["shared"]):
           [r["items"], r["amount"]]
           for r in value_db.rows(f"SELECT * FROM {DB}.v_cost_items_hourly")}
    assert got == dict(want)


def test_shared_costs_are_allocated_by_model_spend_exactly(value_db: ValueDb) -> None:
    spend: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in value_db.rows(f"SELECT toStartOfHour(occurred_at) AS hour, team, workflow, "
                           f"work_unit_id, cost FROM {DB}.model_calls FINAL"):
        spend[(r["hour"].replace(tzinfo=UTC), r["team"], r["workflow"])][r["work_unit_id"]] \
            += _atto(r["cost"])
    got: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for r in value_db.rows(f"SELECT event_id, work_unit_id, allocated "
                           f"FROM {DB}.v_shared_cost_allocation"):
        got[r["event_id"]][r["work_unit_id"]] = r["allocated"]
    shared = [e for e in value_db.events if kind_of(e) == "costs" and "work_unit_id" not in e]
    assert set(got) == {e["event_id"] for e in shared}
    for item in shared:
        moment = datetime.fromisoformat(item["occurred_at"])
        units = {u: s for u, s in spend[(moment.replace(minute=0, second=0, microsecond=0),
                                         item["team"], item["workflow"])].items() if s > 0}
        amount = _atto(Decimal(item["amount"]))
        if not units:  # nothing to share it with: left unallocated, never lost
            assert got[item["event_id"]] == {"": Decimal(item["amount"])}
            continue
        total = sum(units.values())
        want = {u: amount * s // total for u, s in units.items()}
        largest = min(units, key=lambda u: (-units[u], u))
        want[largest] += amount - sum(want.values())
        assert {u: _atto(a) for u, a in got[item["event_id"]].items()} == want, item
    assert any(len(v) > 2 for v in got.values())


def _by_workflow(value_db: ValueDb, sql: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["team"], r["workflow"]): r for r in value_db.rows(sql)}


def test_quality_and_integrity_per_workflow_equal_the_attributions(value_db: ValueDb) -> None:
    units = _by_workflow(value_db, f"""
        SELECT team, workflow, countIf(outcome_status != '') AS decided,
               sum(accepted) AS accepted, sum(quality_failed) AS quality_failed,
               sum(latency_failed) AS latency_failed, sum(integrity_failed) AS integrity,
               sum(coalesce(value_at_risk, 0)) AS at_risk
        FROM {DB}.attributions_latest FINAL GROUP BY team, workflow""")
    view = _by_workflow(value_db, f"""
        SELECT team, workflow, sum(decided_units) AS decided, sum(accepted_units) AS accepted,
               sum(quality_failed_units) AS quality_failed,
               sum(latency_failed_units) AS latency_failed,
               sum(integrity_failed_units) AS integrity, sum(value_at_risk) AS at_risk,
               sum(status_failed_units) AS status_failed
        FROM {DB}.v_quality_by_workflow GROUP BY team, workflow""")
    assert set(view) == {*WORKFLOWS, ("eng", "lab")}
    for key, want in units.items():
        got = view[key]
        for name in ("decided", "accepted", "quality_failed", "latency_failed", "integrity",
                     "at_risk"):
            assert got[name] == want[name], (key, name)
        assert got["status_failed"] == want["decided"] - want["accepted"] \
            - want["quality_failed"] - want["latency_failed"] - want["integrity"]
    triage, research = view[("support", "triage")], view[("sales", "research")]
    assert triage["quality_failed"] > 0 and triage["latency_failed"] == 0
    assert research["latency_failed"] > 0 and research["quality_failed"] == 0
    assert triage["integrity"] > 0 and triage["at_risk"] > 0
    for r in value_db.rows(f"SELECT * FROM {DB}.v_quality_by_workflow"):
        if r["decided_units"]:
            assert abs(r["integrity_failure_rate"]
                       - r["integrity_failed_units"] / r["decided_units"]) < 1e-9


def test_yield_uses_accepted_value_and_the_fully_loaded_cost(value_db: ValueDb) -> None:
    units = _by_workflow(value_db, f"""
        SELECT team, workflow, sum(coalesce(accepted_value, 0)) AS value,
               sum(model_cost) AS spend, sum(human_cost) AS human,
               sum(other_cost) AS other, sum(accepted) AS accepted
        FROM {DB}.attributions_latest FINAL GROUP BY team, workflow""")
    shared = _by_workflow(value_db, f"""
        SELECT team, workflow, sum(amount) AS amount FROM {DB}.cost_items FINAL
        WHERE shared = 1 GROUP BY team, workflow""")
    view = _by_workflow(value_db, f"""
        SELECT team, workflow, sum(value) AS value, sum(outcome_value) AS outcome_value,
               sum(spend) AS spend, sum(human_cost) AS human, sum(other_cost) AS other,
               sum(shared_cost) AS shared, sum(fully_loaded_cost) AS loaded,
               sum(value_at_risk) AS at_risk, sum(accepted_outcomes) AS accepted
        FROM {DB}.v_yield_by_workflow GROUP BY team, workflow""")
    for key, want in units.items():
        got = view[key]
        assert (got["value"], got["spend"], got["human"], got["other"], got["accepted"]) == \
            (want["value"], want["spend"], want["human"], want["other"], want["accepted"]), key
        assert got["shared"] == shared.get(key, {"amount": 0})["amount"]
        assert got["loaded"] == got["spend"] + got["human"] + got["other"] + got["shared"]
        if key in WORKFLOWS:
            assert got["outcome_value"] > got["value"]  # overturned units' value is out
    for r in value_db.rows(f"SELECT * FROM {DB}.v_yield_by_workflow"):
        assert r["net_value"] == r["value"] - r["fully_loaded_cost"]
        if r["fully_loaded_cost"]:
            loaded = float(r["fully_loaded_cost"])
            assert abs(r["yield_ratio"] - float(r["value"]) / loaded) < 1e-9
            assert abs(r["error_adjusted_yield"]
                       - float(r["value"] - r["value_at_risk"]) / loaded) < 1e-9


def test_cost_per_accepted_outcome_counts_only_successes(value_db: ValueDb) -> None:
    rows = value_db.rows(f"SELECT * FROM {DB}.v_cost_per_accepted_outcome")
    assert sum(r["accepted_outcomes"] for r in rows) == value_db.db.scalar(
        f"SELECT sum(accepted) FROM {DB}.attributions_latest FINAL")
    for r in rows:
        assert r["fully_loaded_cost"] == r["spend"] + r["human_cost"] + r["other_cost"] \
            + r["shared_cost"]
        if r["accepted_outcomes"]:
            assert r["cost_per_accepted_outcome"] == \
                r["fully_loaded_cost"] / r["accepted_outcomes"] or abs(
                    r["cost_per_accepted_outcome"]
                    - r["fully_loaded_cost"] / r["accepted_outcomes"]) < Decimal("1e-12")
        else:
            assert r["cost_per_accepted_outcome"] is None


# -- the value view (issue 17) -----------------------------------------------------------

def exact_quantile(values: list[Any], level: float) -> Any:
    """ClickHouse's quantileExact: the element at floor(level * n) of the sorted values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(level * len(ordered)))]


def _day(moment: datetime) -> Any:
    return moment.astimezone(UTC).date()


def test_cycle_time_is_first_call_to_deciding_outcome(value_db: ValueDb) -> None:
    want: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for a in value_db.units.values():
        if a.decided_at is not None and a.first_call_at is not None:
            assert a.cycle_seconds == Decimal(
                int((a.decided_at - a.first_call_at).total_seconds() * 1000)).scaleb(-3)
            want[(_day(a.decided_at), a.team, a.workflow)].append(float(a.cycle_seconds))
    rows = value_db.rows(f"SELECT * FROM {DB}.v_cycle_time")
    assert {(r["day"], r["team"], r["workflow"]) for r in rows} == set(want)
    for r in rows:
        values = want[(r["day"], r["team"], r["workflow"])]
        assert r["units"] == len(values)
        assert r["p50_seconds"] == exact_quantile(values, 0.5)
        assert r["p95_seconds"] == exact_quantile(values, 0.95)
        assert r["max_seconds"] == max(values)
    assert any(r["p95_seconds"] > r["p50_seconds"] for r in rows)


def test_the_funnel_counts_each_unit_at_its_furthest_stage(value_db: ValueDb) -> None:
    want: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for a in value_db.units.values():
        cell = want[(_day(a.first_event_at), a.team, a.workflow)]
        reached = (STAGES.index(a.stage) + 1 if a.stage else 1) if a.accepted else 0
        cell["calls"] += a.calls
        cell["work_units"] += 1
        cell["cost"] += a.fully_loaded_cost
        for n, name in enumerate(STAGES, 1):
            if reached >= n:
                cell[name] += 1
                cell[f"cost:{name}"] += a.fully_loaded_cost
    rows = value_db.rows(f"SELECT * FROM {DB}.v_conversion_funnel")
    assert {(r["day"], r["team"], r["workflow"]) for r in rows} == set(want)
    for r in rows:
        cell = want[(r["day"], r["team"], r["workflow"])]
        for name in ("calls", "work_units", *STAGES):
            assert r[name] == cell[name], name
        for name, rate, before in (("output_accepted", "accepted_rate", "work_units"),
                                   ("action_taken", "action_rate", "output_accepted"),
                                   ("outcome_realised", "realised_rate", "action_taken"),
                                   ("value_captured", "captured_rate", "outcome_realised")):
            if cell[before]:
                assert abs(r[rate] - cell[name] / cell[before]) < 1e-12
                if cell[name]:
                    assert abs(r[f"cost_per_{name}"] - cell[f"cost:{name}"] / cell[name]) \
                        < Decimal("1e-12")
            else:
                assert r[rate] is None
    totals = {name: sum(r[name] for r in rows) for name in STAGES}
    assert totals["output_accepted"] > totals["action_taken"] > totals["value_captured"] > 0


def test_the_spread_of_cost_per_unit(value_db: ValueDb) -> None:
    want: dict[tuple[Any, ...], list[Decimal]] = defaultdict(list)
    for a in value_db.units.values():
        if a.fully_loaded_cost > 0:
            want[(_day(a.first_event_at), a.team, a.workflow)].append(a.fully_loaded_cost)
    rows = value_db.rows(f"SELECT * FROM {DB}.v_unit_cost_spread")
    assert {(r["day"], r["team"], r["workflow"]) for r in rows} == set(want)
    for r in rows:
        costs = want[(r["day"], r["team"], r["workflow"])]
        assert r["units"] == len(costs)
        for level, name in ((0.5, "p50_cost"), (0.9, "p90_cost"), (0.99, "p99_cost")):
            assert r[name] == exact_quantile(costs, level), name
        assert r["max_cost"] == max(costs)
        assert abs(r["max_over_p50"] - float(max(costs) / r["p50_cost"])) < 1e-9


def ntile(n: int, buckets: int = 10) -> list[int]:
    """SQL's ntile: the first n % buckets buckets get one row more."""
    size, extra = divmod(n, buckets)
    found: list[int] = []
    for b in range(1, buckets + 1):
        found += [b] * (size + (1 if b <= extra else 0))
    return found


def test_acceptance_by_decile_of_cost(value_db: ValueDb) -> None:
    groups: dict[tuple[Any, ...], list[WorkUnitAttribution]] = defaultdict(list)
    for a in value_db.units.values():
        if a.decided_at is not None:
            week = _day(a.decided_at) - timedelta(days=_day(a.decided_at).weekday())
            groups[(week, a.team, a.workflow)].append(a)
    # Ties in cost are broken by ClickHouse's cityHash64 of the unit id (migration 0017).
    ids = ", ".join(f"'{a}'" for a in value_db.units)
    hashes = {r["id"]: r["h"] for r in value_db.rows(
        f"SELECT arrayJoin([{ids}]) AS id, cityHash64(id) AS h")}
    want: dict[tuple[Any, ...], list[Any]] = {}
    for key, units in groups.items():
        ordered = sorted(units, key=lambda a: (
            a.fully_loaded_cost, hashes[a.work_unit_id], a.accepted))
        for a, decile in zip(ordered, ntile(len(ordered)), strict=True):
            cell = want.setdefault((*key, decile), [0, 0, Decimal(0)])
            cell[0] += 1
            cell[1] += int(a.accepted)
            cell[2] += a.fully_loaded_cost
    rows = value_db.rows(f"SELECT * FROM {DB}.v_acceptance_by_cost_decile")
    got = {(r["week"], r["team"], r["workflow"], r["decile"]):
           [r["units"], r["accepted_units"], r["mean_cost"] * r["units"]] for r in rows}
    assert set(got) == set(want)
    for key, (units, accepted, cost) in want.items():
        assert got[key][:2] == [units, accepted], key
        assert abs(got[key][2] - cost) < Decimal("1e-12"), key


def test_the_business_case_against_what_came(value_db: ValueDb) -> None:
    daily = {(r["day"], r["team"], r["workflow"]): r for r in value_db.rows(
        f"SELECT * FROM {DB}.v_cost_per_accepted_outcome_daily")}
    minutes: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    for e in value_db.events:
        if kind_of(e) == "outcomes":
            minutes[(_day(datetime.fromisoformat(e["occurred_at"])), e["team"],
                     e["workflow"])] += Decimal(e.get("human_review_minutes", "0"))
    rules = {(r.team, r.workflow): r for r in RULES}
    rows = value_db.rows(f"SELECT * FROM {DB}.v_business_case")
    assert {(r["day"], r["team"], r["workflow"]) for r in rows} == set(daily)
    for r in rows:
        key = (r["day"], r["team"], r["workflow"])
        day, rule = daily[key], rules.get(key[1:])
        accepted, loaded = day["accepted_outcomes"], day["fully_loaded_cost"]
        assert (r["accepted_units"], r["fully_loaded_cost"], r["value_captured"]) == \
            (accepted, loaded, day["accepted_value"])
        assert r["review_minutes"] == minutes.get(key, 0)
        if rule is None:  # a workflow without a business case: the case's columns empty
            assert r["owner"] in ("", None) and r["baseline_cost"] is None
            continue
        assert r["owner"] == rule.owner
        unit_cost = rule.baseline_cost_per_unit if rule.baseline_cost_per_unit is not None \
            else rule.baseline_minutes_per_unit / 60 * rule.baseline_rate_per_hour
        assert r["baseline_cost"] == unit_cost * accepted
        if loaded:
            assert abs(r["roi_against_baseline"]
                       - float((unit_cost * accepted - loaded) / loaded)) < 1e-9
        assert r["time_saved_minutes"] == rule.baseline_minutes_per_unit * accepted \
            - minutes.get(key, 0)
        if rule.expected_value_per_unit is not None:
            assert r["value_against_case"] == day["accepted_value"] \
                - rule.expected_value_per_unit * accepted
        if accepted:
            assert r["cost_against_target"] == \
                loaded / accepted - rule.target_cost_per_accepted_outcome or abs(
                    r["cost_against_target"]
                    - (loaded / accepted - rule.target_cost_per_accepted_outcome)) \
                < Decimal("1e-12")
    assert any(r["time_saved_minutes_per_mtok"] for r in rows)


def test_the_portfolio_recommends_an_action_with_its_reason(value_db: ValueDb) -> None:
    rows = {(r["team"], r["workflow"]): r for r in value_db.rows(
        f"SELECT * FROM {DB}.v_portfolio")}
    assert set(rows) == {*WORKFLOWS, ("eng", "lab")}
    lab = rows[("eng", "lab")]
    assert lab["action"] == "retire" and "no accepted outcome" in lab["reason"]
    for key, r in rows.items():
        # The rule, evaluated here on the view's own figures.
        target = r["target_cost_per_accepted_outcome"]
        cpo, yld = r["cost_per_accepted_outcome"], r["yield_ratio"]
        confidence, coverage = r["evidence_confidence"], r["attribution_coverage"]
        if r["fully_loaded_cost"] > 0 and r["accepted_units"] == 0:
            want = "retire"
        elif (coverage is not None and coverage < 0.5) or (
                confidence is not None and confidence < 0.5):
            want = "intervene"
        elif (yld is not None and yld < 1) or (target is not None and cpo > target):
            want = "optimise"
        elif yld is not None and yld > 1 and (target is None or cpo <= target) and (
                confidence is None or confidence >= 0.7):
            want = "expand"
        else:
            want = "maintain"
        assert r["action"] == want, key
        assert r["reason"]
    # Human review makes both cost more than they bring (and far above triage's target).
    triage = rows[("support", "triage")]
    assert triage["action"] == "optimise" and "of the fully loaded cost" in triage["reason"]


def test_the_portfolios_evidence_confidence_is_the_mean_of_its_decisions(
        value_db: ValueDb) -> None:
    """The portfolio reads its evidence confidence from the window rows, not from the
    attributions: the mean of the confidence given by the deciding outcomes of the units
    decided in its 30 days, per workflow; a workflow with none has none (NULL, unknown)."""
    given: dict[tuple[str, str], list[float]] = {}
    for unit in value_db.units.values():
        if unit.decided_at is not None and unit.evidence_confidence is not None:
            given.setdefault((unit.team, unit.workflow), []).append(unit.evidence_confidence)
    assert given and len({x for xs in given.values() for x in xs}) > 1
    rows = {(r["team"], r["workflow"]): r["evidence_confidence"] for r in value_db.rows(
        f"SELECT team, workflow, evidence_confidence FROM {DB}.v_portfolio")}
    for key, confidence in rows.items():
        if key in given:
            assert confidence == pytest.approx(sum(given[key]) / len(given[key]), abs=1e-9)
        else:
            assert confidence is None, key
    # The same mean as the attributions' (the exact view analysts would write).
    exact = {(r["team"], r["workflow"]): r["mean"] for r in value_db.rows(
        f"SELECT team, workflow, avg(evidence_confidence) AS mean "
        f"FROM {DB}.attributions_latest FINAL WHERE decided_at IS NOT NULL "
        f"AND evidence_confidence IS NOT NULL GROUP BY team, workflow")}
    assert exact.keys() == given.keys()
    for key, mean in exact.items():
        assert rows[key] == pytest.approx(mean, abs=1e-6)
