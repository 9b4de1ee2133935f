"""What the pure core needs to know, built once from the settings and passed in."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.errors import ConfigurationError
from streams.core.workflows import WorkflowRule


class EngineSettings(BaseModel):
    """The engine's settings, declared once: ``Settings`` takes them (as
    ``TOKENYIELD_<NAME>``) and ``EngineConfig`` is them, validated together. All
    durations in seconds (docs/CONFIGURATION.md says what each means)."""

    partitions: int = Field(4, ge=1, le=1024)
    window_seconds: tuple[int, ...] = (60, 3600)
    allowed_lateness_seconds: int = Field(300, ge=0)
    deadline_seconds: int = Field(86_400, gt=0)
    retention_seconds: int = Field(3_600, ge=0)
    horizon_seconds: int = Field(35 * 86_400, gt=0)
    max_future_skew_seconds: int = Field(3_600, ge=0)
    input_idle_seconds: int = Field(30, ge=0)
    park_after_checkpoints: int = Field(
        10, ge=1, description="Checkpoints a live unit goes unused before it is kept as "
                              "its bytes instead of an object")
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    fx_rates: dict[str, Decimal] = Field(
        default_factory=dict, description="Units of `currency` per unit of the key currency."
    )
    review_rate_per_hour: Decimal = Field(Decimal(60), ge=0)
    review_rates_by_team: dict[str, Decimal] = Field(default_factory=dict)
    runaway_max_calls: int = Field(200, ge=1)
    runaway_max_tokens: int = Field(2_000_000, ge=1)
    runaway_max_cost: Decimal = Field(Decimal(25), gt=0)
    workflows: tuple[WorkflowRule, ...] = Field(
        (), description="Each workflow's owner, success bar and business case")
    dimensions: tuple[str, ...] = Field(
        (), max_length=5, description="Up to five `attributes` keys promoted to dimensions "
                                      "(besides `user` and `customer`)")
    dimension_cap: int = Field(
        500, ge=1, description="Distinct values per dimension with rows of their own; the "
                               "rest are summed in `__other__`")


class EngineConfig(EngineSettings):
    """Event-time rules of the join and the windows, as the core uses them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def of(cls, settings: EngineSettings) -> EngineConfig:
        """The engine's part of any object carrying the engine settings."""
        return cls.model_validate({name: getattr(settings, name)
                                   for name in EngineSettings.model_fields})

    @model_validator(mode="after")
    def _check(self) -> EngineConfig:
        sizes = self.window_seconds
        if not sizes or sorted(sizes) != list(sizes) or len(set(sizes)) != len(sizes):
            raise ConfigurationError("window sizes must be distinct and ascending", sizes=sizes)
        if any(s % 60 for s in sizes):
            raise ConfigurationError("window sizes must be whole minutes", sizes=sizes)
        if any(s % sizes[0] for s in sizes):
            raise ConfigurationError("every window size must be a multiple of the smallest")
        for name in self.dimensions:
            if not name.isidentifier() or name in ("user", "customer"):
                raise ConfigurationError(
                    "a dimension is an attributes key made of letters, digits and _ "
                    "(user and customer are dimensions already)", dimension=name)
        if len(set(self.dimensions)) != len(self.dimensions):
            raise ConfigurationError("dimensions must be distinct", dimensions=self.dimensions)
        if self.horizon_seconds < self.deadline_seconds + self.retention_seconds:
            raise ConfigurationError(
                "the horizon must be at least the deadline plus the retention: a unit's "
                "summary is kept for the horizon after its last event, and a unit is "
                "evicted to its summary up to deadline + retention after it",
                horizon_seconds=self.horizon_seconds, deadline_seconds=self.deadline_seconds,
                retention_seconds=self.retention_seconds,
            )
        return self

    def review_rate(self, team: str) -> Decimal:
        return self.review_rates_by_team.get(team, self.review_rate_per_hour)
