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
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
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
    status: OutcomeStatus
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

    @model_validator(mode="after")
    def _check_money(self) -> Outcome:
        problems = []
        money_fields = ("value", "review_rate", "baseline_cost")
        if self.currency is None and any(getattr(self, f) is not None for f in money_fields):
            given = [f for f in money_fields if getattr(self, f) is not None]
            problems.append(f"{', '.join(given)} need a currency")
        if self.value_dimension is not None and self.value is None:
            problems.append("value_dimension without a value")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_dimension(cls, data: object) -> object:
        # A value with no stated dimension is read as revenue, the plainest case.
        if isinstance(data, dict) and data.get("value") is not None \
                and data.get("value_dimension") is None:
            return {**data, "value_dimension": "revenue"}
        return data

    @property
    def accepted(self) -> bool:
        return self.status in ACCEPTING_STATUSES


Event = ModelCall | Outcome
