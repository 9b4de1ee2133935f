"""Default settings, a plain Kafka client and ordinary disorder (issue 13, "done when").

240 work units over two hours of event time, published as raw JSON by a plain aiokafka
producer (no tokenyield publisher); a fifth of the events arrive out of order, some by
up to two hours of event time (a backfill, a buffering service, an hourly usage import),
and a tenth arrive twice. With the worker's default lateness, deadline, retention and
horizon, every unit's spend on the ``attributions`` topic and in ``attributions_latest``,
and every final window's totals, must be exact.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from schemas.events import ACCEPTING_STATUSES, ModelCall
from schemas.pricing import PriceBook, price_call
from tests.conftest import WorkerHandle
from tests.test_pipeline import read_topic

pytestmark = [pytest.mark.broker, pytest.mark.clickhouse]
DB = "tokenyield"
BOOK = PriceBook.load()
MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5")]
TEAMS = [("support", "triage"), ("support", "reply"), ("sales", "research")]


def disordered_stream(seed: int = 13) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    # Anchored at half past an hour: the stream then spans the same three hours of
    # event time whatever minute the test starts at. Anchored at "now", a start in
    # minutes 5 to 9 of an hour left only one of its three hours final, however long
    # the test waited (the test failed in CI that way).
    base = datetime.now(UTC).replace(minute=30, second=0, microsecond=0) - timedelta(hours=3)
    timed: list[tuple[datetime, dict[str, Any]]] = []
    for u in range(240):
        unit = f"d{u}"
        team, workflow = rng.choice(TEAMS)
        moment = base + timedelta(seconds=rng.uniform(0, 2 * 3600 - 600))
        for c in range(rng.randint(1, 5)):
            provider, model = rng.choice(MODELS)
            timed.append((moment, {
                "event_id": f"{unit}-c{c}", "work_unit_id": unit,
                "occurred_at": moment.isoformat(), "provider": provider, "model": model,
                "team": team, "workflow": workflow, "input_tokens": rng.randint(100, 5000),
                "output_tokens": rng.randint(10, 900)}))
            moment += timedelta(seconds=rng.randint(2, 90))
        moment += timedelta(seconds=rng.randint(5, 300))
        timed.append((moment, {
            "event_id": f"{unit}-o", "work_unit_id": unit, "occurred_at": moment.isoformat(),
            "team": team, "workflow": workflow,
            "status": rng.choice(["accepted", "accepted", "resolved", "rejected"]),
            "value": str(rng.randint(1, 30)), "currency": "USD"}))
    published = []
    for moment, event in timed:
        delay = timedelta(0)
        if rng.random() < 0.2:  # out of order: up to two hours of event time late
            delay = timedelta(seconds=rng.uniform(60, 2 * 3600))
        published.append((moment + delay, event))
    published.sort(key=lambda item: item[0])
    events = [e for _, e in published]
    for _ in range(len(events) // 10):  # a tenth arrive twice
        i = rng.randrange(len(events))
        events.insert(min(len(events), i + rng.randint(1, 200)), dict(events[i]))
    return events


async def publish_raw(bootstrap: str, prefix: str, events: list[dict[str, Any]]) -> None:
    """As any Kafka client would: one JSON event a message, keyed by its work unit."""
    # Order within a partition does not matter any more: a late event counts too.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for event in events:
            topic = f"{prefix}calls" if "model" in event else f"{prefix}outcomes"
            await producer.send(topic, orjson.dumps(event), key=event["work_unit_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


def test_default_settings_count_every_dollar_of_a_disordered_stream(
        make_worker: Any, prefix: str) -> None:
    events = disordered_stream()
    distinct = {("c" if "model" in e else "o", e["event_id"]): e for e in events}
    calls = [e for (kind, _), e in distinct.items() if kind == "c"]
    outcomes = [e for (kind, _), e in distinct.items() if kind == "o"]
    spend: dict[str, Decimal] = defaultdict(Decimal)
    hourly: dict[tuple[datetime, str, str], dict[str, Any]] = defaultdict(
        lambda: defaultdict(Decimal))
    for event in calls:
        cost = price_call(BOOK, ModelCall.model_validate(event)).cost
        assert cost is not None
        spend[event["work_unit_id"]] += cost
        at = datetime.fromisoformat(event["occurred_at"]).replace(minute=0, second=0, microsecond=0)
        hourly[(at, event["team"], event["workflow"])]["calls"] += 1
        hourly[(at, event["team"], event["workflow"])]["spend"] += cost
    for event in outcomes:
        at = datetime.fromisoformat(event["occurred_at"]).replace(minute=0, second=0, microsecond=0)
        figures = hourly[(at, event["team"], event["workflow"])]
        figures["outcomes"] += 1
        figures["accepted"] += event["status"] in ACCEPTING_STATUSES
        figures["value"] += Decimal(event["value"])

    worker: WorkerHandle = make_worker().start()  # the defaults: lateness 300 s, and so on
    bootstrap = worker.env["TOKENYIELD_KAFKA_BOOTSTRAP"]
    # The last sixth of the stream (the most delayed events) comes once windows they
    # belong to are final: it must reach them as corrections.
    cut = len(events) * 5 // 6
    asyncio.run(publish_raw(bootstrap, prefix, events[:cut]))
    assert asyncio.run(_sleep_until_final(worker, 1))
    asyncio.run(publish_raw(bootstrap, prefix, events[cut:]))
    worker.wait_for(f"SELECT count() FROM {DB}.model_calls FINAL", len(calls), 120)
    worker.wait_for(f"SELECT count() FROM {DB}.attributions_latest FINAL", 240, 60)

    late = worker.scalar(f"SELECT count() FROM {DB}.late_events FINAL")
    assert late > 100  # hours-late events: audited, and counted all the same
    assert worker.scalar(f"SELECT count() FROM {DB}.dead_letters FINAL") == 0

    rows = worker.sql(f"SELECT work_unit_id, model_cost, calls, outcomes "
                      f"FROM {DB}.attributions_latest FINAL")
    assert {r[0]: Decimal(r[1]) for r in rows} == spend
    per_unit_calls = defaultdict(int)
    for event in calls:
        per_unit_calls[event["work_unit_id"]] += 1
    assert {r[0]: (r[2], r[3]) for r in rows} == {u: (n, 1) for u, n in per_unit_calls.items()}

    # The attributions topic, latest revision per unit, says the same.
    published = asyncio.run(read_topic(worker.env["TOKENYIELD_KAFKA_BOOTSTRAP"],
                                       f"{prefix}attributions", 240))
    latest: dict[str, dict[str, Any]] = {}
    for attribution in published:
        unit = attribution["work_unit_id"]
        if unit not in latest or attribution["revision"] > latest[unit]["revision"]:
            latest[unit] = attribution
    assert {u: Decimal(a["model_cost"]) for u, a in latest.items()} == spend

    # Every final window: its row plus its corrections equal the truth. Windows become
    # final once the partitions' clocks (latest event time minus the lateness) pass them;
    # the window rows trail the attributions by a rollup checkpoint.
    worker.wait_for(f"SELECT sum(calls) FROM {DB}.v_window_totals "
                    f"WHERE window_seconds = 3600 AND scope = 'total'", len(calls), 60)
    query = (f"SELECT window_start, team, workflow, calls, spend, outcomes, "
             f"accepted_outcomes, value FROM {DB}.v_window_totals "
             f"WHERE window_seconds = 3600 AND scope = 'total' AND final = 1")
    deadline = asyncio.run(_sleep_until_final(worker, len({k[0] for k in hourly}) - 1))
    assert deadline
    final = worker.sql(query)
    assert len(final) >= len({k[1:] for k in hourly})  # every series has a final hour
    for start, team, workflow, n_calls, amount, n_outcomes, accepted, value in final:
        moment = datetime.fromisoformat(start).replace(tzinfo=UTC) if isinstance(start, str) \
            else start.replace(tzinfo=UTC)
        want = hourly[(moment, team, workflow)]
        assert (n_calls, Decimal(amount)) == (want["calls"], want["spend"]), (start, team)
        assert (n_outcomes, accepted, Decimal(value)) == \
            (want["outcomes"], want["accepted"], want["value"]), (start, team)
    corrections = worker.scalar(f"SELECT count() FROM {DB}.cost_per_outcome_windows FINAL "
                                f"WHERE correction != ''")
    assert corrections > 0  # late money reached final windows as corrections


async def _sleep_until_final(worker: WorkerHandle, hours: int, timeout: float = 90) -> bool:
    """Wait until at least ``hours`` distinct hours have a final total row."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        found = worker.scalar(f"SELECT uniqExact(window_start) FROM {DB}.v_window_totals "
                              f"WHERE window_seconds = 3600 AND scope = 'total' AND final = 1")
        if found >= hours:
            return True
        await asyncio.sleep(1)
    return False
