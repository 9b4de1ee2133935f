"""The workflow registry: what counts as success for a workflow, and its business case.

A rule names a team's workflow, its owner, the bar a success must clear (the statuses
that count as success, a minimum quality score, a maximum call latency) and the
business case it was started on (the human baseline, targets). Rules come from the
settings (``TOKENYIELD_WORKFLOWS``) and, live, from the compacted ``workflows`` topic
(``tokenyield workflows set``); a workflow without a rule has the default bar: the
statuses ``accepted``, ``resolved`` and ``completed``, no quality or latency bar.

How a unit is judged against its rule (``judge``) is docs/SEMANTICS.md, *Success*.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.events import ACCEPTING_STATUSES, STAGES, Outcome, OutcomeStatus

DEFAULT_SUCCESS: tuple[OutcomeStatus, ...] = ("accepted", "resolved", "completed")


class WorkflowRule(BaseModel):
    """One workflow's owner, success bar and business case."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    team: str = Field(min_length=1, max_length=128)
    workflow: str = Field(min_length=1, max_length=128)
    owner: str = Field("", max_length=128)
    success_statuses: tuple[OutcomeStatus, ...] = Field(DEFAULT_SUCCESS, validate_default=True)
    min_quality_score: float | None = Field(
        None, ge=0, le=1, description="A success needs a quality_score at least this")
    max_latency_ms: int | None = Field(
        None, gt=0, description="A success needs every call of the unit at most this slow")
    # The business case (views only; the engine does not read it).
    baseline_minutes_per_unit: Decimal | None = Field(None, ge=0)
    baseline_rate_per_hour: Decimal | None = Field(None, ge=0)
    baseline_cost_per_unit: Decimal | None = Field(None, ge=0)
    target_cost_per_accepted_outcome: Decimal | None = Field(None, ge=0)
    expected_value_per_unit: Decimal | None = None
    started_on: date | None = None

    @field_validator("success_statuses")
    @classmethod
    def _some_status(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one status must count as success")
        return tuple(sorted(set(value)))

    @property
    def key(self) -> str:
        """Its id on the ``workflows`` topic."""
        return f"team={self.team}/workflow={self.workflow}"

    @property
    def has_bar(self) -> bool:
        return (self.min_quality_score is not None or self.max_latency_ms is not None
                or frozenset(self.success_statuses) != ACCEPTING_STATUSES)


#: A row of the ``workflows`` table: the rule, when it changed, and 1 when it was removed.
WorkflowRow = tuple[WorkflowRule, datetime, int]


@dataclass(frozen=True, slots=True)
class Judgement:
    """A decided unit's standing: a success, or which bar it failed."""

    success: bool
    status_failed: bool = False  # its deciding outcome's status is not a success
    quality_failed: bool = False
    latency_failed: bool = False
    integrity_failed: bool = False  # an overturned verdict


class WorkflowRegistry:
    """The rules in force, by (team, workflow)."""

    def __init__(self, rules: tuple[WorkflowRule, ...] = (), version: str = "settings"
                 ) -> None:
        self.rules = {(r.team, r.workflow): r for r in rules}
        self.version = version

    def rule(self, team: str, workflow: str) -> WorkflowRule | None:
        return self.rules.get((team, workflow))

    def success_statuses(self, team: str, workflow: str) -> frozenset[str]:
        rule = self.rule(team, workflow)
        return ACCEPTING_STATUSES if rule is None else frozenset(rule.success_statuses)


def judge(rule: WorkflowRule | None, status: str | None, quality_score: float | None,
          max_latency_ms: int, overturned: bool) -> Judgement:
    """A unit's standing. ``status`` and ``quality_score`` are its deciding outcome's,
    ``max_latency_ms`` the slowest of its calls (0 when none reported one), and
    ``overturned`` whether its latest verdict overturned it. A unit that failed on its
    status is not an integrity or quality failure: those are successes that did not
    hold. A missing quality score passes the bar (the bar judges scores given)."""
    statuses = ACCEPTING_STATUSES if rule is None else frozenset(rule.success_statuses)
    if status is None or status not in statuses:
        return Judgement(False, status_failed=True)
    quality = (rule is not None and rule.min_quality_score is not None
               and quality_score is not None and quality_score < rule.min_quality_score)
    latency = (rule is not None and rule.max_latency_ms is not None
               and max_latency_ms > rule.max_latency_ms)
    return Judgement(not (quality or latency or overturned), quality_failed=quality,
                     latency_failed=latency, integrity_failed=overturned)


def stage_of(outcome: Outcome) -> int:
    """How far down the conversion chain an outcome says the work went: 1 to 4 for
    ``schemas.events.STAGES`` (its ``stage``, or ``output_accepted`` for a success
    status by the default statuses), 0 for none. A unit's stage is the furthest of its
    outcomes' (a maximum: the order of the events does not matter)."""
    if outcome.stage is not None:
        return STAGES.index(outcome.stage) + 1
    return 1 if outcome.status in ACCEPTING_STATUSES else 0
