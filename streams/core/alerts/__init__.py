"""Anomaly, budget and waste detectors: pure functions of event-time windows."""

from streams.core.alerts.config import AlertConfig, BudgetRule
from streams.core.alerts.engine import AlertEngine

__all__ = ["AlertConfig", "AlertEngine", "BudgetRule"]
