"""The dashboard panels that read pre-aggregates, as they read before them: the same
figures from the exact views (calls joined to their units' attributions at query time).

``tests/test_dashboard_aggregates.py`` checks that each panel equals its exact form on
traffic with late events and replays; ``loadtest.dashboard_bench`` times both in the same
run (the exact forms are the "before" of docs/BENCHMARKS.md). The only change from the
panels of migration 0003 is the day's zone, spelled out (``toDateTime(day, 'UTC')``), so
that the comparison does not depend on the server's zone.
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
}
