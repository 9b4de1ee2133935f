"""The agents' handlers and the outlet, driven with fakes: a dict for the state table,
a list for the sink, a recording producer, real metrics, and no broker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter

from schemas.errors import SinkError
from schemas.outputs import CostPerOutcomeWindow, DeadLetter, WorkUnitAttribution
from schemas.partitioner import partition_for
from streams.core.alerts import AlertEngine
from streams.core.records import Outputs
from streams.core.windows import Outbox
from streams.feeds.price_feed import PriceBookHolder
from streams.kafka.handlers import (
    InputHandler,
    RollupHandler,
    consumer_lag,
    partition_runtime_factory,
    send_ticks,
)
from streams.kafka.outlet import TICK, Outlet
from streams.kafka.topics import Topics
from streams.ops.metrics import Metrics
from streams.runtime.rollup_runtime import RollupRuntime
from streams.settings import Settings
from tests.core_harness import call, outcome

PARTITIONS = 4


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    timestamp: float | None = None


class DictStore:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def set(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)


class ListSink:
    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.batches: list[Outputs] = []
        self.fail_with = fail_with

    async def write(self, batch: Outputs) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(batch)


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, int | None]] = []
        self.flushes = 0

    async def send(self, topic: str, key: bytes | None, value: bytes,
                   partition: int | None) -> None:
        self.sent.append((topic, key, value, partition))

    async def flush(self) -> None:
        self.flushes += 1

    def to(self, topic: str) -> list[tuple[bytes | None, bytes, int | None]]:
        return [(key, value, partition) for t, key, value, partition in self.sent if t == topic]


class Acks:
    def __init__(self) -> None:
        self.done: list[int] = []

    def of(self, offset: int) -> Any:
        return lambda: self.done.append(offset)


@dataclass
class Rig:
    topics: Topics
    producer: RecordingProducer
    outlet: Outlet
    store: DictStore
    sink: ListSink
    metrics: Metrics
    inputs: InputHandler
    highwater: dict[tuple[str, int], int]
    alerted: list[Any]


def rig(tmp_path: Path, *, sink: ListSink | None = None, store: DictStore | None = None,
        max_events: int = 100_000, overlap: bool = False) -> Rig:
    settings = Settings(data_dir=tmp_path, partitions=PARTITIONS, topic_prefix="t.",
                        checkpoint_interval_seconds=3600, checkpoint_max_events=max_events)
    topics = Topics(settings.topic_prefix, settings.partitions)
    producer, metrics = RecordingProducer(), Metrics()
    alerted: list[Any] = []
    outlet = Outlet(producer, topics, metrics, alerted.extend)
    store = store or DictStore()
    sink = sink or ListSink()
    highwater: dict[tuple[str, int], int] = {}
    inputs = InputHandler(
        topics, outlet, store,
        partition_runtime_factory(settings, PriceBookHolder.from_catalog(None), sink, metrics,
                                  store),
        metrics, lambda topic, partition: highwater.get((topic, partition)), overlap=overlap)
    return Rig(topics, producer, outlet, store, sink, metrics, inputs, highwater, alerted)


def unit_on(partition: int) -> str:
    return next(f"wu-{i}" for i in range(10_000) if partition_for(f"wu-{i}", PARTITIONS)
                == partition)


def decode_models(value: bytes, model: type[Any]) -> list[Any]:
    return TypeAdapter(list[model]).validate_json(value)  # type: ignore[valid-type]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def metric(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


def test_messages_are_held_until_a_checkpoint_covers_them(tmp_path: Path) -> None:
    r = rig(tmp_path, max_events=3)
    unit = unit_on(1)
    acks = Acks()
    events = [("calls", call("c1", unit, 0)), ("calls", call("c2", unit, 5)),
              ("outcomes", outcome("o1", unit, 10))]

    async def go() -> None:
        for offset, (kind, event) in enumerate(events):
            topic = r.topics.calls if kind == "calls" else r.topics.outcomes
            await r.inputs.handle(Message(topic, 1, offset), orjson.dumps(event),
                                  acks.of(offset))
            if offset < 2:
                assert acks.done == [] and r.sink.batches == []  # nothing durable yet

    run(go())
    # The outcome's attribution went out at once, on the unit's partition.
    [(_key, value, partition)] = r.producer.to(r.topics.attributions)
    [attribution] = decode_models(value, WorkUnitAttribution)
    assert partition == 1 and attribution.work_unit_id == unit and attribution.accepted
    # The third message made the checkpoint due: rows stored, window changes sent to the
    # rollup, then every held message acknowledged.
    assert acks.done == [0, 1, 2]
    [batch] = r.sink.batches
    assert sorted(record.call.event_id for record in batch.calls) == ["c1", "c2"]
    [(_, outbox_bytes, rollup_partition)] = r.producer.to(r.topics.window_partials)
    assert rollup_partition == 0 and Outbox.decode(outbox_bytes).partition == 1
    assert metric(r.metrics, "tokenyield_events_in_total", {"topic": r.topics.calls}) == 2


def test_a_replayed_message_is_acknowledged_and_not_applied_again(tmp_path: Path) -> None:
    r = rig(tmp_path, max_events=1)
    unit = unit_on(2)
    acks = Acks()
    value = orjson.dumps(call("c1", unit, 0))
    run(r.inputs.handle(Message(r.topics.calls, 2, 0), value, acks.of(0)))
    assert acks.done == [0]
    # A new worker restores the checkpoint from the same table and sees the message again.
    again = rig(tmp_path, store=r.store)
    run(again.inputs.handle(Message(again.topics.calls, 2, 0), value, acks.of(0)))
    assert acks.done == [0, 0] and again.producer.sent == [] and again.sink.batches == []
    assert again.inputs.runtimes[2].engine.ledger.received == 1  # restored, not re-counted


def test_a_revoked_partition_restarts_from_its_last_checkpoint(tmp_path: Path) -> None:
    r = rig(tmp_path, max_events=1)
    unit = unit_on(0)
    acks = Acks()
    run(r.inputs.handle(Message(r.topics.calls, 0, 0), orjson.dumps(call("c1", unit, 0)),
                        acks.of(0)))
    r.inputs.runtimes[0].max_events = 10  # the next message stays unsaved
    run(r.inputs.handle(Message(r.topics.calls, 0, 1), orjson.dumps(call("c2", unit, 1)),
                        acks.of(1)))
    assert r.inputs.runtimes[0].engine.ledger.received == 2 and acks.done == [0]
    r.inputs.forget(0)
    assert 0 not in r.inputs.runtimes
    run(r.inputs.handle(Message(r.topics.ticks, 0, 0), TICK, acks.of(-1)))
    # Only the checkpointed call is known: the unsaved one is redone by its next reader.
    assert r.inputs.runtimes[0].engine.ledger.received == 1


def test_an_idle_tick_is_acknowledged_at_once(tmp_path: Path) -> None:
    r = rig(tmp_path)
    acks = Acks()
    run(r.inputs.handle(Message(r.topics.ticks, 3, 7), TICK, acks.of(7)))
    # A fresh partition still owes the rollup its clock: the first tick is held...
    run(r.inputs.handle(Message(r.topics.ticks, 3, 8), TICK, acks.of(8)))
    runtime = r.inputs.runtimes[3]
    run(runtime.checkpoint(r.store, r.outlet.send_outbox, r.outlet.flush))
    # ...and once checkpointed, an idle tick has nothing to save and is acked directly.
    run(r.inputs.handle(Message(r.topics.ticks, 3, 9), TICK, acks.of(9)))
    assert 9 in acks.done and not runtime.held


def test_a_backlog_on_one_input_holds_the_clock(tmp_path: Path) -> None:
    r = rig(tmp_path)
    unit = unit_on(1)
    r.highwater[(r.topics.outcomes, 1)] = 5  # five outcomes not read yet
    r.highwater[(r.topics.calls, 1)] = 1
    run(r.inputs.handle(Message(r.topics.calls, 1, 0), orjson.dumps(call("c1", unit, 0)),
                        lambda: None))
    engine = r.inputs.runtimes[1].engine
    assert engine.input_more_to_read == {"calls": False, "outcomes": True, "costs": False}
    r.highwater[(r.topics.outcomes, 1)] = 0
    run(r.inputs.handle(Message(r.topics.ticks, 1, 0), TICK, lambda: None))
    assert engine.input_more_to_read == {"calls": False, "outcomes": False, "costs": False}


def test_the_outlet_routes_every_kind_of_output(tmp_path: Path) -> None:
    r = rig(tmp_path)
    unit = unit_on(2)
    wrong = (partition_for(unit, PARTITIONS) + 1) % PARTITIONS

    async def go() -> None:
        await r.inputs.handle(Message(r.topics.calls, 2, 0), b"{not json", lambda: None)
        # A call on the wrong partition is sent again, keyed by its unit.
        await r.inputs.handle(Message(r.topics.calls, wrong, 0),
                              orjson.dumps(call("c9", unit, 0)), lambda: None)

    run(go())
    [(dead_key, dead_bytes, dead_partition)] = r.producer.to(r.topics.dead_letter)
    assert dead_key is None and dead_partition == 2
    [dead] = decode_models(dead_bytes, DeadLetter)
    assert (dead.source_topic, dead.partition, dead.offset) == \
        (r.topics.calls, 2, 0)
    assert metric(r.metrics, "tokenyield_events_rejected_total",
                  {"topic": r.topics.calls, "kind": dead.error_kind}) == 1
    [(key, value, partition)] = r.producer.to(r.topics.calls)
    assert partition is None and key == unit.encode() and orjson.loads(value)["event_id"] == "c9"


def test_a_failing_sink_propagates_and_acknowledges_nothing(tmp_path: Path) -> None:
    r = rig(tmp_path, sink=ListSink(SinkError("column builder broke", table="model_calls")),
            max_events=1)
    acks = Acks()
    with pytest.raises(SinkError, match="column builder"):
        run(r.inputs.handle(Message(r.topics.calls, 1, 0),
                            orjson.dumps(call("c1", unit_on(1), 0)), acks.of(0)))
    assert acks.done == [] and r.producer.to(r.topics.window_partials) == []


def test_the_rollup_handler_turns_outboxes_into_windows(tmp_path: Path) -> None:
    r = rig(tmp_path, max_events=2)
    unit = unit_on(1)

    async def partition_side() -> None:
        await r.inputs.handle(Message(r.topics.calls, 1, 0), orjson.dumps(call("c1", unit, 0)),
                              lambda: None)
        await r.inputs.handle(Message(r.topics.outcomes, 1, 0),
                              orjson.dumps(outcome("o1", unit, 10)), lambda: None)

    run(partition_side())
    [(_, outbox, _)] = r.producer.to(r.topics.window_partials)
    sink = ListSink()
    runtime = RollupRuntime(sink, AlertEngine(Settings().alert_config(), "USD"), currency="USD",
                            idle_seconds=30, interval_seconds=0.0001,
                            topic=r.topics.window_partials, partitions=1)
    rollup_store = DictStore()
    handler = RollupHandler(runtime, rollup_store, r.outlet)
    acks = Acks()
    stamp = 1_800_000_000.0
    run(handler.handle(Message(r.topics.window_partials, 0, 0, stamp), outbox, acks.of(0)))
    assert acks.done == [0]
    sent = [w for _, value, _ in r.producer.to(r.topics.windows)
            for w in decode_models(value, CostPerOutcomeWindow)]
    totals = [w for w in sent if w.scope == "total"]
    assert totals and all(w.calls == 1 for w in totals)  # one per window length
    assert sink.batches and sink.batches[0].windows == sent
    # The same outbox again (a replay after a crash) is acknowledged and ignored.
    runtime_again = RollupRuntime(sink, AlertEngine(Settings().alert_config(), "USD"),
                                  currency="USD", idle_seconds=30, interval_seconds=0.0001,
                                  topic=r.topics.window_partials, partitions=1)
    again = RollupHandler(runtime_again, rollup_store, r.outlet)
    run(again.handle(Message(r.topics.window_partials, 0, 0, stamp), outbox, acks.of(0)))
    assert acks.done == [0, 0] and len(sink.batches) == 1


def test_ticks_and_lag_follow_the_assignment(tmp_path: Path) -> None:
    r = rig(tmp_path)
    t = r.topics
    assignment = [(t.calls, 1), (t.outcomes, 1), (t.ticks, 1), (t.ticks, 3),
                  (t.window_partials, 0), ("t.state-changelog", 0)]
    run(send_ticks(r.outlet, t, assignment))
    assert r.producer.sent == [(t.ticks, None, TICK, 1), (t.ticks, None, TICK, 3),
                               (t.window_partials, None, TICK, 0)]
    run(r.inputs.handle(Message(t.calls, 1, 4), orjson.dumps(call("c1", unit_on(1), 0)),
                        lambda: None))
    rollup = RollupRuntime(ListSink(), AlertEngine(Settings().alert_config(), "USD"),
                           currency="USD", idle_seconds=30, interval_seconds=1,
                           topic=t.window_partials)
    rollup.position = 2
    ends = {(t.calls, 1): 10, (t.outcomes, 1): 3, (t.window_partials, 0): 3}
    lag = consumer_lag(assignment, lambda topic, p: ends.get((topic, p)), r.inputs, rollup, t)
    # calls: offsets 5..9 wait; outcomes: nothing applied, 0..2 wait; the rollup is current.
    assert lag == {(t.calls, 1): 5, (t.outcomes, 1): 3, (t.window_partials, 0): 0}


class GatedSink(ListSink):
    """An insert that lasts until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.started = 0

    async def write(self, batch: Outputs) -> None:
        self.started += 1
        await self.gate.wait()
        self.batches.append(batch)


def test_the_next_messages_are_processed_while_an_insert_runs_and_acked_only_after_it(
        tmp_path: Path) -> None:
    """The insert overlaps the next messages; nothing is saved or acknowledged before it
    returns, and the messages read meanwhile wait for their own checkpoint."""
    sink = GatedSink()
    r = rig(tmp_path, sink=sink, max_events=3, overlap=True)
    unit = unit_on(1)
    acks = Acks()

    async def go() -> None:
        for offset in range(5):
            await r.inputs.handle(Message(r.topics.calls, 1, offset),
                                  orjson.dumps(call(f"c{offset}", unit, offset)),
                                  acks.of(offset))
        runtime = r.inputs.runtimes[1]
        # Offsets 3 and 4 were applied while the first checkpoint's insert ran.
        assert sink.started == 1 and runtime.engine.ledger.received == 5
        assert acks.done == [] and r.store.data == {}  # nothing durable, nothing acked
        assert r.producer.to(r.topics.window_partials) == []
        sink.gate.set()
        await asyncio.sleep(0)
        await r.inputs.handle(Message(r.topics.ticks, 1, 0), TICK, acks.of(-1))
        assert acks.done == [0, 1, 2]  # the first checkpoint's, after its insert
        assert r.store.data and len(r.producer.to(r.topics.window_partials)) == 1
        [batch] = sink.batches
        assert sorted(rec.call.event_id for rec in batch.calls) == ["c0", "c1", "c2"]

    run(go())


def test_a_crash_during_an_overlapped_insert_replays_from_the_previous_checkpoint(
        tmp_path: Path) -> None:
    sink = GatedSink()
    r = rig(tmp_path, sink=sink, max_events=2, overlap=True)
    unit = unit_on(2)
    acks = Acks()
    values = [orjson.dumps(call(f"c{i}", unit, i)) for i in range(3)]

    async def go() -> None:
        for offset, value in enumerate(values):
            await r.inputs.handle(Message(r.topics.calls, 2, offset), value, acks.of(offset))

    run(go())  # the insert never returns: the worker dies with it in flight
    assert acks.done == [] and r.store.data == {}
    again = rig(tmp_path, store=r.store, max_events=2, overlap=True)

    async def replay() -> None:
        for offset, value in enumerate(values):
            await again.inputs.handle(Message(again.topics.calls, 2, offset), value,
                                      acks.of(offset))
        await again.inputs.handle(Message(again.topics.ticks, 2, 0), TICK, acks.of(-1))

    run(replay())
    assert acks.done[:2] == [0, 1]
    assert again.inputs.runtimes[2].engine.ledger.received == 3
    assert sorted(rec.call.event_id for rec in again.sink.batches[0].calls) == ["c0", "c1"]


def test_a_backfill_of_many_windows_is_sent_in_messages_under_the_limit(
        tmp_path: Path) -> None:
    """Weeks replayed at once close thousands of windows in one checkpoint: they go out
    in several messages, each under the producer's request limit, every row once."""
    from streams.core.cells import CELL_FIELDS
    from streams.core.rollup import window_row
    from streams.kafka.outlet import MAX_MESSAGE_BYTES

    r = rig(tmp_path)
    base = window_row((60_000, 1_800_000_000_000, "support", "triage", "t"),
                      [1] * CELL_FIELDS, 1, True, "USD")
    rows = [base.model_copy(update={"window_id": f"w{i}", "calls": i}) for i in range(20_000)]
    run(r.outlet.emit_rollup(rows, []))
    sent = r.producer.to(r.topics.windows)
    assert len(sent) > 1 and all(len(value) <= MAX_MESSAGE_BYTES for _, value, _ in sent)
    got = [w for _, value, _ in sent for w in decode_models(value, CostPerOutcomeWindow)]
    assert [w.window_id for w in got] == [w.window_id for w in rows]
