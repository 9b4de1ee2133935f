-- Exact pre-aggregates for the dashboard: no panel joins calls to attributions.
--
-- The coverage panels classified every call of the range by its unit's latest
-- attribution at query time (model_calls FINAL joined to attributions_latest FINAL:
-- seconds over a month of 10 million calls). The engine knows each unit's class when it
-- changes, and books it into the windows like linked and unlinked spend, with one
-- difference: at each call's own window, not at the moment the spend was linked or
-- given up on. So every window row now carries
--
--   attributed_spend    spend of its calls whose unit has an outcome
--   unattributed_spend  spend of its calls whose unit passed its deadline without one
--
-- and pending spend is the rest (spend - attributed - unattributed). These figures are
-- exactly v_attribution_coverage's, by hour instead of by day, and as replay-safe as
-- every window figure (rows plus correction rows, docs/CLICKHOUSE.md).
--
-- The intervention panel counted reviewed outcomes in outcomes FINAL; total rows now
-- count them too, each outcome event in its own window like `outcomes`:
--
--   reviewed_outcomes   outcome events (verdicts included) with human review minutes
--   verdicts            verdict events (later reviews, which `outcomes` leaves out)
--
-- The agents panel read every unit of the range (v_work_units_between: attributions
-- FINAL, and calls FINAL for the units still pending). Window rows of a new scope,
-- `unit` (agent = the unit's agent), now hold every work unit once, in the window of
-- its last event, under its own team and workflow; the engine moves it exactly when the
-- unit changes (its last event, dimensions, spend, outcomes):
--
--   work_units, spend                                the units and their model spend
--   units_without_outcome, spend_without_outcome     ... of the ones without an outcome
--
-- The exact views stay for analysts; tests/test_dashboard_aggregates.py checks that the
-- pre-aggregates and the panels that read them equal them.

ALTER TABLE {db}.cost_per_outcome_windows
    ADD COLUMN IF NOT EXISTS attributed_spend Decimal(38, 18) DEFAULT 0
        COMMENT 'spend of the window''s calls whose unit has an outcome',
    ADD COLUMN IF NOT EXISTS unattributed_spend Decimal(38, 18) DEFAULT 0
        COMMENT 'spend of the window''s calls whose unit expired without one',
    ADD COLUMN IF NOT EXISTS reviewed_outcomes Int64 DEFAULT 0
        COMMENT 'outcome events, verdicts included, with human review minutes',
    ADD COLUMN IF NOT EXISTS verdicts Int64 DEFAULT 0 COMMENT 'verdict events',
    ADD COLUMN IF NOT EXISTS units_without_outcome Int64 DEFAULT 0
        COMMENT 'unit rows: the units without an outcome',
    ADD COLUMN IF NOT EXISTS spend_without_outcome Decimal(38, 18) DEFAULT 0
        COMMENT 'unit rows: their model spend';

-- Windows written before this migration booked no class at the call: book it once for
-- them, as correction rows (model rows, then their totals), from the exact
-- classification of their calls. Later changes of those units come from the engine as
-- differences, so the two add up. A new database has no windows: nothing to do. (Not
-- final: a window still running must not read as final because of them.)
INSERT INTO {db}.cost_per_outcome_windows
    (window_id, window_start, window_end, window_seconds, team, workflow, scope, model,
     agent, correction, revision, final, version, currency, attributed_spend,
     unattributed_spend)
SELECT
    concat(toString(c.window_seconds), ':', toString(toUnixTimestamp64Milli(c.window_start)),
           ':', c.team, ':', c.workflow, ':model:', c.model, '#migration:0010') AS window_id,
    c.window_start AS window_start,
    c.window_start + toIntervalSecond(c.window_seconds) AS window_end,
    c.window_seconds AS window_seconds,
    c.team AS team,
    c.workflow AS workflow,
    'model' AS scope,
    c.model AS model,
    '' AS agent,
    'migration:0010' AS correction,
    1 AS revision,
    0 AS final,
    1 AS version,
    c.currency AS currency,
    c.attributed AS attributed_spend,
    c.unattributed AS unattributed_spend
FROM
(
    SELECT
        w.window_seconds AS window_seconds,
        fromUnixTimestamp64Milli(intDiv(toUnixTimestamp64Milli(k.occurred_at),
                                        toInt64(w.window_seconds) * 1000)
                                 * toInt64(w.window_seconds) * 1000, 'UTC') AS window_start,
        k.team AS team,
        k.workflow AS workflow,
        k.model AS model,
        any(k.currency) AS currency,
        sumIf(k.spend, k.outcomes > 0) AS attributed,
        sumIf(k.spend, k.outcomes = 0) AS unattributed
    FROM
    (
        SELECT c.occurred_at AS occurred_at, c.team AS team, c.workflow AS workflow,
               c.model AS model, c.currency AS currency,
               coalesce(c.cost, toDecimal128(0, 18)) AS spend, a.outcomes AS outcomes
        FROM {db}.model_calls AS c FINAL
        INNER JOIN
        (
            SELECT l.work_unit_id AS work_unit_id, l.outcomes AS outcomes
            FROM {db}.attributions_latest AS l FINAL
        ) AS a ON a.work_unit_id = c.work_unit_id
    ) AS k
    CROSS JOIN (SELECT DISTINCT window_seconds FROM {db}.cost_per_outcome_windows) AS w
    GROUP BY window_seconds, window_start, team, workflow, model
    HAVING attributed != 0 OR unattributed != 0
) AS c;

INSERT INTO {db}.cost_per_outcome_windows
    (window_id, window_start, window_end, window_seconds, team, workflow, scope, model,
     agent, correction, revision, final, version, currency, attributed_spend,
     unattributed_spend)
SELECT
    concat(toString(m.window_seconds), ':', toString(toUnixTimestamp64Milli(m.window_start)),
           ':', m.team, ':', m.workflow, ':total:#migration:0010') AS window_id,
    m.window_start AS window_start,
    any(m.window_end) AS window_end,
    m.window_seconds AS window_seconds,
    m.team AS team,
    m.workflow AS workflow,
    'total' AS scope,
    '*' AS model,
    '' AS agent,
    'migration:0010' AS correction,
    1 AS revision,
    0 AS final,
    1 AS version,
    any(m.currency) AS currency,
    sum(m.attributed_spend) AS attributed_spend,
    sum(m.unattributed_spend) AS unattributed_spend
FROM {db}.cost_per_outcome_windows AS m
WHERE m.correction = 'migration:0010' AND m.scope = 'model'
GROUP BY m.window_seconds, m.window_start, m.team, m.workflow;

-- The same for the reviews of windows written before: one correction row per total row
-- with outcome events, counted from outcomes FINAL.
INSERT INTO {db}.cost_per_outcome_windows
    (window_id, window_start, window_end, window_seconds, team, workflow, scope, model,
     agent, correction, revision, final, version, currency, reviewed_outcomes, verdicts)
SELECT
    concat(toString(r.window_seconds), ':', toString(toUnixTimestamp64Milli(r.window_start)),
           ':', r.team, ':', r.workflow, ':total:#migration:0010:reviews') AS window_id,
    r.window_start AS window_start,
    r.window_start + toIntervalSecond(r.window_seconds) AS window_end,
    r.window_seconds AS window_seconds,
    r.team AS team,
    r.workflow AS workflow,
    'total' AS scope,
    '*' AS model,
    '' AS agent,
    'migration:0010:reviews' AS correction,
    1 AS revision,
    0 AS final,
    1 AS version,
    r.currency AS currency,
    r.reviewed AS reviewed_outcomes,
    r.verdict_events AS verdicts
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
        countIf(o.human_review_minutes > 0) AS reviewed,
        countIf(o.verdict != '') AS verdict_events
    FROM {db}.outcomes AS o FINAL
    CROSS JOIN
    (
        SELECT window_seconds, any(currency) AS currency
        FROM {db}.cost_per_outcome_windows
        GROUP BY window_seconds
    ) AS w
    GROUP BY window_seconds, window_start, team, workflow
    HAVING reviewed != 0 OR verdict_events != 0
) AS r;

-- And the units of windows written before: one correction row per window, team,
-- workflow and agent, from v_work_units (every unit by its last event).
INSERT INTO {db}.cost_per_outcome_windows
    (window_id, window_start, window_end, window_seconds, team, workflow, scope, model,
     agent, correction, revision, final, version, currency, work_units, spend,
     fully_loaded_cost, units_without_outcome, spend_without_outcome)
SELECT
    concat(toString(u.window_seconds), ':', toString(toUnixTimestamp64Milli(u.window_start)),
           ':', u.team, ':', u.workflow, ':unit:', u.agent, '#migration:0010') AS window_id,
    u.window_start AS window_start,
    u.window_start + toIntervalSecond(u.window_seconds) AS window_end,
    u.window_seconds AS window_seconds,
    u.team AS team,
    u.workflow AS workflow,
    'unit' AS scope,
    '' AS model,
    u.agent AS agent,
    'migration:0010' AS correction,
    1 AS revision,
    0 AS final,
    1 AS version,
    u.currency AS currency,
    u.units AS work_units,
    u.units_spend AS spend,
    u.units_spend AS fully_loaded_cost,
    u.without AS units_without_outcome,
    u.without_spend AS spend_without_outcome
FROM
(
    SELECT
        w.window_seconds AS window_seconds,
        fromUnixTimestamp64Milli(intDiv(toUnixTimestamp64Milli(k.last_event_at),
                                        toInt64(w.window_seconds) * 1000)
                                 * toInt64(w.window_seconds) * 1000, 'UTC') AS window_start,
        k.team AS team,
        k.workflow AS workflow,
        k.agent AS agent,
        any(w.currency) AS currency,
        count() AS units,
        sum(k.spend) AS units_spend,
        countIf(k.outcomes = 0) AS without,
        sumIf(k.spend, k.outcomes = 0) AS without_spend
    FROM {db}.v_work_units AS k
    CROSS JOIN
    (
        SELECT window_seconds, any(currency) AS currency
        FROM {db}.cost_per_outcome_windows
        GROUP BY window_seconds
    ) AS w
    WHERE position(k.work_unit_id, '~shared:') != 1
    GROUP BY window_seconds, window_start, team, workflow, agent
) AS u;

-- Every window's figures: its row plus its corrections, added up (as in 0008, with the
-- classes at the call and the review counts).
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
    sum(w.spend_without_outcome) AS spend_without_outcome
FROM {db}.cost_per_outcome_windows AS w FINAL
GROUP BY window_seconds, window_start, team, workflow, scope, model, agent, dimension,
         dimension_value;

-- Coverage by the hour of each call, team and workflow: v_attribution_coverage's spend
-- figures (that view is by day) from the hourly total rows. Needs 3600 among
-- TOKENYIELD_WINDOW_SECONDS (the default). Filter on hour: the index is used.
CREATE OR REPLACE VIEW {db}.v_attribution_coverage_hourly AS
SELECT
    toDateTime(w.window_start, 'UTC') AS hour,
    w.team AS team,
    w.workflow AS workflow,
    w.final AS final,
    w.attributed_spend AS attributed_spend,
    w.unattributed_spend AS unattributed_spend,
    w.spend - w.attributed_spend - w.unattributed_spend AS pending_spend,
    w.spend AS total_spend,
    toFloat64(w.attributed_spend)
        / nullIf(toFloat64(w.attributed_spend + w.unattributed_spend), 0) AS coverage,
    toFloat64(w.attributed_spend) / nullIf(toFloat64(w.spend), 0) AS linked_share
FROM {db}.v_window_totals AS w
WHERE w.window_seconds = 3600 AND w.scope = 'total';

-- Review effort by the hour of each outcome event, team and workflow:
-- v_acceptance_and_intervention's counts (which read every outcome row, verdicts
-- included) from the hourly total rows.
CREATE OR REPLACE VIEW {db}.v_intervention_hourly AS
SELECT
    toDateTime(w.window_start, 'UTC') AS hour,
    w.team AS team,
    w.workflow AS workflow,
    w.final AS final,
    w.outcomes + w.verdicts AS outcomes,
    w.reviewed_outcomes AS reviewed_outcomes,
    w.reviewed_outcomes / nullIf(w.outcomes + w.verdicts, 0) AS intervention_rate
FROM {db}.v_window_totals AS w
WHERE w.window_seconds = 3600 AND w.scope = 'total';

-- Work units by the hour of their last event, team, workflow and agent: v_work_units
-- counted and summed (every unit with an attribution, and every pending unit with calls,
-- all its calls), from the hourly unit rows.
CREATE OR REPLACE VIEW {db}.v_units_by_agent_hourly AS
SELECT
    toDateTime(w.window_start, 'UTC') AS hour,
    w.team AS team,
    w.workflow AS workflow,
    w.agent AS agent,
    w.final AS final,
    w.work_units AS units,
    w.units_without_outcome AS units_without_outcome,
    w.spend AS spend,
    w.spend_without_outcome AS spend_without_outcome
FROM {db}.v_window_totals AS w
WHERE w.window_seconds = 3600 AND w.scope = 'unit';
