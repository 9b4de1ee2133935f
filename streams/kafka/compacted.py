"""Follow a compacted Kafka topic from its beginning, forever (prices, budgets).

Every worker reads the whole topic without a consumer group, so a record published
once reaches every worker, also ones started later. While Kafka is unreachable the
follower logs and retries; it never stops the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from schemas.kafka_options import KafkaConnection

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CompactedRecord:
    """One record: ``value`` None is a tombstone (the key was deleted)."""

    key: str
    value: bytes | None
    position: str  # topic[partition]@offset, for error messages


async def follow_compacted(connection: KafkaConnection, topic: str,
                           apply: Callable[[list[CompactedRecord]], None],
                           ready: asyncio.Event | None = None, *, what: str = "feed") -> None:
    """Call ``apply`` with each poll's records in order; set ``ready`` once caught up."""
    consumer = AIOKafkaConsumer(
        topic, **connection.aiokafka_kwargs(), group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False)
    while True:
        try:
            await consumer.start()
            break
        except KafkaError as exc:
            log.warning("%s cannot reach Kafka yet (%s); retrying", what, exc)
            await asyncio.sleep(1.0)
    try:
        caught_up = False
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            records = [
                CompactedRecord(record.key.decode(errors="replace") if record.key else "",
                                record.value or None,
                                f"{record.topic}[{record.partition}]@{record.offset}")
                for partition_records in batches.values() for record in partition_records]
            if records:
                apply(records)
            if not caught_up and not batches:
                caught_up = True
                if ready is not None:
                    ready.set()
    finally:
        await consumer.stop()
