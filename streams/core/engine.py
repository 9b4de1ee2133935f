"""The join of model calls and outcomes for one partition, as a pure state machine.

``PartitionEngine`` takes raw Kafka message values with their coordinates and returns
what to emit: attributions, window rows, alerts, dead letters, late events and rows
for ClickHouse. It imports no Kafka, Faust or ClickHouse code and never reads the
wall clock except through the ``now_ms`` function it is given (used only to reject
events stamped far in the future). docs/SEMANTICS.md explains the rules; in short:

- Event time is ``occurred_at``. Each input (calls, outcomes) has a high mark, the
  latest event time it delivered. The partition's clock is the lowest high mark of the
  inputs that *hold* it, minus the allowed lateness, and never goes back. An input
  holds the clock while the runtime says it has more to read, or while it delivered
  within ``input_idle_seconds`` (wall time): a backlog read faster on one topic than
  on the other makes nothing late, and a topic that falls silent stops the clock for
  only that long. An event older than the clock is *late*: reported on the ``late``
  topic and counted, never applied.
- Each event is applied at most once per work unit (by ``event_id``), in any order.
  A unit's attribution is a function of the set of its events, so every arrival order
  ends with the same figures; ``revision`` grows with each event applied.
- A unit with spend and no outcome by ``deadline`` after its last event becomes
  *unattributed*. Resolved units are evicted ``retention`` after that.
- Windows are tumbling, by team, workflow and model. A fact made of one event is booked
  in that event's window. Linked spend (a call joined to an outcome) is booked in the
  window of the later of the two, so a booking never lands in a closed window.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from schemas.codec import Decoded, DecodeError, EventCodec, call_codec, outcome_codec
from schemas.events import ACCEPTING_STATUSES, ModelCall, Outcome
from schemas.outputs import (
    ALL_MODELS,
    Alert,
    DeadLetter,
    LateEvent,
    WorkUnitAttribution,
)
from schemas.partitioner import partition_for
from schemas.pricing import PriceBook, scaled_cost_of_call
from streams.core import state as cf
from streams.core.config import EngineConfig
from streams.core.money import ATTO, from_atto, per, ratio, to_atto
from streams.core.state import Cell, UnitState

EventKind = Literal["calls", "outcomes"]
CellKey = tuple[int, int, str, str, str]


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from."""

    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class CallRecord:
    """A validated, priced call for the ``model_calls`` table."""

    call: ModelCall
    cost_atto: int | None  # reporting currency, 10^-18 units (the sink converts)
    computed_atto: int | None
    price_book_version: str
    partition: int
    offset: int

    @property
    def cost(self) -> Decimal | None:
        return from_atto(self.cost_atto) if self.cost_atto is not None else None

    @property
    def computed_cost(self) -> Decimal | None:
        return from_atto(self.computed_atto) if self.computed_atto is not None else None


@dataclass(slots=True)
class OutcomeRecord:
    """A validated outcome for the ``outcomes`` table, money in the reporting currency."""

    outcome: Outcome
    value: Decimal | None
    human_cost: Decimal
    partition: int
    offset: int


@dataclass(slots=True)
class Outputs:
    """Everything one step produced, in order."""

    attributions: list[WorkUnitAttribution] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    late: list[LateEvent] = field(default_factory=list)
    reroute: list[tuple[EventKind, str, bytes]] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    outcomes: list[OutcomeRecord] = field(default_factory=list)

    def extend(self, other: Outputs) -> None:
        for name in self.__slots__:  # type: ignore[attr-defined]
            getattr(self, name).extend(getattr(other, name))

    def __len__(self) -> int:
        return sum(len(getattr(self, n)) for n in self.__slots__)  # type: ignore[attr-defined]


@dataclass(slots=True)
class Ledger:
    """Where every event went. ``received == rejected + late + duplicates + rerouted +
    applied``, and applied events sit in pending, attributed or unattributed units."""

    received: int = 0
    rejected: int = 0
    late: int = 0
    duplicates: int = 0
    rerouted: int = 0
    applied: int = 0
    evicted_attributed: int = 0
    evicted_unattributed: int = 0

    def dump(self) -> list[int]:
        return [getattr(self, name) for name in self.__slots__]  # type: ignore[attr-defined]

    @classmethod
    def load(cls, values: list[int]) -> Ledger:
        return cls(*values)


def event_hash(event_id: str) -> int:
    """A stable 64-bit hash of an event id (Python's ``hash`` changes per process)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big",
                          signed=True)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class UnitStore:
    """Open units: recently used ones as objects, idle ones parked as their bytes."""

    def __init__(self) -> None:
        self.hot: dict[str, UnitState] = {}
        self.parked: dict[str, bytes] = {}
        self.touched: set[str] = set()

    def get(self, unit_id: str) -> UnitState | None:
        unit = self.hot.get(unit_id)
        if unit is None:
            data = self.parked.pop(unit_id, None)
            if data is None:
                return None
            unit = UnitState.load(data)
            self.hot[unit_id] = unit
        self.touched.add(unit_id)
        return unit

    def add(self, unit: UnitState) -> None:
        self.hot[unit.unit_id] = unit
        self.touched.add(unit.unit_id)

    def remove(self, unit_id: str) -> None:
        self.hot.pop(unit_id, None)
        self.parked.pop(unit_id, None)
        self.touched.discard(unit_id)

    def park_idle(self, dumped: dict[str, bytes]) -> int:
        """Park units not used since the last call; reuse bytes already serialized."""
        idle = [uid for uid in self.hot if uid not in self.touched]
        for uid in idle:
            unit = self.hot.pop(uid)
            # A copy: orjson's output keeps its ~4 KiB working buffer allocated behind a
            # ~500-byte value; kept for every parked unit, that was 8x the state.
            self.parked[uid] = bytes(memoryview(dumped.get(uid) or unit.dump()))
        self.touched = set()
        return len(idle)

    def __len__(self) -> int:
        return len(self.hot) + len(self.parked)

    def __contains__(self, unit_id: str) -> bool:
        return unit_id in self.hot or unit_id in self.parked

    def ids(self) -> list[str]:
        return [*self.hot, *self.parked]


class PartitionEngine:
    """All state and rules for one partition of the co-partitioned input topics."""

    def __init__(
        self,
        partition: int,
        config: EngineConfig,
        prices: Callable[[], PriceBook],
        now_ms: Callable[[], int],
    ) -> None:
        self.partition = partition
        self.config = config
        self.prices = prices
        self.now_ms = now_ms
        self.units = UnitStore()
        self.cells: dict[CellKey, Cell] = {}
        self.groups: dict[tuple[int, int, str, str], set[str]] = {}
        self.window_heap: list[tuple[int, int, int]] = []  # (end, size, start)
        self.open_windows: set[tuple[int, int]] = set()
        self.wheel: dict[int, list[str]] = {}  # minute -> unit ids due then
        self.wheel_heap: list[int] = []
        self.due: dict[str, int] = {}
        self.max_event_ms = 0  # the clock before lateness: monotonic
        self.input_max_ms: dict[str, int] = {"calls": 0, "outcomes": 0}
        self.input_delivered_at: dict[str, int] = {}  # wall ms of each input's last event
        self.input_more_to_read: dict[str, bool] = {"calls": False, "outcomes": False}
        self.ledger = Ledger()
        self.dirty_units: set[str] = set()
        self.removed_units: set[str] = set()
        self.dirty_cells: set[CellKey] = set()  # changed since the last partial_updates()
        self._changed: set[CellKey] = set()  # changed by the message being applied
        self.closed_cells: list[tuple[CellKey, int, list[int]]] = []
        self.removed_cells: set[CellKey] = set()
        self.applied_offsets: dict[str, int] = {}
        self._lateness_ms = config.allowed_lateness_seconds * 1000
        self._idle_ms = config.input_idle_seconds * 1000
        self._deadline_ms = config.deadline_seconds * 1000
        self._retention_ms = config.retention_seconds * 1000
        self._skew_ms = config.max_future_skew_seconds * 1000
        self._sizes_ms = tuple(s * 1000 for s in config.window_seconds)
        self._base_ms = self._sizes_ms[0]
        self._fx = {c: to_atto(r) for c, r in config.fx_rates.items()}
        self._runaway_cost = to_atto(config.runaway_max_cost)

    # -- public API -----------------------------------------------------------------
    @property
    def clock_ms(self) -> int:
        """Event-time clock: events before it are late and windows before it are closed."""
        return self.max_event_ms - self._lateness_ms if self.max_event_ms else 0

    def set_more_to_read(self, kind: EventKind, more: bool) -> None:
        """The runtime's report that an input has messages not yet applied (an input
        with a backlog holds the clock until it catches up)."""
        self.input_more_to_read[kind] = more

    def wait_for_inputs(self) -> None:
        """Let every input hold the clock for ``input_idle_seconds`` from now, as if it
        had just delivered: a worker (re)starting on a backlog must not let the first
        topic it happens to read push the clock past the other one's events."""
        now_ms = self.now_ms()
        for kind in self.input_max_ms:
            self.input_delivered_at[kind] = now_ms

    def _raise_clock(self, now_ms: int) -> None:
        marks = self.input_max_ms
        idle_ms = self._idle_ms
        holding = [mark for kind, mark in marks.items()
                   if self.input_more_to_read[kind]
                   or now_ms - self.input_delivered_at.get(kind, -idle_ms - now_ms) < idle_ms]
        candidate = min(holding) if holding else max(marks.values())
        if candidate > self.max_event_ms:
            self.max_event_ms = candidate

    def process(self, kind: EventKind, value: bytes, source: Source) -> Outputs:
        """Apply one Kafka message (one event or a batch envelope)."""
        out = Outputs()
        codec: EventCodec[Any] = call_codec if kind == "calls" else outcome_codec
        decoded: Decoded[Any] = codec.decode(value)
        self.ledger.received += decoded.total
        self._book = self.prices()
        self._book_version = self._book.version
        for error in decoded.errors:
            self._reject(error, source, out)
        touched: dict[str, UnitState] = {}
        now_ms = self.now_ms()
        apply = self._apply_call if kind == "calls" else self._apply_outcome
        for index, event in zip(decoded.indexes, decoded.events, strict=True):
            apply(event, index, source, now_ms, touched, out)
        self.applied_offsets[source.topic] = source.offset
        if decoded.events:
            self.input_delivered_at[kind] = now_ms
        self._raise_clock(now_ms)
        self._mark_changed()
        self._advance(touched, out)
        self._emit_attributions(touched, out)
        return out

    def tick(self) -> Outputs:
        """Run clock-driven work (nothing changes unless the clock moved)."""
        out = Outputs()
        touched: dict[str, UnitState] = {}
        self._raise_clock(self.now_ms())
        self._advance(touched, out)
        self._emit_attributions(touched, out)
        return out

    def partial_updates(self) -> list[tuple[CellKey, int, list[int]]]:
        """This partition's window cells changed since the last call, closed ones included.

        The rollup stage sums them over partitions into the global window rows.
        """
        updates = self.closed_cells
        self.closed_cells = []
        for key in sorted(self.dirty_cells):
            cell = self.cells.get(key)
            if cell is not None:
                updates.append((key, cell.revision, list(cell.v)))
        self.dirty_cells.clear()
        return updates

    def open_units(self) -> int:
        return len(self.units)

    def pending_events(self) -> tuple[int, int, int]:
        """(pending, attributed, unattributed) events held by live units."""
        pending = attributed = unattributed = 0
        for uid in self.units.ids():
            unit = self.units.hot.get(uid) or UnitState.load(self.units.parked[uid])
            if unit.has_outcome:
                attributed += unit.events
            elif unit.expired_ms is not None:
                unattributed += unit.events
            else:
                pending += unit.events
        return pending, attributed, unattributed

    # -- calls ----------------------------------------------------------------------
    def _apply_call(self, call: ModelCall, index: int, source: Source, now_ms: int,
                    touched: dict[str, UnitState], out: Outputs) -> None:
        t_ms = _ms(call.occurred_at)
        if self._refuse(call, "model_call", t_ms, index, source, now_ms, out):
            return
        priced = self._price(call, index, source, out)
        if priced is None:
            return
        cost_atto, computed_atto = priced
        unit = self._admit(call, "calls", t_ms, source, out)
        if unit is None:
            return
        if unit.calls == 0:
            unit.team, unit.workflow = _intern(call.team), _intern(call.workflow)
            unit.owner, unit.task_type = _intern(call.owner), _intern(call.task_type)
            unit.service = _intern(call.service)
            unit.environment = _intern(call.environment)
            unit.agent = _intern(call.agent or "")
        if t_ms < unit.first_ms or unit.events == 0:
            unit.first_ms = t_ms
        if t_ms > unit.last_ms:
            unit.last_ms = t_ms
        self.dirty_units.add(unit.unit_id)
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
        if call.system_prompt_tokens:
            unit.system_tokens += call.system_prompt_tokens
        if call.context_tokens:
            unit.context_tokens += call.context_tokens
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
        self._book_call(unit, call, t_ms, _intern(call.team), _intern(call.workflow),
                        _intern(call.model), cost_atto, retry)
        if unit.expired_ms is not None:
            # Activity resumed after the deadline: the unit is open again and the spend
            # booked as unlinked is taken back, in this event's window.
            self._book_unlinked(unit, t_ms, -1)
            unit.expired_ms = None
        if not unit.runaway_alerted:
            self._check_runaway(unit, t_ms, out)
        self._schedule(unit)
        touched[unit.unit_id] = unit
        out.calls.append(CallRecord(call, cost_atto, computed_atto, self._book_version,
                                    self.partition, source.offset))

    def _book_call(self, unit: UnitState, call: ModelCall, t_ms: int, team: str,
                   workflow: str, model: str, cost_atto: int | None, retry: bool) -> None:
        """Add one call to its window cells (one per window size) and to the unit's
        spend by base window. The hot path: keep it lean."""
        cost = cost_atto or 0
        base_start = t_ms - t_ms % self._base_ms
        spend_by_window = unit.cells
        counted = False
        for i in range(0, len(spend_by_window), 5):
            if spend_by_window[i] == base_start and spend_by_window[i + 3] == model \
                    and spend_by_window[i + 1] == team and spend_by_window[i + 2] == workflow:
                spend_by_window[i + 4] += cost
                counted = True  # already counted as a work unit in every window size
                break
        cells = self.cells
        changed = self._changed
        input_tokens = call.input_tokens
        output_tokens = call.output_tokens
        system = call.system_prompt_tokens or 0
        overhead = system + (call.context_tokens or 0)
        failed = call.status != "ok"
        agent_series = cf.AGENT_SERIES + call.agent if call.agent else None
        link_ms = unit.link_ms
        for size in self._sizes_ms:
            start = t_ms - t_ms % size
            key = (size, start, team, workflow, model)
            cell = cells.get(key) or self._new_cell(key)
            changed.add(key)
            v = cell.v
            v[0] += 1  # CALLS
            if retry:
                v[1] += 1  # RETRIES
            if failed:
                v[2] += 1  # FAILED
            v[3] += input_tokens  # INPUT
            v[4] += output_tokens  # OUTPUT
            v[5] += call.cached_input_tokens  # CACHED
            v[6] += call.reasoning_tokens  # REASONING
            if overhead:
                v[7] += overhead  # OVERHEAD
                v[17] += system  # SYSTEM
            if cost_atto is None:
                v[9] += 1  # UNPRICED
            else:
                v[8] += cost_atto  # SPEND
            if not counted:
                self._count_unit(unit, size, start, team, workflow, model, v)
            if agent_series is not None:
                agent_key = (size, start, team, workflow, agent_series)
                a = (cells.get(agent_key) or self._new_cell(agent_key)).v
                changed.add(agent_key)
                a[0] += 1
                a[3] += input_tokens
                a[4] += output_tokens
                a[8] += cost
                if retry:
                    a[1] += 1
            if link_ms is not None and cost:
                link_start = base_start if base_start > link_ms else link_ms
                self._post((size, link_start - link_start % size, team, workflow, model),
                           cf.LINKED, cost)
        if not counted:
            spend_by_window.extend((base_start, team, workflow, model, cost))

    def _count_unit(self, unit: UnitState, size: int, start: int, team: str, workflow: str,
                    model: str, v: list[int]) -> None:
        """Count the unit once per window row (model and all-models), if not yet."""
        seen_model = seen_all = False
        spend_by_window = unit.cells
        for i in range(0, len(spend_by_window), 5):
            if spend_by_window[i] - spend_by_window[i] % size == start \
                    and spend_by_window[i + 1] == team and spend_by_window[i + 2] == workflow:
                seen_all = True
                if spend_by_window[i + 3] == model:
                    seen_model = True
                    break
        if not seen_model:
            v[cf.WORK_UNITS] += 1
        if not seen_all:
            self._cell((size, start, team, workflow, ALL_MODELS)).v[cf.WORK_UNITS] += 1

    # -- outcomes -------------------------------------------------------------------
    def _apply_outcome(self, outcome: Outcome, index: int, source: Source, now_ms: int,
                       touched: dict[str, UnitState], out: Outputs) -> None:
        t_ms = _ms(outcome.occurred_at)
        if self._refuse(outcome, "outcome", t_ms, index, source, now_ms, out):
            return
        rate = self._fx_rate(outcome.currency, "currency", outcome, index, source, out) \
            if outcome.currency is not None else ATTO
        if rate is None:
            return
        unit = self._admit(outcome, "outcomes", t_ms, source, out)
        if unit is None:
            return
        team, workflow = _intern(outcome.team), _intern(outcome.workflow)
        if not unit.team:
            unit.team, unit.workflow = team, workflow
        self._touch_time(unit, t_ms)
        unit.events += 1
        unit.outcomes += 1
        value = None
        if outcome.value is not None:
            value = to_atto(outcome.value) * rate // ATTO
            unit.value = (unit.value or 0) + value
        if outcome.baseline_cost is not None:
            unit.baseline = (unit.baseline or 0) + to_atto(outcome.baseline_cost) * rate // ATTO
        review_rate = (to_atto(outcome.review_rate) * rate // ATTO
                       if outcome.review_rate is not None
                       else to_atto(self.config.review_rate(outcome.team)))
        human = to_atto(outcome.human_review_minutes) * review_rate // (60 * ATTO)
        unit.review_minutes += outcome.human_review_minutes
        unit.human_cost += human
        decider = (1 if outcome.is_final else 0, t_ms, outcome.event_id, outcome.status,
                   outcome.quality_score, outcome.evidence_confidence, outcome.value_dimension)
        if unit.decider is None or decider[:3] > unit.decider[:3]:
            unit.decider = decider
            unit.outcome_team, unit.outcome_workflow = team, workflow
        for size in self._sizes_ms:
            v = self._cell((size, t_ms - t_ms % size, team, workflow, ALL_MODELS)).v
            v[cf.OUTCOMES] += 1
            if outcome.status in ACCEPTING_STATUSES:
                v[cf.ACCEPTED] += 1
            v[cf.VALUE] += value or 0
            v[cf.HUMAN] += human
        if unit.expired_ms is not None:
            self._book_unlinked(unit, t_ms, -1)
            unit.expired_ms = None
        if unit.link_ms is None or t_ms < unit.link_ms:
            self._relink(unit, t_ms)
        if outcome.is_final and not unit.mix_posted and unit.calls:
            # Once per unit, for the model-mismatch detector: which primary model served
            # this task type, at what cost, and was it accepted. Approximate by design
            # (later calls of the unit are not reflected); never part of the ledger.
            unit.mix_posted = True
            hour = 3_600_000
            mix = self._cell((hour, t_ms - t_ms % hour, unit.task_type or "-", "",
                              cf.MIX_SERIES + unit.primary_model())).v
            mix[cf.OUTCOMES] += 1
            mix[cf.ACCEPTED] += 1 if outcome.status in ACCEPTING_STATUSES else 0
            mix[cf.SPEND] += unit.cost
        self._schedule(unit)
        touched[unit.unit_id] = unit
        out.outcomes.append(OutcomeRecord(
            outcome, from_atto(value) if value is not None else None, from_atto(human),
            self.partition, source.offset))

    def _relink(self, unit: UnitState, link_ms: int) -> None:
        """Move the unit's linked spend to the window of its (new) earliest outcome."""
        old = unit.link_ms
        cells = unit.cells
        for i in range(0, len(cells), 5):
            start, team, workflow, model, cost = cells[i:i + 5]
            for size in self._sizes_ms:
                new_at = max(start, link_ms)
                new_key = (size, new_at - new_at % size, team, workflow, model)
                if old is not None:
                    old_at = max(start, old)
                    old_key = (size, old_at - old_at % size, team, workflow, model)
                    if old_key == new_key:
                        continue
                    self._post(old_key, cf.LINKED, -cost)
                self._post(new_key, cf.LINKED, cost)
        unit.link_ms = link_ms

    def _book_unlinked(self, unit: UnitState, at_ms: int, sign: int) -> None:
        cells = unit.cells
        for i in range(0, len(cells), 5):
            _, team, workflow, model, cost = cells[i:i + 5]
            for size in self._sizes_ms:
                self._post((size, at_ms - at_ms % size, team, workflow, model),
                           cf.UNLINKED, sign * cost)

    # -- shared event handling --------------------------------------------------------
    def _refuse(self, event: ModelCall | Outcome, kind: Literal["model_call", "outcome"],
                t_ms: int, index: int, source: Source, now_ms: int, out: Outputs) -> bool:
        """Late or future events are recorded and not applied."""
        if t_ms > now_ms + self._skew_ms:
            seconds = (t_ms - now_ms) / 1000
            self._reject(DecodeError(index, "future_event_time",
                                     f"occurred_at is {seconds:.0f}s in the future (more than "
                                     f"{self.config.max_future_skew_seconds}s): check the clock "
                                     f"or time unit", _encode(event), event.event_id,
                                     event.work_unit_id), source, out)
            return True
        clock = self.clock_ms
        if t_ms < clock:
            self.ledger.late += 1
            out.late.append(LateEvent(
                late_id=f"{source.topic}:{source.partition}:{source.offset}:{index}",
                source_topic=source.topic, partition=source.partition, offset=source.offset,
                index=index, event_kind=kind, event_id=event.event_id,
                work_unit_id=event.work_unit_id, occurred_at=event.occurred_at,
                watermark=_dt(clock), lateness_seconds=(clock - t_ms) / 1000,
                event=_encode(event).decode()))
            return True
        return False

    def _price(self, call: ModelCall, index: int, source: Source,
               out: Outputs) -> tuple[int | None, int | None] | None:
        """(cost, computed cost) in atto of the reporting currency; None if rejected."""
        computed_atto = scaled_cost_of_call(self._book, call)
        if call.reported_cost is not None:
            rate = self._fx_rate(call.currency, "currency", call, index, source, out)
            if rate is None:
                return None
            return to_atto(call.reported_cost) * rate // ATTO, computed_atto
        return computed_atto, computed_atto

    def _fx_rate(self, currency: str | None, field_name: str, event: ModelCall | Outcome,
                 index: int, source: Source, out: Outputs) -> int | None:
        if currency is None or currency == self.config.currency:
            return ATTO
        rate = self._fx.get(currency)
        if rate is None:
            self._reject(DecodeError(index, "unknown_currency",
                                     f"{field_name} {currency} has no exchange rate to "
                                     f"{self.config.currency} (set TOKENYIELD_FX_RATES)",
                                     _encode(event), event.event_id, event.work_unit_id),
                         source, out)
        return rate

    def _admit(self, event: ModelCall | Outcome, kind: EventKind, t_ms: int, source: Source,
               out: Outputs) -> UnitState | None:
        """The event's unit, or None when the event is rerouted or a duplicate."""
        unit_id = event.work_unit_id
        unit = self.units.get(unit_id)
        if unit is None:
            owner = partition_for(unit_id, self.config.partitions)
            if owner != self.partition:
                # A publisher that does not use murmur2 sent this here; forward it to the
                # partition that holds the unit, where it is counted again as received.
                self.ledger.rerouted += 1
                out.reroute.append((kind, unit_id, _encode(event)))
                return None
            unit = UnitState(_intern(unit_id))
            self.units.add(unit)
            self.removed_units.discard(unit_id)
        h = event_hash(event.event_id)
        if h in unit.seen:
            self.ledger.duplicates += 1
            return None
        unit.seen.add(h)
        self.ledger.applied += 1
        if t_ms > self.input_max_ms[kind]:
            self.input_max_ms[kind] = t_ms
        return unit

    def _touch_time(self, unit: UnitState, t_ms: int) -> None:
        if unit.events == 0 or t_ms < unit.first_ms:
            unit.first_ms = t_ms
        if t_ms > unit.last_ms:
            unit.last_ms = t_ms
        self.dirty_units.add(unit.unit_id)

    def _reject(self, error: DecodeError, source: Source, out: Outputs) -> None:
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
        if unit.runaway_alerted or unit.has_outcome:
            return
        config = self.config
        breaches = []
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

    # -- windows ----------------------------------------------------------------------
    def _cell(self, key: CellKey) -> Cell:
        cell = self.cells.get(key) or self._new_cell(key)
        self._changed.add(key)
        return cell

    def _new_cell(self, key: CellKey) -> Cell:
        cell = self.cells[key] = Cell()
        size, start, team, workflow, model = key
        group = (size, start, team, workflow)
        models = self.groups.get(group)
        if models is None:
            models = self.groups[group] = set()
        models.add(model)
        if (size, start) not in self.open_windows:
            self.open_windows.add((size, start))
            heapq.heappush(self.window_heap, (start + size, size, start))
        return cell

    def _mark_changed(self) -> None:
        """Once per message: every cell changed by it gets a new revision."""
        cells = self.cells
        for key in self._changed:
            cell = cells.get(key)
            if cell is not None:
                cell.revision += 1
                cell.dirty = True
                self.dirty_cells.add(key)
        self._changed.clear()

    def _post(self, key: CellKey, index: int, amount: int) -> None:
        if amount:
            self._cell(key).v[index] += amount

    def _close_windows(self) -> None:
        """Drop cells of windows the clock has passed, keeping unsent changes for the
        rollup stage (which closes the global window once every partition has)."""
        clock = self.clock_ms
        heap = self.window_heap
        while heap and heap[0][0] <= clock:
            _, size, start = heapq.heappop(heap)
            self.open_windows.discard((size, start))
            for group in [g for g in self.groups if g[0] == size and g[1] == start]:
                for model in self.groups.pop(group):
                    key = (*group, model)
                    cell = self.cells.pop(key, None)
                    self.removed_cells.add(key)
                    if key in self.dirty_cells and cell is not None:
                        self.closed_cells.append((key, cell.revision, list(cell.v)))
                        self.dirty_cells.discard(key)

    # -- clock-driven work --------------------------------------------------------------
    def _next_due(self, unit: UnitState) -> int:
        """When the unit next needs attention: expiry, or eviction once resolved."""
        if unit.decider is not None and unit.decider[0] == 1:
            return unit.last_ms + self._retention_ms  # final outcome
        if unit.expired_ms is not None:
            return unit.expired_ms + self._retention_ms  # unattributed
        if unit.has_outcome:
            return unit.last_ms + self._deadline_ms + self._retention_ms  # never finalised
        return unit.last_ms + self._deadline_ms  # open: expires then

    def _schedule(self, unit: UnitState) -> None:
        # Buckets are whole minutes, rounded up, so every entry of a popped bucket is due.
        due = self._next_due(unit)
        minute = -(-due // 60_000)
        current = self.due.get(unit.unit_id)
        if current is not None and current <= minute:
            return  # the earlier entry re-checks the unit and reschedules it
        self.due[unit.unit_id] = minute
        bucket = self.wheel.get(minute)
        if bucket is None:
            bucket = self.wheel[minute] = []
            heapq.heappush(self.wheel_heap, minute)
        bucket.append(unit.unit_id)

    def _advance(self, touched: dict[str, UnitState], out: Outputs) -> None:
        """Expire, evict and close windows up to the clock, in that order: an expiry
        books into its window before the window can close."""
        clock = self.clock_ms
        heap = self.wheel_heap
        while heap and heap[0] * 60_000 <= clock:
            minute = heapq.heappop(heap)
            for uid in self.wheel.pop(minute, ()):
                if self.due.get(uid) != minute:
                    continue  # stale entry: the unit was rescheduled earlier
                del self.due[uid]
                unit = self.units.get(uid)
                if unit is None:
                    continue
                if self._next_due(unit) > clock:
                    self._schedule(unit)
                elif not unit.has_outcome and unit.expired_ms is None:
                    expired_at = unit.last_ms + self._deadline_ms
                    unit.expired_ms = expired_at
                    self._book_unlinked(unit, expired_at, 1)
                    self.dirty_units.add(uid)
                    touched[uid] = unit
                    self._schedule(unit)
                else:
                    if touched.pop(uid, None) is not None:
                        # Changed in this step (say, just expired): say so before it goes.
                        self._emit_attributions({uid: unit}, out)
                    self._evict(unit)
        self._mark_changed()  # postings made above must reach the rollup before closing
        self._close_windows()

    def _evict(self, unit: UnitState) -> None:
        if unit.has_outcome:
            self.ledger.evicted_attributed += unit.events
        elif unit.expired_ms is not None:
            self.ledger.evicted_unattributed += unit.events
        self.units.remove(unit.unit_id)
        self.dirty_units.discard(unit.unit_id)
        self.removed_units.add(unit.unit_id)
        self.due.pop(unit.unit_id, None)

    # -- attributions -------------------------------------------------------------------
    def _emit_attributions(self, touched: dict[str, UnitState], out: Outputs) -> None:
        if not touched:
            return
        version = self.prices().version
        for unit in touched.values():
            if not unit.has_outcome and unit.expired_ms is None:
                continue
            out.attributions.append(attribution_of(unit, self.partition, version, self.config))
            unit.emitted = True


_intern = sys.intern


def revision_of(unit: UnitState) -> int:
    """Grows with every event applied and with expiry; a function of content, not order."""
    return 2 * unit.events + (1 if unit.expired_ms is not None else 0)


def attribution_of(unit: UnitState, partition: int, price_book_version: str,
                   config: EngineConfig) -> WorkUnitAttribution:
    """The attribution a unit's current state amounts to."""
    if unit.expired_ms is not None and not unit.has_outcome:
        label = "unattributed"
    else:
        label = "revised" if unit.emitted else "attributed"
    model_cost = from_atto(unit.cost)
    human_cost = from_atto(unit.human_cost)
    loaded_atto = unit.cost + unit.human_cost
    loaded = from_atto(loaded_atto)
    value = from_atto(unit.value) if unit.value is not None else None
    baseline = from_atto(unit.baseline) if unit.baseline is not None else None
    decider = unit.decider
    status = decider[3] if decider else None
    model_costs = unit.model_costs()
    # Built from already-validated state: construct without validating again (hot path).
    return WorkUnitAttribution.trusted(
        attribution_id=unit.unit_id,
        work_unit_id=unit.unit_id,
        revision=revision_of(unit),
        state=label,
        partition=partition,
        team=unit.team,
        workflow=unit.workflow,
        owner=unit.owner,
        task_type=unit.task_type,
        service=unit.service,
        environment=unit.environment,
        agent=unit.agent,
        models=sorted(model_costs),
        primary_model=unit.primary_model(),
        providers=sorted(unit.providers),
        first_event_at=_dt(unit.first_ms),
        last_event_at=_dt(unit.last_ms),
        calls=unit.calls,
        retries=unit.retries,
        failed_calls=unit.failed,
        input_tokens=unit.input_tokens,
        output_tokens=unit.output_tokens,
        cached_input_tokens=unit.cached_tokens,
        cache_write_tokens=unit.write_tokens,
        reasoning_tokens=unit.reasoning_tokens,
        system_prompt_tokens=unit.system_tokens,
        context_tokens=unit.context_tokens,
        currency=config.currency,
        model_cost=model_cost,
        computed_cost=from_atto(unit.computed),
        reported_cost=from_atto(unit.reported) if unit.reported is not None else None,
        unpriced_calls=unit.unpriced,
        human_review_minutes=unit.review_minutes,
        human_cost=human_cost,
        fully_loaded_cost=loaded,
        outcomes=unit.outcomes,
        outcome_status=status,
        accepted=status in ACCEPTING_STATUSES if status else False,
        is_final=bool(decider and decider[0] == 1),
        value=value,
        value_dimension=decider[6] if decider else None,
        quality_score=decider[4] if decider else None,
        baseline_cost=baseline,
        evidence_confidence=decider[5] if decider else None,
        cost_per_outcome=per(loaded_atto, unit.outcomes),
        yield_ratio=ratio(unit.value, loaded_atto) if unit.value is not None else None,
        net_value=from_atto(unit.value - loaded_atto) if unit.value is not None else None,
        roi=ratio(unit.baseline - loaded_atto, loaded_atto) if unit.baseline is not None else None,
        price_book_version=price_book_version,
    )


def _encode(event: ModelCall | Outcome) -> bytes:
    codec: EventCodec[Any] = call_codec if isinstance(event, ModelCall) else outcome_codec
    return codec.encode(event)
