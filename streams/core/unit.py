"""One work unit's state: everything the engine knows about it, and its compact bytes.

A unit's figures are a function of the *set* of its applied events (and of which of
its calls have a price yet), never of their arrival order: every choice between events
(the dimensions, the deciding outcome) is made by a total order on the events
themselves. The same bytes serve a live unit's checkpoint and the summary an evicted
unit leaves behind, so a late event merges into exactly the state it would have met.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any, NamedTuple

import orjson
import ormsgpack

from schemas.errors import StateError
from schemas.events import ACCEPTING_STATUSES, SHARED_PREFIX
from streams.core.money import atto_of_text, atto_text

FORMAT = 6
FORMAT_5 = 5  # still read: every amount as decimal text (before 2026-12-03)
FORMAT_4 = 4  # still read: the value fields in their first layout (before 2026-12-02)
PREVIOUS_FORMAT = 3  # still read: the fields added since take their defaults

# The outcome that decides a unit: (is_final, occurred_ms, event hash, status,
# quality_score, evidence_confidence, value_dimension). The greatest of the first three
# wins: a final outcome beats any non-final one, a later one an earlier one, and the
# event hash breaks ties, so the choice does not depend on arrival order.
class Decider(NamedTuple):
    final: int  # 1 for a final outcome
    occurred_ms: int
    event_hash: int
    status: str
    quality_score: float | None
    evidence_confidence: float | None
    value_dimension: str | None
    strategic_score: Decimal | None = None

    def outranks(self, other: Decider | None) -> bool:
        return other is None or self[:3] > other[:3]


# The latest verdict on a unit (a later review's finding): the greatest (occurred_ms,
# event hash) wins, so the choice does not depend on arrival order.
class Verdict(NamedTuple):
    occurred_ms: int
    event_hash: int
    verdict: str  # upheld | overturned
    value_at_risk: int | None  # atto

    def outranks(self, other: Verdict | None) -> bool:
        return other is None or self[:2] > other[:2]


# What a decided unit booked in its deciding outcome's window: where (time, team,
# workflow) and the figures of cells.DECISION_FIELDS. Kept so the next settlement takes
# back exactly what was booked, whatever changed since (a rule, a verdict).
# ... and the dimension series it booked into, and the unit's fully loaded cost (atto)
# that put it in its cost bucket (cells.HISTOGRAM).
Booking = tuple[int, str, str, tuple[int, ...], tuple[str, ...], int]


# A unit's row among the units by last event (UnitState.placement).
Placement = tuple[int, str, str, str, int, int]

# Which event sets a unit's dimensions: the least (kind rank, occurred_ms, event hash);
# calls (rank 0) beat outcomes (rank 1), so a unit's team is its earliest call's.
DimsKey = tuple[int, int, int]

# The unit's spend by base window: [base window start ms, team, workflow, model, cost],
# positions named below (a list, so the cost can grow in place).
SpendEntry = list[Any]
SPEND_BASE, SPEND_TEAM, SPEND_WORKFLOW, SPEND_MODEL, SPEND_COST = range(5)


class UnitState:
    """Everything known about one work unit. Events are applied at most once."""

    __slots__ = (
        "agent",
        "baseline",
        "booked",
        "bucket",
        "cached_tokens",
        "calls",
        "computed",
        "context_tokens",
        "cost",
        "cost_items",
        "customer",
        "decider",
        "dims_key",
        "emitted",
        "environment",
        "events",
        "expired_ms",
        "extra_dims",
        "failed",
        "first_ms",
        "first_spend_ms",
        "human_cost",
        "input_tokens",
        "last_ms",
        "link_ms",
        "max_latency_ms",
        "mix_posted",
        "other_by_kind",
        "other_cost",
        "outcome_team",
        "outcome_workflow",
        "outcomes",
        "output_tokens",
        "owner",
        "placed",
        "providers",
        "reasoning_tokens",
        "reported",
        "retries",
        "review_minutes",
        "runaway_alerted",
        "seen",
        "service",
        "spend",
        "stage",
        "system_tokens",
        "task_type",
        "team",
        "unit_id",
        "unpriced",
        "unpriced_calls",
        "user",
        "value",
        "verdict",
        "workflow",
        "write_tokens",
    )

    def __init__(self, unit_id: str, bucket: bool = False) -> None:
        self.unit_id = unit_id
        self.bucket = bucket  # a horizon bucket, not a real unit (see engine)
        self.team = self.workflow = self.owner = self.task_type = ""
        self.service = self.environment = self.agent = ""
        self.dims_key: DimsKey | None = None
        self.outcome_team = self.outcome_workflow = ""
        self.first_ms = self.last_ms = 0
        self.first_spend_ms: int | None = None  # first call or cost item: the deadline's start
        self.events = self.calls = self.retries = self.failed = 0
        self.input_tokens = self.output_tokens = self.cached_tokens = 0
        self.write_tokens = self.reasoning_tokens = self.system_tokens = 0
        self.context_tokens = 0
        self.unpriced = 0  # calls without a price (yet)
        self.cost = 0  # atto: reported where given, else computed
        self.computed = 0  # atto, over priced calls
        self.reported: int | None = None  # atto, over calls that reported a cost
        self.providers: list[str] = []
        self.spend: list[SpendEntry] = []
        self.seen: set[int] = set()
        self.outcomes = 0
        self.value: int | None = None  # atto
        self.review_minutes = Decimal(0)
        self.human_cost = 0  # atto
        self.baseline: int | None = None  # atto
        self.decider: Decider | None = None
        self.link_ms: int | None = None  # earliest outcome: when the spend got linked
        self.expired_ms: int | None = None  # when its unlinked spend was booked
        self.emitted = False
        self.runaway_alerted = False
        self.mix_posted = False
        # Calls awaiting a price: [offset, the call's JSON]; priced when a price arrives.
        self.unpriced_calls: list[list[Any]] = []
        self.other_cost = 0  # atto: its cost items
        self.other_by_kind: dict[str, int] = {}  # atto, by cost item kind
        self.cost_items = 0
        self.max_latency_ms = 0  # the slowest call that reported a latency
        self.verdict: Verdict | None = None
        self.user = self.customer = ""
        self.extra_dims: tuple[str, ...] = ()  # the TOKENYIELD_DIMENSIONS attributes' values
        self.stage = 0  # furthest stage of its outcomes: 0 none, 1.. schemas.events.STAGES
        self.booked: Booking | None = None
        # What the unit's row (Postings.place) holds now: a function of the state, so not
        # saved; a loaded unit holds what its saved state placed.
        self.placed: Placement | None = None

    # -- derived ------------------------------------------------------------------
    @property
    def decided_by_final(self) -> bool:
        """A final outcome decides the unit (nothing later changes its status)."""
        return self.decider is not None and self.decider.final == 1

    @property
    def has_outcome(self) -> bool:
        return self.outcomes > 0

    @property
    def loaded_cost(self) -> int:
        """Fully loaded cost so far, atto: model spend, human review and cost items."""
        return self.cost + self.human_cost + self.other_cost

    @property
    def state(self) -> str:
        """attributed (has an outcome), unattributed (past its deadline without one) or
        pending."""
        if self.outcomes:
            return "attributed"
        return "unattributed" if self.expired_ms is not None else "pending"

    def placement(self) -> Placement | None:
        """Where and what the unit counts among the units by last event: (last event ms,
        team, workflow, agent, model cost, 1 if it has no outcome). The units the views
        list (``v_work_units``): with an attribution, or pending with calls; no shared
        cost bucket."""
        if self.unit_id.startswith(SHARED_PREFIX) or not (
                self.calls or self.outcomes or self.expired_ms is not None):
            return None
        return (self.last_ms, self.team, self.workflow, self.agent, self.cost,
                0 if self.outcomes else 1)

    def entries(self) -> Iterator[tuple[int, str, str, str, int]]:
        """The unit's spend by (base window start, team, workflow, model)."""
        return ((start, team, workflow, model, cost)
                for start, team, workflow, model, cost in self.spend)

    def spend_entry(self, base: int, team: str, workflow: str, model: str
                    ) -> SpendEntry | None:
        """The unit's spend entry of one base window, team, workflow and model."""
        for entry in self.spend:
            if entry[SPEND_BASE] == base and entry[SPEND_MODEL] == model \
                    and entry[SPEND_TEAM] == team and entry[SPEND_WORKFLOW] == workflow:
                return entry
        return None

    def model_costs(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for _, _, _, model, cost in self.entries():
            totals[model] = totals.get(model, 0) + cost
        return totals

    def primary_model(self) -> str:
        totals = self.model_costs()
        if not totals:
            return ""
        return min(totals.items(), key=lambda item: (-item[1], item[0]))[0]

    # -- serialization --------------------------------------------------------------
    def dump(self, vocabulary: Vocabulary) -> bytes:
        """Compact bytes of the whole state (a live unit's checkpoint, an evicted unit's
        summary), as MessagePack without the unit's id (its key holds it): strings as
        their number in the partition's vocabulary, times relative to the first event,
        the event hashes as 8 raw bytes each, money as its atto integer while that fits
        64 bits (under about 9.2 currency units: most of a unit's amounts) and as plain
        decimal text past it (exact at any size). Integers because a unit is written
        again in most checkpoints it lives through under live traffic, and text cost a
        quarter of this function's time (format 5). An evicted unit costs its summary's
        bytes on disk, so every byte counts."""
        ref = vocabulary.ref
        t0 = self.first_ms
        seen = sorted(self.seen)
        position = {h: i for i, h in enumerate(seen)}
        dims = vocabulary.refs((self.team, self.workflow, self.owner, self.task_type,
                                self.service, self.environment, self.agent,
                                self.outcome_team, self.outcome_workflow))
        dims_key = None if self.dims_key is None else \
            [self.dims_key[0], self.dims_key[1] - t0, position[self.dims_key[2]]]
        decider = None
        if self.decider is not None:
            final, at, h, status, quality, confidence, dimension, strategic = self.decider
            decider = [final, at - t0, position[h], ref(status), quality, confidence,
                       None if dimension is None else ref(dimension),
                       None if strategic is None else str(strategic)]
        spend = [[start - t0, ref(team), ref(workflow), ref(model), _money(cost)]
                 for start, team, workflow, model, cost in self.spend]
        providers = vocabulary.refs(self.providers)
        verdict = None
        if self.verdict is not None:
            v_at, v_hash, v_text, v_risk = self.verdict
            verdict = [v_at - t0, position[v_hash], ref(v_text), _money(v_risk)]
        booked = None
        if self.booked is not None:
            # What the unit's own fields already say is left out (None): the booking's
            # time is usually its decider's, its series the outcome's, its cost the
            # unit's; figures end in zeros. A decided unit's summary is ~20 bytes less.
            b_at, b_team, b_workflow, figures, b_dims, b_cost = self.booked
            at_decider = self.decider is not None and b_at == self.decider.occurred_ms
            packed: list[Any] = list(figures)
            for i in _BOOKED_MONEY:
                packed[i] = _money(packed[i])
            end = len(packed)
            while end and not packed[end - 1]:  # every figure is a number
                end -= 1
            del packed[end:]
            booked = [None if at_decider else b_at - t0,
                      None if b_team == self.outcome_team else ref(b_team),
                      None if b_workflow == self.outcome_workflow else ref(b_workflow),
                      packed, [ref(x) for x in b_dims],
                      None if b_cost == self.loaded_cost
                      else _money(b_cost)]
        added = None
        if (self.cost_items or self.max_latency_ms or verdict or booked or self.user
                or self.customer or self.extra_dims or self.stage):
            # The fields most units have first; trailing defaults are left out.
            fields = [(self.max_latency_ms, not self.max_latency_ms),
                      (booked, booked is None), (self.stage, not self.stage),
                      (ref(self.user), not self.user), (ref(self.customer), not self.customer),
                      (_money(self.other_cost), not self.other_cost),
                      ([[ref(k), _money(v)] for k, v in self.other_by_kind.items()],
                       not self.other_by_kind),
                      (self.cost_items, not self.cost_items), (verdict, verdict is None),
                      ([ref(x) for x in self.extra_dims], not self.extra_dims)]
            while fields[-1][1]:
                fields.pop()
            added = [value for value, _ in fields]
        return ormsgpack.packb([
            FORMAT, int(self.bucket) | int(self.emitted) << 1
            | int(self.runaway_alerted) << 2 | int(self.mix_posted) << 3,
            dims, t0,
            [self.last_ms - t0, _rel(self.first_spend_ms, t0), _rel(self.link_ms, t0),
             _rel(self.expired_ms, t0)],
            dims_key,
            [self.events, self.calls, self.retries, self.failed, self.input_tokens,
             self.output_tokens, self.cached_tokens, self.write_tokens,
             self.reasoning_tokens, self.system_tokens, self.context_tokens, self.unpriced,
             self.outcomes],
            [_money(self.cost), _money(self.computed), _money(self.reported),
             _money(self.value), _money(self.human_cost), _money(self.baseline),
             str(self.review_minutes)],
            providers, spend, _pack_hashes(seen), decider, self.unpriced_calls or None,
            added,
        ])

    @classmethod
    def load(cls, unit_id: str, data: bytes, vocabulary: Vocabulary) -> UnitState:
        decoded = ormsgpack.unpackb(data)
        version = decoded[0]
        if version == PREVIOUS_FORMAT:
            decoded.append(None)
        elif version not in (FORMAT, FORMAT_5, FORMAT_4):
            raise StateError(f"unknown unit state format {version!r}", unit_id=unit_id)
        (version, flags, dims, t0, times, dims_key, counts, money, providers, spend, seen,
         decider, unpriced_calls, added) = decoded
        unit = cls(unit_id, bool(flags & 1))
        unit.emitted, unit.runaway_alerted = bool(flags & 2), bool(flags & 4)
        unit.mix_posted = bool(flags & 8)
        text = vocabulary.text
        (unit.team, unit.workflow, unit.owner, unit.task_type, unit.service,
         unit.environment, unit.agent, unit.outcome_team, unit.outcome_workflow) = \
            vocabulary.texts(dims)
        unit.first_ms = t0
        unit.last_ms = t0 + times[0]
        unit.first_spend_ms, unit.link_ms, unit.expired_ms = (_abs(x, t0) for x in times[1:])
        hashes = _unpack_hashes(seen)
        unit.seen = set(hashes)
        if dims_key is not None:
            unit.dims_key = (dims_key[0], t0 + dims_key[1], hashes[dims_key[2]])
        (unit.events, unit.calls, unit.retries, unit.failed, unit.input_tokens,
         unit.output_tokens, unit.cached_tokens, unit.write_tokens, unit.reasoning_tokens,
         unit.system_tokens, unit.context_tokens, unit.unpriced, unit.outcomes) = counts
        unit.cost, unit.computed = _amount(money[0]) or 0, _amount(money[1]) or 0
        unit.reported, unit.value = _amount(money[2]), _amount(money[3])
        unit.human_cost, unit.baseline = _amount(money[4]) or 0, _amount(money[5])
        unit.review_minutes = Decimal(money[6])
        unit.providers = vocabulary.texts(providers)
        unit.spend = [[t0 + start, text(team), text(workflow), text(model), _amount(cost) or 0]
                      for start, team, workflow, model, cost in spend]
        if decider is not None:
            final, at, h, status, quality, confidence, dimension = decider[:7]
            strategic = decider[7] if len(decider) > 7 else None
            unit.decider = Decider(final, t0 + at, hashes[h], text(status), quality,
                                   confidence, None if dimension is None else text(dimension),
                                   None if strategic is None else Decimal(strategic))
        unit.unpriced_calls = unpriced_calls or []
        if added is not None and version >= FORMAT_5:
            (unit.max_latency_ms, booked, unit.stage, user, customer, other, by_kind,
             unit.cost_items, verdict, extra) = added + _ADDED_DEFAULTS[len(added):]
        elif added is not None:  # format 4: every field, in their first order
            (other, by_kind, unit.cost_items, unit.max_latency_ms, verdict, user, customer,
             extra, booked) = added[:9]
            unit.stage = added[9] if len(added) > 9 else 0
        if added is not None:
            unit.other_cost = _amount(other) or 0
            unit.other_by_kind = {text(k): _amount(v) or 0 for k, v in by_kind}
            unit.user, unit.customer = text(user), text(customer)
            unit.extra_dims = tuple(text(x) for x in extra)
            if verdict is not None:
                unit.verdict = Verdict(t0 + verdict[0], hashes[verdict[1]], text(verdict[2]),
                                       _amount(verdict[3]))
            if booked is not None:
                unit.booked = _booking(unit, unit_id, t0, booked, text)
        elif version == PREVIOUS_FORMAT and unit.decider is not None and not unit.bucket:
            # Saved before settlements were kept: what the old rule booked (decided, and
            # accepted by the status alone).
            accepted = int(unit.decider.status in ACCEPTING_STATUSES)
            unit.booked = (unit.decider.occurred_ms, unit.outcome_team, unit.outcome_workflow,
                           (1, accepted) + (0,) * (len(BOOKED_FIELDS) - 2), (), -1)
        unit.placed = unit.placement()
        return unit


def _booking(unit: UnitState, unit_id: str, t0: int, booked: list[Any],
             text: Callable[[int | str], str]) -> Booking:
    """A stored booking; since format 5 a None is what the unit's own fields say (the
    decider's time, the outcome's series, the unit's cost) and trailing zero figures are
    left out."""
    b_at, b_team, b_workflow, figures, b_dims, b_cost = booked
    if b_at is None:
        if unit.decider is None:
            raise StateError("a booking at its decider's time, without one", unit_id=unit_id)
        b_at = unit.decider.occurred_ms - t0
    figures = figures + [0] * (len(BOOKED_FIELDS) - len(figures))
    return (t0 + b_at,
            unit.outcome_team if b_team is None else text(b_team),
            unit.outcome_workflow if b_workflow is None else text(b_workflow),
            tuple((_amount(x) or 0) if i in _BOOKED_MONEY else x for i, x in enumerate(figures)),
            tuple(text(x) for x in b_dims),
            unit.loaded_cost if b_cost is None
            else _amount(b_cost) or 0)


#: The booked figures' fields (cells.DECISION_FIELDS, in order); which of them are money.
BOOKED_FIELDS = ("decided", "accepted", "quality_failed", "latency_failed", "integrity_failed",
                 "accepted_value", "at_risk", "strategic_units", "strategic_score",
                 "strategic_confidence", "strategic_confident", "evidence_confidence",
                 "evidence_confident")
_BOOKED_MONEY = (5, 6)
#: The ``added`` fields (since format 5) when left out: max latency, booking, stage, user,
#: customer, other cost, other cost by kind, cost items, verdict, promoted dimensions.
_ADDED_DEFAULTS: list[Any] = [0, None, 0, "", "", None, [], 0, None, []]


def last_event_ms(data: bytes) -> int:
    """The last event time of dumped state, without building the unit."""
    decoded = ormsgpack.unpackb(data)
    return int(decoded[3]) + int(decoded[4][0])


class Vocabulary:
    """A partition's strings (teams, workflows, models, statuses...), each stored once:
    unit states name them by number. Append-only; the strings added since the last
    checkpoint are written by the next one, before the states that use them. Past
    ``LIMIT`` strings (a publisher sending random dimension values), new ones are kept
    in the states themselves instead."""

    LIMIT = 1_000_000

    def __init__(self) -> None:
        self.strings: list[str] = []
        self.numbers: dict[str, int] = {}
        self.written = 0  # strings already in the store
        self.chunks = 0

    def ref(self, text: str) -> int | str:
        number = self.numbers.get(text)
        if number is None:
            if len(self.strings) >= self.LIMIT:
                return text
            number = self.numbers[text] = len(self.strings)
            self.strings.append(text)
        return number

    def text(self, ref: int | str) -> str:
        return ref if isinstance(ref, str) else self.strings[ref]

    # A unit's checkpoint names a dozen strings; these save a call per string.
    def refs(self, texts: Iterable[str]) -> list[int | str]:
        """:meth:`ref` of each of ``texts``."""
        get, ref = self.numbers.get, self.ref
        return [number if (number := get(text)) is not None else ref(text) for text in texts]

    def texts(self, refs: Iterable[int | str]) -> list[str]:
        """:meth:`text` of each of ``refs``."""
        strings = self.strings
        return [strings[ref] if type(ref) is int else ref for ref in refs]  # type: ignore[misc]

    def take_writes(self, key: Callable[[int], bytes]) -> list[tuple[bytes, bytes]]:
        if self.written == len(self.strings):
            return []
        record = orjson.dumps(self.strings[self.written:])
        self.written = len(self.strings)
        self.chunks += 1
        return [(key(self.chunks - 1), record)]

    def load(self, chunks: list[bytes]) -> None:
        self.strings, self.numbers = [], {}
        for chunk in chunks:
            for text in orjson.loads(chunk):
                self.numbers[text] = len(self.strings)
                self.strings.append(sys.intern(text))
        self.written = len(self.strings)
        self.chunks = len(chunks)


def _rel(value: int | None, t0: int) -> int | None:
    return None if value is None else value - t0


def _abs(value: int | None, t0: int) -> int | None:
    return None if value is None else t0 + value


_INT64 = 2**63


def _money(atto: int | None) -> int | str | None:
    """Atto money as stored: the integer itself while MessagePack's 64 bits hold it,
    else its shortest exact decimal text ("12.0012124")."""
    if atto is None or -_INT64 <= atto < _INT64:
        return atto
    return atto_text(atto)


def _amount(stored: str | int | None) -> int | None:
    """Stored money back to atto: an integer is atto (format 6, and the 0 a booking's
    trailing figures are padded with when read), text is decimal (every format)."""
    if stored is None or type(stored) is int:
        return stored
    return atto_of_text(stored)  # type: ignore[arg-type]


def _pack_hashes(hashes: list[int]) -> bytes:
    return struct.pack(f"<{len(hashes)}q", *hashes)  # 8 bytes a hash


def _unpack_hashes(raw: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(raw) // 8}q", raw))
