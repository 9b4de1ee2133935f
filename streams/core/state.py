"""The engine's mutable state: one ``UnitState`` per open work unit, one ``Cell`` per
window row. Both serialize to compact JSON lists for checkpoints.

Kept deliberately lean (``__slots__``, integers of atto money, small lists instead of
dicts) because every open unit lives in memory; idle units are parked as their
serialized bytes (see ``engine.UnitStore``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

# Outcome that decides a unit's status: (is_final, occurred_ms, event_id, status,
# quality_score, evidence_confidence, value_dimension). The greatest wins, so a final
# outcome beats any non-final one and a later one beats an earlier one; event_id breaks
# ties, making the choice independent of arrival order.
Decider = tuple[int, int, str, str, float | None, float | None, str | None]


class UnitState:
    """Everything known about one work unit. Events are applied at most once."""

    __slots__ = (
        "agent",
        "baseline",
        "cached_tokens",
        "calls",
        "cells",
        "computed",
        "context_tokens",
        "cost",
        "decider",
        "emitted",
        "environment",
        "events",
        "expired_ms",
        "failed",
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
        "retries",
        "review_minutes",
        "revision",
        "runaway_alerted",
        "seen",
        "service",
        "system_tokens",
        "task_type",
        "team",
        "unit_id",
        "unpriced",
        "value",
        "workflow",
        "write_tokens",
    )

    def __init__(self, unit_id: str) -> None:
        self.unit_id = unit_id
        self.team = ""
        self.workflow = ""
        self.owner = ""
        self.task_type = ""
        self.service = ""
        self.environment = ""
        self.agent = ""
        self.outcome_team = ""
        self.outcome_workflow = ""
        self.first_ms = 0
        self.last_ms = 0
        self.events = 0
        self.calls = 0
        self.retries = 0
        self.failed = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_tokens = 0
        self.write_tokens = 0
        self.reasoning_tokens = 0
        self.system_tokens = 0
        self.context_tokens = 0
        self.cost = 0  # atto: reported where given, else computed
        self.computed = 0  # atto, over priced calls
        self.reported: int | None = None  # atto, over calls that reported a cost
        self.unpriced = 0
        self.providers: list[str] = []
        # Spend by (base-window start ms, team, workflow, model): a flat list of
        # [start, team, workflow, model, cost, ...], usually one or two entries.
        self.cells: list[Any] = []
        self.seen: set[int] = set()
        self.outcomes = 0
        self.value: int | None = None  # atto
        self.review_minutes = Decimal(0)
        self.human_cost = 0  # atto
        self.baseline: int | None = None  # atto
        self.decider: Decider | None = None
        self.link_ms: int | None = None  # earliest outcome time: when spend got linked
        self.expired_ms: int | None = None  # deadline passed with no outcome
        self.revision = 0
        self.emitted = False
        self.runaway_alerted = False
        self.mix_posted = False

    # -- derived ------------------------------------------------------------------
    @property
    def resolved(self) -> bool:
        """Final outcome seen, or the deadline passed without one."""
        return self.expired_ms is not None or (self.decider is not None and self.decider[0] == 1)

    @property
    def has_outcome(self) -> bool:
        return self.outcomes > 0

    def model_costs(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        cells = self.cells
        for i in range(0, len(cells), 5):
            totals[cells[i + 3]] = totals.get(cells[i + 3], 0) + cells[i + 4]
        return totals

    def primary_model(self) -> str:
        totals = self.model_costs()
        if not totals:
            return ""
        return min(totals.items(), key=lambda item: (-item[1], item[0]))[0]

    # -- serialization --------------------------------------------------------------
    def dump(self) -> bytes:
        return orjson.dumps(
            [
                1,
                self.unit_id,
                [self.team, self.workflow, self.owner, self.task_type, self.service,
                 self.environment, self.agent, self.outcome_team, self.outcome_workflow],
                [self.first_ms, self.last_ms, self.events, self.calls, self.retries,
                 self.failed, self.input_tokens, self.output_tokens, self.cached_tokens,
                 self.write_tokens, self.reasoning_tokens, self.system_tokens,
                 self.context_tokens, self.unpriced, self.outcomes, self.revision,
                 int(self.emitted), int(self.runaway_alerted), int(self.mix_posted)],
                [str(self.cost), str(self.computed), _opt(self.reported), _opt(self.value),
                 str(self.human_cost), _opt(self.baseline), str(self.review_minutes)],
                self.providers,
                [str(x) if isinstance(x, int) and i % 5 == 4 else x
                 for i, x in enumerate(self.cells)],
                sorted(self.seen),
                list(self.decider) if self.decider is not None else None,
                self.link_ms,
                self.expired_ms,
            ]
        )

    @classmethod
    def load(cls, data: bytes) -> UnitState:
        (_, unit_id, dims, counts, money, providers, cells, seen, decider, link_ms,
         expired_ms) = orjson.loads(data)
        unit = cls(unit_id)
        (unit.team, unit.workflow, unit.owner, unit.task_type, unit.service,
         unit.environment, unit.agent, unit.outcome_team, unit.outcome_workflow) = dims
        (unit.first_ms, unit.last_ms, unit.events, unit.calls, unit.retries, unit.failed,
         unit.input_tokens, unit.output_tokens, unit.cached_tokens, unit.write_tokens,
         unit.reasoning_tokens, unit.system_tokens, unit.context_tokens, unit.unpriced,
         unit.outcomes, unit.revision, emitted, runaway, mix) = counts
        unit.emitted = bool(emitted)
        unit.runaway_alerted = bool(runaway)
        unit.mix_posted = bool(mix)
        unit.cost = int(money[0])
        unit.computed = int(money[1])
        unit.reported = _int_or_none(money[2])
        unit.value = _int_or_none(money[3])
        unit.human_cost = int(money[4])
        unit.baseline = _int_or_none(money[5])
        unit.review_minutes = Decimal(money[6])
        unit.providers = providers
        unit.cells = [int(x) if i % 5 == 4 else x for i, x in enumerate(cells)]
        unit.seen = set(seen)
        unit.decider = tuple(decider) if decider is not None else None  # type: ignore[assignment]
        unit.link_ms = link_ms
        unit.expired_ms = expired_ms
        return unit


def _opt(value: int | None) -> str | None:
    return None if value is None else str(value)


def _int_or_none(value: str | None) -> int | None:
    return None if value is None else int(value)


# Cell fields, by index into ``Cell.v`` (a plain list: compact and quick to add to).
CALLS, RETRIES, FAILED, INPUT, OUTPUT, CACHED, REASONING, OVERHEAD = range(8)
SPEND, UNPRICED, WORK_UNITS, OUTCOMES, ACCEPTED, VALUE, HUMAN, LINKED, UNLINKED = range(8, 17)
SYSTEM = 17
CELL_FIELDS = 18

# What a cell key's last element (its "series") means:
#   a model name        spend-side figures of that model;
#   ALL_MODELS ("*")    outcome figures, and distinct work units over all models;
#   "agent:<name>"      spend-side figures of one agent (spike detection per agent);
#   "mix:<model>"       units finalised with that primary model; the key's team slot
#                       holds the task type (model-mismatch detection).
AGENT_SERIES = "agent:"
MIX_SERIES = "mix:"


class Cell:
    """Additive figures of one window row (size, start, team, workflow, model)."""

    __slots__ = ("dirty", "revision", "v")

    def __init__(self) -> None:
        self.v: list[int] = [0] * CELL_FIELDS
        self.revision = 0
        self.dirty = False

    def dump(self, key: tuple[int, int, str, str, str]) -> list[Any]:
        return [*key, self.revision, [str(x) for x in self.v]]

    @classmethod
    def load(cls, item: list[Any]) -> tuple[tuple[int, int, str, str, str], Cell]:
        size, start, team, workflow, model, revision, values = item
        cell = cls()
        cell.revision = revision
        cell.v = [int(x) for x in values]
        cell.v.extend([0] * (CELL_FIELDS - len(cell.v)))
        return (size, start, team, workflow, model), cell
