"""End to end on the real embedded broker: a worker process, a scripted stream with a
ground truth worked out by hand, and the exact rows it must produce in ClickHouse."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from schemas.kafka_publisher import Publisher
from schemas.partitioner import partition_for
from schemas.pricing import PriceEntry
from streams.feeds.price_feed import encode_price
from tests.conftest import ROOT, WorkerHandle
from tests.kafka_reading import read_until

pytestmark = [pytest.mark.broker, pytest.mark.clickhouse]

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
GPT4O = Decimal("0.0045")  # 1000 input x $2.50/M + 200 output x $10/M
MINI = Decimal("0.00027")  # 1000 input x $0.15/M + 200 output x $0.60/M


def t(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat()


def call(event_id: str, unit: str, seconds: float, **fields: Any) -> dict[str, Any]:
    event = {"event_id": event_id, "work_unit_id": unit, "occurred_at": t(seconds),
             "provider": "openai", "model": "gpt-4o", "input_tokens": 1000,
             "output_tokens": 200, "team": "support", "workflow": "triage",
             "task_type": "classify"}
    event.update(fields)
    return event


def outcome(event_id: str, unit: str, seconds: float, **fields: Any) -> dict[str, Any]:
    event = {"event_id": event_id, "work_unit_id": unit, "occurred_at": t(seconds),
             "team": "support", "workflow": "triage", "status": "accepted"}
    event.update(fields)
    return event


async def produce(bootstrap: str, topic: str, value: bytes, partition: int | None = None,
                  key: bytes | None = None) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        metadata = await producer.send_and_wait(topic, value, key=key, partition=partition)
        return int(metadata.partition)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, at_least: int,
                     timeout: float = 30.0) -> list[dict[str, Any]]:
    """The JSON items of ``topic`` (each message an array), at least ``at_least``."""
    found: list[dict[str, Any]] = []

    def enough(record: Any) -> bool:
        if record.value:
            found.extend(orjson.loads(record.value))
        return len(found) >= at_least

    await read_until(bootstrap, topic, enough, timeout)
    return found


def test_a_scripted_stream_lands_exactly(make_worker: Any, prefix: str) -> None:
    worker: WorkerHandle = make_worker(TOKENYIELD_DEADLINE_SECONDS="600",
                                       TOKENYIELD_ALLOWED_LATENESS_SECONDS="120",
                                       TOKENYIELD_RETENTION_SECONDS="3600",
                                       TOKENYIELD_INPUT_IDLE_SECONDS="2",
                                       TOKENYIELD_ROCKSDB_WRITE_BUFFER_MB="8",
                                       TOKENYIELD_ROCKSDB_BLOCK_CACHE_MB="4").start()
    bootstrap = worker.env["TOKENYIELD_KAFKA_BOOTSTRAP"]
    db = "tokenyield"

    async def scenario() -> None:
        async with Publisher(bootstrap, topic_prefix=prefix, linger_ms=5) as publisher:
            # U1: a retry, then accepted with 2 minutes of review at the default $60/h.
            # U2: the outcome arrives before its calls. U3: escalated, then resolved.
            # U4: spend and no outcome (its deadline passes). U5: only a good neighbour
            # of bad events. Duplicates of U1's events are sent again.
            # Every story event is within the allowed lateness (120 s) of every other:
            # the two topics are read in no particular interleaving, so an event much older
            # than one already read from the other topic would rightly be late.
            script = [
                outcome("u2-o", "U2", 50, value="3", currency="USD"),
                call("u1-c1", "U1", 0), call("u1-c2", "U1", 5, attempt=2),
                call("u2-c1", "U2", 40, model="gpt-4o-mini"),
                call("u2-c2", "U2", 45, model="gpt-4o-mini"),
                outcome("u1-o", "U1", 30, value="5", currency="USD", human_review_minutes="2"),
                call("u3-c1", "U3", 60), call("u4-c1", "U4", 70), call("u4-c2", "U4", 75),
                outcome("u3-o1", "U3", 65, status="escalated", is_final=False),
                outcome("u3-o2", "U3", 85, status="resolved", value="7", currency="USD"),
                call("u1-c1", "U1", 0), outcome("u1-o", "U1", 30, value="5",
                                                currency="USD", human_review_minutes="2"),
            ]
            for event in script:
                await (publisher.call(**event) if "model" in event
                       else publisher.outcome(**event))
        calls_topic = f"{prefix}calls"
        mixed = orjson.dumps([call("u5-c1", "U5", 90), call("bad-1", "U5", 91,
                                                             input_tokens=-5), "not an event"])
        await produce(bootstrap, calls_topic, mixed,
                      partition=partition_for("U5", 4))
        await produce(bootstrap, calls_topic, b'{"event_id": "broken', partition=0)
        await produce(bootstrap, f"{prefix}outcomes", b"\xff\xfe not utf-8", partition=1)
        # A publisher ignoring murmur2: the worker forwards the event to U7's partition.
        wrong = (partition_for("U7", 4) + 1) % 4
        await produce(bootstrap, calls_topic, orjson.dumps(call("u7-c1", "U7", 92)),
                      partition=wrong)
        # A model with no price yet, then its price arrives live on the prices topic: the
        # call applied without a price is priced then (a correction), the next one on
        # arrival.
        await produce(bootstrap, calls_topic, orjson.dumps(
            call("u8-c1", "U8", 93, provider="acme", model="m1")),
            partition=partition_for("U8", 4))
        await asyncio.to_thread(worker.wait_for, f"SELECT count() FROM {db}.model_calls "
                                "WHERE event_id = 'u8-c1'", 1)
        key, value = encode_price(PriceEntry(provider="acme", model="m1",
                                             input_per_mtok=Decimal(1),
                                             output_per_mtok=Decimal(1)))
        await produce(bootstrap, f"{prefix}prices", value, key=key, partition=0)
        await asyncio.to_thread(worker.wait_for, "SELECT 1", 1)  # let the price feed poll
        await asyncio.sleep(2)
        await produce(bootstrap, calls_topic, orjson.dumps(
            call("u8-c2", "U8", 94, provider="acme", model="m1")),
            partition=partition_for("U8", 4))
        # Move U4's partition clock past its deadline (600 s + 120 s lateness) ...
        p4 = partition_for("U4", 4)
        clock_unit = next(f"K{i}" for i in range(200) if partition_for(f"K{i}", 4) == p4)
        await produce(bootstrap, calls_topic, orjson.dumps(call("k-c1", clock_unit, 1500)),
                      partition=p4)
        # ... once the outcomes topic, silent since the story, stops holding the clock
        # (TOKENYIELD_INPUT_IDLE_SECONDS); after that, an event from the start of the
        # story is late: applied all the same, and audited with its lateness.
        late_unit = next(f"L{i}" for i in range(200) if partition_for(f"L{i}", 4) == p4)
        await asyncio.sleep(4)
        await produce(bootstrap, calls_topic, orjson.dumps(call("late-1", late_unit, 5)),
                      partition=p4)

    asyncio.run(scenario())

    q = worker.scalar
    # Units with spend and no outcome expire where the clock moved past their deadline:
    # U4's partition (pushed by the K unit's call), with the late unit; the other
    # partitions stay pending.
    p4 = partition_for("U4", 4)
    late_unit = next(f"L{i}" for i in range(200) if partition_for(f"L{i}", 4) == p4)
    expired = {"U4", late_unit} | {u for u in ("U5", "U7", "U8") if partition_for(u, 4) == p4}
    # 13 distinct valid calls: U1 2, U2 2, U3 1, U4 2, U5 1, U7 1, U8 2, the clock unit 1,
    # the late unit 1.
    worker.wait_for(f"SELECT count() FROM {db}.model_calls FINAL", 13)
    worker.wait_for(f"SELECT count() FROM {db}.attributions_latest FINAL", 3 + len(expired))
    unattributed = {r[0] for r in worker.sql(
        f"SELECT work_unit_id FROM {db}.attributions_latest FINAL "
        f"WHERE state = 'unattributed'")}
    assert unattributed == expired
    worker.wait_for(f"SELECT count() FROM {db}.dead_letters FINAL", 4)
    worker.wait_for(f"SELECT count() FROM {db}.late_events FINAL", 1)

    rows = worker.sql(
        f"SELECT work_unit_id, state, calls, retries, outcomes, outcome_status, accepted, "
        f"model_cost, human_cost, fully_loaded_cost, value, revision "
        f"FROM {db}.attributions_latest FINAL ORDER BY work_unit_id")
    got = {r[0]: r[1:] for r in rows}
    # "revised" when the outcome was read before the calls: the label records the
    # arrival order, the figures and the revision do not depend on it.
    assert got["U1"][0] in ("attributed", "revised")
    assert got["U1"][1:6] == [2, 1, 1, "accepted", 1]
    assert Decimal(got["U1"][6]) == 2 * GPT4O
    assert Decimal(got["U1"][7]) == Decimal(2)
    assert Decimal(got["U1"][8]) == 2 * GPT4O + 2
    assert Decimal(got["U1"][9]) == Decimal(5)
    assert got["U1"][10] == 2 * (3 + 2)  # three distinct events, two priced calls; the
    # duplicates changed nothing
    assert got["U2"][1:6] == [2, 0, 1, "accepted", 1]
    assert Decimal(got["U2"][6]) == 2 * MINI
    assert got["U3"][3:6] == [2, "resolved", 1]
    assert Decimal(got["U3"][9]) == Decimal(7)
    assert got["U4"][0] == "unattributed"
    assert Decimal(got["U4"][6]) == 2 * GPT4O

    # U8's first call was applied before its model had a price: priced once the price
    # came (its row written again with the cost), the second call on arrival.
    worker.wait_for(f"SELECT countIf(cost IS NOT NULL) FROM {db}.model_calls FINAL "
                    f"WHERE work_unit_id = 'U8'", 2)
    costs = dict(worker.sql(f"SELECT event_id, cost FROM {db}.model_calls FINAL "
                            f"WHERE work_unit_id = 'U8'"))
    assert Decimal(costs["u8-c1"]) == Decimal(costs["u8-c2"]) == Decimal("0.0012")
    assert q(f"SELECT count() FROM {db}.model_calls FINAL WHERE work_unit_id = 'U7'") == 1

    dead = worker.sql(f"SELECT source_topic, kafka_partition, kafka_offset, item_index, "
                      f"error_kind, reason, raw FROM {db}.dead_letters FINAL "
                      f"ORDER BY source_topic, item_index")
    kinds = sorted((d[0].removeprefix(prefix), d[4], d[3]) for d in dead)
    assert kinds == sorted([("calls", "invalid_event", 1), ("calls", "invalid_event", 2),
                            ("calls", "malformed_json", None),
                            ("outcomes", "malformed_json", None)])
    negative = next(d for d in dead if d[3] == 1)
    assert "input_tokens" in negative[5]
    assert orjson.loads(base64.b64decode(negative[6]))["event_id"] == "bad-1"
    utf8 = next(d for d in dead if d[0].endswith("outcomes"))
    assert base64.b64decode(utf8[6]) == b"\xff\xfe not utf-8"
    assert utf8[1] == 1

    assert q(f"SELECT event_id FROM {db}.late_events FINAL") == "late-1"

    spend = 9 * GPT4O + 2 * MINI + 2 * Decimal("0.0012")
    worker.wait_for(f"SELECT sum(spend) FROM {db}.v_window_totals "
                    f"WHERE window_seconds = 3600 AND scope = 'total'", f"{spend:.18f}")
    totals = worker.sql(
        f"SELECT sum(calls), sum(spend), sum(outcomes), sum(decided_units), "
        f"sum(accepted_outcomes), sum(value), sum(unpriced_calls) FROM {db}.v_window_totals "
        f"WHERE window_seconds = 3600 AND scope = 'total'")[0]
    assert totals[0] == 13
    assert Decimal(totals[1]) == Decimal(q(f"SELECT sum(cost) FROM {db}.model_calls FINAL"))
    # 4 outcome events; 3 units decided (U3 by its final outcome), all 3 accepted.
    assert totals[2:5] == [4, 3, 3]
    assert Decimal(totals[5]) == Decimal(15)
    assert totals[6] == 0  # the unpriced call was priced: a correction took it back

    # The same records are on the Kafka topics for other consumers.
    dead_topic = asyncio.run(read_topic(worker.env["TOKENYIELD_KAFKA_BOOTSTRAP"],
                                        f"{prefix}dead-letter", 4))
    assert len(dead_topic) == 4
    attributions = asyncio.run(read_topic(worker.env["TOKENYIELD_KAFKA_BOOTSTRAP"],
                                          f"{prefix}attributions", 3 + len(expired)))
    assert {a["work_unit_id"] for a in attributions} == {"U1", "U2", "U3"} | expired

    # Observability: metrics and health answer, and count what happened.
    metrics = worker.metrics()
    assert f'tokenyield_events_rejected_total{{kind="malformed_json",topic="{prefix}calls"}}' \
        in metrics
    assert "tokenyield_attribution_latency_seconds_count" in metrics
    health = worker.health()
    assert health is not None and health["status"] == "ok" and health["partitions"]

    # Memory by holder, and the RocksDB options reached every table partition's database
    # (Faust's own defaults are three 64 MiB memtables per partition). The block cache's
    # size is not in RocksDB's OPTIONS file.
    memory = {holder: float(value) for holder, value in re.findall(
        r'^tokenyield_memory_bytes\{holder="([^"]+)"\} ([0-9.e+]+)$', metrics, re.MULTILINE)}
    assert memory["resident"] > 100 * 2**20
    assert 0 < memory["clickhouse"] < memory["resident"]
    assert 0 < memory["rocksdb_memtables"] <= 5 * 2 * 8 * 2**20  # 5 databases, 2 x 8 MiB
    assert "python_traced" not in memory  # only under tracemalloc
    options = sorted((worker.data_dir / "faust").rglob("OPTIONS-*"))
    assert {p.parent.name for p in options} == {"state-0.db", "state-1.db", "state-2.db",
                                                "state-3.db", "rollup-0.db"}
    for path in options:
        text = path.read_text()
        assert f"write_buffer_size={8 * 2**20}" in text, path
        assert "max_write_buffer_number=2" in text, path

    # `tokenyield sql` answers while the worker owns the embedded ClickHouse.
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "sql", "--format", "json",
         f"SELECT count() AS n FROM {db}.model_calls FINAL"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, **{k: v for k, v in worker.env.items()
                              if k.startswith("TOKENYIELD_")}})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"n": 13}]
