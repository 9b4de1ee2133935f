"""The one settings object: every knob, from the environment (``TOKENYIELD_*``) or a
``.env`` file, validated once at start-up and passed to whatever needs it.

Secrets (SASL password, ClickHouse DSN and password, webhook URL) are ``SecretStr``:
printing the settings or logging them shows ``**********``.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import ConfigurationError
from schemas.kafka_options import KafkaConnection, SaslMechanism, SecurityProtocol
from streams.core.engine_config import EngineConfig

ENV_PREFIX = "TOKENYIELD_"


class Budget(BaseSettings):
    """A spend budget for a team, or a team's workflow."""

    model_config = SettingsConfigDict(frozen=True)

    team: str
    workflow: str = Field("", description="Empty: the whole team.")
    period: Literal["daily", "monthly"]
    amount: Decimal = Field(gt=0)
    soft_share: Decimal = Field(Decimal("0.8"), gt=0, le=1, description="Warn at this share.")


class Settings(BaseSettings):
    """tokenyield's configuration. See docs/CONFIGURATION.md for every variable."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore",
        frozen=True,
    )

    # -- Kafka ---------------------------------------------------------------------
    kafka_bootstrap: str = Field("", description="host:port[,host:port]; empty = embedded")
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    topic_prefix: str = "tokenyield."
    partitions: int = Field(4, ge=1, le=1024)
    replication_factor: int = Field(1, ge=1)
    app_id: str = "tokenyield"
    kafka_connect_timeout_seconds: float = Field(
        300.0, gt=0, description="How long to wait for Kafka at start-up before giving up")
    rebalance_timeout_seconds: float | None = Field(
        None, gt=0, description="Consumer-group rebalance timeout; empty = 3 s on the "
                                "embedded broker (which holds every join that long), 30 s else")
    fetch_max_wait_ms: int = Field(
        100, ge=1, le=5000, description="How long a fetch may wait for data. Faust fixes "
                                        "1500 ms; the embedded broker holds every fetch "
                                        "that long, which is attribution latency")

    # -- state and storage -----------------------------------------------------------
    data_dir: Path = Path(".tokenyield")
    state_store: str = Field("rocksdb://", pattern=r"^(rocksdb|memory)://$")
    rocksdb_write_buffer_mb: int = Field(
        16, ge=1, le=1024, description="RocksDB memtable size per state partition (Faust's "
                                        "default, 64 MiB x 3 per partition, is most of a "
                                        "worker's memory before the first flush)")
    rocksdb_max_write_buffers: int = Field(2, ge=2, le=16)
    rocksdb_block_cache_mb: int = Field(
        16, ge=1, le=65536, description="RocksDB read cache per state partition; state is "
                                         "read only when a partition is restored")
    clickhouse_dsn: SecretStr | None = Field(
        None, description="chdb:///abs/path or http(s)://user:pass@host:8123; "
                          "empty = chdb under the data dir")
    clickhouse_database: str = Field("tokenyield", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    clickhouse_username: str | None = None
    clickhouse_password: SecretStr | None = None
    clickhouse_cluster: str = Field(
        "", pattern=r"^([A-Za-z0-9_][A-Za-z0-9_.-]*)?$",
        description="ClickHouse cluster (remote_servers) to migrate ON CLUSTER: replicated "
                    "local tables behind Distributed ones (docs/SCALING.md); empty = one "
                    "node")
    price_catalog: Path | None = Field(None, description="Catalog file; empty = shipped")

    # -- event time -------------------------------------------------------------------
    window_seconds: tuple[int, ...] = (60, 3600)
    allowed_lateness_seconds: int = Field(300, ge=0)
    deadline_seconds: int = Field(86_400, gt=0)
    retention_seconds: int = Field(3_600, ge=0)
    horizon_seconds: int = Field(35 * 86_400, gt=0)
    max_future_skew_seconds: int = Field(3_600, ge=0)
    input_idle_seconds: int = Field(30, ge=0)

    # -- money ------------------------------------------------------------------------
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    fx_rates: dict[str, Decimal] = Field(default_factory=dict)
    review_rate_per_hour: Decimal = Field(Decimal(60), ge=0)
    review_rates_by_team: dict[str, Decimal] = Field(default_factory=dict)

    # -- checkpoints and the ClickHouse sink ----------------------------------------------
    checkpoint_interval_seconds: float = Field(1.0, gt=0)
    checkpoint_max_events: int = Field(100_000, ge=1)
    sink_retry_max_seconds: float = Field(30.0, gt=0)

    # -- alerts ------------------------------------------------------------------------
    runaway_max_calls: int = Field(200, ge=1)
    runaway_max_tokens: int = Field(2_000_000, ge=1)
    runaway_max_cost: Decimal = Field(Decimal(25), gt=0)
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
    alert_cooldown_seconds: int = Field(900, ge=0)
    budgets: list[Budget] = Field(default_factory=list)
    webhook_url: SecretStr | None = None
    webhook_timeout_seconds: float = Field(5.0, gt=0)
    webhook_retries: int = Field(3, ge=0)

    # -- operations --------------------------------------------------------------------
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=0, le=65535)
    tick_interval_seconds: float = Field(0.5, gt=0)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ConfigurationError(
                "SASL needs TOKENYIELD_KAFKA_SASL_USERNAME and TOKENYIELD_KAFKA_SASL_PASSWORD")
        if self.clickhouse_cluster and self.clickhouse_target().startswith("chdb://"):
            # The embedded engine has no Keeper and no remote servers: every ON CLUSTER
            # statement would fail, after the first had half-run.
            raise ConfigurationError(
                "TOKENYIELD_CLICKHOUSE_CLUSTER needs a ClickHouse server "
                "(TOKENYIELD_CLICKHOUSE_DSN=http(s)://...), not the embedded chdb")
        self.engine_config()  # validates the event-time rules
        return self

    # -- derived views -------------------------------------------------------------------
    @property
    def embedded(self) -> bool:
        return not self.kafka_bootstrap.strip()

    def kafka(self, bootstrap: str | None = None, client_id: str = "tokenyield") -> KafkaConnection:
        return KafkaConnection(
            bootstrap=bootstrap or self.kafka_bootstrap,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
            client_id=client_id,
        )

    def clickhouse_target(self) -> str:
        """The DSN to connect to (a secret: never log it)."""
        if self.clickhouse_dsn is not None and self.clickhouse_dsn.get_secret_value():
            return self.clickhouse_dsn.get_secret_value()
        return f"chdb://{self.data_dir / 'clickhouse'}"

    def clickhouse_display(self) -> str:
        """The DSN with any credentials removed, for logs and messages."""
        target = self.clickhouse_target()
        if "@" in target and "://" in target:
            scheme, rest = target.split("://", 1)
            return f"{scheme}://***@{rest.split('@', 1)[1]}"
        return target

    def rebalance_timeout(self) -> float:
        if self.rebalance_timeout_seconds is not None:
            return self.rebalance_timeout_seconds
        return 3.0 if self.embedded else 30.0

    def rocksdb_options(self) -> dict[str, int]:
        """Options for each Faust table's RocksDB (one database per table partition).
        A fresh dict per call: Faust pops keys out of the mapping it is given."""
        mib = 1024 * 1024
        return {"write_buffer_size": self.rocksdb_write_buffer_mb * mib,
                "max_write_buffer_number": self.rocksdb_max_write_buffers,
                "block_cache_size": self.rocksdb_block_cache_mb * mib,
                "block_cache_compressed_size": self.rocksdb_block_cache_mb * mib}

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            partitions=self.partitions,
            window_seconds=self.window_seconds,
            allowed_lateness_seconds=self.allowed_lateness_seconds,
            deadline_seconds=self.deadline_seconds,
            retention_seconds=self.retention_seconds,
            horizon_seconds=self.horizon_seconds,
            max_future_skew_seconds=self.max_future_skew_seconds,
            input_idle_seconds=self.input_idle_seconds,
            currency=self.currency,
            fx_rates=self.fx_rates,
            review_rate_per_hour=self.review_rate_per_hour,
            review_rates_by_team=self.review_rates_by_team,
            runaway_max_calls=self.runaway_max_calls,
            runaway_max_tokens=self.runaway_max_tokens,
            runaway_max_cost=self.runaway_max_cost,
        )

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def public(self) -> dict[str, Any]:
        """Settings for display: secrets masked."""
        return self.model_dump(mode="json")
