"""The dashboard panels that read pre-aggregates, as they read before them: the same
figures from the exact views (calls joined to their units' attributions at query time).

``tests/test_dashboard_aggregates.py`` checks that each panel equals its exact form on
traffic with late events and replays; ``loadtest.dashboard_bench`` times both in the same
run (the exact forms are the "before" of docs/BENCHMARKS.md). Two changes from the panels
of migration 0003: the day's zone is spelled out (``toDateTime(day, 'UTC')``), so that
the comparison does not depend on the server's zone; and the agents' table and the top
spenders read ``v_work_units`` (a pending unit with all its calls) instead of
``v_work_units_between`` (a pending unit with its calls since the range's start), which
is what units by their last event are. The unit panels of migration 0012 (the top
spenders, cycle time, the conversion chain, the spread, the deciles, the business case)
are compared with their panels before it, which read every unit of
``attributions_latest FINAL`` and every outcome of ``outcomes FINAL``.
"""

from __future__ import annotations

_FILTERS = ("WHERE $__conditionalAll(team IN (${team:singlequote}), $team) AND "
            "$__conditionalAll(workflow IN (${workflow:singlequote}), $workflow)")
_COVERAGE = ("FROM ${db}.v_attribution_coverage_between(from_time = $__fromTime, "
             "to_time = $__toTime)")

#: (panel id, target index) -> the query over the exact views.
EXACT_PANELS: dict[tuple[int, int], str] = {
    (5, 0): f"""SELECT toFloat64(sum(attributed_spend))
       / nullIf(toFloat64(sum(attributed_spend) + sum(unattributed_spend)), 0) AS coverage_share
{_COVERAGE}
{_FILTERS}""",
    (13, 0): f"""SELECT
  toDateTime(day, 'UTC') AS time,
  toFloat64(sum(attributed_spend))
    / nullIf(toFloat64(sum(attributed_spend) + sum(unattributed_spend)), 0) AS coverage_share,
  toFloat64(sum(attributed_spend)) / nullIf(toFloat64(sum(total_spend)), 0) AS linked_share_all
{_COVERAGE}
{_FILTERS}
GROUP BY time
ORDER BY time""",
    (14, 0): f"""SELECT
  toDateTime(day, 'UTC') AS time,
  toFloat64(sum(attributed_spend)) AS attributed,
  toFloat64(sum(unattributed_spend)) AS unattributed,
  toFloat64(sum(pending_spend)) AS pending
{_COVERAGE}
{_FILTERS}
GROUP BY time
ORDER BY time""",
    (7, 1): f"""SELECT
  $__timeInterval(hour) AS time,
  sum(reviewed_outcomes) / nullIf(sum(outcomes), 0) AS intervention_rate
FROM ${{db}}.v_acceptance_and_intervention
WHERE $__timeFilter(hour) AND {_FILTERS.removeprefix("WHERE ")}
GROUP BY time
ORDER BY time""",
    (16, 0): f"""SELECT
  if(agent = '', '-', agent) AS agent_name,
  count() AS units,
  countIf(outcomes = 0) AS units_without_outcome,
  toFloat64(sumIf(spend, outcomes = 0)) AS spend_without_outcome,
  toFloat64(sumIf(spend, outcomes = 0)) / nullIf(toFloat64(sum(spend)), 0) AS share_without_outcome
FROM ${{db}}.v_work_units
WHERE last_event_at >= $__fromTime AND last_event_at <= $__toTime
  AND {_FILTERS.removeprefix("WHERE ")}
GROUP BY agent_name
ORDER BY spend_without_outcome DESC""",
    # The unit panels, over attributions_latest FINAL (every unit of the table) instead of
    # work_units_by_day from the range's first day on (migration 0012). The top spenders
    # as v_work_units counts them (a pending unit with all its calls, like panel 16):
    # v_work_units_between, which the panel read, counts a pending unit's calls since the
    # range's start only.
    (15, 0): """SELECT
  work_unit_id,
  team,
  workflow,
  if(agent = '', '-', agent) AS agent_name,
  state,
  calls,
  toFloat64(spend) AS spend_total,
  last_event_at
FROM ${db}.v_work_units
WHERE last_event_at >= $__fromTime AND last_event_at <= $__toTime
  AND outcomes = 0 AND (spend > 0 OR unpriced_calls > 0) AND
  $__conditionalAll(team IN (${team:singlequote}), $team)
  AND $__conditionalAll(workflow IN (${workflow:singlequote}), $workflow)
ORDER BY spend DESC, work_unit_id
LIMIT 25""",  # Top spenders without outcomes
    (34, 0): """SELECT
  day,
  concat(team, ' / ', workflow) AS series,
  units,
  p50_seconds,
  p95_seconds
FROM ${db}.v_cycle_time
WHERE $__dateFilter(day) AND
  $__conditionalAll(team IN (${team:singlequote}), $team)
  AND $__conditionalAll(workflow IN (${workflow:singlequote}), $workflow)
ORDER BY day DESC, units DESC""",  # Cycle time
    (37, 0): """SELECT
  stage,
  units
FROM
(
  SELECT
    sum(work_units) AS w, sum(output_accepted) AS o, sum(action_taken) AS a,
    sum(outcome_realised) AS r, sum(value_captured) AS v
  FROM ${db}.v_conversion_funnel
  WHERE $__dateFilter(day) AND
  $__conditionalAll(team IN (${team:singlequote}), $team)
  AND $__conditionalAll(workflow IN (${workflow:singlequote}), $workflow)
)
ARRAY JOIN
  ['1 work units', '2 output accepted', '3 action taken', '4 outcome realised',
   '5 value captured'] AS stage,
  [w, o, a, r, v] AS units
ORDER BY stage""",  # Conversion chain
    (38, 0): """SELECT
  concat('decile ', toString(decile)) AS decile_name,
  sum(accepted_units) / sum(units) AS acceptance_rate
FROM ${db}.v_acceptance_by_cost_decile
WHERE week >= toMonday(toDate($__fromTime, 'UTC')) AND week <= toDate($__toTime, 'UTC') AND
  $__conditionalAll(team IN (${team:singlequote}), $team)
  AND $__conditionalAll(workflow IN (${workflow:singlequote}), $workflow)
GROUP BY decile, decile_name
ORDER BY decile""",  # Acceptance by decile of cost per unit
    (39, 0): """SELECT
  day,
  concat(team, ' / ', workflow) AS series,
  units,
  toFloat64(p50_cost) AS p50,
  toFloat64(p90_cost) AS p90,
  toFloat64(p99_cost) AS p99,
  max_over_p50
FROM ${db}.v_unit_cost_spread
WHERE $__dateFilter(day) AND
  $__conditionalAll(team IN (${team:singlequote}), $team)
  AND $__conditionalAll(workflow IN (${workflow:singlequote}), $workflow)
ORDER BY day DESC, units DESC""",  # Cost per unit spread
    # Business case by workflow: the time saved with the review minutes of the day's
    # outcome events counted from outcomes FINAL, as before migration 0013.
    (33, 0): """SELECT
  concat(b.team, ' / ', b.workflow) AS series,
  any(b.owner) AS owner_name,
  sum(b.accepted_units) AS accepted,
  toFloat64(sum(b.value_captured)) AS value_total,
  toFloat64(sum(b.expected_value)) AS expected_total,
  toFloat64(sum(b.fully_loaded_cost)) / nullIf(sum(b.accepted_units), 0) AS cost_per_accepted,
  toFloat64(any(b.target_cost_per_accepted_outcome)) AS target_cost,
  toFloat64(sum(b.baseline_cost) - sum(b.fully_loaded_cost))
    / nullIf(toFloat64(sum(b.fully_loaded_cost)), 0) AS roi_baseline,
  toFloat64(sum(b.baseline_minutes - coalesce(r.minutes, toDecimal64(0, 6)))) / 60
    AS hours_saved,
  toFloat64(sum(b.baseline_minutes - coalesce(r.minutes, toDecimal64(0, 6))))
    / nullIf(sum(b.tokens) / 1e6, 0) AS minutes_per_mtok
FROM ${db}.v_business_case AS b
LEFT JOIN (
  SELECT toDate(occurred_at) AS day, team, workflow, sum(human_review_minutes) AS minutes
  FROM ${db}.outcomes FINAL
  GROUP BY day, team, workflow
) AS r ON r.day = b.day AND r.team = b.team AND r.workflow = b.workflow
WHERE $__dateFilter(b.day) AND
  $__conditionalAll(b.team IN (${team:singlequote}), $team)
  AND $__conditionalAll(b.workflow IN (${workflow:singlequote}), $workflow)
GROUP BY series
ORDER BY value_total DESC""",
}
