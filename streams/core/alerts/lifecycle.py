"""Episodes: one firing alert per run of anomalous evaluations, one resolved alert at its end.

A detector reports, per evaluation round (one window, or one hour for the model mix),
the subjects it finds anomalous. An episode opens at the first anomalous evaluation of
a (kind, subject) unless that pair is cooling down, and fires once, with an id built
from the kind, the subject and the start of the episode's first window, so a replay
emits the same id. It resolves after ``resolve_after`` consecutive evaluations in which
the subject is not anomalous (quiet, below volume, or simply absent all count), and
then the pair may not open a new episode for ``cooldown_ms`` of event time. A subject
*holding* (no longer anomalous, but near its threshold) keeps its episode open without
counting towards resolving, so a figure hovering at the threshold makes one episode,
not one per crossing.

A reading may be *suppressed* (a more telling alert covers it, see ``spikes``): its
episode still opens and keeps its start, but fires only once a reading is not
suppressed; an episode that never fired resolves silently.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from schemas.outputs import Alert, AlertKind, Severity
from streams.core.alerts.figures import SubjectDict, dt, iso

PairKey = tuple[str, str]  # (kind, subject key)


@dataclass(slots=True)
class Reading:
    """A detector's anomalous finding for one subject in one evaluation."""

    kind: AlertKind
    key: str
    subject: SubjectDict
    severity: Severity
    observed: Decimal
    expected: Decimal | None
    threshold: Decimal | None
    unit: str
    start_ms: int  # the evaluated window (or span)
    end_ms: int
    title: str  # "spend spike in acme/support"
    observed_text: str  # "12.40 USD"
    message: str
    details: dict[str, str] = field(default_factory=dict)
    suppressed: bool = False


@dataclass(slots=True)
class Episode:
    alert_id: str
    kind: AlertKind
    key: str
    subject: SubjectDict
    severity: Severity
    unit: str
    expected: Decimal | None
    threshold: Decimal | None
    start_ms: int
    title: str
    peak: Decimal
    peak_text: str
    windows: int = 1
    normal: int = 0
    emitted: bool = False

    def dump(self) -> list[Any]:
        return [self.alert_id, self.kind, self.key, self.subject, self.severity, self.unit,
                _s(self.expected), _s(self.threshold), self.start_ms, self.title,
                str(self.peak), self.peak_text, self.windows, self.normal, self.emitted]

    @classmethod
    def load(cls, item: list[Any]) -> Episode:
        return cls(item[0], item[1], item[2], dict(item[3]), item[4], item[5], _d(item[6]),
                   _d(item[7]), int(item[8]), item[9], Decimal(item[10]), item[11],
                   int(item[12]), int(item[13]), bool(item[14]))


class EpisodeBook:
    """Open episodes and cooldowns of every (kind, subject) the window detectors watch."""

    def __init__(self, resolve_after: int, cooldown_ms: int) -> None:
        self.resolve_after = resolve_after
        self.cooldown_ms = cooldown_ms
        self.open: dict[PairKey, Episode] = {}
        self.cooldown: dict[PairKey, int] = {}  # no new episode starts before this (ms)

    def evaluate(self, kinds: Iterable[str], readings: list[Reading], start_ms: int,
                 end_ms: int, holding: Collection[PairKey] = ()) -> list[Alert]:
        """One evaluation round of ``kinds`` over [start_ms, end_ms): fire, then resolve.

        ``holding``: pairs not anomalous but not back to normal either (near the
        threshold); their open episodes stay open without counting towards resolving.
        """
        alerts: list[Alert] = []
        seen: set[PairKey] = set()
        for r in readings:
            pair = (r.kind, r.key)
            seen.add(pair)
            episode = self.open.get(pair)
            if episode is None:
                if r.start_ms < self.cooldown.get(pair, r.start_ms):
                    continue
                self.cooldown.pop(pair, None)
                episode = self.open[pair] = Episode(
                    f"{r.kind}:{r.key}:{iso(r.start_ms)}", r.kind, r.key, r.subject, r.severity,
                    r.unit, r.expected, r.threshold, r.start_ms, r.title, r.observed,
                    r.observed_text)
            else:
                episode.windows += 1
                episode.normal = 0
                if r.observed > episode.peak:
                    episode.peak, episode.peak_text = r.observed, r.observed_text
            if not episode.emitted and not r.suppressed:
                episode.emitted = True
                episode.severity, episode.expected, episode.threshold = (
                    r.severity, r.expected, r.threshold)
                alerts.append(_firing(episode, r))
        wanted = set(kinds)
        for pair in sorted(p for p in self.open
                           if p[0] in wanted and p not in seen and p not in holding):
            episode = self.open[pair]
            episode.normal += 1
            if episode.normal >= self.resolve_after:
                del self.open[pair]
                if episode.emitted:
                    self.cooldown[pair] = end_ms + self.cooldown_ms
                    alerts.append(_resolved(episode, end_ms))
        return alerts

    def prune(self, now_ms: int) -> None:
        """Forget cooldowns that have run out."""
        for pair in [p for p, until in self.cooldown.items() if until <= now_ms]:
            del self.cooldown[pair]

    def dump(self) -> dict[str, Any]:
        return {"open": [e.dump() for e in self.open.values()],
                "cooldown": [[k, s, until] for (k, s), until in self.cooldown.items()]}

    def load(self, data: dict[str, Any]) -> None:
        for item in data.get("open", []):
            episode = Episode.load(item)
            self.open[(episode.kind, episode.key)] = episode
        for kind, key, until in data.get("cooldown", []):
            self.cooldown[(kind, key)] = int(until)


def _firing(e: Episode, r: Reading) -> Alert:
    return Alert(
        alert_id=e.alert_id, kind=e.kind, status="firing", severity=r.severity,
        subject=r.subject, observed=r.observed, expected=r.expected, threshold=r.threshold,
        unit=r.unit, window_start=dt(e.start_ms), window_end=dt(r.end_ms),
        occurred_at=dt(r.end_ms), message=r.message,
        details={**r.details, "episode_start": iso(e.start_ms)})


def _resolved(e: Episode, end_ms: int) -> Alert:
    minutes = (end_ms - e.start_ms) / 60_000
    return Alert(
        alert_id=e.alert_id, kind=e.kind, status="resolved", severity=e.severity,
        subject=e.subject, observed=e.peak, expected=e.expected, threshold=e.threshold,
        unit=e.unit, window_start=dt(e.start_ms), window_end=dt(end_ms), occurred_at=dt(end_ms),
        message=(f"Resolved: {e.title} is back to normal after {minutes:,.0f} min "
                 f"({e.windows} anomalous evaluation(s), peak {e.peak_text})."),
        details={"episode_start": iso(e.start_ms), "anomalous_evaluations": str(e.windows),
                 "peak": str(e.peak)})


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _d(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)
