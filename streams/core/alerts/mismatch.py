"""Model mismatch: a task type served by a model costing several times a cheaper one that
gets it accepted about as often.

Fed by the rollup's model mix (units of a task type finalised per primary model and
hour, with accepted count and cost). The mix of the last ``lookback`` complete hours is
judged once per hour of event time, so one evaluation is one hour: an episode resolves
after ``resolve_after_windows`` hours without the mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from streams.core.alerts.alert_config import AlertConfig
from streams.core.alerts.figures import dec, iso, money, pct, subject_key
from streams.core.alerts.lifecycle import Reading
from streams.core.rollup import ModelMix

HOUR_MS = 3_600_000


@dataclass(slots=True)
class Usage:
    units: int = 0
    accepted: int = 0
    cost: Decimal = Decimal(0)

    def add(self, other: Usage) -> None:
        self.units += other.units
        self.accepted += other.accepted
        self.cost += other.cost

    @property
    def cost_per_unit(self) -> Decimal:
        return self.cost / self.units

    @property
    def acceptance(self) -> Decimal:
        return Decimal(self.accepted) / self.units


def standard_error(a: Usage, b: Usage) -> Decimal:
    """Of the difference of two acceptance rates (normal approximation)."""
    var = sum((u.acceptance * (1 - u.acceptance) / u.units for u in (a, b)), Decimal(0))
    return var.sqrt()


class MismatchDetector:
    def __init__(self, config: AlertConfig, currency: str) -> None:
        self.config = config
        self.currency = currency
        self.hours: dict[tuple[int, str, str], Usage] = {}  # (hour ms, task type, model)
        self.evaluated_ms = 0  # the hour boundary last judged

    def update(self, mix: list[ModelMix]) -> None:
        """The rollup sends each hour's running totals: the latest replaces."""
        for m in mix:
            hour = int(m.window_start.timestamp() * 1000)
            self.hours[(hour, m.task_type, m.model)] = Usage(m.units, m.accepted, m.cost)

    def due(self, clock_ms: int) -> int | None:
        """The hour boundary to judge at, once the event clock has crossed a new one."""
        hour = clock_ms - clock_ms % HOUR_MS
        return hour if hour > self.evaluated_ms else None

    def evaluate(self, hour_ms: int) -> list[Reading]:
        self.evaluated_ms = hour_ms
        since = hour_ms - self.config.model_mismatch_lookback_hours * HOUR_MS
        for key in [k for k in self.hours if k[0] < since]:
            del self.hours[key]
        totals: dict[str, dict[str, Usage]] = {}
        for (hour, task, model), usage in sorted(self.hours.items()):
            if hour < hour_ms:
                totals.setdefault(task, {}).setdefault(model, Usage()).add(usage)
        readings = []
        for task, models in sorted(totals.items()):
            eligible = {m: u for m, u in models.items()
                        if u.units >= self.config.model_mismatch_min_units}
            for model, usage in sorted(eligible.items()):
                reading = self._judge(task, model, usage, eligible, since, hour_ms)
                if reading is not None:
                    readings.append(reading)
        return readings

    def _judge(self, task: str, model: str, usage: Usage, eligible: dict[str, Usage],
               since: int, hour_ms: int) -> Reading | None:
        """The cheapest model that costs at most 1/ratio as much per unit and is accepted
        at least as often, less the allowed gap, by ``model_mismatch_z`` standard errors
        (30 units measure an acceptance rate to about ±8 points: without the margin a
        truly better model would often look no better). Unpriced models (zero cost)
        never count as the cheaper choice: their cost is unknown, not zero."""
        c = self.config
        cheaper = [(u.cost_per_unit, m, u) for m, u in eligible.items()
                   if m != model and u.cost > 0
                   and usage.cost_per_unit >= c.model_mismatch_min_cost_ratio * u.cost_per_unit
                   and u.acceptance - usage.acceptance + c.model_mismatch_max_gap
                   >= c.model_mismatch_z * standard_error(usage, u)]
        if not cheaper:
            return None
        unit_cost, alt, alt_usage = min(cheaper, key=lambda item: (item[0], item[1]))
        subject = {"task_type": task, "model": model}
        factor = usage.cost_per_unit / unit_cost
        saving = usage.units * (usage.cost_per_unit - unit_cost)
        hours = c.model_mismatch_lookback_hours
        cur = self.currency
        return Reading(
            kind="model_mismatch", key=subject_key(subject), subject=subject, severity="info",
            observed=dec(usage.cost_per_unit), expected=dec(unit_cost),
            threshold=dec(c.model_mismatch_min_cost_ratio * unit_cost),
            unit=f"{cur} per unit", start_ms=hour_ms - HOUR_MS, end_ms=hour_ms,
            title=f"model mismatch for task type {task} on {model}",
            observed_text=f"{money(usage.cost_per_unit, cur)} per unit",
            message=(f"Task type {task}: {model} costs {money(usage.cost_per_unit, cur)} per "
                     f"unit, {float(factor):.1f}× {alt} ({money(unit_cost, cur)}), for "
                     f"acceptance {pct(usage.acceptance)} vs {pct(alt_usage.acceptance)} over "
                     f"the last {hours} h ({usage.units} and {alt_usage.units} units). Routing "
                     f"them to {alt} would have saved about {money(saving, cur)}."),
            details={"cheaper_model": alt, "cost_ratio": f"{float(factor):.3f}",
                     "acceptance": str(dec(usage.acceptance)),
                     "cheaper_acceptance": str(dec(alt_usage.acceptance)),
                     "units": str(usage.units), "cheaper_units": str(alt_usage.units),
                     "potential_saving": str(dec(saving)), "lookback_hours": str(hours),
                     "lookback_start": iso(since)})

    def dump(self) -> dict[str, Any]:
        return {"evaluated_ms": self.evaluated_ms,
                "hours": [[h, t, m, u.units, u.accepted, str(u.cost)]
                          for (h, t, m), u in self.hours.items()]}

    def load(self, data: dict[str, Any]) -> None:
        self.evaluated_ms = int(data.get("evaluated_ms", 0))
        self.hours = {(int(h), t, m): Usage(int(n), int(a), Decimal(c))
                      for h, t, m, n, a, c in data.get("hours", [])}
