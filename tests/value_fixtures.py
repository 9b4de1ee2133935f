"""A database of value traffic run through the engine into chdb, for the value views,
the dashboards and the report: cost items (a unit's and shared), quality and latency
bars, verdicts, stages, customers, business cases, and replayed inserts. A database of
its own beside the shared fixture's (one chdb path per process)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from loadtest.engine_into_clickhouse import EngineIntoClickHouse
from schemas.outputs import WorkUnitAttribution
from schemas.partitioner import partition_for
from streams.clickhouse.client import migrate
from streams.core.engine_config import EngineConfig
from streams.core.records import Outputs
from streams.core.workflows import WorkflowRule
from tests.clickhouse_fixtures import LoadedClickHouse, loaded_database
from tests.core_harness import key_of, kind_of

DB = "tokenyield_value"
PARTITIONS = 4
ATTO = 10**18
WORKFLOWS = [("support", "triage"), ("sales", "research")]
RULES = (WorkflowRule(team="support", workflow="triage", owner="ana", min_quality_score=0.75,
                      baseline_minutes_per_unit=Decimal(12), baseline_rate_per_hour=Decimal(50),
                      target_cost_per_accepted_outcome=Decimal("0.02"),
                      expected_value_per_unit=Decimal(4)),
         WorkflowRule(team="sales", workflow="research", owner="raj", max_latency_ms=8000,
                      baseline_cost_per_unit=Decimal(3), baseline_minutes_per_unit=Decimal(20),
                      target_cost_per_accepted_outcome=Decimal(5)))
STAGES = ["output_accepted", "action_taken", "outcome_realised", "value_captured"]


@dataclass
class ValueDb:
    db: LoadedClickHouse
    events: list[dict[str, Any]]
    units: dict[str, WorkUnitAttribution]  # the latest revision of each, as emitted

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
            decided_at = moment + timedelta(minutes=rng.randint(1, 40))
            outcome: dict[str, Any] = {
                "event_id": f"{unit}-o", "work_unit_id": unit,
                "occurred_at": decided_at.isoformat(), "team": team, "workflow": workflow,
                "status": status, "quality_score": round(rng.uniform(0.5, 1.0), 2),
                "human_review_minutes": str(rng.choice([0, 2, 5]))}
            if index % 4:  # further down the chain (or, without a stage, by its status)
                outcome["stage"] = STAGES[index % 4]
            if index % 6 == 0:  # 0.55 to 0.95: the portfolio's mean of them is checked
                outcome["evidence_confidence"] = 0.55 + (index // 6 % 5) / 10
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
    for index in range(12):  # a workflow that spends and never succeeds: retire it
        unit = f"lab-{index:03d}"
        moment = start + timedelta(minutes=20 * index)
        events.append({"event_id": f"{unit}-c0", "work_unit_id": unit,
                       "occurred_at": moment.isoformat(), "provider": "openai",
                       "model": "gpt-4o", "team": "eng", "workflow": "lab",
                       "input_tokens": 4000, "output_tokens": 300})
        events.append({"event_id": f"{unit}-o", "work_unit_id": unit,
                       "occurred_at": (moment + timedelta(minutes=3)).isoformat(),
                       "team": "eng", "workflow": "lab", "status": "rejected"})
    events.sort(key=lambda e: e["occurred_at"])
    return events


async def _pump(pipeline: EngineIntoClickHouse, events: list[dict[str, Any]],
                now: datetime) -> dict[str, WorkUnitAttribution]:
    units: dict[str, WorkUnitAttribution] = {}
    batches: list[Outputs] = []

    def keep(written: list[Outputs]) -> None:
        for batch in written:
            batches.append(batch)
            for a in batch.attributions:
                if a.work_unit_id not in units or a.revision > units[a.work_unit_id].revision:
                    units[a.work_unit_id] = a

    workflows = Outputs(workflows=[(rule, now, 0) for rule in RULES])
    workflows.cover("workflows", 0, 0)
    await pipeline.sink.write(workflows)
    for count, event in enumerate(events, 1):
        pipeline.apply(kind_of(event), partition_for(key_of(event), PARTITIONS),  # type: ignore[arg-type]
                       orjson.dumps(event))
        if count % 150 == 0:
            keep(await pipeline.checkpoint())
    pipeline.run_clock_to_now()  # every undecided unit is past its deadline: unattributed
    keep(await pipeline.checkpoint())
    # A crash after an insert, before the commit: batches come again in another shape
    # (another dedup token). FINAL and the views must not see the difference.
    for i, batch in enumerate(batches[:4]):
        again = Outputs(attributions=batch.attributions[::2], outcomes=batch.outcomes[::2],
                        cost_items=batch.cost_items[::2])
        again.cover(f"replay-{i}", 0, 1)
        await pipeline.sink.write(again)
    return units


_BUILT: dict[str, ValueDb] = {}


@pytest.fixture(scope="session")
def value_db() -> ValueDb:
    if "db" not in _BUILT:
        _BUILT["db"] = _build()
    return _BUILT["db"]


def _build() -> ValueDb:
    db = loaded_database()
    migrate(db.client, DB)
    now = datetime.now(UTC).replace(microsecond=0)
    events = generate(now)
    config = EngineConfig(partitions=PARTITIONS, deadline_seconds=600, retention_seconds=3600,
                          allowed_lateness_seconds=120, workflows=RULES)
    pipeline = EngineIntoClickHouse(db.client, DB, config, now, retry_max_seconds=1)
    try:
        units = asyncio.run(_pump(pipeline, events, now))
    finally:
        pipeline.close()
    return ValueDb(LoadedClickHouse(db.client, DB, now, now - timedelta(hours=6)), events,
                   units)


