"""Publish generated traffic to Kafka: paced or flat out, batched or one message per event.

    report = await run_generator("localhost:9092", Scenario(seed=1), rate=500)

Two modes: ``envelope`` lets the ``Publisher`` group events bound for one partition
into JSON-array envelopes (what services do in production); ``single`` sends one Kafka
message per event, the baseline that shows what envelopes buy. Pacing is a token bucket
(``rate`` events/s) and/or event time (``replay_speed``: 1.0 publishes each event when
its publish time comes round, relative to the first one).

For benchmarks, ``run_benchmark`` encodes every event before the clock starts, so the
figure is broker throughput, not generation speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import orjson

from schemas.errors import ConfigurationError
from schemas.events import ModelCall, Outcome
from schemas.kafka_options import KafkaConnection
from schemas.kafka_publisher import Publisher
from streams.kafka.topics import Topics, ensure_topics
from streams.traffic.scenarios import (
    EncodedBatch,
    EncodedEvent,
    RawEvent,
    Scenario,
    ValueTraffic,
    encode_all,
    encoded_events,
)

Mode = Literal["envelope", "single"]
Publishable = ModelCall | Outcome | RawEvent | EncodedEvent
YIELD_EVERY = 1000  # events between chances for the producer's I/O to run


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a publication has come; ``total`` is None when not known up front."""

    events: int
    calls: int
    outcomes: int
    elapsed_seconds: float
    total: int | None = None

    @property
    def events_per_second(self) -> float:
        return self.events / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class PublishReport:
    """What was delivered (every event counted was acknowledged by the broker)."""

    events: int
    calls: int
    outcomes: int
    messages: int
    elapsed_seconds: float
    mode: Mode = "envelope"

    @property
    def events_per_second(self) -> float:
        return self.events / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class BenchReport:
    """A benchmark: generation and encoding, timed apart from publication."""

    generated: int
    generation_seconds: float
    encoded_bytes: int
    publish: PublishReport

    @property
    def generated_per_second(self) -> float:
        return self.generated / self.generation_seconds if self.generation_seconds else 0.0


ProgressCallback = Callable[[Progress], None]


class TokenBucket:
    """At most ``rate`` events per second on average, in bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ConfigurationError(f"rate must be positive, got {rate}", rate=rate)
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate / 20)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    async def take(self, n: float = 1.0) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= n:
                self.tokens -= n
                return
            await asyncio.sleep((n - self.tokens) / self.rate)


def publisher_for(connection: KafkaConnection | str, mode: Mode = "envelope", *,
                  topic_prefix: str = "tokenyield.", partitions: int | None = None
                  ) -> Publisher:
    """A publisher set up for ``mode``: ``single`` sends every event as its own message,
    with many in flight so the producer can still pipeline them."""
    if mode == "single":
        return Publisher(connection, topic_prefix=topic_prefix, max_batch_events=1,
                         max_pending_batches=1024, expected_partitions=partitions)
    return Publisher(connection, topic_prefix=topic_prefix, expected_partitions=partitions)


async def publish(events: Iterable[Publishable] | EncodedBatch, publisher: Publisher,
                  rate: float | None = None, progress: ProgressCallback | None = None, *,
                  replay_speed: float | None = None, progress_interval: float = 1.0,
                  total: int | None = None) -> PublishReport:
    """Publish ``events`` in order and wait until the broker has acknowledged them all.

    ``rate`` caps events per second (None: as fast as possible). ``replay_speed`` also
    paces by event time: an event goes out ``(its publish time - the first one's) /
    replay_speed`` seconds after the start. The publisher decides how events become
    messages (see ``publisher_for``).
    """
    if isinstance(events, EncodedBatch):
        if replay_speed is not None:
            raise ConfigurationError("an EncodedBatch keeps no event times: it cannot be "
                                     "replayed")
        total = len(events) if total is None else total
    bucket = TokenBucket(rate) if rate else None
    check_every = 1 if bucket is not None or replay_speed is not None else YIELD_EVERY
    calls_topic, outcomes_topic = publisher.calls_topic, publisher.outcomes_topic
    topics = {"calls": calls_topic, "outcomes": outcomes_topic, "costs": publisher.costs_topic}
    messages_before = publisher.messages_sent
    started = last_report = time.monotonic()
    first_ms: int | None = None
    calls = outcomes = costs = 0
    for event in events:
        if bucket is not None:
            await bucket.take()
        if replay_speed is not None:
            at = _event_ms(event)
            first_ms = at if first_ms is None else first_ms
            wait = started + (at - first_ms) / 1000 / replay_speed - time.monotonic()
            if wait > 0.002:
                await asyncio.sleep(wait)
        if isinstance(event, EncodedEvent | RawEvent):
            value = event.value if isinstance(event, EncodedEvent) else orjson.dumps(event.data)
            kind = event.kind
            await publisher.publish_raw(topics[kind], event.work_unit_id, value)
        else:
            kind = "calls" if isinstance(event, ModelCall) else "outcomes"
            await publisher.publish(event)
        if kind == "calls":
            calls += 1
        elif kind == "outcomes":
            outcomes += 1
        else:
            costs += 1
        if (calls + outcomes + costs) % check_every == 0:
            if check_every == YIELD_EVERY:
                await asyncio.sleep(0)
            now = time.monotonic()
            if progress is not None and now - last_report >= progress_interval:
                last_report = now
                progress(Progress(calls + outcomes + costs, calls, outcomes, now - started,
                                  total))
    await publisher.flush()
    elapsed = time.monotonic() - started
    if progress is not None:
        progress(Progress(calls + outcomes + costs, calls, outcomes, elapsed, total))
    mode: Mode = "single" if publisher.max_batch_events == 1 else "envelope"
    return PublishReport(calls + outcomes + costs, calls, outcomes,
                         publisher.messages_sent - messages_before, elapsed, mode)


def _event_ms(event: Publishable) -> int:
    if isinstance(event, EncodedEvent | RawEvent):
        return event.publish_ms
    return int(event.occurred_at.timestamp() * 1000)


@asynccontextmanager
async def _connected(bootstrap: KafkaConnection | str, mode: Mode, topic_prefix: str,
                     partitions: int | None) -> AsyncIterator[Publisher]:
    connection = KafkaConnection(bootstrap=bootstrap) if isinstance(bootstrap, str) \
        else bootstrap
    if partitions is not None:
        await ensure_topics(connection, Topics(topic_prefix, partitions))
    async with publisher_for(connection, mode, topic_prefix=topic_prefix,
                             partitions=partitions) as publisher:
        yield publisher


async def run_generator(bootstrap: KafkaConnection | str, scenario: Scenario,
                        rate: float | None = None, mode: Mode = "envelope",
                        progress: ProgressCallback | None = None, *,
                        topic_prefix: str = "tokenyield.", partitions: int | None = None,
                        replay_speed: float | None = None) -> PublishReport:
    """Generate ``scenario`` and publish it while generating (the CLI's ``generate``).

    With ``partitions``, missing topics are created first and existing ones must have
    that many partitions; without, the topics must exist (the worker creates them).
    """
    async with _connected(bootstrap, mode, topic_prefix, partitions) as publisher:
        return await publish(encoded_events(scenario), publisher, rate, progress,
                             replay_speed=replay_speed)


async def run_benchmark(bootstrap: KafkaConnection | str, events: int = 200_000,
                        mode: Mode = "envelope", progress: ProgressCallback | None = None,
                        *, scenario: Scenario | None = None, topic_prefix: str = "tokenyield.",
                        partitions: int | None = None) -> BenchReport:
    """Encode ``events`` events first (timed), then publish them flat out (timed)."""
    source = scenario or Scenario.for_events(events)
    started = time.perf_counter()
    batch = encode_all(source, limit=events)
    generation = time.perf_counter() - started
    async with _connected(bootstrap, mode, topic_prefix, partitions) as publisher:
        report = await publish(batch, publisher, progress=progress)
    return BenchReport(len(batch), generation, len(batch.data), report)


async def live_traffic(publisher: Publisher, rate: float, stop: asyncio.Event, *,
                       seed: int = 1, run_id: str = "live", round_seconds: int = 30,
                       on_events: Callable[[int], None] | None = None,
                       value: ValueTraffic | None = None) -> int:
    """Publish about ``rate`` events/s with event times of now, until ``stop`` is set.

    Every ``round_seconds`` a new scenario starts, stamped from now on, and each event
    goes out when its time comes (replay at speed 1). Rounds overlap, since a unit's
    outcome can follow its calls by minutes, so the flow is steady, and no event is
    published ahead of its time: event time moves with the wall clock and nothing
    arrives late. Returns the events published; ``on_events`` hears each increment.
    """
    units = max(1, round(rate * round_seconds / 4.5))  # about 4.5 events per unit
    total = 0
    rounds: set[asyncio.Task[PublishReport]] = set()

    async def one_round(number: int) -> PublishReport:
        scenario = Scenario(seed=seed + number, run_id=f"{run_id}-{number}", work_units=units,
                            span_seconds=round_seconds, value=value).quiet().live()
        seen = 0

        def progress(p: Progress) -> None:
            nonlocal seen, total
            step, seen = p.events - seen, p.events
            total += step
            if on_events is not None:
                on_events(step)

        return await publish(encoded_events(scenario), publisher, progress=progress,
                             replay_speed=1.0, progress_interval=1.0)

    number = 0
    try:
        while not stop.is_set():
            number += 1
            rounds.add(asyncio.create_task(one_round(number)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), round_seconds)
            for done in [t for t in rounds if t.done()]:
                rounds.discard(done)
                done.result()  # a failed round fails the traffic
    finally:
        for task in rounds:
            task.cancel()
        await asyncio.gather(*rounds, return_exceptions=True)
    return total
