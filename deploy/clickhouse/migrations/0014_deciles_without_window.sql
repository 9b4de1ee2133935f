-- Acceptance by decile of cost per unit without a window function (issue 15).
--
-- v_acceptance_by_cost_decile_since (migration 0012) ranked each week's units with
-- ntile(10) OVER (PARTITION BY week, team, workflow ORDER BY fully_loaded_cost,
-- work_unit_id): over 30 days of 10 million calls, 2.6 million units through
-- ClickHouse's window transform, most of the slowest panel's time. The same figures
-- come from one sorted array per week, team and workflow:
--
-- - sorted: the group's units as (cost, unit id, accepted), sorted. Tuples compare
--   element by element and a unit id is unique in its group, so this is the window's
--   order exactly, ties in cost broken by unit id.
-- - s1..s11: where each decile starts in it, as ntile(10) splits n rows: the first
--   n % 10 deciles hold one row more than the others (s11 = n). With fewer than ten
--   units, the deciles past n are empty and left out, as ntile leaves them.
-- - Running sums of accepted and cost over the sorted array: a decile's accepted units
--   and cost are differences of two of them; its min and max cost are its first and
--   last element.
--
-- The boundaries are spelled out one by one, not mapped over: a lambda that captures
-- a unit array copies it once per element it maps, ten copies of millions of units.
-- tests/test_dashboard_aggregates.py checks the panel against the ntile view it
-- replaces, with ties in cost across decile boundaries.

CREATE OR REPLACE VIEW {db}.v_acceptance_by_cost_decile_since AS
SELECT week, team, workflow, decile,
       units, accepted_units, accepted_units / units AS acceptance_rate,
       min_cost, max_cost, cost_sum / units AS mean_cost
FROM (
    SELECT week, team, workflow,
           arrayJoin(arrayFilter(x -> x.2 > 0, arrayMap(
               k -> (k, s[k + 1] - s[k], a[k + 1] - a[k], lo[k], hi[k], c[k + 1] - c[k]),
               range(1, 11)))) AS d,
           d.1 AS decile, toUInt64(d.2) AS units, toUInt64(d.3) AS accepted_units,
           d.4 AS min_cost, d.5 AS max_cost, d.6 AS cost_sum
    FROM (
        SELECT week, team, workflow,
               [s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11] AS s,
               [accepted_before[s1], accepted_before[s2], accepted_before[s3],
                accepted_before[s4], accepted_before[s5], accepted_before[s6],
                accepted_before[s7], accepted_before[s8], accepted_before[s9],
                accepted_before[s10], accepted_before[s11]] AS a,
               [cost_before[s1], cost_before[s2], cost_before[s3], cost_before[s4],
                cost_before[s5], cost_before[s6], cost_before[s7], cost_before[s8],
                cost_before[s9], cost_before[s10], cost_before[s11]] AS c,
               [sorted[s1 + 1].1, sorted[s2 + 1].1, sorted[s3 + 1].1, sorted[s4 + 1].1,
                sorted[s5 + 1].1, sorted[s6 + 1].1, sorted[s7 + 1].1, sorted[s8 + 1].1,
                sorted[s9 + 1].1, sorted[s10 + 1].1] AS lo,
               [sorted[s2].1, sorted[s3].1, sorted[s4].1, sorted[s5].1, sorted[s6].1,
                sorted[s7].1, sorted[s8].1, sorted[s9].1, sorted[s10].1, sorted[s11].1] AS hi
        FROM (
            SELECT week, team, workflow, n, sorted,
                   arrayCumSum(sorted.3) AS accepted_before,
                   arrayCumSum(sorted.1) AS cost_before,
                   toUInt64(0 * intDiv(n, 10) + least(0, n % 10)) AS s1,
                   toUInt64(1 * intDiv(n, 10) + least(1, n % 10)) AS s2,
                   toUInt64(2 * intDiv(n, 10) + least(2, n % 10)) AS s3,
                   toUInt64(3 * intDiv(n, 10) + least(3, n % 10)) AS s4,
                   toUInt64(4 * intDiv(n, 10) + least(4, n % 10)) AS s5,
                   toUInt64(5 * intDiv(n, 10) + least(5, n % 10)) AS s6,
                   toUInt64(6 * intDiv(n, 10) + least(6, n % 10)) AS s7,
                   toUInt64(7 * intDiv(n, 10) + least(7, n % 10)) AS s8,
                   toUInt64(8 * intDiv(n, 10) + least(8, n % 10)) AS s9,
                   toUInt64(9 * intDiv(n, 10) + least(9, n % 10)) AS s10,
                   toUInt64(10 * intDiv(n, 10) + least(10, n % 10)) AS s11
            FROM (
                SELECT toMonday(decided_at) AS week, team, workflow, count() AS n,
                       arraySort(groupArray((fully_loaded_cost, work_unit_id, accepted))) AS sorted
                FROM {db}.v_units_since(from_time = {from_time:DateTime64(3, 'UTC')})
                WHERE decided_at IS NOT NULL
                  AND toMonday(decided_at) >= toDate({from_time:DateTime64(3, 'UTC')})
                GROUP BY week, team, workflow
            )
        )
    )
);
