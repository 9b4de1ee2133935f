"""The msgspec fast path accepts only what pydantic accepts, with equal values.

``schemas.fast_codec`` mirrors the event models; if it accepted an event pydantic
rejects, a bad event would reach the engine, and if it read a value differently, money
or time would silently change. Each message here is decoded by both paths (the codec's
``decode`` and its authoritative ``decode_slow``) and the results must be identical:
the same events, the same errors with the same indexes and reasons.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import EventCodec, call_codec, cost_codec, outcome_codec
from schemas.events import ModelCall, Outcome
from schemas.fast_codec import CallFields, OutcomeFields
from tests.test_events import call, outcome


def both(codec: EventCodec[Any], data: bytes) -> tuple[Any, Any]:
    fast, slow = codec.decode(data), codec.decode_slow(data)
    assert fast.events == slow.events
    assert [e.occurred_at.utcoffset() for e in fast.events] == \
        [e.occurred_at.utcoffset() for e in slow.events]
    assert fast.indexes == slow.indexes
    assert fast.errors == slow.errors
    for a, b in zip(fast.events, slow.events, strict=True):
        assert a.__dict__.keys() == b.__dict__.keys()
        assert {k: type(v) for k, v in a.__dict__.items()} == \
            {k: type(v) for k, v in b.__dict__.items()}
    return fast, slow


@pytest.mark.parametrize(("model", "mirror"), [(ModelCall, CallFields),
                                               (Outcome, OutcomeFields)])
def test_the_mirrors_have_exactly_the_models_fields_and_defaults(model: Any,
                                                                 mirror: Any) -> None:
    # A field added to the contract must be added to schemas/fast_codec.py too.
    assert set(mirror.__struct_fields__) == set(model.model_fields)
    defaults = dict(zip(mirror.__struct_fields__[-len(mirror.__struct_defaults__):],
                        mirror.__struct_defaults__, strict=True))
    for name, info in model.model_fields.items():
        if info.is_required():
            assert name not in defaults, name
            continue
        default = defaults[name]
        if isinstance(default, msgspec._core.Factory):
            default = default.factory()
        assert default == info.get_default(call_default_factory=True), name


def test_the_publishers_shapes_take_the_fast_path() -> None:
    for value in (orjson.dumps([call(), call(event_id="b")]), orjson.dumps(call()),
                  orjson.dumps({"envelope": "tokenyield/1", "events": [call()]})):
        assert call_codec.fast is not None and call_codec.fast.decode(value) is not None
    assert outcome_codec.fast is not None
    assert outcome_codec.fast.decode(orjson.dumps([outcome(value="1.5", currency="EUR")]))


CASES: list[tuple[dict[str, Any], str]] = [
    ({"occurred_at": "2026-11-20T10:00:00.1234567Z"}, "more fractional digits than 6"),
    ({"occurred_at": "2026-11-20T10:00:00.9999999Z"}, "rounding up over a second"),
    ({"occurred_at": "2026-11-20T10:00:00"}, "no time zone"),
    ({"occurred_at": "2026-11-20T12:00:00+02:00"}, "an offset"),
    ({"occurred_at": "2026-11-20 10:00:00Z"}, "a space"),
    ({"occurred_at": "2026-11-20t10:00:00z"}, "lower case"),
    ({"occurred_at": "2026-11-20T10:00Z"}, "no seconds"),
    ({"occurred_at": 1763632800}, "a number"),
    ({"occurred_at": "1999-12-31T23:59:59Z"}, "before 2000"),
    ({"occurred_at": "2026-02-30T10:00:00Z"}, "no such day"),
    ({"reported_cost": "0.0125", "currency": "USD"}, "money as text"),
    ({"reported_cost": 0.0125, "currency": "USD"}, "money as a number"),
    ({"reported_cost": 1.10, "currency": "USD"}, "trailing zero"),
    ({"reported_cost": "NaN", "currency": "USD"}, "not a number"),
    ({"reported_cost": "1e400", "currency": "USD"}, "too large"),
    ({"reported_cost": "-1", "currency": "USD"}, "negative"),
    ({"reported_cost": "0.0000000000000000001", "currency": "USD"}, "19 places"),
    ({"reported_cost": "1.000000000000000000000", "currency": "USD"}, "21 zero places"),
    ({"reported_cost": "0.5"}, "no currency"),
    ({"currency": "usd"}, "lower-case currency"),
    ({"service_tier": "flex"}, "a tier"),
    ({"service_tier": "-flex"}, "a bad tier"),
    ({"service_tier": "x" * 33}, "a long tier"),
    ({"input_tokens": 1.0}, "a float count"),
    ({"input_tokens": True}, "a bool count"),
    ({"input_tokens": 10, "cached_input_tokens": 11}, "cache over input"),
    ({"cache_write_tokens": 5, "cache_write_1h_tokens": 6}, "1h over writes"),
    ({"output_tokens": 1, "reasoning_tokens": 2}, "reasoning over output"),
    ({"system_prompt_tokens": 900, "context_tokens": 200}, "overhead over input"),
    ({"attempt": 0}, "attempt 0"),
    ({"latency_ms": -1}, "negative latency"),
    ({"status": "bogus"}, "a bad status"),
    ({"event_id": ""}, "an empty id"),
    ({"event_id": "a\nb"}, "a control character"),
    ({"event_id": "a\x7fb"}, "DEL"),
    ({"event_id": "x" * 257}, "a long id"),
    ({"team": "é" * 128}, "128 characters, 256 bytes"),
    ({"team": "é" * 129}, "129 characters"),
    ({"attributes": {"k": "v"}}, "attributes"),
    ({"attributes": {"": "v"}}, "an empty attribute key"),
    ({"attributes": {f"k{i}": "v" for i in range(33)}}, "too many attributes"),
    ({"attributes": {"gen_ai.operation.name": "chat"}}, "GenAI names in attributes"),
    ({"schema_version": "2"}, "another contract version"),
    ({"unknown": 1.2345678901234567890123}, "an unknown field with a long number"),
    ({"reprices": {"event_id": "e-0", "previous_cost": "0.1"}}, "a repricing"),
    ({"model": ""}, "an empty model"),
    ({"agent": None}, "a null agent"),
    ({"user": "u-1", "customer": "acme"}, "a user and a customer"),
    ({"user": None, "customer": ""}, "a null user, an empty customer"),
    ({"user": "x" * 129}, "a long user"),
    ({"customer": 7}, "a number customer"),
]


@pytest.mark.parametrize(("change", "why"), CASES, ids=[why for _, why in CASES])
def test_a_call_decodes_alike_on_both_paths(change: dict[str, Any], why: str) -> None:
    for value in (orjson.dumps([call(event_id="e-0"), call(**change)]),
                  orjson.dumps(call(**change)),
                  orjson.dumps({"envelope": "tokenyield/1", "events": [call(**change)]})):
        both(call_codec, value)


OUTCOME_CASES: list[dict[str, Any]] = [
    {"value": "12.5", "currency": "EUR"}, {"value": "-3", "currency": "EUR"},
    {"value": "12.5"}, {"value": "12.5", "currency": "EUR", "value_dimension": "capacity"},
    {"value_dimension": "capacity"}, {"value": None, "value_dimension": None},
    {"human_review_minutes": "1.5"}, {"human_review_minutes": "0.0000001"},
    {"human_review_minutes": 1000001}, {"review_rate": "90", "currency": "USD"},
    {"review_rate": "90"}, {"baseline_cost": "4", "currency": "USD"},
    {"quality_score": 0.5}, {"quality_score": 1}, {"quality_score": 1.5},
    {"quality_score": "0.5"}, {"evidence_confidence": 0}, {"is_final": False},
    {"is_final": 0}, {"status": "done"}, {"occurred_at": "2026-11-20T10:05:00.5+05:30"},
    # The value contract: verdicts, value at risk, strategic scores, users and customers.
    {"verdict": "upheld"}, {"verdict": "overturned", "status": None},
    {"verdict": "overturned", "value_at_risk": "250", "currency": "EUR"},
    {"verdict": "overturned", "value_at_risk": "250"},
    {"verdict": "upheld", "value_at_risk": "250", "currency": "EUR"},
    {"value_at_risk": "250", "currency": "EUR"},
    {"verdict": "overturned", "value_at_risk": "-1", "currency": "EUR"},
    {"verdict": "overturned", "value_at_risk": "0.0000000000000000001", "currency": "EUR"},
    {"verdict": "upheld", "value": "1", "currency": "EUR"}, {"verdict": "maybe"},
    {"verdict": None}, {"status": None}, {"status": None, "verdict": None},
    {"value_dimension": "strategic", "strategic_score": "7.5"},
    {"value_dimension": "strategic", "strategic_score": 7},
    {"value_dimension": "strategic", "strategic_score": 7.25},
    {"value_dimension": "strategic", "strategic_score": "10.0000001"},
    {"value_dimension": "strategic", "strategic_score": "11"},
    {"value_dimension": "strategic", "strategic_score": "-1"},
    {"value_dimension": "strategic", "strategic_score": "0.0000001"},
    {"value_dimension": "strategic", "strategic_score": "NaN"},
    {"value_dimension": "strategic"}, {"strategic_score": "5"},
    {"value_dimension": "capacity", "strategic_score": "5"},
    {"value": "3", "currency": "EUR", "strategic_score": "5"},
    {"value": "3", "currency": "EUR", "value_dimension": "strategic", "strategic_score": "5"},
    {"user": "u-1", "customer": "acme"}, {"user": "a\nb"}, {"customer": "x" * 129},
    {"stage": "action_taken"}, {"stage": "value_captured", "value": "3", "currency": "EUR"},
    {"stage": "shipped"}, {"stage": None}, {"stage": 1},
]


@pytest.mark.parametrize("change", OUTCOME_CASES)
def test_an_outcome_decodes_alike_on_both_paths(change: dict[str, Any]) -> None:
    for value in (orjson.dumps([outcome(event_id="o-0"), outcome(**change)]),
                  orjson.dumps(outcome(**change))):
        both(outcome_codec, value)


def test_verdicts_and_strategic_scores_take_the_fast_path() -> None:
    # Only a verdict without a status needs pydantic (which fills the status in).
    fast = outcome_codec.fast
    assert fast is not None
    for change in ({"verdict": "overturned", "value_at_risk": "250", "currency": "EUR"},
                   {"verdict": "upheld", "status": None},
                   {"value_dimension": "strategic", "strategic_score": "7.5"},
                   {"user": "u-1", "customer": "acme"}):
        assert fast.decode(orjson.dumps([outcome(**change)])) is not None, change
    bare = outcome(verdict="upheld")
    del bare["status"]
    assert fast.decode(orjson.dumps([bare])) is None
    decoded, _ = both(outcome_codec, orjson.dumps([bare]))
    assert decoded.events[0].status is None and decoded.events[0].is_verdict


def test_cost_items_keep_the_pydantic_path() -> None:
    # Documented in schemas/fast_codec.py: a few per unit, not worth a mirror.
    assert cost_codec.fast is None
    item = {"event_id": "c-1", "work_unit_id": "wu-1", "occurred_at": "2026-11-20T10:00:00Z",
            "team": "support", "workflow": "triage", "kind": "tool_call", "amount": "0.25",
            "currency": "USD"}
    decoded = cost_codec.decode(orjson.dumps([item, {**item, "amount": "-1"}]))
    assert [e.cost for e in decoded.events] == [Decimal("0.25")]
    assert [e.index for e in decoded.errors] == [1]


def test_long_money_literals_stay_exact_on_the_fast_path() -> None:
    value = b'[{"event_id":"e","work_unit_id":"w","occurred_at":"2026-11-20T10:00:00Z",' \
            b'"provider":"openai","model":"gpt-4o","team":"t","workflow":"f",' \
            b'"reported_cost":0.123456789012345678,"currency":"USD"}]'
    assert call_codec.fast is not None and call_codec.fast.decode(value) is not None
    fast, _ = both(call_codec, value)
    assert fast.events[0].reported_cost == Decimal("0.123456789012345678")


def test_envelopes_decide_alike() -> None:
    for value in (
        {"envelope": "tokenyield/9", "events": [call()]},
        {"events": [call()], "event_id": "x"},
        {"events": "x"},
        {"envelope": "tokenyield/1", "producer": "svc", "events": [call(), 7]},
    ):
        both(call_codec, orjson.dumps(value))


values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**10),
                   st.floats(allow_nan=False, allow_infinity=False),
                   st.text(max_size=12), st.sampled_from(["2026-11-20T10:00:00Z", "USD",
                                                          "0.5", "ok", "accepted"]))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(sorted(ModelCall.model_fields)), values),
                max_size=4), st.integers(0, 3))
def test_random_changes_to_a_call_decode_alike(changes: list[tuple[str, Any]],
                                               position: int) -> None:
    items = [call(event_id=f"e-{i}") for i in range(4)]
    for name, value in changes:
        items[position][name] = value
    both(call_codec, orjson.dumps(items))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(sorted(Outcome.model_fields)), values),
                max_size=4), st.integers(0, 3))
def test_random_changes_to_an_outcome_decode_alike(changes: list[tuple[str, Any]],
                                                   position: int) -> None:
    items = [outcome(event_id=f"o-{i}") for i in range(4)]
    for name, value in changes:
        items[position][name] = value
    both(outcome_codec, orjson.dumps(items))
