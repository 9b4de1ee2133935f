"""The outlet: every message the worker sends goes through here.

The handlers decide *what* to send; the outlet knows *where* each kind of output goes
(attributions by partition, alerts and window changes to their single partition,
reroutes by key), counts it in the metrics and tells the alert webhook. It talks to a
``Producer`` port: the Faust producer in the worker (``FaustProducer``), a list in the
tests. A send that fails raises: the handler's checkpoint then never acknowledges the
input, and the messages are processed again after a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from schemas.codec import encoded_models
from schemas.outputs import Alert, CostPerOutcomeWindow
from streams.core.records import Outputs
from streams.core.windows import Outbox
from streams.kafka.topics import Topics
from streams.ops.metrics import Metrics
from streams.runtime.rollup_runtime import BudgetStateChanges

TICK = b""  # an empty message on an input topic: "time passed", nothing else
# The most one message of outputs may hold. A backfill of weeks closes thousands of
# windows in one checkpoint; one message of them all would exceed the producer's
# max_request_size (1 MiB by default) and stop the worker. Consumers read a list per
# message, so any split is the same to them.
MAX_MESSAGE_BYTES = 512 * 1024


def messages(models: Sequence[Any], limit: int = MAX_MESSAGE_BYTES) -> Iterator[bytes]:
    """``models`` as JSON-array message bodies of at most ``limit`` bytes each (a single
    model larger than that is its own message), in order; each model encoded once."""
    chunk: list[bytes] = []
    size = 2  # the brackets
    for encoded in encoded_models(models):
        if chunk and size + 1 + len(encoded) > limit:
            yield b"[" + b",".join(chunk) + b"]"
            chunk, size = [], 2
        size += len(encoded) + (1 if chunk else 0)
        chunk.append(encoded)
    if chunk:
        yield b"[" + b",".join(chunk) + b"]"


class Producer(Protocol):
    """Sends one message; ``flush`` returns once the broker has every message sent."""

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None) -> Any: ...

    async def flush(self) -> None: ...


class FaustProducer:
    """A Faust app's producer as the outlet's ``Producer``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None) -> Any:
        return await self.app.producer.send(topic, key, value, partition, None, None)

    async def flush(self) -> None:
        await self.app.producer.flush()


class Outlet:
    def __init__(self, producer: Producer, topics: Topics, metrics: Metrics,
                 notify: Callable[[list[Alert]], None] | None = None) -> None:
        self.producer = producer
        self.topics = topics
        self.metrics = metrics
        self.notify = notify or (lambda alerts: None)

    async def emit(self, out: Outputs, partition: int) -> None:
        """A partition's immediate outputs: attributions, alerts, dead letters, late
        events, and calls or outcomes that reached the wrong partition (sent again by
        their key). Window changes wait for the checkpoint (``send_outbox``)."""
        send, topics, metrics = self.producer.send, self.topics, self.metrics
        if out.attributions:
            for body in messages(out.attributions):
                await send(topics.attributions, None, body, partition)
            metrics.events_out.labels(topics.attributions).inc(len(out.attributions))
        if out.alerts:
            await self._alerts(out.alerts)
            self.notify(out.alerts)
        if out.dead_letters:
            for body in messages(out.dead_letters):
                await send(topics.dead_letter, None, body, partition)
            for dead in out.dead_letters:
                metrics.events_rejected.labels(dead.source_topic, dead.error_kind).inc()
        if out.late:
            for body in messages(out.late):
                await send(topics.late, None, body, partition)
            metrics.events_late.labels(out.late[0].source_topic).inc(len(out.late))
        for kind, unit_id, value in out.reroute:
            target = {"calls": topics.calls, "outcomes": topics.outcomes,
                      "costs": topics.costs}[kind]
            await send(target, unit_id.encode(), value, None)

    async def send_outbox(self, outbox: Outbox) -> None:
        """A checkpoint's window changes, to the rollup stage."""
        await self.producer.send(self.topics.window_partials, None, outbox.encode(), 0)

    async def emit_rollup(self, windows: list[CostPerOutcomeWindow], alerts: list[Alert],
                          budget_states: BudgetStateChanges | None = None) -> None:
        """The rollup's windows and alerts (it tells the webhook itself, once they are
        stored), and budgets whose state changed: keyed by budget id on the compacted
        ``budget-state`` topic, a tombstone for a removed budget."""
        if windows:
            for body in messages(windows):
                await self.producer.send(self.topics.windows, None, body, 0)
            self.metrics.events_out.labels(self.topics.windows).inc(len(windows))
        if alerts:
            await self._alerts(alerts)
        for budget_id, state in budget_states or ():
            # A null value is a tombstone: compaction then forgets the key.
            value = None if state is None else state.__pydantic_serializer__.to_json(state)
            await self.producer.send(self.topics.budget_state, budget_id.encode(), value, 0)
        if budget_states:
            self.metrics.events_out.labels(self.topics.budget_state).inc(len(budget_states))

    async def tick(self, topic: str, partition: int) -> None:
        """Time passed: a turn for an idle partition (or the rollup) to checkpoint and
        close windows. Ticks travel through the input stream because Faust allows table
        writes only while iterating it."""
        await self.producer.send(topic, None, TICK, partition)

    async def flush(self) -> None:
        await self.producer.flush()

    async def _alerts(self, alerts: list[Alert]) -> None:
        for body in messages(alerts):
            await self.producer.send(self.topics.alerts, None, body, 0)
        self.metrics.events_out.labels(self.topics.alerts).inc(len(alerts))
        for alert in alerts:
            self.metrics.alerts.labels(alert.kind, alert.status).inc()
