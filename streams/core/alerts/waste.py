"""Waste diagnostics over final windows: retry storms, context bloat, prompt sprawl and
cost-per-outcome regressions.

A retry storm is acute, so it is judged on the window alone. The other three are
ratios that drift, judged on decayed sums ("current": a half-life of
``fast_half_life_windows``) so one odd window neither fires nor resolves them, against
slower decayed sums of the same subject (its usual value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from schemas.outputs import AlertKind, CostPerOutcomeWindow, Severity
from streams.core.alerts.alert_config import AlertConfig
from streams.core.alerts.baseline import DecayedSums
from streams.core.alerts.figures import (
    SubjectDict,
    clock,
    count,
    dec,
    money,
    pct,
    subject_key,
    subject_name,
    times,
)
from streams.core.alerts.lifecycle import PairKey, Reading
from streams.core.money import ratio

WASTE_KINDS: tuple[AlertKind, ...] = (
    "retry_storm", "context_bloat", "prompt_sprawl", "cost_per_outcome_regression")

# A workflow's current sums, and its usual ones (retry share, cost per accepted outcome).
F_RETRIES, F_CALLS, F_SYSTEM, F_COST, F_ACCEPTED = range(5)
S_RETRIES, S_CALLS, S_COST, S_ACCEPTED = range(4)
# A model row's current sums (context share, volume) and usual ones.
M_OVERHEAD, M_INPUT, M_CALLS = range(3)

#: A judge's answer for one subject: a finding, or whether it is near one (holding).
Verdict = tuple[AlertKind, str, Reading | bool]


@dataclass(slots=True)
class WorkflowStats:
    subject: SubjectDict
    seen_ms: int = 0
    fast: DecayedSums = field(default_factory=DecayedSums)
    slow: DecayedSums = field(default_factory=DecayedSums)
    prompt: DecayedSums = field(default_factory=DecayedSums)  # system tokens, calls
    hot: list[int] = field(default_factory=lambda: [0, 0])  # windows off normal: CPO, prompt

    def dump(self) -> list[Any]:
        return [self.subject, self.seen_ms, self.fast.dump(), self.slow.dump(),
                self.prompt.dump(), self.hot]

    @classmethod
    def load(cls, item: list[Any]) -> WorkflowStats:
        return cls(dict(item[0]), int(item[1]), DecayedSums.load(item[2]),
                   DecayedSums.load(item[3]), DecayedSums.load(item[4]),
                   [int(h) for h in item[5]])


@dataclass(slots=True)
class ModelStats:
    subject: SubjectDict
    seen_ms: int = 0
    fast: DecayedSums = field(default_factory=DecayedSums)
    slow: DecayedSums = field(default_factory=DecayedSums)

    def dump(self) -> list[Any]:
        return [self.subject, self.seen_ms, self.fast.dump(), self.slow.dump()]

    @classmethod
    def load(cls, item: list[Any]) -> ModelStats:
        return cls(dict(item[0]), int(item[1]), DecayedSums.load(item[2]),
                   DecayedSums.load(item[3]))


class WasteDetector:
    def __init__(self, config: AlertConfig, currency: str) -> None:
        self.config = config
        self.currency = currency
        self.hold = float(config.hold_fraction)
        self.workflows: dict[str, WorkflowStats] = {}
        self.models: dict[str, ModelStats] = {}

    def observe(self, start_ms: int, size_ms: int, rows: list[CostPerOutcomeWindow]
                ) -> tuple[list[Reading], set[PairKey]]:
        """Judge, then learn, one final window's total and model rows: the findings, and
        the subjects holding near a threshold."""
        readings: list[Reading] = []
        holding: set[PairKey] = set()
        span = (start_ms, start_ms + size_ms)
        for row in rows:
            if row.scope not in ("total", "model"):
                continue  # agents and dimension values: spikes judge them
            judged = self._workflow(row, span) if row.scope == "total" \
                else self._model(row, span)
            for kind, key, verdict in judged:
                if isinstance(verdict, Reading):
                    readings.append(verdict)
                elif verdict:
                    holding.add((kind, key))
        return readings, holding

    def _workflow(self, row: CostPerOutcomeWindow, span: tuple[int, int]) -> list[Verdict]:
        start, size = span[0], span[1] - span[0]
        slow_ms = self.config.baseline_half_life_seconds * 1000.0
        sprawl_ms = self.config.sprawl_baseline_half_life_seconds * 1000.0
        subject = {"team": row.team, "workflow": row.workflow}
        key = subject_key(subject)
        w = self.workflows.get(key) or self.workflows.setdefault(key, WorkflowStats(subject))
        w.seen_ms = start
        w.fast.add(start, (row.retries, row.calls, row.system_prompt_tokens,
                           float(row.fully_loaded_cost), row.accepted_outcomes),
                   self.config.fast_half_life_windows * size)
        w.slow.decay_to(start, slow_ms)
        w.prompt.decay_to(start, sprawl_ms)
        storm = self._retry_storm(key, w, row, span)
        cpo = self._cpo_regression(key, w, span)
        sprawl = self._prompt_sprawl(key, w, span)
        # A baseline does not learn from its own anomaly until that has lasted a
        # half-life: then a lasting change becomes the new usual.
        w.hot = [w.hot[0] + 1 if cpo else 0, w.hot[1] + 1 if sprawl else 0]
        if not w.hot[0] or w.hot[0] * size > slow_ms:
            w.slow.add(start, (row.retries, row.calls, float(row.fully_loaded_cost),
                               row.accepted_outcomes), slow_ms)
        if not w.hot[1] or w.hot[1] * size > sprawl_ms:
            w.prompt.add(start, (row.system_prompt_tokens, row.calls), sprawl_ms)
        return [("retry_storm", key, storm), ("cost_per_outcome_regression", key, cpo),
                ("prompt_sprawl", key, sprawl)]

    def _model(self, row: CostPerOutcomeWindow, span: tuple[int, int]) -> list[Verdict]:
        start, size = span[0], span[1] - span[0]
        slow_ms = self.config.baseline_half_life_seconds * 1000.0
        subject = {"team": row.team, "workflow": row.workflow, "model": row.model}
        key = subject_key(subject)
        m = self.models.get(key) or self.models.setdefault(key, ModelStats(subject))
        m.seen_ms = start
        m.fast.add(start, (row.overhead_tokens, row.input_tokens, row.calls),
                   self.config.fast_half_life_windows * size)
        m.slow.decay_to(start, slow_ms)
        bloat = self._context_bloat(key, m, span)
        m.slow.add(start, (row.overhead_tokens, row.input_tokens), slow_ms)
        return [("context_bloat", key, bloat)]

    # -- judges -------------------------------------------------------------------------
    def _retry_storm(self, key: str, w: WorkflowStats, row: CostPerOutcomeWindow,
                     span: tuple[int, int]) -> Reading | bool:
        """The window's retry share, above the threshold by ``retry_storm_z`` binomial
        standard errors: 6 retries in 20 calls happen by chance to a workflow that
        usually retries 15% of its calls."""
        c = self.config
        if row.calls < max(c.alert_min_calls, 1):
            return False
        share = ratio(row.retries, row.calls)
        assert share is not None
        error = (share * (1 - share) / row.calls).sqrt()
        if share - c.retry_storm_z * error < c.retry_storm_share:
            return share >= c.hold_fraction * c.retry_storm_share
        usual = w.slow.ratio(S_RETRIES, S_CALLS)
        severity: Severity = "critical" if share >= min(1, 2 * c.retry_storm_share) \
            else "warning"
        name = subject_name(w.subject)
        usual_text = f"; usual {pct(usual)}" if usual is not None else ""
        return self._reading(
            "retry_storm", key, w.subject, severity, share, usual, c.retry_storm_share,
            "share of calls", span, f"retry storm in {name}", pct(share),
            f"Retry storm in {name}: {pct(share)} of {row.calls} calls in the window ending "
            f"{clock(span[1])} were retries (alerts at ≥ {pct(c.retry_storm_share)}"
            f"{usual_text}).",
            {"calls": str(row.calls), "retries": str(row.retries),
             "failed_calls": str(row.failed_calls), "standard_error": str(dec(error))})

    def _prompt_sprawl(self, key: str, w: WorkflowStats, span: tuple[int, int]) -> Reading | bool:
        c = self.config
        current = w.fast.ratio(F_SYSTEM, F_CALLS)
        usual = w.prompt.ratio(0, 1)
        growth = float(c.prompt_sprawl_growth)
        if (w.prompt.n < c.alert_warmup_windows or w.fast.get(F_CALLS) < c.alert_min_calls
                or current is None or not usual):
            return False
        if current < growth * usual:
            return current >= (1 + self.hold * (growth - 1)) * usual
        severity: Severity = "warning" if current >= 2 * growth * usual else "info"
        name = subject_name(w.subject)
        return self._reading(
            "prompt_sprawl", key, w.subject, severity, current, usual, growth * usual,
            "system prompt tokens per call", span, f"prompt sprawl in {name}",
            f"{count(current)} tokens/call",
            f"Prompt sprawl in {name}: system prompts now average {count(current)} tokens "
            f"per call, {times(current / usual)} the usual {count(usual)} (alerts at "
            f"{times(growth)}). Every call pays for them.",
            {"growth": f"{current / usual:.3f}", "calls_recent": f"{w.fast.get(F_CALLS):.0f}"})

    def _cpo_regression(self, key: str, w: WorkflowStats, span: tuple[int, int]
                        ) -> Reading | bool:
        """Judged on accepted outcomes: at the usual cost per accepted outcome, the recent
        cost should have bought ``expected`` of them. Gating on that expectation (not on
        what was accepted) still catches the worst case, nothing accepted at all."""
        c = self.config
        usual = w.slow.ratio(S_COST, S_ACCEPTED)
        if (w.slow.n < c.alert_warmup_windows or w.slow.get(S_ACCEPTED) < c.cpo_min_accepted
                or not usual):
            return False
        cost, accepted = w.fast.get(F_COST), w.fast.get(F_ACCEPTED)
        expected = cost / usual
        limit = float(c.cpo_regression_ratio)
        if expected < c.cpo_min_accepted:
            return False
        if (accepted * limit > expected
                or (expected - accepted) / math.sqrt(expected) < float(c.cpo_min_z)):
            return accepted * (1 + self.hold * (limit - 1)) <= expected
        current = cost / max(accepted, 1.0)
        severity: Severity = "critical" if current >= 2 * limit * usual else "warning"
        name = subject_name(w.subject)
        unit = f"{self.currency} per accepted outcome"
        return self._reading(
            "cost_per_outcome_regression", key, w.subject, severity, current, usual,
            limit * usual, unit, span, f"cost per accepted outcome regression in {name}",
            money(current, self.currency),
            f"Cost per accepted outcome in {name} rose to {money(current, self.currency)}, "
            f"{times(current / usual)} the usual {money(usual, self.currency)} (alerts at "
            f"{times(limit)}): recent spend would usually have bought {count(expected)} "
            f"accepted outcomes, it bought {count(accepted)}.",
            {"accepted_recent": f"{accepted:.1f}", "expected_accepted": f"{expected:.1f}",
             "cost_recent": str(dec(cost))})

    def _context_bloat(self, key: str, m: ModelStats, span: tuple[int, int]) -> Reading | bool:
        c = self.config
        share = m.fast.ratio(M_OVERHEAD, M_INPUT)
        if m.fast.get(M_CALLS) < c.alert_min_calls or share is None:
            return False
        if share < c.context_bloat_share:
            return share >= self.hold * float(c.context_bloat_share)
        usual = m.slow.ratio(0, 1)
        severity: Severity = "warning" if share >= (1 + float(c.context_bloat_share)) / 2 \
            else "info"
        name = subject_name(m.subject)
        usual_text = f"; usual {pct(usual)}" if usual is not None else ""
        return self._reading(
            "context_bloat", key, m.subject, severity, share, usual, c.context_bloat_share,
            "share of input tokens", span, f"context bloat in {name}", pct(share),
            f"Context bloat in {name}: system prompt and context make up {pct(share)} of "
            f"input tokens (alerts at ≥ {pct(c.context_bloat_share)}{usual_text}).",
            {"calls_recent": f"{m.fast.get(M_CALLS):.0f}"})

    def _reading(self, kind: AlertKind, key: str, subject: SubjectDict, severity: Severity,
                 observed: Any, expected: Any, threshold: Any, unit: str,
                 span: tuple[int, int], title: str, observed_text: str, message: str,
                 details: dict[str, str]) -> Reading:
        return Reading(kind=kind, key=key, subject=subject, severity=severity,
                       observed=dec(observed),
                       expected=dec(expected) if expected is not None else None,
                       threshold=dec(threshold), unit=unit, start_ms=span[0], end_ms=span[1],
                       title=title, observed_text=observed_text, message=message,
                       details=details)

    # -- state ----------------------------------------------------------------------------
    def prune(self, now_ms: int) -> None:
        horizon = now_ms - self.config.subject_ttl_seconds * 1000
        for table in (self.workflows, self.models):
            for key in [k for k, s in table.items() if s.seen_ms < horizon]:
                del table[key]
            excess = len(table) - self.config.max_subjects
            if excess > 0:
                for key in sorted(table, key=lambda k: (table[k].seen_ms, k))[:excess]:
                    del table[key]

    def dump(self) -> dict[str, Any]:
        return {"workflows": {k: w.dump() for k, w in self.workflows.items()},
                "models": {k: m.dump() for k, m in self.models.items()}}

    def load(self, data: dict[str, Any]) -> None:
        self.workflows = {k: WorkflowStats.load(v) for k, v in data.get("workflows", {}).items()}
        self.models = {k: ModelStats.load(v) for k, v in data.get("models", {}).items()}
