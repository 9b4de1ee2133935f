"""Budget state for gateways, without a broker: what the tracker publishes, how the
check judges it at wall-clock time, the rollup's emission onto the compacted
``budget-state`` topic, and the book every worker keeps of it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from schemas.outputs import BudgetState
from streams.core.alerts import AlertConfig, AlertEngine, BudgetRule
from streams.core.alerts.budget_check import BudgetIndex, check_budgets
from streams.feeds.budget_state_feed import BudgetStateBook
from streams.kafka.compacted import CompactedRecord
from streams.kafka.outlet import Outlet
from streams.kafka.topics import Topics
from streams.ops.metrics import Metrics
from streams.runtime.rollup_runtime import RollupRuntime
from tests.test_alerts import MINUTE, T0, row
from tests.test_handlers import DictStore, ListSink, RecordingProducer

DAILY = BudgetRule(team="acme", period="daily", amount=Decimal(10))
WORKFLOW = BudgetRule(team="acme", workflow="support", period="monthly", amount=Decimal(100),
                      soft_share=Decimal("0.5"))
DAY_END = datetime(2026, 12, 2, tzinfo=UTC)


def engine(*rules: BudgetRule) -> AlertEngine:
    return AlertEngine(AlertConfig(budgets=rules), "USD")


def observe(e: AlertEngine, minute: int, spend: Any, **kw: Any) -> None:
    e.observe([row(minute, final=False, spend=spend, **kw)], [], [], 0)


# -- what the tracker publishes ---------------------------------------------------------------


def test_states_follow_spend_and_only_changes_are_handed_out() -> None:
    e = engine(DAILY, WORKFLOW)
    assert e.budget_state_changes() == []  # no row yet: no clock, no current period
    observe(e, 0, 7)
    changes = dict(e.budget_state_changes())
    daily = changes["team=acme/period=daily"]
    assert daily is not None
    assert (daily.state, daily.spent, daily.remaining) == ("ok", Decimal(7), Decimal(3))
    assert daily.period_start == datetime(2026, 12, 1, tzinfo=UTC)
    assert daily.resets_at == DAY_END and daily.currency == "USD"
    monthly = changes["team=acme/workflow=support/period=monthly"]
    assert monthly is not None and monthly.resets_at == datetime(2027, 1, 1, tzinfo=UTC)
    # The clock moving on alone changes nothing a gateway needs.
    e.observe([], [], [], 0)
    assert e.budget_state_changes() == []
    # Spend of another workflow: the team's budget moves, the workflow's does not.
    observe(e, 1, 1.5, workflow="billing")  # 8.5 of 10: past the 0.8 soft share
    assert [(k, s.state if s else None) for k, s in e.budget_state_changes()] == [
        ("team=acme/period=daily", "soft")]
    observe(e, 2, 2, workflow="billing")  # 10.5: used up
    [(_key, state)] = e.budget_state_changes()
    assert state is not None and (state.state, state.remaining) == ("hard", Decimal(0))
    assert state.spent == Decimal("10.5")


def test_a_removed_budget_is_a_tombstone_and_a_new_day_resets_the_state() -> None:
    e = engine(DAILY)
    observe(e, 0, 20)
    e.budget_state_changes()
    e.set_budgets((WORKFLOW,))
    observe(e, 1, 1)
    changes = dict(e.budget_state_changes())
    assert changes["team=acme/period=daily"] is None
    assert changes["team=acme/workflow=support/period=monthly"] is not None
    e.set_budgets((DAILY,))
    observe(e, 24 * 60 + 5, 1)  # the next UTC day
    [(_key, state)] = [c for c in e.budget_state_changes() if c[0].endswith("daily")]
    assert state is not None and state.spent == Decimal(1) and state.state == "ok"
    assert state.period_start == DAY_END


# -- the check, at wall-clock time --------------------------------------------------------------


def state(rule: BudgetRule, spent: str, period_start: datetime, resets_at: datetime
          ) -> BudgetState:
    from streams.core.alerts.budget_tracker import rule_id
    return BudgetState(budget_id=rule_id(rule), team=rule.team, workflow=rule.workflow,
                       dimension=rule.dimension, value=rule.value, period=rule.period,
                       state="ok", amount=rule.amount,
                       soft_share=rule.soft_share, spent=Decimal(spent),
                       remaining=Decimal(0), currency="USD", period_start=period_start,
                       resets_at=resets_at, updated_at=period_start)


TODAY = datetime(2026, 12, 1, tzinfo=UTC)
NOON = T0 + 12 * 60 * MINUTE
STATES = {"team=acme/period=daily": state(DAILY, "10.5", TODAY, DAY_END),
          "team=acme/workflow=support/period=monthly": state(
              WORKFLOW, "60", TODAY, datetime(2027, 1, 1, tzinfo=UTC))}


def test_a_team_without_budgets_is_allowed() -> None:
    answer = check_budgets((DAILY,), STATES, "other", "", NOON, "USD")
    assert answer.to_json() == {"allowed": True, "state": "ok", "remaining": None,
                                "resets_at": None, "currency": "USD", "budgets": []}


def test_a_used_up_budget_refuses_until_it_resets() -> None:
    answer = check_budgets((DAILY, WORKFLOW), STATES, "acme", "support", NOON, "USD")
    assert (answer.allowed, answer.state, answer.remaining) == (False, "hard", Decimal(0))
    assert answer.resets_at == DAY_END
    assert [(b.budget_id, b.state) for b in answer.budgets] == [
        ("team=acme/period=daily", "hard"), ("team=acme/workflow=support/period=monthly",
                                             "soft")]
    document = answer.to_json()
    assert document["resets_at"] == "2026-12-02T00:00:00Z"
    assert document["budgets"][0]["spent"] == "10.5"  # money as exact text


def test_workflow_budgets_apply_only_when_the_workflow_is_named() -> None:
    raised = DAILY.model_copy(update={"amount": Decimal(1000)})
    team_only = check_budgets((raised, WORKFLOW), STATES, "acme", "", NOON, "USD")
    assert [b.budget_id for b in team_only.budgets] == ["team=acme/period=daily"]
    assert (team_only.state, team_only.remaining) == ("ok", Decimal("989.5"))
    named = check_budgets((raised, WORKFLOW), STATES, "acme", "support", NOON, "USD")
    # The least left decides what is reported: the workflow's 40 of 100, past half.
    assert (named.allowed, named.state, named.remaining) == (True, "soft", Decimal(40))
    assert named.resets_at == datetime(2027, 1, 1, tzinfo=UTC)


def test_the_rule_in_force_judges_the_published_spend() -> None:
    # Raised live (tokenyield budgets set) after the state was published: allowed again
    # at once; lowered: refused at once.
    raised = DAILY.model_copy(update={"amount": Decimal(50)})
    assert check_budgets((raised,), STATES, "acme", "", NOON, "USD").allowed
    lowered = WORKFLOW.model_copy(update={"amount": Decimal(60)})
    assert not check_budgets((lowered,), STATES, "acme", "support", NOON, "USD").allowed


def test_a_state_of_an_earlier_period_means_the_budget_has_reset() -> None:
    tomorrow = int(DAY_END.timestamp() * 1000) + MINUTE
    answer = check_budgets((DAILY,), STATES, "acme", "", tomorrow, "USD")
    assert (answer.allowed, answer.state, answer.remaining) == (True, "ok", Decimal(10))
    assert answer.resets_at == datetime(2026, 12, 3, tzinfo=UTC)
    # An event clock ahead of this one (a state of a later period) still counts.
    early = T0 - MINUTE
    assert not check_budgets((DAILY,), STATES, "acme", "", early, "USD").allowed


# -- budgets of a dimension (a customer, a user): states and checks --------------------------

GLOBEX = BudgetRule(dimension="customer", value="globex", period="daily", amount=Decimal(5))
GLOBEX_AT_ACME = BudgetRule(team="acme", dimension="customer", value="globex",
                            period="monthly", amount=Decimal(100))


def dimension_row(minute: int, spend: Any, value: str, team: str = "acme",
                  workflow: str = "support") -> Any:
    return row(minute, team=team, workflow=workflow, final=False, spend=spend).model_copy(
        update={"scope": "dimension", "dimension": "customer", "dimension_value": value})


def test_a_customer_budget_gets_a_state_from_that_customer_s_rows_across_teams() -> None:
    e = engine(GLOBEX, GLOBEX_AT_ACME)
    e.observe([dimension_row(0, 3, "globex"), dimension_row(0, 4, "globex", team="beta"),
               dimension_row(0, 50, "initech")], [], [], 0)
    changes = dict(e.budget_state_changes())
    across = changes["customer=globex/period=daily"]
    assert across is not None and (across.spent, across.state) == (Decimal(7), "hard")
    assert (across.team, across.dimension, across.value) == ("", "customer", "globex")
    at_acme = changes["customer=globex/team=acme/period=monthly"]
    assert at_acme is not None and at_acme.spent == Decimal(3)


DIMENSION_STATES = {
    **STATES,
    "customer=globex/period=daily": state(GLOBEX, "7", TODAY, DAY_END),
    "customer=globex/team=acme/period=monthly": state(
        GLOBEX_AT_ACME, "3", TODAY, datetime(2027, 1, 1, tzinfo=UTC))}
ALL_RULES = (DAILY, WORKFLOW, GLOBEX, GLOBEX_AT_ACME)


def test_a_check_names_the_dimension_values_it_would_spend_under() -> None:
    def ids(team: str, workflow: str = "", **dimensions: str) -> list[str]:
        answer = check_budgets(ALL_RULES, DIMENSION_STATES, team, workflow, NOON, "USD",
                               dimensions)
        # The index hands out every rule that can apply, and only a few.
        indexed = check_budgets(BudgetIndex(ALL_RULES).of(team, dimensions),
                                DIMENSION_STATES, team, workflow, NOON, "USD", dimensions)
        assert indexed == answer
        return [b.budget_id for b in answer.budgets]

    assert ids("acme") == ["team=acme/period=daily"]  # no customer named: not theirs
    assert ids("beta", customer="globex") == ["customer=globex/period=daily"]
    assert ids("", customer="globex") == ["customer=globex/period=daily"]
    assert ids("acme", "support", customer="globex") == [
        "team=acme/period=daily", "team=acme/workflow=support/period=monthly",
        "customer=globex/period=daily", "customer=globex/team=acme/period=monthly"]
    assert ids("beta", customer="initech") == []
    answer = check_budgets(ALL_RULES, DIMENSION_STATES, "beta", "", NOON, "USD",
                           {"customer": "globex"})
    assert (answer.allowed, answer.state) == (False, "hard")  # 7 of 5, whatever the team
    assert answer.to_json()["budgets"][0] == {
        "budget_id": "customer=globex/period=daily", "team": "", "workflow": "",
        "dimension": "customer", "value": "globex", "period": "daily", "state": "hard",
        "amount": "5", "spent": "7", "remaining": "0", "resets_at": "2026-12-02T00:00:00Z"}


# -- the rollup's emission and the book of every worker --------------------------------------------


def test_the_rollup_publishes_changed_states_keyed_by_budget_on_the_compacted_topic() -> None:
    topics = Topics("t.", 4)
    producer, sink = RecordingProducer(), ListSink()
    outlet = Outlet(producer, topics, Metrics())
    runtime = RollupRuntime(sink, engine(DAILY), currency="USD", idle_seconds=30,
                            interval_seconds=0.0001, topic=topics.window_partials)
    store = DictStore()

    async def step(offset: int, spend: int) -> None:
        # Spend seen by the budget tracker, then the rollup's checkpoint, as wired.
        runtime.alerts.observe([row(offset, final=False, spend=spend)], [], [], 0)
        await runtime.checkpoint(store, outlet.emit_rollup, outlet.flush)

    asyncio.run(step(0, 4))
    asyncio.run(step(1, 8))
    sent = producer.to(topics.budget_state)
    assert [(key, partition) for key, _, partition in sent] == [
        (b"team=acme/period=daily", 0), (b"team=acme/period=daily", 0)]
    assert [orjson.loads(value)["state"] for _, value, _ in sent] == ["ok", "hard"]
    runtime.alerts.set_budgets(())
    asyncio.run(step(2, 1))
    assert producer.to(topics.budget_state)[-1] == (b"team=acme/period=daily", None, 0)

    book = BudgetStateBook()
    book.apply([CompactedRecord(key.decode(), value, f"x@{n}")
                for n, (key, value, _) in enumerate(producer.to(topics.budget_state)[:2])])
    assert book.states["team=acme/period=daily"].state == "hard"
    book.apply([CompactedRecord("team=acme/period=daily", None, "x@2")])
    assert book.states == {}


def test_the_book_ignores_invalid_records_and_keeps_the_previous_state() -> None:
    book = BudgetStateBook()
    good = STATES["team=acme/period=daily"]
    book.apply([CompactedRecord(good.budget_id, good.model_dump_json().encode(), "x@0")])
    book.apply([CompactedRecord(good.budget_id, b"{broken", "x@1"),
                CompactedRecord("team=zzz/period=daily", good.model_dump_json().encode(),
                                "x@2")])
    assert book.states == {good.budget_id: good}
