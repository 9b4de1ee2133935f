-- Base tables written by the tokenyield sink. `{db}` is replaced with the configured
-- database. Money is Decimal(38, 18): exact to 10^-18 of the reporting currency.
-- Every table is a ReplacingMergeTree whose ORDER BY ends in the row's identity, so a
-- replay after a crash (at-least-once delivery) collapses to one row; read with FINAL
-- or through the views. Insert dedup tokens (the sink sets them from topic, partition
-- and offsets) need non_replicated_deduplication_window on non-replicated tables.

CREATE TABLE IF NOT EXISTS {db}.model_calls
(
    event_id String,
    work_unit_id String,
    occurred_at DateTime64(3, 'UTC'),
    provider LowCardinality(String),
    model LowCardinality(String),
    team LowCardinality(String),
    owner LowCardinality(String),
    workflow LowCardinality(String),
    task_type LowCardinality(String),
    agent LowCardinality(String),
    service LowCardinality(String),
    environment LowCardinality(String),
    status LowCardinality(String),
    attempt UInt16,
    input_tokens UInt64,
    output_tokens UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens UInt64,
    reasoning_tokens UInt64,
    system_prompt_tokens UInt64,
    context_tokens UInt64,
    latency_ms Nullable(UInt32),
    cost Nullable(Decimal(38, 18)) COMMENT 'reported cost if given, else computed; NULL = unpriced',
    computed_cost Nullable(Decimal(38, 18)),
    reported_cost Nullable(Decimal(38, 18)),
    currency LowCardinality(String),
    price_book_version LowCardinality(String),
    attributes Map(String, String),
    kafka_partition UInt16,
    kafka_offset UInt64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (team, workflow, toStartOfHour(occurred_at), work_unit_id, event_id)
TTL toDateTime(occurred_at) + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {db}.outcomes
(
    event_id String,
    work_unit_id String,
    occurred_at DateTime64(3, 'UTC'),
    team LowCardinality(String),
    workflow LowCardinality(String),
    status LowCardinality(String),
    accepted UInt8,
    value Nullable(Decimal(38, 18)) COMMENT 'in the reporting currency',
    original_value Nullable(Decimal(38, 18)),
    original_currency LowCardinality(String),
    value_dimension LowCardinality(String),
    human_review_minutes Decimal(18, 6),
    human_cost Decimal(38, 18),
    quality_score Nullable(Float32),
    baseline_cost Nullable(Decimal(38, 18)),
    evidence_confidence Nullable(Float32),
    is_final UInt8,
    kafka_partition UInt16,
    kafka_offset UInt64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (team, workflow, toStartOfHour(occurred_at), work_unit_id, event_id)
TTL toDateTime(occurred_at) + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {db}.attributions
(
    attribution_id String,
    work_unit_id String,
    revision UInt32,
    version UInt64 COMMENT '(last event second << 32) | revision: the latest wins',
    state LowCardinality(String),
    team LowCardinality(String),
    workflow LowCardinality(String),
    owner LowCardinality(String),
    task_type LowCardinality(String),
    service LowCardinality(String),
    environment LowCardinality(String),
    agent LowCardinality(String),
    models Array(LowCardinality(String)),
    primary_model LowCardinality(String),
    providers Array(LowCardinality(String)),
    first_event_at DateTime64(3, 'UTC'),
    last_event_at DateTime64(3, 'UTC'),
    calls UInt32,
    retries UInt32,
    failed_calls UInt32,
    input_tokens UInt64,
    output_tokens UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens UInt64,
    reasoning_tokens UInt64,
    system_prompt_tokens UInt64,
    context_tokens UInt64,
    currency LowCardinality(String),
    model_cost Decimal(38, 18),
    computed_cost Decimal(38, 18),
    reported_cost Nullable(Decimal(38, 18)),
    unpriced_calls UInt32,
    human_review_minutes Decimal(18, 6),
    human_cost Decimal(38, 18),
    fully_loaded_cost Decimal(38, 18),
    outcomes UInt32,
    outcome_status LowCardinality(String),
    accepted UInt8,
    is_final UInt8,
    value Nullable(Decimal(38, 18)),
    value_dimension LowCardinality(String),
    quality_score Nullable(Float32),
    baseline_cost Nullable(Decimal(38, 18)),
    evidence_confidence Nullable(Float32),
    cost_per_outcome Nullable(Decimal(38, 18)),
    yield_ratio Nullable(Decimal(38, 9)),
    net_value Nullable(Decimal(38, 18)),
    roi Nullable(Decimal(38, 9)),
    price_book_version LowCardinality(String),
    kafka_partition UInt16,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(last_event_at)
ORDER BY (work_unit_id, revision)
TTL toDateTime(last_event_at) + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

-- One row per work unit: the highest version wins (query with FINAL, or the views).
CREATE TABLE IF NOT EXISTS {db}.attributions_latest AS {db}.attributions
ENGINE = ReplacingMergeTree(version)
ORDER BY work_unit_id
TTL toDateTime(last_event_at) + INTERVAL 400 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.attributions_latest_mv TO {db}.attributions_latest
AS SELECT * FROM {db}.attributions;

CREATE TABLE IF NOT EXISTS {db}.cost_per_outcome_windows
(
    window_id String,
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    window_seconds UInt32,
    team LowCardinality(String),
    workflow LowCardinality(String),
    model LowCardinality(String) COMMENT '* = all models, with the outcome figures',
    agent LowCardinality(String) COMMENT 'set on per-agent spend rows (model = *)',
    revision UInt64,
    final UInt8,
    version UInt64 COMMENT 'final rows outrank running ones',
    currency LowCardinality(String),
    calls UInt64,
    retries UInt64,
    failed_calls UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cached_input_tokens UInt64,
    reasoning_tokens UInt64,
    overhead_tokens UInt64,
    system_prompt_tokens UInt64,
    spend Decimal(38, 18),
    unpriced_calls UInt64,
    work_units UInt64,
    outcomes UInt64,
    accepted_outcomes UInt64,
    value Decimal(38, 18),
    human_cost Decimal(38, 18),
    fully_loaded_cost Decimal(38, 18),
    linked_spend Decimal(38, 18),
    unlinked_spend Decimal(38, 18),
    cost_per_accepted_outcome Nullable(Decimal(38, 18)),
    acceptance_rate Nullable(Decimal(38, 9)),
    yield_ratio Nullable(Decimal(38, 9)),
    attribution_coverage Nullable(Decimal(38, 9)),
    retry_share Nullable(Decimal(38, 9)),
    context_share Nullable(Decimal(38, 9)),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_seconds, window_start, team, workflow, model, agent)
TTL toDateTime(window_start) + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {db}.alerts
(
    alert_id String,
    kind LowCardinality(String),
    status LowCardinality(String),
    severity LowCardinality(String),
    subject Map(String, String),
    team LowCardinality(String) MATERIALIZED subject['team'],
    workflow LowCardinality(String) MATERIALIZED subject['workflow'],
    observed Decimal(38, 18),
    expected Nullable(Decimal(38, 18)),
    threshold Nullable(Decimal(38, 18)),
    unit LowCardinality(String),
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    occurred_at DateTime64(3, 'UTC'),
    message String,
    details Map(String, String),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (kind, alert_id, status)
TTL toDateTime(occurred_at) + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    dead_letter_id String,
    source_topic LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset UInt64,
    item_index Nullable(UInt32),
    error_kind LowCardinality(String),
    reason String,
    raw String COMMENT 'base64 of the rejected bytes',
    raw_preview String,
    event_id Nullable(String),
    work_unit_id Nullable(String),
    rejected_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(rejected_at)
ORDER BY (source_topic, kafka_partition, kafka_offset, dead_letter_id)
TTL toDateTime(rejected_at) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {db}.late_events
(
    late_id String,
    source_topic LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset UInt64,
    event_kind LowCardinality(String),
    event_id String,
    work_unit_id String,
    occurred_at DateTime64(3, 'UTC'),
    watermark DateTime64(3, 'UTC'),
    lateness_seconds Float64,
    event String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(watermark)
ORDER BY (source_topic, kafka_partition, kafka_offset, late_id)
TTL toDateTime(watermark) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {db}.prices
(
    price_key String,
    provider LowCardinality(String),
    model String,
    model_pattern String,
    effective_from DateTime64(3, 'UTC'),
    currency LowCardinality(String),
    input_per_mtok Decimal(38, 18),
    output_per_mtok Decimal(38, 18),
    cached_input_per_mtok Nullable(Decimal(38, 18)),
    cache_write_per_mtok Nullable(Decimal(38, 18)),
    reasoning_per_mtok Nullable(Decimal(38, 18)),
    long_context String COMMENT 'JSON list of tiers',
    price_book_version LowCardinality(String),
    source String,
    loaded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY (provider, price_key);
