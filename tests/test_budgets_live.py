"""Budgets changed live on the ``budgets`` topic, and alerts reaching the webhook.

The pure ``BudgetBook`` first; then a real worker with a budget from its settings, a
budget set with ``tokenyield budgets set`` while it runs, and a local HTTP server as
the Slack webhook.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from streams.core.alerts.alert_config import BudgetRule
from streams.core.alerts.budget_tracker import rule_id
from streams.feeds.budget_feed import BudgetBook, encode_budget
from streams.kafka.compacted import CompactedRecord
from tests.conftest import ROOT
from tests.stream_truth import publish_in_background, stream

DB = "tokenyield"


def record(rule: BudgetRule | None, key: str = "") -> CompactedRecord:
    if rule is None:
        return CompactedRecord(key, None, "budgets[0]@0")
    k, v = encode_budget(rule)
    return CompactedRecord(key or k.decode(), v, "budgets[0]@0")


def test_topic_budgets_override_extend_and_remove_the_configured_ones() -> None:
    configured = BudgetRule(team="a", period="daily", amount=Decimal(10))
    book = BudgetBook((configured,))
    assert book.rules() == (configured,)

    raised = configured.model_copy(update={"amount": Decimal(20)})
    extra = BudgetRule(team="b", workflow="w", period="monthly", amount=Decimal(5))
    rows = book.apply([record(raised), record(extra)])
    assert set(book.rules()) == {raised, extra}
    assert {(r.team, r.amount, deleted) for r, _, deleted in rows} == \
        {("a", Decimal(20), 0), ("b", Decimal(5), 0)}

    # A tombstone removes a rule, also one from the settings; the table row is deleted.
    rows = book.apply([record(None, rule_id(configured))])
    assert book.rules() == (extra,)
    assert [(r.team, deleted) for r, _, deleted in rows] == [("a", 1)]

    # Invalid values and keys that are not the rule's id change nothing.
    before = book.rules()
    assert book.apply([CompactedRecord("team=c/period=daily", b"{not json", "x"),
                       record(extra, key="team=zzz/period=daily")]) == []
    assert book.rules() == before

    # At start-up the table is made to hold exactly the rules in force.
    stored = [("a", "", "daily", Decimal(10), Decimal("0.8"), "", ""),
              ("b", "w", "monthly", Decimal(5), Decimal("0.8"), "", "")]
    rows = book.retire_others(stored)
    assert sorted((r.team, deleted) for r, _, deleted in rows) == [("a", 1), ("b", 0)]


class Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_url() -> Iterator[str]:
    Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token"
    server.shutdown()


@pytest.mark.broker
@pytest.mark.clickhouse
def test_budgets_set_live_alert_and_reach_the_webhook(make_worker: Any, prefix: str,
                                                        hook_url: str) -> None:
    worker = make_worker(
        TOKENYIELD_BUDGETS='[{"team": "support", "period": "monthly", "amount": "100000"}]',
        TOKENYIELD_WEBHOOK_URL=hook_url, TOKENYIELD_RUNAWAY_MAX_CALLS="8").start()
    env = worker.env

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "streams.cli", "budgets", *args],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    worker.wait_for(f"SELECT count() FROM {DB}.budgets FINAL", 1, 30)
    assert "sales" not in "".join(str(r) for r in worker.sql(
        f"SELECT team FROM {DB}.budgets FINAL"))
    cli("set", "--team", "sales", "--period", "daily", "--amount", "0.01")
    worker.wait_for(f"SELECT count() FROM {DB}.budgets FINAL WHERE team = 'sales' "
                    f"AND amount = 0.01", 1, 30)

    events = stream(units=200, seed=51, start=datetime.now(UTC).replace(microsecond=0)
                    - timedelta(minutes=10))
    loop_start = datetime.now(UTC) - timedelta(minutes=9)
    events += [{"event_id": f"loop-c{i}", "work_unit_id": "loop", "provider": "openai",
                "model": "gpt-4o", "team": "support", "workflow": "triage",
                "occurred_at": (loop_start + timedelta(seconds=i)).isoformat(),
                "input_tokens": 1000, "output_tokens": 100} for i in range(12)]
    thread, state = publish_in_background(env["TOKENYIELD_KAFKA_BOOTSTRAP"], prefix, events,
                                          rate=3000)
    thread.join(60)
    assert state["error"] is None

    worker.wait_for(f"SELECT count() > 0 FROM {DB}.alerts FINAL WHERE kind = 'budget_hard' "
                    f"AND team = 'sales'", 1, 90)
    worker.wait_for(f"SELECT count() > 0 FROM {DB}.alerts FINAL WHERE kind = 'runaway_work_unit'",
                    1, 30)
    # The settings' huge support budget stays quiet.
    assert worker.scalar(f"SELECT count() FROM {DB}.alerts FINAL WHERE kind LIKE 'budget%' "
                         f"AND team = 'support'") == 0

    deadline = time.monotonic() + 30
    texts: list[str] = []
    while time.monotonic() < deadline:
        texts = [json.dumps(m) for m in Hook.received]
        if any("budget" in t and "sales" in t for t in texts) and \
                any("loop" in t for t in texts):
            break
        time.sleep(0.5)
    assert any("budget" in t and "sales" in t for t in texts), texts[:3]
    assert any("loop" in t for t in texts), texts[:3]
    assert "secret-token" not in worker.log()

    cli("remove", "--team", "support", "--period", "monthly")
    worker.wait_for(f"SELECT count() FROM {DB}.budgets FINAL WHERE team = 'support'", 0, 30)
    listing = cli("list")
    assert "sales" in listing and "0.01" in listing and "support" not in listing
