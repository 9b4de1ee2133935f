"""Budgets per team or workflow, per UTC day or month, alerting from running rows.

Spend is the ``spend`` of the detection size's total rows (``scope == "total"``),
running and final. A window's row arrives many times (running at every checkpoint,
then final): the latest revision per ``window_id`` replaces the previous one, so only
its change is added to the period totals. Correction rows (changes that reached a
window after it was final) add their spend whenever they come. Per-window values are
kept for ``correction_horizon_seconds`` of event time; after that a window is settled.

Only teams named by a budget rule are tracked, so a rule added mid-period counts spend
from when the engine first saw it configured.

Each threshold fires once per period: the soft one (``soft_share`` of the amount,
warning) and the hard one (the amount, critical); a jump past both fires only the hard
one. Both resolve once the event clock has left the period.

A monthly budget's projection (``expected``, ``exhausts_on``) is the forecast
(``forecast.py``: weekday factors, trend and band) of the spend of the series it covers,
once they have ``forecast_min_days`` complete days of history; before that, and for
daily budgets (the forecast has no hours), the linear run-rate of the period so far.

``state_changes`` gives where each budget stands (``BudgetState``: ok, soft or hard,
spent, remaining, when the period resets), only those that changed since it was last
asked and a ``None`` for a removed budget: the rollup publishes them on the compacted
``budget-state`` topic, which every worker follows to answer gateways.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from schemas.outputs import Alert, AlertKind, BudgetLevel, BudgetState, CostPerOutcomeWindow
from streams.core.alerts.alert_config import AlertConfig, BudgetRule
from streams.core.alerts.figures import clock, dec, dt, iso, money, pct
from streams.core.alerts.forecast import (
    DAY_MS,
    Forecaster,
    Projection,
    Series,
    exhausts_at,
    project,
)

Period = Literal["daily", "monthly"]
PERIODS: tuple[Period, Period] = ("daily", "monthly")
KINDS: dict[str, AlertKind] = {"soft": "budget_soft", "hard": "budget_hard"}
UNKNOWN_RULE_KEEP_MS = 32 * 86_400_000


def period_bounds(period: Period, ms: int) -> tuple[int, int]:
    """The UTC day or calendar month holding ``ms``, as [start, end) in ms."""
    d = dt(ms)
    if period == "daily":
        start = datetime(d.year, d.month, d.day, tzinfo=UTC)
        end = start + timedelta(days=1)
    else:
        start = datetime(d.year, d.month, 1, tzinfo=UTC)
        end = datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def period_label(period: Period, start_ms: int) -> str:
    return dt(start_ms).strftime("%Y-%m-%d" if period == "daily" else "%Y-%m")


def rule_id(rule: BudgetRule) -> str:
    workflow = f"/workflow={rule.workflow}" if rule.workflow else ""
    team = f"team={rule.team}{workflow}" if rule.team else ""
    if rule.dimension:
        target = f"{rule.dimension}={rule.value}"
        return f"{target}/{team}/period={rule.period}" if team else \
            f"{target}/period={rule.period}"
    return f"{team}/period={rule.period}"


def budget_level(rule: BudgetRule, spent: Decimal) -> BudgetLevel:
    """The budget's state at ``spent``: hard once the amount is used up, soft from the
    warning share on (the thresholds the alerts use)."""
    if spent >= rule.amount:
        return "hard"
    return "soft" if spent >= rule.amount * rule.soft_share else "ok"


def rule_subject(rule: BudgetRule) -> dict[str, str]:
    subject = {"team": rule.team} if rule.team else {}
    if rule.workflow:
        subject["workflow"] = rule.workflow
    if rule.dimension:
        subject[rule.dimension] = rule.value
    return {**subject, "period": rule.period}


def rule_owner(rule: BudgetRule) -> str:
    team = f"{rule.team}/{rule.workflow}" if rule.workflow else rule.team
    if rule.dimension:
        target = f"{rule.dimension} {rule.value}"
        return f"{target} ({team})" if team else target
    return team


def covers(rule: BudgetRule, series: Series) -> bool:
    team, workflow, dimension, value = series
    if rule.dimension != dimension or rule.value != value:
        return False
    return rule.team in ("", team) if not rule.workflow else \
        (rule.team == team and rule.workflow == workflow)


def _changed(old: BudgetState, new: BudgetState) -> bool:
    return old.model_dump(exclude={"updated_at"}) != new.model_dump(exclude={"updated_at"})


class BudgetTracker:
    def __init__(self, config: AlertConfig, currency: str,
                 forecaster: Forecaster | None = None) -> None:
        self.config = config
        self.currency = currency
        self.forecaster = forecaster
        self.set_rules(config.budgets)
        self.size_ms = config.detection_window_seconds * 1000
        self.horizon_ms = config.correction_horizon_seconds * 1000
        self.clock_ms = 0  # the latest window end seen
        # Latest (revision, spend) of each recent window, by series (team, workflow) and
        # window start.
        self.windows: dict[Series, dict[int, tuple[int, Decimal]]] = {}
        self.totals: dict[tuple[Series, Period, int], Decimal] = {}  # series, period, start
        self.fired: dict[tuple[str, int], dict[str, bool]] = {}  # rule, start -> kind: emitted
        # The states last handed out by ``state_changes``, by rule id. Not saved: after a
        # restore every state is handed out again, which a compacted topic absorbs.
        self.published: dict[str, BudgetState] = {}

    def set_rules(self, rules: tuple[BudgetRule, ...]) -> None:
        """Replace the rules (a budget changed on the ``budgets`` topic). Spend already
        tracked is kept; a team new to the rules is counted from now on."""
        self.rules = {rule_id(r): r for r in rules}
        self.teams = {r.team for r in rules if not r.dimension}
        self.targets = {(r.dimension, r.value) for r in rules if r.dimension}

    def observe(self, rows: list[CostPerOutcomeWindow]) -> list[Alert]:
        """Rows in arrival order (running before final): the latest revision wins."""
        if not self.rules:
            return []
        touched: set[tuple[str, int]] = set()
        for row in rows:
            if row.window_seconds * 1000 != self.size_ms:
                continue
            if row.scope == "total" and row.team in self.teams:
                key: Series = (row.team, row.workflow, "", "")
            elif row.scope == "dimension" and (row.dimension, row.dimension_value) \
                    in self.targets:
                key = (row.team, row.workflow, row.dimension, row.dimension_value)
            else:
                continue
            start = int(row.window_start.timestamp() * 1000)
            end = start + self.size_ms
            self.clock_ms = max(self.clock_ms, end)
            if row.correction:
                delta = row.spend  # a correction adds to its window, whenever it comes
            else:
                series = self.windows.setdefault(key, {})
                previous = series.get(start)
                if previous is None and end < self.clock_ms - self.horizon_ms:
                    continue  # settled long ago: already counted
                if previous is not None and row.revision < previous[0]:
                    continue
                delta = row.spend - (previous[1] if previous else 0)
                series[start] = (row.revision, row.spend)
            for period in PERIODS:
                total = (key, period, period_bounds(period, start)[0])
                self.totals[total] = self.totals.get(total, Decimal(0)) + delta
            for rid, rule in self.rules.items():
                if covers(rule, key):
                    touched.add((rid, period_bounds(rule.period, start)[0]))
        alerts = [a for rid, start in sorted(touched) for a in self._judge(rid, start)]
        alerts.extend(self._resolve_ended())
        self._prune()
        return alerts

    def states(self) -> dict[str, BudgetState]:
        """Every budget in its period at the event-time clock (nothing before the first
        row: without a clock there is no current period)."""
        if self.clock_ms <= 0:
            return {}
        states = {}
        for rid, rule in self.rules.items():
            # The clock is the end of the latest window (exclusive): its last instant
            # is the latest event time, and decides the period.
            start, end = period_bounds(rule.period, self.clock_ms - 1)
            spent = self.spent(rule, start)
            states[rid] = BudgetState(
                budget_id=rid, team=rule.team, workflow=rule.workflow,
                dimension=rule.dimension, value=rule.value, period=rule.period,
                state=budget_level(rule, spent), amount=rule.amount,
                soft_share=rule.soft_share, spent=spent,
                remaining=max(rule.amount - spent, Decimal(0)), currency=self.currency,
                period_start=dt(start), resets_at=dt(end), updated_at=dt(self.clock_ms))
        return states

    def state_changes(self) -> list[tuple[str, BudgetState | None]]:
        """The states that changed since the last call (the moment of computing alone
        is no change), and ``None`` for each budget that is gone, in id order."""
        current = self.states()
        if not current and not self.published:
            return []
        changes: list[tuple[str, BudgetState | None]] = []
        for rid in sorted(set(current) | set(self.published)):
            new, old = current.get(rid), self.published.get(rid)
            if new is None:
                if rid not in self.rules:  # removed; a rule kept but no clock: keep it
                    changes.append((rid, None))
                    del self.published[rid]
                continue
            if old is None or _changed(old, new):
                changes.append((rid, new))
                self.published[rid] = new
        return changes

    def spent(self, rule: BudgetRule, start_ms: int) -> Decimal:
        return sum((v for (series, period, start), v in self.totals.items()
                    if period == rule.period and start == start_ms and covers(rule, series)),
                   Decimal(0))

    def _judge(self, rid: str, start_ms: int) -> list[Alert]:
        rule = self.rules[rid]
        state = self.fired.get((rid, start_ms), {})
        if state.get("resolved"):
            return []
        spent = self.spent(rule, start_ms)
        if spent >= rule.amount and "hard" not in state:
            level = "hard"
            state.setdefault("soft", False)  # covered by the hard alert, never sent
        elif spent >= rule.amount * rule.soft_share and "soft" not in state:
            level = "soft"
        else:
            return []
        state[level] = True
        self.fired[(rid, start_ms)] = state
        return [self._alert(rid, rule, start_ms, spent, level)]

    def _projection(self, rule: BudgetRule, start_ms: int, now: int, end_ms: int,
                    spent: Decimal) -> tuple[Projection, int]:
        """The spend expected at the period's end, and when the amount is (or was)
        reached: the forecast of the covered series when they have enough history,
        else the linear run-rate."""
        f = self.forecaster
        model = None
        if f is not None and rule.period == "monthly":
            chosen = [s for s in f.days if covers(rule, s)]
            model = f.model(chosen, now - now % DAY_MS)
        if model is None:
            elapsed = Decimal(max(now - start_ms, self.size_ms))
            linear = project(None, spent, start_ms, start_ms + int(elapsed), end_ms,
                             self.config)
            exhausts = now if spent >= rule.amount else \
                start_ms + int(rule.amount / (spent / elapsed))
            return linear, exhausts
        projection = project(model, spent, start_ms, now, end_ms, self.config)
        exhausts = now if spent >= rule.amount else exhausts_at(model, spent, rule.amount, now)
        return projection, exhausts

    def _alert(self, rid: str, rule: BudgetRule, start_ms: int, spent: Decimal,
               level: str) -> Alert:
        end_ms = period_bounds(rule.period, start_ms)[1]
        now = min(self.clock_ms, end_ms)
        rate = spent / Decimal(max(now - start_ms, self.size_ms))  # per ms of event time
        p, exhausts = self._projection(rule, start_ms, now, end_ms, spent)
        projected = p.expected
        label = period_label(rule.period, start_ms)
        who = rule_owner(rule)
        cur = self.currency
        hourly = money(rate * 3_600_000, cur)
        if p.method == "seasonal":
            pace = (f"On its forecast (weekday pattern and trend of the last "
                    f"{p.history_days} days)")
            band = (f"; {pct(self.config.forecast_band)} band {money(p.low, cur)} to "
                    f"{money(p.high, cur)}")
        else:
            pace, band = f"At this rate ({hourly}/h)", ""
        if level == "hard":
            text = (f"{who} has used up its {money(rule.amount, cur)} {rule.period} budget for "
                    f"{label}: {money(spent, cur)} spent ({pct(spent / rule.amount)}) by "
                    f"{clock(now)}. {pace} it will have spent "
                    f"{money(projected, cur)} ({pct(projected / rule.amount)}{band}) by the "
                    f"end of the period.")
        else:
            when = dt(exhausts).strftime("%Y-%m-%d")
            runs_out = (f"runs out on {when}, before the period ends" if exhausts < end_ms
                        else f"would run out on {when}, after the period ends "
                             f"({pct(projected / rule.amount)} of it spent by then{band})")
            text = (f"{who} has spent {money(spent, cur)} of its {money(rule.amount, cur)} "
                    f"{rule.period} budget for {label} ({pct(spent / rule.amount)}). "
                    f"{pace} the {rule.period} budget {runs_out}.")
        threshold = rule.amount if level == "hard" else rule.amount * rule.soft_share
        details = {"period_start": iso(start_ms), "period_end": iso(end_ms),
                   "budget": str(rule.amount), "spent_share": str(dec(spent / rule.amount)),
                   "burn_rate_per_hour": str(dec(rate * 3_600_000)),
                   "projected_spend": str(dec(projected)),
                   "exhausts_on": dt(exhausts).strftime("%Y-%m-%d"),
                   "forecast": p.method if p.method == "seasonal" else
                   "linear run-rate" + (" (daily budget)" if rule.period == "daily" else
                                        f" (under {self.config.forecast_min_days} complete "
                                        f"days of history)")}
        if p.method == "seasonal":
            details |= {"projected_low": str(dec(p.low)), "projected_high": str(dec(p.high)),
                        "forecast_history_days": str(p.history_days)}
        return Alert(
            alert_id=f"budget_{level}:{rid}:{label}", kind=KINDS[level],
            status="firing", severity="critical" if level == "hard" else "warning",
            subject=rule_subject(rule), observed=spent, expected=dec(projected),
            threshold=threshold,
            unit=cur, window_start=dt(start_ms), window_end=dt(now), occurred_at=dt(now),
            message=text, details=details)

    def _resolve_ended(self) -> list[Alert]:
        alerts = []
        for (rid, start_ms), state in sorted(self.fired.items()):
            rule = self.rules.get(rid)
            if rule is None or state.get("resolved"):
                continue
            end_ms = period_bounds(rule.period, start_ms)[1]
            if self.clock_ms < end_ms + self.size_ms:
                continue
            state["resolved"] = True
            spent = self.spent(rule, start_ms)
            label = period_label(rule.period, start_ms)
            for level in ("soft", "hard"):
                if not state.get(level):
                    continue
                threshold = rule.amount if level == "hard" else rule.amount * rule.soft_share
                alerts.append(Alert(
                    alert_id=f"budget_{level}:{rid}:{label}", kind=KINDS[level],
                    status="resolved", severity="critical" if level == "hard" else "warning",
                    subject=rule_subject(rule),
                    observed=spent, threshold=threshold, unit=self.currency,
                    window_start=dt(start_ms), window_end=dt(end_ms), occurred_at=dt(end_ms),
                    message=(f"Resolved: the {rule.period} budget period {label} of "
                             f"{rule_owner(rule)} has ended with "
                             f"{money(spent, self.currency)} spent of "
                             f"{money(rule.amount, self.currency)} "
                             f"({pct(spent / rule.amount)})."),
                    details={"period_start": iso(start_ms), "period_end": iso(end_ms),
                             "budget": str(rule.amount)}))
        return alerts

    def _prune(self) -> None:
        horizon = self.clock_ms - self.horizon_ms
        for key, series in list(self.windows.items()):
            for start in [s for s in series if s + self.size_ms < horizon]:
                del series[start]
            if not series:
                del self.windows[key]
        for key in [k for k in self.totals if period_bounds(k[1], k[2])[1] < horizon]:
            del self.totals[key]
        for key, state in list(self.fired.items()):
            rule = self.rules.get(key[0])
            # A rule unknown now may come back from the budgets topic after a restart:
            # keep what it fired until no period could still be open (a month).
            if (rule is None and key[1] < horizon - UNKNOWN_RULE_KEEP_MS) or (
                    rule is not None and state.get("resolved")
                    and period_bounds(rule.period, key[1])[1] < horizon):
                del self.fired[key]

    # -- persistence ------------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        return {"clock_ms": self.clock_ms,
                "windows": [[*key, [[start, rev, str(spend)]
                                    for start, (rev, spend) in series.items()]]
                            for key, series in self.windows.items()],
                "totals": [[*key, p, s, str(v)] for (key, p, s), v in self.totals.items()],
                "fired": [[r, s, state] for (r, s), state in self.fired.items()]}

    def load(self, data: dict[str, Any]) -> None:
        self.clock_ms = int(data.get("clock_ms", 0))
        # State saved before dimension budgets named (team, workflow) only.
        self.windows = {_series(item[:-1]): {int(start): (int(rev), Decimal(spend))
                                             for start, rev, spend in item[-1]}
                        for item in data.get("windows", [])}
        self.totals = {(_series(item[:-3]), item[-3], int(item[-2])): Decimal(item[-1])
                       for item in data.get("totals", [])}
        self.fired = {(r, int(s)): dict(state) for r, s, state in data.get("fired", [])}


def _series(names: list[str]) -> Series:
    team, workflow, dimension, value = (*names, "", "")[:4]
    return (team, workflow, dimension, value)
