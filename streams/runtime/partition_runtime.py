"""One input partition's engine with its checkpoints, acks and sink batch.

The Faust agent stays a thin loop (decode, call the core, emit); this is the glue it
calls, free of Faust so it can be driven directly in tests. The order of a checkpoint
is what makes the guarantees hold:

1. wait until the broker has every output so far (attributions, dead letters...);
2. insert the checkpoint's rows into ClickHouse (retrying while it is down);
3. write the state: summaries of evicted units, the segments, deletions, the outbox
   of window changes, then the meta record that makes them current;
4. send the outbox to the rollup stage; wait for the broker again, then acknowledge
   the input messages.

A crash anywhere in between re-processes the unacknowledged inputs from the previous
checkpoint: outputs and rows are re-emitted with the same ids, and the state is exactly
the previous checkpoint's (the unfinished one is invisible without its meta record).
Window changes are sent only once they are part of a durable checkpoint, and the last
outbox is sent again after a restore (the rollup ignores one it has applied), so they
reach the rollup exactly once.

**Overlap** (``TOKENYIELD_CHECKPOINT_OVERLAP``, on by default: 1.2x to 1.4x the events/s
of waiting, docs/BENCHMARKS.md). The worker does not wait for step 2 before reading on
(``begin`` and ``settle``; ``checkpoint`` is both, waiting): step 1 runs, the batch and
the state as of that moment are taken (the checkpoint's plan is computed then, from the
engine as it is), the insert is started, and the engine goes on with the next messages
while it runs. Steps 3 and 4 follow, in that order, once the insert has returned, at the
next message or tick of the partition (Faust writes a table only while the partition's
own stream is iterated); one checkpoint is in flight at a time. Nothing is acknowledged
or made durable earlier than before, so the guarantees are exactly the same; messages
read meanwhile belong to the next checkpoint. While a plan's records are not in the
store yet, the engine reads them from the plan (``PlannedStore``): a unit evicted just
before the checkpoint, and revived just after, finds its summary.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from schemas.errors import StateError
from streams.core.checkpoint import Checkpointer, CheckpointPlan, meta_key, outbox_key
from streams.core.engine import EventKind, PartitionEngine, Source
from streams.core.records import Outputs
from streams.core.windows import Outbox
from streams.runtime.ports import CheckpointObserver, Sink, StateStore

log = logging.getLogger(__name__)


class PlannedStore:
    """The engine's view of the state table while a checkpoint's records are still on
    their way to it: what the plan writes (or deletes) wins over the table."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.pending: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.pending:
            return self.pending[key]
        return self.reader.get(key)

    def hold(self, plan: CheckpointPlan) -> None:
        for key, value in (*plan.batched, *plan.writes):
            self.pending[key] = value
        for key in plan.deletes:
            self.pending[key] = None

    def release(self) -> None:
        self.pending = {}


@dataclass(slots=True)
class InFlight:
    """A checkpoint whose rows are being inserted: its plan and the acks it releases."""

    plan: CheckpointPlan
    insert: asyncio.Future[None]
    acks: list[Callable[[], object]]
    started: float


class PartitionRuntime:
    def __init__(
        self,
        engine: PartitionEngine,
        sink: Sink,
        *,
        interval_seconds: float,
        max_events: int,
        metrics: CheckpointObserver | None = None,
    ) -> None:
        self.engine = engine
        self.partition = engine.partition
        self.sink = sink
        self.checkpointer = Checkpointer(engine)
        self.interval = interval_seconds
        self.max_events = max_events
        self.metrics = metrics
        self.held: list[Callable[[], object]] = []
        self.batch = Outputs()
        self.events_since = 0
        self.last_checkpoint = time.monotonic()
        self.last_plan: CheckpointPlan | None = None
        self.unsent: Outbox | None = None  # restored outbox, sent again first
        self.reported_clock = -1  # the clock the rollup last heard from this partition
        self.inflight: InFlight | None = None
        # Reads of the state go through the records of a plan not yet written.
        self.planned = PlannedStore(engine.units.reader)
        engine.units.reader = self.planned

    # -- recovery ---------------------------------------------------------------------
    def restore(self, store: StateStore) -> bool:
        """Load the last complete checkpoint, if there is one."""
        meta = store.get(meta_key(self.partition))
        if meta is None:
            return False
        chunks = []
        for key in Checkpointer.segment_keys(self.partition, meta):
            chunk = store.get(key)
            if chunk is None:
                raise StateError(f"checkpoint segment {key!r} is missing from the state "
                                      f"table", partition=self.partition, key=key.decode())
            chunks.append(chunk)
        self.unsent = self.checkpointer.restore(meta, chunks,
                                                store.get(outbox_key(self.partition)))
        log.info("partition %d restored: %d live units, offsets %s", self.partition,
                 len(self.engine.units), self.engine.applied_offsets)
        return True

    def already_applied(self, topic: str, offset: int) -> bool:
        """True for a message the last checkpoint already covers (a replay)."""
        return offset <= self.engine.applied_offsets.get(topic, -1)

    # -- processing -------------------------------------------------------------------
    def apply(self, kind: EventKind, topic: str, value: bytes, offset: int) -> Outputs:
        out = self.engine.process(kind, value, Source(topic, self.partition, offset))
        self._collect(out)
        self.batch.cover(topic, self.partition, offset)
        self.events_since += 1
        return out

    def tick(self) -> Outputs:
        out = self.engine.tick()
        self._collect(out)
        return out

    def hold(self, ack: Callable[[], object]) -> None:
        self.held.append(ack)

    def _collect(self, out: Outputs) -> None:
        self.batch.extend(out)

    def checkpoint_pending(self) -> bool:
        """Anything unsaved: held messages, changed state, unsent window changes, or a
        clock the rollup has not heard of (it decides when windows are final)."""
        engine = self.engine
        return bool(self.held or self.inflight or engine.dirty_units or engine.book
                    or engine.removed_units or engine.units.evicted or engine.sweeper.deletes
                    or self.unsent or len(self.batch) or engine.clock_ms > self.reported_clock)

    def checkpoint_due(self) -> bool:
        if not self.checkpoint_pending():
            return False
        return (self.events_since >= self.max_events
                or time.monotonic() - self.last_checkpoint >= self.interval)

    # -- checkpoint -------------------------------------------------------------------
    async def checkpoint(
        self,
        store: StateStore,
        send_outbox: Callable[[Outbox], Awaitable[None]],
        flush_producer: Callable[[], Awaitable[None]],
    ) -> CheckpointPlan:
        """A whole checkpoint, waiting for its insert (tools, tests, shutdown)."""
        await self.begin(store, send_outbox, flush_producer)
        assert self.inflight is not None
        plan = self.inflight.plan
        await self.settle(store, send_outbox, flush_producer, wait=True)
        return plan

    async def begin(
        self,
        store: StateStore,
        send_outbox: Callable[[Outbox], Awaitable[None]],
        flush_producer: Callable[[], Awaitable[None]],
    ) -> None:
        """Steps 1 and 2: flush the producer, take the batch and the plan, start the
        insert. A checkpoint still in flight is finished first."""
        await self.settle(store, send_outbox, flush_producer, wait=True)
        started = time.perf_counter()
        if self.unsent is not None:
            await send_outbox(self.unsent)  # restored: it may never have been sent
            self.unsent = None
        await flush_producer()
        batch, self.batch = self.batch, Outputs()
        # The pending units' rows as of this checkpoint (before the plan clears the set
        # of changed units), inserted with its rows.
        batch.pending_units = self.engine.pending_units()
        plan = self.checkpointer.plan()
        self.planned.hold(plan)
        held, self.held = self.held, []
        self.inflight = InFlight(plan, asyncio.ensure_future(self.sink.write(batch)), held,
                                 started)
        self.events_since = 0
        self.last_checkpoint = time.monotonic()
        await asyncio.sleep(0)  # an insert that needs no wait is done at once

    async def settle(
        self,
        store: StateStore,
        send_outbox: Callable[[Outbox], Awaitable[None]],
        flush_producer: Callable[[], Awaitable[None]],
        *,
        wait: bool = False,
    ) -> bool:
        """Steps 3 and 4 of the checkpoint in flight, once its insert has returned (or
        waiting for it with ``wait``). A failed insert raises here (``SinkError``):
        nothing of that checkpoint is saved or acknowledged. True if one finished."""
        inflight = self.inflight
        if inflight is None or not (wait or inflight.insert.done()):
            return False
        try:
            await inflight.insert
        except BaseException:
            self.inflight = None  # the worker stops; the next one replays the input
            raise
        plan = inflight.plan
        for key, value in plan.batched:
            store.set(key, value)
        if plan.batched:
            await flush_producer()
        # One record per producer batch: the embedded broker (Tansu 0.6) reports the
        # end of a partition as the last batch's first offset + 1, so a changelog whose
        # last batch held several records would look shorter than it is, and recovery
        # would stop early (or refuse to start). Single-record batches keep it exact
        # (the summaries above may share batches: the meta record always comes later).
        for key, value in plan.writes:
            store.set(key, value)
            await flush_producer()
        for key in plan.deletes:
            store.delete(key)
        if plan.deletes:
            await flush_producer()
        store.set(*plan.outbox_record)
        await flush_producer()
        store.set(*plan.meta)
        await flush_producer()
        self.planned.release()
        if plan.outbox is not None:
            await send_outbox(plan.outbox)
            await flush_producer()
            self.reported_clock = plan.outbox.clock_ms
        self.inflight = None
        for ack in inflight.acks:
            ack()
        self.last_plan = plan
        if self.metrics is not None:
            self.metrics.checkpointed(self.partition, time.perf_counter() - inflight.started,
                                      len(self.engine.units))
        return True
