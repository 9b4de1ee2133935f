"""Labelled benchmark of the alert detectors: ``python -m loadtest.alerts_benchmark``.

Every scenario generates many seeded synthetic series (one team, or one task type, per
series) with realistic noise, injects anomalies whose windows are recorded as labels,
feeds the rows window by window through one ``AlertEngine`` (all series at once, as in
production) and scores the firing alerts against the labels:

- an injected episode is *detected* when a firing alert of its kind names its series
  while it lasts (or within a short grace after, for the smoothed detectors);
- any other firing alert of that kind is a *false alarm*;
- the delay is the first matching alert's window minus the episode's first window.

Noise: Poisson call counts around a diurnal cycle, lognormal per-call cost and tokens
(summed per window with the Fenton-Wilkinson approximation), binomial retries and
acceptances, permanent level steps and short bumps that are *not* anomalies, and
series that work in bursts with idle gaps.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from schemas.outputs import ALL_MODELS, Alert, CostPerOutcomeWindow
from streams.core import cells as cf
from streams.core.alerts import AlertConfig, AlertEngine, BudgetRule
from streams.core.money import from_atto, to_atto
from streams.core.rollup import CostBucket, ModelMix

MINUTE = 60_000
DAY = 1440  # windows
T0 = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000)


# -- random figures -------------------------------------------------------------------------
def log_uniform(rnd: random.Random, low: float, high: float) -> float:
    return math.exp(rnd.uniform(math.log(low), math.log(high)))


def poisson(rnd: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 40:
        return max(0, round(rnd.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rnd.random()
    while p > limit:
        k += 1
        p *= rnd.random()
    return k


def binomial(rnd: random.Random, n: int, p: float) -> int:
    if n <= 60:
        return sum(rnd.random() < p for _ in range(n))
    return min(n, max(0, round(rnd.gauss(n * p, math.sqrt(n * p * (1 - p))))))


def sum_factor(rnd: random.Random, cv: float, n: int) -> float:
    """Sum of n lognormal draws of mean 1 and coefficient of variation ``cv``, divided by n
    (Fenton-Wilkinson: the sum is close to a lognormal with the matched moments)."""
    if n <= 0:
        return 0.0
    s2 = math.log(1 + cv * cv / n)
    return rnd.lognormvariate(-s2 / 2, math.sqrt(s2))


def diurnal(t: int, amplitude: float, phase: float) -> float:
    return 1 + amplitude * math.sin(2 * math.pi * t / DAY + phase)


def steps(rnd: random.Random, length: int, count: int, low: float, high: float) -> list[float]:
    """A piecewise-constant multiplier with ``count`` permanent steps."""
    level, out = 1.0, [1.0] * length
    for at in sorted(rnd.randrange(60, length) for _ in range(count)):
        level *= rnd.uniform(low, high)
        for t in range(at, length):
            out[t] = level
    return out


def episodes(rnd: random.Random, length: int, count: int, durations: tuple[int, int],
             earliest: int) -> list[tuple[int, int]]:
    """``count`` non-overlapping [start, end] spans, with room around each."""
    found: list[tuple[int, int]] = []
    for _ in range(count * 20):
        if len(found) == count:
            break
        d = rnd.randint(*durations)
        s = rnd.randrange(earliest, length - d - 5)
        if all(s > e + 30 or s + d + 30 < b for b, e in found):
            found.append((s, s + d - 1))
    return sorted(found)


# -- rows -------------------------------------------------------------------------------------
def row(t: int, team: str, workflow: str = "wf", model: str = ALL_MODELS, agent: str = "",
        final: bool = True, revision: int = 1, size_windows: int = 1,
        **figures: Any) -> CostPerOutcomeWindow:
    start = T0 + t * MINUTE
    size = size_windows * MINUTE
    values: dict[str, Any] = {
        "window_id": f"{size // 1000}:{start}:{team}:{workflow}:{model}:{agent}",
        "window_start": datetime.fromtimestamp(start / 1000, UTC),
        "window_end": datetime.fromtimestamp((start + size) / 1000, UTC),
        "window_seconds": size // 1000, "team": team, "workflow": workflow, "model": model,
        "agent": agent, "revision": revision, "final": final, "currency": "USD",
        # the detectors tell rows apart by scope (model_construct skips the defaults' logic)
        "scope": "agent" if agent else "total" if model == ALL_MODELS else "model"}
    values.update(figures)
    return CostPerOutcomeWindow.model_construct(**values)


def money(x: float) -> Decimal:
    return Decimal(f"{x:.9f}")


# -- labels and scoring -------------------------------------------------------------------------
@dataclass(frozen=True)
class Label:
    kind: str
    series: str
    start: int
    end: int
    tag: str = ""


@dataclass
class Scenario:
    """Rows (and mix) per window, with labels; ``windows`` counts judged series-windows."""

    name: str
    kinds: tuple[str, ...]
    length: int
    rows: Callable[[int], list[CostPerOutcomeWindow]]
    labels: list[Label]
    windows: int
    grace: int = 0
    running: Callable[[int], list[CostPerOutcomeWindow]] = lambda t: []
    mix: Callable[[int], list[ModelMix]] = lambda t: []
    histograms: Callable[[int], list[CostBucket]] = lambda t: []
    config: AlertConfig = field(default_factory=AlertConfig)
    unit: str = "windows"


@dataclass
class Score:
    kind: str
    injected: int = 0
    detected: int = 0
    false_alarms: int = 0
    windows: int = 0
    delays: list[int] = field(default_factory=list)
    by_tag: dict[str, list[int]] = field(default_factory=dict)  # tag -> [injected, detected]
    unit: str = "windows"

    @property
    def rate(self) -> float:
        return self.detected / self.injected if self.injected else float("nan")

    @property
    def fa_per_1000(self) -> float:
        return 1000 * self.false_alarms / self.windows if self.windows else float("nan")

    @property
    def median_delay(self) -> float:
        return statistics.median(self.delays) if self.delays else float("nan")


def series_of(alert: Alert) -> str:
    return alert.subject.get("team") or alert.subject.get("task_type", "")


def run(scenario: Scenario) -> tuple[list[Score], list[tuple[int, Alert]]]:
    engine = AlertEngine(scenario.config, "USD")
    fired: list[tuple[int, Alert]] = []
    for t in range(scenario.length):
        for alert in engine.observe(scenario.running(t), scenario.rows(t), scenario.mix(t), 0,
                                    lambda t=t: scenario.histograms(t)):
            if alert.status == "firing":
                fired.append((t, alert))
    return score(scenario, fired), fired


def score(scenario: Scenario, fired: list[tuple[int, Alert]]) -> list[Score]:
    scores = []
    for kind in scenario.kinds:
        s = Score(kind, windows=scenario.windows, unit=scenario.unit)
        labels = [lb for lb in scenario.labels if lb.kind == kind]
        first: dict[Label, int] = {}
        for t, alert in fired:
            if alert.kind != kind:
                continue
            hit = [lb for lb in labels if lb.series == series_of(alert)
                   and lb.start <= t <= lb.end + scenario.grace]
            if not hit:
                s.false_alarms += 1
            for lb in hit:
                first.setdefault(lb, t)
        for lb in labels:
            s.injected += 1
            tag = s.by_tag.setdefault(lb.tag, [0, 0])
            tag[0] += 1
            if lb in first:
                s.detected += 1
                tag[1] += 1
                s.delays.append(first[lb] - lb.start)
        scores.append(s)
    return scores


# -- scenarios ------------------------------------------------------------------------------------
def spikes_scenario(series: int, length: int, seed: int) -> Scenario:
    """Spend and token spikes. Per series: 25-400 calls a minute around a diurnal cycle,
    per-call cost CV 0.6-3 (heavy tails), level steps ×0.5-1.6 and bumps ×1.2-1.6 (not
    anomalies); a quarter of the series work in bursts (active 20-120 min, idle
    30-300 min). Injected for 1-10 windows, a third each at ×2-3, ×3-5 and ×5-12:
    runaway volume (a spend and a token spike) or price (a spend spike only)."""
    table: dict[int, list[CostPerOutcomeWindow]] = {}
    labels: list[Label] = []
    for i in range(series):
        rnd = random.Random(seed * 1000 + i)
        team = f"team{i:03d}"
        lam = log_uniform(rnd, 25, 400)
        amp, phase = rnd.uniform(0.2, 0.7), rnd.uniform(0, 2 * math.pi)
        cost, cv_cost = log_uniform(rnd, 0.002, 0.05), rnd.uniform(0.6, 3.0)
        tokens, cv_tok = log_uniform(rnd, 500, 5000), rnd.uniform(0.5, 1.0)
        level = steps(rnd, length, rnd.randint(1, 3), 0.5, 1.6)
        active = [True] * length
        if rnd.random() < 0.25:
            t, on = 0, True
            while t < length:
                span = rnd.randint(20, 120) if on else rnd.randint(30, 300)
                for k in range(t, min(length, t + span)):
                    active[k] = on
                t, on = t + span, not on
        volume, price = [1.0] * length, [1.0] * length
        for s, e in episodes(rnd, length, 3, (1, 10), 150):
            kind = "volume" if rnd.random() < 0.6 else "price"
            m = rnd.choice((rnd.uniform(2, 3), rnd.uniform(3, 5), rnd.uniform(5, 12)))
            for t in range(s, e + 1):
                (volume if kind == "volume" else price)[t] = m
                active[t] = True
            tag = f"{kind} ×{'2-3' if m < 3 else '3-5' if m < 5 else '5-12'}"
            labels.append(Label("spend_spike", team, s, e, tag))
            if kind == "volume":
                labels.append(Label("token_spike", team, s, e, tag))
        for s, e in episodes(rnd, length, 3, (1, 5), 100):
            m = rnd.uniform(1.2, 1.6)
            for t in range(s, e + 1):
                if volume[t] == 1.0:
                    volume[t] = m
        for t in range(length):
            if not active[t]:
                continue
            n = poisson(rnd, lam * diurnal(t, amp, phase) * level[t] * volume[t])
            if n == 0:
                continue
            spend = money(n * cost * price[t] * sum_factor(rnd, cv_cost, n))
            tok = round(n * tokens * sum_factor(rnd, cv_tok, n))
            figures = {"calls": n, "spend": spend, "input_tokens": tok * 4 // 5,
                       "output_tokens": tok - tok * 4 // 5}
            table.setdefault(t, []).extend([
                row(t, team, **figures), row(t, team, model="model-a", **figures),
                row(t, team, agent="agent-a", **figures)])
    return Scenario("spikes", ("spend_spike", "token_spike"), length,
                    lambda t: table.get(t, []), labels, windows=series * length)


def retry_scenario(series: int, length: int, seed: int) -> Scenario:
    """Retry storms. 20-300 calls a minute, usual retry share 0.5-12%, elevated periods at
    12-18% (not storms); injected storms at 35-80% for 2-15 windows."""
    table: dict[int, list[CostPerOutcomeWindow]] = {}
    labels: list[Label] = []
    for i in range(series):
        rnd = random.Random(seed * 1000 + i)
        team = f"team{i:03d}"
        lam, p0 = log_uniform(rnd, 20, 300), rnd.uniform(0.005, 0.12)
        amp, phase = rnd.uniform(0.2, 0.7), rnd.uniform(0, 2 * math.pi)
        share = [p0] * length
        for s, e in episodes(rnd, length, 2, (10, 60), 60):
            for t in range(s, e + 1):
                share[t] = rnd.uniform(0.12, 0.18)
        for s, e in episodes(rnd, length, 3, (2, 15), 60):
            p = rnd.uniform(0.35, 0.8)
            for t in range(s, e + 1):
                share[t] = p
            labels.append(Label("retry_storm", team, s, e))
        for t in range(length):
            n = poisson(rnd, lam * diurnal(t, amp, phase))
            if n:
                table.setdefault(t, []).append(
                    row(t, team, calls=n, retries=binomial(rnd, n, share[t]),
                        spend=money(n * 0.01)))
    return Scenario("retry storm", ("retry_storm",), length, lambda t: table.get(t, []),
                    labels, windows=series * length)


def bloat_scenario(series: int, length: int, seed: int) -> Scenario:
    """Context bloat. 3-200 calls a minute; usual context share 15-60% (a fifth of the
    series sit at 60-66%, just under the threshold); injected: share 75-95% for
    60-400 windows."""
    table: dict[int, list[CostPerOutcomeWindow]] = {}
    labels: list[Label] = []
    for i in range(series):
        rnd = random.Random(seed * 1000 + i)
        team = f"team{i:03d}"
        lam = log_uniform(rnd, 3, 200)
        s0 = rnd.uniform(0.6, 0.66) if rnd.random() < 0.2 else rnd.uniform(0.15, 0.6)
        share = [s0] * length
        for s, e in episodes(rnd, length, 1, (60, 400), 100):
            v = rnd.uniform(0.75, 0.95)
            for t in range(s, e + 1):
                share[t] = v
            labels.append(Label("context_bloat", team, s, e))
        for t in range(length):
            n = poisson(rnd, lam)
            if not n:
                continue
            inputs = round(n * 2000 * sum_factor(rnd, 0.8, n))
            sh = min(1.0, max(0.0, rnd.gauss(share[t], 0.15 / math.sqrt(n))))
            overhead = round(inputs * sh)
            figures = {"calls": n, "input_tokens": inputs, "overhead_tokens": overhead}
            table.setdefault(t, []).extend([row(t, team, **figures),
                                            row(t, team, model="model-a", **figures)])
    return Scenario("context bloat", ("context_bloat",), length, lambda t: table.get(t, []),
                    labels, windows=series * length, grace=5)


def sprawl_scenario(series: int, length: int, seed: int) -> Scenario:
    """Prompt sprawl. 5-200 calls a minute, system prompts of 300-3000 tokens (per-call
    CV 0.25), one step ×1.05-1.25 and a drift of up to +10% a day (not sprawl: together
    at most ×1.375, below the 1.5× growth that defines sprawl); injected: a new prompt
    ×1.7-3 for 200-600 windows."""
    table: dict[int, list[CostPerOutcomeWindow]] = {}
    labels: list[Label] = []
    for i in range(series):
        rnd = random.Random(seed * 1000 + i)
        team = f"team{i:03d}"
        lam, base = log_uniform(rnd, 5, 200), log_uniform(rnd, 300, 3000)
        drift = rnd.uniform(0, 0.1)
        size = [base * (1 + drift * t / DAY) * f
                for t, f in enumerate(steps(rnd, length, 1, 1.05, 1.25))]
        for s, e in episodes(rnd, length, 1, (200, 600), 200):
            m = rnd.uniform(1.7, 3)
            for t in range(s, e + 1):
                size[t] *= m
            labels.append(Label("prompt_sprawl", team, s, e))
        for t in range(length):
            n = poisson(rnd, lam)
            if n:
                system = round(n * size[t] * sum_factor(rnd, 0.25, n))
                table.setdefault(t, []).append(
                    row(t, team, calls=n, system_prompt_tokens=system, input_tokens=system * 3,
                        overhead_tokens=system))
    return Scenario("prompt sprawl", ("prompt_sprawl",), length, lambda t: table.get(t, []),
                    labels, windows=series * length, grace=5)


def cpo_scenario(series: int, length: int, seed: int) -> Scenario:
    """Cost per accepted outcome. 2-40 outcomes a minute around a diurnal cycle,
    acceptance 60-90%, 0.01-0.5 per outcome (per-outcome CV 0.8); volume steps
    ×0.5-1.6 and cost steps ×1.1-1.3 are not regressions. Injected for 60-400 windows:
    cost per outcome ×1.8-3, or acceptance ×0.25-0.55."""
    table: dict[int, list[CostPerOutcomeWindow]] = {}
    labels: list[Label] = []
    for i in range(series):
        rnd = random.Random(seed * 1000 + i)
        team = f"team{i:03d}"
        lam, p = log_uniform(rnd, 2, 40), rnd.uniform(0.6, 0.9)
        cost = log_uniform(rnd, 0.01, 0.5)
        amp, phase = rnd.uniform(0.2, 0.7), rnd.uniform(0, 2 * math.pi)
        volume = steps(rnd, length, 2, 0.5, 1.6)
        price = steps(rnd, length, 1, 1.1, 1.3)
        accept = [p] * length
        for s, e in episodes(rnd, length, 2, (60, 400), 300):
            kind = "cost" if rnd.random() < 0.5 else "acceptance"
            m = rnd.uniform(1.8, 3) if kind == "cost" else rnd.uniform(0.25, 0.55)
            for t in range(s, e + 1):
                if kind == "cost":
                    price[t] *= m
                else:
                    accept[t] = p * m
            labels.append(Label("cost_per_outcome_regression", team, s, e, kind))
        for t in range(length):
            n = poisson(rnd, lam * diurnal(t, amp, phase) * volume[t])
            if not n:
                continue
            spend = money(n * cost * price[t] * sum_factor(rnd, 0.8, n))
            table.setdefault(t, []).append(
                row(t, team, calls=n * 3, spend=spend, fully_loaded_cost=spend, outcomes=n,
                    accepted_outcomes=binomial(rnd, n, accept[t])))
    return Scenario("cost per outcome", ("cost_per_outcome_regression",), length,
                    lambda t: table.get(t, []), labels, windows=series * length, grace=10)


def mismatch_scenario(series: int, hours: int, seed: int) -> Scenario:
    """Model mismatch, one task type per series. A cheap model (0.002-0.02 per unit,
    acceptance 60-90%) from the start; from hour 6-30 an expensive one at ×4-15 the
    cost that is accepted about as often (-10..0 points: a mismatch), clearly more
    often (+12..+30 points: not one) or costs only ×1.5-2.5 (not one). 1-20 units an
    hour per model. One evaluation per hour; delays in hours."""
    mix_by_hour: dict[int, list[ModelMix]] = {}
    labels: list[Label] = []
    for i in range(series):
        rnd = random.Random(seed * 1000 + i)
        task = f"task{i:03d}"
        cheap, pc = log_uniform(rnd, 0.002, 0.02), rnd.uniform(0.6, 0.9)
        case = ("mismatch", "better", "close")[i % 3]
        ratio = rnd.uniform(1.5, 2.5) if case == "close" else rnd.uniform(4, 15)
        pe = min(0.99, pc + (rnd.uniform(0.12, 0.3) if case == "better"
                             else rnd.uniform(-0.1, 0.0)))
        start = rnd.randint(6, 30)
        if case == "mismatch":
            labels.append(Label("model_mismatch", task, start, hours))
        lam_c, lam_e = rnd.uniform(1, 20), rnd.uniform(1, 20)
        for h in range(hours):
            for model, lam, unit_cost, p in (("small", lam_c, cheap, pc),
                                             ("large", lam_e, cheap * ratio, pe)):
                if model == "large" and h < start:
                    continue
                n = poisson(rnd, lam)
                if n:
                    mix_by_hour.setdefault(h, []).append(ModelMix(
                        datetime.fromtimestamp((T0 + h * 3_600_000) / 1000, UTC), task, model,
                        n, binomial(rnd, n, p), money(n * unit_cost * sum_factor(rnd, 0.5, n))))

    def rows(h: int) -> list[CostPerOutcomeWindow]:
        # The event clock: one row in the last minute of each hour.
        return [row(h * 60 + 59, "clock", calls=1)]

    def mix(h: int) -> list[ModelMix]:
        return mix_by_hour.get(h - 1, []) + mix_by_hour.get(h, [])

    return Scenario("model mismatch", ("model_mismatch",), hours, rows, labels,
                    windows=series * hours, mix=mix, unit="hours")


def budget_scenario(teams: int, days: int, seed: int) -> tuple[Scenario, dict[str, Any]]:
    """Daily budgets from running rows. Each minute the running row carries half the
    minute's spend and the previous minute turns final (so an alert comes at the
    crossing minute or the next: grace 1). Budgets are 0.6-1.3× the
    expected daily spend; the truth is the minute the cumulative spend crosses."""
    length = days * DAY
    per: dict[str, list[float]] = {}
    rules = []
    labels: list[Label] = []
    for i in range(teams):
        rnd = random.Random(seed * 1000 + i)
        team = f"team{i:03d}"
        lam, cost = log_uniform(rnd, 20, 200), log_uniform(rnd, 0.002, 0.02)
        amp, phase = rnd.uniform(0.2, 0.7), rnd.uniform(0, 2 * math.pi)
        spend = [0.0] * length
        for t in range(length):
            n = poisson(rnd, lam * diurnal(t, amp, phase))
            spend[t] = round(n * cost * sum_factor(rnd, 1.0, n), 9)
        per[team] = spend
        amount = round(lam * cost * DAY * rnd.uniform(0.6, 1.3), 2)
        rules.append(BudgetRule(team=team, period="daily", amount=Decimal(str(amount))))
        for d in range(days):
            total = 0.0
            soft = hard = None
            for t in range(d * DAY, (d + 1) * DAY):
                total += spend[t]
                if soft is None and total >= 0.8 * amount:
                    soft = t
                if hard is None and total >= amount:
                    hard = t
            if soft is not None:
                labels.append(Label("budget_soft", team, soft, soft if hard is None else hard))
            if hard is not None:
                labels.append(Label("budget_hard", team, hard, (d + 1) * DAY - 1))

    def running(t: int) -> list[CostPerOutcomeWindow]:
        return [row(t, team, final=False, spend=money(s[t] / 2)) for team, s in per.items()]

    def finals(t: int) -> list[CostPerOutcomeWindow]:
        return [row(t - 1, team, revision=2, spend=money(s[t - 1]))
                for team, s in per.items() if t > 0]

    scenario = Scenario("daily budgets", ("budget_soft", "budget_hard"), length, finals, labels,
                        windows=teams * length, running=running, grace=1,
                        config=AlertConfig(budgets=tuple(rules)))
    return scenario, {"rules": rules}


def monthly_forecast(teams: int, seed: int) -> dict[str, float]:
    """Forecast accuracy of ``exhausts_on``: monthly budgets over December, spend growing
    0-60% through the month, one row per half hour; the soft alert's forecast date
    against the day the budget actually ran out."""
    errors: list[float] = []
    alerted = exhausted = 0
    step = 30
    for i in range(teams):
        rnd = random.Random(seed * 1000 + i)
        team = f"team{i:03d}"
        rate, growth = log_uniform(rnd, 0.5, 5), rnd.uniform(0, 0.6)
        slots = 31 * DAY // step
        spend = [rate * step * (1 + growth * k / slots) * rnd.lognormvariate(-0.02, 0.2)
                 for k in range(slots)]
        amount = round(sum(spend) * rnd.uniform(0.8, 1.1), 2)
        engine = AlertEngine(AlertConfig(budgets=(
            BudgetRule(team=team, period="monthly", amount=Decimal(str(amount))),)), "USD")
        forecast = actual = None
        total = 0.0
        for k, s in enumerate(spend):
            total += s
            if actual is None and total >= amount:
                actual = T0 + k * step * MINUTE
            for alert in engine.observe([], [row(k * step, team, spend=money(s))], [], 0):
                if alert.kind == "budget_soft" and alert.status == "firing":
                    forecast = alert.details["exhausts_on"]
        alerted += forecast is not None
        if forecast is not None and actual is not None:
            exhausted += 1
            day = datetime.strptime(forecast, "%Y-%m-%d").replace(tzinfo=UTC)
            actual_day = datetime.fromtimestamp(actual / 1000, UTC).replace(
                hour=0, minute=0, second=0, microsecond=0)
            errors.append(abs((day - actual_day).days))
    return {"teams": teams, "soft_alerts": alerted, "exhausted": exhausted,
            "median_abs_error_days": statistics.median(errors) if errors else float("nan"),
            "max_abs_error_days": max(errors) if errors else float("nan")}


NORMAL = statistics.NormalDist()


def acceptance(q: float, low: float, top: float, knee: float, drop: float) -> float:
    """Chance a unit of cost rank ``q`` is accepted: rising from ``low`` to ``top`` up to
    the knee, then falling by ``drop`` to the dearest unit."""
    p = low + (top - low) * q / knee if q <= knee else top - drop * (q - knee) / (1 - knee)
    return min(0.98, max(0.02, p))


def plateau_scenario(series: int, days: int, seed: int) -> Scenario:
    """Spend plateaus, one workflow (and team) per series, judged at each midnight.

    Units a day: 150-3000 (weekends ×0.6), cost lognormal around a median of
    0.005-0.5 that drifts ×0.9-1.1 a day, spread σ 0.6-1.3 (the dearest decile costs
    2.2-5.3× the median). The chance a unit is accepted depends on its cost rank q:

    - *plateau* (labelled, 40%): it rises by 10-30 points up to a knee at q 0.3-0.55,
      then stays flat or falls by up to 6 points (long runs that struggle);
    - *rising* (30%): it rises linearly with q all the way, so the top 20% beat the
      middle units by 8-25 points (the lower end is hard: near the 5-point margin);
    - *narrow* (15%): a plateau, but σ 0.1-0.3: the dearest units cost under 2× the
      median, so it is not one by definition;
    - *small* (15%): a plateau with 3-25 units a day, too few to judge.
    """
    labels: list[Label] = []
    per_day: dict[int, list[CostBucket]] = {}
    judged = 0
    for i in range(series):
        rnd = random.Random(seed * 1000 + i)
        team = f"wf{i:03d}"
        case = ("plateau", "plateau", "rising", "plateau", "rising", "narrow", "plateau",
                "rising", "small", "plateau", "rising", "plateau", "narrow", "rising",
                "plateau", "small", "plateau", "rising", "narrow", "small")[i % 20]
        units = log_uniform(rnd, 3, 25) if case == "small" else log_uniform(rnd, 150, 3000)
        sigma = rnd.uniform(0.1, 0.3) if case == "narrow" else rnd.uniform(0.6, 1.3)
        median = log_uniform(rnd, 0.005, 0.5)
        top = rnd.uniform(0.5, 0.9)
        if case == "rising":
            gain = rnd.uniform(0.08, 0.25)  # top 20% (mean q 0.9) against q 0.5
            low = top - gain / 0.4
            knee, drop = 1.0, 0.0
        else:
            low, knee, drop = top - rnd.uniform(0.1, 0.3), rnd.uniform(0.3, 0.55), \
                rnd.uniform(0, 0.06)
        tag = case if case != "plateau" else ("plateau <500/day" if units < 500
                                              else "plateau ≥500/day")
        if case == "plateau":
            labels.append(Label("spend_plateau", team, 0, days, tag))
        else:
            judged += days

        for d in range(days):
            weekday = (d + 3) % 7  # 2026-12-01 is a Tuesday
            n = poisson(rnd, units * (0.6 if weekday >= 5 else 1.0))
            day_median = median * rnd.uniform(0.9, 1.1)
            cells: dict[int, list[int]] = {}
            for _ in range(n):
                z = rnd.gauss(0, 1)
                p = acceptance(NORMAL.cdf(z), low, top, knee, drop)
                cost = to_atto(Decimal(f"{day_median * math.exp(sigma * z):.9f}"))
                cell = cells.setdefault(cf.cost_bucket(cost), [0, 0, 0])
                cell[0] += 1
                cell[1] += rnd.random() < p
                cell[2] += cost
            when = datetime.fromtimestamp((T0 + d * DAY * MINUTE) / 1000, UTC)
            per_day.setdefault(d, []).extend(
                CostBucket(when, team, "wf", b, k, a, from_atto(c))
                for b, (k, a, c) in sorted(cells.items()))

    def rows(d: int) -> list[CostPerOutcomeWindow]:
        # The event clock: the day's last minute turns final, crossing midnight.
        return [row(d * DAY + DAY - 1, "clock", calls=1)]

    def histograms(d: int) -> list[CostBucket]:
        return [b for k in range(max(0, d - 7), d + 1) for b in per_day.get(k, [])]

    return Scenario("spend plateau", ("spend_plateau",), days, rows, labels, windows=judged,
                    histograms=histograms, unit="days")


def forecast_backtest(series: int, seed: int) -> dict[str, Any]:
    """Month-end forecasts on generated daily spend with trend and weekly seasonality.

    Per series (one team and workflow, with a monthly budget): 20-2,000 a day from
    2026-09-01, growing -20..+60% a month, a weekday pattern (weekends ×0.2-0.8 for
    three series in four, none for the rest), lognormal day noise σ 0.05-0.3 and a
    spike day (×2-4) one day in fifty; fed through ``AlertEngine`` as four final rows a
    day. As of the end of days 7, 14 and 21 of November to February, ``forecasts()``'s
    month-end spend against the actual one, and the linear run-rate's; each budget
    (0.8-1.1× the month's actual spend) against the day it actually ran out.
    """
    first = int(datetime(2026, 9, 1, tzinfo=UTC).timestamp() * 1000)
    months = [(2026, 11), (2026, 12), (2027, 1), (2027, 2)]
    end = int(datetime(2027, 3, 1, tzinfo=UTC).timestamp() * 1000)
    n_days = (end - first) // (DAY * MINUTE)
    spend: dict[str, list[float]] = {}
    for i in range(series):
        rnd = random.Random(seed * 1000 + i)
        base, growth = log_uniform(rnd, 20, 2000), rnd.uniform(-0.2, 0.6)
        weekly = [rnd.uniform(0.9, 1.1) for _ in range(5)] + [rnd.uniform(0.2, 0.8)
                                                              for _ in range(2)]
        if i % 4 == 3:
            weekly = [1.0] * 7
        noise = rnd.uniform(0.05, 0.3)
        days = []
        for d in range(n_days):
            wd = (d + 1) % 7  # 2026-09-01 is a Tuesday (Monday 0)
            spike = rnd.uniform(2, 4) if rnd.random() < 0.02 else 1.0
            days.append(base * math.exp(math.log(1 + growth) * d / 30) * weekly[wd]
                        * rnd.lognormvariate(-noise * noise / 2, noise) * spike)
        spend[f"team{i:03d}"] = days
    month_bounds = []
    for year, month in months:
        start = int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
        stop = int(datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
                   .timestamp() * 1000)
        month_bounds.append((start, stop))
    day_ms = DAY * MINUTE

    def day_index(ms: int) -> int:
        return (ms - first) // day_ms

    errors: dict[int, list[float]] = {7: [], 14: [], 21: []}
    linear: dict[int, list[float]] = {7: [], 14: [], 21: []}
    covered: dict[int, list[bool]] = {7: [], 14: [], 21: []}
    widths: dict[int, list[float]] = {7: [], 14: [], 21: []}
    exhaust_errors: list[int] = []
    exhaust_linear: list[int] = []
    methods: list[str] = []
    for start, stop in month_bounds:
        lo, hi = day_index(start), day_index(stop)
        rules = []
        actual_month = {team: sum(days[lo:hi]) for team, days in spend.items()}
        amounts = {}
        for k, team in enumerate(sorted(spend)):
            rnd = random.Random(seed * 7919 + k * 31 + lo)
            amounts[team] = round(actual_month[team] * rnd.uniform(0.8, 1.1), 2)
            rules.append(BudgetRule(team=team, period="monthly",
                                    amount=Decimal(str(amounts[team]))))
        engine = AlertEngine(AlertConfig(budgets=tuple(rules)), "USD")
        # history: eight weeks and a day before the month (the first day is partial)
        begin = lo - 57
        for d in range(begin, hi):
            for quarter in range(4):
                t = (first - T0) // MINUTE + d * DAY + (quarter + 1) * 360 - 1
                rows = [row(t, team, spend=money(days[d] / 4)) for team, days in spend.items()]
                for alert in engine.observe([], rows, [], 0):
                    if alert.kind != "budget_soft" or alert.status != "firing" \
                            or alert.window_start.timestamp() * 1000 != start:
                        continue  # the history's months have budgets too: not judged
                    team = alert.subject["team"]
                    methods.append(alert.details["forecast"])
                    cumulative, ran_out = 0.0, None
                    for k in range(lo, hi):
                        cumulative += spend[team][k]
                        if ran_out is None and cumulative >= amounts[team]:
                            ran_out = k - lo
                    if ran_out is None:
                        continue  # an amount above the month's spend: never runs out
                    said = datetime.strptime(alert.details["exhausts_on"], "%Y-%m-%d")
                    exhaust_errors.append(abs(said.day - 1 - ran_out)
                                          if said.month == datetime.fromtimestamp(
                                              start / 1000, UTC).month else 99)
                    now = int(alert.window_end.timestamp() * 1000)
                    rate = float(alert.observed) / (now - start)
                    at = start + float(amounts[team]) / rate
                    exhaust_linear.append(abs(int((at - start) // day_ms) - ran_out))
            day_of_month = d - lo + 1
            if day_of_month in errors:
                for f in engine.forecasts():
                    if set(f.subject) != {"team", "workflow"}:
                        continue
                    actual = actual_month[f.subject["team"]]
                    p = f.projection
                    errors[day_of_month].append(abs(float(p.expected) - actual) / actual)
                    run_rate = float(p.spent) * (hi - lo) / day_of_month
                    linear[day_of_month].append(abs(run_rate - actual) / actual)
                    covered[day_of_month].append(float(p.low) <= actual <= float(p.high))
                    widths[day_of_month].append(float(p.high - p.low) / float(p.expected))
                    methods.append(p.method)
    return {
        "series": series, "months": len(months),
        "mape": {k: statistics.mean(v) for k, v in errors.items()},
        "linear_mape": {k: statistics.mean(v) for k, v in linear.items()},
        "coverage": {k: statistics.mean(v) for k, v in covered.items()},
        "width": {k: statistics.median(v) for k, v in widths.items()},
        "exhausts": len(exhaust_errors),
        "exhausts_median_error": statistics.median(exhaust_errors) if exhaust_errors else 0,
        "exhausts_within_1": statistics.mean(e <= 1 for e in exhaust_errors)
        if exhaust_errors else 0,
        "linear_exhausts_median_error": statistics.median(exhaust_linear)
        if exhaust_linear else 0,
        "linear_exhausts_within_1": statistics.mean(e <= 1 for e in exhaust_linear)
        if exhaust_linear else 0,
        "seasonal_share": statistics.mean(m == "seasonal" for m in methods)}


# -- report ------------------------------------------------------------------------------------
def scenarios(scale: float, seed: int) -> Iterator[Scenario]:
    n = max(3, round(40 * scale))
    yield spikes_scenario(n, 2 * DAY, seed)
    yield retry_scenario(n, DAY, seed)
    yield bloat_scenario(n, DAY, seed)
    yield sprawl_scenario(n, DAY, seed)
    yield cpo_scenario(n, 2 * DAY, seed)
    yield mismatch_scenario(max(3, round(60 * scale)), 72, seed)
    yield budget_scenario(max(2, round(8 * scale)), 3, seed)[0]
    yield plateau_scenario(max(20, round(40 * scale)), 21, seed)


def table(scores: list[Score]) -> list[str]:
    lines = ["| detector | injected | detected | detection rate | false alarms | "
             "per 1000 windows | median delay |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    short = {"hours": "h", "days": "days"}
    for s in scores:
        unit = short.get(s.unit, "windows")
        per = f" (per 1000 {unit})" if s.unit in short else ""
        lines.append(f"| {s.kind} | {s.injected} | {s.detected} | {s.rate:.1%} | "
                     f"{s.false_alarms} in {s.windows:,} {unit} | "
                     f"{s.fa_per_1000:.2f}{per} | {s.median_delay:g} {unit} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="series per scenario ×")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    scores: list[Score] = []
    for scenario in scenarios(args.scale, args.seed):
        t = time.perf_counter()
        found, _ = run(scenario)
        scores.extend(found)
        print(f"# {scenario.name}: {scenario.windows} series-{scenario.unit} in "
              f"{time.perf_counter() - t:.1f} s")
        for s in found:
            tags = ", ".join(f"{tag}: {d}/{n}" for tag, (n, d) in sorted(s.by_tag.items())
                             if tag)
            if tags:
                print(f"#   {s.kind} detected by kind: {tags}")
    print()
    print("\n".join(table(scores)))
    forecast = monthly_forecast(max(3, round(20 * args.scale)), args.seed)
    print()
    print(f"Monthly budget forecast: {forecast['soft_alerts']} soft alerts over "
          f"{forecast['teams']} teams; where the budget ran out ({forecast['exhausted']}), "
          f"exhausts_on was off by a median of {forecast['median_abs_error_days']:g} days "
          f"(max {forecast['max_abs_error_days']:g}).")
    backtest = forecast_backtest(max(8, round(40 * args.scale)), args.seed)
    print(f"\nMonth-end forecast backtest ({backtest['series']} series × "
          f"{backtest['months']} months, trend and weekly seasonality; "
          f"{backtest['seasonal_share']:.0%} of projections from the seasonal model):")
    print("| as of day | MAPE, forecast | MAPE, linear run-rate | band coverage | "
          "median band width |")
    print("|---:|---:|---:|---:|---:|")
    for k in (7, 14, 21):
        print(f"| {k} | {backtest['mape'][k]:.1%} | {backtest['linear_mape'][k]:.1%} | "
              f"{backtest['coverage'][k]:.0%} | {backtest['width'][k]:.0%} |")
    print(f"Monthly budgets run out ({backtest['exhausts']}): the soft alert's exhausts_on "
          f"was off by a median of {backtest['exhausts_median_error']:g} days, within a "
          f"day {backtest['exhausts_within_1']:.0%} of the time (the linear run-rate: "
          f"{backtest['linear_exhausts_median_error']:g} days, "
          f"{backtest['linear_exhausts_within_1']:.0%}).")
    print(f"\nTotal {time.perf_counter() - started:.1f} s (seed {args.seed}, "
          f"scale {args.scale:g})")


if __name__ == "__main__":
    main()
