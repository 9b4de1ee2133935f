"""The fast path of ``codec``: a whole message validated in one msgspec pass.

pydantic stays the authority. This path only ever *accepts*: it decodes a message with
msgspec structs that mirror ``ModelCall`` and ``Outcome`` and re-checks in Python the
rules pydantic runs in Python (the cross-field rules, money ranges and places, the
event-time range), then builds the same pydantic models without validating them again.
Whenever anything is unusual, it returns ``None`` and the caller validates the message
event by event with pydantic, which gives every error its usual message and a bad
event its index. Hence the rule this module must keep: *it accepts only what pydantic
accepts, with equal values* (``tests/test_fast_codec.py`` checks it on generated and
mutated events, and that the mirrors have exactly the models' fields).

Why each fallback:
- a backslash or a DEL byte anywhere in the message: JSON escapes are the only way a
  decoded string can hold a control character, which identifiers and dimensions
  forbid; plain publishers never escape anything but quotes, so this costs nothing;
- ``"gen_ai.`` anywhere: OpenTelemetry names are mapped in the slow path;
- a time stamp not in the plain RFC 3339 form (``2026-12-01T10:19:26.002Z``, up to 6
  fractional digits, ``Z`` or ``+hh:mm``): the two parsers round extra digits
  differently and disagree on exotic forms;
- a ``reprices`` field (only ``tokenyield prices reprice`` sends one);
- a verdict without a ``status`` (see ``OutcomeFields``).

Cost items (``CostItem``) have no mirror: a unit has a few at most, next to its many
calls, so they keep the pydantic path (``codec.cost_codec``).

Money is exact here without the slow path's scan for long number literals: msgspec
reads a ``Decimal`` from the number's own text.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from schemas.events import (
    _EARLIEST,
    _LATEST,
    MAX_ATTRIBUTE_KEY_LENGTH,
    MAX_ATTRIBUTE_VALUE_LENGTH,
    MAX_ATTRIBUTES,
    MAX_ID_LENGTH,
    MAX_MONEY,
    MAX_TOKENS,
    MINUTE_PLACES,
    MONEY_PLACES,
    ModelCall,
    Outcome,
)
from schemas.outputs import without_validation

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
_Dim = Annotated[str, msgspec.Meta(max_length=128)]
_RequiredDim = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Tokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
_Attributes = Annotated[
    dict[Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ATTRIBUTE_KEY_LENGTH)],
         Annotated[str, msgspec.Meta(max_length=MAX_ATTRIBUTE_VALUE_LENGTH)]],
    msgspec.Meta(max_length=MAX_ATTRIBUTES)]
_Share = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class CallFields(msgspec.Struct):
    """``ModelCall``'s fields, with its defaults (time stamps as text: see above)."""

    event_id: _Id
    work_unit_id: _Id
    occurred_at: str
    provider: _RequiredDim
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    team: _RequiredDim
    workflow: _RequiredDim
    schema_version: Literal["1"] = "1"
    input_tokens: _Tokens = 0
    output_tokens: _Tokens = 0
    cached_input_tokens: _Tokens = 0
    cache_write_tokens: _Tokens = 0
    cache_write_1h_tokens: _Tokens = 0
    reasoning_tokens: _Tokens = 0
    latency_ms: Annotated[int, msgspec.Meta(ge=0, le=86_400_000)] | None = None
    service_tier: str | None = None
    status: Literal["ok", "error", "timeout", "cancelled"] = "ok"
    attempt: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1
    owner: _Dim = ""
    task_type: _Dim = ""
    agent: _Dim | None = None
    service: _Dim = ""
    environment: _Dim = ""
    user: _Dim | None = None
    customer: _Dim | None = None
    reported_cost: Decimal | None = None
    currency: str | None = None
    system_prompt_tokens: _Tokens | None = None
    context_tokens: _Tokens | None = None
    attributes: _Attributes = msgspec.field(default_factory=dict)
    reprices: Any = None


class OutcomeFields(msgspec.Struct):
    """``Outcome``'s fields, with its defaults. ``status`` is required here although a
    verdict may leave it out: a verdict without one (rare, a later review) takes the
    slow path, where ``Outcome._defaults`` fills it in."""

    event_id: _Id
    work_unit_id: _Id
    occurred_at: str
    team: _RequiredDim
    workflow: _RequiredDim
    status: Literal["accepted", "resolved", "completed", "rejected", "escalated", "abandoned",
                    "failed"] | None
    schema_version: Literal["1"] = "1"
    value: Decimal | None = None
    currency: str | None = None
    value_dimension: Literal["revenue", "cost_avoided", "risk_avoided", "capacity",
                             "strategic"] | None = None
    human_review_minutes: Decimal = Decimal(0)
    review_rate: Decimal | None = None
    quality_score: _Share | None = None
    baseline_cost: Decimal | None = None
    evidence_confidence: _Share | None = None
    is_final: bool = True
    verdict: Literal["upheld", "overturned"] | None = None
    value_at_risk: Decimal | None = None
    strategic_score: Decimal | None = None
    stage: Literal["output_accepted", "action_taken", "outcome_realised",
                   "value_captured"] | None = None
    user: _Dim | None = None
    customer: _Dim | None = None


class _CallEnvelope(msgspec.Struct):
    events: list[CallFields]
    envelope: Any = "tokenyield/1"
    event_id: Any = msgspec.UNSET  # an event with an "events" field: the slow path decides


class _OutcomeEnvelope(msgspec.Struct):
    events: list[OutcomeFields]
    envelope: Any = "tokenyield/1"
    event_id: Any = msgspec.UNSET


# The plain RFC 3339 form both parsers read alike ([0-9], not \d: \d is any Unicode digit).
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}"
                   r"(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})")
_TIER = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_FROM_ISO = datetime.fromisoformat
_MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
_MINUTE_QUANTUM = Decimal(1).scaleb(-MINUTE_PLACES)


def _time(text: str) -> datetime | None:
    if _TIME.fullmatch(text) is None:
        return None
    try:
        moment = _FROM_ISO(text)
    except ValueError:
        return None
    if not _EARLIEST <= moment < _LATEST:
        return None
    return moment.astimezone(UTC)


def _money(value: Decimal | None, low: Decimal, places: int = MONEY_PLACES,
           quantum: Decimal = _MONEY_QUANTUM) -> bool:
    """The checks ``Money`` (or review minutes) makes: finite, in range, few places."""
    if value is None:
        return True
    if not value.is_finite() or not low <= value <= MAX_MONEY:
        return False
    exponent = value.as_tuple().exponent
    return not (isinstance(exponent, int) and -exponent > places
                and value != value.quantize(quantum))


_asdict = msgspec.structs.asdict
_ZERO = Decimal(0)
_NO_MONEY = -MAX_MONEY


def calls_from(fields: list[CallFields]) -> list[ModelCall] | None:
    """The calls as pydantic would validate them, or None if one needs pydantic."""
    calls = []
    for f in fields:
        moment = _time(f.occurred_at)
        if moment is None or f.reprices is not None:
            return None
        inputs = f.input_tokens
        if (f.cached_input_tokens + f.cache_write_tokens > inputs
                or f.cache_write_1h_tokens > f.cache_write_tokens
                or f.reasoning_tokens > f.output_tokens
                or (f.system_prompt_tokens or 0) + (f.context_tokens or 0) > inputs):
            return None
        if f.reported_cost is not None and (f.currency is None
                                            or not _money(f.reported_cost, _ZERO)):
            return None
        if f.currency is not None and _CURRENCY.fullmatch(f.currency) is None:
            return None
        if f.service_tier is not None and _TIER.fullmatch(f.service_tier) is None:
            return None
        values = _asdict(f)
        values["occurred_at"] = moment
        calls.append(without_validation(ModelCall, values))  # checked above
    return calls


def outcomes_from(fields: list[OutcomeFields]) -> list[Outcome] | None:
    """The outcomes as pydantic would validate them, or None if one needs pydantic."""
    outcomes = []
    for f in fields:
        moment = _time(f.occurred_at)
        if moment is None:
            return None
        value, score, at_risk, verdict = f.value, f.strategic_score, f.value_at_risk, f.verdict
        if not (_money(value, _NO_MONEY) and _money(f.review_rate, _ZERO)
                and _money(f.baseline_cost, _ZERO) and _money(at_risk, _ZERO)
                and _money(f.human_review_minutes, _ZERO, MINUTE_PLACES, _MINUTE_QUANTUM)
                and f.human_review_minutes <= 1_000_000
                and _money(score, _ZERO, MINUTE_PLACES, _MINUTE_QUANTUM)
                and (score is None or score <= 10)):
            return None
        if f.currency is None:
            if (value is not None or f.review_rate is not None or f.baseline_cost is not None
                    or at_risk is not None):
                return None
        elif _CURRENCY.fullmatch(f.currency) is None:
            return None
        values = _asdict(f)
        values["occurred_at"] = moment
        dimension = f.value_dimension
        if value is not None and dimension is None:
            dimension = values["value_dimension"] = "revenue"  # Outcome._defaults
        # Outcome._check_money's rules, in its order (any failure: pydantic says why).
        if dimension is not None and value is None and not (
                dimension == "strategic" and score is not None):
            return None
        if score is not None and dimension != "strategic":
            return None
        if f.status is None and verdict is None:
            return None
        if at_risk is not None and verdict != "overturned":
            return None
        if verdict is not None and value is not None:
            return None
        outcomes.append(without_validation(Outcome, values))  # checked above
    return outcomes


class FastDecoder:
    """One event type's fast path: ``decode(data)`` gives the events, or None."""

    def __init__(self, fields: type[msgspec.Struct], envelope: type[msgspec.Struct],
                 build: Any, limit: int, version: str) -> None:
        self._list = msgspec.json.Decoder(list[fields])  # type: ignore[valid-type]
        self._one = msgspec.json.Decoder(fields)
        self._envelope = msgspec.json.Decoder(envelope)
        self._build = build
        self._limit = limit
        self._version = version

    def decode(self, data: bytes) -> list[Any] | None:
        if b"\\" in data or b"\x7f" in data or b'"gen_ai.' in data:
            return None
        first = data.lstrip()[:1]
        try:
            if first == b"[":
                fields = self._list.decode(data)
            elif first != b"{":
                return None
            elif b'"events"' in data:
                envelope = self._envelope.decode(data)
                if envelope.event_id is not msgspec.UNSET or envelope.envelope != self._version:
                    return None
                fields = envelope.events
            else:
                fields = [self._one.decode(data)]
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        if len(fields) > self._limit:
            return None
        return self._build(fields)
