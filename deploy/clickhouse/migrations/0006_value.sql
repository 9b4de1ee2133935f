-- Fully loaded, quality-gated value (docs/SEMANTICS.md): cost items, the workflow
-- registry, success bars, verdicts, strategic value, user and customer.
--
-- * cost_items: what a unit costs besides model tokens (tools, retrieval, GPUs, seats,
--   people), and shared costs of a workflow (no work unit), in the reporting currency.
-- * Window rows gain the other and shared costs (part of fully_loaded_cost), the units
--   that failed a bar (quality, latency, integrity), the value of the accepted units,
--   the value at risk of overturned ones and strategic scores; yield_ratio is now
--   accepted_value / fully_loaded_cost.
-- * Attributions gain the same per unit, and model calls, outcomes and attributions
--   their user and customer.
-- * workflows: the registry in force (owner, success bar, business case).

CREATE TABLE IF NOT EXISTS {db}.cost_items
(
    event_id String,
    work_unit_id String COMMENT 'empty for a shared cost',
    shared UInt8 COMMENT '1: a cost of the team and workflow, allocated to their units',
    occurred_at DateTime64(3, 'UTC'),
    team LowCardinality(String),
    workflow LowCardinality(String),
    kind LowCardinality(String) COMMENT 'tool_call | embedding | retrieval | gpu | seat | infra | human_labour | other',
    amount Decimal(38, 18) COMMENT 'in the reporting currency',
    currency LowCardinality(String) COMMENT 'the reporting currency',
    original_amount Decimal(38, 18) COMMENT 'as sent (quantity x unit_price when priced so)',
    original_currency LowCardinality(String),
    quantity Nullable(Decimal(38, 18)),
    unit_price Nullable(Decimal(38, 18)),
    description String,
    user String,
    customer String,
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

CREATE TABLE IF NOT EXISTS {db}.workflows
(
    team LowCardinality(String),
    workflow LowCardinality(String),
    owner String,
    success_statuses Array(LowCardinality(String)),
    min_quality_score Nullable(Float64),
    max_latency_ms Nullable(UInt32),
    baseline_minutes_per_unit Nullable(Decimal(18, 6)),
    baseline_rate_per_hour Nullable(Decimal(38, 18)),
    baseline_cost_per_unit Nullable(Decimal(38, 18)),
    target_cost_per_accepted_outcome Nullable(Decimal(38, 18)),
    expected_value_per_unit Nullable(Decimal(38, 18)),
    started_on Nullable(Date),
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3),
    is_deleted UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(updated_at, is_deleted)
ORDER BY (team, workflow);

ALTER TABLE {db}.model_calls
    ADD COLUMN IF NOT EXISTS user String DEFAULT '' COMMENT 'the end user the call served',
    ADD COLUMN IF NOT EXISTS customer String DEFAULT '' COMMENT 'the customer it served';

ALTER TABLE {db}.outcomes
    ADD COLUMN IF NOT EXISTS verdict LowCardinality(String) DEFAULT ''
        COMMENT 'upheld | overturned: a later review (status is empty on a verdict)',
    ADD COLUMN IF NOT EXISTS value_at_risk Nullable(Decimal(38, 18))
        COMMENT 'of an overturned verdict, in the reporting currency',
    ADD COLUMN IF NOT EXISTS strategic_score Nullable(Decimal(9, 6)),
    ADD COLUMN IF NOT EXISTS user String DEFAULT '',
    ADD COLUMN IF NOT EXISTS customer String DEFAULT '';

ALTER TABLE {db}.attributions
    ADD COLUMN IF NOT EXISTS user String DEFAULT '',
    ADD COLUMN IF NOT EXISTS customer String DEFAULT '',
    ADD COLUMN IF NOT EXISTS other_cost Decimal(38, 18) DEFAULT 0 COMMENT 'its cost items',
    ADD COLUMN IF NOT EXISTS other_cost_by_kind Map(String, Decimal(38, 18)),
    ADD COLUMN IF NOT EXISTS cost_items UInt32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS quality_failed UInt8 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS latency_failed UInt8 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS integrity_failed UInt8 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS max_latency_ms UInt32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS verdict LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS value_at_risk Nullable(Decimal(38, 18)),
    ADD COLUMN IF NOT EXISTS accepted_value Nullable(Decimal(38, 18)),
    ADD COLUMN IF NOT EXISTS strategic_score Nullable(Decimal(9, 6));

ALTER TABLE {db}.attributions_latest
    ADD COLUMN IF NOT EXISTS user String DEFAULT '',
    ADD COLUMN IF NOT EXISTS customer String DEFAULT '',
    ADD COLUMN IF NOT EXISTS other_cost Decimal(38, 18) DEFAULT 0 COMMENT 'its cost items',
    ADD COLUMN IF NOT EXISTS other_cost_by_kind Map(String, Decimal(38, 18)),
    ADD COLUMN IF NOT EXISTS cost_items UInt32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS quality_failed UInt8 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS latency_failed UInt8 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS integrity_failed UInt8 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS max_latency_ms UInt32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS verdict LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS value_at_risk Nullable(Decimal(38, 18)),
    ADD COLUMN IF NOT EXISTS accepted_value Nullable(Decimal(38, 18)),
    ADD COLUMN IF NOT EXISTS strategic_score Nullable(Decimal(9, 6));

-- The view copying each attribution into attributions_latest names its columns when it
-- is created: made again, it copies the new ones too.
DROP VIEW IF EXISTS {db}.attributions_latest_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.attributions_latest_mv TO {db}.attributions_latest
AS SELECT * FROM {db}.attributions;

ALTER TABLE {db}.cost_per_outcome_windows
    ADD COLUMN IF NOT EXISTS other_cost Decimal(38, 18) DEFAULT 0 COMMENT 'cost items of work units',
    ADD COLUMN IF NOT EXISTS shared_cost Decimal(38, 18) DEFAULT 0 COMMENT 'cost items without a work unit',
    ADD COLUMN IF NOT EXISTS cost_items Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS quality_failed_units Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS latency_failed_units Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS integrity_failed_units Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS accepted_value Decimal(38, 18) DEFAULT 0 COMMENT 'value of the accepted units',
    ADD COLUMN IF NOT EXISTS value_at_risk Decimal(38, 18) DEFAULT 0 COMMENT 'of the overturned units',
    ADD COLUMN IF NOT EXISTS strategic_units Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS strategic_score_sum Decimal(38, 6) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS strategic_confidence_sum Decimal(38, 6) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS strategic_confident_units Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS error_adjusted_yield Nullable(Decimal(38, 9)),
    ADD COLUMN IF NOT EXISTS integrity_failure_rate Nullable(Decimal(38, 9));

-- Rows written before this migration booked no accepted value: their yield was
-- value / cost, so they keep that (accepted_value = value) and history reads the same.
ALTER TABLE {db}.cost_per_outcome_windows
    UPDATE accepted_value = value WHERE accepted_value = 0 AND value != 0;

-- Every window's figures: its row plus its corrections, added up (as in 0004, with the
-- new figures).
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
    sum(w.other_cost) AS other_cost,
    sum(w.shared_cost) AS shared_cost,
    sum(w.cost_items) AS cost_items,
    sum(w.fully_loaded_cost) AS fully_loaded_cost,
    sum(w.linked_spend) AS linked_spend,
    sum(w.unlinked_spend) AS unlinked_spend,
    sum(w.quality_failed_units) AS quality_failed_units,
    sum(w.latency_failed_units) AS latency_failed_units,
    sum(w.integrity_failed_units) AS integrity_failed_units,
    sum(w.accepted_value) AS accepted_value,
    sum(w.value_at_risk) AS value_at_risk,
    sum(w.strategic_units) AS strategic_units,
    sum(w.strategic_score_sum) AS strategic_score_sum,
    sum(w.strategic_confidence_sum) AS strategic_confidence_sum,
    sum(w.strategic_confident_units) AS strategic_confident_units
FROM {db}.cost_per_outcome_windows AS w FINAL
GROUP BY window_seconds, window_start, team, workflow, scope, model, agent;

-- Cost per accepted outcome by hour, team and workflow (as in 0004): the fully loaded
-- cost now includes cost items, and yield is the accepted units' value over it.
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
    w.quality_failed_units AS quality_failed_units,
    w.latency_failed_units AS latency_failed_units,
    w.integrity_failed_units AS integrity_failed_units,
    w.spend AS spend,
    w.human_cost AS human_cost,
    w.other_cost AS other_cost,
    w.shared_cost AS shared_cost,
    w.fully_loaded_cost AS fully_loaded_cost,
    w.value AS value,
    w.accepted_value AS accepted_value,
    w.value_at_risk AS value_at_risk,
    w.linked_spend AS linked_spend,
    w.unlinked_spend AS unlinked_spend,
    w.fully_loaded_cost / nullIf(w.accepted_outcomes, 0) AS cost_per_accepted_outcome,
    w.accepted_outcomes / nullIf(w.decided_units, 0) AS acceptance_rate,
    toFloat64(w.accepted_value) / nullIf(toFloat64(w.fully_loaded_cost), 0) AS yield_ratio,
    toFloat64(w.accepted_value - w.value_at_risk) / nullIf(toFloat64(w.fully_loaded_cost), 0)
        AS error_adjusted_yield,
    w.integrity_failed_units / nullIf(w.decided_units, 0) AS integrity_failure_rate,
    toFloat64(w.linked_spend) / nullIf(toFloat64(w.linked_spend + w.unlinked_spend), 0)
        AS attribution_coverage
FROM {db}.v_window_totals AS w
WHERE w.window_seconds = 3600 AND w.scope = 'total';

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
    sum(h.other_cost) AS other_cost,
    sum(h.shared_cost) AS shared_cost,
    sum(h.fully_loaded_cost) AS fully_loaded_cost,
    sum(h.value) AS value,
    sum(h.accepted_value) AS accepted_value,
    sum(h.fully_loaded_cost) / nullIf(sum(h.accepted_outcomes), 0) AS cost_per_accepted_outcome,
    sum(h.accepted_outcomes) / nullIf(sum(h.decided_units), 0) AS acceptance_rate
FROM {db}.v_cost_per_accepted_outcome AS h
GROUP BY day, team, workflow;

-- Yield by UTC day and workflow: the accepted units' value per unit of fully loaded cost
-- (model spend, human review, cost items), net value, and the error-adjusted yield
-- (value at risk of overturned answers taken off).
CREATE OR REPLACE VIEW {db}.v_yield_by_workflow AS
SELECT
    toDate(h.hour) AS day,
    h.team AS team,
    h.workflow AS workflow,
    sum(h.accepted_value) AS value,
    sum(h.value) AS outcome_value,
    sum(h.spend) AS spend,
    sum(h.human_cost) AS human_cost,
    sum(h.other_cost) AS other_cost,
    sum(h.shared_cost) AS shared_cost,
    sum(h.fully_loaded_cost) AS fully_loaded_cost,
    sum(h.value_at_risk) AS value_at_risk,
    sum(h.accepted_value) - sum(h.fully_loaded_cost) AS net_value,
    toFloat64(sum(h.accepted_value)) / nullIf(toFloat64(sum(h.fully_loaded_cost)), 0)
        AS yield_ratio,
    toFloat64(sum(h.accepted_value) - sum(h.value_at_risk))
        / nullIf(toFloat64(sum(h.fully_loaded_cost)), 0) AS error_adjusted_yield,
    sum(h.outcomes) AS outcomes,
    sum(h.decided_units) AS decided_units,
    sum(h.accepted_outcomes) AS accepted_outcomes
FROM {db}.v_cost_per_accepted_outcome AS h
GROUP BY day, team, workflow;

-- Success and its failures by UTC day and workflow: units decided, accepted, and failed
-- on status, quality, latency or integrity (an overturned verdict); and strategic value,
-- reported apart from money (mean score and mean evidence confidence).
CREATE OR REPLACE VIEW {db}.v_quality_by_workflow AS
SELECT
    toDate(w.window_start) AS day,
    w.team AS team,
    w.workflow AS workflow,
    sum(w.decided_units) AS decided_units,
    sum(w.accepted_outcomes) AS accepted_units,
    sum(w.quality_failed_units) AS quality_failed_units,
    sum(w.latency_failed_units) AS latency_failed_units,
    sum(w.integrity_failed_units) AS integrity_failed_units,
    sum(w.decided_units) - sum(w.accepted_outcomes) - sum(w.quality_failed_units)
        - sum(w.latency_failed_units) - sum(w.integrity_failed_units) AS status_failed_units,
    sum(w.quality_failed_units) / nullIf(sum(w.decided_units), 0) AS quality_failure_rate,
    sum(w.latency_failed_units) / nullIf(sum(w.decided_units), 0) AS latency_failure_rate,
    sum(w.integrity_failed_units) / nullIf(sum(w.decided_units), 0) AS integrity_failure_rate,
    sum(w.value_at_risk) AS value_at_risk,
    sum(w.strategic_units) AS strategic_units,
    sum(w.strategic_score_sum) / nullIf(sum(w.strategic_units), 0) AS strategic_score_mean,
    sum(w.strategic_confidence_sum) / nullIf(sum(w.strategic_confident_units), 0)
        AS strategic_confidence_mean
FROM {db}.v_window_totals AS w
WHERE w.window_seconds = 3600 AND w.scope = 'total'
GROUP BY day, team, workflow;

-- Cost items by hour, team, workflow and kind (shared ones apart): the breakdown of the
-- other costs. Exact: a replayed item counts once (FINAL).
CREATE OR REPLACE VIEW {db}.v_cost_items_hourly AS
SELECT
    toStartOfHour(c.occurred_at) AS hour,
    c.team AS team,
    c.workflow AS workflow,
    c.kind AS kind,
    c.shared AS shared,
    any(c.currency) AS currency,
    count() AS items,
    sum(c.amount) AS amount
FROM {db}.cost_items AS c FINAL
GROUP BY hour, team, workflow, kind, shared;

-- Shared costs allocated to the units of their team and workflow, in proportion to each
-- unit's model spend in the item's UTC hour (docs/SEMANTICS.md, *Shared costs*). Exact:
-- amounts in 10^-18 units, each share rounded down and the remainder given to the unit
-- with the largest spend (ties: the smallest id), so an item's allocations add up to
-- it. An item whose hour has no spend in its workflow is left unallocated
-- (work_unit_id empty).
CREATE OR REPLACE VIEW {db}.v_shared_cost_allocation AS
WITH
    items AS (
        SELECT event_id, occurred_at, toStartOfHour(occurred_at) AS hour, team, workflow,
               kind, toInt256(amount * toDecimal256(1000000000000000000, 0)) AS atto
        FROM {db}.cost_items FINAL
        WHERE shared = 1
    ),
    units AS (
        SELECT toStartOfHour(occurred_at) AS hour, team, workflow, work_unit_id,
               toInt256(sum(coalesce(cost, 0)) * toDecimal256(1000000000000000000, 0))
                   AS spend_atto
        FROM {db}.model_calls FINAL
        WHERE (toStartOfHour(occurred_at), team, workflow) IN (SELECT hour, team, workflow FROM items)
        GROUP BY hour, team, workflow, work_unit_id
        HAVING spend_atto > 0
    ),
    shares AS (
        SELECT i.event_id AS event_id, i.occurred_at AS occurred_at, i.team AS team,
               i.workflow AS workflow, i.kind AS kind, i.atto AS item_atto,
               u.work_unit_id AS work_unit_id,
               intDiv(i.atto * u.spend_atto,
                      sum(u.spend_atto) OVER (PARTITION BY i.event_id)) AS floor_atto,
               row_number() OVER (PARTITION BY i.event_id
                                  ORDER BY u.spend_atto DESC, u.work_unit_id) AS rank
        FROM items AS i
        INNER JOIN units AS u ON u.hour = i.hour AND u.team = i.team AND u.workflow = i.workflow
    )
SELECT event_id, occurred_at, team, workflow, kind, work_unit_id,
       toDecimal128(floor_atto + if(rank = 1, item_atto - sum(floor_atto)
                    OVER (PARTITION BY event_id), 0), 0) * toDecimal128('0.000000000000000001', 18)
           AS allocated
FROM shares
UNION ALL
SELECT i.event_id, i.occurred_at, i.team, i.workflow, i.kind, '' AS work_unit_id,
       toDecimal128(i.atto, 0) * toDecimal128('0.000000000000000001', 18) AS allocated
FROM items AS i
WHERE (i.hour, i.team, i.workflow) NOT IN (SELECT hour, team, workflow FROM units);
