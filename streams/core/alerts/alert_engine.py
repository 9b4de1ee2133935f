"""The rollup stage's detectors over global windows (spikes, budgets, waste, plateaus).

Everything runs on event time. Final rows of the detection size are judged window by
window, in order of window start; a window is judged once (a corrected final row of a
window already judged only corrects budgets). Budgets also follow running rows, so
they fire within a checkpoint of the spend. The model mix is judged once per hour of
event time, the spend plateau once per UTC day (from the rollup's cost histograms, as
they stand at the checkpoint whose final rows cross midnight). The engine is
deterministic: the same rows give the same alerts, and a restored engine continues
exactly where the dumped one stopped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import orjson

from schemas.errors import StateError
from schemas.outputs import Alert, BudgetState, CostPerOutcomeWindow
from streams.core.alerts.alert_config import AlertConfig, BudgetRule
from streams.core.alerts.budget_tracker import BudgetTracker, covers, period_bounds, rule_subject
from streams.core.alerts.forecast import Forecaster, Series, SpendForecast, project
from streams.core.alerts.lifecycle import EpisodeBook
from streams.core.alerts.mismatch import HOUR_MS, MismatchDetector
from streams.core.alerts.plateau import PLATEAU_KIND, PlateauDetector
from streams.core.alerts.spikes import SPIKE_KINDS, SpikeDetector, spike_figures
from streams.core.alerts.waste import WASTE_KINDS, WasteDetector
from streams.core.cells import DAY_MS
from streams.core.rollup import CostBucket, ModelMix

STATE_VERSION = 1


class AlertEngine:
    """Feeds window rows to every detector; owns alert lifecycle (dedup, cooldown)."""

    def __init__(self, config: AlertConfig, currency: str) -> None:
        self.config = config
        self.currency = currency
        self.size_ms = config.detection_window_seconds * 1000
        self._empty()

    def _empty(self) -> None:
        config, currency = self.config, self.currency
        self.book = EpisodeBook(config.resolve_after_windows, config.alert_cooldown_seconds * 1000)
        self.spikes = SpikeDetector(config, currency)
        self.waste = WasteDetector(config, currency)
        self.mismatch = MismatchDetector(config, currency)
        self.forecaster = Forecaster(config)
        self.budgets = BudgetTracker(config, currency, self.forecaster)
        self.plateau = PlateauDetector(config, currency)
        # The latest checkpoint's cost histograms, for plateaus: called only when a day
        # closes (building them every checkpoint would be wasted work).
        self.histograms: Callable[[], Sequence[CostBucket]] = tuple
        self.last_window_ms = -1  # start of the last window judged
        self.pruned_ms = 0

    def fresh(self) -> AlertEngine:
        return AlertEngine(self.config, self.currency)

    def set_budgets(self, rules: tuple[BudgetRule, ...]) -> None:
        """Budgets changed (settings plus the ``budgets`` topic); ``fresh`` keeps them."""
        self.config = self.config.model_copy(update={"budgets": rules})
        self.budgets.set_rules(rules)

    def observe(self, running: list[CostPerOutcomeWindow], finals: list[CostPerOutcomeWindow],
                mix: list[ModelMix], now_ms: int,
                histograms: Callable[[], Sequence[CostBucket]] | None = None
                ) -> list[Alert]:
        """One rollup checkpoint. ``now_ms`` (wall time) is not used: decisions follow
        the rows' event time, so a replay decides the same."""
        self.mismatch.update(mix)
        self.histograms = histograms if histograms is not None else tuple
        by_start: dict[int, list[CostPerOutcomeWindow]] = defaultdict(list)
        for row in finals:
            if row.window_seconds * 1000 != self.size_ms:
                continue
            start = int(row.window_start.timestamp() * 1000)
            if row.correction:
                self._learn_spend(row, start)  # late changes to a judged window: only
                continue  # budgets and forecasts take them
            if start > self.last_window_ms:
                by_start[start].append(row)
                self._learn_spend(row, start)
        alerts: list[Alert] = []
        for start in sorted(by_start):
            rows = sorted(by_start[start],
                          key=lambda r: (r.team, r.workflow, r.scope, r.model, r.agent))
            alerts.extend(self._window(start, rows))
        alerts.extend(self.budgets.observe([*running, *finals]))
        return alerts

    def budget_state_changes(self) -> list[tuple[str, BudgetState | None]]:
        """Budgets whose state changed since the last call (``None``: removed)."""
        return self.budgets.state_changes()

    def _learn_spend(self, row: CostPerOutcomeWindow, start: int) -> None:
        """Daily spend for forecasts: every workflow's total row, and the dimension rows
        a budget names."""
        if row.scope == "total":
            series: Series = (row.team, row.workflow, "", "")
        elif row.scope == "dimension" and (row.dimension, row.dimension_value) \
                in self.budgets.targets:
            series = (row.team, row.workflow, row.dimension, row.dimension_value)
        else:
            return
        self.forecaster.add(series, start, start + self.size_ms, row.spend)

    def forecasts(self) -> list[SpendForecast]:
        """Month-end spend as of the event clock (the latest final window's end): per
        team, per workflow and per monthly budget, from the final rows seen (a budget's
        spend so far is its tracker's, running rows included)."""
        f = self.forecaster
        now = f.clock_ms
        if not now:
            return []
        start, end = period_bounds("monthly", now)
        today = now - now % DAY_MS
        totals = sorted(s for s in f.days if not s[2])
        groups: list[tuple[dict[str, str], list[Series]]] = []
        for team in sorted({s[0] for s in totals}):
            groups.append(({"team": team}, [s for s in totals if s[0] == team]))
        groups += [({"team": s[0], "workflow": s[1]}, [s]) for s in totals]
        found = []
        for subject, chosen in groups:
            spent = sum((v for s in chosen for d, v in f.days[s].items() if start <= d),
                        Decimal(0))
            found.append(SpendForecast(subject, project(f.model(chosen, today), spent, start,
                                                        now, end, self.config)))
        for rid, rule in sorted(self.budgets.rules.items()):
            if rule.period == "monthly":
                chosen = [s for s in f.days if covers(rule, s)]
                spent = self.budgets.spent(rule, start)
                found.append(SpendForecast(
                    {**rule_subject(rule), "budget": rid},
                    project(f.model(chosen, today), spent, start, now, end, self.config)))
        return found

    def _window(self, start: int, rows: list[CostPerOutcomeWindow]) -> list[Alert]:
        end = start + self.size_ms
        found, holding = self.spikes.observe(start, self.size_ms, spike_figures(rows))
        alerts = self.book.evaluate(SPIKE_KINDS, found, start, end, holding)
        found, holding = self.waste.observe(start, self.size_ms, rows)
        alerts += self.book.evaluate(WASTE_KINDS, found, start, end, holding)
        self.last_window_ms = start
        hour = self.mismatch.due(end)
        if hour is not None:
            alerts += self.book.evaluate(("model_mismatch",), self.mismatch.evaluate(hour),
                                         hour - HOUR_MS, hour)
        day = self.plateau.due(end)
        if day is not None:
            found, holding = self.plateau.evaluate(day, list(self.histograms()))
            alerts += self.book.evaluate((PLATEAU_KIND,), found, day - DAY_MS, day, holding)
        if end - self.pruned_ms >= HOUR_MS:
            self.pruned_ms = end
            self.spikes.prune(end)
            self.waste.prune(end)
            self.book.prune(end)
            self.forecaster.prune()
        return alerts

    # -- persistence ------------------------------------------------------------------------
    def dump(self) -> bytes:
        return orjson.dumps({
            "version": STATE_VERSION,
            "last_window_ms": self.last_window_ms,
            "pruned_ms": self.pruned_ms,
            "book": self.book.dump(),
            "spikes": self.spikes.dump(),
            "waste": self.waste.dump(),
            "mismatch": self.mismatch.dump(),
            "budgets": self.budgets.dump(),
            "plateau": self.plateau.dump(),
            "forecast": self.forecaster.dump(),
        })

    def load(self, data: Any) -> None:
        """Restore a ``dump``: its bytes, or the object they parse to. An empty object
        (a snapshot from before detectors had state) leaves the engine fresh."""
        state: dict[str, Any] = orjson.loads(data) if isinstance(data, bytes | str) else data
        self._empty()
        if not state:
            return
        if state.get("version") != STATE_VERSION:
            raise StateError(f"unknown alert state version {state.get('version')!r}",
                             version=state.get("version"))
        self.last_window_ms = int(state["last_window_ms"])
        self.pruned_ms = int(state["pruned_ms"])
        self.book.load(state["book"])
        self.spikes.load(state["spikes"])
        self.waste.load(state["waste"])
        self.mismatch.load(state["mismatch"])
        self.budgets.load(state["budgets"])
        self.plateau.load(state.get("plateau", {}))  # absent: saved before plateaus
        self.forecaster.load(state.get("forecast", {}))  # ... or before forecasts
