"""Plain data the engine takes and gives: message coordinates, the rows it produces
for the event tables, everything one step emits, and the ledger of where every event
went."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from schemas.codec import DecodeError
from schemas.events import CostItem, ModelCall, Outcome
from schemas.outputs import (
    Alert,
    CostPerOutcomeWindow,
    DeadLetter,
    LateEvent,
    WorkUnitAttribution,
)
from schemas.pricing import PriceEntry
from streams.core.alerts.alert_config import BudgetRow
from streams.core.alerts.forecast import SpendForecast
from streams.core.money import from_atto
from streams.core.workflows import WorkflowRow

EventKind = Literal["calls", "outcomes", "costs"]
EVENT_KINDS: tuple[EventKind, ...] = ("calls", "outcomes", "costs")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from."""

    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class CallRecord:
    """A validated, priced call for the ``model_calls`` table. Money is in the reporting
    currency (``cost`` is the reported cost when given, else the computed one)."""

    call: ModelCall
    cost_atto: int | None
    computed_atto: int | None
    price_book_version: str
    partition: int
    offset: int
    currency: str = "USD"  # the reporting currency: of cost and computed cost
    price_currency: str = ""  # the currency of the price entry that priced it, if any

    @property
    def cost(self) -> Decimal | None:
        return from_atto(self.cost_atto) if self.cost_atto is not None else None

    @property
    def computed_cost(self) -> Decimal | None:
        return from_atto(self.computed_atto) if self.computed_atto is not None else None


@dataclass(slots=True)
class OutcomeRecord:
    """A validated outcome for the ``outcomes`` table, money in the reporting currency
    (atto: integers of 10^-18 units, as the engine keeps it, to the sink's columns)."""

    outcome: Outcome
    value_atto: int | None
    human_atto: int
    partition: int
    offset: int
    at_risk_atto: int | None = None

    @property
    def value(self) -> Decimal | None:
        return from_atto(self.value_atto) if self.value_atto is not None else None

    @property
    def human_cost(self) -> Decimal:
        return from_atto(self.human_atto)

    @property
    def value_at_risk(self) -> Decimal | None:
        return from_atto(self.at_risk_atto) if self.at_risk_atto is not None else None


@dataclass(slots=True)
class CostRecord:
    """A validated cost item for the ``cost_items`` table; ``amount_atto`` is its cost
    in the reporting currency (``currency``)."""

    item: CostItem
    amount_atto: int
    partition: int
    offset: int
    currency: str = "USD"

    @property
    def amount(self) -> Decimal:
        return from_atto(self.amount_atto)


@dataclass(frozen=True, slots=True)
class PendingUnit:
    """A work unit with calls and no decision yet, as ``work_units_by_day`` holds it (a
    decided unit is there from its attribution). Taken at each checkpoint from the units
    it changed; ``version`` orders it with the unit's attributions (the same formula:
    last event second, then ``revision_of``), so the decision, later, replaces it.
    Money in atto, in the reporting currency."""

    unit_id: str
    version: int
    team: str
    workflow: str
    agent: str
    primary_model: str
    first_ms: int
    last_ms: int
    calls: int
    retries: int
    unpriced: int
    cost_atto: int
    loaded_atto: int  # model spend, cost items and human review so far
    currency: str


@dataclass(slots=True)
class Outputs:
    """Everything a step produced, in order: what goes to Kafka and the rows for
    ClickHouse. A checkpoint's outputs, with the offset ranges they came from, are the
    batch the sink writes (``token`` makes a replayed insert a duplicate)."""

    attributions: list[WorkUnitAttribution] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    late: list[LateEvent] = field(default_factory=list)
    reroute: list[tuple[EventKind, str, bytes]] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    outcomes: list[OutcomeRecord] = field(default_factory=list)
    cost_items: list[CostRecord] = field(default_factory=list)
    windows: list[CostPerOutcomeWindow] = field(default_factory=list)
    prices: list[tuple[PriceEntry, str]] = field(default_factory=list)
    budgets: list[BudgetRow] = field(default_factory=list)
    workflows: list[WorkflowRow] = field(default_factory=list)
    forecasts: list[tuple[SpendForecast, str]] = field(default_factory=list)  # , currency
    pending_units: list[PendingUnit] = field(default_factory=list)  # at checkpoints
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Batches not read from Kafka (prices, budgets) have no offsets: a tag of their own
    # keeps ClickHouse from deduplicating a later, different write as a replay.
    tag: str = ""

    def extend(self, other: Outputs) -> None:
        for name in _LISTS:
            getattr(self, name).extend(getattr(other, name))

    def cover(self, topic: str, partition: int, offset: int) -> None:
        """The batch holds what this message produced."""
        key = f"{topic}[{partition}]"
        first, last = self.ranges.get(key, (offset, offset))
        self.ranges[key] = (min(first, offset), max(last, offset))

    def token(self, table: str) -> str:
        """The insert deduplication token of the batch's rows of ``table``."""
        spans = ",".join(f"{k}:{a}-{b}" for k, (a, b) in sorted(self.ranges.items()))
        return f"{table}|{spans}|{self.tag}" if self.tag else f"{table}|{spans}"

    def __len__(self) -> int:
        return sum(len(getattr(self, n)) for n in _LISTS)


_LISTS = ("attributions", "alerts", "dead_letters", "late", "reroute", "calls", "outcomes",
          "cost_items", "windows", "prices", "budgets", "workflows", "forecasts",
          "pending_units")


@dataclass(slots=True)
class Ledger:
    """Where every event went.

    ``received == rejected + duplicates + rerouted + applied``: each event received is
    in exactly one of those. ``late`` and ``beyond_horizon`` are parts of ``applied``
    (applied as corrections), ``repriced`` counts calls priced after they were applied.
    Applied events sit in live units (pending, attributed, unattributed: see
    ``PartitionEngine.live_events``), in summaries of evicted units, or, past the
    horizon, in forgotten ones.
    """

    received: int = 0
    rejected: int = 0
    duplicates: int = 0
    rerouted: int = 0
    applied: int = 0
    late: int = 0
    beyond_horizon: int = 0
    repriced: int = 0
    summarized_attributed: int = 0
    summarized_unattributed: int = 0
    forgotten_attributed: int = 0
    forgotten_unattributed: int = 0

    def dump(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def load(cls, values: dict[str, Any]) -> Ledger:
        names = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in values.items() if k in names})


def dead_letter(error: DecodeError, source: Source, rejected_at: datetime) -> DeadLetter:
    """The dead letter of a rejected item: its id is where it came from (topic,
    partition, offset, index), so a replay of the same message gives the same id."""
    index = "" if error.index is None else str(error.index)
    return DeadLetter(
        dead_letter_id=f"{source.topic}:{source.partition}:{source.offset}:{index}",
        source_topic=source.topic, partition=source.partition, offset=source.offset,
        index=error.index, error_kind=error.kind, reason=error.reason,
        raw=base64.b64encode(error.raw).decode(),
        raw_preview=error.raw[:512].decode("utf-8", errors="replace"),
        event_id=error.event_id, work_unit_id=error.work_unit_id, rejected_at=rejected_at)


def event_hash(kind: str, event_id: str) -> int:
    """A stable 64-bit hash of an event's identity: its kind and id. A call and an
    outcome that happen to share an id are different events. (Python's ``hash`` changes
    per process.)"""
    digest = hashlib.blake2b(f"{kind}\x00{event_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
