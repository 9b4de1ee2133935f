-- The ledger (docs/SEMANTICS.md): every figure exact under replays, whatever the delay.
--
-- * Window rows say what they are (`scope`: total, model or agent; a model may be called
--   anything, `*` included) and may come with correction rows: changes that reached a
--   window after it was final, one row each (`correction` = the source partition and
--   checkpoint). A window's figures are its row plus its corrections: every view adds
--   them up (v_window_totals). Acceptance counts work units by their deciding outcome
--   (`decided_units`, `accepted_outcomes`); `outcomes` counts outcome events.
-- * model_usage_hourly is no longer an incremental rollup (which counted a replayed call
--   again): it is an exact view over the hourly model rows.
-- * model_calls says which currency each amount is in: `currency` is the reporting
--   currency of `cost` and `computed_cost`; `reported_currency` is that of
--   `reported_cost` as sent; `price_currency` that of the price entry used.

RENAME TABLE {db}.cost_per_outcome_windows TO {db}.cost_per_outcome_windows_v1;

CREATE TABLE IF NOT EXISTS {db}.cost_per_outcome_windows
(
    window_id String,
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    window_seconds UInt32,
    team LowCardinality(String),
    workflow LowCardinality(String),
    scope LowCardinality(String) COMMENT 'total | model | agent',
    model LowCardinality(String) COMMENT 'the model of a model row; * on total and agent rows',
    agent LowCardinality(String) COMMENT 'the agent of an agent row',
    correction String COMMENT 'empty for the window''s own row; else a correction''s id',
    revision UInt64,
    final UInt8,
    version UInt64 COMMENT 'final rows outrank running ones',
    currency LowCardinality(String),
    calls Int64,
    retries Int64,
    failed_calls Int64,
    input_tokens Int64,
    output_tokens Int64,
    cached_input_tokens Int64,
    cache_write_tokens Int64,
    reasoning_tokens Int64,
    overhead_tokens Int64,
    system_prompt_tokens Int64,
    latency_ms_sum Int64 COMMENT 'summed latency of the calls that gave one',
    latency_calls Int64,
    spend Decimal(38, 18),
    unpriced_calls Int64,
    work_units Int64,
    outcomes Int64 COMMENT 'outcome events',
    decided_units Int64 COMMENT 'units whose deciding outcome is in the window',
    accepted_outcomes Int64 COMMENT 'units accepted by their deciding outcome',
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
ORDER BY (window_seconds, window_start, team, workflow, scope, model, agent, correction)
TTL toDateTime(window_start) + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

-- Rows written before this migration: their scope follows from model and agent; they
-- counted outcome events as accepted outcomes, so decided_units takes the outcome count.
INSERT INTO {db}.cost_per_outcome_windows
SELECT window_id, window_start, window_end, window_seconds, team, workflow,
       multiIf(agent != '', 'agent', model = '*', 'total', 'model') AS scope, model, agent,
       '' AS correction, revision, final, version, currency, calls, retries, failed_calls,
       input_tokens, output_tokens, cached_input_tokens, 0 AS cache_write_tokens,
       reasoning_tokens, overhead_tokens, system_prompt_tokens, 0 AS latency_ms_sum,
       0 AS latency_calls, spend, unpriced_calls,
       work_units, outcomes, outcomes AS decided_units, accepted_outcomes, value,
       human_cost, fully_loaded_cost, linked_spend, unlinked_spend,
       cost_per_accepted_outcome, acceptance_rate, yield_ratio, attribution_coverage,
       retry_share, context_share, ingested_at
FROM {db}.cost_per_outcome_windows_v1 FINAL;

DROP TABLE IF EXISTS {db}.cost_per_outcome_windows_v1;

DROP VIEW IF EXISTS {db}.model_usage_hourly_mv;

DROP TABLE IF EXISTS {db}.model_usage_hourly;

ALTER TABLE {db}.model_calls
    ADD COLUMN IF NOT EXISTS reported_currency LowCardinality(String) DEFAULT ''
        COMMENT 'the currency reported_cost was sent in',
    ADD COLUMN IF NOT EXISTS price_currency LowCardinality(String) DEFAULT ''
        COMMENT 'the currency of the price entry that priced the call',
    ADD COLUMN IF NOT EXISTS service_tier LowCardinality(String) DEFAULT ''
        COMMENT 'the provider''s service tier (flex, priority, batch...); empty = standard',
    ADD COLUMN IF NOT EXISTS cache_write_1h_tokens UInt64 DEFAULT 0
        COMMENT 'the part of cache_write_tokens written for one hour';

-- Every window's figures: its row plus its corrections, added up. The base of every
-- view below; ratios are recomputed from the sums. `final` is 1 once the window's row
-- is final (correction rows always are).
CREATE OR REPLACE VIEW {db}.v_window_totals AS
SELECT
    w.window_seconds AS window_seconds,
    w.window_start AS window_start,
    any(w.window_end) AS window_end,
    w.team AS team,
    w.workflow AS workflow,
    w.scope AS scope,
    w.model AS model,
    w.agent AS agent,
    max(w.final) AS final,
    count() - 1 AS corrections,
    any(w.currency) AS currency,
    sum(w.calls) AS calls,
    sum(w.retries) AS retries,
    sum(w.failed_calls) AS failed_calls,
    sum(w.input_tokens) AS input_tokens,
    sum(w.output_tokens) AS output_tokens,
    sum(w.cached_input_tokens) AS cached_input_tokens,
    sum(w.cache_write_tokens) AS cache_write_tokens,
    sum(w.reasoning_tokens) AS reasoning_tokens,
    sum(w.overhead_tokens) AS overhead_tokens,
    sum(w.system_prompt_tokens) AS system_prompt_tokens,
    sum(w.latency_ms_sum) AS latency_ms_sum,
    sum(w.latency_calls) AS latency_calls,
    sum(w.spend) AS spend,
    sum(w.unpriced_calls) AS unpriced_calls,
    sum(w.work_units) AS work_units,
    sum(w.outcomes) AS outcomes,
    sum(w.decided_units) AS decided_units,
    sum(w.accepted_outcomes) AS accepted_outcomes,
    sum(w.value) AS value,
    sum(w.human_cost) AS human_cost,
    sum(w.fully_loaded_cost) AS fully_loaded_cost,
    sum(w.linked_spend) AS linked_spend,
    sum(w.unlinked_spend) AS unlinked_spend
FROM {db}.cost_per_outcome_windows AS w FINAL
GROUP BY window_seconds, window_start, team, workflow, scope, model, agent;

-- Cost per accepted outcome by hour, team and workflow: the hourly total rows. The
-- numerator is the fully loaded spend of the hour (model spend of the hour's calls plus
-- review cost of the hour's outcomes); the denominator, the work units accepted by their
-- deciding outcome in the hour. Needs 3600 among TOKENYIELD_WINDOW_SECONDS (the default).
CREATE OR REPLACE VIEW {db}.v_cost_per_accepted_outcome AS
SELECT
    toDateTime(w.window_start, 'UTC') AS hour,
    w.team AS team,
    w.workflow AS workflow,
    w.currency AS currency,
    w.final AS final,
    w.calls AS calls,
    w.work_units AS work_units,
    w.outcomes AS outcomes,
    w.decided_units AS decided_units,
    w.accepted_outcomes AS accepted_outcomes,
    w.spend AS spend,
    w.human_cost AS human_cost,
    w.fully_loaded_cost AS fully_loaded_cost,
    w.value AS value,
    w.linked_spend AS linked_spend,
    w.unlinked_spend AS unlinked_spend,
    w.fully_loaded_cost / nullIf(w.accepted_outcomes, 0) AS cost_per_accepted_outcome,
    w.accepted_outcomes / nullIf(w.decided_units, 0) AS acceptance_rate,
    toFloat64(w.value) / nullIf(toFloat64(w.fully_loaded_cost), 0) AS yield_ratio,
    toFloat64(w.linked_spend) / nullIf(toFloat64(w.linked_spend + w.unlinked_spend), 0)
        AS attribution_coverage
FROM {db}.v_window_totals AS w
WHERE w.window_seconds = 3600 AND w.scope = 'total';

-- The same by UTC day: sums first, ratios of the sums (never an average of ratios).
CREATE OR REPLACE VIEW {db}.v_cost_per_accepted_outcome_daily AS
SELECT
    toDate(h.hour) AS day,
    h.team AS team,
    h.workflow AS workflow,
    any(h.currency) AS currency,
    sum(h.calls) AS calls,
    sum(h.outcomes) AS outcomes,
    sum(h.decided_units) AS decided_units,
    sum(h.accepted_outcomes) AS accepted_outcomes,
    sum(h.spend) AS spend,
    sum(h.human_cost) AS human_cost,
    sum(h.fully_loaded_cost) AS fully_loaded_cost,
    sum(h.value) AS value,
    sum(h.fully_loaded_cost) / nullIf(sum(h.accepted_outcomes), 0) AS cost_per_accepted_outcome,
    sum(h.accepted_outcomes) / nullIf(sum(h.decided_units), 0) AS acceptance_rate
FROM {db}.v_cost_per_accepted_outcome AS h
GROUP BY day, team, workflow;

-- Waste by UTC day, team, workflow and model, from the hourly model rows: calls that
-- were retries, input tokens that were system prompt or context, calls without a price.
-- (A model row can exist without calls: linked and unlinked spend is booked in the
-- window where the spend got linked or expired. Those rows say nothing about waste.)
CREATE OR REPLACE VIEW {db}.v_waste AS
SELECT
    toDate(w.window_start) AS day,
    w.team AS team,
    w.workflow AS workflow,
    w.model AS model,
    sum(w.calls) AS calls,
    sum(w.retries) AS retries,
    sum(w.failed_calls) AS failed_calls,
    sum(w.unpriced_calls) AS unpriced_calls,
    sum(w.input_tokens) AS input_tokens,
    sum(w.overhead_tokens) AS overhead_tokens,
    sum(w.system_prompt_tokens) AS system_prompt_tokens,
    sum(w.spend) AS spend,
    sum(w.retries) / nullIf(sum(w.calls), 0) AS retry_share,
    sum(w.failed_calls) / nullIf(sum(w.calls), 0) AS failed_share,
    sum(w.overhead_tokens) / nullIf(sum(w.input_tokens), 0) AS context_share,
    sum(w.unpriced_calls) / nullIf(sum(w.calls), 0) AS unpriced_share
FROM {db}.v_window_totals AS w
WHERE w.window_seconds = 3600 AND w.scope = 'model'
GROUP BY day, team, workflow, model
HAVING calls > 0;

-- Hourly usage by team, workflow and model: exact (replayed calls count once, late ones
-- are in through their corrections), from the hourly model rows.
CREATE OR REPLACE VIEW {db}.model_usage_hourly AS
SELECT
    toDateTime(w.window_start, 'UTC') AS hour,
    w.team AS team,
    w.workflow AS workflow,
    w.model AS model,
    w.calls AS calls,
    w.retries AS retries,
    w.failed_calls AS failed_calls,
    w.input_tokens AS input_tokens,
    w.output_tokens AS output_tokens,
    w.cached_input_tokens AS cached_input_tokens,
    w.cache_write_tokens AS cache_write_tokens,
    w.reasoning_tokens AS reasoning_tokens,
    w.system_prompt_tokens AS system_prompt_tokens,
    w.overhead_tokens - w.system_prompt_tokens AS context_tokens,
    w.spend AS cost,
    w.unpriced_calls AS unpriced_calls,
    w.latency_ms_sum AS latency_ms_sum,
    w.latency_calls AS latency_calls
FROM {db}.v_window_totals AS w
WHERE w.window_seconds = 3600 AND w.scope = 'model' AND w.calls != 0
;
