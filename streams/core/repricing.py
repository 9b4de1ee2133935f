"""Unpriced calls priced when their price comes, and prices for the past applied as
counted corrections (docs/SEMANTICS.md, *Prices*).

A call whose model has no price is applied with an unknown cost; its unit keeps the
call (its JSON) and the partition indexes the unit under the model. When the price
book changes, the units whose models it now prices are queued, and repriced a few
hundred per step: each call as if it had been priced on arrival. A *repricing* event
(``ModelCall.reprices``, published by ``tokenyield prices reprice``) applies a price for
the past to a call already priced: its unit and windows receive the difference.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from schemas.codec import DecodeError, call_codec
from schemas.events import ModelCall
from schemas.pricing import PriceBook
from streams.core.money import to_atto
from streams.core.records import Outputs, Source, event_hash
from streams.core.unit import UnitState

if TYPE_CHECKING:
    from streams.core.engine import PartitionEngine

REPRICE_PER_STEP = 500  # units repriced per message or tick, so a new price never stalls


def model_key(provider: str, model: str) -> str:
    """The index's key of a model (the price book matches case-insensitively)."""
    return f"{provider.lower()}\x00{model.lower()}"


def _model_of(unpriced: list[Any]) -> str:
    """The model key of an unpriced call as a unit stores it: [offset, JSON]."""
    call = call_codec.decode(unpriced[1].encode()).events[0]
    return model_key(call.provider, call.model)


class UnpricedIndex:
    """Which units have calls awaiting a price, by model; changes since the last
    checkpoint, for its segments."""

    def __init__(self) -> None:
        self.units: dict[str, set[str]] = {}
        self.changes: dict[tuple[str, str], bool] = {}
        self.queue: deque[str] = deque()
        self.checked_with = ""  # the book version the index was last checked against

    def mark(self, unit_id: str, key: str, present: bool) -> None:
        ids = self.units.get(key)
        if present:
            if ids is None:
                ids = self.units[key] = set()
            if unit_id in ids:
                return
            ids.add(unit_id)
        else:
            if ids is None or unit_id not in ids:
                return
            ids.discard(unit_id)
            if not ids:
                del self.units[key]
        self.changes[(key, unit_id)] = present

    def forget(self, unit: UnitState) -> None:
        for key in {_model_of(c) for c in unit.unpriced_calls}:
            self.mark(unit.unit_id, key, False)

    def refresh(self, book: PriceBook) -> None:
        """A new book: queue the units whose unpriced models it now prices."""
        if not self.units or book.version == self.checked_with:
            return
        self.checked_with = book.version
        queued = set(self.queue)
        for key, ids in self.units.items():
            provider, model = key.split("\x00", 1)
            if book.entry_for(provider, model, datetime.max.replace(tzinfo=UTC)) is None:
                continue
            for uid in sorted(ids - queued):
                self.queue.append(uid)


class Repricer:
    """The engine's repricing work (it owns the units, the prices and the bookings)."""

    def __init__(self, engine: PartitionEngine) -> None:
        self.engine = engine
        self.index = UnpricedIndex()

    def hold(self, unit: UnitState, call: ModelCall, offset: int, encoded: bytes) -> None:
        """Keep an unpriced call with its unit until its price comes."""
        unit.unpriced_calls.append([offset, encoded.decode()])
        self.index.mark(unit.unit_id, model_key(call.provider, call.model), True)

    def step(self, touched: dict[str, UnitState], out: Outputs) -> None:
        engine = self.engine
        queue = self.index.queue
        for _ in range(min(len(queue), REPRICE_PER_STEP)):
            uid = queue.popleft()
            unit = engine.revive(uid)
            if unit is not None and self._reprice(unit, out):
                touched[uid] = unit
                engine.schedule(unit)

    def _reprice(self, unit: UnitState, out: Outputs) -> bool:
        """Price the unit's unpriced calls that the book now prices: each is booked as
        if it had been priced on arrival (its windows receive the cost as a correction)
        and its ``model_calls`` row is written again with the cost."""
        engine = self.engine
        remaining: list[list[Any]] = []
        repriced = False
        for offset, text in unit.unpriced_calls:
            call = call_codec.decode(text.encode()).events[0]
            source = Source("calls", engine.partition, offset)
            priced = engine.price(call, 0, source, Outputs())
            if priced is None or priced[0] is None:
                remaining.append([offset, text])
                continue
            cost_atto, computed_atto, price_currency = priced[0], priced[1], priced[2]
            engine.book_price(unit, call, cost_atto, computed_atto)
            out.calls.append(engine.call_record(call, cost_atto, computed_atto, offset,
                                                price_currency))
            repriced = True
        if repriced:
            before = {_model_of(c) for c in unit.unpriced_calls}
            unit.unpriced_calls = remaining
            for key in before - {_model_of(c) for c in remaining}:
                self.index.mark(unit.unit_id, key, False)
            engine.dirty_units.add(unit.unit_id)
        return repriced

    def past(self, call: ModelCall, cost_atto: int | None, price_currency: str, index: int,
             source: Source, touched: dict[str, UnitState], out: Outputs) -> None:
        """A price published for the past, applied to a call already priced: the
        difference between its cost now and the cost it was booked with goes to its unit
        and its windows (a counted correction, ``ledger.repriced``), and its
        ``model_calls`` row is written again with the new cost."""
        engine = self.engine
        assert call.reprices is not None
        original = call.reprices.event_id
        unit = engine.revive(call.work_unit_id)
        reason = None
        if unit is None or event_hash("calls", original) not in unit.seen:
            reason = (f"call {original} of work unit {call.work_unit_id} is not known here "
                      f"(past the horizon, or never applied): nothing to reprice")
        elif cost_atto is None:
            reason = f"model {call.provider}/{call.model} has no price to reprice with"
        if reason is not None:
            engine.reject(DecodeError(index, "unknown_call" if cost_atto is not None
                                      else "unpriced", reason, call_codec.encode(call),
                                      call.event_id, call.work_unit_id), source, out)
            return
        assert unit is not None and cost_atto is not None
        h = event_hash("calls", call.event_id)
        if h in unit.seen:
            engine.ledger.duplicates += 1
            return
        unit.seen.add(h)
        engine.ledger.applied += 1
        engine.ledger.repriced += 1
        unit.events += 1  # an event of its own: the revision grows
        delta = cost_atto - to_atto(call.reprices.previous_cost)
        if delta:
            engine.book_price(unit, call, delta, delta, unpriced=False)
        engine.dirty_units.add(unit.unit_id)
        engine.schedule(unit)
        touched[unit.unit_id] = unit
        row = call.model_copy(update={"event_id": original, "reprices": None})
        out.calls.append(engine.call_record(row, cost_atto, cost_atto, source.offset,
                                            price_currency))

    def restore(self, entries: dict[tuple[str, str], bool]) -> None:
        for (key, uid), present in sorted(entries.items()):
            if present:
                self.index.units.setdefault(key, set()).add(uid)

