-- Work units by the UTC day of their last event, for the unit panels (issue 15).
--
-- The unit panels (cycle time, the conversion chain, cost spread, acceptance by cost
-- decile, top spenders) read attributions_latest FINAL: one
-- row per unit, ordered by unit id, so a FINAL over two days merges all of the table's
-- units (about 3 million over a month of 10 million calls). This table holds the same
-- latest row of each unit, ordered by the day of its last event: a range's units are a
-- prefix of the key, and FINAL merges only their granules.
--
-- A unit's last event only moves later, so its row can move from one day to a later
-- one; the old day's row must then stop counting. Each attribution is written, by the
-- materialized view, as its row on the day of its last event plus a tombstone
-- (is_deleted = 1, same version) on every earlier day since its first event: every day
-- any of its earlier revisions can have been on (an earlier revision's last event lies
-- between the unit's first event and its last). The highest version of a (day, unit)
-- wins, whatever the order of inserts or replays: a tombstone outranks the revisions it
-- replaces, and FINAL leaves out the (day, unit) whose latest row is a tombstone. No
-- state is read at insert time and nothing depends on which revisions were written (the
-- sink writes only each checkpoint's latest).
--
-- Pending units (calls, no decision yet) have no attribution: the engine writes their
-- rows itself at each checkpoint, for the units it changed (state 'pending', the same
-- version formula and the same tombstones: streams.clickhouse.sink.unit_days), and the
-- unit's attribution replaces its pending row when it is decided (a higher version). So
-- the top spenders without outcomes read no model_calls either.
--
-- (The views below read the units through v_units_since, whose filter is on the
-- table's own `day`: beside an output column named `day`, ClickHouse would resolve
-- `day` in the same SELECT's WHERE to that alias, not to the table's column, and read
-- every day.)
--
-- Where a panel's figure is by another day of the unit (its first event, its deciding
-- outcome), that day lies between the unit's first and last event: a range's units are
-- still among the rows from the range's first day on (the _since views below).
-- tests/test_dashboard_aggregates.py checks every panel that reads them against the
-- exact view it replaces, on traffic with late events, replays and units whose last
-- event moved to a later day.

CREATE TABLE IF NOT EXISTS {db}.work_units_by_day
(
    day Date COMMENT 'UTC day of the unit''s last event (of a tombstone: an earlier day)',
    work_unit_id String,
    version UInt64 COMMENT 'the attribution''s version: the latest wins',
    is_deleted UInt8 COMMENT '1: the unit''s last event is on a later day',
    state LowCardinality(String),
    team LowCardinality(String),
    workflow LowCardinality(String),
    agent LowCardinality(String),
    primary_model LowCardinality(String),
    first_event_at DateTime64(3, 'UTC'),
    last_event_at DateTime64(3, 'UTC'),
    decided_at Nullable(DateTime64(3, 'UTC')),
    cycle_seconds Nullable(Decimal(18, 3)),
    calls UInt32,
    retries UInt32,
    unpriced_calls UInt32,
    currency LowCardinality(String),
    model_cost Decimal(38, 18),
    fully_loaded_cost Decimal(38, 18),
    outcomes UInt32,
    accepted UInt8,
    stage LowCardinality(String),
    value Nullable(Decimal(38, 18)),
    evidence_confidence Nullable(Float32)
)
ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toYYYYMM(day)
ORDER BY (day, work_unit_id)
TTL day + INTERVAL 400 DAY
SETTINGS ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.work_units_by_day_mv TO {db}.work_units_by_day
AS SELECT
    toDate(a.first_event_at) + arrayJoin(range(toUInt32(
        dateDiff('day', toDate(a.first_event_at), toDate(a.last_event_at)) + 1))) AS day,
    a.work_unit_id AS work_unit_id,
    a.version AS version,
    toUInt8(day != toDate(a.last_event_at)) AS is_deleted,
    a.state AS state,
    a.team AS team,
    a.workflow AS workflow,
    a.agent AS agent,
    a.primary_model AS primary_model,
    a.first_event_at AS first_event_at,
    a.last_event_at AS last_event_at,
    a.decided_at AS decided_at,
    a.cycle_seconds AS cycle_seconds,
    a.calls AS calls,
    a.retries AS retries,
    a.unpriced_calls AS unpriced_calls,
    a.currency AS currency,
    a.model_cost AS model_cost,
    a.fully_loaded_cost AS fully_loaded_cost,
    a.outcomes AS outcomes,
    a.accepted AS accepted,
    a.stage AS stage,
    a.value AS value,
    a.evidence_confidence AS evidence_confidence
FROM {db}.attributions AS a;

-- The units decided before this migration: their latest rows (no earlier revision is in
-- the table, so no tombstone is needed). Then the ones pending then, from their calls as
-- v_work_units counts them, at revision 0: any row the engine writes for the unit later
-- outranks it (its last event is not earlier, its revision higher).
INSERT INTO {db}.work_units_by_day
SELECT
    toDate(a.last_event_at) AS day, a.work_unit_id, a.version, toUInt8(0), a.state, a.team,
    a.workflow, a.agent, a.primary_model, a.first_event_at, a.last_event_at, a.decided_at,
    a.cycle_seconds, a.calls, a.retries, a.unpriced_calls, a.currency, a.model_cost,
    a.fully_loaded_cost, a.outcomes, a.accepted, a.stage, a.value, a.evidence_confidence
FROM {db}.attributions_latest AS a FINAL;

INSERT INTO {db}.work_units_by_day
    (day, work_unit_id, version, is_deleted, state, team, workflow, agent, primary_model,
     first_event_at, last_event_at, calls, retries, unpriced_calls, currency, model_cost,
     fully_loaded_cost)
SELECT
    toDate(last_event_at) AS day,
    c.work_unit_id AS work_unit_id,
    toUInt64(toUnixTimestamp(last_event_at)) * 4294967296 AS version,
    toUInt8(0) AS is_deleted,
    'pending' AS state,
    any(c.team) AS team,
    any(c.workflow) AS workflow,
    any(c.agent) AS agent,
    topK(1)(c.model)[1] AS primary_model,
    min(c.occurred_at) AS first_event_at,
    max(c.occurred_at) AS last_event_at,
    toUInt32(count()) AS calls,
    toUInt32(countIf(c.attempt > 1)) AS retries,
    toUInt32(countIf(c.cost IS NULL)) AS unpriced_calls,
    any(c.currency) AS currency,
    sum(coalesce(c.cost, toDecimal128(0, 18))) AS model_cost,
    sum(coalesce(c.cost, toDecimal128(0, 18))) AS fully_loaded_cost
FROM {db}.model_calls AS c FINAL
WHERE c.work_unit_id NOT IN (SELECT l.work_unit_id FROM {db}.attributions_latest AS l)
  AND position(c.work_unit_id, '~shared:') != 1
GROUP BY c.work_unit_id;

-- Every decided unit whose last event is on or after from_time's UTC day: the latest row
-- of each, tombstones and pending units left out.
CREATE OR REPLACE VIEW {db}.v_units_since AS
SELECT *
FROM {db}.work_units_by_day FINAL
WHERE day >= toDate({from_time:DateTime64(3, 'UTC')}) AND state != 'pending';

-- v_work_units (migration 0002) for the units whose last event is in a range: decided
-- and pending ones, all read by day. (v_work_units_between counts a pending unit's calls
-- since the range's start only; this, like v_work_units, all of them.)
CREATE OR REPLACE VIEW {db}.v_work_units_between_by_day AS
SELECT
    work_unit_id,
    team,
    workflow,
    agent,
    primary_model,
    multiIf(outcomes > 0, 'attributed', state = 'pending', 'pending', 'unattributed') AS state,
    outcomes,
    accepted,
    first_event_at,
    last_event_at,
    calls,
    retries,
    unpriced_calls,
    model_cost AS spend,
    fully_loaded_cost,
    value
FROM {db}.work_units_by_day FINAL
WHERE day >= toDate({from_time:DateTime64(3, 'UTC')})
  AND last_event_at >= {from_time:DateTime64(3, 'UTC')}
  AND last_event_at <= {to_time:DateTime64(3, 'UTC')};

-- v_cycle_time (migration 0009) for the days from from_time's on.
CREATE OR REPLACE VIEW {db}.v_cycle_time_since AS
SELECT
    toDate(decided_at) AS day,
    team,
    workflow,
    count() AS units,
    quantileExact(0.5)(toFloat64(cycle_seconds)) AS p50_seconds,
    quantileExact(0.95)(toFloat64(cycle_seconds)) AS p95_seconds,
    max(toFloat64(cycle_seconds)) AS max_seconds
FROM {db}.v_units_since(from_time = {from_time:DateTime64(3, 'UTC')})
WHERE decided_at IS NOT NULL AND cycle_seconds IS NOT NULL
  AND toDate(decided_at) >= toDate({from_time:DateTime64(3, 'UTC')})
GROUP BY day, team, workflow;

-- v_conversion_funnel (migration 0009) for the days from from_time's on.
CREATE OR REPLACE VIEW {db}.v_conversion_funnel_since AS
WITH units AS (
    SELECT toDate(first_event_at) AS day, team, workflow, calls, fully_loaded_cost, currency,
           if(accepted = 1, greatest(indexOf(['output_accepted', 'action_taken',
                                              'outcome_realised', 'value_captured'], stage), 1),
              0) AS reached
    FROM {db}.v_units_since(from_time = {from_time:DateTime64(3, 'UTC')})
    WHERE toDate(first_event_at) >= toDate({from_time:DateTime64(3, 'UTC')})
)
SELECT
    day, team, workflow,
    any(currency) AS currency,
    sum(calls) AS calls,
    count() AS work_units,
    countIf(reached >= 1) AS output_accepted,
    countIf(reached >= 2) AS action_taken,
    countIf(reached >= 3) AS outcome_realised,
    countIf(reached >= 4) AS value_captured
FROM units
GROUP BY day, team, workflow;

-- v_unit_cost_spread (migration 0009) for the days from from_time's on.
CREATE OR REPLACE VIEW {db}.v_unit_cost_spread_since AS
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
FROM {db}.v_units_since(from_time = {from_time:DateTime64(3, 'UTC')})
WHERE fully_loaded_cost > 0
  AND toDate(first_event_at) >= toDate({from_time:DateTime64(3, 'UTC')})
GROUP BY day, team, workflow;

-- v_acceptance_by_cost_decile (migration 0009) for the weeks that start on or after
-- from_time's day (the panel's date filter keeps those): each such week's units are all
-- decided on or after it, so all of them are read.
CREATE OR REPLACE VIEW {db}.v_acceptance_by_cost_decile_since AS
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
    FROM {db}.v_units_since(from_time = {from_time:DateTime64(3, 'UTC')})
    WHERE decided_at IS NOT NULL
      AND toMonday(decided_at) >= toDate({from_time:DateTime64(3, 'UTC')})
)
GROUP BY week, team, workflow, decile;

-- v_business_case (migration 0009) for the days from from_time's on: the windows and the
-- outcomes read from that day's start, not from the beginning of the tables.
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
               sum(accepted_value) AS value_captured
        FROM {db}.v_window_totals
        WHERE window_seconds = 3600 AND scope = 'total' AND window_start >= first_moment
        GROUP BY day, team, workflow
    ),
    reviews AS (
        SELECT toDate(occurred_at) AS day, team, workflow,
               sum(human_review_minutes) AS review_minutes
        FROM {db}.outcomes FINAL
        WHERE occurred_at >= first_moment
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

-- v_business_case is the same view from the beginning of time (one definition of the
-- business case).
CREATE OR REPLACE VIEW {db}.v_business_case AS
SELECT *
FROM {db}.v_business_case_since(from_time = toDateTime64('1970-01-01 00:00:00', 3, 'UTC'));
