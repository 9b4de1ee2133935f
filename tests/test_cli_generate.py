"""``tokenyield generate`` publishes what it says, keyed so the join can work."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from schemas.kafka_options import KafkaConnection
from schemas.partitioner import partition_for
from streams.kafka.tansu_broker import EmbeddedBroker
from streams.kafka.topics import Topics, ensure_topics
from tests.conftest import ROOT

pytestmark = [pytest.mark.broker]


async def read_all(bootstrap: str, topic: str) -> list[tuple[int, bytes, list[dict]]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: list[tuple[int, bytes, list[dict]]] = []
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=2000)
            if not batches:
                return found
            for records in batches.values():
                for r in records:
                    value = orjson.loads(r.value)
                    events = value if isinstance(value, list) else value.get("events", [value])
                    found.append((r.partition, r.key, events))
    finally:
        await consumer.stop()


def test_generate_publishes_every_event_to_its_units_partition(
        broker: EmbeddedBroker, prefix: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENYIELD_")}
    env.update({"TOKENYIELD_KAFKA_BOOTSTRAP": broker.bootstrap,
                "TOKENYIELD_TOPIC_PREFIX": prefix, "TOKENYIELD_PARTITIONS": "4"})
    asyncio.run(ensure_topics(KafkaConnection(bootstrap=broker.bootstrap), Topics(prefix, 4)))
    done = subprocess.run([sys.executable, "-m", "streams.cli", "generate", "--units", "120",
                           "--quiet", "--rate", "5000"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    published = int(re.search(r"published ([\d,]+) events", done.stdout)
                    .group(1).replace(",", ""))  # type: ignore[union-attr]
    calls = asyncio.run(read_all(broker.bootstrap, f"{prefix}calls"))
    outcomes = asyncio.run(read_all(broker.bootstrap, f"{prefix}outcomes"))
    events = [(p, e) for p, _, batch in calls + outcomes for e in batch]
    assert len(events) == published > 120
    units = {e["work_unit_id"] for _, e in events}
    assert len(units) >= 120
    for partition, event in events:
        assert partition == partition_for(event["work_unit_id"], 4)
    assert any("model" in e for _, e in events) and any("status" in e for _, e in events)
