"""Spend and token spikes per team, workflow, model and agent, over final windows.

Each subject keeps a ``RobustLevel`` per metric. A window is a spike when, after the
warm-up, the subject made at least ``min_calls`` calls, its robust z-score
``(x - level) / σ`` reaches ``spike_threshold`` and ``x / level`` reaches
``spike_min_ratio``: the z-score alone would flag tiny absolute changes of very steady
series, the ratio alone ordinary noise of small ones.

Missing windows. A subject with no row in a window made no calls in it, but whether
that zero belongs in its baseline depends on why. Shortly after activity (within
``idle_gap_windows`` of its last row) a missing window is a lull inside an active
period (bursty work units, a short stall) and counts as zero; without those zeros a
subject that works in bursts would see every second burst as a doubling. Longer
silence (nights, batch jobs between runs) says nothing about the level of activity,
and feeding it as zeros would drag the level to zero and make every restart look like
a spike; the baseline is frozen instead until the subject returns.

A spike does not teach the baseline (it would hide its own continuation), until it
has lasted ``adapt_after_windows``: then a persistent shift is learnt as the new normal
(clipped, so within a few half-lives) and the episode resolves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from schemas.outputs import AlertKind, CostPerOutcomeWindow, Severity
from streams.core.alerts.alert_config import AlertConfig
from streams.core.alerts.baseline import LevelParams, RobustLevel, alpha_for
from streams.core.alerts.figures import (
    SubjectDict,
    clock,
    count,
    dec,
    money,
    subject_key,
    subject_name,
    times,
)
from streams.core.alerts.lifecycle import PairKey, Reading
from streams.core.cells import OTHER_VALUE

SPIKE_KINDS: tuple[AlertKind, AlertKind] = ("spend_spike", "token_spike")
SPIKE_DIMENSIONS = ("user", "customer")



@dataclass(slots=True)
class Figures:
    """One subject's spend-side figures in one window."""

    subject: SubjectDict
    calls: int = 0
    spend: Decimal = Decimal(0)
    tokens: int = 0


def spike_figures(rows: list[CostPerOutcomeWindow]) -> dict[str, Figures]:
    """Figures of every subject present in one window's rows: each workflow ("*" rows),
    each team (their sum), each model row, each agent row, and each user and customer
    (their rows summed over teams and workflows: one user's spike is theirs, wherever
    it lands)."""
    found: dict[str, Figures] = {}

    def add(subject: SubjectDict, row: CostPerOutcomeWindow) -> None:
        key = subject_key(subject)
        figures = found.get(key)
        if figures is None:
            figures = found[key] = Figures(subject)
        figures.calls += row.calls
        figures.spend += row.spend
        figures.tokens += row.input_tokens + row.output_tokens

    for row in rows:
        if row.scope == "agent":
            add({"team": row.team, "workflow": row.workflow, "agent": row.agent}, row)
        elif row.scope == "total":
            add({"team": row.team, "workflow": row.workflow}, row)
            add({"team": row.team}, row)
        elif row.scope == "model":
            add({"team": row.team, "workflow": row.workflow, "model": row.model}, row)
        elif row.dimension in SPIKE_DIMENSIONS and row.dimension_value != OTHER_VALUE:
            add({row.dimension: row.dimension_value}, row)
    return found


@dataclass(slots=True)
class SpikeSubject:
    subject: SubjectDict
    seen_ms: int  # start of the last window with a row
    obs_ms: int  # start of the last window fed to the baselines
    levels: list[RobustLevel] = field(default_factory=lambda: [RobustLevel(), RobustLevel()])
    hot: list[int] = field(default_factory=lambda: [0, 0])  # consecutive spikes per metric

    def dump(self) -> list[Any]:
        return [self.subject, self.seen_ms, self.obs_ms, [lv.dump() for lv in self.levels],
                self.hot]

    @classmethod
    def load(cls, item: list[Any]) -> SpikeSubject:
        return cls(dict(item[0]), int(item[1]), int(item[2]),
                   [RobustLevel.load(lv) for lv in item[3]], [int(h) for h in item[4]])


class SpikeDetector:
    def __init__(self, config: AlertConfig, currency: str) -> None:
        self.config = config
        self.currency = currency
        self.params = LevelParams(
            config.alert_warmup_windows, alpha_for(config.baseline_half_life_windows),
            float(config.baseline_clip), float(config.spread_floor_share))
        self.threshold = float(config.spike_threshold)
        self.min_ratio = float(config.spike_min_ratio)
        self.hold = float(config.hold_fraction)
        self.subjects: dict[str, SpikeSubject] = {}

    def observe(self, start_ms: int, size_ms: int,
                present: dict[str, Figures]) -> tuple[list[Reading], set[PairKey]]:
        """Judge, then learn, one final window: the spikes (parents suppressed) and the
        subjects holding near the threshold."""
        readings: list[Reading] = []
        holding: set[PairKey] = set()
        gap_ms = self.config.idle_gap_windows * size_ms
        for key in sorted(present.keys() | self.subjects.keys()):
            figures = present.get(key)
            s = self.subjects.get(key)
            if s is None:
                assert figures is not None
                s = self.subjects[key] = SpikeSubject(figures.subject, start_ms, start_ms - size_ms)
            last_fill = min(start_ms - (size_ms if figures else 0), s.seen_ms + gap_ms)
            while s.obs_ms + size_ms <= last_fill:
                s.obs_ms += size_ms
                for i in (0, 1):
                    s.levels[i].update(0.0, self.params)
                    s.hot[i] = 0
            if figures is None:
                continue
            s.seen_ms = s.obs_ms = start_ms
            values = (float(figures.spend), float(figures.tokens))
            for i, kind in enumerate(SPIKE_KINDS):
                verdict = self._judge(kind, key, s, i, values[i], figures, start_ms, size_ms)
                if isinstance(verdict, Reading):
                    readings.append(verdict)
                    s.hot[i] += 1
                else:
                    s.hot[i] = 0
                    if verdict:
                        holding.add((kind, key))
                if s.hot[i] == 0 or s.hot[i] > self.config.adapt_after_windows:
                    s.levels[i].update(values[i], self.params)
        return suppress_covered(readings), holding

    def _judge(self, kind: AlertKind, key: str, s: SpikeSubject, i: int, x: float,
               figures: Figures, start_ms: int, size_ms: int) -> Reading | bool:
        """A spike, or whether the window is near one (True: holding)."""
        level = s.levels[i]
        p = self.params
        if not level.ready(p) or figures.calls < self.config.alert_min_calls or level.level <= 0:
            return False
        sigma = level.sigma(p)
        z = (x - level.level) / sigma
        ratio = x / level.level
        if z < self.threshold or ratio < self.min_ratio:
            f = self.hold
            return z >= f * self.threshold and ratio >= 1 + f * (self.min_ratio - 1)
        severity: Severity = "critical" if (z >= 2 * self.threshold
                                            and ratio >= 2 * self.min_ratio) else "warning"
        fires_at = max(level.level * self.min_ratio, level.level + self.threshold * sigma)
        if kind == "spend_spike":
            observed, unit = figures.spend, self.currency
            shown, usual = money(observed, unit), money(level.level, unit)
        else:
            observed, unit = Decimal(figures.tokens), "tokens"
            shown, usual = f"{count(figures.tokens)} tokens", f"{count(level.level)} tokens"
        what = "Spend" if kind == "spend_spike" else "Token"
        name = subject_name(s.subject)
        return Reading(
            kind=kind, key=key, subject=s.subject, severity=severity, observed=observed,
            expected=dec(level.level), threshold=dec(fires_at), unit=unit, start_ms=start_ms,
            end_ms=start_ms + size_ms, title=f"{what.lower()} spike in {name}",
            observed_text=shown,
            message=(f"{what} spike in {name}: {shown} in the {size_ms // 60_000}-min window "
                     f"ending {clock(start_ms + size_ms)}, {times(ratio)} the usual {usual} "
                     f"(robust z {z:.1f}; alerts at z ≥ {self.threshold:g} and "
                     f"≥ {self.min_ratio:g}×) over {figures.calls} calls."),
            details={"robust_z": f"{z:.2f}", "ratio": f"{ratio:.3f}",
                     "calls": str(figures.calls), "sigma": str(dec(sigma)),
                     "baseline_windows": str(level.n)})

    def prune(self, now_ms: int) -> None:
        horizon = now_ms - self.config.subject_ttl_seconds * 1000
        for key in [k for k, s in self.subjects.items() if s.seen_ms < horizon]:
            del self.subjects[key]
        excess = len(self.subjects) - self.config.max_subjects
        if excess > 0:
            oldest = sorted(self.subjects, key=lambda k: (self.subjects[k].seen_ms, k))
            for key in oldest[:excess]:
                del self.subjects[key]

    def dump(self) -> dict[str, Any]:
        return {k: s.dump() for k, s in self.subjects.items()}

    def load(self, data: dict[str, Any]) -> None:
        self.subjects = {k: SpikeSubject.load(v) for k, v in data.items()}


def suppress_covered(readings: list[Reading]) -> list[Reading]:
    """Mark readings a more telling one covers, in the same window and kind.

    A workflow's spike is the alert to act on: its models' and agents' spikes are
    listed in its details instead of alerting on their own, and its team's spike adds
    nothing. A team spike with no workflow spike (many workflows growing a little each)
    and a model or agent spike whose workflow total did not spike (a model switch, one
    agent of many) still alert. A user's or customer's spike always alerts: it is about
    who, not where.
    """
    workflows = {(r.kind, r.subject["team"], r.subject["workflow"]): r for r in readings
                 if "workflow" in r.subject and len(r.subject) == 2}
    teams = {(kind, team) for kind, team, _ in workflows}
    for r in readings:
        if "team" not in r.subject:
            continue  # a user or customer across workflows: nothing covers it
        team, workflow = r.subject["team"], r.subject.get("workflow")
        if workflow is None:
            r.suppressed = (r.kind, team) in teams
            continue
        parent = workflows.get((r.kind, team, workflow))
        if parent is None or parent is r:
            continue
        r.suppressed = True
        what = "models" if "model" in r.subject else "agents"
        part = f"{r.subject.get('model') or r.subject.get('agent')} " \
               f"({times(Decimal(r.details['ratio']))})"
        listed = parent.details.get(what)
        parent.details[what] = f"{listed}, {part}" if listed else part
    return readings
