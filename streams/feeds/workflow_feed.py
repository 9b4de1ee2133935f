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

from schemas.kafka_options import KafkaConnection
from streams.core.workflows import WorkflowRegistry, WorkflowRow, WorkflowRule
from streams.feeds.rule_book import RuleBook
from streams.kafka.compacted import CompactedRecord, follow_compacted

log = logging.getLogger(__name__)


class WorkflowBook(RuleBook[WorkflowRule]):
    """The rules in force: settings, overridden and extended by the topic. ``current``
    is what the engines call for the registry (replaced, never mutated, on a change)."""

    def __init__(self, configured: tuple[WorkflowRule, ...]) -> None:
        super().__init__(configured, WorkflowRule, lambda r: r.key, "workflow rule")
        self.updates = 0
        self._registry = WorkflowRegistry(self.rules())

    def current(self) -> WorkflowRegistry:
        return self._registry

    def changed(self, rules: dict[str, WorkflowRule]) -> None:
        self.updates += 1
        self._registry = WorkflowRegistry(tuple(rules.values()), f"topic-{self.updates}")

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
