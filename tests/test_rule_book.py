"""Rules from settings changed live by a compacted topic (budgets and workflow rules)."""

from __future__ import annotations

from decimal import Decimal

from streams.core.alerts.alert_config import BudgetRule
from streams.core.workflows import WorkflowRule
from streams.feeds.budget_feed import BudgetBook, encode_budget
from streams.feeds.workflow_feed import WorkflowBook, encode_workflow
from streams.kafka.compacted import CompactedRecord


def record(pair: tuple[bytes, bytes | None], at: int = 0) -> CompactedRecord:
    key, value = pair
    return CompactedRecord(key.decode(), value, f"t[0]@{at}")


def test_the_topic_overrides_extends_and_removes_the_settings_rules() -> None:
    triage = WorkflowRule(team="support", workflow="triage", min_quality_score=0.8)
    book = WorkflowBook((triage,))
    assert book.current().rule("support", "triage") == triage
    stricter = triage.model_copy(update={"min_quality_score": 0.9})
    research = WorkflowRule(team="sales", workflow="research", max_latency_ms=5000)
    rows = book.apply([record(encode_workflow(stricter)), record(encode_workflow(research))])
    assert {(r.key, deleted) for r, _, deleted in rows} == {(stricter.key, 0), (research.key, 0)}
    registry = book.current()
    assert registry.rule("support", "triage") == stricter and registry.version == "topic-1"
    # A tombstone removes a rule, also the settings' one; nothing changed: no new registry.
    rows = book.apply([record((triage.key.encode(), None))])
    assert [(r.key, deleted) for r, _, deleted in rows] == [(triage.key, 1)]
    assert book.current().rule("support", "triage") is None
    assert book.apply([record((triage.key.encode(), None))]) == []
    assert book.current().version == "topic-2"


def test_bad_records_are_ignored_and_logged(caplog: object) -> None:
    book = BudgetBook((BudgetRule(team="a", period="daily", amount=Decimal(10)),))
    good = BudgetRule(dimension="customer", value="acme", period="monthly", amount=Decimal(5))
    key, value = encode_budget(good)
    rows = book.apply([CompactedRecord("x", b"{not json", "t[0]@1"),
                       CompactedRecord("wrong-key", value, "t[0]@2"),
                       record((key, value), 3)])
    assert [r for r, _, _ in rows] == [good]
    assert len(book.rules()) == 2
    assert "t[0]@1" in caplog.text and "t[0]@2" in caplog.text  # type: ignore[attr-defined]
