"""One work unit's state: everything the engine knows about it, and its compact bytes.

A unit's figures are a function of the *set* of its applied events (and of which of
its calls have a price yet), never of their arrival order: every choice between events
(the dimensions, the deciding outcome) is made by a total order on the events
themselves. The same bytes serve a live unit's checkpoint and the summary an evicted
unit leaves behind, so a late event merges into exactly the state it would have met.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson

FORMAT = 2

# The outcome that decides a unit: (is_final, occurred_ms, event hash, status,
# quality_score, evidence_confidence, value_dimension). The greatest of the first three
# wins: a final outcome beats any non-final one, a later one an earlier one, and the
# event hash breaks ties, so the choice does not depend on arrival order.
Decider = tuple[int, int, int, str, float | None, float | None, str | None]

# Which event sets a unit's dimensions: the least (kind rank, occurred_ms, event hash);
# calls (rank 0) beat outcomes (rank 1), so a unit's team is its earliest call's.
DimsKey = tuple[int, int, int]

# The unit's spend by base window: [base window start ms, team, workflow, model, cost].
SpendEntry = list[Any]


class UnitState:
    """Everything known about one work unit. Events are applied at most once."""

    __slots__ = (
        "agent",
        "baseline",
        "bucket",
        "cached_tokens",
        "calls",
        "computed",
        "context_tokens",
        "cost",
        "decider",
        "dims_key",
        "emitted",
        "environment",
        "events",
        "expired_ms",
        "failed",
        "first_call_ms",
        "first_ms",
        "human_cost",
        "input_tokens",
        "last_ms",
        "link_ms",
        "mix_posted",
        "outcome_team",
        "outcome_workflow",
        "outcomes",
        "output_tokens",
        "owner",
        "providers",
        "reasoning_tokens",
        "reported",
        "repriced",
        "retries",
        "review_minutes",
        "runaway_alerted",
        "seen",
        "service",
        "spend",
        "system_tokens",
        "task_type",
        "team",
        "unit_id",
        "unpriced",
        "unpriced_calls",
        "value",
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
        self.first_call_ms: int | None = None
        self.events = self.calls = self.retries = self.failed = 0
        self.input_tokens = self.output_tokens = self.cached_tokens = 0
        self.write_tokens = self.reasoning_tokens = self.system_tokens = 0
        self.context_tokens = 0
        self.unpriced = 0  # calls without a price (yet)
        self.repriced = 0  # calls priced after they were applied
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

    # -- derived ------------------------------------------------------------------
    @property
    def has_outcome(self) -> bool:
        return self.outcomes > 0

    @property
    def state(self) -> str:
        """attributed (has an outcome), unattributed (past its deadline without one) or
        pending."""
        if self.outcomes:
            return "attributed"
        return "unattributed" if self.expired_ms is not None else "pending"

    def entries(self) -> Iterator[tuple[int, str, str, str, int]]:
        """The unit's spend by (base window start, team, workflow, model)."""
        return ((start, team, workflow, model, cost)
                for start, team, workflow, model, cost in self.spend)

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
    def dump(self) -> bytes:
        """Compact bytes of the whole state (a live unit's checkpoint, an evicted unit's
        summary). Money is text: atto amounts pass 64 bits."""
        return orjson.dumps([
            FORMAT, self.unit_id, int(self.bucket) | int(self.emitted) << 1
            | int(self.runaway_alerted) << 2 | int(self.mix_posted) << 3,
            [self.team, self.workflow, self.owner, self.task_type, self.service,
             self.environment, self.agent, self.outcome_team, self.outcome_workflow],
            self.dims_key,
            [self.first_ms, self.last_ms, self.first_call_ms, self.link_ms, self.expired_ms],
            [self.events, self.calls, self.retries, self.failed, self.input_tokens,
             self.output_tokens, self.cached_tokens, self.write_tokens,
             self.reasoning_tokens, self.system_tokens, self.context_tokens, self.unpriced,
             self.repriced, self.outcomes],
            [str(self.cost), str(self.computed), _text(self.reported), _text(self.value),
             str(self.human_cost), _text(self.baseline), str(self.review_minutes)],
            self.providers,
            [[s, t, w, m, str(c)] for s, t, w, m, c in self.spend],
            _pack_hashes(self.seen),
            self.decider,
            self.unpriced_calls or None,
        ])

    @classmethod
    def load(cls, data: bytes) -> UnitState:
        (version, unit_id, flags, dims, dims_key, times, counts, money, providers, spend,
         seen, decider, unpriced_calls) = orjson.loads(data)
        if version != FORMAT:
            raise ValueError(f"unknown unit state format {version!r}")
        unit = cls(unit_id, bool(flags & 1))
        unit.emitted, unit.runaway_alerted = bool(flags & 2), bool(flags & 4)
        unit.mix_posted = bool(flags & 8)
        (unit.team, unit.workflow, unit.owner, unit.task_type, unit.service,
         unit.environment, unit.agent, unit.outcome_team, unit.outcome_workflow) = dims
        unit.dims_key = tuple(dims_key) if dims_key is not None else None  # type: ignore[assignment]
        (unit.first_ms, unit.last_ms, unit.first_call_ms, unit.link_ms,
         unit.expired_ms) = times
        (unit.events, unit.calls, unit.retries, unit.failed, unit.input_tokens,
         unit.output_tokens, unit.cached_tokens, unit.write_tokens, unit.reasoning_tokens,
         unit.system_tokens, unit.context_tokens, unit.unpriced, unit.repriced,
         unit.outcomes) = counts
        unit.cost, unit.computed = int(money[0]), int(money[1])
        unit.reported, unit.value = _int(money[2]), _int(money[3])
        unit.human_cost, unit.baseline = int(money[4]), _int(money[5])
        unit.review_minutes = Decimal(money[6])
        unit.providers = providers
        unit.spend = [[s, t, w, m, int(c)] for s, t, w, m, c in spend]
        unit.seen = _unpack_hashes(seen)
        unit.decider = tuple(decider) if decider is not None else None  # type: ignore[assignment]
        unit.unpriced_calls = unpriced_calls or []
        return unit


def last_event_ms(data: bytes) -> int:
    """The last event time of dumped state, without building the unit."""
    return int(orjson.loads(data)[5][1])


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)


def _int(value: str | None) -> int | None:
    return None if value is None else int(value)


def _pack_hashes(hashes: set[int]) -> str:
    # 8 bytes a hash (base64: 11 characters) instead of up to 20 digits in JSON.
    return base64.b64encode(struct.pack(f"<{len(hashes)}q", *sorted(hashes))).decode()


def _unpack_hashes(text: str) -> set[int]:
    raw = base64.b64decode(text)
    return set(struct.unpack(f"<{len(raw) // 8}q", raw))
