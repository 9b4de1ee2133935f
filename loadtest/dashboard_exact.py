"""The dashboard panels that read pre-aggregates, as they read before them: the same
figures from the exact views (calls joined to their units' attributions at query time).

``tests/test_dashboard_aggregates.py`` checks that each panel equals its exact form on
traffic with late events and replays; ``loadtest.dashboard_bench`` times both in the same
run (the exact forms are the "before" of docs/BENCHMARKS.md). Two changes from the panels
of migration 0003: the day's zone is spelled out (``toDateTime(day, 'UTC')``), so that
the comparison does not depend on the server's zone; and the agents' table reads
``v_work_units`` (a pending unit with all its calls) instead of ``v_work_units_between``
(a pending unit with its calls since the range's start), which is what units by their
last event are.
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
}
