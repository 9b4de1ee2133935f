"""Budgets a worker alerts on: the settings' ones, changed live by the ``budgets`` topic.

The topic is compacted and keyed by the rule id (``team=T[/workflow=W]/period=P``); a
value is one rule as JSON (team, workflow, period, amount, soft_share); an empty value
(tombstone) removes that rule, also one that came from the settings. Every change is
applied to the alert engine at once and written to ClickHouse's ``budgets`` table (a
removed rule is written again with ``is_deleted = 1``), so dashboards show the budgets
in force. An invalid record is logged with its position and ignored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from schemas.kafka_options import KafkaConnection
from streams.core.alerts.alert_config import BudgetRow, BudgetRule
from streams.core.alerts.budget_tracker import rule_id
from streams.feeds.rule_book import RuleBook
from streams.kafka.compacted import CompactedRecord, follow_compacted

log = logging.getLogger(__name__)



class BudgetBook(RuleBook[BudgetRule]):
    """The rules in force: settings, overridden and extended by the topic."""

    def __init__(self, configured: tuple[BudgetRule, ...]) -> None:
        super().__init__(configured, BudgetRule, rule_id, "budget")

    def retire_others(self, stored: list[tuple[object, ...]]) -> list[BudgetRow]:
        """Rows making a table holding ``stored`` (team, workflow, period, amount,
        soft_share, dimension, value) hold exactly the rules in force: those, and the
        rest deleted."""
        now = datetime.now(UTC)
        rules = self.rules()
        keep = {rule_id(r) for r in rules}
        rows: list[BudgetRow] = [(rule, now, 0) for rule in rules]
        for team, workflow, period, amount, soft_share, dimension, value in stored:
            old = BudgetRule.model_validate({"team": team, "workflow": workflow,
                                             "period": period, "amount": amount,
                                             "soft_share": soft_share,
                                             "dimension": dimension, "value": value})
            if rule_id(old) not in keep:
                rows.append((old, now, 1))
        return rows


def encode_budget(rule: BudgetRule) -> tuple[bytes, bytes]:
    """Key and value to publish a budget on the compacted ``budgets`` topic."""
    return rule_id(rule).encode(), rule.model_dump_json().encode()


async def follow_budgets(connection: KafkaConnection, topic: str, book: BudgetBook,
                         on_change: Callable[[tuple[BudgetRule, ...], list[BudgetRow]], None],
                         ready: asyncio.Event | None = None) -> None:
    """Apply the budgets topic to ``book`` and report each change (runs forever)."""

    def apply(records: list[CompactedRecord]) -> None:
        rows = book.apply(records)
        if rows:
            log.info("budgets updated: %d rules in force", len(book.rules()))
            on_change(book.rules(), rows)

    await follow_compacted(connection, topic, apply, ready, what="budget feed")
