"""What services publish: model calls and business outcomes, keyed by work unit.

Contract rules (also in docs/EVENTS.md):
- Every event is frozen and validated on the way in; a violation names the field and
  the reason, and the event goes to the dead-letter topic instead of the engine.
- Unknown fields are accepted and ignored, so a publisher on a newer contract version
  does not break an older engine (forward compatibility). Nothing unknown is stored.
- ``occurred_at`` is event time: it must carry a timezone and is normalised to UTC.
- Money is ``Decimal``: JSON numbers or decimal strings are both accepted ("0.0125"),
  NaN and infinities are not. Money is exact: a JSON number is read from its text, never
  through a binary float, and an amount with more than 18 decimal places (tokenyield
  keeps money to 10^-18) is rejected rather than rounded.
- ``input_tokens`` counts every prompt token; cache reads (``cached_input_tokens``) and
  cache writes (``cache_write_tokens``) are parts of it. ``reasoning_tokens`` are a
  part of ``output_tokens``. This is the OpenTelemetry GenAI convention.
  ``cache_write_1h_tokens`` are the part of ``cache_write_tokens`` written to a 1-hour
  cache (Anthropic's ``ephemeral_1h_input_tokens``); the rest are 5-minute writes.
- ``service_tier`` is the tier the provider served the call on (``flex``, ``priority``,
  ``batch``...; ``default``, ``standard``, ``auto`` or no value mean standard prices).
- Cost items (``CostItem``, the ``costs`` topic) are what a unit costs besides model
  tokens: tools, retrieval, GPUs, seats, people. One without a ``work_unit_id`` is a
  shared cost of its team and workflow.
- ``user`` and ``customer`` (on every kind) are optional business dimensions; so are the
  ``attributes`` keys named by ``TOKENYIELD_DIMENSIONS``.
- A later review may send an outcome with a ``verdict`` (``upheld`` or ``overturned``)
  for a unit; it needs no status (docs/SEMANTICS.md, *Answer integrity*).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

CONTRACT_VERSION = "1"
MAX_ID_LENGTH = 256
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_KEY_LENGTH = 64
MAX_ATTRIBUTE_VALUE_LENGTH = 256
MAX_TOKENS = 1_000_000_000
MAX_MONEY = Decimal("1000000000")

_EXACT = Context(prec=80)  # a product of two 18-place amounts, without rounding
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _to_utc(value: datetime) -> datetime:
    # A timestamp far outside this century is nearly always a unit mistake
    # (seconds sent as milliseconds, or a zero default); reject it loudly.
    if not _EARLIEST <= value < _LATEST:
        raise ValueError("must fall between 2000-01-01 and 2100-01-01 (check the time unit)")
    return value.astimezone(UTC)


Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^\x00-\x1f\x7f]+$"),
]
Dimension = Annotated[str, StringConstraints(max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$")]
RequiredDimension = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
]
EventTime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
TokenCount = Annotated[int, Field(ge=0, le=MAX_TOKENS, strict=True)]
MONEY_PLACES = 18
MINUTE_PLACES = 6


def _places(limit: int, what: str) -> AfterValidator:
    def check(value: Decimal) -> Decimal:
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > limit and value != value.quantize(
                Decimal(1).scaleb(-limit)):
            raise ValueError(f"has more than {limit} decimal places: tokenyield keeps {what} "
                             f"exact to 10^-{limit} and does not round it")
        return value
    return AfterValidator(check)


Money = Annotated[Decimal, Field(ge=0, le=MAX_MONEY, allow_inf_nan=False),
                  _places(MONEY_PLACES, "money")]
SignedMoney = Annotated[Decimal, Field(ge=-MAX_MONEY, le=MAX_MONEY, allow_inf_nan=False),
                        _places(MONEY_PLACES, "money")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
ServiceTier = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
]
Share = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
AttributeKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ATTRIBUTE_KEY_LENGTH)]
AttributeValue = Annotated[str, StringConstraints(max_length=MAX_ATTRIBUTE_VALUE_LENGTH)]
Attributes = Annotated[dict[AttributeKey, AttributeValue], Field(max_length=MAX_ATTRIBUTES)]

CallStatus = Literal["ok", "error", "timeout", "cancelled"]
OutcomeStatus = Literal[
    "accepted", "resolved", "completed", "rejected", "escalated", "abandoned", "failed"
]
ValueDimension = Literal["revenue", "cost_avoided", "risk_avoided", "capacity", "strategic"]
Verdict = Literal["upheld", "overturned"]
#: The conversion chain, in order: an output accepted, an action taken on it, the
#: operating outcome realised, the value captured (docs/SEMANTICS.md, *Stages*).
Stage = Literal["output_accepted", "action_taken", "outcome_realised", "value_captured"]
STAGES: tuple[str, ...] = Stage.__args__  # type: ignore[attr-defined]
CostKind = Literal[
    "tool_call", "embedding", "retrieval", "gpu", "seat", "infra", "human_labour", "other"
]
COST_KINDS: tuple[str, ...] = CostKind.__args__  # type: ignore[attr-defined]
StrategicScore = Annotated[Decimal, Field(ge=0, le=10, allow_inf_nan=False),
                           _places(MINUTE_PLACES, "strategic scores")]
Quantity = Annotated[Decimal, Field(gt=0, le=Decimal(1_000_000_000_000), allow_inf_nan=False),
                     _places(MONEY_PLACES, "quantities")]

#: Outcome statuses that count as the work having produced what was asked for.
ACCEPTING_STATUSES: frozenset[str] = frozenset({"accepted", "resolved", "completed"})


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)

    event_id: Identifier = Field(description="Unique per event; the idempotency key.")
    work_unit_id: Identifier = Field(description="The unit of work this event belongs to.")
    occurred_at: EventTime = Field(description="Event time, timezone-aware; stored in UTC.")
    schema_version: Literal["1"] = Field(
        default=CONTRACT_VERSION, description="Contract major version."
    )


class Repricing(BaseModel):
    """What a repricing event corrects (see ``ModelCall.reprices``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: Identifier = Field(description="The call priced again.")
    previous_cost: Money = Field(
        description="Its computed cost as booked, in the reporting currency.")


class ModelCall(_Event):
    """One call to a model, with its token usage and the dimensions that own its cost."""

    provider: RequiredDimension
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    input_tokens: TokenCount = 0
    output_tokens: TokenCount = 0
    cached_input_tokens: TokenCount = Field(0, description="Cache reads; a part of input.")
    cache_write_tokens: TokenCount = Field(
        0, description="Cache writes, of any lifetime; a part of input.")
    cache_write_1h_tokens: TokenCount = Field(
        0, description="The 1-hour cache writes: a part of cache_write_tokens (Anthropic's "
                       "usage.cache_creation.ephemeral_1h_input_tokens), priced at the 1-hour "
                       "cache-write rate; the rest of cache_write_tokens are 5-minute writes.")
    reasoning_tokens: TokenCount = Field(0, description="A part of output.")
    latency_ms: Annotated[int, Field(ge=0, le=86_400_000, strict=True)] | None = None
    service_tier: ServiceTier | None = Field(
        None, description="The provider's service tier the call ran on, as the provider "
                          "reports it (OpenAI: default, flex, priority; Anthropic: standard, "
                          "priority, batch); priced at that tier's rates when the price entry "
                          "lists them. None, default, standard and auto mean standard prices.")
    status: CallStatus = "ok"
    attempt: Annotated[int, Field(ge=1, le=10_000, strict=True)] = Field(
        1, description="1 is the first try; above 1 is a retry."
    )
    team: RequiredDimension
    owner: Dimension = ""
    workflow: RequiredDimension
    task_type: Dimension = ""
    agent: Dimension | None = None
    service: Dimension = ""
    environment: Dimension = ""
    user: Dimension | None = Field(None, description="The end user the call served.")
    customer: Dimension | None = Field(None, description="The customer (account, tenant) "
                                                         "the call served.")
    reported_cost: Money | None = Field(
        None, description="The provider's own figure; wins over the computed cost."
    )
    currency: Currency | None = None
    system_prompt_tokens: TokenCount | None = None
    context_tokens: TokenCount | None = None
    attributes: Attributes = Field(default_factory=dict)
    reprices: Repricing | None = Field(
        None, description="Set by `tokenyield prices reprice` only: this event prices the "
                          "call `reprices.event_id` again (the same call's fields, an event id "
                          "of its own) with the price book in force now, after a price was "
                          "published for the past; only the difference in cost is booked.")

    @model_validator(mode="after")
    def _check_parts(self) -> ModelCall:
        problems = []
        if self.reprices is not None and self.reported_cost is not None:
            problems.append("a repricing cannot carry a reported_cost (it prices the call "
                            "with the price book)")
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            problems.append(
                "cached_input_tokens + cache_write_tokens "
                f"({self.cached_input_tokens} + {self.cache_write_tokens}) "
                f"exceed input_tokens ({self.input_tokens})"
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            problems.append(
                f"cache_write_1h_tokens ({self.cache_write_1h_tokens}) exceed "
                f"cache_write_tokens ({self.cache_write_tokens})"
            )
        if self.reasoning_tokens > self.output_tokens:
            problems.append(
                f"reasoning_tokens ({self.reasoning_tokens}) exceed "
                f"output_tokens ({self.output_tokens})"
            )
        overhead = (self.system_prompt_tokens or 0) + (self.context_tokens or 0)
        if overhead > self.input_tokens:
            problems.append(
                f"system_prompt_tokens + context_tokens ({overhead}) exceed "
                f"input_tokens ({self.input_tokens})"
            )
        if self.reported_cost is not None and self.currency is None:
            problems.append("reported_cost needs a currency")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def is_retry(self) -> bool:
        return self.attempt > 1


class Outcome(_Event):
    """What a unit of work produced, and what it was worth."""

    team: RequiredDimension
    workflow: RequiredDimension
    status: OutcomeStatus | None = Field(
        description="Required (null only on a verdict: an outcome carrying `verdict`, "
                    "from a later review, may leave it out).")
    value: SignedMoney | None = Field(None, description="Money the outcome was worth.")
    currency: Currency | None = None
    value_dimension: ValueDimension | None = None
    human_review_minutes: Annotated[
        Decimal, Field(ge=0, le=Decimal(1_000_000), allow_inf_nan=False),
        _places(MINUTE_PLACES, "review minutes")
    ] = Decimal(0)
    review_rate: Money | None = Field(
        None, description="Money per hour of review; defaults per team from settings."
    )
    quality_score: Share | None = None
    baseline_cost: Money | None = Field(
        None, description="What this outcome costs without AI."
    )
    evidence_confidence: Share | None = None
    is_final: Annotated[bool, Field(strict=True)] = Field(
        True, description="False when more outcomes may follow for the same work unit."
    )
    verdict: Verdict | None = Field(
        None, description="A later review's or audit's finding on the unit's answer: "
                          "`overturned` makes an accepted unit an integrity failure.")
    value_at_risk: Money | None = Field(
        None, description="With an `overturned` verdict: the loss the wrong answer causes "
                          "(counted as negative value).")
    strategic_score: StrategicScore | None = Field(
        None, description="0-10, for value_dimension `strategic` instead of money.")
    stage: Stage | None = Field(
        None, description="How far down the conversion chain the work went; without "
                          "one, a success status means `output_accepted`.")
    user: Dimension | None = None
    customer: Dimension | None = None

    @model_validator(mode="after")
    def _check_money(self) -> Outcome:
        problems = []
        money_fields = ("value", "review_rate", "baseline_cost", "value_at_risk")
        if self.currency is None and any(getattr(self, f) is not None for f in money_fields):
            given = [f for f in money_fields if getattr(self, f) is not None]
            problems.append(f"{', '.join(given)} need a currency")
        if self.value_dimension is not None and self.value is None and not (
                self.value_dimension == "strategic" and self.strategic_score is not None):
            problems.append("value_dimension without a value")
        if self.strategic_score is not None and self.value_dimension != "strategic":
            problems.append("strategic_score needs value_dimension strategic")
        if self.status is None and self.verdict is None:
            problems.append("status is null: only a verdict may leave it out")
        if self.value_at_risk is not None and self.verdict != "overturned":
            problems.append("value_at_risk needs verdict overturned")
        if self.verdict is not None and self.value is not None:
            problems.append("a verdict carries no value (an overturned one may give "
                            "value_at_risk)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        # A value with no stated dimension is read as revenue, the plainest case.
        if data.get("value") is not None and data.get("value_dimension") is None:
            data = {**data, "value_dimension": "revenue"}
        # A verdict may leave the status out (it decides nothing by itself).
        if data.get("verdict") is not None and "status" not in data:
            data = {**data, "status": None}
        return data

    @property
    def accepted(self) -> bool:
        return self.status in ACCEPTING_STATUSES

    @property
    def is_verdict(self) -> bool:
        """A review's finding on the unit, not an outcome that decides it."""
        return self.verdict is not None


class CostItem(BaseModel):
    """Anything a unit of work costs besides model tokens: a tool or API call, an
    embedding or retrieval, GPU time, a seat, infrastructure, people's time. Without a
    ``work_unit_id`` it is a *shared* cost of its team and workflow, allocated to their
    units (docs/SEMANTICS.md, *Cost items*)."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)

    event_id: Identifier = Field(description="Unique per event; the idempotency key.")
    work_unit_id: Identifier | None = Field(
        None, description="The unit of work it belongs to; none for a shared cost.")
    occurred_at: EventTime = Field(description="Event time, timezone-aware; stored in UTC.")
    schema_version: Literal["1"] = Field(
        default=CONTRACT_VERSION, description="Contract major version."
    )
    team: RequiredDimension
    workflow: RequiredDimension
    kind: CostKind
    amount: Money | None = Field(None, description="The cost; or give quantity and unit_price.")
    quantity: Quantity | None = None
    unit_price: Money | None = None
    currency: Currency
    description: Annotated[str, StringConstraints(max_length=512)] = ""
    user: Dimension | None = None
    customer: Dimension | None = None
    attributes: Attributes = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_amount(self) -> CostItem:
        priced = self.quantity is not None or self.unit_price is not None
        if self.amount is not None and priced:
            raise ValueError("give amount, or quantity and unit_price, not both")
        if self.amount is None and (self.quantity is None or self.unit_price is None):
            raise ValueError("amount is required (or quantity and unit_price)")
        if self.amount is None and self.cost > MAX_MONEY:
            raise ValueError(f"quantity x unit_price exceeds {MAX_MONEY}")
        return self

    @property
    def cost(self) -> Decimal:
        """The item's cost in ``currency``, exact (the engine rounds a product of more
        than 18 decimal places half-even to 10^-18)."""
        if self.amount is not None:
            return self.amount
        assert self.quantity is not None and self.unit_price is not None
        return _EXACT.multiply(self.quantity, self.unit_price)

    @property
    def is_shared(self) -> bool:
        return self.work_unit_id is None

    @property
    def key(self) -> str:
        """Its Kafka key: the work unit, or for a shared cost the bucket of its team,
        workflow and UTC day (the engine reroutes an item keyed otherwise)."""
        return self.work_unit_id or shared_bucket_id(self.team, self.workflow,
                                                     self.occurred_at)


SHARED_PREFIX = "~shared:"


def shared_bucket_id(team: str, workflow: str, moment: datetime) -> str:
    """The unit holding a workflow's shared cost items of one UTC day."""
    return f"{SHARED_PREFIX}{team}:{workflow}:{moment.astimezone(UTC):%Y-%m-%d}"


Event = ModelCall | Outcome | CostItem
