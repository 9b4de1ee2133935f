"""The rollup stage's state, checkpoints and alerting, free of Faust.

Its state is small (the open windows' totals, which outbox of each partition it
applied last, and the detectors' baselines), so a checkpoint is a full snapshot with
the input offset it covers. The snapshot's records are keyed by checkpoint number and
the meta record naming them goes last, so a crash mid-write leaves the previous
snapshot intact; the previous records are deleted only after the new meta is durable.

"Now" is each message's time stamp (``apply``, ``tick``), so a replay from the last
snapshot decides exactly what the first run decided (see ``core.rollup``).

A checkpoint also emits the budgets whose state changed (``BudgetState``, for the
compacted ``budget-state`` topic gateways are answered from), before its snapshot: a
crash in between only sends the same states again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import orjson

from schemas.errors import StateError
from schemas.outputs import Alert, BudgetState, CostPerOutcomeWindow
from streams.core.alerts import AlertEngine
from streams.core.alerts.forecast import SpendForecast
from streams.core.records import Outputs
from streams.core.rollup import WindowRollup
from streams.core.windows import Outbox
from streams.runtime.ports import Sink, StateStore

META_KEY = b"rollup/meta"
#: A budget's new state, or ``None`` once it is removed, by budget id.
BudgetStateChanges = list[tuple[str, BudgetState | None]]
#: What a checkpoint sends: window rows, alerts, budget state changes.
RollupEmit = Callable[[list[CostPerOutcomeWindow], list[Alert], BudgetStateChanges],
                      Awaitable[None]]
CHUNK_BYTES = 512 * 1024


class RollupRuntime:
    def __init__(self, sink: Sink, alerts: AlertEngine, *, currency: str,
                 idle_seconds: float, interval_seconds: float, topic: str,
                 partitions: int = 1, dimension_cap: int = 500) -> None:
        self.sink = sink
        self.alerts = alerts
        self.currency = currency
        self.idle_seconds = idle_seconds
        self.interval = interval_seconds
        self.topic = topic
        self.partitions = partitions
        self.rollup = WindowRollup(currency, idle_seconds, partitions, dimension_cap)
        self.now_ms = 0  # the time stamp of the last message applied
        self.restored = False
        self.applied_offset = -1
        self.position = -1  # the last message taken from the stream, ticks included
        self.first_offset: int | None = None
        self.held: list[Callable[[], object]] = []
        self.last_checkpoint = time.monotonic()
        self.seq = 0
        self.chunks = 0
        # The event-clock hour forecasts were last written for: once an hour of event
        # time is plenty for a month-end projection (ClickHouse keeps an hour's latest).
        self.forecast_hour = -1
        self.notify: Callable[[list[Alert]], None] = lambda alerts: None

    def reset(self) -> None:
        """Forget everything not saved (the partition was revoked); who is notified of
        alerts stays."""
        notify = self.notify
        self.__init__(self.sink, self.alerts.fresh(), currency=self.currency,  # type: ignore[misc]
                      idle_seconds=self.idle_seconds, interval_seconds=self.interval,
                      topic=self.topic, partitions=self.partitions)
        self.notify = notify

    def _due_forecasts(self) -> list[tuple[SpendForecast, str]]:
        hour = self.alerts.forecaster.clock_ms // 3_600_000
        if not hour or hour == self.forecast_hour:
            return []
        self.forecast_hour = hour
        return [(f, self.currency) for f in self.alerts.forecasts()]

    def restore(self, store: StateStore) -> None:
        self.restored = True
        meta = store.get(META_KEY)
        if meta is None:
            return
        decoded = orjson.loads(meta)
        self.seq = decoded["seq"]
        chunks = []
        for index in range(decoded["chunks"]):
            chunk = store.get(_chunk_key(self.seq, index))
            if chunk is None:
                raise StateError("a rollup snapshot record is missing from the state table",
                                 key=_chunk_key(self.seq, index).decode())
            chunks.append(chunk)
        data = b"".join(chunks)
        state = orjson.loads(data)
        self.rollup.load(orjson.dumps(state["rollup"]))
        self.alerts.load(state["alerts"])
        self.applied_offset = decoded["offset"]
        self.chunks = decoded["chunks"]

    def already_applied(self, offset: int) -> bool:
        return offset <= self.applied_offset

    def apply(self, outbox: Outbox, offset: int, timestamp_ms: int) -> None:
        self.now_ms = max(self.now_ms, timestamp_ms)
        self.rollup.apply(outbox, self.now_ms)
        if self.first_offset is None:
            self.first_offset = offset
        self.applied_offset = offset

    def tick(self, timestamp_ms: int) -> None:
        """Time passed (a tick message's time stamp): windows may close."""
        self.now_ms = max(self.now_ms, timestamp_ms)
        self.rollup.close(self.now_ms)

    def hold(self, ack: Callable[[], object]) -> None:
        self.held.append(ack)

    def checkpoint_pending(self) -> bool:
        """Unacknowledged input, or rows to emit or windows to close."""
        return bool(self.held) or self.rollup.has_pending(self.now_ms)

    def checkpoint_due(self) -> bool:
        return bool(self.held) and time.monotonic() - self.last_checkpoint >= self.interval

    async def checkpoint(
        self,
        store: StateStore,
        emit: RollupEmit,
        flush_producer: Callable[[], Awaitable[None]],
    ) -> list[CostPerOutcomeWindow]:
        now = self.now_ms
        running = self.rollup.updates()
        finals = self.rollup.take_ready()
        alerts = self.alerts.observe(running, finals, self.rollup.mix(), now,
                                     self.rollup.histograms)
        await emit(running + finals, alerts, self.alerts.budget_state_changes())
        await flush_producer()
        batch = Outputs(windows=running + finals, alerts=alerts,
                        forecasts=self._due_forecasts())
        if self.first_offset is not None:
            batch.cover(self.topic, 0, self.first_offset)
            batch.cover(self.topic, 0, self.applied_offset)
        await self.sink.write(batch)
        self.notify(alerts)
        snapshot = orjson.dumps({
            "rollup": orjson.Fragment(self.rollup.dump()),
            "alerts": orjson.Fragment(self.alerts.dump()),
        })
        chunks = [snapshot[i:i + CHUNK_BYTES] for i in range(0, len(snapshot), CHUNK_BYTES)]
        previous = [_chunk_key(self.seq, i) for i in range(self.chunks)]
        self.seq += 1
        # One record per producer batch (see partition_runtime: Tansu's end offsets).
        for index, chunk in enumerate(chunks):
            store.set(_chunk_key(self.seq, index), chunk)
            await flush_producer()
        self.chunks = len(chunks)
        store.set(META_KEY, orjson.dumps(
            {"offset": self.applied_offset, "seq": self.seq, "chunks": len(chunks)}))
        await flush_producer()
        for key in previous:
            store.delete(key)  # the new meta no longer names it
            await flush_producer()
        held, self.held = self.held, []
        for ack in held:
            ack()
        self.first_offset = None
        self.last_checkpoint = time.monotonic()
        return running + finals


def _chunk_key(seq: int, index: int) -> bytes:
    return f"rollup/{seq}/{index}".encode()
