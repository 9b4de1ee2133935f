"""The event contract: what is accepted, what is rejected, and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.codec import explain
from schemas.events import MAX_ATTRIBUTES, ModelCall, Outcome


def call(**overrides: Any) -> dict[str, Any]:
    base = {
        "event_id": "e-1", "work_unit_id": "wu-1", "occurred_at": "2026-11-20T10:00:00Z",
        "provider": "openai", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 200,
        "team": "support", "workflow": "triage",
    }
    base.update(overrides)
    return base


def outcome(**overrides: Any) -> dict[str, Any]:
    base = {
        "event_id": "o-1", "work_unit_id": "wu-1", "occurred_at": "2026-11-20T10:05:00Z",
        "team": "support", "workflow": "triage", "status": "accepted",
    }
    base.update(overrides)
    return base


def reasons(model: type[ModelCall] | type[Outcome], data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return explain(caught.value)


def test_a_minimal_call_gets_the_documented_defaults() -> None:
    parsed = ModelCall.model_validate(call())
    assert parsed.status == "ok"
    assert parsed.attempt == 1
    assert parsed.cached_input_tokens == 0
    assert (parsed.cache_write_1h_tokens, parsed.service_tier) == (0, None)
    assert parsed.agent is None
    assert parsed.attributes == {}
    assert not parsed.is_retry


def test_event_time_is_normalised_to_utc() -> None:
    parsed = ModelCall.model_validate(call(occurred_at="2026-11-20T12:00:00+02:00"))
    assert parsed.occurred_at == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert parsed.occurred_at.utcoffset() == timedelta(0)
    aware = datetime(2026, 11, 20, 5, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert ModelCall.model_validate(call(occurred_at=aware)).occurred_at.hour == 10


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"input_tokens": -1}, "input_tokens", "greater than or equal to 0"),
        ({"output_tokens": "12"}, "output_tokens", "valid integer"),
        ({"cached_input_tokens": 2000}, "event", "exceed input_tokens"),
        ({"reasoning_tokens": 500}, "event", "reasoning_tokens (500) exceed"),
        ({"status": "weird"}, "status", "'ok', 'error', 'timeout' or 'cancelled'"),
        ({"occurred_at": "2026-11-20T10:00:00"}, "occurred_at", "timezone"),
        ({"occurred_at": "1970-01-02T00:00:00Z"}, "occurred_at", "time unit"),
        ({"event_id": ""}, "event_id", "at least 1 character"),
        ({"work_unit_id": "x" * 257}, "work_unit_id", "at most 256 characters"),
        ({"work_unit_id": "a\nb"}, "work_unit_id", "pattern"),
        ({"attempt": 0}, "attempt", "greater than or equal to 1"),
        ({"team": ""}, "team", "at least 1 character"),
        ({"reported_cost": "0.5"}, "event", "reported_cost needs a currency"),
        ({"reported_cost": "NaN", "currency": "USD"}, "reported_cost", "finite"),
        ({"currency": "usd", "reported_cost": "1"}, "currency", "pattern"),
        ({"attributes": {f"k{i}": "v" for i in range(MAX_ATTRIBUTES + 1)}},
         "attributes", f"at most {MAX_ATTRIBUTES} items"),
        ({"attributes": {"k": "v" * 300}}, "attributes.k", "at most 256 characters"),
        ({"system_prompt_tokens": 900, "context_tokens": 900}, "event", "exceed input_tokens"),
        ({"input_tokens": 10**12}, "input_tokens", "less than or equal"),
        ({"cache_write_tokens": 10, "cache_write_1h_tokens": 11}, "event",
         "cache_write_1h_tokens (11) exceed cache_write_tokens (10)"),
        ({"service_tier": ""}, "service_tier", "at least 1 character"),
        ({"service_tier": "flex tier"}, "service_tier", "pattern"),
    ],
)
def test_invalid_calls_are_rejected_with_the_field_and_reason(
        change: dict[str, Any], field: str, words: str) -> None:
    explanation = reasons(ModelCall, call(**change))
    assert field in explanation
    assert words in explanation


def test_every_problem_of_an_event_is_reported_at_once() -> None:
    explanation = reasons(ModelCall, call(input_tokens=-5, status="nope", event_id=""))
    for field in ("input_tokens", "status", "event_id"):
        assert field in explanation


def test_unknown_fields_are_accepted_and_ignored() -> None:
    parsed = ModelCall.model_validate(call(future_field={"nested": True}, gpu="h100"))
    assert "future_field" not in parsed.model_dump()
    assert not hasattr(parsed, "gpu")


def test_events_are_frozen() -> None:
    parsed = ModelCall.model_validate(call())
    with pytest.raises(ValidationError):
        parsed.input_tokens = 5  # type: ignore[misc]


def test_money_is_exact_decimal_from_numbers_and_strings() -> None:
    from_string = ModelCall.model_validate(call(reported_cost="0.1", currency="USD"))
    from_number = ModelCall.model_validate(call(reported_cost=0.1, currency="USD"))
    assert from_string.reported_cost == Decimal("0.1")
    assert from_number.reported_cost == Decimal("0.1")


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"status": "done"}, "status", "'accepted'"),
        ({"value": "10"}, "event", "value need a currency"),
        ({"baseline_cost": "3"}, "event", "baseline_cost need a currency"),
        ({"value_dimension": "revenue"}, "event", "value_dimension without a value"),
        ({"value": "1", "currency": "USD", "value_dimension": "fun"}, "value_dimension",
         "'revenue'"),
        ({"quality_score": 1.5}, "quality_score", "less than or equal to 1"),
        ({"evidence_confidence": -0.1}, "evidence_confidence", "greater than or equal to 0"),
        ({"human_review_minutes": "-3"}, "human_review_minutes", "greater than or equal to 0"),
        ({"is_final": "yes"}, "is_final", "valid boolean"),
    ],
)
def test_invalid_outcomes_are_rejected_with_the_field_and_reason(
        change: dict[str, Any], field: str, words: str) -> None:
    explanation = reasons(Outcome, outcome(**change))
    assert field in explanation
    assert words in explanation


def test_a_value_without_a_dimension_counts_as_revenue() -> None:
    parsed = Outcome.model_validate(outcome(value="12.50", currency="EUR"))
    assert parsed.value_dimension == "revenue"
    assert parsed.accepted
    assert parsed.is_final


def test_rejected_outcomes_are_not_accepted() -> None:
    assert not Outcome.model_validate(outcome(status="rejected")).accepted
    assert Outcome.model_validate(outcome(status="resolved")).accepted
