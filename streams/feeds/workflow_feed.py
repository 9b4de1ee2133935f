"""The workflow registry a worker judges success by: the settings' rules, changed live by
the ``workflows`` topic.

The topic is compacted and keyed by the rule's id (``team=T/workflow=W``); a value is one
rule as JSON (``WorkflowRule``); an empty value (tombstone) removes that rule, also one
from the settings. A change applies to what the engines settle from then on (each unit
is judged again when it next changes), and is written to ClickHouse's ``workflows``
table (a removed rule again with ``is_deleted = 1``), so dashboards show the rules in
force. An invalid record is logged with its position and ignored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import ValidationError

from schemas.kafka_options import KafkaConnection
from streams.core.workflows import WorkflowRegistry, WorkflowRow, WorkflowRule
from streams.kafka.compacted import CompactedRecord, follow_compacted

log = logging.getLogger(__name__)


class WorkflowBook:
    """The rules in force: settings, overridden and extended by the topic. ``current``
    is what the engines call for the registry (replaced, never mutated, on a change)."""

    def __init__(self, configured: tuple[WorkflowRule, ...]) -> None:
        self.configured = {r.key: r for r in configured}
        self.published: dict[str, WorkflowRule] = {}
        self.removed: set[str] = set()
        self.updates = 0
        self._registry = WorkflowRegistry(self.rules())

    def rules(self) -> tuple[WorkflowRule, ...]:
        merged = {**self.configured, **self.published}
        return tuple(rule for key, rule in sorted(merged.items()) if key not in self.removed)

    def current(self) -> WorkflowRegistry:
        return self._registry

    def apply(self, records: list[CompactedRecord]) -> list[WorkflowRow]:
        """Apply topic records; return the ClickHouse rows for what changed."""
        before = {r.key: r for r in self.rules()}
        for record in records:
            if record.value is None:
                self.published.pop(record.key, None)
                self.removed.add(record.key)
                continue
            try:
                rule = WorkflowRule.model_validate_json(record.value)
            except ValidationError as exc:
                log.error("ignoring invalid workflow rule at %s: %s", record.position, exc)
                continue
            if rule.key != record.key:
                log.error("ignoring workflow rule at %s: key %r is not its id %r",
                          record.position, record.key, rule.key)
                continue
            self.published[rule.key] = rule
            self.removed.discard(rule.key)
        after = {r.key: r for r in self.rules()}
        if after != before:
            self.updates += 1
            self._registry = WorkflowRegistry(tuple(after.values()), f"topic-{self.updates}")
        now = datetime.now(UTC)  # updated_at orders versions of a row, not event time
        rows: list[WorkflowRow] = [(rule, now, 0) for key, rule in after.items()
                                   if before.get(key) != rule]
        rows += [(rule, now, 1) for key, rule in before.items() if key not in after]
        return rows

    def sync_rows(self, stored: list[tuple[object, ...]]) -> list[WorkflowRow]:
        """Rows making a table holding ``stored`` (team, workflow) hold exactly the rules
        in force: those, and the others removed."""
        now = datetime.now(UTC)
        rules = self.rules()
        keep = {(r.team, r.workflow) for r in rules}
        rows: list[WorkflowRow] = [(rule, now, 0) for rule in rules]
        for team, workflow in stored:
            if (team, workflow) not in keep:
                rows.append((WorkflowRule(team=str(team), workflow=str(workflow)), now, 1))
        return rows


def encode_workflow(rule: WorkflowRule) -> tuple[bytes, bytes]:
    """Key and value to publish a rule on the compacted ``workflows`` topic."""
    return rule.key.encode(), rule.model_dump_json(exclude_none=True).encode()


async def follow_workflows(connection: KafkaConnection, topic: str, book: WorkflowBook,
                           on_change: Callable[[list[WorkflowRow]], None],
                           ready: asyncio.Event | None = None) -> None:
    """Apply the workflows topic to ``book`` and report each change (runs forever)."""

    def apply(records: list[CompactedRecord]) -> None:
        rows = book.apply(records)
        if rows:
            log.info("workflow registry updated: %d rules in force", len(book.rules()))
            on_change(rows)

    await follow_compacted(connection, topic, apply, ready, what="workflow feed")
