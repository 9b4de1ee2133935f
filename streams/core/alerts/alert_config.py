"""Every alert threshold, built once from the settings (``AlertConfig.of``).

The fields below the settings-backed ones are tuning constants of the statistics
(half-lives, clipping, state bounds). They have no ``TOKENYIELD_*`` variable: their
defaults are what ``loadtest/alerts_benchmark.py`` measured (see docs/ALERTS.md).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class BudgetRule(BaseModel):
    """Spend allowed per day or month to a team (or one of its workflows), or to one
    value of a dimension (``{"dimension": "customer", "value": "acme", ...}``, across
    teams unless ``team`` narrows it)."""

    model_config = ConfigDict(frozen=True)

    team: str = ""
    workflow: str = ""
    dimension: str = Field("", description="user, customer or a TOKENYIELD_DIMENSIONS key")
    value: str = ""
    period: Literal["daily", "monthly"]
    amount: Decimal = Field(gt=0)
    soft_share: Decimal = Field(Decimal("0.8"), gt=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> BudgetRule:
        if bool(self.dimension) != bool(self.value):
            raise ValueError("a dimension budget needs both dimension and value")
        if not self.team and not self.dimension:
            raise ValueError("a budget needs a team, or a dimension and a value")
        if self.workflow and not self.team:
            raise ValueError("a workflow budget needs its team")
        return self


#: A row of the ``budgets`` table: the rule, when it changed, and 1 when it was retired.
BudgetRow = tuple[BudgetRule, datetime, int]


class AlertSettings(BaseModel):
    """The detectors' settings, declared once: ``Settings`` takes them (as
    ``TOKENYIELD_<NAME>``) and ``AlertConfig`` extends them."""

    alert_warmup_windows: int = Field(10, ge=1)
    alert_min_calls: int = Field(20, ge=0)
    spike_threshold: Decimal = Field(Decimal(6), gt=0, description="Robust z-score")
    spike_min_ratio: Decimal = Field(Decimal(2), gt=1, description="and observed / expected")
    retry_storm_share: Decimal = Field(Decimal("0.3"), gt=0, le=1)
    context_bloat_share: Decimal = Field(Decimal("0.7"), gt=0, le=1)
    prompt_sprawl_growth: Decimal = Field(Decimal("1.5"), gt=1)
    cpo_regression_ratio: Decimal = Field(Decimal("1.5"), gt=1)
    model_mismatch_min_units: int = Field(30, ge=1)
    model_mismatch_max_gap: Decimal = Field(Decimal("0.05"), ge=0, le=1)
    model_mismatch_min_cost_ratio: Decimal = Field(Decimal(3), gt=1)
    plateau_window_days: int = Field(
        7, ge=1, le=7, description="Spend plateau: trailing complete days judged (the "
                                   "rollup keeps eight days of cost histograms)")
    plateau_top_share: Decimal = Field(
        Decimal("0.2"), gt=0, le=Decimal("0.4"), description="The dearest units compared")
    plateau_min_cost_ratio: Decimal = Field(
        Decimal(2), gt=1, description="Their mean cost against the median unit's")
    plateau_max_gain: Decimal = Field(
        Decimal("0.05"), ge=0, le=1, description="Acceptance they may add over the middle "
                                                 "units and still be a plateau")
    plateau_min_units: int = Field(200, ge=1, description="Units in each compared group")
    plateau_confidence: Decimal = Field(
        Decimal("0.95"), gt=Decimal("0.5"), lt=1,
        description="One-sided confidence of the bound on the acceptance gain")
    alert_cooldown_seconds: int = Field(900, ge=0)
    budgets: tuple[BudgetRule, ...] = ()


class AlertConfig(AlertSettings):
    model_config = ConfigDict(frozen=True, extra="forbid")

    detection_window_seconds: int = Field(60, gt=0, description="The first window size")

    # -- tuning constants (no setting) ---------------------------------------------------
    baseline_half_life_windows: int = Field(
        20, ge=1, description="Spike baselines: half-life of the EWMA of level and spread")
    baseline_clip: Decimal = Field(
        Decimal(3), gt=0, description="An observation moves a baseline by at most this "
                                      "many standard deviations")
    spread_floor_share: Decimal = Field(
        Decimal("0.05"), ge=0, description="Standard deviation floor, as a share of the level")
    adapt_after_windows: int = Field(
        30, ge=1, description="A spike lasting longer than this many windows starts to "
                              "teach the baseline (a persistent shift becomes normal)")
    idle_gap_windows: int = Field(
        3, ge=0, description="A missing window counts as zero only this soon after the "
                             "subject's last row; later silence freezes its baseline")
    resolve_after_windows: int = Field(2, ge=1, description="Normal evaluations to resolve")
    hold_fraction: Decimal = Field(
        Decimal("0.9"), ge=0, le=1, description="An open episode neither resolves nor "
        "counts towards resolving while its figure is at least this fraction of the way "
        "from normal to its threshold (hysteresis: no flapping around a threshold)")
    retry_storm_z: Decimal = Field(
        Decimal(1), ge=0, description="The retry share must exceed the threshold by this "
                                      "many binomial standard errors")
    fast_half_life_windows: int = Field(
        5, ge=1, description="Waste ratios: half-life of the 'current' decayed sums")
    baseline_half_life_seconds: int = Field(
        86_400, gt=0, description="Usual retry share, context share and cost per outcome")
    sprawl_baseline_half_life_seconds: int = Field(7 * 86_400, gt=0)
    cpo_min_accepted: int = Field(
        20, ge=1, description="Accepted outcomes in the current decayed sums (about "
                              "1.4 fast half-lives of windows) before CPO is judged")
    cpo_min_z: Decimal = Field(
        Decimal(3), ge=0, description="And the shortfall of accepted outcomes is this many "
                                      "Poisson standard deviations")
    model_mismatch_lookback_hours: int = Field(24, ge=1)
    model_mismatch_z: Decimal = Field(
        Decimal(1), ge=0, description="The acceptance gap must hold by this many standard "
                                      "errors of the difference (sampling noise)")
    plateau_middle_low: Decimal = Field(
        Decimal("0.4"), ge=0, le=Decimal("0.5"),
        description="Spend plateau: the middle units' cost ranks, from ...")
    plateau_middle_high: Decimal = Field(
        Decimal("0.6"), ge=Decimal("0.5"), lt=1, description="... to")
    forecast_history_days: int = Field(
        56, ge=14, le=366, description="Forecasts: complete days of daily spend kept per "
                                       "series (eight weeks of weekday factors)")
    forecast_fit_days: int = Field(
        56, ge=7, description="Recent days the level and trend are fitted on")
    forecast_min_days: int = Field(
        14, ge=7, description="Fewer complete days: the linear run-rate instead")
    forecast_trend_z: Decimal = Field(
        Decimal(2), ge=0, description="A trend is kept when its slope is this many "
                                      "standard errors from zero")
    forecast_outlier_sigmas: Decimal = Field(
        Decimal(3), gt=0, description="Days this many residual standard deviations off "
                                      "the first fit are left out of the level and trend")
    forecast_band: Decimal = Field(
        Decimal("0.9"), gt=0, lt=1, description="Central coverage of the prediction band")
    subject_ttl_seconds: int = Field(
        7 * 86_400, gt=0, description="Forget a subject's baselines after this much "
                                      "event time without a row")
    max_subjects: int = Field(50_000, ge=1, description="Per detector; least recent go first")
    correction_horizon_seconds: int = Field(
        3 * 3_600, gt=0, description="Budgets keep per-window spend this long, so a "
                                     "corrected final row replaces (not adds to) the old")

    @classmethod
    def of(cls, settings: AlertSettings, detection_window_seconds: int) -> AlertConfig:
        """The detectors' part of any object carrying the alert settings."""
        return cls.model_validate({**{name: getattr(settings, name)
                                      for name in AlertSettings.model_fields},
                                   "detection_window_seconds": detection_window_seconds})
