-- Two panels read the window rows instead of a FINAL over one row per unit or event
-- (issue 15): the portfolio's evidence confidence and the business case's review
-- minutes.
--
-- 1. v_portfolio (migration 0009) judged its workflows' evidence by the mean confidence
--    of the units whose last event fell in the last 30 days, from attributions_latest
--    FINAL: a merge of every unit of the table (about 3 million over a month of 10
--    million calls), most of the panel's time however few units gave a confidence. The
--    engine now books each decision's evidence confidence with the decision itself, on
--    the total rows, in the deciding outcome's window under its team and workflow
--    (Postings.booking; moved exactly, like decided_units, when a later outcome
--    outranks the decider):
--
--      evidence_confidence_sum    the confidence (0-1) of the window's decided units
--                                 whose deciding outcome gave one
--      evidence_confident_units   those units
--
--    The portfolio's confidence is their mean over its 30 days: the units *decided* in
--    them, the same units, hours and teams as its decided and accepted figures. Windows
--    written before this migration hold no confidence, and none is backfilled: a unit
--    decided before it books its confidence at its next change (a verdict, a later
--    outcome), which a backfilled one would then count twice. So for 30 days after the
--    upgrade the mean covers the decisions booked since; a workflow with none has NULL
--    (unknown, as before).
--
-- 2. The business case's time saved subtracted the review minutes of the day's outcome
--    events, from outcomes FINAL (every event of the range). The engine now books them
--    with the event, on the total rows of its window, like reviewed_outcomes:
--
--      review_minutes   the review minutes of the window's outcome events, verdicts
--                       included
--
--    Windows written before get them once, as correction rows counted from outcomes
--    FINAL (as 0010 did for reviewed_outcomes). An outcome the old worker processed but
--    whose checkpoint a crash lost just before the upgrade is booked again by the new
--    one: stop the old workers cleanly before upgrading.
--
-- tests/test_value_views.py checks both against every unit's and event's own figures,
-- and tests/test_dashboard_aggregates.py the business case panel against its exact form.

ALTER TABLE {db}.cost_per_outcome_windows
    ADD COLUMN IF NOT EXISTS evidence_confidence_sum Decimal(38, 6) DEFAULT 0
        COMMENT 'the evidence confidence of the decided units that gave one',
    ADD COLUMN IF NOT EXISTS evidence_confident_units Int64 DEFAULT 0
        COMMENT 'decided units whose deciding outcome gave an evidence confidence',
    ADD COLUMN IF NOT EXISTS review_minutes Decimal(38, 6) DEFAULT 0
        COMMENT 'review minutes of the outcome events, verdicts included';

-- The review minutes of windows written before: one correction row per total row with
-- reviewed outcome events, from outcomes FINAL. A new database has no windows: nothing
-- to do. (Not final: a window still running must not read as final because of them.)
INSERT INTO {db}.cost_per_outcome_windows
    (window_id, window_start, window_end, window_seconds, team, workflow, scope, model,
     agent, correction, revision, final, version, currency, review_minutes)
SELECT
    concat(toString(r.window_seconds), ':', toString(toUnixTimestamp64Milli(r.window_start)),
           ':', r.team, ':', r.workflow, ':total:#migration:0013:reviews') AS window_id,
    r.window_start AS window_start,
    r.window_start + toIntervalSecond(r.window_seconds) AS window_end,
    r.window_seconds AS window_seconds,
    r.team AS team,
    r.workflow AS workflow,
    'total' AS scope,
    '*' AS model,
    '' AS agent,
    'migration:0013:reviews' AS correction,
    1 AS revision,
    0 AS final,
    1 AS version,
    r.currency AS currency,
    r.minutes AS review_minutes
FROM
(
    SELECT
        w.window_seconds AS window_seconds,
        fromUnixTimestamp64Milli(intDiv(toUnixTimestamp64Milli(o.occurred_at),
                                        toInt64(w.window_seconds) * 1000)
                                 * toInt64(w.window_seconds) * 1000, 'UTC') AS window_start,
        o.team AS team,
        o.workflow AS workflow,
        any(w.currency) AS currency,
        sum(o.human_review_minutes) AS minutes
    FROM {db}.outcomes AS o FINAL
    CROSS JOIN
    (
        SELECT window_seconds, any(currency) AS currency
        FROM {db}.cost_per_outcome_windows
        GROUP BY window_seconds
    ) AS w
    GROUP BY window_seconds, window_start, team, workflow
    HAVING minutes != 0
) AS r;

-- Every window's figures (as in 0010, with the three new columns).
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
    sum(w.strategic_confident_units) AS strategic_confident_units,
    sum(w.attributed_spend) AS attributed_spend,
    sum(w.unattributed_spend) AS unattributed_spend,
    sum(w.reviewed_outcomes) AS reviewed_outcomes,
    sum(w.verdicts) AS verdicts,
    sum(w.units_without_outcome) AS units_without_outcome,
    sum(w.spend_without_outcome) AS spend_without_outcome,
    sum(w.evidence_confidence_sum) AS evidence_confidence_sum,
    sum(w.evidence_confident_units) AS evidence_confident_units,
    sum(w.review_minutes) AS review_minutes
FROM {db}.cost_per_outcome_windows AS w FINAL
GROUP BY window_seconds, window_start, team, workflow, scope, model, agent, dimension,
         dimension_value;

-- What to do with each workflow (as in 0009; its evidence confidence from the windows).
CREATE OR REPLACE VIEW {db}.v_portfolio AS
WITH
    recent AS (
        SELECT team, workflow, any(currency) AS currency,
               sum(spend) AS spend, sum(fully_loaded_cost) AS fully_loaded_cost,
               sum(accepted_outcomes) AS accepted_units, sum(decided_units) AS decided_units,
               sum(accepted_value) AS value_captured,
               sum(linked_spend) AS linked_spend, sum(unlinked_spend) AS unlinked_spend,
               sum(evidence_confidence_sum) AS confidence_sum,
               sum(evidence_confident_units) AS confident_units
        FROM {db}.v_window_totals
        WHERE window_seconds = 3600 AND scope = 'total'
          AND window_start >= now64(3, 'UTC') - INTERVAL 30 DAY
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
    -- NULL where no decision gave one (unknown, which the rules below allow for).
    if(r.confident_units = 0, NULL, toFloat64(r.confidence_sum) / r.confident_units)
        AS evidence_confidence,
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
LEFT JOIN cases AS c ON c.team = r.team AND c.workflow = r.workflow;

-- The business case from a day on (as in 0012; its review minutes from the windows).
CREATE OR REPLACE VIEW {db}.v_business_case_since AS
WITH
    toDateTime64(toDate({from_time:DateTime64(3, 'UTC')}), 3, 'UTC') AS first_moment,
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
               sum(accepted_value) AS value_captured,
               sum(review_minutes) AS review_minutes
        FROM {db}.v_window_totals
        WHERE window_seconds = 3600 AND scope = 'total' AND window_start >= first_moment
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
    d.review_minutes AS review_minutes,
    baseline_minutes - review_minutes AS time_saved_minutes,
    toFloat64(time_saved_minutes) / nullIf(d.tokens / 1e6, 0) AS time_saved_minutes_per_mtok
FROM days AS d
LEFT JOIN cases AS c ON c.team = d.team AND c.workflow = d.workflow;
