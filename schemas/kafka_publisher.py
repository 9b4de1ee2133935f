"""Publish model calls and outcomes to Kafka from any Python service.

    async with Publisher("localhost:9092") as publisher:
        await publisher.call(work_unit_id="ticket-42", provider="openai", model="gpt-4o",
                             input_tokens=1200, output_tokens=300, team="support",
                             workflow="triage")

Events are keyed by ``work_unit_id`` with Kafka's murmur2 partitioner, so a unit's
calls and outcomes meet in the same partition number of both topics. Events bound for
one partition are grouped into batch envelopes (a JSON array per Kafka message, up to
``max_batch_events`` events or ``max_batch_bytes`` bytes, or after ``linger_ms``): far
fewer Kafka messages than events, which is what lets one worker keep up.

Delivery failures are raised as ``PublishError`` from ``flush()`` (and therefore from
leaving the context manager): nothing is dropped in silence.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.codec import call_codec, cost_codec, outcome_codec
from schemas.errors import PublishError
from schemas.events import CostItem, ModelCall, Outcome
from schemas.kafka_options import KafkaConnection
from schemas.partitioner import partition_for

T = TypeVar("T")


class Publisher:
    """Async publisher. Use as ``async with``; ``flush()`` waits for delivery."""

    def __init__(
        self,
        connection: KafkaConnection | str,
        *,
        topic_prefix: str = "tokenyield.",
        max_batch_events: int = 500,
        max_batch_bytes: int = 512 * 1024,
        linger_ms: int = 20,
        max_pending_batches: int = 64,
        request_timeout_ms: int = 30_000,
        expected_partitions: int | None = None,
    ) -> None:
        if isinstance(connection, str):
            connection = KafkaConnection(bootstrap=connection)
        self.connection = connection
        self.calls_topic = f"{topic_prefix}calls"
        self.outcomes_topic = f"{topic_prefix}outcomes"
        self.costs_topic = f"{topic_prefix}costs"
        self.max_batch_events = max_batch_events
        self.max_batch_bytes = max_batch_bytes
        self.linger = linger_ms / 1000
        self.max_pending_batches = max_pending_batches
        self.request_timeout_ms = request_timeout_ms
        self.expected_partitions = expected_partitions
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, int] = {}
        self._buffers: dict[tuple[str, int], list[bytes]] = {}
        self._buffer_bytes: dict[tuple[str, int], int] = {}
        self._pending: set[asyncio.Future[Any]] = set()
        self._last_append: dict[tuple[str, int], asyncio.Future[None]] = {}
        self._failures: list[str] = []
        self._linger_task: asyncio.Task[None] | None = None
        self.events_sent = 0
        self.messages_sent = 0

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            **self.connection.aiokafka_kwargs(),
            linger_ms=5,
            max_batch_size=1024 * 1024,
            max_request_size=8 * 1024 * 1024,
            acks="all",
            request_timeout_ms=self.request_timeout_ms,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise PublishError(
                f"cannot reach Kafka at {self.connection.bootstrap}: {exc}",
                bootstrap=self.connection.bootstrap,
            ) from exc
        self._producer = producer
        self._linger_task = asyncio.create_task(self._linger_loop())

    async def stop(self) -> None:
        """Flush what is buffered, then close. Raises if anything failed to deliver."""
        try:
            if self._producer is not None:
                await self.flush()
        finally:
            if self._linger_task is not None:
                self._linger_task.cancel()
                self._linger_task = None
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- one-liners -------------------------------------------------------------
    async def call(self, **fields: Any) -> ModelCall:
        """Publish a model call; ``event_id`` and ``occurred_at`` default to new and now."""
        event = ModelCall.model_validate(_with_defaults(fields))
        await self.publish(event)
        return event

    async def outcome(self, **fields: Any) -> Outcome:
        """Publish a business outcome; ``event_id`` and ``occurred_at`` default likewise."""
        event = Outcome.model_validate(_with_defaults(fields))
        await self.publish(event)
        return event

    async def cost(self, **fields: Any) -> CostItem:
        """Publish a cost item (no ``work_unit_id``: a shared cost of its workflow)."""
        event = CostItem.model_validate(_with_defaults(fields))
        await self.publish(event)
        return event

    # -- general API ------------------------------------------------------------
    async def publish(self, event: ModelCall | Outcome | CostItem) -> None:
        if isinstance(event, ModelCall):
            await self._enqueue(self.calls_topic, event.work_unit_id, call_codec.encode(event))
        elif isinstance(event, Outcome):
            await self._enqueue(
                self.outcomes_topic, event.work_unit_id, outcome_codec.encode(event)
            )
        elif isinstance(event, CostItem):
            await self._enqueue(self.costs_topic, event.key, cost_codec.encode(event))
        else:
            raise TypeError(f"cannot publish {type(event).__name__}")

    async def publish_many(self, events: Iterable[ModelCall | Outcome | CostItem]) -> None:
        for event in events:
            await self.publish(event)

    async def publish_raw(self, topic: str, work_unit_id: str, value: bytes) -> None:
        """Publish an already-encoded event (for example a line of NDJSON) as is."""
        await self._enqueue(topic, work_unit_id, value)

    async def flush(self) -> None:
        """Send every buffered batch and wait for the broker to acknowledge all of them."""
        for key in list(self._buffers):
            self._send_buffer(key)
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self._failures:
            failures, self._failures = self._failures, []
            raise PublishError(
                f"{len(failures)} batch(es) were not delivered: {failures[0]}",
                failures=failures,
            )

    # -- internals --------------------------------------------------------------
    async def partitions(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            producer = self._require_producer()
            found = await producer.partitions_for(topic)
            if not found:
                raise PublishError(f"topic {topic} does not exist", topic=topic)
            if self.expected_partitions is not None and len(found) != self.expected_partitions:
                # Most brokers create unknown topics on first use, with their default
                # partition count: keying would then not match the engine's partitions.
                raise PublishError(
                    f"topic {topic} has {len(found)} partitions, expected "
                    f"{self.expected_partitions} (TOKENYIELD_PARTITIONS): is the worker "
                    "running with the same topic prefix?", topic=topic, partitions=len(found))
            count = self._partitions[topic] = len(found)
        return count

    async def _enqueue(self, topic: str, work_unit_id: str, value: bytes) -> None:
        partition = partition_for(work_unit_id, await self.partitions(topic))
        key = (topic, partition)
        buffer = self._buffers.setdefault(key, [])
        buffer.append(value)
        size = self._buffer_bytes.get(key, 0) + len(value) + 1
        self._buffer_bytes[key] = size
        if len(buffer) >= self.max_batch_events or size >= self.max_batch_bytes:
            self._send_buffer(key)
        if len(self._pending) >= self.max_pending_batches:
            await asyncio.wait(list(self._pending), return_when=asyncio.FIRST_COMPLETED)

    def _send_buffer(self, key: tuple[str, int]) -> None:
        items = self._buffers.pop(key, None)
        self._buffer_bytes.pop(key, None)
        if not items:
            return
        topic, partition = key
        value = items[0] if len(items) == 1 else b"[" + b",".join(items) + b"]"
        producer = self._require_producer()
        # Appends to one partition must happen in call order: concurrent sends that wait
        # for room in a full producer batch can otherwise overtake each other, and the
        # engine would see event time go backwards (late events). Each send waits for
        # the previous append to its partition, not for its delivery.
        appended = asyncio.get_running_loop().create_future()
        previous = self._last_append.get(key)
        self._last_append[key] = appended
        future = asyncio.ensure_future(
            self._send_in_order(producer, topic, partition, value, previous, appended))
        self._pending.add(future)
        count = len(items)

        def done(fut: asyncio.Future[Any]) -> None:
            self._pending.discard(fut)
            if fut.cancelled():
                self._failures.append(f"{topic}[{partition}]: cancelled ({count} events)")
            elif fut.exception() is not None:
                self._failures.append(f"{topic}[{partition}]: {fut.exception()!r} ({count} events)")
            else:
                self.events_sent += count
                self.messages_sent += 1

        future.add_done_callback(done)
        # A send cancelled before it first runs never enters its ``finally``: release the
        # next send to this partition here too, or it (and every later flush) waits forever.
        future.add_done_callback(lambda _: appended.done() or appended.set_result(None))

    async def _send_in_order(self, producer: AIOKafkaProducer, topic: str, partition: int,
                             value: bytes, previous: asyncio.Future[None] | None,
                             appended: asyncio.Future[None]) -> Any:
        try:
            if previous is not None:
                await asyncio.shield(previous)
            delivery = await producer.send(topic, value, partition=partition)
        finally:
            appended.set_result(None)
            key = (topic, partition)
            if self._last_append.get(key) is appended:
                del self._last_append[key]
        return await delivery

    async def _linger_loop(self) -> None:
        while True:
            await asyncio.sleep(self.linger)
            for key in list(self._buffers):
                self._send_buffer(key)

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise PublishError("publisher is not started (use 'async with Publisher(...)')")
        return self._producer


def _with_defaults(fields: dict[str, Any]) -> dict[str, Any]:
    fields.setdefault("event_id", uuid.uuid4().hex)
    fields.setdefault("occurred_at", datetime.now(UTC))
    return fields


class SyncPublisher:
    """The same publisher for synchronous code: a private event loop in a thread.

        with SyncPublisher("localhost:9092") as publisher:
            publisher.call(work_unit_id="ticket-42", ...)
    """

    def __init__(self, connection: KafkaConnection | str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._async = self._run(self._make(connection, options))

    async def _make(self, connection: KafkaConnection | str, options: dict[str, Any]) -> Publisher:
        return Publisher(connection, **options)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def start(self) -> None:
        self._run(self._async.start())

    def stop(self) -> None:
        try:
            self._run(self._async.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> SyncPublisher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def call(self, **fields: Any) -> ModelCall:
        return self._run(self._async.call(**fields))

    def outcome(self, **fields: Any) -> Outcome:
        return self._run(self._async.outcome(**fields))

    def cost(self, **fields: Any) -> CostItem:
        return self._run(self._async.cost(**fields))

    def publish(self, event: ModelCall | Outcome | CostItem) -> None:
        self._run(self._async.publish(event))

    def flush(self) -> None:
        self._run(self._async.flush())
