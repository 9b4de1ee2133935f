"""The one settings object: every knob, from the environment (``TOKENYIELD_*``) or a
``.env`` file, validated once at start-up and passed to whatever needs it.

Secrets (SASL password, ClickHouse DSN and password, webhook URL, HTTP tokens) are
``SecretStr``: printing the settings or logging them shows ``**********``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.codec import MAX_MESSAGE_BYTES
from schemas.errors import ConfigurationError
from schemas.kafka_options import KafkaConnection, SaslMechanism, SecurityProtocol
from schemas.otlp import DEFAULT_WORK_UNIT_SOURCES, OtlpConfig
from streams.core.alerts.alert_config import AlertConfig, AlertSettings
from streams.core.engine_config import EngineConfig, EngineSettings

ENV_PREFIX = "TOKENYIELD_"
#: The webhook mappings shipped with tokenyield (``deploy/webhooks`` of the checkout).
SHIPPED_WEBHOOK_MAPPINGS = Path(__file__).resolve().parents[1] / "deploy" / "webhooks"


def mask_dsn(dsn: str) -> str:
    """A DSN with its credentials (``user:password@``) replaced by ``***``."""
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return dsn


class Settings(BaseSettings, EngineSettings, AlertSettings):
    """tokenyield's configuration. See docs/CONFIGURATION.md for every variable. The
    engine's and the detectors' settings are declared once, in ``EngineSettings`` and
    ``AlertSettings`` (the core), and read from the environment like the rest."""

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
                          "empty = chdb under the data dir (relay://:token@host:port: "
                          "through a --processes group's writer)")
    clickhouse_database: str = Field("tokenyield", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    relay_token: SecretStr | None = Field(
        None, description="set by `tokenyield worker --processes N` on its writer: the "
                          "secret the group's other workers send with their inserts")
    relay_port: int = Field(
        0, ge=0, le=65535, description="set by `tokenyield worker --processes N` on its "
                                       "writer: where it listens for the group's inserts")
    clickhouse_username: str | None = None
    clickhouse_password: SecretStr | None = None
    clickhouse_cluster: str = Field(
        "", pattern=r"^([A-Za-z0-9_][A-Za-z0-9_.-]*)?$",
        description="ClickHouse cluster (remote_servers) to migrate ON CLUSTER: replicated "
                    "local tables behind Distributed ones (docs/SCALING.md); empty = one "
                    "node")
    price_catalog: Path | None = Field(None, description="Catalog file; empty = shipped")

    # -- event time -------------------------------------------------------------------

    # -- money ------------------------------------------------------------------------

    # -- checkpoints and the ClickHouse sink ----------------------------------------------
    checkpoint_interval_seconds: float = Field(1.0, gt=0)
    checkpoint_max_events: int = Field(100_000, ge=1)
    checkpoint_overlap: bool = Field(
        True, description="process the next messages while a checkpoint's ClickHouse "
                          "insert runs (acks and state still after it); false: wait for it")
    sink_retry_max_seconds: float = Field(30.0, gt=0)
    gc_young_threshold: int = Field(
        50_000, ge=0, description="Allocations between collections of Python's youngest "
                                  "generation in a worker (Python's default is 700, which "
                                  "spends a third of the engine's time collecting); 0 = "
                                  "Python's defaults")
    dashboard_settle_interval_seconds: float = Field(
        300.0, ge=0, description="How often the worker settles the quiet days of the unit "
                                 "panels (migration 0015; the figures are exact either "
                                 "way, settled days are only faster); 0 = never")
    dashboard_settle_horizon_days: int = Field(
        35, ge=1, le=400, description="How many days back a settling run looks")

    # -- alerts ------------------------------------------------------------------------
    webhook_url: SecretStr | None = None
    webhook_timeout_seconds: float = Field(5.0, gt=0)
    webhook_retries: int = Field(3, ge=0)

    # -- OTLP traces from the OpenTelemetry Collector --------------------------------------
    otlp_topic: str = Field(
        "otlp_spans", pattern=r"^[A-Za-z0-9._-]{0,249}$",
        description="The Collector Kafka exporter's traces topic (its default name, not "
                    "prefixed); empty = no OTLP input")
    otlp_work_unit_sources: tuple[str, ...] = Field(
        DEFAULT_WORK_UNIT_SOURCES,
        description="Where a span's work unit comes from, first present wins: span:KEY, "
                    "resource:KEY, trace_id")
    otlp_service_dimensions: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="service.name -> fallback team, workflow (and owner) for spans "
                    "without tokenyield.team / tokenyield.workflow")
    otlp_input_excludes_cache_scopes: tuple[str, ...] = Field(
        (), description="Instrumentation scopes that report input tokens without the "
                        "cache (as Anthropic's API counts them)")

    # -- HTTP ingest and the budget check -------------------------------------------------
    http_tokens: tuple[SecretStr, ...] = Field(
        (), description="Bearer tokens accepted by /v1/*; none = open on a loopback "
                        "web host only, refused on any other")
    http_max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, le=MAX_MESSAGE_BYTES,
        description="Largest request body (after decompression); larger = 413")
    webhook_mappings_dir: Path | None = Field(
        None, description="Directory of webhook mapping files; empty = deploy/webhooks")

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
        self.otlp_config()  # validates the work-unit sources and the service map
        if any(not token.get_secret_value().strip() for token in self.http_tokens):
            raise ConfigurationError("TOKENYIELD_HTTP_TOKENS holds an empty token",
                                     setting="http_tokens")
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
        return mask_dsn(self.clickhouse_target())

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
        return EngineConfig.of(self)

    def alert_config(self) -> AlertConfig:
        return AlertConfig.of(self, self.window_seconds[0])

    def otlp_config(self) -> OtlpConfig:
        """How OTLP spans become calls (the pure decoder's configuration)."""
        return OtlpConfig(work_unit_sources=self.otlp_work_unit_sources,
                          service_dimensions=self.otlp_service_dimensions,
                          input_excludes_cache_scopes=frozenset(
                              self.otlp_input_excludes_cache_scopes))

    def webhook_mappings(self) -> Path:
        """The directory the webhook mappings are read from."""
        return self.webhook_mappings_dir or SHIPPED_WEBHOOK_MAPPINGS

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def public(self) -> dict[str, Any]:
        """Settings for display: secrets masked."""
        return self.model_dump(mode="json")
