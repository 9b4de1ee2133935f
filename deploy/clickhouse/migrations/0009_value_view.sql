-- The value view (issue 17): the business case per workflow, cycle time, the conversion
-- chain, the spread of cost per unit, and a recommended action per workflow.

ALTER TABLE {db}.outcomes
    ADD COLUMN IF NOT EXISTS stage LowCardinality(String) DEFAULT '' COMMENT 'how far down the conversion chain';

ALTER TABLE {db}.attributions
    ADD COLUMN IF NOT EXISTS stage LowCardinality(String) DEFAULT '' COMMENT 'furthest stage of the conversion chain',
    ADD COLUMN IF NOT EXISTS first_call_at Nullable(DateTime64(3, 'UTC')),
    ADD COLUMN IF NOT EXISTS decided_at Nullable(DateTime64(3, 'UTC')) COMMENT 'its deciding outcome',
    ADD COLUMN IF NOT EXISTS cycle_seconds Nullable(Decimal(18, 3)) COMMENT 'first call to deciding outcome'
;

ALTER TABLE {db}.attributions_latest
    ADD COLUMN IF NOT EXISTS stage LowCardinality(String) DEFAULT '' COMMENT 'furthest stage of the conversion chain',
    ADD COLUMN IF NOT EXISTS first_call_at Nullable(DateTime64(3, 'UTC')),
    ADD COLUMN IF NOT EXISTS decided_at Nullable(DateTime64(3, 'UTC')) COMMENT 'its deciding outcome',
    ADD COLUMN IF NOT EXISTS cycle_seconds Nullable(Decimal(18, 3)) COMMENT 'first call to deciding outcome'
;

DROP VIEW IF EXISTS {db}.attributions_latest_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.attributions_latest_mv TO {db}.attributions_latest
AS SELECT * FROM {db}.attributions;

-- The business case by UTC day and workflow: what the case expected against what came,
-- and the human baseline. A workflow's baseline cost per unit is baseline_cost_per_unit,
-- else baseline_minutes_per_unit / 60 * baseline_rate_per_hour. Accepted units are the
-- successes of the day's decisions (as in v_cost_per_accepted_outcome).
CREATE OR REPLACE VIEW {db}.v_business_case AS
WITH
    cases AS (
        SELECT team, workflow, owner, baseline_minutes_per_unit, started_on,
               target_cost_per_accepted_outcome, expected_value_per_unit,
               coalesce(baseline_cost_per_unit,
                        toDecimal128(baseline_minutes_per_unit * baseline_rate_per_hour / 60, 18))
                   AS baseline_unit_cost
        FROM {db}.workflows FINAL
        WHERE is_deleted = 0
    ),
    days AS (
        SELECT toDate(window_start) AS day, team, workflow, any(currency) AS currency,
               sum(input_tokens) + sum(output_tokens) AS tokens,
               sum(fully_loaded_cost) AS fully_loaded_cost,
               sum(accepted_outcomes) AS accepted_units,
               sum(accepted_value) AS value_captured
        FROM {db}.v_window_totals
        WHERE window_seconds = 3600 AND scope = 'total'
        GROUP BY day, team, workflow
    ),
    reviews AS (
        SELECT toDate(occurred_at) AS day, team, workflow,
               sum(human_review_minutes) AS review_minutes
        FROM {db}.outcomes FINAL
        GROUP BY day, team, workflow
    )
SELECT
    d.day AS day,
    d.team AS team,
    d.workflow AS workflow,
    c.owner AS owner,
    c.started_on AS started_on,
    d.currency AS currency,
    d.accepted_units AS accepted_units,
    d.fully_loaded_cost AS fully_loaded_cost,
    d.value_captured AS value_captured,
    d.tokens AS tokens,
    c.expected_value_per_unit * d.accepted_units AS expected_value,
    d.value_captured - expected_value AS value_against_case,
    d.fully_loaded_cost / nullIf(d.accepted_units, 0) AS cost_per_accepted_outcome,
    c.target_cost_per_accepted_outcome AS target_cost_per_accepted_outcome,
    cost_per_accepted_outcome - c.target_cost_per_accepted_outcome AS cost_against_target,
    c.baseline_unit_cost * d.accepted_units AS baseline_cost,
    toFloat64(baseline_cost - d.fully_loaded_cost) / nullIf(toFloat64(d.fully_loaded_cost), 0)
        AS roi_against_baseline,
    c.baseline_minutes_per_unit * d.accepted_units AS baseline_minutes,
    coalesce(r.review_minutes, toDecimal64(0, 6)) AS review_minutes,
    baseline_minutes - review_minutes AS time_saved_minutes,
    toFloat64(time_saved_minutes) / nullIf(d.tokens / 1e6, 0) AS time_saved_minutes_per_mtok
FROM days AS d
LEFT JOIN cases AS c ON c.team = d.team AND c.workflow = d.workflow
LEFT JOIN reviews AS r ON r.day = d.day AND r.team = d.team AND r.workflow = d.workflow;

-- Cycle time by the deciding outcome's UTC day and workflow: first call to deciding
-- outcome, exact quantiles over the decided units that made calls.
CREATE OR REPLACE VIEW {db}.v_cycle_time AS
SELECT
    toDate(decided_at) AS day,
    team,
    workflow,
    count() AS units,
    quantileExact(0.5)(toFloat64(cycle_seconds)) AS p50_seconds,
    quantileExact(0.95)(toFloat64(cycle_seconds)) AS p95_seconds,
    max(toFloat64(cycle_seconds)) AS max_seconds
FROM {db}.attributions_latest FINAL
WHERE decided_at IS NOT NULL AND cycle_seconds IS NOT NULL
GROUP BY day, team, workflow;

-- The conversion chain by the unit's first UTC day and workflow: calls, work units, and
-- the units that reached each stage (a stage past output_accepted counts only for
-- accepted units), with the rate from each step to the next and the fully loaded cost per
-- unit that reached it.
CREATE OR REPLACE VIEW {db}.v_conversion_funnel AS
WITH units AS (
    SELECT toDate(first_event_at) AS day, team, workflow, calls, fully_loaded_cost, currency,
           if(accepted = 1, greatest(indexOf(['output_accepted', 'action_taken',
                                              'outcome_realised', 'value_captured'], stage), 1),
              0) AS reached
    FROM {db}.attributions_latest FINAL
)
SELECT
    day, team, workflow,
    any(currency) AS currency,
    sum(calls) AS calls,
    count() AS work_units,
    countIf(reached >= 1) AS output_accepted,
    countIf(reached >= 2) AS action_taken,
    countIf(reached >= 3) AS outcome_realised,
    countIf(reached >= 4) AS value_captured,
    work_units / nullIf(calls, 0) AS units_per_call,
    output_accepted / nullIf(work_units, 0) AS accepted_rate,
    action_taken / nullIf(output_accepted, 0) AS action_rate,
    outcome_realised / nullIf(action_taken, 0) AS realised_rate,
    value_captured / nullIf(outcome_realised, 0) AS captured_rate,
    sum(fully_loaded_cost) / nullIf(work_units, 0) AS cost_per_work_unit,
    sumIf(fully_loaded_cost, reached >= 1) / nullIf(output_accepted, 0) AS cost_per_output_accepted,
    sumIf(fully_loaded_cost, reached >= 2) / nullIf(action_taken, 0) AS cost_per_action_taken,
    sumIf(fully_loaded_cost, reached >= 3) / nullIf(outcome_realised, 0) AS cost_per_outcome_realised,
    sumIf(fully_loaded_cost, reached >= 4) / nullIf(value_captured, 0) AS cost_per_value_captured
FROM units
GROUP BY day, team, workflow;

-- The spread of cost per work unit by the unit's first UTC day and workflow (agentic runs
-- of one task vary many times over): exact p50, p90, p99, max and max / p50.
CREATE OR REPLACE VIEW {db}.v_unit_cost_spread AS
SELECT
    toDate(first_event_at) AS day,
    team,
    workflow,
    any(currency) AS currency,
    count() AS units,
    quantileExact(0.5)(fully_loaded_cost) AS p50_cost,
    quantileExact(0.9)(fully_loaded_cost) AS p90_cost,
    quantileExact(0.99)(fully_loaded_cost) AS p99_cost,
    max(fully_loaded_cost) AS max_cost,
    toFloat64(max_cost) / nullIf(toFloat64(p50_cost), 0) AS max_over_p50
FROM {db}.attributions_latest FINAL
WHERE fully_loaded_cost > 0
GROUP BY day, team, workflow;

-- Acceptance by decile of cost per unit, per workflow and ISO week of the decision (the
-- spend plateau: do the dearest units get accepted more often?). Decile 1 is the cheapest
-- tenth of the week's decided units.
CREATE OR REPLACE VIEW {db}.v_acceptance_by_cost_decile AS
SELECT week, team, workflow, decile,
       count() AS units,
       sum(accepted) AS accepted_units,
       accepted_units / units AS acceptance_rate,
       min(fully_loaded_cost) AS min_cost,
       max(fully_loaded_cost) AS max_cost,
       sum(fully_loaded_cost) / units AS mean_cost
FROM (
    SELECT toMonday(decided_at) AS week, team, workflow, accepted, fully_loaded_cost,
           ntile(10) OVER (PARTITION BY toMonday(decided_at), team, workflow
                           ORDER BY fully_loaded_cost, work_unit_id) AS decile
    FROM {db}.attributions_latest FINAL
    WHERE decided_at IS NOT NULL
)
GROUP BY week, team, workflow, decile;

-- What to do with each workflow, from its last 30 days: retire (spend, nothing accepted),
-- intervene (low attribution coverage or low evidence confidence: the figures cannot be
-- trusted yet), optimise (it succeeds, but its value is below its cost or its cost per
-- accepted outcome above its target), expand (value above cost, on target, confident
-- evidence), else maintain. The first that applies wins; the reason says why.
CREATE OR REPLACE VIEW {db}.v_portfolio AS
WITH
    recent AS (
        SELECT team, workflow, any(currency) AS currency,
               sum(spend) AS spend, sum(fully_loaded_cost) AS fully_loaded_cost,
               sum(accepted_outcomes) AS accepted_units, sum(decided_units) AS decided_units,
               sum(accepted_value) AS value_captured,
               sum(linked_spend) AS linked_spend, sum(unlinked_spend) AS unlinked_spend
        FROM {db}.v_window_totals
        WHERE window_seconds = 3600 AND scope = 'total'
          AND window_start >= now64(3, 'UTC') - INTERVAL 30 DAY
        GROUP BY team, workflow
    ),
    confidence AS (
        SELECT team, workflow, avg(evidence_confidence) AS mean_confidence
        FROM {db}.attributions_latest FINAL
        WHERE evidence_confidence IS NOT NULL
          AND last_event_at >= now64(3, 'UTC') - INTERVAL 30 DAY
        GROUP BY team, workflow
    ),
    cases AS (
        SELECT team, workflow, owner, target_cost_per_accepted_outcome
        FROM {db}.workflows FINAL WHERE is_deleted = 0
    )
SELECT
    r.team AS team,
    r.workflow AS workflow,
    c.owner AS owner,
    r.currency AS currency,
    r.fully_loaded_cost AS fully_loaded_cost,
    r.accepted_units AS accepted_units,
    r.value_captured AS value_captured,
    toFloat64(r.value_captured) / nullIf(toFloat64(r.fully_loaded_cost), 0) AS yield_ratio,
    r.fully_loaded_cost / nullIf(r.accepted_units, 0) AS cost_per_accepted_outcome,
    c.target_cost_per_accepted_outcome AS target_cost_per_accepted_outcome,
    toFloat64(r.linked_spend) / nullIf(toFloat64(r.linked_spend + r.unlinked_spend), 0)
        AS attribution_coverage,
    f.mean_confidence AS evidence_confidence,
    multiIf(
        r.fully_loaded_cost > 0 AND r.accepted_units = 0, 'retire',
        attribution_coverage < 0.5 OR evidence_confidence < 0.5, 'intervene',
        yield_ratio < 1 OR cost_per_accepted_outcome > c.target_cost_per_accepted_outcome,
            'optimise',
        yield_ratio > 1 AND (c.target_cost_per_accepted_outcome IS NULL
                             OR cost_per_accepted_outcome <= c.target_cost_per_accepted_outcome)
            AND coalesce(evidence_confidence, 1) >= 0.7, 'expand',
        'maintain') AS action,
    multiIf(
        action = 'retire', concat(toString(round(toFloat64(r.fully_loaded_cost), 2)), ' ',
                                  r.currency, ' spent in 30 days and no accepted outcome'),
        action = 'intervene' AND attribution_coverage < 0.5,
            concat('only ', toString(round(attribution_coverage * 100)),
                   '% of decided spend is linked to an outcome'),
        action = 'intervene', concat('evidence confidence ',
                                     toString(round(evidence_confidence, 2)), ' is low'),
        action = 'optimise' AND yield_ratio < 1,
            concat('value is ', toString(round(yield_ratio, 2)), ' of the fully loaded cost'),
        action = 'optimise', concat('cost per accepted outcome ',
                                    toString(round(toFloat64(cost_per_accepted_outcome), 2)),
                                    ' is above the target ',
                                    toString(round(toFloat64(c.target_cost_per_accepted_outcome), 2))),
        action = 'expand', concat('yield ', toString(round(yield_ratio, 2)),
                                  ', on target, with confident evidence'),
        yield_ratio IS NULL, 'no cost yet',
        concat('yield ', toString(round(yield_ratio, 2)))) AS reason
FROM recent AS r
LEFT JOIN cases AS c ON c.team = r.team AND c.workflow = r.workflow
LEFT JOIN confidence AS f ON f.team = r.team AND f.workflow = r.workflow;
