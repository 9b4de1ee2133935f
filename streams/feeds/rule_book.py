"""Rules a worker follows from settings, changed live by a compacted topic: the common
part of budgets and workflow rules.

The topic is keyed by a rule's id; a value is one rule as JSON; an empty value
(tombstone) removes that rule, also one that came from the settings. ``apply`` returns
the ClickHouse rows of what changed (a removed rule again with ``is_deleted = 1``). An
invalid record, or one whose key is not its rule's id, is logged with its position and
ignored: a bad record must not stop a worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from streams.kafka.compacted import CompactedRecord

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)


class RuleBook(Generic[R]):
    """The rules in force: the settings' ones, overridden and extended by the topic."""

    def __init__(self, configured: tuple[R, ...], model: type[R], key: Callable[[R], str],
                 what: str) -> None:
        self.model, self.key, self.what = model, key, what
        self.configured = {key(r): r for r in configured}
        self.published: dict[str, R] = {}
        self.removed: set[str] = set()

    def rules(self) -> tuple[R, ...]:
        merged = {**self.configured, **self.published}
        return tuple(rule for key, rule in sorted(merged.items()) if key not in self.removed)

    def apply(self, records: list[CompactedRecord]) -> list[tuple[R, datetime, int]]:
        """Apply topic records; return the ClickHouse rows for what changed."""
        before = {self.key(r): r for r in self.rules()}
        for record in records:
            if record.value is None:
                self.published.pop(record.key, None)
                self.removed.add(record.key)
                continue
            try:
                rule = self.model.model_validate_json(record.value)
            except ValidationError as exc:
                log.error("ignoring invalid %s at %s: %s", self.what, record.position, exc)
                continue
            key = self.key(rule)
            if key != record.key:
                log.error("ignoring %s at %s: key %r is not its id %r", self.what,
                          record.position, record.key, key)
                continue
            self.published[key] = rule
            self.removed.discard(key)
        after = {self.key(r): r for r in self.rules()}
        if after != before:
            self.changed(after)
        now = datetime.now(UTC)  # updated_at orders versions of a row, not event time
        rows = [(rule, now, 0) for key, rule in after.items() if before.get(key) != rule]
        rows += [(rule, now, 1) for key, rule in before.items() if key not in after]
        return rows

    def changed(self, rules: dict[str, R]) -> None:
        """Called with the rules in force after a change (for subclasses)."""
