"""Every alert threshold, built once from the settings."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class BudgetRule(BaseModel):
    """Spend allowed to a team (or one of its workflows) per day or month."""

    model_config = ConfigDict(frozen=True)

    team: str
    workflow: str = ""
    period: Literal["daily", "monthly"]
    amount: Decimal = Field(gt=0)
    soft_share: Decimal = Field(Decimal("0.8"), gt=0, le=1)


class AlertConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    warmup_windows: int = 10
    min_calls: int = 20
    spike_threshold: Decimal = Decimal(6)
    spike_min_ratio: Decimal = Decimal(2)
    retry_storm_share: Decimal = Decimal("0.3")
    context_bloat_share: Decimal = Decimal("0.7")
    prompt_sprawl_growth: Decimal = Decimal("1.5")
    cpo_regression_ratio: Decimal = Decimal("1.5")
    model_mismatch_min_units: int = 30
    model_mismatch_max_gap: Decimal = Decimal("0.05")
    model_mismatch_min_cost_ratio: Decimal = Decimal(3)
    cooldown_seconds: int = 900
    detection_window_seconds: int = 60
    budgets: tuple[BudgetRule, ...] = ()
