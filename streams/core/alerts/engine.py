"""The rollup stage's detectors over global windows (spikes, budgets, waste)."""

from __future__ import annotations

from typing import Any

import orjson

from schemas.outputs import Alert, CostPerOutcomeWindow
from streams.core.alerts.config import AlertConfig
from streams.core.rollup import ModelMix


class AlertEngine:
    """Feeds window rows to every detector; owns alert lifecycle (dedup, cooldown)."""

    def __init__(self, config: AlertConfig, currency: str) -> None:
        self.config = config
        self.currency = currency

    def fresh(self) -> AlertEngine:
        return AlertEngine(self.config, self.currency)

    def observe(self, running: list[CostPerOutcomeWindow], finals: list[CostPerOutcomeWindow],
                mix: list[ModelMix], now_ms: int) -> list[Alert]:
        return []

    def dump(self) -> bytes:
        return orjson.dumps({})

    def load(self, data: Any) -> None:
        return None
