-- Any dimension (issue 16): window rows of scope `dimension`, one per value of `user`,
-- `customer` or a TOKENYIELD_DIMENSIONS attribute (beyond TOKENYIELD_DIMENSION_CAP values
-- of a dimension, the rest in `__other__`). They carry the spend of the calls, the
-- outcomes and cost items that name the value, and the decisions of the units whose
-- dimensions it is; they are never part of the total rows.
ALTER TABLE {db}.cost_per_outcome_windows
    ADD COLUMN IF NOT EXISTS dimension LowCardinality(String) AFTER agent,
    ADD COLUMN IF NOT EXISTS dimension_value String AFTER dimension,
    MODIFY ORDER BY (window_seconds, window_start, team, workflow, scope, model, agent,
                     correction, dimension, dimension_value);

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
    w.dimension AS dimension,
    w.dimension_value AS dimension_value,
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
GROUP BY window_seconds, window_start, team, workflow, scope, model, agent, dimension,
         dimension_value;

-- Spend, outcomes and cost per accepted outcome by hour, dimension and value (all teams
-- and workflows): what a customer or a user costs, and what their accepted work costs.
CREATE OR REPLACE VIEW {db}.v_dimension_hourly AS
SELECT
    toDateTime(w.window_start, 'UTC') AS hour,
    w.dimension AS dimension,
    w.dimension_value AS value,
    any(w.currency) AS currency,
    sum(w.calls) AS calls,
    sum(w.input_tokens) + sum(w.output_tokens) AS tokens,
    sum(w.spend) AS spend,
    sum(w.unpriced_calls) AS unpriced_calls,
    sum(w.outcomes) AS outcomes,
    sum(w.human_cost) AS human_cost,
    sum(w.other_cost) + sum(w.shared_cost) AS other_cost,
    sum(w.fully_loaded_cost) AS fully_loaded_cost,
    sum(w.decided_units) AS decided_units,
    sum(w.accepted_outcomes) AS accepted_outcomes,
    sum(w.accepted_value) AS accepted_value,
    sum(w.integrity_failed_units) AS integrity_failed_units,
    sum(w.fully_loaded_cost) / nullIf(sum(w.accepted_outcomes), 0) AS cost_per_accepted_outcome,
    sum(w.accepted_outcomes) / nullIf(sum(w.decided_units), 0) AS acceptance_rate
FROM {db}.v_window_totals AS w
WHERE w.window_seconds = 3600 AND w.scope = 'dimension'
GROUP BY hour, dimension, value;

-- Budgets may target one value of a dimension (customer acme, user ana...).
ALTER TABLE {db}.budgets
    ADD COLUMN IF NOT EXISTS dimension LowCardinality(String) AFTER workflow,
    ADD COLUMN IF NOT EXISTS value String AFTER dimension,
    MODIFY ORDER BY (team, workflow, period, dimension, value);

-- Budgets of one dimension value in their current period: spent so far, and its share.
CREATE OR REPLACE VIEW {db}.v_dimension_budget_burn AS
SELECT
    b.dimension AS dimension,
    b.value AS value,
    b.team AS team,
    b.workflow AS workflow,
    b.period AS period,
    b.amount AS amount,
    b.soft_share AS soft_share,
    b.period_start AS period_start,
    sumIf(w.spend, (b.team = '' OR w.team = b.team) AND (b.workflow = '' OR w.workflow = b.workflow)
                   AND toDateTime(w.window_start, 'UTC') >= b.period_start) AS spent,
    spent / b.amount AS spent_share
FROM
(
    SELECT x.dimension AS dimension, x.value AS value, x.team AS team, x.workflow AS workflow,
           x.period AS period, x.amount AS amount, x.soft_share AS soft_share,
           if(x.period = 'daily', toStartOfDay(now('UTC')),
              toDateTime(toStartOfMonth(now('UTC')), 'UTC')) AS period_start
    FROM {db}.budgets AS x FINAL
    WHERE x.dimension != ''
) AS b
LEFT JOIN
(
    SELECT t.window_start AS window_start, t.team AS team, t.workflow AS workflow,
           t.dimension AS dimension, t.dimension_value AS dimension_value, t.spend AS spend
    FROM {db}.v_window_totals AS t
    WHERE t.window_seconds = 3600 AND t.scope = 'dimension'
) AS w ON w.dimension = b.dimension AND w.dimension_value = b.value
GROUP BY dimension, value, team, workflow, period, amount, soft_share, period_start;
