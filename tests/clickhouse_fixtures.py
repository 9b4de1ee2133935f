"""A chdb ClickHouse loaded with two days of generated traffic, written the way the
worker writes it: migrations applied with ``migrate``, events run through the worker's
partition runtimes and rollup stage without Kafka (``loadtest.engine_into_clickhouse``),
and every checkpoint's rows inserted by ``ClickHouseSink``.

chdb allows one data directory per process, so the loaded database is built once per
pytest process and shared by every module that imports ``loaded_clickhouse`` (a module
cache, not only the fixture scope: a session fixture imported into two modules would
otherwise be set up twice).

The traffic is anchored to the wall clock (it ends a few minutes ago) because the budget
views compare spend with the current day and month.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from loadtest.engine_into_clickhouse import EngineIntoClickHouse
from schemas.outputs import Alert
from schemas.partitioner import partition_for
from streams.clickhouse.client import connect, migrate
from streams.core.alerts.alert_config import BudgetRule as Budget
from streams.core.alerts.forecast import Projection, SpendForecast
from streams.core.engine_config import EngineConfig
from streams.core.records import Outputs
from streams.core.workflows import WorkflowRule
from tests.core_harness import key_of, kind_of

STAGES = ("output_accepted", "action_taken", "outcome_realised", "value_captured")

DATABASE = "tokenyield"
PARTITIONS = 4
HOURS = 48
TEAMS: dict[str, list[str]] = {
    "support": ["triage", "refunds"],
    "sales": ["outreach", "qualify"],
    "eng": ["code-review"],
}
MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-haiku-4-5"),
    ("acme", "acme-internal-llm"),  # not in the catalog: unpriced
]
AGENTS = ["planner", "writer", ""]
BUDGETS = [
    Budget(team="support", period="daily", amount=Decimal("2.5"), soft_share=Decimal("0.8")),
    Budget(team="support", workflow="triage", period="daily", amount=Decimal("0.75")),
    Budget(team="sales", period="monthly", amount=Decimal("400")),
    Budget(team="eng", period="daily", amount=Decimal("50"), soft_share=Decimal("0.5")),
    Budget(team="eng", period="monthly", amount=Decimal("1000")),
]
CHECKPOINT_EVENTS = 400


@dataclass
class LoadedClickHouse:
    """The shared database and what went into it."""

    client: Client
    database: str
    now: datetime
    start: datetime
    events: int = 0
    replayed_calls: int = 0
    teams: dict[str, list[str]] = field(default_factory=lambda: TEAMS)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self.client.query(sql, parameters=parameters)

    def rows(self, sql: str) -> list[dict[str, Any]]:
        result = self.client.query(sql)
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def scalar(self, sql: str) -> Any:
        return self.client.query(sql).result_rows[0][0]


def generate_events(now: datetime, seed: int = 7) -> list[dict[str, Any]]:
    """Calls and outcomes of every team and workflow over the last ``HOURS`` hours.

    Unit ``i`` of a workflow gets an outcome when ``i % 5 < 3`` (accepted, rejected or
    escalated, some after human review); the others never do, so old ones expire
    (unattributed) and the ones of the last hour stay pending. Some calls are retries,
    some fail, some carry system prompt and context tokens, one model has no price.
    """
    rng = random.Random(seed)
    start = now - timedelta(hours=HOURS)
    end = now - timedelta(minutes=3)
    events: list[dict[str, Any]] = []
    step = timedelta(minutes=9)
    for team, workflows in TEAMS.items():
        for workflow in workflows:
            moment = start + timedelta(minutes=rng.randint(0, 8))
            index = 0
            while moment < end - timedelta(minutes=6):
                events.extend(_unit(rng, team, workflow, index, moment, end))
                index += 1
                moment += step + timedelta(seconds=rng.randint(0, 120))
    events += shared_costs(start)
    events.sort(key=lambda e: e["occurred_at"])
    return events


def _unit(rng: random.Random, team: str, workflow: str, index: int, begin: datetime,
          end: datetime) -> list[dict[str, Any]]:
    unit = f"{team}-{workflow}-{index:05d}"
    provider, model = MODELS[(index + len(workflow)) % len(MODELS)] if index % 7 == 0 \
        else MODELS[(index + len(team)) % 4]
    agent = AGENTS[index % len(AGENTS)]
    events = []
    moment = begin
    for n in range(1 + index % 4):
        retry = n > 0 and index % 3 == 0
        failed = index % 11 == 0 and n == 0
        input_tokens = rng.randint(600, 6000)
        system = rng.randint(100, 400) if index % 2 == 0 else 0
        context = rng.randint(0, input_tokens - system - 50) if index % 4 == 0 else 0
        call: dict[str, Any] = {
            "event_id": f"{unit}-c{n}", "work_unit_id": unit,
            "occurred_at": moment.isoformat(), "provider": provider, "model": model,
            "input_tokens": input_tokens, "output_tokens": rng.randint(50, 900),
            "cached_input_tokens": rng.randint(0, 200), "latency_ms": rng.randint(200, 9000),
            "status": "error" if failed else "ok", "attempt": 2 if retry else 1,
            "team": team, "workflow": workflow, "task_type": workflow,
            "service": f"{team}-svc", "environment": "prod",
            "customer": f"customer-{index % 3}", "user": f"user-{index % 4}",
        }
        if agent:
            call["agent"] = agent
        if system:
            call["system_prompt_tokens"] = system
        if context:
            call["context_tokens"] = context
        events.append(call)
        if n == 0 and index % 6 == 1:  # a tool the unit paid for besides tokens
            events.append({"event_id": f"{unit}-k", "work_unit_id": unit,
                           "occurred_at": moment.isoformat(), "team": team,
                           "workflow": workflow, "kind": "tool_call", "amount": "0.05",
                           "currency": "USD", "customer": f"customer-{index % 3}"})
        moment += timedelta(seconds=rng.randint(5, 90))
    fate = index % 5
    if fate < 3:
        outcome_at = min(moment + timedelta(seconds=rng.randint(30, 300)), end)
        status = ["accepted", "accepted" if index % 2 else "rejected",
                  "escalated" if index % 3 == 0 else "accepted"][fate]
        outcome: dict[str, Any] = {
            "event_id": f"{unit}-o", "work_unit_id": unit, "occurred_at": outcome_at.isoformat(),
            "team": team, "workflow": workflow, "status": status,
            "human_review_minutes": str(rng.choice([0, 0, 0, 2, 5, 12])),
        }
        if status == "accepted":
            outcome.update(value=str(rng.choice([1, 2, 5, 10, 40])), currency="USD",
                           quality_score=round(rng.uniform(0.5, 1.0), 3))
            if index % 4:
                outcome["stage"] = STAGES[index % 4]
        events.append(outcome)
        if status == "accepted" and index % 10 == 0:  # an audit overturns it
            events.append({"event_id": f"{unit}-v", "work_unit_id": unit,
                           "occurred_at": min(outcome_at + timedelta(minutes=20), end)
                           .isoformat(), "team": team, "workflow": workflow,
                           "verdict": "overturned", "value_at_risk": "3", "currency": "USD"})
    return events


def shared_costs(start: datetime) -> list[dict[str, Any]]:
    """A shared cost of each workflow every six hours (a vector store, reserved GPUs)."""
    return [{"event_id": f"shared-{team}-{workflow}-{h}",
             "occurred_at": (start + timedelta(hours=h, minutes=30)).isoformat(),
             "team": team, "workflow": workflow, "kind": "infra", "amount": "1.20",
             "currency": "USD"}
            for team, workflows in TEAMS.items() for workflow in workflows
            for h in range(0, HOURS, 6)]


def load(client: Client, now: datetime) -> LoadedClickHouse:
    """Migrate, then run the generated traffic through the core and the sink."""
    migrate(client, DATABASE)
    events = generate_events(now)
    loaded = LoadedClickHouse(client, DATABASE, now, now - timedelta(hours=HOURS),
                              events=len(events))
    asyncio.run(_pump(client, events, now, loaded))
    write_budgets(client, DATABASE, BUDGETS, now)
    return loaded


async def _pump(client: Client, events: list[dict[str, Any]], now: datetime,
                loaded: LoadedClickHouse) -> None:
    config = EngineConfig(partitions=PARTITIONS, deadline_seconds=3600, retention_seconds=3600,
                          allowed_lateness_seconds=120)
    pipeline = EngineIntoClickHouse(client, DATABASE, config, now, retry_max_seconds=1)
    replayed: Outputs | None = None
    try:
        for count, event in enumerate(events, 1):
            pipeline.apply(kind_of(event), partition_for(key_of(event), PARTITIONS),  # type: ignore[arg-type]
                           orjson.dumps(event))
            if count % CHECKPOINT_EVENTS == 0:
                for batch in await pipeline.checkpoint():
                    if replayed is None and len(batch.calls) > 20:
                        replayed = batch
        await pipeline.checkpoint()
        assert replayed is not None
        sink = pipeline.sink
        # A crash after the insert but before the offset commit: the same calls come
        # back in a batch of another shape (another dedup token), so they are stored
        # twice until a merge; FINAL and the v_ views must not see the difference.
        # Merges are stopped so that the duplicates stay visible to the tests that
        # count them (chdb merges parts within seconds).
        client.command(f"SYSTEM STOP MERGES {DATABASE}.model_calls")
        again = Outputs(calls=replayed.calls[: len(replayed.calls) // 2])
        again.cover("calls-replay", 0, 1)
        await sink.write(again)
        # An identical retry of that insert (same token) is dropped by ClickHouse: the
        # tests count one replay only.
        await sink.write(again)
        loaded.replayed_calls = len(again.calls)
        await sink.write(_alerts(now))
        await sink.write(_value_rules(now))
    finally:
        pipeline.close()


def _alerts(now: datetime) -> Outputs:
    """Alerts as the detectors would emit them: per team one critical budget alert that
    is firing now, and a cost-per-outcome regression that fired and resolved."""
    batch = Outputs()
    for team in TEAMS:
        fired = now - timedelta(minutes=1)
        batch.alerts.append(Alert(
            alert_id=f"budget_hard:{team}:daily", kind="budget_hard", status="firing",
            severity="critical", subject={"team": team, "period": "daily"},
            observed=Decimal("3.1"), threshold=Decimal("2.5"), unit="USD",
            window_start=fired.replace(hour=0, minute=0, second=0, microsecond=0),
            window_end=fired, occurred_at=fired, message=f"{team} is over its daily budget"))
        for status, ago in (("firing", 3), ("resolved", 2)):
            at = now - timedelta(hours=ago)
            batch.alerts.append(Alert(
                alert_id=f"cpo:{team}:{TEAMS[team][0]}", kind="cost_per_outcome_regression",
                status=status, severity="warning",
                subject={"team": team, "workflow": TEAMS[team][0]},
                observed=Decimal("0.9"), expected=Decimal("0.4"), threshold=Decimal("0.6"),
                unit="USD", window_start=at - timedelta(hours=1), window_end=at,
                occurred_at=at, message=f"cost per accepted outcome of {team} doubled"))
    batch.cover("alerts", 0, 0)
    return batch


def _value_rules(now: datetime) -> Outputs:
    """What the worker and the rollup write besides the engine's rows: each workflow's
    rule with a business case, and a month-end projection per team."""
    rules = [WorkflowRule(team=team, workflow=workflow, owner=f"{team}-lead",
                          baseline_minutes_per_unit=Decimal(10),
                          baseline_rate_per_hour=Decimal(60),
                          target_cost_per_accepted_outcome=Decimal("0.05"),
                          expected_value_per_unit=Decimal(5))
             for team, workflows in TEAMS.items() for workflow in workflows]
    as_of = int(now.timestamp() * 1000)
    forecasts = [(SpendForecast({"team": team}, Projection(
        as_of_ms=as_of - hours * 3_600_000, end_ms=as_of + 10 * 86_400_000,
        spent=Decimal(10 + hours), expected=Decimal(40), low=Decimal(30), high=Decimal(52),
        method="linear", history_days=2)), "USD") for team in TEAMS for hours in (0, 5)]
    batch = Outputs(workflows=[(rule, now, 0) for rule in rules], forecasts=forecasts)
    batch.cover("value-rules", 0, 0)
    return batch


def write_budgets(client: Client, database: str, budgets: list[Budget], now: datetime) -> None:
    """What the worker does at start-up: one row per configured budget."""
    rows = [[b.team, b.workflow, b.period, b.amount, b.soft_share, now] for b in budgets]
    client.insert(f"{database}.budgets", rows,
                  column_names=["team", "workflow", "period", "amount", "soft_share",
                                "updated_at"])


_LOADED: dict[str, LoadedClickHouse] = {}


def loaded_database(tmp_root: str | None = None) -> LoadedClickHouse:
    """The process's one loaded database, built on first use."""
    if "db" not in _LOADED:
        path = tempfile.mkdtemp(prefix="tokenyield-chdb-", dir=tmp_root)
        client = connect(f"chdb://{path}")
        now = datetime.now(UTC).replace(microsecond=0)
        _LOADED["db"] = load(client, now)
    return _LOADED["db"]


@pytest.fixture(scope="session")
def loaded_clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadedClickHouse]:
    yield loaded_database(str(tmp_path_factory.getbasetemp()))
