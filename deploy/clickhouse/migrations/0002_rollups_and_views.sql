-- Rollups, budgets and the views people (and Grafana) query. docs/CLICKHOUSE.md explains
-- each one; in short:
--
-- * Views whose name starts with v_ are exact: they read the base tables, or the
--   cost_per_outcome_windows rows, with FINAL, so a replayed row is never counted twice.
--   The windows table is small (one row per hour, team, workflow and model), which makes
--   the views built on it cheap; the ones that need work-unit detail (coverage with
--   pending spend, spenders without outcomes, intervention) read model_calls, outcomes
--   and attributions_latest with FINAL and cost a scan (docs/CLICKHOUSE.md says which).
-- * model_usage_hourly is an incremental rollup fed by every insert into model_calls.
--   It is cheap at any range but approximate: a replay that re-inserts calls in batches
--   shaped differently from the first attempt (a crash between the ClickHouse insert
--   and the offset commit) adds them again, and a sum never forgets. Identical retries
--   of one batch are dropped by the insert deduplication token, here as in model_calls.
--   Use it for exploration, variable lists and token mix, not for money you report.
--
-- Ratios are Float64 (shares, rates); money stays Decimal(38, 18). A ratio whose
-- denominator is zero is NULL. Hours and days are UTC. Views over model_calls and
-- outcomes bucket time with toStartOfHour(occurred_at), the expression in those tables'
-- sorting key: a filter on the view's hour or day then reaches the primary index, which
-- ClickHouse still uses under FINAL (min-max partition pruning it does not).

CREATE TABLE IF NOT EXISTS {db}.model_usage_hourly
(
    hour DateTime('UTC'),
    team LowCardinality(String),
    workflow LowCardinality(String),
    model LowCardinality(String),
    provider LowCardinality(String),
    calls SimpleAggregateFunction(sum, UInt64),
    retries SimpleAggregateFunction(sum, UInt64),
    failed_calls SimpleAggregateFunction(sum, UInt64),
    input_tokens SimpleAggregateFunction(sum, UInt64),
    output_tokens SimpleAggregateFunction(sum, UInt64),
    cached_input_tokens SimpleAggregateFunction(sum, UInt64),
    cache_write_tokens SimpleAggregateFunction(sum, UInt64),
    reasoning_tokens SimpleAggregateFunction(sum, UInt64),
    system_prompt_tokens SimpleAggregateFunction(sum, UInt64),
    context_tokens SimpleAggregateFunction(sum, UInt64),
    cost SimpleAggregateFunction(sum, Decimal(38, 18)) COMMENT 'priced calls only',
    retry_cost SimpleAggregateFunction(sum, Decimal(38, 18)) COMMENT 'calls with attempt > 1',
    failed_cost SimpleAggregateFunction(sum, Decimal(38, 18)) COMMENT 'calls with status != ok',
    unpriced_calls SimpleAggregateFunction(sum, UInt64),
    latency_ms_sum SimpleAggregateFunction(sum, UInt64),
    latency_calls SimpleAggregateFunction(sum, UInt64) COMMENT 'calls that reported a latency'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (team, workflow, model, provider, hour)
TTL hour + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

-- Source columns are qualified (c.x) so that an alias equal to a column name never
-- shadows the column inside an aggregate (ILLEGAL_AGGREGATION).
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.model_usage_hourly_mv TO {db}.model_usage_hourly
AS SELECT
    toStartOfHour(c.occurred_at) AS hour,
    c.team AS team,
    c.workflow AS workflow,
    c.model AS model,
    c.provider AS provider,
    count() AS calls,
    countIf(c.attempt > 1) AS retries,
    countIf(c.status != 'ok') AS failed_calls,
    sum(c.input_tokens) AS input_tokens,
    sum(c.output_tokens) AS output_tokens,
    sum(c.cached_input_tokens) AS cached_input_tokens,
    sum(c.cache_write_tokens) AS cache_write_tokens,
    sum(c.reasoning_tokens) AS reasoning_tokens,
    sum(c.system_prompt_tokens) AS system_prompt_tokens,
    sum(c.context_tokens) AS context_tokens,
    sum(coalesce(c.cost, toDecimal128(0, 18))) AS cost,
    sumIf(coalesce(c.cost, toDecimal128(0, 18)), c.attempt > 1) AS retry_cost,
    sumIf(coalesce(c.cost, toDecimal128(0, 18)), c.status != 'ok') AS failed_cost,
    countIf(c.cost IS NULL) AS unpriced_calls,
    sum(toUInt64(coalesce(c.latency_ms, 0))) AS latency_ms_sum,
    countIf(c.latency_ms IS NOT NULL) AS latency_calls
FROM {db}.model_calls AS c
GROUP BY hour, team, workflow, model, provider;

-- Spend budgets, written by the worker from TOKENYIELD_BUDGETS at start-up. A budget with
-- an empty workflow covers the whole team. The worker may retire a budget that left the
-- settings by writing it again with is_deleted = 1 (FINAL then drops it).
CREATE TABLE IF NOT EXISTS {db}.budgets
(
    team LowCardinality(String),
    workflow LowCardinality(String) COMMENT 'empty = every workflow of the team',
    period LowCardinality(String) COMMENT 'daily | monthly: UTC calendar periods',
    amount Decimal(38, 18) COMMENT 'in the reporting currency',
    soft_share Decimal(9, 6) COMMENT 'warn when spend reaches this share of amount',
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3),
    is_deleted UInt8 DEFAULT 0,
    CONSTRAINT known_period CHECK period IN ('daily', 'monthly'),
    CONSTRAINT positive_amount CHECK amount > 0
)
ENGINE = ReplacingMergeTree(updated_at, is_deleted)
ORDER BY (team, workflow, period);

-- Cost per accepted outcome by hour, team and workflow: the all-models window rows
-- (model '*', no agent) of the hourly windows. Needs 3600 among TOKENYIELD_WINDOW_SECONDS
-- (the default). Rows of the current hour are running figures, final = 0.
CREATE VIEW IF NOT EXISTS {db}.v_cost_per_accepted_outcome AS
SELECT
    toDateTime(w.window_start, 'UTC') AS hour,
    w.team AS team,
    w.workflow AS workflow,
    w.currency AS currency,
    w.final AS final,
    w.calls AS calls,
    w.work_units AS work_units,
    w.outcomes AS outcomes,
    w.accepted_outcomes AS accepted_outcomes,
    w.spend AS spend,
    w.human_cost AS human_cost,
    w.fully_loaded_cost AS fully_loaded_cost,
    w.value AS value,
    w.linked_spend AS linked_spend,
    w.unlinked_spend AS unlinked_spend,
    w.fully_loaded_cost / nullIf(w.accepted_outcomes, 0) AS cost_per_accepted_outcome,
    w.accepted_outcomes / nullIf(w.outcomes, 0) AS acceptance_rate,
    toFloat64(w.value) / nullIf(toFloat64(w.fully_loaded_cost), 0) AS yield_ratio,
    toFloat64(w.linked_spend) / nullIf(toFloat64(w.linked_spend + w.unlinked_spend), 0)
        AS attribution_coverage
FROM {db}.cost_per_outcome_windows AS w FINAL
WHERE w.window_seconds = 3600 AND w.model = '*' AND w.agent = '';

-- The same by UTC day: sums first, ratios of the sums (never an average of ratios).
CREATE VIEW IF NOT EXISTS {db}.v_cost_per_accepted_outcome_daily AS
SELECT
    toDate(h.hour) AS day,
    h.team AS team,
    h.workflow AS workflow,
    any(h.currency) AS currency,
    sum(h.calls) AS calls,
    sum(h.outcomes) AS outcomes,
    sum(h.accepted_outcomes) AS accepted_outcomes,
    sum(h.spend) AS spend,
    sum(h.human_cost) AS human_cost,
    sum(h.fully_loaded_cost) AS fully_loaded_cost,
    sum(h.value) AS value,
    sum(h.fully_loaded_cost) / nullIf(sum(h.accepted_outcomes), 0) AS cost_per_accepted_outcome,
    sum(h.accepted_outcomes) / nullIf(sum(h.outcomes), 0) AS acceptance_rate
FROM {db}.v_cost_per_accepted_outcome AS h
GROUP BY day, team, workflow;

-- Yield by UTC day and workflow: value produced per unit of fully loaded cost (model
-- spend plus human review), and the net value.
CREATE VIEW IF NOT EXISTS {db}.v_yield_by_workflow AS
SELECT
    toDate(h.hour) AS day,
    h.team AS team,
    h.workflow AS workflow,
    sum(h.value) AS value,
    sum(h.spend) AS spend,
    sum(h.human_cost) AS human_cost,
    sum(h.fully_loaded_cost) AS fully_loaded_cost,
    sum(h.value) - sum(h.fully_loaded_cost) AS net_value,
    toFloat64(sum(h.value)) / nullIf(toFloat64(sum(h.fully_loaded_cost)), 0) AS yield_ratio,
    sum(h.outcomes) AS outcomes,
    sum(h.accepted_outcomes) AS accepted_outcomes
FROM {db}.v_cost_per_accepted_outcome AS h
GROUP BY day, team, workflow;

-- Share of spend linked to an outcome, by the UTC day of each call. Every call's cost is
-- classified by its work unit's latest attribution: attributed (the unit has an outcome),
-- unattributed (its deadline passed without one) or pending (no attribution yet: still
-- inside the deadline). coverage = attributed / (attributed + unattributed), the same
-- definition as the windows' attribution_coverage; linked_share also counts pending.
CREATE VIEW IF NOT EXISTS {db}.v_attribution_coverage AS
SELECT
    day,
    team,
    workflow,
    sumIf(spend, state = 'attributed') AS attributed_spend,
    sumIf(spend, state = 'unattributed') AS unattributed_spend,
    sumIf(spend, state = 'pending') AS pending_spend,
    sum(spend) AS total_spend,
    uniqExactIf(work_unit_id, state = 'attributed') AS attributed_units,
    uniqExactIf(work_unit_id, state = 'unattributed') AS unattributed_units,
    uniqExactIf(work_unit_id, state = 'pending') AS pending_units,
    toFloat64(attributed_spend) / nullIf(toFloat64(attributed_spend + unattributed_spend), 0)
        AS coverage,
    toFloat64(attributed_spend) / nullIf(toFloat64(total_spend), 0) AS linked_share
FROM
(
    SELECT
        toDate(toStartOfHour(c.occurred_at)) AS day,
        c.team AS team,
        c.workflow AS workflow,
        c.work_unit_id AS work_unit_id,
        coalesce(c.cost, toDecimal128(0, 18)) AS spend,
        multiIf(ifNull(a.work_unit_id, '') = '', 'pending',
                ifNull(a.outcomes, 0) > 0, 'attributed',
                'unattributed') AS state
    FROM {db}.model_calls AS c FINAL
    LEFT JOIN
    (
        SELECT l.work_unit_id AS work_unit_id, l.outcomes AS outcomes
        FROM {db}.attributions_latest AS l FINAL
    ) AS a ON a.work_unit_id = c.work_unit_id
)
GROUP BY day, team, workflow;

-- Outcomes by hour, team and workflow: acceptance, and how often people had to step in
-- (an outcome with human_review_minutes > 0 counts as an intervention).
CREATE VIEW IF NOT EXISTS {db}.v_acceptance_and_intervention AS
SELECT
    toStartOfHour(o.occurred_at) AS hour,
    o.team AS team,
    o.workflow AS workflow,
    count() AS outcomes,
    sum(o.accepted) AS accepted_outcomes,
    countIf(o.human_review_minutes > 0) AS reviewed_outcomes,
    countIf(o.status = 'escalated') AS escalated_outcomes,
    sum(o.human_review_minutes) AS review_minutes,
    sum(o.human_cost) AS human_cost,
    sum(o.accepted) / count() AS acceptance_rate,
    countIf(o.human_review_minutes > 0) / count() AS intervention_rate,
    toFloat64(sum(o.human_review_minutes)) / count() AS avg_review_minutes,
    toFloat64(sum(o.human_review_minutes)) / nullIf(countIf(o.human_review_minutes > 0), 0)
        AS avg_review_minutes_when_reviewed
FROM {db}.outcomes AS o FINAL
GROUP BY hour, team, workflow;

-- Waste by UTC day, team, workflow and model, from the per-model window rows: calls that
-- were retries, input tokens that were system prompt or context, calls without a price.
-- (A model row can exist without calls: linked spend is booked in the window of the
-- outcome that linked it. Those rows say nothing about waste and are left out.)
CREATE VIEW IF NOT EXISTS {db}.v_waste AS
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
FROM {db}.cost_per_outcome_windows AS w FINAL
WHERE w.window_seconds = 3600 AND w.model != '*' AND w.agent = ''
GROUP BY day, team, workflow, model
HAVING calls > 0;

-- Hourly spend per budget: the hours of every period that has spend, plus a zero row
-- for the current hour so that a budget with no spend yet still shows up.
CREATE VIEW IF NOT EXISTS {db}.v_budget_spend_hourly AS
SELECT
    b.team AS team,
    b.workflow AS workflow,
    b.period AS period,
    b.amount AS amount,
    b.soft_share AS soft_share,
    if(b.period = 'daily', toStartOfDay(s.hour), toDateTime(toStartOfMonth(s.hour), 'UTC'))
        AS period_start,
    if(b.period = 'daily', period_start + INTERVAL 1 DAY, addMonths(period_start, 1))
        AS period_end,
    s.hour AS hour,
    sum(s.spend) AS spend
FROM
(
    SELECT x.team AS team, x.workflow AS workflow, x.period AS period, x.amount AS amount,
           x.soft_share AS soft_share
    FROM {db}.budgets AS x FINAL
) AS b
INNER JOIN
(
    SELECT h.team AS team, h.workflow AS workflow, h.hour AS hour, h.spend AS spend
    FROM {db}.v_cost_per_accepted_outcome AS h
    UNION ALL
    SELECT y.team, y.workflow, toStartOfHour(now('UTC')), toDecimal128(0, 18)
    FROM {db}.budgets AS y FINAL
) AS s ON s.team = b.team
WHERE b.workflow = '' OR b.workflow = s.workflow
GROUP BY team, workflow, period, amount, soft_share, period_start, period_end, hour;

-- Spend per budget and period against its amount. For the current period the projection
-- extrapolates the spend so far at the average rate since the period began (at least one
-- minute, so the first seconds of a day do not explode it).
CREATE VIEW IF NOT EXISTS {db}.v_budget_burn AS
SELECT
    team,
    workflow,
    period,
    period_start,
    period_end,
    amount,
    soft_share,
    spend,
    amount - spend AS remaining,
    toFloat64(spend) / toFloat64(amount) AS burn_share,
    toUInt8(period_start <= now('UTC') AND now('UTC') < period_end) AS is_current,
    dateDiff('second', period_start, period_end) AS period_seconds,
    greatest(least(dateDiff('second', period_start, now('UTC')), period_seconds), 0)
        AS elapsed_seconds,
    if(is_current = 1,
       toFloat64(spend) * period_seconds / greatest(elapsed_seconds, 60),
       toFloat64(spend)) AS projected_spend,
    projected_spend / toFloat64(amount) AS projected_share,
    multiIf(burn_share >= 1, 'exceeded',
            burn_share >= toFloat64(soft_share), 'soft_limit',
            is_current = 1 AND projected_share >= 1, 'projected_over',
            'ok') AS status
FROM
(
    SELECT s.team AS team, s.workflow AS workflow, s.period AS period,
           s.period_start AS period_start, s.period_end AS period_end,
           any(s.amount) AS amount, any(s.soft_share) AS soft_share, sum(s.spend) AS spend
    FROM {db}.v_budget_spend_hourly AS s
    GROUP BY team, workflow, period, period_start, period_end
);

-- Burn-down: spend so far and budget left at the end of each hour of each period.
CREATE VIEW IF NOT EXISTS {db}.v_budget_burndown AS
SELECT
    team,
    workflow,
    period,
    period_start,
    period_end,
    hour,
    amount,
    spend,
    sum(spend) OVER (PARTITION BY team, workflow, period, period_start ORDER BY hour
                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cumulative_spend,
    amount - cumulative_spend AS remaining,
    toUInt8(period_start <= now('UTC') AND now('UTC') < period_end) AS is_current
FROM {db}.v_budget_spend_hourly;

-- One row per work unit: its latest attribution, or, for a unit not attributed yet, its
-- calls so far (state 'pending'). state is attributed, unattributed or pending.
CREATE VIEW IF NOT EXISTS {db}.v_work_units AS
SELECT
    a.work_unit_id AS work_unit_id,
    a.team AS team,
    a.workflow AS workflow,
    a.agent AS agent,
    a.primary_model AS primary_model,
    if(a.outcomes > 0, 'attributed', 'unattributed') AS state,
    a.outcomes AS outcomes,
    a.accepted AS accepted,
    a.first_event_at AS first_event_at,
    a.last_event_at AS last_event_at,
    a.calls AS calls,
    a.retries AS retries,
    a.unpriced_calls AS unpriced_calls,
    a.model_cost AS spend,
    a.fully_loaded_cost AS fully_loaded_cost,
    a.value AS value
FROM {db}.attributions_latest AS a FINAL
UNION ALL
SELECT
    c.work_unit_id AS work_unit_id,
    any(c.team) AS team,
    any(c.workflow) AS workflow,
    any(c.agent) AS agent,
    topK(1)(c.model)[1] AS primary_model,
    'pending' AS state,
    toUInt32(0) AS outcomes,
    toUInt8(0) AS accepted,
    min(c.occurred_at) AS first_event_at,
    max(c.occurred_at) AS last_event_at,
    toUInt32(count()) AS calls,
    toUInt32(countIf(c.attempt > 1)) AS retries,
    toUInt32(countIf(c.cost IS NULL)) AS unpriced_calls,
    sum(coalesce(c.cost, toDecimal128(0, 18))) AS spend,
    sum(coalesce(c.cost, toDecimal128(0, 18))) AS fully_loaded_cost,
    CAST(NULL AS Nullable(Decimal(38, 18))) AS value
FROM {db}.model_calls AS c FINAL
WHERE c.work_unit_id NOT IN (SELECT l.work_unit_id FROM {db}.attributions_latest AS l)
GROUP BY c.work_unit_id;

-- Work units that spent without producing an outcome: expired ones (unattributed) and
-- ones still waiting (pending). Sort by spend for the top spenders.
CREATE VIEW IF NOT EXISTS {db}.v_top_spenders_without_outcomes AS
SELECT work_unit_id, team, workflow, agent, primary_model, state, first_event_at,
       last_event_at, calls, retries, unpriced_calls, spend
FROM {db}.v_work_units
WHERE outcomes = 0 AND (spend > 0 OR unpriced_calls > 0);

-- The same by agent (units without an agent are grouped under agent '').
CREATE VIEW IF NOT EXISTS {db}.v_agents_without_outcomes AS
SELECT
    u.team AS team,
    u.workflow AS workflow,
    u.agent AS agent,
    count() AS work_units,
    countIf(u.outcomes = 0) AS units_without_outcome,
    sum(u.spend) AS spend,
    sumIf(u.spend, u.outcomes = 0) AS spend_without_outcome,
    toFloat64(spend_without_outcome) / nullIf(toFloat64(spend), 0) AS share_without_outcome,
    min(u.first_event_at) AS first_event_at,
    max(u.last_event_at) AS last_event_at
FROM {db}.v_work_units AS u
GROUP BY team, workflow, agent;

-- One row per alert episode (alert_id): when it fired, whether and when it resolved,
-- and its latest figures.
CREATE VIEW IF NOT EXISTS {db}.v_alerts AS
SELECT
    a.alert_id AS alert_id,
    any(a.kind) AS kind,
    argMax(a.severity, a.occurred_at) AS severity,
    argMax(a.status, (a.occurred_at, a.status = 'resolved')) AS status,
    any(a.team) AS team,
    any(a.workflow) AS workflow,
    minIf(a.occurred_at, a.status = 'firing') AS fired_at,
    if(countIf(a.status = 'resolved') > 0, maxIf(a.occurred_at, a.status = 'resolved'), NULL)
        AS resolved_at,
    max(a.occurred_at) AS last_change_at,
    argMax(a.observed, a.occurred_at) AS observed,
    argMax(a.expected, a.occurred_at) AS expected,
    argMax(a.threshold, a.occurred_at) AS threshold,
    any(a.unit) AS unit,
    argMax(a.message, a.occurred_at) AS message
FROM {db}.alerts AS a FINAL
GROUP BY a.alert_id;
