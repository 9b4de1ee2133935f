"""Produce events onto their topics by work unit, and know which ones the broker took.

What the HTTP endpoints and the OTLP agent share: accepted events, grouped into
batches by ``schemas.ingest.plan_batches`` (topic, murmur2 partition of the work unit,
JSON-array envelopes, as the publisher sends them), sent through the outlet's
``Producer`` port and awaited until the broker acknowledges each batch. Appends are
made one after another, so a unit's events keep their order within its partition.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.ingest import Routed, plan_batches
from streams.kafka.outlet import Producer
from streams.kafka.topics import Topics


@dataclass(slots=True)
class Delivery:
    """Which events the broker acknowledged, and why the others failed (by index)."""

    delivered: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    messages: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)


class KeyedSender:
    def __init__(self, producer: Producer, topics: Topics) -> None:
        self.producer = producer
        self.topics = topics

    async def send(self, routed: Iterable[Routed]) -> Delivery:
        """Send every event; never raises for a refused send (it is in ``failed``)."""
        delivery = Delivery()
        batches = plan_batches(routed, self.topics.partitions)
        pending: list[tuple[asyncio.Future[object] | None, list[int], str, str]] = []
        for batch in batches:
            topic = f"{self.topics.prefix}{batch.topic}"
            try:
                sent = await self.producer.send(topic, None, batch.value, batch.partition)
            except Exception as exc:  # the broker or the client refused: report, go on
                pending.append((None, batch.indexes, topic, _why(exc)))
                continue
            future = asyncio.ensure_future(sent) if inspect.isawaitable(sent) else None
            pending.append((future, batch.indexes, topic, ""))
        for future, indexes, topic, problem in pending:
            if future is not None:
                try:
                    await future
                except Exception as exc:
                    problem = _why(exc)
            if problem:
                delivery.failed.update(dict.fromkeys(indexes, problem))
            else:
                delivery.delivered.extend(indexes)
                delivery.messages += 1
                delivery.by_topic[topic] = delivery.by_topic.get(topic, 0) + len(indexes)
        return delivery


def _why(exc: BaseException) -> str:
    return f"Kafka did not take the event ({type(exc).__name__}: {exc}); send it again"
