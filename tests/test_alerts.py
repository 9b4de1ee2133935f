"""The alert detectors, driven through ``AlertEngine.observe`` with constructed window rows.

Series are synthetic with a known answer: a seeded noisy baseline and an injected
anomaly at a known window. Minute windows start at ``T0`` (2026-12-01 00:00 UTC).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from schemas.errors import StateError
from schemas.outputs import Alert, CostPerOutcomeWindow
from streams.core import cells as cf
from streams.core.alerts import AlertConfig, AlertEngine, BudgetRule
from streams.core.money import ATTO
from streams.core.rollup import ModelMix, WindowRollup
from streams.core.windows import Outbox

MINUTE = 60_000
HOUR = 3_600_000
T0 = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000)


def iso(minute: int) -> str:
    return datetime.fromtimestamp((T0 + minute * MINUTE) / 1000, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def row(minute: float, team: str = "acme", workflow: str = "support", model: str = "*",
        agent: str = "", *, final: bool = True, revision: int = 1, size: int = 60,
        calls: int = 100, spend: Any = 1, tokens: int = 10_000,
        **figures: Any) -> CostPerOutcomeWindow:
    start = T0 + int(minute * MINUTE)
    return CostPerOutcomeWindow(
        window_id=f"{size}:{start}:{team}:{workflow}:{model}:{agent}",
        window_start=datetime.fromtimestamp(start / 1000, UTC),
        window_end=datetime.fromtimestamp((start + size * 1000) / 1000, UTC),
        window_seconds=size, team=team, workflow=workflow, model=model, agent=agent,
        scope="agent" if agent else "total" if model == "*" else "model", revision=revision,
        final=final, currency="USD", calls=calls,
        spend=Decimal(str(spend)), input_tokens=tokens * 4 // 5,
        output_tokens=tokens - tokens * 4 // 5, **figures)


def totals(minute: int, **kw: Any) -> list[CostPerOutcomeWindow]:
    """A workflow's "*" row and its single model's row, with the same figures."""
    return [row(minute, **kw), row(minute, model="gpt-4o", **kw)]


def noisy(rnd: random.Random, mean: float, cv: float = 0.1) -> Decimal:
    return Decimal(f"{mean * rnd.gauss(1, cv):.6f}")


def run(engine: AlertEngine, windows: list[list[CostPerOutcomeWindow]],
        first: int = 0) -> list[tuple[int, Alert]]:
    """Each window's rows as finals, one observe per window; alerts with their window."""
    found = []
    for i, rows in enumerate(windows, start=first):
        found.extend((i, a) for a in engine.observe([], rows, [], 0))
    return found


def steady(n: int, spike: dict[int, float] | None = None, seed: int = 1,
           **kw: Any) -> list[list[CostPerOutcomeWindow]]:
    """n windows of a noisy steady workflow; ``spike`` multiplies calls, spend and tokens."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        k = (spike or {}).get(i, 1.0)
        out.append(totals(i, calls=int(100 * k), spend=noisy(rnd, k),
                          tokens=int(10_000 * k * rnd.gauss(1, 0.05)), **kw))
    return out


def kinds(alerts: list[tuple[int, Alert]]) -> list[tuple[int, str, str, str]]:
    return [(i, a.kind, a.status, a.alert_id) for i, a in alerts]


def engine(**config: Any) -> AlertEngine:
    return AlertEngine(AlertConfig(**config), "USD")


# -- spikes ------------------------------------------------------------------------------------
def test_a_spike_fires_once_per_episode_and_resolves_with_the_same_id() -> None:
    alerts = run(engine(), steady(60, {40: 5, 41: 6, 42: 5}))
    spend = [(i, a) for i, a in alerts if a.kind == "spend_spike"]
    assert [(i, a.status) for i, a in spend] == [(40, "firing"), (44, "resolved")]
    firing, resolved = spend[0][1], spend[1][1]
    assert firing.alert_id == resolved.alert_id == \
        f"spend_spike:team=acme/workflow=support:{iso(40)}"
    assert firing.subject == {"team": "acme", "workflow": "support"}
    assert firing.severity == "critical"  # ≥ 2× both the z threshold and the ratio
    assert isinstance(firing.observed, Decimal) and firing.observed > 4
    assert firing.expected is not None and Decimal("0.9") < firing.expected < Decimal("1.1")
    assert firing.threshold is not None and firing.expected * 2 <= firing.threshold
    assert firing.occurred_at == firing.window_end == datetime.fromtimestamp(
        (T0 + 41 * MINUTE) / 1000, UTC)
    assert firing.details["models"].startswith("gpt-4o (")
    assert resolved.observed == max(r[-2].spend for r in steady(60, {40: 5, 41: 6, 42: 5}))
    # The token spike of the same windows is its own episode.
    assert [(i, a.status) for i, a in alerts if a.kind == "token_spike"] == \
        [(40, "firing"), (44, "resolved")]
    assert {a.kind for _, a in alerts} == {"spend_spike", "token_spike"}


def test_no_spike_alert_during_warm_up() -> None:
    assert run(engine(alert_warmup_windows=10), steady(20, {6: 8})) == []
    assert kinds(run(engine(alert_warmup_windows=5), steady(20, {6: 8})))[0][:3] == \
        (6, "spend_spike", "firing")


def test_minimum_volume() -> None:
    windows = [totals(i, calls=15, spend=Decimal(5 if i == 30 else 1), tokens=1000)
               for i in range(40)]
    assert run(engine(), windows) == []
    assert [(i, a.kind) for i, a in run(engine(alert_min_calls=10), windows)
            if a.status == "firing"] == [(30, "spend_spike")]


def test_the_ratio_guard_ignores_a_large_z_score_of_a_small_change() -> None:
    # A perfectly steady series: σ is its floor (5% of the level), so ×1.5 is z = 10.
    windows = [totals(i, spend=Decimal("1.5") if i == 30 else Decimal(1)) for i in range(40)]
    assert run(engine(), windows) == []
    windows[30] = totals(30, spend=Decimal("2.5"))
    assert [(i, a.kind) for i, a in run(engine(), windows) if a.status == "firing"] == \
        [(30, "spend_spike")]


def test_a_token_spike_without_a_spend_spike() -> None:
    windows = [totals(i, tokens=60_000 if i == 30 else 10_000) for i in range(40)]
    assert [(i, a.kind, a.unit) for i, a in run(engine(), windows) if a.status == "firing"] \
        == [(30, "token_spike", "tokens")]


def test_model_and_agent_spikes_fold_into_their_workflow_alert() -> None:
    windows = []
    for i in range(40):
        k = 6 if i == 30 else 1
        figures = {"calls": 100 * k, "spend": k, "tokens": 10_000 * k}
        windows.append([*totals(i, **figures), row(i, agent="planner", **figures)])
    firing = [a for _, a in run(engine(), windows) if a.status == "firing"]
    assert [(a.kind, a.subject) for a in firing] == [
        ("spend_spike", {"team": "acme", "workflow": "support"}),
        ("token_spike", {"team": "acme", "workflow": "support"})]
    assert firing[0].details["models"] == "gpt-4o (6.0×)"
    assert firing[0].details["agents"] == "planner (6.0×)"


def test_a_model_spike_alone_alerts_when_the_workflow_total_is_steady() -> None:
    windows = []
    for i in range(40):
        cheap, dear = (Decimal("0.2"), Decimal("0.8")) if i == 30 else (Decimal("0.9"),
                                                                          Decimal("0.1"))
        windows.append([row(i, spend=1, calls=100),
                        row(i, model="small", spend=cheap, calls=90),
                        row(i, model="large", spend=dear, calls=10 if i != 30 else 30)])
    firing = [a for _, a in run(engine(alert_min_calls=5), windows) if a.status == "firing"]
    assert [(a.kind, a.subject.get("model")) for a in firing] == [("spend_spike", "large")]


def dimension_row(minute: float, dimension: str, value: str, *, calls: int, spend: Any,
                  team: str = "acme", workflow: str = "support") -> CostPerOutcomeWindow:
    base = row(minute, team=team, workflow=workflow, calls=calls, spend=spend,
               tokens=100 * calls)
    return base.model_copy(update={
        "scope": "dimension", "model": "", "dimension": dimension, "dimension_value": value,
        "window_id": f"{base.window_id}:dimension:{dimension}={value}"})


def test_one_customers_spike_alerts_when_the_workflow_is_steady() -> None:
    """A customer that suddenly takes most of a steady workflow, spread over two
    workflows: its own subject, summed across them; the many-valued __other__ is none."""
    windows = []
    for i in range(40):
        k = 6 if i == 30 else 1
        rows = [row(i, spend=1, calls=100), row(i, workflow="billing", spend=1, calls=100)]
        for workflow in ("support", "billing"):
            rows.append(dimension_row(i, "customer", "acme", calls=5 * k, spend=0.05 * k,
                                      workflow=workflow))
            rows.append(dimension_row(i, "customer", "__other__", calls=60 * k,
                                      spend=0.6 * k, workflow=workflow))
            rows.append(dimension_row(i, "user", "ana", calls=20, spend=0.2,
                                      workflow=workflow))
        windows.append(rows)
    firing = [a for _, a in run(engine(alert_min_calls=5), windows) if a.status == "firing"]
    assert {(a.kind, tuple(a.subject.items())) for a in firing} == {
        ("spend_spike", (("customer", "acme"),)), ("token_spike", (("customer", "acme"),))}
    assert "customer acme" in firing[0].message


def test_a_team_spike_of_many_small_workflows() -> None:
    """Each workflow is below the minimum volume; their team is not."""
    windows = []
    for i in range(40):
        k = 3 if i == 30 else 1
        windows.append([row(i, workflow=f"w{j}", calls=8, spend=k, tokens=1000 * k)
                        for j in range(4)])
    firing = [a for _, a in run(engine(), windows) if a.status == "firing"]
    assert [(a.kind, a.subject) for a in firing] == [("spend_spike", {"team": "acme"}),
                                                     ("token_spike", {"team": "acme"})]


def bursts(idle: int) -> list[list[CostPerOutcomeWindow]]:
    """Blocks of 15 active windows at a steady level separated by ``idle`` empty ones."""
    windows: list[list[CostPerOutcomeWindow]] = []
    rnd = random.Random(3)
    for _ in range(4):
        windows.extend(totals(len(windows) + i, spend=noisy(rnd, 1, 0.05)) for i in range(15))
        windows.extend([] for _ in range(idle))
    return windows


def test_long_silence_freezes_the_baseline_instead_of_counting_zeros() -> None:
    # Zeros throughout 200 idle windows would drag the level to ~0 and the next burst
    # would look like a spike; the default counts at most idle_gap_windows of them.
    assert run(engine(), bursts(idle=200)) == []
    dragged = run(engine(idle_gap_windows=1000), bursts(idle=200))
    assert [(i, a.kind) for i, a in dragged if a.status == "firing"][:1] == \
        [(215, "spend_spike")]


def test_a_short_lull_counts_as_zero() -> None:
    """A subject active every other window: a double window is normal for it."""
    rnd = random.Random(5)
    windows = [totals(i, spend=noisy(rnd, 2.2 if i == 41 else 1, 0.05)) if i % 2 else []
               for i in range(50)]
    assert run(engine(), windows) == []
    no_zeros = run(engine(idle_gap_windows=0), windows)
    assert [(i, a.kind) for i, a in no_zeros if a.status == "firing"][:1] == \
        [(41, "spend_spike")]


def test_an_outlier_the_detector_does_not_judge_barely_moves_the_baseline() -> None:
    """Window 40 is one huge call (below the volume minimum, so not judged but learnt):
    clipped to level + 3σ, it leaves the ×3 spike at window 50 plain to see."""
    windows = steady(60, {50: 3})
    windows[40] = totals(40, calls=5, spend=50)
    assert [(i, a.kind) for i, a in run(engine(), windows) if a.status == "firing"] == [
        (50, "spend_spike"), (50, "token_spike")]


def test_a_persistent_shift_becomes_the_new_normal() -> None:
    rnd = random.Random(9)
    windows = [totals(i, spend=noisy(rnd, 4 if i >= 30 else 1)) for i in range(200)]
    spend = [(i, a.status) for i, a in run(engine(), windows) if a.kind == "spend_spike"]
    assert spend[0] == (30, "firing")
    assert spend[1][1] == "resolved" and 30 + 30 < spend[1][0] < 150
    assert len(spend) == 2


def test_a_judged_window_is_not_judged_again_when_corrected() -> None:
    base = steady(40)
    once, twice = engine(), engine()
    run(once, base)
    for rows in base:
        twice.observe([], rows, [], 0)
        twice.observe([], [r.model_copy(update={"revision": 2, "spend": r.spend * 9})
                           for r in rows], [], 0)
    assert once.dump() == twice.dump()


# -- lifecycle ---------------------------------------------------------------------------------
def test_cooldown_then_a_new_episode_with_a_new_id() -> None:
    spikes = {30: 6, 40: 6, 60: 6}  # resolves at 32; 40 is within 15 min; 60 is not
    alerts = [(i, a.status, a.alert_id) for i, a in run(engine(), steady(80, spikes))
              if a.kind == "spend_spike"]
    assert alerts == [
        (30, "firing", f"spend_spike:team=acme/workflow=support:{iso(30)}"),
        (32, "resolved", f"spend_spike:team=acme/workflow=support:{iso(30)}"),
        (60, "firing", f"spend_spike:team=acme/workflow=support:{iso(60)}"),
        (62, "resolved", f"spend_spike:team=acme/workflow=support:{iso(60)}")]
    short = [i for i, a in run(engine(alert_cooldown_seconds=0), steady(80, spikes))
             if a.kind == "spend_spike" and a.status == "firing"]
    assert short == [30, 40, 60]


def test_ids_are_deterministic_across_runs() -> None:
    first = [a.model_dump() for _, a in run(engine(), steady(60, {40: 5, 50: 0.1}))]
    again = [a.model_dump() for _, a in run(engine(), steady(60, {40: 5, 50: 0.1}))]
    assert first == again and first


def test_a_figure_hovering_near_its_threshold_keeps_one_episode() -> None:
    # 28% is within 90% of the 30% threshold: holding, neither firing nor normal.
    shares = [0.02] * 20 + [0.6, 0.28, 0.35, 0.28, 0.28, 0.35, 0.28] + [0.02] * 5
    windows = [[row(i, calls=1000, retries=int(1000 * s))] for i, s in enumerate(shares)]
    storm = [(i, a.status) for i, a in run(engine(), windows) if a.kind == "retry_storm"]
    assert storm == [(20, "firing"), (28, "resolved")]
    flapping = run(engine(hold_fraction=Decimal(1), alert_cooldown_seconds=0), windows)
    assert [i for i, a in flapping if a.kind == "retry_storm" and a.status == "firing"] == \
        [20, 25]


# -- retry storms and waste --------------------------------------------------------------------
def test_retry_storm_needs_volume_and_a_share_beyond_noise() -> None:
    def storm(calls: int, retries: int) -> list[Alert]:
        windows = [[row(i, calls=calls, retries=retries if i == 5 else 0)] for i in range(8)]
        return [a for _, a in run(engine(), windows) if a.status == "firing"]

    assert storm(10, 8) == []  # below min_calls
    assert storm(20, 7) == []  # 35%, but within one binomial standard error of 30%
    found = storm(200, 80)
    assert [(a.kind, a.severity, a.observed, a.threshold, a.unit) for a in found] == [
        ("retry_storm", "warning", Decimal("0.4"), Decimal("0.3"), "share of calls")]
    assert storm(200, 140)[0].severity == "critical"


def test_context_bloat_per_model() -> None:
    def bloat(share: float, calls: int = 50) -> list[tuple[int, Alert]]:
        windows = [[row(i, calls=calls), row(i, model="gpt-4o", calls=calls, tokens=10_000,
                                             overhead_tokens=int(8000 * share))]
                   for i in range(30)]
        return [(i, a) for i, a in run(engine(), windows) if a.status == "firing"]

    found = bloat(0.85)
    assert [(i, a.kind, a.subject) for i, a in found] == [
        (0, "context_bloat", {"team": "acme", "workflow": "support", "model": "gpt-4o"})]
    assert found[0][1].observed == Decimal("0.85") and found[0][1].severity == "warning"
    assert bloat(0.6) == []
    assert bloat(0.85, calls=2) == []  # the decayed sums tend to 15.5 calls, never 20


def test_prompt_sprawl_against_the_usual_prompt_size() -> None:
    def sprawl(after: int) -> list[tuple[int, Alert]]:
        windows = [[row(i, calls=50, system_prompt_tokens=50 * (after if i >= 200 else 1000))]
                   for i in range(260)]
        return [(i, a) for i, a in run(engine(), windows) if a.status == "firing"]

    found = sprawl(2000)
    assert [a.kind for _, a in found] == ["prompt_sprawl"]
    assert 200 <= found[0][0] <= 206
    alert = found[0][1]
    # The usual size took in the first windows of the change before they stood out.
    assert alert.expected is not None and 1000 <= alert.expected < 1030
    assert alert.threshold is not None
    assert abs(alert.threshold - alert.expected * Decimal("1.5")) < Decimal("1e-6")
    assert alert.observed >= alert.threshold and alert.unit == "system prompt tokens per call"
    assert sprawl(1200) == []


def cpo_windows(n: int, change: int, cost: float = 1.0, accepted: float = 1.0,
                volume: float = 1.0) -> list[list[CostPerOutcomeWindow]]:
    """10 outcomes and 8 accepted a minute at 0.5 each; from ``change`` on, each factor."""
    out = []
    for i in range(n):
        v, c, a = (volume, cost, accepted) if i >= change else (1, 1, 1)
        spend = Decimal(str(round(5 * v * c, 6)))
        out.append([row(i, calls=int(30 * v), spend=spend, fully_loaded_cost=spend,
                        outcomes=int(10 * v), accepted_outcomes=int(8 * v * a))])
    return out


def test_cost_per_outcome_regression() -> None:
    found = [(i, a) for i, a in run(engine(), cpo_windows(400, 300, cost=2.5))
             if a.kind == "cost_per_outcome_regression"]
    assert [a.status for _, a in found] == ["firing"]  # and still open 100 windows later
    i, alert = found[0]
    assert 300 <= i <= 305
    assert alert.expected is not None and Decimal("0.625") <= alert.expected < Decimal("0.64")
    assert alert.threshold is not None
    assert abs(alert.threshold - alert.expected * Decimal("1.5")) < Decimal("1e-6")
    assert alert.observed > alert.threshold and alert.unit == "USD per accepted outcome"


def test_nothing_accepted_is_a_regression_and_more_volume_is_not() -> None:
    stopped = [(i, a) for i, a in run(engine(), cpo_windows(60, 40, accepted=0))
               if a.kind == "cost_per_outcome_regression"]
    assert [a.status for _, a in stopped] == ["firing"] and 40 <= stopped[0][0] <= 45
    # Decided when it fires: the decayed sums still held earlier acceptances.
    assert stopped[0][1].severity == "warning"
    assert float(stopped[0][1].details["accepted_recent"]) < 40
    assert [a.kind for _, a in run(engine(), cpo_windows(80, 40, volume=3))
            if a.kind == "cost_per_outcome_regression"] == []


# -- model mismatch ----------------------------------------------------------------------------
def mix(hour: int, large_cost: str = "2", large_accepted: int = 328, small_cost: str = "0.2",
        units: int = 400) -> list[ModelMix]:
    """400 units each: small accepted 81% of the time, large 82% at ten times the cost."""
    start = datetime.fromtimestamp((T0 + hour * HOUR) / 1000, UTC)
    return [ModelMix(start, "summarize", "small", units, units * 81 // 100, Decimal(small_cost)),
            ModelMix(start, "summarize", "large", units, large_accepted * units // 400,
                     Decimal(large_cost))]


def hourly(engine: AlertEngine, mixes: dict[int, list[ModelMix]],
           hours: int) -> list[tuple[int, Alert]]:
    """One row in the last minute of each hour moves the event clock to the next hour."""
    found = []
    for h in range(hours):
        found.extend((h, a) for a in engine.observe(
            [], [row(h * 60 + 59, team="clock", calls=1)], mixes.get(h, []), 0))
    return found


def test_model_mismatch() -> None:
    found = [(h, a) for h, a in hourly(engine(), {0: mix(0)}, 3)]
    assert [(h, a.kind, a.status, a.alert_id) for h, a in found] == [
        (0, "model_mismatch", "firing",
         f"model_mismatch:task_type=summarize/model=large:{iso(0)}")]
    alert = found[0][1]
    assert alert.subject == {"task_type": "summarize", "model": "large"}
    assert (alert.observed, alert.expected, alert.threshold) == (
        Decimal("0.005"), Decimal("0.0005"), Decimal("0.0015"))
    assert alert.details["cheaper_model"] == "small"
    assert alert.details["potential_saving"] == "1.800000000"
    assert alert.severity == "info"


@pytest.mark.parametrize("case", [
    {"large_accepted": 380},  # the dear model is clearly better (95%)
    {"units": 100},  # 1 point apart could be noise of ±5.5 points at 100 units each
    {"large_cost": "0.1"},  # only twice the cost
    {"small_cost": "0"},  # the cheap one is unpriced: its cost is unknown
])
def test_no_model_mismatch(case: dict[str, Any]) -> None:
    assert hourly(engine(), {0: mix(0, **case)}, 3) == []


def test_model_mismatch_resolves_once_out_of_the_lookback() -> None:
    found = hourly(engine(model_mismatch_lookback_hours=2), {0: mix(0)}, 6)
    # Judged at the end of hours 0 and 1 with hour 0 in the lookback; hours 2 and 3 not.
    assert [(h, a.status) for h, a in found] == [(0, "firing"), (3, "resolved")]


# -- budgets -----------------------------------------------------------------------------------
def budgets(*rules: BudgetRule) -> AlertEngine:
    return AlertEngine(AlertConfig(budgets=rules), "USD")


def test_budgets_alert_from_running_rows_and_count_each_window_once() -> None:
    e = budgets(BudgetRule(team="acme", period="daily", amount=Decimal(100)))
    steps = [
        ([row(0, final=False, revision=1, spend=50)], []),
        ([row(0, final=False, revision=2, spend=70)], []),  # replaces 50: 70 spent
        ([], [row(0, final=True, revision=3, spend=75)]),  # 75 spent
        ([row(1, final=False, revision=1, spend=5)], []),  # 80: the soft threshold
        ([row(1, final=False, revision=2, spend=10)], []),  # 85
        ([row(1, final=False, revision=1, spend=1)], []),  # an older revision: ignored
        ([row(2, final=False, revision=1, spend=15)], []),  # 100: the budget
        ([row(3, final=False, revision=1, spend=50)], []),  # nothing new this period
    ]
    fired = [(k, a.kind, a.observed) for k, (running, finals) in enumerate(steps)
             for a in e.observe(running, finals, [], 0)]
    assert fired == [(3, "budget_soft", Decimal(80)), (6, "budget_hard", Decimal(100))]


def test_a_monthly_budget_forecasts_when_it_runs_out() -> None:
    e = budgets(BudgetRule(team="acme", period="monthly", amount=Decimal(3100)))
    alerts = []
    for hour in range(31 * 24):  # 200 a day, in hourly rows of one minute each
        alerts += e.observe([], [row(hour * 60, spend=Decimal(200) / 24)], [], 0)
    soft = next(a for a in alerts if a.kind == "budget_soft")
    assert soft.alert_id == "budget_soft:team=acme/period=monthly:2026-12"
    assert soft.details["exhausts_on"] == "2026-12-16"  # 3100 / 200 = 15.5 days
    assert "runs out on 2026-12-16" in soft.message
    assert soft.threshold == Decimal(2480) and soft.severity == "warning"
    hard = next(a for a in alerts if a.kind == "budget_hard")
    assert hard.severity == "critical" and hard.observed >= 3100
    assert hard.window_end.strftime("%Y-%m-%d") == "2026-12-16"
    assert len([a for a in alerts if a.status == "firing"]) == 2


def test_budget_alerts_resolve_when_the_period_ends_and_fire_again_next_period() -> None:
    e = budgets(BudgetRule(team="acme", period="daily", amount=Decimal(10), soft_share=1))
    alerts = []
    for minute in (0, 60, 1440, 1500, 2880):
        alerts += [(minute, a.status, a.alert_id)
                   for a in e.observe([], [row(minute, spend=6)], [], 0)]
    assert alerts == [
        (60, "firing", "budget_hard:team=acme/period=daily:2026-12-01"),
        (1440, "resolved", "budget_hard:team=acme/period=daily:2026-12-01"),
        (1500, "firing", "budget_hard:team=acme/period=daily:2026-12-02"),
        (2880, "resolved", "budget_hard:team=acme/period=daily:2026-12-02")]


def test_team_budgets_sum_workflows_and_workflow_budgets_do_not() -> None:
    e = budgets(BudgetRule(team="acme", period="daily", amount=Decimal(10)),
                BudgetRule(team="acme", workflow="a", period="daily", amount=Decimal(10)))
    fired = e.observe([], [row(0, workflow="a", spend=6), row(0, workflow="b", spend=6),
                           row(0, team="other", spend=100)], [], 0)
    assert [(a.kind, a.subject) for a in fired] == [
        ("budget_hard", {"team": "acme", "period": "daily"})]
    assert [a.subject for a in e.observe([], [row(1, workflow="a", spend=3)], [], 0)] == [
        {"team": "acme", "workflow": "a", "period": "daily"}]


def test_budgets_ignore_agent_model_and_larger_window_rows() -> None:
    e = budgets(BudgetRule(team="acme", period="daily", amount=Decimal(10)))
    assert e.observe([row(0, agent="x", spend=50), row(0, model="gpt-4o", spend=50),
                      row(0, size=3600, spend=50)], [], [], 0) == []
    assert [a.kind for a in e.observe([row(0, spend=50)], [], [], 0)] == ["budget_hard"]


# -- persistence and bounds --------------------------------------------------------------------
def scenario() -> list[tuple[list[CostPerOutcomeWindow], list[CostPerOutcomeWindow],
                             list[ModelMix]]]:
    """Spikes, a retry storm, a cost-per-outcome regression (from window 140), budgets
    from running rows and a model mix, over 3 hours."""
    rnd = random.Random(2)
    steps = []
    for i in range(180):
        k = 6 if i in (50, 51, 130) else 1
        spend = noisy(rnd, k * (3 if i >= 140 else 1))
        final = totals(i, calls=100 * k, spend=spend, tokens=10_000 * k,
                       retries=60 if i == 90 else 2, fully_loaded_cost=spend,
                       outcomes=10, accepted_outcomes=8)
        running = [row(i + 1, final=False, spend=noisy(rnd, 0.5))]
        steps.append((running, final, mix(i // 60) if i % 60 == 59 else []))
    return steps


def test_dump_and_load_continue_exactly() -> None:
    config = {"budgets": (BudgetRule(team="acme", period="daily", amount=Decimal(150)),)}
    whole = engine(**config)
    expected: list[list[Alert]] = []
    snapshots: dict[int, bytes] = {}
    for i, (running, finals, mixes) in enumerate(scenario()):
        expected.append(whole.observe(running, finals, mixes, 0))
        snapshots[i] = whole.dump()
    kinds_seen = {a.kind for alerts in expected for a in alerts}
    assert kinds_seen >= {"spend_spike", "token_spike", "retry_storm", "budget_soft",
                          "budget_hard", "model_mismatch", "cost_per_outcome_regression"}
    for cut, as_object in ((45, True), (52, False), (129, True), (150, False)):
        resumed = engine(**config)
        resumed.load(orjson.loads(snapshots[cut]) if as_object else snapshots[cut])
        assert resumed.dump() == snapshots[cut]
        got = [resumed.observe(r, f, m, 0) for r, f, m in scenario()[cut + 1:]]
        assert got == expected[cut + 1:]
        assert resumed.dump() == whole.dump()


def test_load_of_an_empty_state_and_fresh() -> None:
    used = engine(alert_warmup_windows=3)
    run(used, steady(30, {20: 6}))
    used.load({})
    assert used.dump() == engine(alert_warmup_windows=3).dump()
    fresh = used.fresh()
    assert fresh.config == used.config and fresh.dump() == engine(alert_warmup_windows=3).dump()
    with pytest.raises(StateError, match="version"):
        used.load({"version": 99})


def test_state_is_bounded() -> None:
    """Pruned once an hour of event time: the cap keeps the most recently seen subjects,
    and subjects idle for longer than their time to live are forgotten."""
    e = engine(subject_ttl_seconds=3600, max_subjects=50)
    for i in range(61):
        e.observe([], [row(i, team=f"t{j}", workflow=f"w{i}") for j in range(3)], [], 0)
    assert len(e.spikes.subjects) == 50
    assert all(s.seen_ms >= T0 + 44 * MINUTE for s in e.spikes.subjects.values())
    e.observe([], [row(200, team="late")], [], 0)
    assert {s.subject["team"] for s in e.spikes.subjects.values()} == {"late"}
    assert set(e.waste.workflows) == {"team=late/workflow=support"}
    assert len(e.dump()) < 5_000


# -- with the rollup stage ------------------------------------------------------------------------
def test_through_the_rollup_stage_as_the_runtime_calls_it() -> None:
    """Cells in, rows out of ``WindowRollup``, then ``observe(updates, close, mix)``: the
    budget fires from running rows within the minute it is crossed, the spike once its
    window is final."""
    rollup = WindowRollup("USD", idle_seconds=60)
    e = budgets(BudgetRule(team="t", period="daily", amount=Decimal(30)))
    fired = []
    for i in range(40):
        k = 6 if i == 30 else 1
        start = T0 + i * MINUTE
        values = [0] * cf.CELL_FIELDS
        values[cf.CALLS], values[cf.SPEND], values[cf.INPUT] = 100 * k, k * ATTO, 1000 * k
        rollup.apply(Outbox(0, "e", i + 1, start + 30_000,
                            {(MINUTE, start, "t", "w", cf.model_series("gpt-4o")): values}),
                     now_ms=i * 1000)
        running, finals = rollup.updates(), rollup.take_ready()
        assert {r.final for r in running} <= {False} and {r.final for r in finals} <= {True}
        fired += [(i, a.kind) for a in e.observe(running, finals, rollup.mix(), i * 1000)
                  if a.status == "firing"]
    assert fired == [(23, "budget_soft"), (29, "budget_hard"), (31, "spend_spike"),
                     (31, "token_spike")]
