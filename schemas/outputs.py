"""What the engine emits. Defined beside the input events so the contract is one place.

Every output has a deterministic id and a revision: a replay after a crash re-emits
the same ids, and a consumer that keeps the highest revision per id (ClickHouse's
ReplacingMergeTree does) counts nothing twice.

Ratios (yield, ROI, coverage, shares) are Decimals rounded to 9 places; money is an
exact Decimal in ``currency``. A ratio whose denominator is zero is ``None``, never
infinity and never zero.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

M = TypeVar("M", bound=BaseModel)

AttributionState = Literal["attributed", "unattributed", "revised"]
AlertKind = Literal[
    "spend_spike",
    "token_spike",
    "budget_soft",
    "budget_hard",
    "runaway_work_unit",
    "retry_storm",
    "context_bloat",
    "prompt_sprawl",
    "model_mismatch",
    "cost_per_outcome_regression",
    "spend_plateau",
]
AlertStatus = Literal["firing", "resolved"]
WindowScope = Literal["total", "model", "agent", "dimension", "unit"]
Severity = Literal["info", "warning", "critical"]
#: Where a budget stands: below its soft threshold, past it, or used up.
BudgetLevel = Literal["ok", "soft", "hard"]

#: The ``model`` of a window row that totals all models and carries the outcome figures.
ALL_MODELS = "*"


def without_validation(cls: type[M], values: dict[str, Any]) -> M:
    """A model of ``cls`` holding ``values`` as they are, which the caller already
    checked: every field must be given, with what validation would have made of it. The
    hot paths build thousands a second, where pydantic's ``model_construct`` alone would
    cost more than the work they carry."""
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


class _Output(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    @classmethod
    def trusted(cls, **values: Any) -> Self:
        """Build from values the engine already validated, skipping validation (every
        field must be given: ``without_validation``)."""
        return without_validation(cls, values)


class WorkUnitAttribution(_Output):
    """A work unit's spend joined to what it produced. The latest revision is current."""

    attribution_id: str
    work_unit_id: str
    revision: int = Field(description="Grows with every event applied and with expiry.")
    state: AttributionState
    partition: int
    team: str
    workflow: str
    owner: str = ""
    task_type: str = ""
    service: str = ""
    environment: str = ""
    agent: str = ""
    user: str = ""
    customer: str = ""
    models: list[str] = Field(default_factory=list)
    primary_model: str = ""
    providers: list[str] = Field(default_factory=list)
    first_event_at: datetime
    last_event_at: datetime
    calls: int = 0
    retries: int = 0
    failed_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    system_prompt_tokens: int = 0
    context_tokens: int = 0
    currency: str
    model_cost: Decimal = Field(description="Reported cost where given, else computed.")
    computed_cost: Decimal
    reported_cost: Decimal | None = None
    unpriced_calls: int = Field(0, description="Calls whose cost is unknown (not zero).")
    human_review_minutes: Decimal = Decimal(0)
    human_cost: Decimal = Decimal(0)
    other_cost: Decimal = Field(Decimal(0), description="Its cost items (tools, retrieval, "
                                                        "GPUs, people...).")
    other_cost_by_kind: dict[str, Decimal] = Field(default_factory=dict)
    cost_items: int = 0
    fully_loaded_cost: Decimal = Field(description="model_cost + human_cost + other_cost")
    outcomes: int = 0
    outcome_status: str | None = None
    accepted: bool = Field(False, description="A success: its deciding outcome's status "
                                              "counts as success for the workflow, and it "
                                              "failed no bar (quality, latency, integrity).")
    quality_failed: bool = False
    latency_failed: bool = False
    integrity_failed: bool = Field(False, description="A success overturned by a verdict.")
    max_latency_ms: int = Field(0, description="Its slowest call that reported a latency.")
    verdict: str | None = None
    value_at_risk: Decimal | None = None
    accepted_value: Decimal | None = Field(
        None, description="value if accepted, else zero (None: no value given)")
    strategic_score: Decimal | None = None
    stage: str | None = Field(None, description="The furthest stage of the conversion chain "
                                                "its outcomes reached")
    first_call_at: datetime | None = None
    decided_at: datetime | None = Field(None, description="Its deciding outcome's time")
    cycle_seconds: Decimal | None = Field(
        None, description="From its first call to its deciding outcome")
    is_final: bool = False
    value: Decimal | None = None
    value_dimension: str | None = None
    quality_score: float | None = None
    baseline_cost: Decimal | None = None
    evidence_confidence: float | None = None
    cost_per_outcome: Decimal | None = None
    yield_ratio: Decimal | None = Field(
        None, description="accepted_value / fully_loaded_cost")
    net_value: Decimal | None = Field(
        None, description="accepted_value - value_at_risk - fully_loaded_cost")
    roi: Decimal | None = Field(
        None, description="(baseline_cost - fully_loaded_cost) / fully_loaded_cost"
    )
    price_book_version: str


class CostPerOutcomeWindow(_Output):
    """One tumbling event-time window, by team, workflow and model.

    ``scope`` says what a row is: ``total`` rows (``model == "*"``, no agent) total every
    model and carry the outcome figures (and the cost per accepted outcome, acceptance
    rate and yield); ``model`` rows carry one model's spend-side figures (a model may be
    called anything, ``*`` included); ``agent`` rows (``model == "*"``) carry one
    agent's calls, tokens and spend. ``final`` rows come once the event-time clock of
    every active partition has passed the window's end; earlier rows are running
    updates. Changes that arrive after a window is final come as *correction* rows
    (``correction`` set, additive figures only, ratios empty): a window's figures are
    its row plus its corrections, which every view adds up.
    """

    window_id: str
    window_start: datetime
    window_end: datetime
    window_seconds: int
    team: str
    workflow: str
    model: str
    agent: str = ""
    scope: WindowScope = "total"
    dimension: str = Field("", description="Dimension rows: `user`, `customer` or a "
                                           "TOKENYIELD_DIMENSIONS key")
    dimension_value: str = Field("", description="Dimension rows: the value (`__other__`: "
                                                 "the values beyond the cap)")
    correction: str = Field("", description="Empty for the window's own row; else the "
                                            "correction's id (source partition and "
                                            "checkpoint)")
    revision: int
    final: bool
    currency: str
    calls: int = 0
    retries: int = 0
    failed_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    overhead_tokens: int = Field(0, description="system prompt + context tokens")
    system_prompt_tokens: int = 0
    latency_ms_sum: int = Field(0, description="summed latency of the calls that gave one")
    latency_calls: int = Field(0, description="calls that gave a latency")
    spend: Decimal = Decimal(0)
    unpriced_calls: int = 0
    work_units: int = 0
    outcomes: int = Field(0, description="Outcome events in the window.")
    decided_units: int = Field(0, description="Work units whose deciding outcome is in "
                                              "the window.")
    accepted_outcomes: int = Field(0, description="Work units accepted by their deciding "
                                                  "outcome in the window.")
    value: Decimal = Field(Decimal(0), description="Value of the outcome events in the "
                                                   "window, whatever their status.")
    human_cost: Decimal = Decimal(0)
    other_cost: Decimal = Field(Decimal(0), description="Cost items of work units.")
    shared_cost: Decimal = Field(Decimal(0), description="Cost items without a work unit.")
    cost_items: int = 0
    fully_loaded_cost: Decimal = Field(
        Decimal(0), description="spend + human_cost + other_cost + shared_cost")
    linked_spend: Decimal = Field(Decimal(0), description="Spend linked to an outcome.")
    unlinked_spend: Decimal = Field(Decimal(0), description="Spend past its deadline, no outcome.")
    attributed_spend: Decimal = Field(
        Decimal(0), description="Spend of the window's own calls whose unit has an outcome "
                                "(booked at the call, where linked_spend follows the outcome).")
    unattributed_spend: Decimal = Field(
        Decimal(0), description="Spend of the window's own calls whose unit passed its "
                                "deadline without an outcome.")
    reviewed_outcomes: int = Field(0, description="Outcome events, verdicts included, with "
                                                  "human review minutes (total rows).")
    verdicts: int = Field(0, description="Verdict events (later reviews; not in outcomes).")
    review_minutes: Decimal = Field(
        Decimal(0), description="Review minutes of those events (total rows).")
    units_without_outcome: int = Field(
        0, description="Unit rows: the units whose last event is in the window (work_units, "
                       "spend) that have no outcome.")
    spend_without_outcome: Decimal = Field(Decimal(0), description="... and their model spend.")
    quality_failed_units: int = Field(0, description="Decided units with a success status "
                                                     "but a quality score under the bar.")
    latency_failed_units: int = Field(0, description="... or a call over the latency bar.")
    integrity_failed_units: int = Field(0, description="... or overturned by a verdict.")
    accepted_value: Decimal = Field(Decimal(0), description="Value of the accepted units.")
    value_at_risk: Decimal = Field(Decimal(0), description="Value at risk of the overturned "
                                                           "units.")
    strategic_units: int = Field(0, description="Decided units scored as strategic value.")
    strategic_score_sum: Decimal = Decimal(0)
    strategic_confidence_sum: Decimal = Decimal(0)
    strategic_confident_units: int = 0
    evidence_confidence_sum: Decimal = Field(
        Decimal(0), description="Total rows: the evidence confidence (0-1 each) of the units "
                                "decided in the window whose deciding outcome gave one.")
    evidence_confident_units: int = Field(0, description="... and those units.")
    cost_per_accepted_outcome: Decimal | None = Field(
        None, description="fully_loaded_cost / accepted_outcomes (total rows)")
    acceptance_rate: Decimal | None = Field(
        None, description="accepted_outcomes / decided_units (total rows)")
    yield_ratio: Decimal | None = Field(None, description="accepted_value / fully_loaded_cost")
    error_adjusted_yield: Decimal | None = Field(
        None, description="(accepted_value - value_at_risk) / fully_loaded_cost")
    integrity_failure_rate: Decimal | None = Field(
        None, description="integrity_failed_units / decided_units")
    attribution_coverage: Decimal | None = None
    retry_share: Decimal | None = None
    context_share: Decimal | None = None


class Alert(_Output):
    """A detector's finding. ``alert_id`` is stable for one episode of one signal."""

    alert_id: str
    kind: AlertKind
    status: AlertStatus
    severity: Severity
    subject: dict[str, str]
    observed: Decimal
    expected: Decimal | None = None
    threshold: Decimal | None = None
    unit: str
    window_start: datetime
    window_end: datetime
    occurred_at: datetime = Field(description="Event time at which the detector decided.")
    message: str
    details: dict[str, str] = Field(default_factory=dict)


class DeadLetter(_Output):
    """An input the engine could not use, with everything needed to fix and replay it."""

    dead_letter_id: str
    source_topic: str
    partition: int
    offset: int
    index: int | None = Field(None, description="Position in a batch envelope.")
    error_kind: str
    reason: str
    raw: str = Field(description="The rejected bytes, base64.")
    raw_preview: str = Field(description="The first bytes as text, for people.")
    event_id: str | None = None
    work_unit_id: str | None = None
    rejected_at: datetime = Field(description="Wall-clock time of rejection.")


class LateEvent(_Output):
    """An audit record: a valid event older than the partition's clock when it arrived.
    It was applied like any other (its windows may have been final, so it reached them
    as a correction); this says how late it was."""

    late_id: str
    source_topic: str
    partition: int
    offset: int
    index: int | None = None
    event_kind: Literal["model_call", "outcome", "cost_item"]
    event_id: str
    work_unit_id: str
    occurred_at: datetime
    watermark: datetime
    lateness_seconds: float
    event: str = Field(description="The event as JSON.")


class BudgetState(_Output):
    """Where one budget stands in its current period, as the rollup last computed it.

    Published on the compacted ``budget-state`` topic, keyed by ``budget_id`` (a
    tombstone when the budget is removed), so that a gateway can refuse a request
    before it spends: every worker follows the topic and answers
    ``GET /v1/budgets/check`` from memory. ``spent`` is event-time spend booked in the
    period; ``remaining`` is ``amount - spent``, never below zero."""

    budget_id: str = Field(description="[DIMENSION=V/]team=T[/workflow=W]/period=P")
    team: str = Field("", description="Empty: a dimension budget across teams")
    workflow: str = Field("", description="Empty: the budget covers every workflow")
    dimension: str = Field("", description="user, customer or a promoted attribute; "
                                           "empty: a team (or workflow) budget")
    value: str = Field("", description="The dimension's value the budget is for")
    period: Literal["daily", "monthly"]
    state: BudgetLevel
    amount: Decimal
    soft_share: Decimal
    spent: Decimal
    remaining: Decimal
    currency: str
    period_start: datetime
    resets_at: datetime = Field(description="The end of the period (UTC day or month)")
    updated_at: datetime = Field(description="Event time of the rollup when it changed")
