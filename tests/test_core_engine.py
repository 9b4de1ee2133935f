"""The join and the windows, as a pure state machine (no broker, no ClickHouse)."""

from __future__ import annotations

import random
from decimal import Decimal

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.partitioner import partition_for
from streams.core.attribution import version_of
from streams.core.checkpoint import Checkpointer
from streams.core.engine import PartitionEngine, Source
from streams.core.engine_config import EngineConfig
from streams.core.money import to_atto
from streams.core.unit import UnitState
from tests.core_harness import BOOK, T0, Harness, call, comparable, outcome

T0_MS = int(T0.timestamp() * 1000)
GPT4O_CALL = Decimal(1000) * Decimal("2.5") / 1_000_000 + Decimal(200) * 10 / 1_000_000


def story() -> list[dict[str, object]]:
    """Four units: accepted after a retry, rejected, two outcomes, and no outcome."""
    return [
        call("a1", "A", 0), call("a2", "A", 5, attempt=2, status="ok"),
        outcome("ao", "A", 30, human_review_minutes="3", review_rate="60"),
        call("b1", "B", 10, model="gpt-4o-mini"), outcome("bo", "B", 40, status="rejected",
                                                          value=None, currency=None),
        call("c1", "C", 20), outcome("co1", "C", 50, status="escalated", is_final=False,
                                     value="4"),
        call("c2", "C", 70), outcome("co2", "C", 90, status="resolved", value="6"),
        call("d1", "D", 25, agent="looper"),
    ]


def test_an_outcome_attributes_the_units_spend() -> None:
    harness = Harness()
    harness.send(story())
    a = harness.run.attributions["A"]
    assert (a.state, a.calls, a.retries, a.outcomes, a.accepted) == ("attributed", 2, 1, 1, True)
    assert a.model_cost == 2 * GPT4O_CALL
    assert a.human_cost == Decimal(3)  # 3 minutes at 60 per hour
    assert a.fully_loaded_cost == 2 * GPT4O_CALL + 3
    assert a.cost_per_outcome == a.fully_loaded_cost
    assert a.yield_ratio == (Decimal(10) / a.fully_loaded_cost).quantize(Decimal("1e-9"))
    assert a.net_value == 10 - a.fully_loaded_cost
    assert a.price_book_version == BOOK.version
    b = harness.run.attributions["B"]
    assert (b.outcome_status, b.accepted, b.value, b.primary_model) == \
        ("rejected", False, None, "gpt-4o-mini")
    c = harness.run.attributions["C"]
    assert (c.outcomes, c.outcome_status, c.is_final, c.value) == (2, "resolved", True,
                                                                   Decimal(10))
    assert "D" not in harness.run.attributions  # spend and no outcome yet: pending


def test_a_unit_without_outcome_by_its_deadline_is_unattributed() -> None:
    harness = Harness(deadline_seconds=600)
    harness.send(story())
    run = harness.finish()
    d = run.attributions["D"]
    assert (d.state, d.outcomes, d.model_cost) == ("unattributed", 0, GPT4O_CALL)
    assert d.revision == 2 * (1 + 1) + 1  # one event, its price, plus the expiry


def test_arrival_order_does_not_change_any_figure() -> None:
    reference = Harness()
    reference.send(story())
    expected = {k: comparable(v) for k, v in reference.finish().attributions.items()}
    expected_windows = {k: w for k, w in reference.run.windows.items()}
    for seed in range(25):
        events = story()
        random.Random(seed).shuffle(events)
        harness = Harness()
        harness.send(events)
        run = harness.finish()
        assert {k: comparable(v) for k, v in run.attributions.items()} == expected, seed
        assert {k: w.model_dump(exclude={"revision"}) for k, w in run.windows.items()} == {
            k: w.model_dump(exclude={"revision"}) for k, w in expected_windows.items()}, seed


def test_duplicates_are_applied_once_and_counted() -> None:
    harness = Harness()
    events = story()
    harness.send(events + events[:5])
    run = harness.finish()
    once = Harness()
    once.send(story())
    assert {k: comparable(v) for k, v in run.attributions.items()} == \
        {k: comparable(v) for k, v in once.finish().attributions.items()}
    assert harness.engines[0].ledger.duplicates == 5


def test_late_events_are_applied_and_audited() -> None:
    harness = Harness(allowed_lateness_seconds=60)
    harness.send([call("x1", "X", 1000)])
    out = harness.message("calls", [call("late", "Y", 900), call("fine", "Y", 950)])
    assert [e.event_id for e in out.late] == ["late"]  # the audit: how late it was
    late = out.late[0]
    assert late.lateness_seconds == pytest.approx(40.0)
    assert (late.source_topic, late.offset, late.index) == ("calls", 1, 0)
    ledger = harness.engines[0].ledger
    assert (ledger.late, ledger.applied) == (1, 3)  # late is a part of applied
    assert [c.call.event_id for c in out.calls] == ["late", "fine"]  # and both count
    harness.send([outcome("yo", "Y", 960)])
    assert harness.run.attributions["Y"].model_cost == 2 * GPT4O_CALL


def test_a_backlog_read_faster_on_one_topic_makes_nothing_late() -> None:
    # A worker catching up reads two hours of calls before the outcomes of the same
    # hours: the clock follows the slower input, so no outcome is late.
    harness = Harness(allowed_lateness_seconds=60)
    harness.engines[0].wait_for_inputs()  # as the worker does on start
    harness.engines[0].set_more_to_read("costs", False)  # ... and no cost items to read
    units = [f"U{i}" for i in range(24)]
    harness.send([call(f"c{i}", u, i * 300) for i, u in enumerate(units)], per_message=6)
    harness.send([outcome("first", units[0], 10)])
    out = harness.message("outcomes", [outcome(f"o{i}", u, i * 300 + 20)
                                       for i, u in enumerate(units) if i])
    assert out.late == []
    assert {u for u in units if harness.run.attributions[u].outcomes == 1} == set(units)
    engine = harness.engines[0]
    marks = engine.input_max_ms
    assert engine.clock_ms == min(marks["calls"], marks["outcomes"]) - 60_000


def test_a_silent_input_stops_holding_the_clock_after_the_idle_time() -> None:
    harness = Harness(allowed_lateness_seconds=60, input_idle_seconds=30)
    harness.send([call("c0", "A", 0), outcome("o0", "A", 5)])
    harness.send([call("c1", "B", 3000)])
    engine = harness.engines[0]
    outcomes_mark = engine.input_max_ms["outcomes"]
    assert engine.clock_ms == outcomes_mark - 60_000  # outcomes delivered just now
    harness.now_ms += 29_000
    harness.run.keep(engine.tick())
    assert engine.clock_ms == outcomes_mark - 60_000
    harness.now_ms += 2_000  # outcomes silent for 31 s: the calls alone drive the clock
    harness.run.keep(engine.tick())
    assert engine.clock_ms == engine.input_max_ms["calls"] - 60_000
    out = harness.message("outcomes", [outcome("o-old", "B", 100)])
    assert [e.event_id for e in out.late] == ["o-old"]  # late: audited, and applied
    assert harness.run.attributions["B"].outcomes == 1


def test_an_input_with_a_backlog_holds_the_clock_however_long_it_is_silent() -> None:
    harness = Harness(allowed_lateness_seconds=60, input_idle_seconds=30)
    harness.send([call("c0", "A", 0), outcome("o0", "A", 5), call("c1", "B", 3000)])
    engine = harness.engines[0]
    engine.set_more_to_read("outcomes", True)
    harness.now_ms += 3_600_000
    harness.run.keep(engine.tick())
    assert engine.clock_ms == engine.input_max_ms["outcomes"] - 60_000
    engine.set_more_to_read("outcomes", False)
    harness.run.keep(engine.tick())
    assert engine.clock_ms == engine.input_max_ms["calls"] - 60_000


def test_a_restarted_engine_waits_for_an_input_it_has_not_heard_from() -> None:
    harness = Harness(allowed_lateness_seconds=60, input_idle_seconds=30)
    engine = harness.engines[0]
    engine.wait_for_inputs()
    harness.send([call("c0", "A", 0), call("c1", "B", 3000)])
    assert engine.clock_ms == 0  # outcomes may still come: nothing is closed yet
    out = harness.message("outcomes", [outcome("o0", "A", 5)])
    assert out.late == [] and harness.run.attributions["A"].outcomes == 1
    harness.now_ms += 31_000
    harness.run.keep(engine.tick())
    assert engine.clock_ms == 3000 * 1000 + T0_MS - 60_000


def test_bad_events_go_to_dead_letters_and_their_neighbours_are_applied() -> None:
    harness = Harness()
    out = harness.message("calls", [call("ok1", "Q", 0), call("bad", "Q", 1, input_tokens=-3),
                                    {"not": "an event"}, call("ok2", "Q", 2)])
    assert [c.call.event_id for c in out.calls] == ["ok1", "ok2"]
    assert [(d.index, d.error_kind) for d in out.dead_letters] == [(1, "invalid_event"),
                                                                    (2, "invalid_event")]
    assert "input_tokens" in out.dead_letters[0].reason
    assert out.dead_letters[0].event_id == "bad"
    broken = harness.message("calls", b"\xff{broken")
    assert [(d.index, d.error_kind, d.offset) for d in broken.dead_letters] == \
        [(None, "malformed_json", 1)]
    ledger = harness.engines[0].ledger
    assert (ledger.received, ledger.rejected, ledger.applied) == (5, 3, 2)


def test_events_stamped_far_in_the_future_are_rejected() -> None:
    harness = Harness()
    out = harness.message("calls", [call("f", "F", 10 * 86400)])
    assert out.dead_letters[0].error_kind == "future_event_time"
    assert harness.engines[0].max_event_ms == 0  # the clock did not jump


def test_a_misrouted_event_is_forwarded_to_its_partition() -> None:
    harness = Harness(partitions=4)
    unit = next(f"u{i}" for i in range(100) if partition_for(f"u{i}", 4) == 2)
    out = harness.message("calls", [call("m1", unit, 0)], partition=1)
    assert [(kind, uid) for kind, uid, _ in out.reroute] == [("calls", unit)]
    assert orjson.loads(out.reroute[0][2])["event_id"] == "m1"
    assert harness.engines[1].ledger.rerouted == 1
    assert len(harness.engines[1].units) == 0


def test_money_in_other_currencies_is_converted_or_refused() -> None:
    harness = Harness(fx_rates={"EUR": Decimal("1.10")})
    harness.send([call("e1", "E", 0), outcome("e2", "E", 5, value="100", currency="EUR")])
    assert harness.run.attributions["E"].value == Decimal("110")
    out = harness.message("outcomes", [outcome("e3", "G", 5, value="1", currency="JPY")])
    assert out.dead_letters[0].error_kind == "unknown_currency"
    assert "JPY" in out.dead_letters[0].reason


def test_an_outcome_after_the_deadline_revives_the_unit() -> None:
    harness = Harness(deadline_seconds=600, retention_seconds=7200)
    harness.send([call("r1", "R", 0)])
    harness.send([call("z1", "Z", 800)])  # clock = 800 - 120 s lateness: past R's deadline
    assert harness.run.attributions["R"].state == "unattributed"
    harness.send([outcome("ro", "R", 805)])
    revived = harness.run.attributions["R"]
    assert (revived.state, revived.outcomes, revived.revision) == ("revised", 1, 6)
    run = harness.finish(seconds_later=120)  # close windows, but Z stays open
    totals = [w for w in run.windows.values() if w.scope == "total"
              and w.window_seconds == 3600]
    # Unlinked spend booked at expiry and taken back at revival nets to zero; the
    # revived unit's spend is linked.
    assert sum(w.unlinked_spend for w in totals) == 0
    assert sum(w.linked_spend for w in totals) == revived.model_cost == GPT4O_CALL


def test_windows_add_up_to_the_attributions() -> None:
    harness = Harness(deadline_seconds=600)
    harness.send(story())
    run = harness.finish()
    totals = [w for w in run.windows.values() if w.scope == "total" and w.window_seconds == 60]
    models = [w for w in run.windows.values() if w.scope == "model" and w.window_seconds == 60]
    attributions = run.attributions.values()
    spend = sum(a.model_cost for a in attributions)
    assert sum(w.spend for w in totals) == spend == sum(w.spend for w in models)
    assert sum(w.calls for w in totals) == 6
    assert sum(w.outcomes for w in totals) == 4
    assert sum(w.accepted_outcomes for w in totals) == 2  # A accepted, C resolved
    assert sum(w.value for w in totals) == Decimal(20)
    linked = sum(a.model_cost for a in attributions if a.outcomes)
    assert sum(w.linked_spend for w in totals) == linked
    assert sum(w.unlinked_spend for w in totals) == run.attributions["D"].model_cost
    assert all(w.final for w in run.windows.values())
    agents = [w for w in run.windows.values() if w.scope == "agent" and w.agent == "looper"]
    assert sum(w.spend for w in agents if w.window_seconds == 60) == GPT4O_CALL
    hourly = [w for w in run.windows.values() if w.scope == "total"
              and w.window_seconds == 3600]
    assert sum(w.spend for w in hourly) == spend
    busy = max(totals, key=lambda w: w.accepted_outcomes)
    assert busy.cost_per_accepted_outcome == busy.fully_loaded_cost / busy.accepted_outcomes


def test_a_runaway_unit_is_alerted_once_while_it_happens() -> None:
    harness = Harness(runaway_max_calls=50)
    alerts = []
    for i in range(120):
        alerts += harness.message("calls", [call(f"r{i}", "loop", i)]).alerts
    assert [a.kind for a in alerts] == ["runaway_work_unit"]
    assert alerts[0].subject["work_unit_id"] == "loop"
    assert alerts[0].observed == 51


def test_state_stays_bounded_units_are_evicted_after_retention() -> None:
    harness = Harness(deadline_seconds=600, retention_seconds=600)
    harness.send(story())
    assert len(harness.engines[0].units) == 4
    harness.finish()
    engine = harness.engines[0]
    assert len(engine.units) == 0 and not engine.book
    assert engine.ledger.summarized_attributed + engine.ledger.summarized_unattributed == 10


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6), st.integers(1, 5), st.integers(1, 9))
def test_a_crash_and_restore_at_any_checkpoint_changes_no_result(
        seed: int, per_message: int, crash_after: int) -> None:
    rng = random.Random(seed)
    events = [e for i in range(6) for e in (
        call(f"c{i}a", f"U{i}", i * 10), call(f"c{i}b", f"U{i}", i * 10 + 3, attempt=2),
        *([outcome(f"o{i}", f"U{i}", i * 10 + 30)] if i % 3 else []))]
    rng.shuffle(events)
    expected = Harness(partitions=2)
    expected.send(events, per_message=per_message)
    want = {k: comparable(v) for k, v in expected.finish().attributions.items()}
    want_windows = expected.run.window_totals()

    harness = Harness(partitions=2)
    plans: dict[int, list] = {0: [], 1: []}
    sent: list[tuple[int, str, list]] = []  # messages after each partition's last plan
    for index in range(0, len(events), per_message):
        chunk = events[index:index + per_message]
        for event in chunk:
            harness.send([event])
            partition = partition_for(event["work_unit_id"], 2)
            sent.append((partition, "calls" if "model" in event else "outcomes", [event]))
        if index // per_message % 2 == 1:
            for partition in (0, 1):
                plans[partition].append(harness.checkpoint(partition))
                sent = [s for s in sent if s[0] != partition]
        if index // per_message == crash_after:
            break
    for partition in (0, 1):
        if plans[partition]:
            harness.crash_and_restore(partition, plans[partition])
            harness.offsets = {k: v for k, v in harness.offsets.items() if k[1] != partition}
            for kind in ("calls", "outcomes"):
                applied = harness.engines[partition].applied_offsets.get(kind, -1)
                harness.offsets[(kind, partition)] = applied
            # Replay what the last checkpoint did not cover, as Kafka would.
            for _p, _kind, chunk in [s for s in sent if s[0] == partition]:
                harness.send(chunk)
    rest = events[min(len(events), (crash_after + 1) * per_message):]
    harness.send(rest, per_message=per_message)
    got = {k: comparable(v) for k, v in harness.finish().attributions.items()}
    assert got == want
    assert harness.run.window_totals() == want_windows


def test_a_checkpoint_takes_the_rows_of_the_pending_units_it_changed() -> None:
    """engine.pending_units(): a row for each unit changed since the last checkpoint that
    has calls and no decision, with its figures so far and a version its decision
    outranks; none for decided units, a unit without calls or a shared cost bucket."""
    now_ms = int(T0.timestamp() * 1000) + 86_400_000
    engine = PartitionEngine(0, EngineConfig(partitions=1, deadline_seconds=3600,
                                             retention_seconds=3600,
                                             allowed_lateness_seconds=120),
                             lambda: BOOK, lambda: now_ms, store={})
    offsets = iter(range(1000))

    def send(kind: str, *events: dict[str, object]) -> None:
        engine.process(kind, orjson.dumps(list(events)),  # type: ignore[arg-type]
                       Source(kind, 0, next(offsets)))

    send("calls", call("c1", "u1", 0), call("c2", "u1", 30, attempt=2),
         call("c3", "u2", 5), call("c4", "~shared:support", 6))
    send("outcomes", outcome("o2", "u2", 60), outcome("o3", "u3", 61))
    rows = {row.unit_id: row for row in engine.pending_units()}
    assert set(rows) == {"u1"}
    u1 = rows["u1"]
    assert (u1.calls, u1.retries, u1.unpriced) == (2, 1, 0)
    assert u1.cost_atto > 0 and u1.loaded_atto == u1.cost_atto
    assert u1.last_ms - u1.first_ms == 30_000

    Checkpointer(engine).plan()
    assert engine.pending_units() == []  # nothing changed since
    send("calls", call("c5", "u1", 90, reported_cost="0.5", currency="USD"))
    again = engine.pending_units()
    assert [row.unit_id for row in again] == ["u1"]
    assert again[0].version > u1.version
    assert again[0].cost_atto == u1.cost_atto + to_atto(Decimal("0.5"))

    # Past its deadline the unit is decided (unattributed): its attribution, at the
    # same last event, outranks the pending row, and it has the same spend.
    engine.max_event_ms = now_ms + 10 * 86_400_000
    decided = [a for a in engine.tick().attributions if a.work_unit_id == "u1"]
    assert decided and decided[-1].state == "unattributed"
    stored_version = version_of(int(decided[-1].last_event_at.timestamp()),
                                decided[-1].revision)  # as the sink versions attributions
    assert stored_version > again[0].version
    assert to_atto(decided[-1].model_cost) == again[0].cost_atto
    assert "u1" not in {row.unit_id for row in engine.pending_units()}


@pytest.mark.parametrize("park_after", [2, 3, 10])
def test_a_unit_is_parked_after_the_configured_idle_checkpoints(park_after: int) -> None:
    """A unit stays an object until it goes unused for ``park_after_checkpoints``
    checkpoints (live traffic touches a unit every few seconds: read back from its bytes
    each time, it cost a decode per event); a use in between starts the count again, an
    eviction forgets it, and a parked unit holds exactly the state it had."""
    now_ms = int(T0.timestamp() * 1000) + 86_400_000
    engine = PartitionEngine(0, EngineConfig(partitions=1, deadline_seconds=3600,
                                             retention_seconds=3600,
                                             allowed_lateness_seconds=120,
                                             park_after_checkpoints=park_after),
                             lambda: BOOK, lambda: now_ms, store={})
    checkpointer, units = Checkpointer(engine), engine.units
    offsets = iter(range(1000))

    def send(*events: dict[str, object]) -> None:
        engine.process("calls", orjson.dumps(list(events)), Source("calls", 0, next(offsets)))

    send(call("c1", "u1", 0), call("c2", "u2", 1))
    expected = units.load_any("u1")
    assert expected is not None
    before = expected.dump(units.vocabulary)
    checkpointer.plan()  # the interval both were used in
    for idle in range(1, park_after):
        if idle == 1:
            send(call("c3", "u2", 2))  # u2 used again: its count starts over
        checkpointer.plan()
        assert set(units.hot) == {"u1", "u2"}, idle
    checkpointer.plan()  # u1 unused for park_after checkpoints now
    assert "u1" in units.parked and "u1" not in units.hot and "u2" in units.hot
    assert units.parked["u1"] == before
    for _ in range(park_after - 1):
        checkpointer.plan()
    assert set(units.parked) == {"u1", "u2"} and not units.hot
    # Read back: an object again, and the same state; removed: no interval holds it.
    send(call("c4", "u1", 3))
    unit = units.load_any("u1")
    assert "u1" in units.hot and unit is not None and unit.calls == 2
    checkpointer.plan()
    units.remove("u1")
    assert all("u1" not in used for used in units.earlier)


def test_parking_reuses_the_bytes_of_a_unit_that_did_not_change() -> None:
    """A unit written by one checkpoint and idle until the next is parked from the bytes
    the first wrote, not serialized again; a unit that changed in between, or was read
    back from its parked bytes and changed, is parked as it is now (units parked after
    one idle checkpoint)."""
    now_ms = int(T0.timestamp() * 1000) + 86_400_000
    engine = PartitionEngine(0, EngineConfig(partitions=1, deadline_seconds=3600,
                                             retention_seconds=3600,
                                             allowed_lateness_seconds=120,
                                             park_after_checkpoints=1),
                             lambda: BOOK, lambda: now_ms, store={})
    checkpointer, units = Checkpointer(engine), engine.units
    offsets = iter(range(1000))
    encoded: list[str] = []
    encode = units.encode

    def counting_encode(unit: UnitState) -> bytes:
        encoded.append(unit.unit_id)
        return encode(unit)

    units.encode = counting_encode  # type: ignore[method-assign]

    def send(kind: str, *events: dict[str, object]) -> None:
        engine.process(kind, orjson.dumps(list(events)),  # type: ignore[arg-type]
                       Source(kind, 0, next(offsets)))

    def as_now(uid: str) -> bytes:
        unit = units.load_any(uid)
        assert unit is not None
        return encode(unit)

    send("calls", call("c1", "u1", 0), call("c2", "u2", 1))
    checkpointer.plan()  # both written, both used since the last park: they stay hot
    assert set(units.hot) == {"u1", "u2"} and encoded.count("u1") == 1
    send("calls", call("c3", "u2", 2))  # u2 changes, u1 is idle
    checkpointer.plan()
    assert "u1" in units.parked and encoded.count("u1") == 1  # its first checkpoint's bytes
    assert units.parked["u1"] == as_now("u1")
    assert "u2" in units.hot and encoded.count("u2") == 2
    checkpointer.plan()  # u2 idle now: parked as the last checkpoint wrote it
    assert encoded.count("u2") == 2 and units.parked["u2"] == as_now("u2")

    # Read back from its bytes and changed: written again, then parked as it is now.
    send("calls", call("c4", "u1", 3, reported_cost="0.5", currency="USD"))
    assert "u1" in units.hot
    checkpointer.plan()
    checkpointer.plan()
    assert units.parked["u1"] == as_now("u1")
    unit = units.load_any("u1")
    assert unit is not None and unit.calls == 2
    # Read back and not changed (a duplicate): parked from the bytes it was read from.
    send("calls", call("c4", "u1", 3, reported_cost="0.5", currency="USD"))
    count = encoded.count("u1")
    checkpointer.plan()
    checkpointer.plan()
    assert encoded.count("u1") == count and units.parked["u1"] == as_now("u1")
