"""The join of model calls and outcomes for one partition, as a pure state machine.

``PartitionEngine`` takes raw Kafka message values with their coordinates and returns
what to emit: attributions, alerts, dead letters, the audit of late events, and rows
for ClickHouse; its window bookings accumulate in ``book`` until the next checkpoint.
It imports no Kafka, Faust or ClickHouse code and never reads the wall clock except
through the ``now_ms`` function it is given (to reject events stamped far in the
future, and to let a silent input stop holding the clock). docs/SEMANTICS.md states
the rules; in short:

- **Every event counts.** A valid event is applied to its work unit however late it
  arrives: late events are applied as corrections and audited on the ``late`` topic.
  ``received == rejected + duplicates + rerouted + applied`` (see ``Ledger``).
- **Order does not matter.** A unit's figures are a function of the set of its events;
  every choice between events is made by an order on the events themselves.
- **Event time.** Each input's high mark is the latest event time it delivered; the
  partition's clock is the lowest high mark of the inputs that still hold it, minus
  the allowed lateness, and never goes back. The clock decides when a unit's deadline
  passes (measured from its first call), when its full state is evicted to a summary,
  and, through the rollup, when a window is final. It never decides whether money
  counts.
- **State is bounded.** A resolved unit is evicted ``retention`` after its last
  event; its summary (its state's bytes) waits in the partition's store for the
  horizon, so a later event merges into the same attribution. An event older than the
  horizon whose unit is gone is booked into a horizon bucket (still counted).
- **Windows are changes.** Every booking is a change to a window cell, handed to the
  rollup at the next checkpoint. Unit-level figures (linked and unlinked spend,
  decided and accepted units, distinct units) are kept equal to a function of the
  unit's state: when the state changes, exactly the difference is booked.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from schemas.codec import CODECS, Decoded, DecodeError, EventCodec, codec_of
from schemas.events import SHARED_PREFIX, CostItem, ModelCall, Outcome
from schemas.outputs import Alert, DeadLetter, LateEvent
from schemas.partitioner import partition_for
from schemas.pricing import PriceBook, scaled_price
from streams.core.attribution import attribution_of, revision_of, version_of
from streams.core.engine_config import EngineConfig
from streams.core.horizon import HorizonSweeper
from streams.core.money import ATTO, convert, divide_half_even, from_atto, to_atto
from streams.core.postings import Postings, review_micros_of
from streams.core.records import (
    EVENT_KINDS,
    CallRecord,
    CostRecord,
    EventKind,
    Ledger,
    OutcomeRecord,
    Outputs,
    PendingUnit,
    Source,
    event_hash,
)
from streams.core.repricing import Repricer
from streams.core.unit import Decider, DimsKey, UnitState, Verdict
from streams.core.units import (
    DueWheel,
    NoStore,
    StoreReader,
    SummaryIndex,
    UnitStore,
)
from streams.core.windows import WindowBook
from streams.core.workflows import WorkflowRegistry, stage_of

__all__ = ["CallRecord", "EventKind", "Ledger", "OutcomeRecord", "Outputs",
           "PartitionEngine", "Source"]

_intern = sys.intern
HORIZON_PREFIX = "~horizon:"
AnyEvent = ModelCall | Outcome | CostItem
REPRICE_PER_STEP = 500  # units repriced per message or tick, so a new price never stalls
SWEEP_PER_STEP = 2_000  # summaries checked per tick for the horizon


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class PartitionEngine:
    """All state and rules for one partition of the co-partitioned input topics."""

    def __init__(
        self,
        partition: int,
        config: EngineConfig,
        prices: Callable[[], PriceBook],
        now_ms: Callable[[], int],
        store: StoreReader | None = None,
        workflows: Callable[[], WorkflowRegistry] | None = None,
    ) -> None:
        self.partition = partition
        self.config = config
        self.prices = prices
        self.now_ms = now_ms
        registry = WorkflowRegistry(config.workflows)
        self.workflows = workflows or (lambda: registry)
        self.units = UnitStore(partition, store if store is not None else NoStore(),
                               config.park_after_checkpoints)
        self.wheel = DueWheel()
        self.index = SummaryIndex(partition, config.horizon_seconds * 1000)
        self.book = WindowBook(tuple(s * 1000 for s in config.window_seconds))
        self.postings = Postings(self.book, config.deadline_seconds * 1000, self.workflows,
                                 config.dimensions)
        self.ledger = Ledger()
        self.max_event_ms = 0  # the clock before lateness: monotonic
        self.input_max_ms: dict[str, int] = dict.fromkeys(EVENT_KINDS, 0)
        self.input_delivered_at: dict[str, int] = {}  # wall ms of each input's last event
        self.input_more_to_read: dict[str, bool] = dict.fromkeys(EVENT_KINDS, False)
        self._waiting_for: set[str] = set()  # inputs held by wait_for_inputs alone
        self.dirty_units: set[str] = set()  # live units changed since the last checkpoint
        self.removed_units: set[str] = set()  # evicted since the last checkpoint
        self.applied_offsets: dict[str, int] = {}
        self.repricer = Repricer(self)
        self.sweeper = HorizonSweeper(partition, self.units, self.index, lambda: self.ledger,
                                      self.repricer.index.forget)
        self._lateness_ms = config.allowed_lateness_seconds * 1000
        self._idle_ms = config.input_idle_seconds * 1000
        self._deadline_ms = config.deadline_seconds * 1000
        self._retention_ms = config.retention_seconds * 1000
        self._horizon_ms = config.horizon_seconds * 1000
        self._skew_ms = config.max_future_skew_seconds * 1000
        self._sizes_ms = self.book.sizes_ms
        self._base_ms = self._sizes_ms[0]
        self._fx = {c: to_atto(r) for c, r in config.fx_rates.items()}
        self._runaway_cost = to_atto(config.runaway_max_cost)
        self._book_now: PriceBook = prices()

    # -- public API -----------------------------------------------------------------
    @property
    def clock_ms(self) -> int:
        """Event-time clock: deadlines, evictions and window finality follow it."""
        return self.max_event_ms - self._lateness_ms if self.max_event_ms else 0

    def set_more_to_read(self, kind: EventKind, more: bool) -> None:
        """The runtime's report that an input has messages not yet applied (an input
        with a backlog holds the clock until it catches up). An input known to have
        nothing to read no longer holds the clock for ``wait_for_inputs``."""
        self.input_more_to_read[kind] = more
        if not more and kind in self._waiting_for:
            self._waiting_for.discard(kind)
            self.input_delivered_at.pop(kind, None)

    def wait_for_inputs(self) -> None:
        """Let every input hold the clock for ``input_idle_seconds`` from now, as if it
        had just delivered: a worker (re)starting on a backlog must not let the first
        topic it happens to read push the clock past the other one's events. (Until the
        runtime says an input has nothing to read: an unused input, say.)"""
        now_ms = self.now_ms()
        for kind in self.input_max_ms:
            if kind not in self.input_delivered_at:
                self._waiting_for.add(kind)
            self.input_delivered_at[kind] = now_ms

    def process(self, kind: EventKind, value: bytes, source: Source) -> Outputs:
        """Apply one Kafka message (one event or a batch envelope)."""
        out = Outputs()
        codec: EventCodec[Any] = CODECS[kind]
        decoded: Decoded[Any] = codec.decode(value)
        self.ledger.received += decoded.total
        self._refresh_prices()
        for error in decoded.errors:
            self.reject(error, source, out)
        touched: dict[str, UnitState] = {}
        now_ms = self.now_ms()
        apply = self._apply_call if kind == "calls" else \
            self._apply_outcome if kind == "outcomes" else self._apply_cost
        for index, event in zip(decoded.indexes, decoded.events, strict=True):
            apply(event, index, source, now_ms, touched, out)
        self.applied_offsets[source.topic] = source.offset
        if decoded.events:
            self.input_delivered_at[kind] = now_ms
            self._waiting_for.discard(kind)
        self._raise_clock(now_ms)
        self._advance(touched, out)
        self.repricer.step(touched, out)
        self._emit_attributions(touched, out)
        return out

    def tick(self) -> Outputs:
        """Run clock-driven work: deadlines, evictions, repricing, the horizon."""
        out = Outputs()
        touched: dict[str, UnitState] = {}
        self._refresh_prices()
        self._raise_clock(self.now_ms())
        self._advance(touched, out)
        self.repricer.step(touched, out)
        self.sweeper.sweep(self.clock_ms)
        self._emit_attributions(touched, out)
        return out

    def open_units(self) -> int:
        return len(self.units)

    def live_events(self) -> tuple[int, int, int]:
        """(pending, attributed, unattributed) events held by live units."""
        totals = {"pending": 0, "attributed": 0, "unattributed": 0}
        for uid in self.units.ids():
            unit = self.units.load_any(uid)
            if unit is not None:
                totals[unit.state] += unit.events
        return totals["pending"], totals["attributed"], totals["unattributed"]

    def applied_split(self) -> tuple[int, int, int]:
        """(pending, attributed, unattributed) over every applied event: live units,
        summaries and forgotten ones. Their sum is ``ledger.applied``."""
        pending, attributed, unattributed = self.live_events()
        ledger = self.ledger
        return (pending,
                attributed + ledger.summarized_attributed + ledger.forgotten_attributed,
                unattributed + ledger.summarized_unattributed + ledger.forgotten_unattributed)

    # -- the clock ----------------------------------------------------------------------
    def _raise_clock(self, now_ms: int) -> None:
        marks = self.input_max_ms
        idle_ms = self._idle_ms
        holding = [mark for kind, mark in marks.items()
                   if self.input_more_to_read[kind]
                   or now_ms - self.input_delivered_at.get(kind, -idle_ms - now_ms) < idle_ms]
        candidate = min(holding) if holding else max(marks.values())
        if candidate > self.max_event_ms:
            self.max_event_ms = candidate

    # -- calls ----------------------------------------------------------------------
    def _apply_call(self, call: ModelCall, index: int, source: Source, now_ms: int,
                    touched: dict[str, UnitState], out: Outputs) -> None:
        if not self._owns(call.work_unit_id, "calls", call, out):
            return
        t_ms = _ms(call.occurred_at)
        if self._future(call, t_ms, index, source, now_ms, out):
            return
        priced = self.price(call, index, source, out)
        if priced is None:
            return
        cost_atto, computed_atto, price_currency = priced
        if call.reprices is not None:
            self.repricer.past(call, cost_atto, price_currency, index, source, touched, out)
            return
        admitted = self._admit("calls", call, t_ms)
        if admitted is None:
            return
        unit, h = admitted
        self._audit_late(call, "model_call", t_ms, index, source, out)
        self._add_call(unit, call, t_ms, h, cost_atto, computed_atto)
        if cost_atto is None:
            self.repricer.hold(unit, call, source.offset, _encode(call))
        if not unit.runaway_alerted and not unit.outcomes:
            self._check_runaway(unit, t_ms, out)
        self.schedule(unit)
        touched[unit.unit_id] = unit
        out.calls.append(self.call_record(call, cost_atto, computed_atto, source.offset,
                                          price_currency))

    def _add_call(self, unit: UnitState, call: ModelCall, t_ms: int, h: int,
                  cost_atto: int | None, computed_atto: int | None) -> None:
        """Everything a call changes in its unit and in the windows."""
        self.dirty_units.add(unit.unit_id)
        self._touch_time(unit, t_ms)
        if unit.first_spend_ms is None or t_ms < unit.first_spend_ms:
            self.postings.first_spend(unit, t_ms)
        if self._takes_dims(unit, (0, t_ms, h), call, _intern(call.team),
                            _intern(call.workflow)):
            unit.owner, unit.task_type = _intern(call.owner), _intern(call.task_type)
            unit.service, unit.environment = _intern(call.service), _intern(call.environment)
            unit.agent = _intern(call.agent or "")
        unit.events += 1
        unit.calls += 1
        retry = call.attempt > 1
        if retry:
            unit.retries += 1
        if call.status != "ok":
            unit.failed += 1
        unit.input_tokens += call.input_tokens
        unit.output_tokens += call.output_tokens
        unit.cached_tokens += call.cached_input_tokens
        unit.write_tokens += call.cache_write_tokens
        unit.reasoning_tokens += call.reasoning_tokens
        unit.system_tokens += call.system_prompt_tokens or 0
        unit.context_tokens += call.context_tokens or 0
        if call.provider not in unit.providers:
            unit.providers.append(_intern(call.provider))
        if cost_atto is None:
            unit.unpriced += 1
        else:
            unit.cost += cost_atto
        if computed_atto is not None:
            unit.computed += computed_atto
        if call.reported_cost is not None:
            unit.reported = (unit.reported or 0) + (cost_atto or 0)
        self.postings.call(unit, call, t_ms, _intern(call.team), _intern(call.workflow),
                           _intern(call.model), cost_atto, retry)
        if call.latency_ms is not None and call.latency_ms > unit.max_latency_ms:
            unit.max_latency_ms = call.latency_ms  # a latency bar may now fail
        if unit.decider is not None:
            self.postings.settle(unit)  # its cost moved: its cost bucket may too

    # -- outcomes -------------------------------------------------------------------
    def _apply_outcome(self, outcome: Outcome, index: int, source: Source, now_ms: int,
                       touched: dict[str, UnitState], out: Outputs) -> None:
        if not self._owns(outcome.work_unit_id, "outcomes", outcome, out):
            return
        t_ms = _ms(outcome.occurred_at)
        if self._future(outcome, t_ms, index, source, now_ms, out):
            return
        rate = ATTO
        if outcome.currency is not None and any(
                x is not None for x in (outcome.value, outcome.review_rate,
                                        outcome.baseline_cost, outcome.value_at_risk)):
            found = self._fx_rate(outcome.currency, "currency", outcome, index, source, out)
            if found is None:
                return
            rate = found
        admitted = self._admit("outcomes", outcome, t_ms)
        if admitted is None:
            return
        unit, h = admitted
        self._audit_late(outcome, "outcome", t_ms, index, source, out)
        team, workflow = _intern(outcome.team), _intern(outcome.workflow)
        self.dirty_units.add(unit.unit_id)
        self._touch_time(unit, t_ms)
        self._takes_dims(unit, (1, t_ms, h), outcome, team, workflow)
        unit.events += 1
        value = None
        if outcome.value is not None:
            value = convert(to_atto(outcome.value), rate)
            unit.value = (unit.value or 0) + value
        if outcome.baseline_cost is not None:
            unit.baseline = (unit.baseline or 0) + convert(to_atto(outcome.baseline_cost), rate)
        review_rate = (convert(to_atto(outcome.review_rate), rate)
                       if outcome.review_rate is not None
                       else to_atto(self.config.review_rate(outcome.team)))
        human = divide_half_even(to_atto(outcome.human_review_minutes) * review_rate, 60 * ATTO)
        unit.review_minutes += outcome.human_review_minutes
        unit.human_cost += human
        if outcome.is_verdict:
            self._apply_verdict(unit, outcome, t_ms, h, rate, team, workflow, human)
        else:
            self.postings.outcome(t_ms, team, workflow, value or 0, human,
                                  self.postings.event_dimensions(outcome),
                                  review_micros_of(outcome))
            assert outcome.status is not None  # only a verdict has none
            decider = Decider(1 if outcome.is_final else 0, t_ms, h, outcome.status,
                              outcome.quality_score, outcome.evidence_confidence,
                              outcome.value_dimension, outcome.strategic_score)
            if decider.outranks(unit.decider):
                unit.decider = decider
                unit.outcome_team, unit.outcome_workflow = team, workflow
            stage = stage_of(outcome)
            if stage > unit.stage:
                unit.stage = stage
            self.postings.link(unit, t_ms)
            unit.outcomes += 1
            if outcome.is_final and not unit.mix_posted and unit.calls:
                statuses = self.workflows().success_statuses(team, workflow)
                self.postings.mix(unit, t_ms, outcome.status in statuses)
        self.postings.settle(unit)
        self.schedule(unit)
        touched[unit.unit_id] = unit
        at_risk = (convert(to_atto(outcome.value_at_risk), rate)
                   if outcome.value_at_risk is not None else None)
        out.outcomes.append(OutcomeRecord(outcome, value, human, self.partition,
                                          source.offset, at_risk))

    def _apply_verdict(self, unit: UnitState, outcome: Outcome, t_ms: int, h: int, rate: int,
                       team: str, workflow: str, human: int) -> None:
        """A later review's finding: the latest verdict stands (an order on the events,
        not their arrival). It decides nothing by itself and links no spend; its review
        cost counts. ``settle`` then books what it changes."""
        assert outcome.verdict is not None
        self.postings.review(t_ms, team, workflow, human,
                             self.postings.event_dimensions(outcome),
                             review_micros_of(outcome))
        at_risk = (convert(to_atto(outcome.value_at_risk), rate)
                   if outcome.value_at_risk is not None else None)
        verdict = Verdict(t_ms, h, outcome.verdict, at_risk)
        if verdict.outranks(unit.verdict):
            unit.verdict = verdict

    # -- cost items -----------------------------------------------------------------
    def _apply_cost(self, item: CostItem, index: int, source: Source, now_ms: int,
                    touched: dict[str, UnitState], out: Outputs) -> None:
        """A cost item joins its unit like a call (any order, once). A shared one (no
        work unit) joins the bucket of its team, workflow and UTC day, which only counts
        it: shared costs are allocated to units in ClickHouse (docs/SEMANTICS.md)."""
        t_ms = _ms(item.occurred_at)
        unit_id = item.key
        if not self._owns(unit_id, "costs", item, out):
            return
        if self._future(item, t_ms, index, source, now_ms, out):
            return
        rate = self._fx_rate(item.currency, "currency", item, index, source, out)
        if rate is None:
            return
        if item.amount is not None:
            amount = to_atto(item.amount)
        else:
            assert item.quantity is not None and item.unit_price is not None
            amount = divide_half_even(to_atto(item.quantity) * to_atto(item.unit_price), ATTO)
        amount = convert(amount, rate) if rate != ATTO else amount
        admitted = self._admit("costs", item, t_ms, unit_id)
        if admitted is None:
            return
        unit, h = admitted
        if item.is_shared:
            unit.bucket = True
        self._audit_late(item, "cost_item", t_ms, index, source, out)
        team, workflow = _intern(item.team), _intern(item.workflow)
        self.dirty_units.add(unit.unit_id)
        self._touch_time(unit, t_ms)
        if unit.first_spend_ms is None or t_ms < unit.first_spend_ms:
            self.postings.first_spend(unit, t_ms)
        self._takes_dims(unit, (2, t_ms, h), item, team, workflow)
        unit.events += 1
        unit.cost_items += 1
        unit.other_cost += amount
        unit.other_by_kind[item.kind] = unit.other_by_kind.get(item.kind, 0) + amount
        self.postings.cost_item(item, t_ms, team, workflow, amount)
        if unit.decider is not None:
            self.postings.settle(unit)  # every change judges the unit again
        self.schedule(unit)
        if not item.is_shared:
            touched[unit.unit_id] = unit
        out.cost_items.append(CostRecord(item, amount, self.partition, source.offset,
                                         self.config.currency))

    def _takes_dims(self, unit: UnitState, key: DimsKey, event: AnyEvent, team: str,
                    workflow: str) -> bool:
        """The unit's dimensions come from its first event by (kind rank: calls, then
        outcomes, then cost items; occurred_at; event hash): an order on the events, so
        any arrival order gives the same. True when ``event`` is now that event (the
        caller sets what only its kind carries)."""
        if unit.dims_key is not None and key >= unit.dims_key:
            return False
        unit.dims_key = key
        unit.team, unit.workflow = team, workflow
        unit.user, unit.customer = _intern(event.user or ""), _intern(event.customer or "")
        unit.extra_dims = self.postings.promoted(event)
        if unit.decider is not None:
            self.postings.settle(unit)  # the decision moves to the unit's new dimensions
        return True

    # -- admission: routing, future, late, currency, duplicates ------------------------
    def _owns(self, unit_id: str, kind: EventKind, event: AnyEvent, out: Outputs) -> bool:
        """True when this partition holds the unit. A publisher that does not use
        murmur2 sent this here: forward it, before judging anything by this partition's
        clock, to the partition that holds the unit (where it counts as received)."""
        if unit_id in self.units or partition_for(unit_id, self.config.partitions) \
                == self.partition:
            return True
        self.ledger.rerouted += 1
        out.reroute.append((kind, unit_id, _encode(event)))
        return False

    def _future(self, event: AnyEvent, t_ms: int, index: int, source: Source,
                now_ms: int, out: Outputs) -> bool:
        """An event stamped far ahead of the wall clock would move the clock and make
        everything else late: rejected, with its reason."""
        if t_ms <= now_ms + self._skew_ms:
            return False
        seconds = (t_ms - now_ms) / 1000
        self.reject(DecodeError(index, "future_event_time",
                                 f"occurred_at is {seconds:.0f}s in the future (more than "
                                 f"{self.config.max_future_skew_seconds}s): check the clock "
                                 f"or time unit", _encode(event), event.event_id,
                                 event.work_unit_id), source, out)
        return True

    def _audit_late(self, event: AnyEvent,
                    kind: Literal["model_call", "outcome", "cost_item"],
                    t_ms: int, index: int, source: Source, out: Outputs) -> None:
        """An applied event older than the clock: recorded with its lateness (its windows
        may already be final, so it arrives there as a correction)."""
        clock = self.clock_ms
        if t_ms >= clock:
            return
        self.ledger.late += 1
        out.late.append(LateEvent(
            late_id=f"{source.topic}:{source.partition}:{source.offset}:{index}",
            source_topic=source.topic, partition=source.partition, offset=source.offset,
            index=index, event_kind=kind, event_id=event.event_id,
            work_unit_id=event.work_unit_id or "", occurred_at=event.occurred_at,
            watermark=_dt(clock), lateness_seconds=(clock - t_ms) / 1000,
            event=_encode(event).decode()))

    def _refresh_prices(self) -> None:
        self._book_now = self.prices()
        self.repricer.index.refresh(self._book_now)

    @property
    def book_version(self) -> str:
        return self._book_now.version

    @property
    def unpriced(self) -> dict[str, set[str]]:
        """Units with calls awaiting a price, by model."""
        return self.repricer.index.units

    def call_record(self, call: ModelCall, cost_atto: int | None, computed_atto: int | None,
                    offset: int, price_currency: str) -> CallRecord:
        return CallRecord(call, cost_atto, computed_atto, self._book_now.version,
                          self.partition, offset, self.config.currency, price_currency)

    def price(self, call: ModelCall, index: int, source: Source,
               out: Outputs) -> tuple[int | None, int | None, str] | None:
        """(cost, computed cost, price currency), money in atto of the reporting
        currency; None if the call was rejected (a currency without a rate)."""
        priced = scaled_price(self._book_now, call)
        computed_atto: int | None = None
        price_currency = ""
        if priced is not None:
            computed, price_currency = priced
            rate = self._fx_rate(price_currency, "the price entry's currency", call, index,
                                 source, out)
            if rate is None:
                return None
            computed_atto = convert(computed, rate) if rate != ATTO and computed else computed
        if call.reported_cost is not None:
            rate = self._fx_rate(call.currency, "currency", call, index, source, out)
            if rate is None:
                return None
            return convert(to_atto(call.reported_cost), rate), computed_atto, price_currency
        return computed_atto, computed_atto, price_currency

    def _fx_rate(self, currency: str | None, field_name: str, event: AnyEvent,
                 index: int, source: Source, out: Outputs) -> int | None:
        if currency is None or currency == self.config.currency:
            return ATTO
        rate = self._fx.get(currency)
        if rate is None:
            self.reject(DecodeError(index, "unknown_currency",
                                     f"{field_name} {currency} has no exchange rate to "
                                     f"{self.config.currency} (set TOKENYIELD_FX_RATES)",
                                     _encode(event), event.event_id, event.work_unit_id),
                         source, out)
        return rate

    def _admit(self, kind: EventKind, event: AnyEvent, t_ms: int,
               unit_id: str | None = None) -> tuple[UnitState, int] | None:
        """The event's unit (live, revived from its summary, a horizon bucket or new)
        and the event's hash; None for a duplicate."""
        unit_id = unit_id or event.work_unit_id
        assert unit_id is not None
        units = self.units
        unit = self.revive(unit_id)
        if unit is None:
            if t_ms < self.clock_ms - self._horizon_ms:
                unit = self._bucket(kind, event, t_ms)
            else:
                unit = UnitState(_intern(unit_id))
                units.add(unit)
            self.removed_units.discard(unit.unit_id)
        h = event_hash(kind, event.event_id)
        if h in unit.seen:
            self.ledger.duplicates += 1
            return None
        unit.seen.add(h)
        self.ledger.applied += 1
        if t_ms > self.input_max_ms[kind]:
            self.input_max_ms[kind] = t_ms
        return unit, h

    def _bucket(self, kind: EventKind, event: AnyEvent, t_ms: int) -> UnitState:
        """Past the horizon an event can no longer find its unit (its summary is gone):
        it is booked into the bucket of its partition, kind, team, workflow and UTC day,
        a unit of its own that never decides anything. Calls there become unlinked
        spend when the bucket's deadline passes; outcomes count their value and cost."""
        self.ledger.beyond_horizon += 1
        day = _dt(t_ms).strftime("%Y-%m-%d")
        bucket_id = (f"{HORIZON_PREFIX}p{self.partition}:{kind}:{event.team}:"
                     f"{event.workflow}:{day}")
        unit = self.revive(bucket_id)
        if unit is None:
            unit = UnitState(bucket_id, bucket=True)
            self.units.add(unit)
        return unit

    def revive(self, unit_id: str) -> UnitState | None:
        """A unit the partition knows: live, or made live again from its summary."""
        unit = self.units.get(unit_id)
        if unit is not None:
            return unit
        data = None if unit_id in self.sweeper.swept else self.units.summary(unit_id)
        if data is None:
            return None
        unit = self.units.revive(unit_id, data)
        self._unsummarize(unit)
        self.removed_units.discard(unit_id)
        return unit

    def _touch_time(self, unit: UnitState, t_ms: int) -> None:
        if unit.events == 0 or t_ms < unit.first_ms:
            unit.first_ms = t_ms
        if t_ms > unit.last_ms:
            unit.last_ms = t_ms

    def reject(self, error: DecodeError, source: Source, out: Outputs) -> None:
        """Count an event as rejected and say why, on dead-letter."""
        self.ledger.rejected += 1
        index = "" if error.index is None else str(error.index)
        out.dead_letters.append(DeadLetter(
            dead_letter_id=f"{source.topic}:{source.partition}:{source.offset}:{index}",
            source_topic=source.topic, partition=source.partition, offset=source.offset,
            index=error.index, error_kind=error.kind, reason=error.reason,
            raw=base64.b64encode(error.raw).decode(),
            raw_preview=error.raw[:512].decode("utf-8", errors="replace"),
            event_id=error.event_id, work_unit_id=error.work_unit_id,
            rejected_at=_dt(self.now_ms())))

    def _check_runaway(self, unit: UnitState, t_ms: int, out: Outputs) -> None:
        config = self.config
        breaches: list[tuple[str, int | Decimal, int | Decimal]] = []
        if unit.calls > config.runaway_max_calls:
            breaches.append(("calls", unit.calls, config.runaway_max_calls))
        tokens = unit.input_tokens + unit.output_tokens
        if tokens > config.runaway_max_tokens:
            breaches.append(("tokens", tokens, config.runaway_max_tokens))
        if unit.cost > self._runaway_cost:
            breaches.append(("cost", from_atto(unit.cost), config.runaway_max_cost))
        if not breaches:
            return
        unit.runaway_alerted = True
        what, observed, limit = breaches[0]
        subject = {"work_unit_id": unit.unit_id, "team": unit.team, "workflow": unit.workflow,
                   "agent": unit.agent}
        for name, value in (("user", unit.user), ("customer", unit.customer)):
            if value:  # alerts route by who the looping work serves
                subject[name] = value
        out.alerts.append(Alert(
            alert_id=f"runaway_work_unit:{unit.unit_id}", kind="runaway_work_unit",
            status="firing", severity="critical", subject=subject, observed=Decimal(observed),
            threshold=Decimal(limit), unit=self.config.currency if what == "cost" else what,
            window_start=_dt(unit.first_ms), window_end=_dt(t_ms), occurred_at=_dt(t_ms),
            message=(f"work unit {unit.unit_id} ({unit.team}/{unit.workflow}) has {observed} "
                     f"{what} with no outcome yet (limit {limit}): an agent may be looping"),
            details={"calls": str(unit.calls), "tokens": str(tokens),
                     "cost": str(from_atto(unit.cost)),
                     "breaches": ",".join(b[0] for b in breaches)}))

    # -- clock-driven work --------------------------------------------------------------
    def _next_due(self, unit: UnitState) -> int:
        """When the unit next needs attention: its deadline, or eviction once resolved."""
        if unit.decided_by_final:
            return unit.last_ms + self._retention_ms  # final outcome
        if unit.outcomes:
            return unit.last_ms + self._deadline_ms + self._retention_ms  # never finalised
        if unit.expired_ms is not None:
            return max(unit.expired_ms, unit.last_ms) + self._retention_ms  # unattributed
        if unit.first_spend_ms is None:  # only a verdict so far: it waits for its outcome
            return unit.last_ms + self._deadline_ms + self._retention_ms
        return unit.first_spend_ms + self._deadline_ms  # pending: expires then

    def schedule(self, unit: UnitState) -> None:
        self.wheel.schedule(unit.unit_id, self._next_due(unit))

    def _advance(self, touched: dict[str, UnitState], out: Outputs) -> None:
        """Expire and evict units up to the clock."""
        clock = self.clock_ms
        for uid in self.wheel.pop_due(clock):
            unit = self.units.get(uid)
            if unit is None:
                continue
            due = self._next_due(unit)
            if due > clock:
                self.schedule(unit)
            elif unit.state == "pending" and unit.first_spend_ms is not None:
                self.postings.expire(unit)
                self.dirty_units.add(uid)
                touched[uid] = unit
                self.schedule(unit)
            else:
                if touched.pop(uid, None) is not None:
                    # Changed in this step (say, just expired): say so before it goes.
                    self._emit_attributions({uid: unit}, out)
                self._evict(unit)

    def _evict(self, unit: UnitState) -> None:
        """Replace the unit's full state by its summary, for the horizon."""
        if unit.outcomes:
            self.ledger.summarized_attributed += unit.events
        else:
            self.ledger.summarized_unattributed += unit.events
        self.units.evict(unit)
        self.index.add(unit.unit_id, unit.last_ms)
        self.dirty_units.discard(unit.unit_id)
        self.removed_units.add(unit.unit_id)
        self.wheel.forget(unit.unit_id)

    def _unsummarize(self, unit: UnitState) -> None:
        """A revived unit's events are live again."""
        if unit.outcomes:
            self.ledger.summarized_attributed -= unit.events
        else:
            self.ledger.summarized_unattributed -= unit.events
        self.dirty_units.add(unit.unit_id)
        self.schedule(unit)

    def book_price(self, unit: UnitState, call: ModelCall, cost_atto: int,
                    computed_atto: int | None, *, unpriced: bool = True) -> None:
        """Book ``cost_atto`` more for one of the unit's calls: one that had no price
        (``unpriced``), or the difference a price for the past makes."""
        if unpriced:
            unit.unpriced -= 1
            self.ledger.repriced += 1
        unit.cost += cost_atto
        unit.computed += computed_atto or 0
        self.postings.price(unit, call, _intern(call.team), _intern(call.workflow),
                            _intern(call.model), cost_atto, unpriced)
        if unit.decider is not None:
            self.postings.settle(unit)

    # -- attributions -------------------------------------------------------------------
    def pending_units(self) -> list[PendingUnit]:
        """The rows of the units changed since the last checkpoint that are pending with
        calls (the units ``v_work_units`` lists as pending), for ``work_units_by_day``.
        Taken at a checkpoint, before its plan clears the changed set: a unit's later
        changes make it changed again, and its decision comes as an attribution."""
        units = self.units
        currency = self.config.currency
        rows = []
        for uid in sorted(self.dirty_units):  # in order: a replay's insert is the same
            unit = units.load_any(uid)  # a parked one stays parked
            if unit is None or unit.state != "pending" or not unit.calls \
                    or uid.startswith(SHARED_PREFIX):
                continue
            rows.append(PendingUnit(
                uid, version_of(unit.last_ms // 1000, revision_of(unit)), unit.team,
                unit.workflow, unit.agent, unit.primary_model(), unit.first_ms,
                unit.last_ms, unit.calls, unit.retries, unit.unpriced, unit.cost,
                unit.loaded_cost, currency))
        return rows

    def _emit_attributions(self, touched: dict[str, UnitState], out: Outputs) -> None:
        if not touched:
            return
        version = self._book_now.version
        place = self.postings.place
        for unit in touched.values():
            place(unit)  # pending ones too: the units by last event list them
            if unit.state == "pending" or unit.unit_id.startswith(SHARED_PREFIX):
                continue
            out.attributions.append(attribution_of(unit, self.partition, version,
                                                   self.config.currency))
            unit.emitted = True


def _encode(event: AnyEvent) -> bytes:
    return codec_of(event).encode(event)

