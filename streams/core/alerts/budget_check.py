"""May a team (or one of its workflows) spend now? The answer a gateway asks for.

A gateway asks before it forwards a request (``GET /v1/budgets/check``); the worker
answers from two things it holds in memory: the budget rules in force (settings and
the ``budgets`` topic) and the budget states the rollup published (``budget-state``).

- The request names a team (and a workflow), or a dimension's value (``customer=acme``,
  ``user=...``, a promoted attribute), or both. The rules that apply are those whose
  spend the request would add to: the team's budgets without a workflow, with a
  workflow given that workflow's budgets too, and each named dimension value's budgets
  (across teams, or of the request's team, or of its team and workflow), the way the
  rollup books spend (``budget_tracker.covers``). Nothing that applies: allowed.
- Spend comes from the published state, when that state is of the period ``now``
  (wall clock) is in. A state of an earlier period means the period has reset: nothing
  is known to be spent yet. A state of a later period (the event clock ahead of this
  clock) still counts, so a skewed clock cannot reopen a spent budget.
- The level is judged again with the rule in force, so a budget raised or lowered with
  ``tokenyield budgets set`` takes effect at once, before the rollup's next state.
- The answer is the worst budget: ``hard`` refuses (``allowed`` false) until the last
  hard budget resets (``resets_at``, the latest of their period ends); otherwise
  ``remaining`` and ``resets_at`` are those of the budget with the least left.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from schemas.outputs import BudgetLevel, BudgetState
from streams.core.alerts.alert_config import BudgetRule
from streams.core.alerts.budget_tracker import (
    Series,
    budget_level,
    covers,
    period_bounds,
    rule_id,
)
from streams.core.alerts.figures import dt

_RANK: dict[BudgetLevel, int] = {"ok": 0, "soft": 1, "hard": 2}


class BudgetIndex:
    """The rules in force by team and by dimension value, built once per change of the
    rules: a check then looks at the few budgets it could be under, however many
    teams and customers have one."""

    def __init__(self, rules: Iterable[BudgetRule]) -> None:
        by_team: dict[str, list[BudgetRule]] = {}
        by_target: dict[tuple[str, str], list[BudgetRule]] = {}
        for rule in rules:
            if rule.dimension:
                by_target.setdefault((rule.dimension, rule.value), []).append(rule)
            else:
                by_team.setdefault(rule.team, []).append(rule)
        self.by_team = {team: tuple(found) for team, found in by_team.items()}
        self.by_target = {target: tuple(found) for target, found in by_target.items()}

    def of(self, team: str, dimensions: Mapping[str, str] | None = None
           ) -> tuple[BudgetRule, ...]:
        """The candidates: the team's budgets and those of each named dimension value
        (``check_budgets`` keeps the ones that apply)."""
        found = list(self.by_team.get(team, ())) if team else []
        for target in (dimensions or {}).items():
            found.extend(self.by_target.get(target, ()))
        return tuple(found)


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    """One budget, judged now."""

    budget_id: str
    team: str
    workflow: str
    dimension: str
    value: str
    period: str
    state: BudgetLevel
    amount: Decimal
    spent: Decimal
    remaining: Decimal
    resets_at: datetime

    def to_json(self) -> dict[str, Any]:
        # A dimension budget names its dimension; a team budget has none to name.
        target = {"dimension": self.dimension, "value": self.value} if self.dimension else {}
        return {"budget_id": self.budget_id, "team": self.team, "workflow": self.workflow,
                **target, "period": self.period, "state": self.state,
                "amount": str(self.amount),
                "spent": str(self.spent), "remaining": str(self.remaining),
                "resets_at": _iso(self.resets_at)}


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """The answer: allowed, the worst state, what is left and when it resets."""

    allowed: bool
    state: BudgetLevel
    remaining: Decimal | None
    resets_at: datetime | None
    currency: str
    budgets: tuple[BudgetVerdict, ...]

    def to_json(self) -> dict[str, Any]:
        """Money as decimal text (exact), times as ISO 8601 UTC."""
        return {"allowed": self.allowed, "state": self.state,
                "remaining": None if self.remaining is None else str(self.remaining),
                "resets_at": None if self.resets_at is None else _iso(self.resets_at),
                "currency": self.currency,
                "budgets": [verdict.to_json() for verdict in self.budgets]}


def applies(rule: BudgetRule, team: str, workflow: str,
            dimensions: Mapping[str, str]) -> bool:
    """Whether spend of this request (team, workflow, dimension values) counts against
    ``rule``: the series the rollup would book it in, and whether the rule covers one."""
    series: list[Series] = [(team, workflow, "", "")] if team else []
    series += [(team, workflow, name, value) for name, value in dimensions.items()]
    return any(covers(rule, one) for one in series)


def check_budgets(rules: Iterable[BudgetRule], states: Mapping[str, BudgetState],
                  team: str, workflow: str, now_ms: int, currency: str,
                  dimensions: Mapping[str, str] | None = None) -> BudgetCheck:
    """Judge every budget that applies to ``team`` (and ``workflow``, and the
    ``dimensions`` values, if given) at ``now_ms``."""
    named = dict(dimensions or {})
    verdicts = tuple(_judge(rule, states.get(rule_id(rule)), now_ms) for rule in rules
                     if applies(rule, team, workflow, named))
    if not verdicts:
        return BudgetCheck(True, "ok", None, None, currency, ())
    worst = max(verdicts, key=lambda v: _RANK[v.state]).state
    if worst == "hard":
        hard = [v for v in verdicts if v.state == "hard"]
        tightest = min(hard, key=lambda v: v.remaining)
        resets_at = max(v.resets_at for v in hard)
    else:
        tightest = min(verdicts, key=lambda v: (v.remaining, v.resets_at))
        resets_at = tightest.resets_at
    return BudgetCheck(worst != "hard", worst, tightest.remaining, resets_at, currency,
                       verdicts)


def _judge(rule: BudgetRule, state: BudgetState | None, now_ms: int) -> BudgetVerdict:
    start_ms, end_ms = period_bounds(rule.period, now_ms)
    spent = Decimal(0)
    resets_at = dt(end_ms)
    if state is not None and state.period == rule.period:
        state_start = int(state.period_start.timestamp() * 1000)
        if state_start >= start_ms:  # this period, or a later one (clock skew)
            spent = state.spent
            resets_at = state.resets_at
    return BudgetVerdict(
        budget_id=rule_id(rule), team=rule.team, workflow=rule.workflow,
        dimension=rule.dimension, value=rule.value, period=rule.period,
        state=budget_level(rule, spent), amount=rule.amount, spent=spent,
        remaining=max(rule.amount - spent, Decimal(0)), resets_at=resets_at)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
