"""The value views of migration 0006 on generated traffic run through the engine (chdb).

Cost items (a unit's and shared ones), quality and latency bars, verdicts: each view's
figures are checked against the base tables read with FINAL, and the shared-cost
allocation against the rule of docs/SEMANTICS.md computed here in exact integers.
A database of its own beside the shared fixture's (one chdb path per process).
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from loadtest.engine_into_clickhouse import EngineIntoClickHouse
from schemas.partitioner import partition_for
from streams.clickhouse.client import migrate
from streams.core.engine_config import EngineConfig
from streams.core.workflows import WorkflowRule
from tests.clickhouse_fixtures import LoadedClickHouse, loaded_database
from tests.core_harness import key_of, kind_of

pytestmark = pytest.mark.clickhouse
DB = "tokenyield_value"
PARTITIONS = 4
ATTO = 10**18
WORKFLOWS = [("support", "triage"), ("sales", "research")]
RULES = (WorkflowRule(team="support", workflow="triage", owner="ana", min_quality_score=0.75),
         WorkflowRule(team="sales", workflow="research", owner="raj", max_latency_ms=8000))


@dataclass
class ValueDb:
    db: LoadedClickHouse
    events: list[dict[str, Any]]

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return self.db.rows(sql)


def generate(now: datetime, seed: int = 16) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = now - timedelta(hours=6)
    events: list[dict[str, Any]] = []
    for team, workflow in WORKFLOWS:
        for index in range(80):
            unit = f"{workflow}-{index:03d}"
            moment = start + timedelta(minutes=4 * index, seconds=rng.randint(0, 60))
            for n in range(1 + index % 3):
                events.append({
                    "event_id": f"{unit}-c{n}", "work_unit_id": unit,
                    "occurred_at": (moment + timedelta(seconds=20 * n)).isoformat(),
                    "provider": "openai", "model": rng.choice(["gpt-4o", "gpt-4o-mini"]),
                    "team": team, "workflow": workflow, "input_tokens": rng.randint(500, 5000),
                    "output_tokens": rng.randint(20, 800), "latency_ms": rng.randint(300, 9500),
                    "customer": f"c{index % 3}"})
            if index % 3 == 0:
                events.append({"event_id": f"{unit}-k0", "work_unit_id": unit,
                               "occurred_at": moment.isoformat(), "team": team,
                               "workflow": workflow, "kind": "tool_call",
                               "amount": str(Decimal(rng.randint(1, 900)) / 100),
                               "currency": "USD"})
            if index % 4 == 0:
                events.append({"event_id": f"{unit}-k1", "work_unit_id": unit,
                               "occurred_at": moment.isoformat(), "team": team,
                               "workflow": workflow, "kind": "retrieval",
                               "quantity": str(rng.randint(1, 30)), "unit_price": "0.0035",
                               "currency": "USD"})
            if index % 5 == 4:
                continue  # never decided
            status = "rejected" if index % 5 == 3 else "accepted"
            decided_at = moment + timedelta(minutes=2)
            outcome: dict[str, Any] = {
                "event_id": f"{unit}-o", "work_unit_id": unit,
                "occurred_at": decided_at.isoformat(), "team": team, "workflow": workflow,
                "status": status, "quality_score": round(rng.uniform(0.5, 1.0), 2),
                "human_review_minutes": str(rng.choice([0, 2, 5]))}
            if status == "accepted":
                outcome.update(value=str(rng.choice([3, 5, 12])), currency="USD")
            events.append(outcome)
            if index % 7 in (0, 1):
                verdict: dict[str, Any] = {
                    "event_id": f"{unit}-v", "work_unit_id": unit,
                    "occurred_at": (decided_at + timedelta(minutes=30)).isoformat(),
                    "team": team, "workflow": workflow,
                    "verdict": "overturned" if index % 7 == 0 else "upheld"}
                if index % 7 == 0:
                    verdict.update(value_at_risk="2.5", currency="USD")
                events.append(verdict)
        for hour in range(6):  # a shared cost an hour, and one in an hour without units
            events.append({"event_id": f"{workflow}-shared-{hour}",
                           "occurred_at": (start + timedelta(hours=hour, minutes=30)).isoformat(),
                           "team": team, "workflow": workflow, "kind": "infra",
                           "amount": str(Decimal(rng.randint(100, 999)) / 100),
                           "currency": "USD"})
        events.append({"event_id": f"{workflow}-shared-idle",
                       "occurred_at": (start - timedelta(hours=3)).isoformat(), "team": team,
                       "workflow": workflow, "kind": "seat", "amount": "7", "currency": "USD"})
    events.sort(key=lambda e: e["occurred_at"])
    return events


async def _pump(pipeline: EngineIntoClickHouse, events: list[dict[str, Any]]) -> None:
    for count, event in enumerate(events, 1):
        pipeline.apply(kind_of(event), partition_for(key_of(event), PARTITIONS),  # type: ignore[arg-type]
                       orjson.dumps(event))
        if count % 150 == 0:
            await pipeline.checkpoint()
    pipeline.run_clock_to_now()  # every undecided unit is past its deadline: unattributed
    await pipeline.checkpoint()


@pytest.fixture(scope="module")
def value_db() -> ValueDb:
    db = loaded_database()
    migrate(db.client, DB)
    now = datetime.now(UTC).replace(microsecond=0)
    events = generate(now)
    config = EngineConfig(partitions=PARTITIONS, deadline_seconds=600, retention_seconds=3600,
                          allowed_lateness_seconds=120, workflows=RULES)
    pipeline = EngineIntoClickHouse(db.client, DB, config, now, retry_max_seconds=1)
    try:
        asyncio.run(_pump(pipeline, events))
    finally:
        pipeline.close()
    return ValueDb(LoadedClickHouse(db.client, DB, now, now - timedelta(hours=6)), events)


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
    assert set(view) == set(WORKFLOWS)
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
        assert got["shared"] == shared[key]["amount"]
        assert got["loaded"] == got["spend"] + got["human"] + got["other"] + got["shared"]
        assert got["outcome_value"] > got["value"]  # overturned units' value does not count
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
