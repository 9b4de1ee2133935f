-- Views over a time range, for the dashboard. Parameterised views (ClickHouse 23.1+):
--     SELECT * FROM {db}.v_attribution_coverage_between(from_time = ..., to_time = ...)
-- Their range reaches into the scans (calls by event time, attributions by last event)
-- and into the join's right side, which the plain views cannot do: over 10 million calls
-- the plain views read every call with FINAL and join every work unit (seconds); these
-- read the range's calls and units only (docs/BENCHMARKS.md).

-- v_attribution_coverage for the calls with from_time <= occurred_at <= to_time. A unit
-- with a call in the range has its last event at or after from_time, so its attribution
-- is among the ones read; the split is exactly the plain view's for those calls.
CREATE VIEW IF NOT EXISTS {db}.v_attribution_coverage_between AS
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
        toDate(c.occurred_at) AS day,
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
        WHERE l.last_event_at >= {from_time:DateTime64(3, 'UTC')}
    ) AS a ON a.work_unit_id = c.work_unit_id
    WHERE c.occurred_at >= {from_time:DateTime64(3, 'UTC')}
      AND c.occurred_at <= {to_time:DateTime64(3, 'UTC')}
)
GROUP BY day, team, workflow;

-- v_work_units for the units whose last event is in the range. Attributed and
-- unattributed units are exactly the plain view's. A pending unit (no attribution yet)
-- is summed over its calls since from_time: a unit still open that began before the
-- range shows its spend within the range (calls, spend and first_event_at), not since
-- its start.
CREATE VIEW IF NOT EXISTS {db}.v_work_units_between AS
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
WHERE a.last_event_at >= {from_time:DateTime64(3, 'UTC')}
  AND a.last_event_at <= {to_time:DateTime64(3, 'UTC')}
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
WHERE c.occurred_at >= {from_time:DateTime64(3, 'UTC')}
  AND c.work_unit_id NOT IN (
      SELECT l.work_unit_id FROM {db}.attributions_latest AS l
      WHERE l.last_event_at >= {from_time:DateTime64(3, 'UTC')})
GROUP BY c.work_unit_id
HAVING last_event_at <= {to_time:DateTime64(3, 'UTC')};
