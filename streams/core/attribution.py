"""A unit's state as its attribution: the figures the ``attributions`` topic and table
carry. Pure: the same state gives the same attribution, field for field."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from schemas.events import STAGES
from schemas.outputs import WorkUnitAttribution
from streams.core.money import from_atto, ratio
from streams.core.unit import UnitState

# Positions in a booking's figures (cells.DECISION_FIELDS).
ACCEPTED, QUALITY, LATENCY, INTEGRITY = 1, 2, 3, 4


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def version_of(last_event_second: int, revision: int) -> int:
    """The version that orders a unit's rows in ClickHouse (attributions, and its pending
    rows in work_units_by_day): later events outrank earlier ones, then the revision
    breaks ties."""
    return (last_event_second << 32) | min(revision, 0xFFFFFFFF)


def revision_of(unit: UnitState) -> int:
    """Grows with every event applied, every call that gets a price and with expiry;
    a function of content (which events, which of its calls are priced), not of
    arrival order: a call priced on arrival and one priced when its price came later
    end at the same revision. An expired unit that gets an outcome gains an event and
    loses the expiry: still higher."""
    unattributed = unit.expired_ms is not None and not unit.outcomes
    priced = unit.calls - unit.unpriced
    return 2 * (unit.events + priced) + (1 if unattributed else 0)


def is_accepted(unit: UnitState) -> bool:
    """A success, as its decision was last settled (``Postings.settle``): its deciding
    outcome (the final one, else the latest) has a success status for the workflow, and
    it failed no bar."""
    return unit.booked is not None and unit.booked[3][ACCEPTED] == 1


def _flag(unit: UnitState, index: int) -> bool:
    return unit.booked is not None and unit.booked[3][index] == 1


def attribution_of(unit: UnitState, partition: int, price_book_version: str,
                   currency: str) -> WorkUnitAttribution:
    """The attribution a unit's current state amounts to."""
    if unit.expired_ms is not None and not unit.outcomes:
        label = "unattributed"
    else:
        label = "revised" if unit.emitted else "attributed"
    loaded_atto = unit.loaded_cost
    loaded = from_atto(loaded_atto)
    decider = unit.decider
    accepted = is_accepted(unit)
    integrity_failed = _flag(unit, INTEGRITY)
    verdict = unit.verdict
    at_risk = verdict.value_at_risk if verdict is not None and integrity_failed else None
    accepted_value = None if unit.value is None else (unit.value if accepted else 0)
    model_costs = unit.model_costs()
    # The earliest call's time is in the dimensions' key (calls rank first there).
    dims_key = unit.dims_key
    first_call_ms = dims_key[1] if dims_key is not None and dims_key[0] == 0 else None
    decided_ms = decider.occurred_ms if decider is not None else None
    # Built from already-validated state: construct without validating again (hot path).
    return WorkUnitAttribution.trusted(
        attribution_id=unit.unit_id,
        work_unit_id=unit.unit_id,
        revision=revision_of(unit),
        state=label,
        partition=partition,
        team=unit.team,
        workflow=unit.workflow,
        owner=unit.owner,
        task_type=unit.task_type,
        service=unit.service,
        environment=unit.environment,
        agent=unit.agent,
        user=unit.user,
        customer=unit.customer,
        models=sorted(model_costs),
        primary_model=unit.primary_model(),
        providers=sorted(unit.providers),
        first_event_at=_dt(unit.first_ms),
        last_event_at=_dt(unit.last_ms),
        calls=unit.calls,
        retries=unit.retries,
        failed_calls=unit.failed,
        input_tokens=unit.input_tokens,
        output_tokens=unit.output_tokens,
        cached_input_tokens=unit.cached_tokens,
        cache_write_tokens=unit.write_tokens,
        reasoning_tokens=unit.reasoning_tokens,
        system_prompt_tokens=unit.system_tokens,
        context_tokens=unit.context_tokens,
        currency=currency,
        model_cost=from_atto(unit.cost),
        computed_cost=from_atto(unit.computed),
        reported_cost=from_atto(unit.reported) if unit.reported is not None else None,
        unpriced_calls=unit.unpriced,
        human_review_minutes=unit.review_minutes,
        human_cost=from_atto(unit.human_cost),
        other_cost=from_atto(unit.other_cost),
        other_cost_by_kind={k: from_atto(v) for k, v in sorted(unit.other_by_kind.items())},
        cost_items=unit.cost_items,
        fully_loaded_cost=loaded,
        outcomes=unit.outcomes,
        outcome_status=decider.status if decider else None,
        accepted=accepted,
        quality_failed=_flag(unit, QUALITY),
        latency_failed=_flag(unit, LATENCY),
        integrity_failed=integrity_failed,
        max_latency_ms=unit.max_latency_ms,
        verdict=verdict.verdict if verdict is not None else None,
        value_at_risk=from_atto(at_risk) if at_risk is not None else None,
        accepted_value=from_atto(accepted_value) if accepted_value is not None else None,
        strategic_score=decider.strategic_score if decider else None,
        stage=STAGES[unit.stage - 1] if unit.stage else None,
        first_call_at=_dt(first_call_ms) if first_call_ms is not None else None,
        decided_at=_dt(decided_ms) if decided_ms is not None else None,
        cycle_seconds=Decimal(decided_ms - first_call_ms).scaleb(-3)
        if decided_ms is not None and first_call_ms is not None else None,
        is_final=unit.decided_by_final,
        value=from_atto(unit.value) if unit.value is not None else None,
        value_dimension=decider.value_dimension if decider else None,
        quality_score=decider.quality_score if decider else None,
        baseline_cost=from_atto(unit.baseline) if unit.baseline is not None else None,
        evidence_confidence=decider.evidence_confidence if decider else None,
        # One accepted unit is one accepted outcome: its cost per accepted outcome is its
        # fully loaded cost. A unit not accepted has none (docs/SEMANTICS.md).
        cost_per_outcome=loaded if accepted else None,
        yield_ratio=ratio(accepted_value, loaded_atto) if accepted_value is not None else None,
        net_value=from_atto(accepted_value - (at_risk or 0) - loaded_atto)
        if accepted_value is not None else None,
        roi=ratio(unit.baseline - loaded_atto, loaded_atto) if unit.baseline is not None else None,
        price_book_version=price_book_version,
    )
