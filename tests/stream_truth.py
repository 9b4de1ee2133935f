"""A reproducible event stream and its ground truth, computed the simplest way.

The truth is deliberately independent of the engine: a few dictionaries and sums over
the distinct events, priced with the public pricing function.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from schemas.events import ACCEPTING_STATUSES, ModelCall
from schemas.kafka_publisher import Publisher
from schemas.pricing import PriceBook, price_call

BOOK = PriceBook.load()
MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5")]
TEAMS = [("support", "triage"), ("support", "reply"), ("sales", "research")]


@dataclass
class Truth:
    calls: int = 0
    outcomes: int = 0
    duplicates: int = 0
    spend: Decimal = Decimal(0)
    accepted: int = 0
    value: Decimal = Decimal(0)
    unit_cost: dict[str, Decimal] = field(default_factory=dict)
    unit_calls: dict[str, int] = field(default_factory=dict)
    unit_outcomes: dict[str, int] = field(default_factory=dict)
    unit_accepted: dict[str, bool] = field(default_factory=dict)
    hourly_spend: dict[tuple[datetime, str, str], Decimal] = field(default_factory=dict)


def stream(units: int, seed: int = 7, span_seconds: float = 120.0,
           duplicate_share: float = 0.03, outcome_share: float = 0.8,
           start: datetime | None = None) -> list[dict[str, Any]]:
    """Events of ``units`` work units, shuffled within ``span_seconds`` of event time
    (keep it under the allowed lateness), with some duplicates."""
    rng = random.Random(seed)
    origin = start or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    events: list[dict[str, Any]] = []
    for u in range(units):
        unit = f"u{seed}-{u}"
        team, workflow = rng.choice(TEAMS)
        base = rng.uniform(0, span_seconds * 0.8)
        for c in range(rng.randint(1, 6)):
            provider, model = rng.choice(MODELS)
            events.append({
                "event_id": f"{unit}-c{c}", "work_unit_id": unit,
                "occurred_at": (origin + timedelta(seconds=base + c)).isoformat(),
                "provider": provider, "model": model, "team": team, "workflow": workflow,
                "input_tokens": rng.randint(100, 4000), "output_tokens": rng.randint(10, 800),
                "attempt": 2 if rng.random() < 0.1 else 1})
        if rng.random() < outcome_share:
            status = rng.choice(["accepted", "accepted", "resolved", "rejected", "failed"])
            events.append({
                "event_id": f"{unit}-o", "work_unit_id": unit,
                "occurred_at": (origin + timedelta(seconds=base + 8)).isoformat(),
                "team": team, "workflow": workflow, "status": status,
                "value": str(rng.randint(1, 20)), "currency": "USD"})
    events += [dict(e) for e in rng.sample(events, int(len(events) * duplicate_share))]
    # Publication order: roughly chronological, shuffled locally (out of order).
    events.sort(key=lambda e: e["occurred_at"])
    for i in range(0, len(events), 50):
        window = events[i:i + 50]
        rng.shuffle(window)
        events[i:i + 50] = window
    return events


def truth(events: list[dict[str, Any]]) -> Truth:
    result = Truth()
    seen: set[tuple[str, str]] = set()
    for event in events:
        identity = (event["work_unit_id"], event["event_id"])
        if identity in seen:
            result.duplicates += 1
            continue
        seen.add(identity)
        unit = event["work_unit_id"]
        if "model" in event:
            call = ModelCall.model_validate(event)
            cost = price_call(BOOK, call).cost or Decimal(0)
            result.calls += 1
            result.spend += cost
            result.unit_cost[unit] = result.unit_cost.get(unit, Decimal(0)) + cost
            result.unit_calls[unit] = result.unit_calls.get(unit, 0) + 1
            hour = call.occurred_at.replace(minute=0, second=0, microsecond=0)
            key = (hour, call.team, call.workflow)
            result.hourly_spend[key] = result.hourly_spend.get(key, Decimal(0)) + cost
        else:
            result.outcomes += 1
            accepted = event["status"] in ACCEPTING_STATUSES
            result.accepted += accepted
            result.value += Decimal(event["value"])
            result.unit_outcomes[unit] = result.unit_outcomes.get(unit, 0) + 1
            result.unit_accepted[unit] = accepted
    return result


def by_partition(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        grouped["calls" if "model" in event else "outcomes"].append(event)
    return grouped


def publish_in_background(bootstrap: str, prefix: str, events: list[dict[str, Any]],
                          rate: float, request_timeout_ms: int = 30_000,
                          ) -> tuple[threading.Thread, dict[str, Any]]:
    """Publish ``events`` at ``rate`` per second from a thread; ``state`` shows progress."""
    state: dict[str, Any] = {"sent": 0, "error": None}

    async def main() -> None:
        async with Publisher(bootstrap, topic_prefix=prefix, linger_ms=20,
                             max_batch_events=200,
                             request_timeout_ms=request_timeout_ms) as publisher:
            started = time.monotonic()
            for i, event in enumerate(events):
                await (publisher.call(**event) if "model" in event
                       else publisher.outcome(**event))
                state["sent"] = i + 1
                ahead = (i + 1) / rate - (time.monotonic() - started)
                if ahead > 0.01:
                    await asyncio.sleep(ahead)

    def run() -> None:
        try:
            asyncio.run(main())
        except Exception as exc:  # surfaced by the test
            state["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, state
