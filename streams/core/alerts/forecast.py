"""Month-end spend forecasts: a daily run-rate with weekday seasonality, a trend and a
prediction band.

The model (``fit`` and ``project``; docs/ALERTS.md, *Forecast*, gives the same for a
SQL mirror), over the complete UTC days of one series' daily spend ``s_d`` up to
yesterday, at most ``forecast_history_days`` (56) of them, missing days counting zero:

1. **Weekday factors.** Each day's ratio to the centred 7-day mean around it,
   ``s_d / mean(s_{d-3} .. s_{d+3})`` (days with three days of history on each side and
   a positive mean; a centred mean follows a trend, so growth does not leak into the
   factors), its median per weekday (a runaway day does not move it), then divided by
   the mean of the seven: ``f_w``, mean 1. ``K`` = the fewest ratios of a weekday. A
   weekday without a ratio: every factor is 1.
2. **Level and trend.** The deseasonalised spend ``y_d = s_d / f_w(d)`` of the last
   ``forecast_fit_days`` (56) days (days whose weekday has ``f_w = 0`` left out), as
   logarithms when every one of them is positive (growth is multiplicative), else as
   money. Ordinary least squares on the day index ``x`` (0 = yesterday):
   ``y = a + b (x - x̄)``, residual standard deviation ``σ`` (``n - 2`` degrees of
   freedom). Then again without the days more than ``forecast_outlier_sigmas`` (3) ``σ``
   off the line (a runaway day would tilt it): ``a``, ``b``, ``x̄``, ``Sxx``, ``n`` and
   ``σ'`` of that refit. The slope is kept only when ``|b| >= forecast_trend_z (2) ·
   σ' / sqrt(Sxx)``, else ``b = 0`` (a noisy slope extrapolated over a month costs more
   than it earns).
3. **Prediction.** Day ``t``: ``ŝ_t = exp(a + b (x_t - x̄) + σ'² / 2) · f_w(t)`` (logs:
   the mean of a lognormal day) or ``max(0, a + b (x_t - x̄)) · f_w(t)``. Month-end
   spend = spent so far (exact) + ``Σ g_t ŝ_t`` over the remaining days, ``g_t`` the
   share of day ``t`` still to come (today: what is left of it; later days: 1).
4. **Band.** With ``c_t = g_t ŝ_t`` (logs: ``σ`` is relative) or ``c_t = g_t f_w(t)``
   (money), the remaining spend has variance
   ``σ² [Σ c_t² + (Σ c_t)² / n + (Σ c_t (x_t - x̄))² / Sxx + Σ_w (Σ_{t on w} c_t)² / K]``:
   independent daily noise, the uncertainty of the level and of the slope (shared by
   every remaining day) and of the weekday factors (``K`` ratios each). ``σ`` is the
   first fit's, outliers included: the coming days will have theirs. The band is the
   expected spend ± ``z`` standard deviations, ``z`` the normal quantile of
   ``(1 + forecast_band) / 2`` (1.645: the 5th and 95th percentiles for the default
   0.9); its low end is at least what is already spent.

Fewer than ``forecast_min_days`` (14) complete days: no model, and callers fall back
to the linear run-rate (spend so far / elapsed time).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from statistics import NormalDist
from typing import Any

from streams.core.alerts.alert_config import AlertConfig
from streams.core.cells import DAY_MS

#: Whose spend: (team, workflow, dimension, value); dimension "" for a total row.
Series = tuple[str, str, str, str]
MAX_DAYS_AHEAD = 400  # how far ``exhausts_on`` looks past a period's end


def weekday(day_ms: int) -> int:
    """Monday 0 ... Sunday 6 of a UTC day."""
    return (day_ms // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday


@dataclass(frozen=True, slots=True)
class DailyModel:
    """A fitted series: ``predict(day)`` is its expected spend that day."""

    last_day_ms: int  # the last complete day fitted (yesterday)
    days: int  # days of history used for the factors
    factors: tuple[float, ...]  # by weekday, Monday first, mean 1
    level: float  # a: deseasonalised spend at the mean day fitted
    slope: float  # b, per day (0 unless significant)
    x_mean: float  # x̄, in days from ``last_day_ms`` (negative: in the past)
    sxx: float
    fitted: int  # n
    sigma: float  # of the residuals (of the logarithms when ``logs``), outliers included
    spread: float  # ... of the days fitted, outliers left out
    logs: bool  # fitted on log spend (every day fitted spent something)
    weeks: int  # the fewest ratios a weekday factor is the median of

    def x(self, day_ms: int) -> float:
        return (day_ms - self.last_day_ms) / DAY_MS

    def deseasonalised(self, day_ms: int) -> float:
        line = self.level + self.slope * (self.x(day_ms) - self.x_mean)
        # the mean of a lognormal day, not its median
        return math.exp(line + self.spread ** 2 / 2) if self.logs else max(0.0, line)

    def predict(self, day_ms: int) -> float:
        return self.deseasonalised(day_ms) * self.factors[weekday(day_ms)]


@dataclass(frozen=True, slots=True)
class Projection:
    """Spend at ``end_ms`` expected as of ``as_of_ms``, with its band."""

    as_of_ms: int
    end_ms: int
    spent: Decimal  # up to as_of_ms (exact)
    expected: Decimal
    low: Decimal
    high: Decimal
    method: str  # "seasonal" or "linear"
    history_days: int


@dataclass(frozen=True, slots=True)
class SpendForecast:
    """Whose month-end spend (``{"team"}``, ``{"team", "workflow"}``, or a budget's
    subject with its rule id under ``"budget"``), and the projection."""

    subject: dict[str, str]
    projection: Projection


def fit(daily: Mapping[int, Decimal | float], first_day_ms: int, today_ms: int,
        config: AlertConfig) -> DailyModel | None:
    """The model of one series: ``daily`` its spend per UTC day start (ms), counted from
    ``first_day_ms`` (the first complete day; missing days are zero) to the day before
    ``today_ms``. ``None`` with fewer than ``forecast_min_days`` such days."""
    last = today_ms - DAY_MS
    start = max(first_day_ms, today_ms - config.forecast_history_days * DAY_MS)
    n_days = (today_ms - start) // DAY_MS
    if n_days < config.forecast_min_days:
        return None
    spend = [float(daily.get(start + k * DAY_MS, 0)) for k in range(n_days)]
    factors, weeks = weekday_factors(spend, weekday(start))
    fit_from = max(0, n_days - config.forecast_fit_days)
    xs, ys = [], []
    for k in range(fit_from, n_days):
        f = factors[(weekday(start) + k) % 7]
        if f > 0:
            xs.append(float(k - (n_days - 1)))
            ys.append(spend[k] / f)
    n = len(xs)
    if n < 3:
        return None
    logs = all(y > 0 for y in ys)  # growth is multiplicative: fit the logarithms
    if logs:
        ys = [math.log(y) for y in ys]
    x_mean, y_mean, sxx, slope, sigma = _least_squares(xs, ys)
    # Outlier days (a runaway, a batch backfill) would tilt the line: refit without the
    # days more than ``forecast_outlier_sigmas`` off it. The band keeps the first
    # fit's sigma: the coming days will have their outliers too.
    cut = float(config.forecast_outlier_sigmas) * sigma
    kept = [(x, y) for x, y in zip(xs, ys, strict=True)
            if abs(y - y_mean - slope * (x - x_mean)) <= cut]
    spread = sigma
    if sigma > 0 and 3 <= len(kept) < n:
        xs, ys = [x for x, _ in kept], [y for _, y in kept]
        x_mean, y_mean, sxx, slope, spread = _least_squares(xs, ys)
    if abs(slope) < float(config.forecast_trend_z) * spread / math.sqrt(sxx):
        slope = 0.0
    return DailyModel(last, n_days, factors, y_mean, slope, x_mean, sxx, len(xs), sigma,
                      spread, logs, weeks)


def _least_squares(xs: list[float], ys: list[float]
                   ) -> tuple[float, float, float, float, float]:
    """x̄, ȳ, Sxx, the slope and the residual standard deviation (n - 2 degrees of
    freedom) of the line through (xs, ys)."""
    n = len(xs)
    x_mean, y_mean = sum(xs) / n, sum(ys) / n
    sxx = sum((x - x_mean) ** 2 for x in xs)
    slope = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True)) / sxx
    residuals = [y - y_mean - slope * (x - x_mean) for x, y in zip(xs, ys, strict=True)]
    return x_mean, y_mean, sxx, slope, math.sqrt(sum(r * r for r in residuals) / (n - 2))


def weekday_factors(spend: list[float], first_weekday: int) -> tuple[tuple[float, ...], int]:
    """Step 1 of the model, and the fewest ratios a weekday's factor stands on:
    ``spend`` per day, oldest first, the first on ``first_weekday``."""
    ratios: list[list[float]] = [[] for _ in range(7)]
    for k in range(3, len(spend) - 3):
        centred = sum(spend[k - 3:k + 4]) / 7
        if centred > 0:
            ratios[(first_weekday + k) % 7].append(spend[k] / centred)
    fewest = min(len(r) for r in ratios)
    if not fewest:
        return (1.0,) * 7, 1
    raw = [statistics.median(r) for r in ratios]
    mean = sum(raw) / 7
    if mean <= 0:
        return (1.0,) * 7, 1
    return tuple(r / mean for r in raw), fewest


def project(model: DailyModel | None, spent: Decimal, period_start_ms: int, as_of_ms: int,
            end_ms: int, config: AlertConfig) -> Projection:
    """Spend at ``end_ms``: ``spent`` (from ``period_start_ms`` to ``as_of_ms``) plus the
    model's remaining days; without a model, the linear run-rate (no band)."""
    if model is None:
        elapsed = max(as_of_ms - period_start_ms, 1)
        expected = spent * (end_ms - period_start_ms) / elapsed
        return Projection(as_of_ms, end_ms, spent, expected, expected, expected, "linear", 0)
    total = var_days = shared = sloped = 0.0
    per_weekday = [0.0] * 7
    for day, share in remaining_days(as_of_ms, end_ms):
        # the noise of a day scales with its expected spend (logs) or its weekday factor
        scale = share * (model.predict(day) if model.logs else model.factors[weekday(day)])
        total += share * model.predict(day)
        var_days += scale ** 2
        shared += scale
        sloped += scale * (model.x(day) - model.x_mean)
        per_weekday[weekday(day)] += scale
    var = model.sigma ** 2 * (var_days + shared ** 2 / model.fitted + sloped ** 2 / model.sxx
                              + sum(w * w for w in per_weekday) / model.weeks)
    z = NormalDist().inv_cdf((1 + float(config.forecast_band)) / 2)
    half = z * math.sqrt(var)
    expected = spent + _money(total)
    return Projection(as_of_ms, end_ms, spent, expected,
                      spent + _money(max(0.0, total - half)), spent + _money(total + half),
                      "seasonal", model.days)


def remaining_days(as_of_ms: int, end_ms: int) -> list[tuple[int, float]]:
    """(day start, share of the day still to come) from ``as_of_ms`` to ``end_ms``."""
    out = []
    day = as_of_ms - as_of_ms % DAY_MS
    while day < end_ms:
        share = (min(day + DAY_MS, end_ms) - max(day, as_of_ms)) / DAY_MS
        if share > 0:
            out.append((day, share))
        day += DAY_MS
    return out


def exhausts_at(model: DailyModel, spent: Decimal, amount: Decimal, as_of_ms: int) -> int:
    """When the expected spend reaches ``amount`` (at most ``MAX_DAYS_AHEAD`` days out,
    then by the last day's rate): the time within the day, at that day's rate."""
    cumulative = float(spent)
    target = float(amount)
    rate = 0.0
    for day, share in remaining_days(as_of_ms, as_of_ms + MAX_DAYS_AHEAD * DAY_MS):
        rate = model.predict(day)
        add = share * rate
        if cumulative + add >= target:
            begin = max(day, as_of_ms)
            return begin + int((target - cumulative) / rate * DAY_MS)
        cumulative += add
    if rate <= 0:
        return as_of_ms + MAX_DAYS_AHEAD * DAY_MS
    return as_of_ms + MAX_DAYS_AHEAD * DAY_MS + int((target - cumulative) / rate * DAY_MS)


def forecast_month_end(daily: Mapping[int, Decimal | float], first_day_ms: int,
                       as_of_ms: int, config: AlertConfig | None = None) -> Projection:
    """The whole model in one call, for a mirror (a SQL view) to check against: the spend
    of the calendar month holding ``as_of_ms`` at its end, from ``daily`` (spend per UTC
    day start, complete days from ``first_day_ms``; the current day's spend so far, if
    any, under today's start)."""
    config = config or AlertConfig()
    today = as_of_ms - as_of_ms % DAY_MS
    d = datetime.fromtimestamp(as_of_ms / 1000, UTC)
    start = int(datetime(d.year, d.month, 1, tzinfo=UTC).timestamp() * 1000)
    end = int(datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=UTC)
              .timestamp() * 1000)
    spent = sum((Decimal(str(v)) for day, v in daily.items() if start <= day <= today),
                Decimal(0))
    return project(fit(daily, first_day_ms, today, config), spent, start, as_of_ms, end,
                   config)


def _money(x: float) -> Decimal:
    return Decimal(repr(x)).quantize(Decimal("0.000000001"))


class Forecaster:
    """Daily spend per series from final detection-size rows (and corrections), kept for
    ``forecast_history_days`` complete days and today; feeds ``fit``."""

    def __init__(self, config: AlertConfig) -> None:
        self.config = config
        self.days: dict[Series, dict[int, Decimal]] = {}
        self.first_ms: dict[Series, int] = {}  # the first window start seen of a series
        self.clock_ms = 0  # the latest window end seen

    def add(self, series: Series, start_ms: int, end_ms: int, spend: Decimal) -> None:
        day = start_ms - start_ms % DAY_MS
        days = self.days.setdefault(series, {})
        days[day] = days.get(day, Decimal(0)) + spend
        if series not in self.first_ms or start_ms < self.first_ms[series]:
            self.first_ms[series] = start_ms
        self.clock_ms = max(self.clock_ms, end_ms)

    def first_day(self, series: Series) -> int:
        """The series' first complete day: the day of its first row when that row's window
        opened the day, else the next day (the engine may have started, or the series
        appeared, in the middle of it)."""
        first = self.first_ms[series]
        day = first - first % DAY_MS
        return day if first == day else day + DAY_MS

    def merged(self, chosen: list[Series]) -> tuple[dict[int, Decimal], int] | None:
        """The summed daily spend of ``chosen`` and their first complete day: the
        earliest of theirs (every total row comes through this engine, so a workflow
        first seen later spent nothing before; a dimension value is watched from when
        its budget came, like its other series)."""
        if not chosen:
            return None
        total: dict[int, Decimal] = {}
        for series in chosen:
            for day, v in self.days.get(series, {}).items():
                total[day] = total.get(day, Decimal(0)) + v
        return total, min(self.first_day(s) for s in chosen)

    def model(self, chosen: list[Series], today_ms: int) -> DailyModel | None:
        found = self.merged(chosen)
        return None if found is None else fit(found[0], found[1], today_ms, self.config)

    def prune(self) -> None:
        """Drop days older than the history, series without any, then the least recently
        active beyond ``max_subjects``."""
        oldest = self.clock_ms - self.clock_ms % DAY_MS \
            - self.config.forecast_history_days * DAY_MS
        for series, days in list(self.days.items()):
            for day in [d for d in days if d < oldest]:
                del days[day]
            if not days:
                del self.days[series]
                del self.first_ms[series]
        if len(self.days) > self.config.max_subjects:
            recent = sorted(self.days, key=lambda s: (max(self.days[s]), s), reverse=True)
            for series in recent[self.config.max_subjects:]:
                del self.days[series]
                del self.first_ms[series]

    def dump(self) -> dict[str, Any]:
        """Each series' days as one run from its oldest day (missing days are ""):
        about 1 KB per workflow for eight weeks."""
        series = []
        for s, days in self.days.items():
            oldest = min(days)
            run = [str(days[d]) if d in days else ""
                   for d in range(oldest, max(days) + 1, DAY_MS)]
            series.append([*s, self.first_ms[s], oldest, run])
        return {"clock_ms": self.clock_ms, "series": series}

    def load(self, data: dict[str, Any]) -> None:
        self.clock_ms = int(data.get("clock_ms", 0))
        self.days, self.first_ms = {}, {}
        for team, workflow, dimension, value, first, oldest, run in data.get("series", []):
            series = (team, workflow, dimension, value)
            self.first_ms[series] = int(first)
            self.days[series] = {int(oldest) + k * DAY_MS: Decimal(v)
                                 for k, v in enumerate(run) if v}
