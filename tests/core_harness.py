"""Drive the pure core the way the worker does, without a broker: partition engines,
checkpoints (optionally a simulated crash and restore), and the rollup stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from schemas.outputs import CostPerOutcomeWindow, WorkUnitAttribution
from schemas.partitioner import partition_for
from schemas.pricing import PriceBook
from streams.core.checkpoint import Checkpointer, CheckpointPlan
from streams.core.config import EngineConfig
from streams.core.engine import Outputs, PartitionEngine, Source
from streams.core.rollup import WindowRollup, decode_partials, encode_partials

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
BOOK = PriceBook.load()


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def call(event_id: str, unit: str, seconds: float, **fields: Any) -> dict[str, Any]:
    event = {"event_id": event_id, "work_unit_id": unit, "occurred_at": at(seconds),
             "provider": "openai", "model": "gpt-4o", "input_tokens": 1000,
             "output_tokens": 200, "team": "support", "workflow": "triage"}
    event.update(fields)
    return event


def outcome(event_id: str, unit: str, seconds: float, **fields: Any) -> dict[str, Any]:
    event = {"event_id": event_id, "work_unit_id": unit, "occurred_at": at(seconds),
             "team": "support", "workflow": "triage", "status": "accepted",
             "value": "10", "currency": "USD"}
    event.update(fields)
    return event


def kind_of(event: dict[str, Any]) -> str:
    return "calls" if "model" in event else "outcomes"


@dataclass
class Run:
    """Everything a harness run produced."""

    outputs: Outputs = field(default_factory=Outputs)
    attributions: dict[str, WorkUnitAttribution] = field(default_factory=dict)
    windows: dict[str, CostPerOutcomeWindow] = field(default_factory=dict)

    def keep(self, out: Outputs) -> None:
        self.outputs.extend(out)
        for attribution in out.attributions:
            previous = self.attributions.get(attribution.attribution_id)
            if previous is None or attribution.revision >= previous.revision:
                self.attributions[attribution.attribution_id] = attribution


class Harness:
    def __init__(self, partitions: int = 1, now: datetime | None = None,
                 **config: Any) -> None:
        defaults = {"deadline_seconds": 3600, "retention_seconds": 3600,
                    "allowed_lateness_seconds": 120}
        defaults.update(config)
        self.config = EngineConfig(partitions=partitions, **defaults)
        self.partitions = partitions
        self.now_ms = int(((now or T0) + timedelta(days=3)).timestamp() * 1000)
        self.engines = {p: self._engine(p) for p in range(partitions)}
        self.offsets: dict[tuple[str, int], int] = {}
        self.rollup = WindowRollup("USD", idle_seconds=10**9)
        self.run = Run()

    def _engine(self, partition: int) -> PartitionEngine:
        return PartitionEngine(partition, self.config, lambda: BOOK, lambda: self.now_ms)

    def message(self, kind: str, events: list[dict[str, Any]] | bytes,
                partition: int | None = None) -> Outputs:
        """Send one Kafka message (a batch) to a partition (murmur2 of the first unit)."""
        value = events if isinstance(events, bytes) else orjson.dumps(events)
        if partition is None:
            first = events[0] if not isinstance(events, bytes) and events else {}
            unit = first.get("work_unit_id", "x") if isinstance(first, dict) else "x"
            partition = partition_for(str(unit), self.partitions)
        offset = self.offsets.get((kind, partition), -1) + 1
        self.offsets[(kind, partition)] = offset
        out = self.engines[partition].process(kind, value, Source(kind, partition, offset))  # type: ignore[arg-type]
        self.run.keep(out)
        return out

    def send(self, events: list[dict[str, Any]], per_message: int = 1) -> None:
        """Each event to its own partition, ``per_message`` consecutive events a message."""
        batch: list[dict[str, Any]] = []
        for event in events:
            if batch and (kind_of(batch[0]) != kind_of(event) or len(batch) >= per_message
                          or partition_for(batch[0]["work_unit_id"], self.partitions)
                          != partition_for(event["work_unit_id"], self.partitions)):
                self.message(kind_of(batch[0]), batch)
                batch = []
            batch.append(event)
        if batch:
            self.message(kind_of(batch[0]), batch)

    def collect_windows(self) -> list[CostPerOutcomeWindow]:
        """Feed every partition's window cells to the rollup; keep the latest rows."""
        for partition, engine in self.engines.items():
            message = encode_partials(partition, engine.clock_ms, engine.partial_updates())
            self.rollup.apply(*decode_partials(message), self.now_ms)
        rows = self.rollup.updates() + self.rollup.close(self.now_ms)
        for row in rows:
            self.run.windows[row.window_id] = row
        return rows

    def finish(self, seconds_later: float = 10 * 86400) -> Run:
        """Move every clock far ahead (closing windows, expiring units) and collect."""
        last = max((e.max_event_ms for e in self.engines.values()), default=0)
        far = datetime.fromtimestamp(last / 1000, tz=UTC) + timedelta(seconds=seconds_later)
        for partition in self.engines:
            self._advance_only(partition, far)
        self.collect_windows()
        return self.run

    def _advance_only(self, partition: int, moment: datetime) -> None:
        engine = self.engines[partition]
        engine.max_event_ms = max(engine.max_event_ms, int(moment.timestamp() * 1000))
        self.run.keep(engine.tick())

    def checkpoint(self, partition: int) -> CheckpointPlan:
        """As the worker does: send the window cells to the rollup, then save."""
        engine = self.engines[partition]
        message = encode_partials(partition, engine.clock_ms, engine.partial_updates())
        self.rollup.apply(*decode_partials(message), self.now_ms)
        checkpointer = getattr(self.engines[partition], "_checkpointer", None)
        if checkpointer is None:
            checkpointer = Checkpointer(self.engines[partition])
            self.engines[partition]._checkpointer = checkpointer  # type: ignore[attr-defined]
        return checkpointer.plan()

    def crash_and_restore(self, partition: int, plans: list[CheckpointPlan]) -> None:
        """Lose the partition's memory; rebuild it from the records of ``plans``."""
        store: dict[bytes, bytes] = {}
        for plan in plans:
            for key, value in plan.writes:
                store[key] = value
            for key in plan.deletes:
                store.pop(key, None)
            store[plan.meta[0]] = plan.meta[1]
        engine = self._engine(partition)
        checkpointer = Checkpointer(engine)
        meta = store[plans[-1].meta[0]]
        checkpointer.restore(meta, [store[k] for k in Checkpointer.segment_keys(partition, meta)])
        engine._checkpointer = checkpointer  # type: ignore[attr-defined]
        self.engines[partition] = engine


def comparable(attribution: WorkUnitAttribution) -> dict[str, Any]:
    """An attribution's figures without the arrival-order-dependent label."""
    data = attribution.model_dump()
    data.pop("state")
    return data
