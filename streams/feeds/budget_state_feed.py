"""Where every budget stands, followed from the compacted ``budget-state`` topic.

The rollup (one worker) writes a ``BudgetState`` per budget whenever it changes, keyed
by the budget id, and a tombstone when a budget is removed. Every worker reads the whole
topic and keeps the latest state per budget in memory, so any of them answers
``GET /v1/budgets/check`` without a query: a dictionary lookup per budget. An invalid
record is logged with its position and ignored (the previous state stays).
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import ValidationError

from schemas.kafka_options import KafkaConnection
from schemas.outputs import BudgetState
from streams.kafka.compacted import CompactedRecord, follow_compacted

log = logging.getLogger(__name__)


class BudgetStateBook:
    """The latest state of each budget, by budget id."""

    def __init__(self) -> None:
        self.states: dict[str, BudgetState] = {}
        self.updates = 0

    def apply(self, records: list[CompactedRecord]) -> None:
        # A new dict, swapped in whole: a reader never sees one half-applied.
        states = dict(self.states)
        for record in records:
            if record.value is None:
                states.pop(record.key, None)
                continue
            try:
                state = BudgetState.model_validate_json(record.value)
            except ValidationError as exc:
                log.error("ignoring invalid budget state at %s: %s", record.position, exc)
                continue
            if state.budget_id != record.key:
                log.error("ignoring budget state at %s: key %r is not its id %r",
                          record.position, record.key, state.budget_id)
                continue
            states[record.key] = state
        self.states = states
        self.updates += 1


async def follow_budget_states(connection: KafkaConnection, topic: str, book: BudgetStateBook,
                               ready: asyncio.Event | None = None) -> None:
    """Apply the budget-state topic to ``book``, then keep following it (runs forever)."""
    await follow_compacted(connection, topic, book.apply, ready, what="budget-state feed")
