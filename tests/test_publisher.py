"""The Python publisher against the real embedded broker."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from schemas.codec import call_codec, outcome_codec
from schemas.errors import PublishError
from schemas.kafka_options import KafkaConnection
from schemas.kafka_publisher import Publisher, SyncPublisher
from schemas.partitioner import partition_for
from streams.kafka.tansu_broker import EmbeddedBroker
from streams.kafka.topics import Topics, ensure_topics
from streams.traffic.generator import run_benchmark
from streams.traffic.scenarios import Scenario
from tests.kafka_reading import read_until

pytestmark = pytest.mark.broker


async def read_all(bootstrap: str, topic: str, expected_events: int,
                   timeout: float = 30.0) -> list[tuple[int, bytes]]:
    """(partition, value) of every message, until they hold ``expected_events`` events."""
    codec = call_codec if topic.endswith("calls") else outcome_codec
    events = 0

    def enough(record: Any) -> bool:
        nonlocal events
        events += len(codec.decode(record.value).events)
        return events >= expected_events

    records = await read_until(bootstrap, topic, enough, timeout)
    return [(record.partition, record.value) for record in records]


async def test_one_line_publishing_keys_by_work_unit_with_murmur2(
        broker: EmbeddedBroker, prefix: str) -> None:
    await ensure_topics(KafkaConnection(bootstrap=broker.bootstrap), Topics(prefix, 4))
    async with Publisher(broker.bootstrap, topic_prefix=prefix, linger_ms=5) as publisher:
        for unit in range(40):
            await publisher.call(work_unit_id=f"unit-{unit}", provider="openai", model="gpt-4o",
                                 input_tokens=10, output_tokens=2, team="t", workflow="w")
            await publisher.outcome(work_unit_id=f"unit-{unit}", team="t", workflow="w",
                                    status="accepted")
    for topic, codec in [(f"{prefix}calls", call_codec), (f"{prefix}outcomes", outcome_codec)]:
        messages = await read_all(broker.bootstrap, topic, 40)
        seen = []
        for partition, value in messages:
            for event in codec.decode(value).events:
                assert partition == partition_for(event.work_unit_id, 4)
                seen.append(event.work_unit_id)
        assert sorted(seen) == sorted(f"unit-{u}" for u in range(40))


async def test_events_are_batched_into_envelopes_and_none_is_lost(
        broker: EmbeddedBroker, prefix: str) -> None:
    await ensure_topics(KafkaConnection(bootstrap=broker.bootstrap), Topics(prefix, 4))
    async with Publisher(broker.bootstrap, topic_prefix=prefix, max_batch_events=250,
                         linger_ms=50) as publisher:
        for i in range(5000):
            await publisher.call(event_id=f"e{i}", work_unit_id=f"u{i % 700}",
                                 provider="openai", model="gpt-4o", team="t", workflow="w")
        await publisher.flush()
        assert publisher.events_sent == 5000
        assert publisher.messages_sent < 5000 / 50
    messages = await read_all(broker.bootstrap, f"{prefix}calls", 5000)
    ids = Counter(e.event_id for _, value in messages
                  for e in call_codec.decode(value).events)
    assert len(ids) == 5000 and set(ids.values()) == {1}
    assert len(messages) == publisher.messages_sent


async def test_each_partition_receives_events_in_publish_order(
        broker: EmbeddedBroker, prefix: str) -> None:
    # Many envelopes in flight at once, some cut short by the linger timer, while the
    # producer's batches fill up and sends wait for room: they must still reach each
    # partition in the order they were published, or the engine would see event time go
    # backwards. (Before sends were chained per partition, this order broke.)
    await ensure_topics(KafkaConnection(bootstrap=broker.bootstrap), Topics(prefix, 4))
    scenario = Scenario.for_events(20_000, seed=11, run_id="order").clean()
    report = await run_benchmark(broker.bootstrap, 20_000, "envelope", scenario=scenario,
                                 topic_prefix=prefix, partitions=4)
    consumer = AIOKafkaConsumer(f"{prefix}calls", f"{prefix}outcomes",
                                bootstrap_servers=broker.bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    times: dict[tuple[str, int], list[str]] = {}
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while sum(map(len, times.values())) < report.generated \
                and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    times.setdefault((record.topic, record.partition), []).extend(
                        event["occurred_at"] for event in orjson.loads(record.value))
    finally:
        await consumer.stop()
    assert sum(map(len, times.values())) == report.generated
    for where, stamps in times.items():
        assert stamps == sorted(stamps), f"{where} out of publish order"


async def test_a_flush_cancelled_before_its_sends_start_does_not_stall_the_next(
        broker: EmbeddedBroker, prefix: str) -> None:
    # Sends to one partition wait for the previous append. A send cancelled before it ever
    # ran (a flush cut short by a timeout, or asyncio.run's cancel-all at exit) must still
    # release the next one, or every later flush waits forever (the soak hung on this).
    await ensure_topics(KafkaConnection(bootstrap=broker.bootstrap), Topics(prefix, 4))
    async with Publisher(broker.bootstrap, topic_prefix=prefix, linger_ms=60_000,
                         max_batch_events=3) as publisher:
        for n in range(10):  # one unit: one partition, three envelopes queued in order
            await publisher.call(work_unit_id="same-unit", provider="openai", model="gpt-4o",
                                 input_tokens=n, output_tokens=1, team="t", workflow="w")
        cut_short = asyncio.create_task(publisher.flush())
        await asyncio.sleep(0)  # the flush has queued its sends; none of them has run
        cut_short.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cut_short
        with pytest.raises(PublishError, match="cancelled"):
            await asyncio.wait_for(publisher.flush(), 10)  # the lost sends are reported
        await publisher.call(work_unit_id="same-unit", provider="openai", model="gpt-4o",
                             input_tokens=99, output_tokens=1, team="t", workflow="w")
        await asyncio.wait_for(publisher.flush(), 10)
        assert publisher.events_sent >= 1


def test_the_sync_publisher_delivers_on_exit(broker: EmbeddedBroker, prefix: str) -> None:
    asyncio.run(ensure_topics(KafkaConnection(bootstrap=broker.bootstrap), Topics(prefix, 4)))
    with SyncPublisher(broker.bootstrap, topic_prefix=prefix) as publisher:
        sent = publisher.call(work_unit_id="sync-1", provider="openai", model="gpt-4o",
                              team="t", workflow="w")
    messages = asyncio.run(read_all(broker.bootstrap, f"{prefix}calls", 1))
    assert [e.event_id for _, v in messages for e in call_codec.decode(v).events] == \
        [sent.event_id]


async def test_a_topic_with_the_wrong_partition_count_is_a_clear_error(
        broker: EmbeddedBroker, prefix: str) -> None:
    await ensure_topics(KafkaConnection(bootstrap=broker.bootstrap), Topics(prefix, 2))
    async with Publisher(broker.bootstrap, topic_prefix=prefix,
                         expected_partitions=4) as publisher:
        with pytest.raises(PublishError, match="has 2 partitions, expected 4"):
            await publisher.call(work_unit_id="x", provider="p", model="m", team="t",
                                 workflow="w")


async def test_delivery_failures_are_raised_not_dropped(prefix: str) -> None:
    own = EmbeddedBroker().start()
    try:
        await ensure_topics(KafkaConnection(bootstrap=own.bootstrap), Topics(prefix, 2))
        publisher = Publisher(own.bootstrap, topic_prefix=prefix, linger_ms=10_000,
                              request_timeout_ms=2000)
        await publisher.start()
        await publisher.call(work_unit_id="a", provider="p", model="m", team="t", workflow="w")
        await publisher.flush()
        own.stop()  # the broker goes away with an event still buffered
        await publisher.call(work_unit_id="b", provider="p", model="m", team="t", workflow="w")
        with pytest.raises(PublishError, match="not delivered"):
            await publisher.stop()
    finally:
        own.stop()
