"""What the two agents do with one message, free of Faust so it runs against fakes.

- ``InputHandler``: a message of ``calls``, ``outcomes``, ``costs`` or ``ticks`` goes to its
  partition's ``PartitionRuntime`` (the join, in the pure core); immediate outputs go
  to the outlet; the message's ack is held until a checkpoint covers it.
- ``RollupHandler``: a message of ``window-partials`` (a partition's outbox of window
  changes, or a tick) goes to the ``RollupRuntime``, which merges the partitions' cells
  into global windows and runs the alert detectors.

Acks are manual: a message is acknowledged only once the checkpoint covering it is
durable, so Kafka never commits past unsaved work. An exception here (a send the
broker refused, a ``SinkError``) is not caught: the agent stops the worker and the
unacknowledged messages are processed again by the next one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from streams.core.engine import EventKind, PartitionEngine
from streams.core.records import Outputs
from streams.core.windows import Outbox
from streams.core.workflows import WorkflowRegistry
from streams.feeds.price_feed import PriceBookHolder
from streams.kafka.outlet import TICK, Outlet
from streams.kafka.topics import Topics
from streams.ops.metrics import Metrics
from streams.runtime.partition_runtime import PartitionRuntime
from streams.runtime.ports import Sink, StateStore
from streams.runtime.rollup_runtime import RollupRuntime
from streams.settings import Settings

log = logging.getLogger(__name__)

Ack = Callable[[], object]
#: The broker's end offset of a topic partition (None while it is not assigned).
Highwater = Callable[[str, int], "int | None"]


class Message(Protocol):
    """The parts of a Kafka message the handlers read (a Faust ``Message`` has them)."""

    topic: str
    partition: int
    offset: int
    timestamp: float | None  # seconds since the epoch, the broker's (or producer's) stamp


def partition_runtime_factory(settings: Settings, prices: PriceBookHolder, sink: Sink,
                              metrics: Metrics, store: StateStore,
                              workflows: Callable[[], WorkflowRegistry] | None = None,
                              ) -> Callable[[int], PartitionRuntime]:
    """How the worker makes the runtime of a newly assigned partition."""

    def wall_clock_ms() -> int:  # only to refuse events stamped in the future
        return int(time.time() * 1000)

    def make(partition: int) -> PartitionRuntime:
        engine = PartitionEngine(partition, settings.engine_config(), prices.current,
                                 wall_clock_ms, store=store, workflows=workflows)
        return PartitionRuntime(engine, sink,
                                interval_seconds=settings.checkpoint_interval_seconds,
                                max_events=settings.checkpoint_max_events, metrics=metrics)

    return make


@dataclass
class InputHandler:
    """The ``attribute`` agent's work for one message."""

    topics: Topics
    outlet: Outlet
    store: StateStore
    make_runtime: Callable[[int], PartitionRuntime]
    metrics: Metrics
    highwater: Highwater
    runtimes: dict[int, PartitionRuntime] = field(default_factory=dict)
    overlap: bool = False  # TOKENYIELD_CHECKPOINT_OVERLAP: the insert runs on while reading
    kinds: dict[str, EventKind] = field(init=False)

    def __post_init__(self) -> None:
        self.kinds = {self.topics.calls: "calls", self.topics.outcomes: "outcomes",
                      self.topics.costs: "costs"}

    def runtime_for(self, partition: int) -> PartitionRuntime:
        """The partition's runtime, restored from its last checkpoint on first use."""
        runtime = self.runtimes.get(partition)
        if runtime is None:
            runtime = self.make_runtime(partition)
            runtime.restore(self.store)
            runtime.engine.wait_for_inputs()
            self.runtimes[partition] = runtime
        return runtime

    def forget(self, partition: int) -> None:
        """The partition was revoked: its unacknowledged work is redone by its next owner
        from the last checkpoint; keeping the runtime would let two workers write it."""
        self.runtimes.pop(partition, None)

    async def handle(self, message: Message, value: bytes, ack: Ack) -> None:
        runtime = self.runtime_for(message.partition)
        store, outlet = self.store, self.outlet
        # The checkpoint in flight, if its insert has returned: saved and acked now.
        await runtime.settle(store, outlet.send_outbox, outlet.flush)
        topic = message.topic
        if topic == self.topics.ticks:
            self.report_backlog(runtime, message.partition)
            out = runtime.tick()
            if not len(out) and not runtime.checkpoint_pending():
                ack()  # idle: nothing to save, nothing to say
                return
        elif runtime.already_applied(topic, message.offset):
            ack()  # covered by the restored checkpoint
            return
        else:
            out = self.apply(runtime, message, value)
        if len(out):
            await self.outlet.emit(out, message.partition)
        runtime.hold(ack)
        if runtime.checkpoint_due():
            if not self.overlap:
                await runtime.checkpoint(store, outlet.send_outbox, outlet.flush)
                return
            # The insert runs while the next messages are processed (partition_runtime).
            await runtime.begin(store, outlet.send_outbox, outlet.flush)
            await runtime.settle(store, outlet.send_outbox, outlet.flush)

    def apply(self, runtime: PartitionRuntime, message: Message, value: bytes) -> Outputs:
        topic, metrics = message.topic, self.metrics
        metrics.messages_in.labels(topic).inc()
        self.report_backlog(runtime, message.partition, (topic, message.offset))
        ledger = runtime.engine.ledger
        received, duplicates = ledger.received, ledger.duplicates
        out = runtime.apply(self.kinds[topic], topic, value, message.offset)
        metrics.events_in.labels(topic).inc(ledger.received - received)
        if ledger.duplicates > duplicates:
            metrics.events_duplicate.inc(ledger.duplicates - duplicates)
        if out.attributions and self.kinds[topic] == "outcomes" and message.timestamp:
            metrics.attribution_latency.observe(max(0.0, time.time() - message.timestamp))
        return out

    def report_backlog(self, runtime: PartitionRuntime, partition: int,
                       reading: tuple[str, int] | None = None) -> None:
        """Tell the engine which inputs have messages not yet applied: such an input
        holds the event-time clock, so a backlog read faster on one topic than on the
        other makes nothing late. ``reading`` is the message about to be applied.
        Only "more to read" is trusted: the embedded broker may report a high-water
        mark below the true end (the last batch's base offset), never above it."""
        engine = runtime.engine
        for topic, kind in self.kinds.items():
            applied = engine.applied_offsets.get(topic, -1)
            if reading is not None and reading[0] == topic:
                applied = reading[1]
            highwater = self.highwater(topic, partition)
            engine.set_more_to_read(kind, highwater is not None and applied + 1 < highwater)

    def applied(self, topic: str, partition: int) -> int:
        """The last offset of an input partition the engine applied (-1: none)."""
        runtime = self.runtimes.get(partition)
        return runtime.engine.applied_offsets.get(topic, -1) if runtime else -1


class RollupHandler:
    """The ``rollup`` agent's work for one message of ``window-partials``."""

    def __init__(self, runtime: RollupRuntime, store: StateStore, outlet: Outlet) -> None:
        self.runtime = runtime
        self.store = store
        self.outlet = outlet

    async def handle(self, message: Message, value: bytes, ack: Ack) -> None:
        runtime = self.runtime
        if not runtime.restored:
            runtime.restore(self.store)
        runtime.position = message.offset
        # The message's own time stamp is the rollup's "now": a replay decides alike.
        stamp_ms = int((message.timestamp or 0) * 1000)
        if value == TICK:
            runtime.tick(stamp_ms)
            if not runtime.checkpoint_pending():
                ack()
                return
        elif runtime.already_applied(message.offset):
            ack()
            return
        else:
            runtime.apply(Outbox.decode(value), message.offset, stamp_ms)
        runtime.hold(ack)
        if runtime.checkpoint_due():
            await runtime.checkpoint(self.store, self.outlet.emit_rollup, self.outlet.flush)

    def forget(self) -> None:
        """The rollup partition was revoked: start over from the saved snapshot."""
        self.runtime.reset()


async def send_ticks(outlet: Outlet, topics: Topics,
                     assignment: Iterable[tuple[str, int]]) -> None:
    """The timer's turn: a tick to every assigned ticks partition (and to the rollup),
    so idle partitions checkpoint and close windows."""
    for topic, partition in assignment:
        if topic == topics.ticks:
            await outlet.tick(topics.ticks, partition)
        elif topic == topics.window_partials:
            await outlet.tick(topics.window_partials, 0)


def consumer_lag(assignment: Iterable[tuple[str, int]], highwater: Highwater,
                 inputs: InputHandler, rollup: RollupRuntime, topics: Topics
                 ) -> dict[tuple[str, int], int]:
    """Messages not yet processed, per assigned partition: the end offset minus the last
    offset the engine (or the rollup) applied. Not Faust's read position: messages handed
    to a stream wait in its buffer, and counting them as done would report no lag while
    work queues up. Changelog topics (read only in recovery) and ticks are left out."""
    lag = {}
    for topic, partition in assignment:
        if topic == topics.window_partials:
            applied = rollup.position
        elif topic in inputs.kinds:
            applied = inputs.applied(topic, partition)
        else:
            continue
        end = highwater(topic, partition)
        if end is not None:
            lag[(topic, partition)] = max(0, end - 1 - applied)
    return lag
