"""Fully loaded, quality-gated value through a real worker (issue 16, "done when").

A worker on the embedded broker with chdb, a workflow rule from settings and one set live
with ``tokenyield workflows set``, and events as any Kafka client sends them (raw JSON):
cost items joined to their units and a shared cost allocated exactly; a below-bar
outcome, a too-slow unit and an overturned verdict that change acceptance; a bad cost
item dead-lettered with its reason.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from schemas.events import CostItem, ModelCall
from schemas.pricing import PriceBook, price_call
from tests.conftest import ROOT, WorkerHandle

pytestmark = [pytest.mark.broker, pytest.mark.clickhouse]
DB = "tokenyield"
BOOK = PriceBook.load()


def events(hour: datetime) -> list[tuple[str, dict[str, Any]]]:
    """(topic suffix, event) in publication order, all in one UTC hour."""
    def at(minutes: float) -> str:
        return (hour + timedelta(minutes=minutes)).isoformat()

    def call(unit: str, n: int, minutes: float, team: str = "support",
             workflow: str = "triage", **extra: Any) -> tuple[str, dict[str, Any]]:
        return "calls", {"event_id": f"{unit}-c{n}", "work_unit_id": unit, "occurred_at":
                         at(minutes), "provider": "openai", "model": "gpt-4o", "team": team,
                         "workflow": workflow, "input_tokens": 1000 * (n + 1),
                         "output_tokens": 100 + n, "customer": "acme", **extra}

    def outcome(unit: str, minutes: float, team: str = "support", workflow: str = "triage",
                **extra: Any) -> tuple[str, dict[str, Any]]:
        return "outcomes", {"event_id": f"{unit}-o", "work_unit_id": unit, "occurred_at":
                            at(minutes), "team": team, "workflow": workflow,
                            "status": "accepted", **extra}

    return [
        call("slow", 9, 9.5, team="sales", workflow="research", attributes={"tier": "gold"}),
        # Cost items first: they join their unit whatever the order.
        ("costs", {"event_id": "good-k0", "work_unit_id": "good", "occurred_at": at(1),
                   "team": "support", "workflow": "triage", "kind": "tool_call",
                   "amount": "0.25", "currency": "USD", "description": "credit bureau"}),
        call("good", 0, 2), call("good", 1, 3),
        ("costs", {"event_id": "good-k1", "work_unit_id": "good", "occurred_at": at(3),
                   "team": "support", "workflow": "triage", "kind": "retrieval",
                   "quantity": "12", "unit_price": "0.0125", "currency": "USD"}),
        ("costs", {"event_id": "good-k1", "work_unit_id": "good", "occurred_at": at(3),
                   "team": "support", "workflow": "triage", "kind": "retrieval",
                   "quantity": "12", "unit_price": "0.0125", "currency": "USD"}),  # again
        outcome("good", 5, quality_score=0.9, value="10", currency="USD"),
        call("weak", 0, 4), outcome("weak", 6, quality_score=0.5, value="10", currency="USD"),
        call("audited", 0, 7), call("audited", 1, 8),
        outcome("audited", 9, quality_score=0.95, value="20", currency="USD"),
        call("slow", 0, 10, team="sales", workflow="research", latency_ms=9000),
        outcome("slow", 11, team="sales", workflow="research", status="resolved"),
        # A shared cost of support/triage in the same hour: no work unit.
        ("costs", {"event_id": "vector-db", "occurred_at": at(20), "team": "support",
                   "workflow": "triage", "kind": "infra", "amount": "3.00",
                   "currency": "USD"}),
        ("costs", {"event_id": "bad-k", "work_unit_id": "good", "occurred_at": at(21),
                   "team": "support", "workflow": "triage", "kind": "coffee",
                   "amount": "1", "currency": "USD"}),
        # The audit, long after the work: a late outcome like any other.
        ("outcomes", {"event_id": "audited-v", "work_unit_id": "audited",
                      "occurred_at": at(40), "team": "support", "workflow": "triage",
                      "verdict": "overturned", "value_at_risk": "4.5", "currency": "USD"}),
    ]


async def publish_raw(bootstrap: str, prefix: str,
                      published: list[tuple[str, dict[str, Any]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for topic, event in published:
            key = CostItem.model_validate(event).key if topic == "costs" and \
                event["kind"] != "coffee" else event["work_unit_id"]
            await producer.send(f"{prefix}{topic}", orjson.dumps(event), key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


def spend_of(published: list[tuple[str, dict[str, Any]]], unit: str) -> Decimal:
    total = Decimal(0)
    for topic, event in published:
        if topic == "calls" and event["work_unit_id"] == unit:
            cost = price_call(BOOK, ModelCall.model_validate(event)).cost
            assert cost is not None
            total += cost
    return total


def test_cost_items_bars_and_verdicts_through_a_worker(make_worker: Any, prefix: str) -> None:
    rule = '[{"team": "support", "workflow": "triage", "owner": "ana", ' \
           '"min_quality_score": 0.8}]'
    budget = '[{"dimension": "customer", "value": "acme", "period": "monthly", ' \
             '"amount": "0.001"}]'
    worker: WorkerHandle = make_worker(TOKENYIELD_WORKFLOWS=rule, TOKENYIELD_BUDGETS=budget,
                                       TOKENYIELD_DIMENSIONS='["tier"]').start()
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "workflows", "set", "--team", "sales",
         "--workflow", "research", "--owner", "raj", "--max-latency-ms", "5000"],
        env=worker.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    worker.wait_for(f"SELECT count() FROM {DB}.workflows FINAL", 2, 60)
    listed = subprocess.run([sys.executable, "-m", "streams.cli", "workflows", "list"],
                            env=worker.env, cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "triage" in listed.stdout and "research" in listed.stdout and "raj" in listed.stdout

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    published = events(hour)
    asyncio.run(publish_raw(worker.env["TOKENYIELD_KAFKA_BOOTSTRAP"], prefix, published))
    worker.wait_for(f"SELECT count() FROM {DB}.attributions_latest FINAL "
                    f"WHERE work_unit_id IN ('good', 'weak', 'audited', 'slow')", 4, 120)
    worker.wait_for(f"SELECT verdict FROM {DB}.attributions_latest FINAL "
                    f"WHERE work_unit_id = 'audited'", "overturned", 60)
    worker.wait_for(f"SELECT count() FROM {DB}.cost_items FINAL", 3, 60)

    rows = {r[0]: r[1:] for r in worker.sql(
        f"SELECT work_unit_id, toString(model_cost), toString(other_cost), "
        f"toString(fully_loaded_cost), accepted, quality_failed, latency_failed, "
        f"integrity_failed, toString(value_at_risk), toString(accepted_value), customer "
        f"FROM {DB}.attributions_latest FINAL")}
    assert "~" not in "".join(rows)  # the shared bucket is no unit
    good = rows["good"]
    assert Decimal(good[0]) == spend_of(published, "good")
    assert Decimal(good[1]) == Decimal("0.40")  # 0.25 + 12 x 0.0125, the resend once
    assert Decimal(good[2]) == Decimal(good[0]) + Decimal("0.40")
    assert good[3:7] == [1, 0, 0, 0] and Decimal(good[8]) == 10 and good[9] == "acme"
    assert rows["weak"][3:7] == [0, 1, 0, 0]  # quality 0.5 under the bar of 0.8
    assert Decimal(rows["weak"][8]) == 0
    assert rows["slow"][3:7] == [0, 0, 1, 0]  # 9 s against the live rule's 5 s
    audited = rows["audited"]
    assert audited[3:7] == [0, 0, 0, 1] and Decimal(audited[7]) == Decimal("4.5")
    assert Decimal(audited[8]) == 0

    # The shared 3.00 is allocated to support/triage's units of that hour by model spend,
    # exactly: the shares add up to the item, to the last atto.
    shares = {r[0]: Decimal(r[1]) for r in worker.sql(
        f"SELECT work_unit_id, toString(allocated) FROM {DB}.v_shared_cost_allocation "
        f"WHERE event_id = 'vector-db'")}
    assert set(shares) == {"good", "weak", "audited"}
    assert sum(shares.values()) == Decimal("3.00")
    spend = {u: spend_of(published, u) for u in shares}
    largest = min(spend, key=lambda u: (-spend[u], u))  # ties: the first id
    assert largest == "audited"  # as much as "good": the tie-break is exercised
    for unit, share in shares.items():
        exact = Decimal(3) * spend[unit] / sum(spend.values())
        assert abs(share - exact) < Decimal("1e-15"), unit  # floors, remainder to the largest
        if unit != largest:
            assert share <= exact

    # The windows count the failures apart, and cost items in their own window. Window
    # rows trail the attributions by a rollup checkpoint, and the units' changes may
    # reach it in more than one: wait for all four decisions and the overturned one.
    worker.wait_for(f"SELECT concat(toString(sum(decided_units)), '/', "
                    f"toString(sum(integrity_failed_units))) FROM {DB}.v_window_totals "
                    f"WHERE window_seconds = 3600 AND scope = 'total'", "4/1", 60)
    totals = worker.sql(
        f"SELECT team, sum(decided_units), sum(accepted_outcomes), "
        f"sum(quality_failed_units), sum(latency_failed_units), "
        f"toString(sum(other_cost)), toString(sum(shared_cost)), sum(cost_items), "
        f"toString(sum(accepted_value)) FROM {DB}.v_window_totals "
        f"WHERE window_seconds = 3600 AND scope = 'total' GROUP BY team ORDER BY team")
    assert totals[0][0] == "sales" and totals[0][1:5] == [1, 0, 0, 1]
    support = totals[1]
    assert support[1:5] == [3, 1, 1, 0]
    assert (Decimal(support[5]), Decimal(support[6]), support[7]) == \
        (Decimal("0.40"), Decimal("3.00"), 3)
    assert Decimal(support[8]) == 10

    # Per customer: every call names acme, so its rows carry all the spend; one tier.
    spend = sum(spend_of(published, u) for u in ("good", "weak", "audited", "slow"))
    worker.wait_for(f"SELECT sum(spend) = toDecimal128('{spend}', 18) FROM "
                    f"{DB}.v_dimension_hourly WHERE dimension = 'customer' AND value = 'acme'",
                    1, 60)
    acme = worker.sql(f"SELECT sum(calls), sum(accepted_outcomes), sum(decided_units), "
                      f"toString(sum(other_cost)) FROM {DB}.v_dimension_hourly "
                      f"WHERE dimension = 'customer' AND value = 'acme'")[0]
    assert acme[:3] == [7, 1, 4] and Decimal(acme[3]) == 0  # the items name no customer
    tiers = worker.sql(f"SELECT value, sum(calls) FROM {DB}.v_dimension_hourly "
                       f"WHERE dimension = 'tier' GROUP BY value")
    assert tiers == [["gold", 1]]
    # ... and its budget, spent many times over, fires for acme.
    worker.wait_for(f"SELECT count() > 0 FROM {DB}.alerts FINAL WHERE kind = 'budget_hard' "
                    f"AND subject['customer'] = 'acme'", 1, 60)
    burn = worker.sql(f"SELECT toString(spent), toString(amount) "
                      f"FROM {DB}.v_dimension_budget_burn WHERE value = 'acme'")
    assert burn and Decimal(burn[0][0]) == spend and Decimal(burn[0][1]) == Decimal("0.001")

    # The bad item is dead-lettered with its reason, source topic, partition and offset.
    worker.wait_for(f"SELECT count() FROM {DB}.dead_letters FINAL", 1, 60)
    reason, topic = worker.sql(f"SELECT reason, source_topic FROM {DB}.dead_letters FINAL")[0]
    assert "kind" in reason and topic == f"{prefix}costs"
