"""Drive the pure core the way the worker does, without a broker: partition engines,
checkpoints (optionally a simulated crash and restore), and the rollup stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from schemas.events import CostItem
from schemas.outputs import CostPerOutcomeWindow, WorkUnitAttribution
from schemas.partitioner import partition_for
from schemas.pricing import PriceBook
from streams.core.checkpoint import Checkpointer, CheckpointPlan, meta_key, outbox_key
from streams.core.engine import Outputs, PartitionEngine, Source
from streams.core.engine_config import EngineConfig
from streams.core.rollup import WindowRollup
from streams.core.windows import Outbox
from streams.core.workflows import WorkflowRegistry

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


def cost(event_id: str, unit: str | None, seconds: float, **fields: Any) -> dict[str, Any]:
    """A cost item (``unit`` None: a shared cost of its team and workflow)."""
    event = {"event_id": event_id, "occurred_at": at(seconds), "team": "support",
             "workflow": "triage", "kind": "tool_call", "amount": "0.5", "currency": "USD"}
    if unit is not None:
        event["work_unit_id"] = unit
    if "quantity" in fields:
        del event["amount"]
    event.update(fields)
    return event


def kind_of(event: dict[str, Any]) -> str:
    if "model" in event:
        return "calls"
    return "costs" if "amount" in event or "unit_price" in event else "outcomes"


def key_of(event: dict[str, Any]) -> str:
    """The event's Kafka key, as the publisher gives it."""
    if kind_of(event) == "costs":
        return CostItem.model_validate(event).key
    return str(event["work_unit_id"])


ADDITIVE = ("calls", "retries", "failed_calls", "input_tokens", "output_tokens", "spend",
            "unpriced_calls", "work_units", "outcomes", "decided_units", "accepted_outcomes",
            "value", "human_cost", "fully_loaded_cost", "linked_spend", "unlinked_spend",
            "other_cost", "shared_cost", "cost_items", "quality_failed_units",
            "latency_failed_units", "integrity_failed_units", "accepted_value",
            "value_at_risk", "strategic_units", "strategic_score_sum",
            "strategic_confidence_sum", "strategic_confident_units",
            "evidence_confidence_sum", "evidence_confident_units", "review_minutes",
            "reviewed_outcomes", "verdicts")


@dataclass
class Run:
    """Everything a harness run produced."""

    outputs: Outputs = field(default_factory=Outputs)
    attributions: dict[str, WorkUnitAttribution] = field(default_factory=dict)
    windows: dict[str, CostPerOutcomeWindow] = field(default_factory=dict)

    def window_totals(self) -> dict[str, dict[str, Any]]:
        """Each window's figures: its row plus its corrections, added up as the views
        do (additive fields only), by the window's id."""
        totals: dict[str, dict[str, Any]] = {}
        for row in self.windows.values():
            base = row.window_id.split("#", 1)[0]
            figures = totals.setdefault(base, {name: 0 for name in ADDITIVE})
            for name in ADDITIVE:
                figures[name] += getattr(row, name)
        return totals

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
        self.registry = WorkflowRegistry(self.config.workflows)  # replace to change it live
        self.partitions = partitions
        self.now_ms = int(((now or T0) + timedelta(days=3)).timestamp() * 1000)
        self.book = BOOK
        self.stores: dict[int, dict[bytes, bytes]] = {p: {} for p in range(partitions)}
        # Each partition's checkpointer, as its runtime holds one beside its engine.
        self.checkpointers: dict[int, Checkpointer] = {}
        self.engines = {p: self._engine(p) for p in range(partitions)}
        self.offsets: dict[tuple[str, int], int] = {}
        self.rollup = WindowRollup(self.config.currency, idle_seconds=10**9,
                                   dimension_cap=self.config.dimension_cap)
        self.run = Run()
        for partition in self.engines:
            # The rollup learns of every partition (as a worker's first checkpoint tells
            # it), so none of them finalises a window the others have not reached.
            checkpointer = self.checkpointers[partition]
            self.rollup.apply(Outbox(partition, checkpointer.epoch, 0, 0, {}), self.now_ms)

    def _engine(self, partition: int) -> PartitionEngine:
        engine = PartitionEngine(partition, self.config, lambda: self.book,
                                 lambda: self.now_ms, store=self.stores[partition],
                                 workflows=lambda: self.registry)
        self.checkpointers[partition] = Checkpointer(engine)
        return engine

    def message(self, kind: str, events: list[dict[str, Any]] | bytes,
                partition: int | None = None) -> Outputs:
        """Send one Kafka message (a batch) to a partition (murmur2 of the first unit)."""
        value = events if isinstance(events, bytes) else orjson.dumps(events)
        if partition is None:
            first = events[0] if not isinstance(events, bytes) and events else {}
            unit = key_of(first) if isinstance(first, dict) and first else "x"
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
                          or partition_for(key_of(batch[0]), self.partitions)
                          != partition_for(key_of(event), self.partitions)):
                self.message(kind_of(batch[0]), batch)
                batch = []
            batch.append(event)
        if batch:
            self.message(kind_of(batch[0]), batch)

    def collect_windows(self) -> list[CostPerOutcomeWindow]:
        """Checkpoint every partition (its outbox reaches the rollup); keep the latest
        rows (corrections are rows of their own)."""
        for partition in self.engines:
            self.checkpoint(partition)
        return self.rows()

    def rows(self) -> list[CostPerOutcomeWindow]:
        rows = self.rollup.updates() + self.rollup.take_ready()
        for row in rows:
            previous = self.run.windows.get(row.window_id)
            if previous is None or row.final or not previous.final:
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

    def checkpoint(self, partition: int, *, send: bool = True) -> CheckpointPlan:
        """As the worker does: save the plan's records to the partition's store, then
        send its outbox to the rollup (``send=False``: crash before sending it)."""
        checkpointer = self.checkpointers[partition]
        plan = checkpointer.plan()
        write_plan(self.stores[partition], plan)
        if send and plan.outbox is not None:
            self.rollup.apply(Outbox.decode(plan.outbox.encode()), self.now_ms)
        return plan

    def crash_and_restore(self, partition: int, plans: list[CheckpointPlan] | None = None
                          ) -> None:
        """Lose the partition's memory; rebuild it from its store (the records of every
        plan written so far), resending the last outbox as the worker does."""
        outbox = self.restore(partition)
        if outbox is not None:
            self.rollup.apply(Outbox.decode(outbox.encode()), self.now_ms)

    def restore(self, partition: int) -> Outbox | None:
        """A new engine for ``partition`` from its store's last checkpoint (which must
        exist); returns the outbox that checkpoint had to send."""
        store = self.stores[partition]
        engine = self._engine(partition)  # with a fresh checkpointer beside it
        meta = store[meta_key(partition)]
        outbox = self.checkpointers[partition].restore(
            meta, [store[k] for k in Checkpointer.segment_keys(partition, meta)],
            store.get(outbox_key(partition)))
        self.engines[partition] = engine
        return outbox


def write_plan(store: dict[bytes, bytes], plan: CheckpointPlan) -> None:
    """A checkpoint plan's records into a store, in the order the runtime writes them."""
    for key, value in [*plan.batched, *plan.writes]:
        store[key] = value
    for key in plan.deletes:
        store.pop(key, None)
    store[plan.outbox_record[0]] = plan.outbox_record[1]
    store[plan.meta[0]] = plan.meta[1]


def comparable(attribution: WorkUnitAttribution) -> dict[str, Any]:
    """An attribution's figures without the arrival-order-dependent label."""
    data = attribution.model_dump()
    data.pop("state")
    return data
