"""Anomaly, budget and waste detectors: pure functions of event-time windows."""

from streams.core.alerts.alert_config import AlertConfig, BudgetRule
from streams.core.alerts.alert_engine import AlertEngine

__all__ = ["AlertConfig", "AlertEngine", "BudgetRule"]
