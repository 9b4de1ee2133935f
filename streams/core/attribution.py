"""A unit's state as its attribution: the figures the ``attributions`` topic and table
carry. Pure: the same state gives the same attribution, field for field."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.events import ACCEPTING_STATUSES
from schemas.outputs import WorkUnitAttribution
from streams.core.money import from_atto, ratio
from streams.core.unit import UnitState


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


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
    """Accepted by its deciding outcome (the final one, else the latest)."""
    return unit.decider is not None and unit.decider.status in ACCEPTING_STATUSES


def attribution_of(unit: UnitState, partition: int, price_book_version: str,
                   currency: str) -> WorkUnitAttribution:
    """The attribution a unit's current state amounts to."""
    if unit.expired_ms is not None and not unit.outcomes:
        label = "unattributed"
    else:
        label = "revised" if unit.emitted else "attributed"
    loaded_atto = unit.cost + unit.human_cost
    loaded = from_atto(loaded_atto)
    decider = unit.decider
    accepted = is_accepted(unit)
    model_costs = unit.model_costs()
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
        fully_loaded_cost=loaded,
        outcomes=unit.outcomes,
        outcome_status=decider.status if decider else None,
        accepted=accepted,
        is_final=unit.decided_by_final,
        value=from_atto(unit.value) if unit.value is not None else None,
        value_dimension=decider.value_dimension if decider else None,
        quality_score=decider.quality_score if decider else None,
        baseline_cost=from_atto(unit.baseline) if unit.baseline is not None else None,
        evidence_confidence=decider.evidence_confidence if decider else None,
        # One accepted unit is one accepted outcome: its cost per accepted outcome is its
        # fully loaded cost. A unit not accepted has none (docs/SEMANTICS.md).
        cost_per_outcome=loaded if accepted else None,
        yield_ratio=ratio(unit.value, loaded_atto) if unit.value is not None else None,
        net_value=from_atto(unit.value - loaded_atto) if unit.value is not None else None,
        roi=ratio(unit.baseline - loaded_atto, loaded_atto) if unit.baseline is not None else None,
        price_book_version=price_book_version,
    )
