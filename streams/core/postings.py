"""How units and their events book into the windows: the window book's rules.

Spend-side figures of a call, outcome figures of an outcome and the cost of a cost item
are booked once, in the event's own window. Unit-level figures (linked and unlinked
spend, distinct units, and the decision: decided, accepted, failed bars, accepted
value...) are kept equal to a function of the unit's state: every method here that
changes that state books exactly the difference, so whatever the order of the events,
the windows end with the state's figures (docs/SEMANTICS.md, *Windows*).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from schemas.events import CostItem, ModelCall, Outcome
from streams.core import cells as cf
from streams.core.unit import SPEND_COST, Booking, UnitState
from streams.core.windows import WindowBook
from streams.core.workflows import Judgement, WorkflowRegistry, judge

# The same class booked at the call's own window: the coverage of a day's calls by their
# units' current state (v_attribution_coverage), where LINKED and UNLINKED follow the
# money to the moment it was linked or given up on.
AT_CALL = {cf.LINKED: cf.ATTRIBUTED_AT_CALL, cf.UNLINKED: cf.UNATTRIBUTED_AT_CALL}


def review_micros_of(outcome: Outcome) -> int:
    """The outcome's review minutes in millionths: exact, as the contract allows six
    places (schemas.events.MINUTE_PLACES)."""
    return int(outcome.human_review_minutes * cf.MICROS)


class Postings:
    """The bookings of one partition's units into its window book."""

    def __init__(self, book: WindowBook, deadline_ms: int,
                 workflows: Callable[[], WorkflowRegistry] | None = None,
                 dimensions: tuple[str, ...] = ()) -> None:
        self.book = book
        self.dimensions = dimensions  # the TOKENYIELD_DIMENSIONS attributes keys
        self.sizes_ms = book.sizes_ms
        self.base_ms = book.sizes_ms[0]
        self.deadline_ms = deadline_ms
        registry = WorkflowRegistry()
        self.workflows = workflows or (lambda: registry)

    # -- dimensions -----------------------------------------------------------------
    def event_dimensions(self, event: ModelCall | Outcome | CostItem) -> tuple[str, ...]:
        """The dimension series an event books into: its own user, customer and
        promoted attributes (those it names)."""
        if not (event.user or event.customer or self.dimensions):
            return ()
        found = []
        if event.user:
            found.append(cf.dimension_series("user", event.user))
        if event.customer:
            found.append(cf.dimension_series("customer", event.customer))
        attributes = getattr(event, "attributes", None) or {}  # outcomes have none
        for key in self.dimensions:
            value = attributes.get(key)
            if value is not None and value != "":
                found.append(cf.dimension_series(key, str(value)))
        return tuple(found)

    def promoted(self, event: ModelCall | Outcome | CostItem) -> tuple[str, ...]:
        """The event's values of the promoted attributes ("" where it names none), kept
        as the unit's when the event sets its dimensions."""
        if not self.dimensions:
            return ()
        attributes = getattr(event, "attributes", None) or {}
        values = (attributes.get(key) for key in self.dimensions)
        return tuple("" if v is None else str(v) for v in values)

    def unit_dimensions(self, unit: UnitState) -> tuple[str, ...]:
        """The dimension series a unit's decision books into (the unit's dimensions, from
        its earliest call: an order on the events, not on their arrival)."""
        found = []
        if unit.user:
            found.append(cf.dimension_series("user", unit.user))
        if unit.customer:
            found.append(cf.dimension_series("customer", unit.customer))
        for key, value in zip(self.dimensions, unit.extra_dims, strict=False):
            if value:
                found.append(cf.dimension_series(key, value))
        return tuple(found)

    # -- calls ----------------------------------------------------------------------
    def call(self, unit: UnitState, call: ModelCall, t_ms: int, team: str, workflow: str,
             model: str, cost_atto: int | None, retry: bool) -> None:
        """Book one call into its window cells (one per window size) and into the unit's
        spend by base window. The hot path: keep it lean."""
        base = t_ms - t_ms % self.base_ms
        entry = unit.spend_entry(base, team, workflow, model)
        series = cf.MODEL + model
        agent = cf.AGENT + call.agent if call.agent else None
        overhead = (call.system_prompt_tokens or 0) + (call.context_tokens or 0)
        failed = call.status != "ok"
        book = self.book
        for size in self.sizes_ms:
            start = t_ms - t_ms % size
            v = book.cell((size, start, team, workflow, series))
            v[cf.CALLS] += 1
            if retry:
                v[cf.RETRIES] += 1
            if failed:
                v[cf.FAILED] += 1
            v[cf.INPUT] += call.input_tokens
            v[cf.OUTPUT] += call.output_tokens
            v[cf.CACHED] += call.cached_input_tokens
            v[cf.CACHE_WRITE] += call.cache_write_tokens
            v[cf.REASONING] += call.reasoning_tokens
            if call.latency_ms is not None:
                v[cf.LATENCY_MS] += call.latency_ms
                v[cf.LATENCY_CALLS] += 1
            if overhead:
                v[cf.OVERHEAD] += overhead
                v[cf.SYSTEM] += call.system_prompt_tokens or 0
            if cost_atto is None:
                v[cf.UNPRICED] += 1
            else:
                v[cf.SPEND] += cost_atto
            if entry is None:
                self._count_unit(unit, size, start, team, workflow, model, v)
            if agent is not None:
                a = book.cell((size, start, team, workflow, agent))
                a[cf.CALLS] += 1
                a[cf.INPUT] += call.input_tokens
                a[cf.OUTPUT] += call.output_tokens
                a[cf.SPEND] += cost_atto or 0
                if retry:
                    a[cf.RETRIES] += 1
        for series in self.event_dimensions(call):
            for v in book.cells_at(t_ms, team, workflow, series):
                v[cf.CALLS] += 1
                v[cf.INPUT] += call.input_tokens
                v[cf.OUTPUT] += call.output_tokens
                if cost_atto is None:
                    v[cf.UNPRICED] += 1
                else:
                    v[cf.SPEND] += cost_atto
        if entry is None:
            unit.spend.append([base, team, workflow, model, cost_atto or 0])
        elif cost_atto:
            entry[SPEND_COST] += cost_atto
        if cost_atto:
            self._spend_class(unit, base, team, workflow, model, cost_atto)

    def price(self, unit: UnitState, call: ModelCall, team: str, workflow: str, model: str,
              cost_atto: int, unpriced: bool) -> None:
        """``cost_atto`` more for one of the unit's calls: one that had no price
        (``unpriced``), or the difference a price for the past makes."""
        t_ms = int(call.occurred_at.timestamp() * 1000)
        for v in self.book.cells_at(t_ms, team, workflow, cf.MODEL + model):
            if unpriced:
                v[cf.UNPRICED] -= 1
            v[cf.SPEND] += cost_atto
        if call.agent:
            self.book.post(t_ms, team, workflow, cf.AGENT + call.agent, cf.SPEND, cost_atto)
        for series in self.event_dimensions(call):
            for v in self.book.cells_at(t_ms, team, workflow, series):
                if unpriced:
                    v[cf.UNPRICED] -= 1
                v[cf.SPEND] += cost_atto
        base = t_ms - t_ms % self.base_ms
        entry = unit.spend_entry(base, team, workflow, model)
        if entry is not None:
            entry[SPEND_COST] += cost_atto
        self._spend_class(unit, base, team, workflow, model, cost_atto)

    def _count_unit(self, unit: UnitState, size: int, start: int, team: str, workflow: str,
                    model: str, v: list[int]) -> None:
        """Count the unit once per window row (model and total), if not yet."""
        seen_model = seen_total = False
        for e_start, e_team, e_workflow, e_model, _ in unit.entries():
            if e_start - e_start % size == start and e_team == team and e_workflow == workflow:
                seen_total = True
                if e_model == model:
                    seen_model = True
                    break
        if not seen_model:
            v[cf.WORK_UNITS] += 1
        if not seen_total:
            self.book.cell((size, start, team, workflow, cf.TOTAL))[cf.WORK_UNITS] += 1

    # -- outcomes ------------------------------------------------------------------------
    def outcome(self, t_ms: int, team: str, workflow: str, value: int, human: int,
                dimensions: tuple[str, ...] = (), review_micros: int = 0) -> None:
        """An outcome event: its value and review cost; and, when it was reviewed
        (``review_micros``: its review minutes in millionths), the intervention and
        its minutes (total rows only)."""
        for series in (cf.TOTAL, *dimensions):
            for v in self.book.cells_at(t_ms, team, workflow, series):
                v[cf.OUTCOMES] += 1
                v[cf.VALUE] += value
                v[cf.HUMAN] += human
        if review_micros:
            for v in self.book.cells_at(t_ms, team, workflow, cf.TOTAL):
                v[cf.REVIEWED] += 1
                v[cf.REVIEW_MINUTES] += review_micros

    def review(self, t_ms: int, team: str, workflow: str, human: int,
               dimensions: tuple[str, ...] = (), review_micros: int = 0) -> None:
        """A verdict: its review cost, and the verdict counted apart on the total rows
        (it is not an outcome: it counts in no outcome figure), with its review minutes."""
        if human:
            for series in (cf.TOTAL, *dimensions):
                for v in self.book.cells_at(t_ms, team, workflow, series):
                    v[cf.HUMAN] += human
        for v in self.book.cells_at(t_ms, team, workflow, cf.TOTAL):
            v[cf.VERDICTS] += 1
            if review_micros:
                v[cf.REVIEWED] += 1
                v[cf.REVIEW_MINUTES] += review_micros

    def cost_item(self, item: CostItem, t_ms: int, team: str, workflow: str,
                  amount: int) -> None:
        """A cost item, in its own window under its own team and workflow: a unit's
        (``other_cost``) or a shared one (``shared_cost``)."""
        field = cf.SHARED_COST if item.is_shared else cf.OTHER_COST
        for series in (cf.TOTAL, *self.event_dimensions(item)):
            for v in self.book.cells_at(t_ms, team, workflow, series):
                v[field] += amount
                v[cf.COST_ITEMS] += 1

    def judgement(self, unit: UnitState) -> Judgement | None:
        """The decided unit's standing under its workflow's rule (None: undecided)."""
        decider = unit.decider
        if decider is None or unit.bucket:
            return None
        rule = self.workflows().rule(unit.outcome_team, unit.outcome_workflow)
        verdict = unit.verdict
        return judge(rule, decider.status, decider.quality_score, unit.max_latency_ms,
                     verdict is not None and verdict.verdict == "overturned")

    def booking(self, unit: UnitState) -> Booking | None:
        """What the unit's state books as its decision (None: nothing)."""
        decider = unit.decider
        judged = self.judgement(unit)
        if decider is None or judged is None:
            return None
        verdict = unit.verdict
        at_risk = (verdict.value_at_risk or 0) if judged.integrity_failed and verdict else 0
        strategic = decider.strategic_score
        confidence = decider.evidence_confidence
        confidence_micros = (round(Decimal(str(confidence)) * cf.MICROS)
                             if confidence is not None else 0)
        figures = (
            1, int(judged.success), int(judged.quality_failed), int(judged.latency_failed),
            int(judged.integrity_failed), (unit.value or 0) if judged.success else 0, at_risk,
            int(strategic is not None),
            int(strategic * cf.MICROS) if strategic is not None else 0,
            confidence_micros if strategic is not None else 0,
            int(strategic is not None and confidence is not None),
            confidence_micros,
            int(confidence is not None),
        )
        return (decider.occurred_ms, unit.outcome_team, unit.outcome_workflow, figures,
                self.unit_dimensions(unit), unit.loaded_cost)

    def settle(self, unit: UnitState) -> None:
        """Keep the decision's booking equal to what the unit's state books now: take
        back exactly what was booked (wherever, under whatever rule) and book the new
        figures. Called after every change to a unit; a no-op when nothing moved. A
        decided unit counts once, in its deciding outcome's window; horizon buckets
        decide nothing."""
        new = self.booking(unit)
        old = unit.booked
        if new == old:
            return
        if old is not None:
            self._book_decision(old, -1)
        if new is not None:
            self._book_decision(new, 1)
        unit.booked = new

    def _book_decision(self, booking: Booking, sign: int) -> None:
        at_ms, team, workflow, figures, dimensions, cost = booking
        for series in (cf.TOTAL, *dimensions):
            for v in self.book.cells_at(at_ms, team, workflow, series):
                for field, amount in zip(cf.DECISION_FIELDS, figures, strict=True):
                    if amount:
                        v[field] += sign * amount
        if cost >= 0:  # -1: booked before cost buckets existed (a state of format 3)
            h = self.book.cell((cf.DAY_MS, at_ms - at_ms % cf.DAY_MS, team, workflow,
                                cf.histogram_series(cf.cost_bucket(cost))))
            h[cf.DECIDED] += sign
            h[cf.ACCEPTED] += sign * figures[1]
            h[cf.SPEND] += sign * cost

    def mix(self, unit: UnitState, t_ms: int, accepted: bool) -> None:
        # Once per unit, for the model-mismatch detector: which primary model served
        # this task type, at what cost, and was it accepted. Approximate by design
        # (later calls of the unit are not reflected); never part of the ledger.
        unit.mix_posted = True
        hour = 3_600_000
        mix = self.book.cell((hour, t_ms - t_ms % hour, unit.task_type or "-", "",
                              cf.MIX + unit.primary_model()))
        mix[cf.DECIDED] += 1
        mix[cf.ACCEPTED] += 1 if accepted else 0
        mix[cf.SPEND] += unit.cost

    # -- units by last event ---------------------------------------------------------------
    def place(self, unit: UnitState) -> None:
        """Keep the unit's row among the units by last event (``"u:" + agent``, in the
        window of its last event) equal to its state: take back exactly what it placed,
        place what it places now. Called once per changed unit per step (when its
        attribution would be emitted); a no-op when nothing moved."""
        new = unit.placement()
        old = unit.placed
        if new == old:
            return
        if old is not None:
            self._place(old, -1)
        if new is not None:
            self._place(new, 1)
        unit.placed = new

    def _place(self, placement: tuple[int, str, str, str, int, int], sign: int) -> None:
        last_ms, team, workflow, agent, cost, without = placement
        for v in self.book.cells_at(last_ms, team, workflow, cf.UNIT + agent):
            v[cf.WORK_UNITS] += sign
            v[cf.SPEND] += sign * cost
            if without:
                v[cf.UNITS_WITHOUT_OUTCOME] += sign
                v[cf.SPEND_WITHOUT_OUTCOME] += sign * cost

    # -- the spend classes: linked, unlinked, pending ----------------------------------------
    def _spend_class(self, unit: UnitState, base: int, team: str, workflow: str, model: str,
                     amount: int) -> None:
        """Book ``amount`` of one spend entry as the unit's class says: linked at the
        later of its window and the first outcome, unlinked at the later of its window
        and the expiry, nothing while pending."""
        if unit.outcomes:
            field, at = cf.LINKED, unit.link_ms
        elif unit.expired_ms is not None:
            field, at = cf.UNLINKED, unit.expired_ms
        else:
            return
        assert at is not None
        series = cf.MODEL + model
        self.book.post(base if base > at else at, team, workflow, series, field, amount)
        self.book.post(base, team, workflow, series, AT_CALL[field], amount)

    def _all_spend(self, unit: UnitState, field: int, at_ms: int, sign: int,
                   reclassified: bool = True) -> None:
        """Book the unit's spend as ``field`` at the later of each entry's window and
        ``at_ms``; and, when its class changes (``reclassified``, not when it only moves
        in time), as the class at each entry's own window (``AT_CALL``)."""
        at_call = AT_CALL[field]
        for base, team, workflow, model, cost in unit.entries():
            if cost:
                series = cf.MODEL + model
                self.book.post(base if base > at_ms else at_ms, team, workflow, series,
                               field, sign * cost)
                if reclassified:
                    self.book.post(base, team, workflow, series, at_call, sign * cost)

    def first_spend(self, unit: UnitState, t_ms: int) -> None:
        """An earlier call or cost item: the deadline, measured from the first of them,
        comes earlier. An expired unit's unlinked spend moves to the new expiry (before
        the new call is booked, so exactly what was booked moves)."""
        unit.first_spend_ms = t_ms
        if unit.expired_ms is not None and not unit.outcomes:
            expiry = t_ms + self.deadline_ms
            if expiry < unit.expired_ms:
                self._all_spend(unit, cf.UNLINKED, unit.expired_ms, -1, reclassified=False)
                self._all_spend(unit, cf.UNLINKED, expiry, 1, reclassified=False)
                unit.expired_ms = expiry

    def expire(self, unit: UnitState) -> None:
        """The deadline passed without an outcome: the unit's spend becomes unlinked."""
        assert unit.first_spend_ms is not None
        unit.expired_ms = unit.first_spend_ms + self.deadline_ms
        self._all_spend(unit, cf.UNLINKED, unit.expired_ms, 1)

    def link(self, unit: UnitState, t_ms: int) -> None:
        """Called before ``outcomes`` counts the new outcome. The first outcome links the
        unit's spend (taking back exactly the unlinked booking of an expired unit); an
        earlier one moves the linked spend to its window."""
        if not unit.outcomes:
            if unit.expired_ms is not None:
                self._all_spend(unit, cf.UNLINKED, unit.expired_ms, -1)
                unit.expired_ms = None
            unit.link_ms = t_ms
            self._all_spend(unit, cf.LINKED, t_ms, 1)
        elif unit.link_ms is None or t_ms < unit.link_ms:
            earlier = unit.link_ms
            if earlier is not None:
                self._all_spend(unit, cf.LINKED, earlier, -1, reclassified=False)
            unit.link_ms = t_ms
            self._all_spend(unit, cf.LINKED, t_ms, 1, reclassified=earlier is None)
