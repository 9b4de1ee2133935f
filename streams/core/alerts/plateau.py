"""Spend plateau: a workflow's dearest units cost several times its median unit, yet are
accepted no more often than its middle units (the extra spend buys no acceptance).

Fed by the rollup's cost histograms (``CostBucket``: per UTC day, team, workflow and
log-scale cost bucket, the decided units, how many were accepted and their exact
summed fully loaded cost). Judged once per UTC day of event time, when the detection
windows' clock crosses midnight, over the trailing ``plateau_window_days`` complete
days. One evaluation is one day: an episode resolves after ``resolve_after_windows``
days without the plateau.

The groups are whole buckets, so every cost is the histograms' exact sum:

- rank of a bucket: the midpoint of its units' ranks among the workflow's N units,
  ``(below + units / 2) / N`` (units sorted by cost, buckets ascending);
- *top*: buckets ranked at or above ``1 - plateau_top_share`` (the dearest ~20%);
- *middle*: buckets ranked within [0.4, 0.6], and always the median's bucket;
- *median cost*: the mean cost of the median's bucket (the units within 19% of the
  median: the histogram's resolution).

It fires when both groups have ``plateau_min_units`` units, the top group's mean cost is
at least ``plateau_min_cost_ratio`` × the median cost, and the upper one-sided
``plateau_confidence`` bound of ``acceptance_top - acceptance_middle`` (Newcombe's
hybrid score interval from two Wilson intervals) is below ``plateau_max_gain``: with that
confidence, the top units are accepted at most that much more often.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from statistics import NormalDist
from typing import Any

from schemas.outputs import AlertKind
from streams.core.alerts.alert_config import AlertConfig
from streams.core.alerts.figures import dec, iso, money, pct, subject_key, subject_name, times
from streams.core.alerts.lifecycle import PairKey, Reading
from streams.core.cells import DAY_MS
from streams.core.rollup import CostBucket

PLATEAU_KIND: AlertKind = "spend_plateau"


@dataclass(slots=True)
class Group:
    """Units of whole buckets: how many, how many accepted, their exact summed cost."""

    units: int = 0
    accepted: int = 0
    cost: Decimal = Decimal(0)

    def add(self, units: int, accepted: int, cost: Decimal) -> None:
        self.units += units
        self.accepted += accepted
        self.cost += cost

    @property
    def acceptance(self) -> float:
        return self.accepted / self.units if self.units else 0.0

    @property
    def mean_cost(self) -> Decimal:
        return self.cost / self.units


@dataclass(frozen=True, slots=True)
class PlateauFigures:
    """One workflow's trailing days, split by cost (see the module docstring)."""

    units: int
    days: int  # days of the window with decided units
    top: Group
    middle: Group
    median: Group  # the median unit's bucket
    upper_gain: float  # upper confidence bound of acceptance_top - acceptance_middle

    @property
    def median_cost(self) -> Decimal:
        return self.median.mean_cost

    @property
    def gain(self) -> float:
        return self.top.acceptance - self.middle.acceptance

    @property
    def cost_ratio(self) -> Decimal:
        return self.top.mean_cost / self.median_cost

    @property
    def idle_spend_per_day(self) -> Decimal:
        """What the top units cost beyond the median unit, per day: the spend that buys
        no acceptance. Exact from the histograms' sums (then divided by the days)."""
        return (self.top.cost - self.median_cost * self.top.units) / self.days


def wilson(accepted: int, units: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion (``z`` for each side)."""
    p = accepted / units
    z2 = z * z
    centre = (p + z2 / (2 * units)) / (1 + z2 / units)
    half = z * math.sqrt(p * (1 - p) / units + z2 / (4 * units * units)) / (1 + z2 / units)
    return max(0.0, centre - half), min(1.0, centre + half)


def upper_bound_of_difference(a: Group, b: Group, confidence: float) -> float:
    """Upper one-sided ``confidence`` bound of ``p_a - p_b`` (Newcombe 1998, method 10:
    the hybrid score interval from the two Wilson intervals, good at small samples and
    at rates near 0 or 1, where the normal approximation is not)."""
    z = NormalDist().inv_cdf(confidence)
    _, upper_a = wilson(a.accepted, a.units, z)
    lower_b, _ = wilson(b.accepted, b.units, z)
    return a.acceptance - b.acceptance + math.sqrt(
        (upper_a - a.acceptance) ** 2 + (b.acceptance - lower_b) ** 2)


def plateau_figures(buckets: list[tuple[int, int, int, Decimal]], days: int,
                    config: AlertConfig) -> PlateauFigures | None:
    """The groups of one workflow's histogram, summed over its days: ``(bucket, units,
    accepted, cost)`` in any order. ``None`` without units in both groups."""
    merged: dict[int, Group] = {}
    for bucket, units, accepted, cost in buckets:
        merged.setdefault(bucket, Group()).add(units, accepted, cost)
    total = sum(g.units for g in merged.values())
    if not total:
        return None
    top_from = float(1 - config.plateau_top_share)
    low, high = float(config.plateau_middle_low), float(config.plateau_middle_high)
    top, middle, median = Group(), Group(), Group()
    below = 0
    for bucket in sorted(merged):
        g = merged[bucket]
        if not g.units:
            continue
        rank = (below + g.units / 2) / total
        holds_median = below <= total / 2 < below + g.units
        if holds_median:
            median = g
        if rank >= top_from:
            top.add(g.units, g.accepted, g.cost)
        elif low <= rank <= high or holds_median:
            middle.add(g.units, g.accepted, g.cost)
        below += g.units
    if not top.units or not middle.units:
        return None
    return PlateauFigures(total, days, top, middle, median,
                          upper_bound_of_difference(top, middle,
                                                    float(config.plateau_confidence)))


class PlateauDetector:
    def __init__(self, config: AlertConfig, currency: str) -> None:
        self.config = config
        self.currency = currency
        self.evaluated_ms = 0  # the midnight last judged

    def due(self, clock_ms: int) -> int | None:
        """The midnight to judge at, once the event clock has crossed a new one."""
        day = clock_ms - clock_ms % DAY_MS
        return day if day > self.evaluated_ms else None

    def evaluate(self, day_ms: int, histograms: list[CostBucket]
                 ) -> tuple[list[Reading], set[PairKey]]:
        """Readings of the days before ``day_ms`` (the trailing window), and the pairs
        holding: no longer a plateau by the bound, but still by the point estimate."""
        self.evaluated_ms = day_ms
        since = day_ms - self.config.plateau_window_days * DAY_MS
        per: dict[tuple[str, str], list[tuple[int, int, int, Decimal]]] = {}
        days: dict[tuple[str, str], set[int]] = {}
        for b in histograms:
            day = int(b.day.timestamp() * 1000)
            if since <= day < day_ms and b.units:
                per.setdefault((b.team, b.workflow), []).append(
                    (b.bucket, b.units, b.accepted, b.cost))
                days.setdefault((b.team, b.workflow), set()).add(day)
        readings: list[Reading] = []
        holding: set[PairKey] = set()
        for (team, workflow), buckets in sorted(per.items()):
            figures = plateau_figures(buckets, len(days[(team, workflow)]), self.config)
            if figures is None or not self._eligible(figures):
                continue
            subject = {"team": team, "workflow": workflow}
            if figures.upper_gain < float(self.config.plateau_max_gain):
                readings.append(self._reading(subject, figures, since, day_ms))
            elif figures.gain < float(self.config.plateau_max_gain):
                holding.add((PLATEAU_KIND, subject_key(subject)))
        return readings, holding

    def _eligible(self, f: PlateauFigures) -> bool:
        c = self.config
        return (f.top.units >= c.plateau_min_units and f.middle.units >= c.plateau_min_units
                and f.median_cost > 0 and f.cost_ratio >= c.plateau_min_cost_ratio)

    def _reading(self, subject: dict[str, str], f: PlateauFigures, since: int,
                 day_ms: int) -> Reading:
        c, cur = self.config, self.currency
        idle = f.idle_spend_per_day
        share = pct(Decimal(f.top.units) / f.units)
        return Reading(
            kind=PLATEAU_KIND, key=subject_key(subject), subject=subject, severity="info",
            observed=dec(idle), expected=None, threshold=None, unit=f"{cur} per day",
            start_ms=day_ms - DAY_MS, end_ms=day_ms,
            title=f"spend plateau in {subject_name(subject)}",
            observed_text=f"{money(idle, cur)} per day",
            message=(f"Spend plateau in {subject_name(subject)}: its dearest units "
                     f"({f.top.units:,}, {share} of {f.units:,}) cost "
                     f"{money(f.top.mean_cost, cur)} each, {times(f.cost_ratio)} the median "
                     f"unit ({money(f.median_cost, cur)}), yet were accepted "
                     f"{pct(f.top.acceptance)} of the time against {pct(f.middle.acceptance)} "
                     f"for the middle units (at most {f.upper_gain * 100:+.1f} points at "
                     f"{pct(c.plateau_confidence)} confidence) over the last {f.days} day(s). "
                     f"About {money(idle, cur)} a day buys no acceptance: cap the spend per "
                     f"unit near the median."),
            details={"top_units": str(f.top.units), "top_accepted": str(f.top.accepted),
                     "top_mean_cost": str(dec(f.top.mean_cost)),
                     "middle_units": str(f.middle.units),
                     "middle_accepted": str(f.middle.accepted),
                     "median_cost": str(dec(f.median_cost)),
                     "cost_ratio": str(dec(f.cost_ratio)),
                     "acceptance_gain": str(dec(f.gain)),
                     "acceptance_gain_upper": str(dec(f.upper_gain)),
                     "idle_spend_per_day": str(dec(idle)), "units": str(f.units),
                     "days": str(f.days), "lookback_start": iso(since)})

    def dump(self) -> dict[str, Any]:
        return {"evaluated_ms": self.evaluated_ms}

    def load(self, data: dict[str, Any]) -> None:
        self.evaluated_ms = int(data.get("evaluated_ms", 0))
