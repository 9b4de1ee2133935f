"""The spend-plateau detector, through ``AlertEngine.observe`` as the rollup calls it.

Each day a workflow decides units whose fully loaded cost is lognormal around a median;
the chance a unit is accepted depends on where its cost stands (its z-score): on a
plateau it rises up to the median and then stays flat, on a healthy workflow it keeps
rising with spend. Days are fed as the rollup does: a final row whose window ends at
midnight, with the cost histograms of the days so far.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from schemas.outputs import Alert, CostPerOutcomeWindow
from streams.core import cells as cf
from streams.core.alerts import AlertConfig, AlertEngine
from streams.core.alerts.plateau import Group, plateau_figures, upper_bound_of_difference
from streams.core.money import from_atto, to_atto
from streams.core.rollup import CostBucket, WindowRollup
from streams.core.windows import Outbox

MINUTE = 60_000
DAY = 86_400_000
T0 = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000)

Acceptance = Callable[[float], float]  # z-score of a unit's cost -> chance it is accepted


def plateau(z: float) -> float:
    return 0.75 + 0.1 * min(z, 0.0)  # rises up to the median, then flat


def rising(z: float) -> float:
    return min(0.97, max(0.05, 0.6 + 0.12 * z))  # every extra unit of spend helps


def day_of(units: int, accept: Acceptance, rnd: random.Random, day: int, team: str = "acme",
           workflow: str = "triage", median: float = 0.05, sigma: float = 0.8
           ) -> list[CostBucket]:
    """One day's decided units of a workflow, in cost buckets (exact costs in atto)."""
    cells: dict[int, list[int]] = {}
    for _ in range(units):
        z = rnd.gauss(0, 1)
        cost = to_atto(Decimal(f"{median * math.exp(sigma * z):.9f}"))
        cell = cells.setdefault(cf.cost_bucket(cost), [0, 0, 0])
        cell[0] += 1
        cell[1] += rnd.random() < accept(z)
        cell[2] += cost
    when = datetime.fromtimestamp((T0 + day * DAY) / 1000, UTC)
    return [CostBucket(when, team, workflow, b, n, a, from_atto(c))
            for b, (n, a, c) in sorted(cells.items())]


def clock_row(day: int) -> CostPerOutcomeWindow:
    """The total row of the day's last minute: final, it takes the clock past midnight."""
    start = T0 + day * DAY + DAY - MINUTE
    return CostPerOutcomeWindow(
        window_id=f"60:{start}:clock:wf:*:", window_seconds=60, team="clock", workflow="wf",
        window_start=datetime.fromtimestamp(start / 1000, UTC),
        window_end=datetime.fromtimestamp((start + MINUTE) / 1000, UTC),
        model="*", agent="", scope="total", revision=1, final=True, currency="USD",
        calls=1, spend=Decimal("0.01"))


def days_of(n: int, units: int, accept: Acceptance | list[Acceptance], seed: int = 1,
            **kw: Any) -> list[list[CostBucket]]:
    rnd = random.Random(seed)
    chosen = accept if isinstance(accept, list) else [accept] * n
    return [day_of(units, chosen[d], rnd, d, **kw) for d in range(n)]


def feed(engine: AlertEngine, days: list[list[CostBucket]], first: int = 0
         ) -> list[tuple[int, Alert]]:
    """Day by day from ``first``: the histograms of the eight days the rollup keeps."""
    found = []
    for d in range(first, len(days)):
        kept = [b for day in days[max(0, d - 7):d + 1] for b in day]
        found += [(d, a) for a in engine.observe([], [clock_row(d)], [], 0,
                                                 lambda kept=kept: kept)
                  if a.kind == "spend_plateau"]
    return found


def engine(**config: Any) -> AlertEngine:
    return AlertEngine(AlertConfig(**config), "USD")


def test_a_plateau_fires_once_with_the_spend_that_buys_no_acceptance() -> None:
    alerts = feed(engine(), days_of(10, 800, plateau))
    assert [(d, a.status) for d, a in alerts] == [(alerts[0][0], "firing")]
    day, alert = alerts[0]
    assert day <= 3  # a few days of 800 units are enough evidence
    closed = datetime.fromtimestamp((T0 + day * DAY) / 1000, UTC).strftime("%Y-%m-%d")
    assert alert.alert_id == f"spend_plateau:team=acme/workflow=triage:{closed}T00:00:00Z"
    assert alert.severity == "info" and alert.unit == "USD per day"
    assert alert.subject == {"team": "acme", "workflow": "triage"}
    d = alert.details
    assert float(d["cost_ratio"]) >= 2 and float(d["acceptance_gain_upper"]) < 0.05
    assert int(d["top_units"]) >= 200 and int(d["middle_units"]) >= 200
    # (mean top cost - median cost) x top units per day: about 0.1 x 160 a day here
    assert alert.observed == Decimal(d["idle_spend_per_day"])
    assert Decimal(4) < alert.observed < Decimal(20)
    assert f"About {alert.observed:.2f} USD a day buys no acceptance" in alert.message


def test_the_figures_are_exact_sums_of_whole_buckets() -> None:
    """100 units: 10 cheap, 50 at the median, 20 between, 20 dear (ranks 0.05, 0.35, 0.7,
    0.9): the dear bucket is the top group, the median's bucket the middle one."""
    buckets = [(40, 10, 2, Decimal("0.10")), (44, 50, 30, Decimal("1.00")),
               (46, 20, 12, Decimal("0.60")), (52, 20, 12, Decimal("2.00"))]
    f = plateau_figures(buckets, days=2, config=AlertConfig())
    assert f is not None
    assert (f.top.units, f.top.accepted, f.top.cost) == (20, 12, Decimal("2.00"))
    assert (f.middle.units, f.middle.accepted) == (50, 30)
    assert f.median_cost == Decimal("0.02") and f.cost_ratio == Decimal(5)
    # (2.00 - 0.02 x 20) / 2 days
    assert f.idle_spend_per_day == Decimal("0.8")
    assert f.gain == 0


def test_the_bound_is_newcombes_hybrid_score() -> None:
    """Newcombe (1998), table II, example (a): 56/70 vs 48/80, 95% two-sided interval
    0.0524 to 0.3339; its upper end is the one-sided 97.5% bound."""
    upper = upper_bound_of_difference(Group(70, 56), Group(80, 48), 0.975)
    assert round(upper, 4) == 0.3339


def test_no_plateau_while_acceptance_keeps_rising_with_spend() -> None:
    assert feed(engine(), days_of(14, 800, rising)) == []


def test_no_plateau_from_small_samples_or_a_narrow_spread() -> None:
    assert feed(engine(), days_of(14, 40, plateau)) == []  # 56 units a group in 7 days
    # the dearest units cost about 1.4x the median: not materially more
    assert feed(engine(), days_of(14, 800, plateau, sigma=0.25)) == []


def test_a_plateau_resolves_once_extra_spend_pays_again() -> None:
    """Plateau for 8 days, then acceptance rises with spend: the trailing week loses the
    plateau and the episode resolves after two days without it."""
    alerts = feed(engine(), days_of(22, 800, [plateau] * 8 + [rising] * 14))
    assert [a.status for _, a in alerts] == ["firing", "resolved"]
    (fired_on, firing), (resolved_on, resolved) = alerts
    assert resolved.alert_id == firing.alert_id and fired_on < 8 < resolved_on <= 15
    assert resolved.message.startswith("Resolved: spend plateau in acme/triage")


def test_each_workflow_is_judged_on_its_own() -> None:
    rnd = random.Random(3)
    days = [day_of(1500, plateau, rnd, d, workflow="loops")
            + day_of(1500, rising, rnd, d, workflow="fine") for d in range(7)]
    alerts = feed(engine(), days)
    assert {a.subject["workflow"] for _, a in alerts} == {"loops"}


def test_replays_give_the_same_alerts_and_state_round_trips() -> None:
    days = days_of(22, 800, [plateau] * 8 + [rising] * 14, seed=5)
    whole = engine()
    expected = feed(whole, days)
    assert [a.status for _, a in expected] == ["firing", "resolved"]
    assert feed(engine(), days) == expected
    for cut in (1, expected[0][0], expected[0][0] + 2):
        first = engine()
        before = feed(first, days[:cut + 1])
        resumed = engine()
        resumed.load(orjson.loads(first.dump()))
        assert resumed.dump() == first.dump()
        assert before + feed(resumed, days, first=cut + 1) == expected
        assert resumed.dump() == whole.dump()


def test_settings_narrow_the_rule() -> None:
    days = days_of(10, 800, plateau)
    assert feed(engine(plateau_min_cost_ratio=Decimal(5)), days) == []
    assert feed(engine(plateau_min_units=2_000), days) == []
    assert feed(engine(plateau_max_gain=Decimal(0)), days_of(10, 800, rising)) == []


def test_through_the_rollup_stage_as_the_runtime_calls_it() -> None:
    """Cost-bucket cells as partitions post them (``Postings._book_decision``), turned
    into ``CostBucket`` by the rollup and judged when a final row crosses midnight."""
    rnd = random.Random(9)
    rollup = WindowRollup("USD", idle_seconds=60)
    e = engine()
    fired = []
    for d in range(5):
        cells: dict[cf.CellKey, list[int]] = {}
        for b in day_of(800, plateau, rnd, d):
            values = cf.zero()
            values[cf.DECIDED], values[cf.ACCEPTED] = b.units, b.accepted
            values[cf.SPEND] = to_atto(b.cost)
            cells[(DAY, T0 + d * DAY, "acme", "triage", cf.histogram_series(b.bucket))] = values
        start = T0 + d * DAY + DAY - MINUTE
        spend = cf.zero()
        spend[cf.CALLS], spend[cf.SPEND] = 1, 10**16
        cells[(MINUTE, start, "acme", "triage", cf.model_series("m"))] = spend
        # the partition's clock has passed midnight: the day's last window is final
        rollup.apply(Outbox(0, "e", d + 1, start + 2 * MINUTE, cells), now_ms=d)
        running, finals = rollup.updates(), rollup.take_ready()
        fired += [(d, a.status) for a in e.observe(running, finals, rollup.mix(), d,
                                                   rollup.histograms)
                  if a.kind == "spend_plateau"]
    assert [s for _, s in fired] == ["firing"]


def test_the_labelled_benchmark_scenario_runs_and_scores() -> None:
    """``loadtest.alerts_benchmark``'s plateau scenario, small: labels and scores hold
    together (the rates themselves are measured there, not asserted here)."""
    from loadtest.alerts_benchmark import plateau_scenario, run

    scenario = plateau_scenario(20, 8, seed=3)
    [score], fired = run(scenario)
    assert score.kind == "spend_plateau" and score.injected == 8
    assert score.windows == 12 * 8 and 0 <= score.detected <= score.injected
    assert all(a.kind == "spend_plateau" for _, a in fired)
