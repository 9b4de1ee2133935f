"""What the stateless ``otlp`` agent does with one message of the Collector's topic.

The Collector's Kafka exporter keys its messages by trace id (or not at all), so a
work unit's spans are anywhere on its topic. Each message (an
``ExportTraceServiceRequest``, ``otlp_proto`` or ``otlp_json``) is decoded by the pure
``schemas.otlp.decode_export``; its model calls are produced onto ``calls`` by work
unit (murmur2, as the publisher keys them), where the join takes them like any call.

Every span is accounted for: a call (re-keyed), skipped (not GenAI usage; counted by
reason in ``tokenyield_otlp_spans_skipped_total``) or rejected (dead-letter, with the
reason, this topic, partition and offset, and the span index; ``raw`` is a one-span
export that replays once fixed). A message that is no export at all is one dead letter.

The message is acknowledged only once its calls are on ``calls`` and its dead letters
on the dead-letter topic and in ClickHouse. A redelivery after a crash produces the
same calls (ids ``otel:<trace>:<span>``), which the engine counts once, and the same
dead letters (same ids), which ClickHouse keeps once.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from datetime import UTC, datetime

from schemas.codec import encode_models
from schemas.errors import PublishError
from schemas.ingest import route_call
from schemas.otlp import OtlpConfig, OtlpDecoded, decode_export
from streams.core.records import Outputs, Source, dead_letter
from streams.kafka.handlers import Ack, Message
from streams.kafka.keyed_sender import KeyedSender
from streams.kafka.outlet import Producer
from streams.kafka.topics import Topics
from streams.ops.metrics import Metrics
from streams.runtime.ports import Sink


class OtlpHandler:
    def __init__(self, config: OtlpConfig, topics: Topics, producer: Producer, sink: Sink,
                 metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.topics = topics
        self.producer = producer
        self.sender = KeyedSender(producer, topics)
        self.sink = sink
        self.metrics = metrics
        self.clock = clock

    async def handle(self, message: Message, value: bytes, ack: Ack) -> None:
        topic, metrics = message.topic, self.metrics
        metrics.messages_in.labels(topic).inc()
        decoded = decode_export(value or b"", self.config)
        metrics.events_in.labels(topic).inc(
            len(decoded.calls) + sum(decoded.skipped.values()) + len(decoded.errors))
        for reason, count in decoded.skipped.items():
            metrics.otlp_spans_skipped.labels(topic, reason).inc(count)
        await self.forward(decoded)
        if decoded.errors:
            await self.reject(decoded, Source(topic, message.partition, message.offset))
        ack()

    async def forward(self, decoded: OtlpDecoded) -> None:
        """The calls onto ``calls``; a refused send raises (the worker stops and the
        message, not acknowledged, is read again)."""
        if not decoded.calls:
            return
        delivery = await self.sender.send(
            route_call(index, call) for index, call in enumerate(decoded.calls))
        if delivery.failed:
            reason = next(iter(delivery.failed.values()))
            raise PublishError(f"{len(delivery.failed)} OTLP calls were not produced: "
                               f"{reason}", failed=len(delivery.failed))
        for target, count in delivery.by_topic.items():
            self.metrics.events_out.labels(target).inc(count)

    async def reject(self, decoded: OtlpDecoded, source: Source) -> None:
        now = datetime.fromtimestamp(self.clock(), tz=UTC)
        letters = [dead_letter(error.as_decode_error(), source, now)
                   for error in decoded.errors]
        # The source partition's number, folded onto the dead-letter topic's partitions:
        # the Collector's topic may have any count.
        partition = source.partition % self.topics.partitions
        sent = await self.producer.send(self.topics.dead_letter, None,
                                        encode_models(letters), partition)
        if inspect.isawaitable(sent):
            await sent  # the broker's acknowledgement
        batch = Outputs(dead_letters=letters)
        batch.cover(source.topic, source.partition, source.offset)
        await self.sink.write(batch)
        for letter in letters:
            self.metrics.events_rejected.labels(source.topic, letter.error_kind).inc()
