"""Robust running statistics for the detectors.

Baselines are estimates, kept as floats (fast, and exact through JSON: orjson writes
the shortest repr that reads back to the same float, so a restored engine continues
bit for bit). Only the alerts carry money, and those figures are Decimals.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any


def alpha_for(half_life: float) -> float:
    """EWMA weight of a new observation for a half-life in observations."""
    return 1.0 - 0.5 ** (1.0 / half_life)


@dataclass(frozen=True, slots=True)
class LevelParams:
    warmup: int
    alpha: float
    clip: float
    floor_share: float


@dataclass(slots=True)
class RobustLevel:
    """The usual level of a series and its spread, robust to the spikes it must find.

    Warm-up keeps the first ``warmup`` observations and starts from their median and
    the mean squared deviation about it. Afterwards both follow an EWMA of observations
    clipped to ``level ± clip·σ`` (a winsorised mean and variance): a spike moves the
    level by at most ``alpha·clip·σ``, while a lasting shift drags it along (and widens
    σ) within a few half-lives. Squared rather than absolute deviations, because spend
    per window is heavy-tailed (a few huge calls): within the clip, the tail widens σ.
    """

    n: int = 0
    level: float = 0.0
    var: float = 0.0  # mean squared deviation from the level
    warm: list[float] = field(default_factory=list)

    def ready(self, p: LevelParams) -> bool:
        return self.n >= p.warmup

    def sigma(self, p: LevelParams) -> float:
        return max(math.sqrt(self.var), p.floor_share * abs(self.level), 1e-12)

    def update(self, x: float, p: LevelParams) -> None:
        self.n += 1
        if self.n <= p.warmup:
            self.warm.append(x)
            if self.n == p.warmup:
                self.level = statistics.median(self.warm)
                self.var = math.fsum((v - self.level) ** 2 for v in self.warm) / len(self.warm)
                self.warm = []
            return
        limit = p.clip * self.sigma(p)
        r = min(max(x - self.level, -limit), limit)
        self.level += p.alpha * r
        self.var += p.alpha * (r * r - self.var)

    def dump(self) -> list[Any]:
        return [self.n, self.level, self.var, self.warm]

    @classmethod
    def load(cls, item: list[Any]) -> RobustLevel:
        return cls(int(item[0]), float(item[1]), float(item[2]), [float(v) for v in item[3]])


@dataclass(slots=True)
class DecayedSums:
    """Exponentially decayed sums of a few figures over windows.

    A ratio of two sums is the ratio over roughly the last ``half_life / ln 2`` of event
    time, weighting each window by its volume (a quiet window counts little). Time
    without rows decays the sums too, so a stale past fades instead of standing in for
    the present.
    """

    at_ms: int = 0
    values: list[float] = field(default_factory=list)
    n: int = 0  # windows added

    def add(self, start_ms: int, values: tuple[float, ...], half_life_ms: float) -> None:
        self.decay_to(start_ms, half_life_ms)
        if not self.values:
            self.values = [0.0] * len(values)
        for i, v in enumerate(values):
            self.values[i] += v
        self.n += 1

    def decay_to(self, start_ms: int, half_life_ms: float) -> None:
        if start_ms > self.at_ms:
            if self.n:
                factor = 0.5 ** ((start_ms - self.at_ms) / half_life_ms)
                self.values = [v * factor for v in self.values]
            self.at_ms = start_ms

    def get(self, i: int) -> float:
        return self.values[i] if self.values else 0.0

    def ratio(self, num: int, den: int) -> float | None:
        d = self.get(den)
        return self.get(num) / d if d > 0 else None

    def dump(self) -> list[Any]:
        return [self.at_ms, self.values, self.n]

    @classmethod
    def load(cls, item: list[Any]) -> DecayedSums:
        return cls(int(item[0]), [float(v) for v in item[1]], int(item[2]))
