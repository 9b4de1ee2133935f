-- The deciles' live weeks ranked by one integer key, and one checksum per query (issue 15).
--
-- After migration 0016 the deciles panel ranks only the weeks not yet settled, the
-- current week always, and that ranking is the slowest panel over 2 and over 30 days:
-- arraySort over (cost, unit id, accepted) tuples compares a Decimal128 and a string per
-- step, 185 ms for a full week of 850,000 units here, three quarters of the panel. Two
-- changes:
--
-- 1. Each unit is ranked by one UInt256: its cost's 128 bits (sign bit flipped, so the
--    unsigned order is the signed order), then cityHash64 of its id, then accepted in
--    the low 8 bits. Sorting that array takes 50 ms instead of 185 for the same week,
--    and the figures are read back from the key: the cost from the high 128 bits, the
--    accepted flag from the low 8. Ties in cost are now broken by the unit id's hash
--    instead of the id itself, in the exact ntile view as well (redefined below), so the
--    panel still equals it figure for figure. A hash is as deterministic and, unlike an
--    id that may carry its creation time (a ULID, a counter), carries no order of its
--    own into the deciles. Two units of one group with equal cost and hash (a 64-bit
--    collision) that differ in accepted are ordered by it in both views; equal in all
--    three, they are indistinguishable in every figure.
-- 2. The day checksums (v_unit_day_checksums_since) are taken once per query, as one
--    scalar subquery written the same in v_unit_days_since and in v_decile_weeks_since
--    (ClickHouse computes each distinct scalar subquery once per query). The deciles
--    panel read them twice before, once for its weeks and once for its units' days.
--
-- Weeks settled under the old tie order are cleared: they are ranked live until the
-- next settling run records them in the new order (a panel is only slower meanwhile).
-- tests/test_dashboard_aggregates.py checks the panel against the ntile view, ties in
-- cost across decile boundaries included; tests/test_value_views.py the ntile view
-- against deciles computed in Python.

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
                           ORDER BY fully_loaded_cost, cityHash64(work_unit_id), accepted)
               AS decile
    FROM {db}.attributions_latest FINAL
    WHERE decided_at IS NOT NULL
)
GROUP BY week, team, workflow, decile;

TRUNCATE TABLE IF EXISTS {db}.settled_weeks;

TRUNCATE TABLE IF EXISTS {db}.settled_deciles;

CREATE OR REPLACE VIEW {db}.v_unit_days_since AS
-- As in migration 0015, the day checksums from the one scalar subquery described above.
SELECT day, if(count() = 2, max(g), toUInt64(0)) AS generation
FROM (
    SELECT c.1 AS day, c.2 AS rows, c.3 AS checksum, toUInt64(0) AS g
    FROM (SELECT arrayJoin((
        SELECT groupArray((day, rows, checksum))
        FROM {db}.v_unit_day_checksums_since(from_time = {from_time:DateTime64(3, 'UTC')})
    )) AS c)
    UNION ALL
    SELECT day, rows, checksum, generation AS g
    FROM {db}.settled_days FINAL
    WHERE day >= toDate({from_time:DateTime64(3, 'UTC')})
)
GROUP BY day, rows, checksum
HAVING min(g) = 0;

CREATE OR REPLACE VIEW {db}.v_decile_weeks_since AS
-- As in migration 0016, from the same scalar subquery. Week sums wrap at 2^64 as sum()
-- of UInt64 does, and as streams.clickhouse.settled_days records them.
SELECT week, if(count() = 2, max(g), toUInt64(0)) AS generation
FROM (
    SELECT toMonday(c.1) AS week, sum(c.2) AS rows, sum(c.3) AS checksum, toUInt64(0) AS g
    FROM (SELECT arrayJoin((
        SELECT groupArray((day, rows, checksum))
        FROM {db}.v_unit_day_checksums_since(from_time = {from_time:DateTime64(3, 'UTC')})
    )) AS c)
    GROUP BY week
    UNION ALL
    SELECT week, rows, checksum, generation AS g
    FROM {db}.settled_weeks FINAL
    WHERE week >= toMonday(toDate({from_time:DateTime64(3, 'UTC')}))
)
GROUP BY week, rows, checksum
HAVING min(g) = 0;

-- Migration 0016's live deciles with the one key. `sorted` is the group's keys in
-- order; `costs` their costs as raw Int128 (the Decimal(38, 18) value times 10^18),
-- summed as integers and turned back into Decimal(38, 18) for the few figures shown.
-- The boundaries are spelled out, not mapped over, for the reason migration 0014 gives.
CREATE OR REPLACE VIEW {db}.v_deciles_of_live_weeks_since AS
SELECT week, team, workflow, decile,
       units, accepted_units, accepted_units / units AS acceptance_rate,
       min_cost, max_cost, cost_sum / units AS mean_cost
FROM (
    SELECT week, team, workflow,
           arrayJoin(arrayFilter(x -> x.2 > 0, arrayMap(
               k -> (k, s[k + 1] - s[k], a[k + 1] - a[k], lo[k], hi[k], c[k + 1] - c[k]),
               range(1, 11)))) AS d,
           d.1 AS decile, toUInt64(d.2) AS units, toUInt64(d.3) AS accepted_units,
           toDecimal128(d.4, 0) * toDecimal128('0.000000000000000001', 18) AS min_cost,
           toDecimal128(d.5, 0) * toDecimal128('0.000000000000000001', 18) AS max_cost,
           toDecimal128(d.6, 0) * toDecimal128('0.000000000000000001', 18) AS cost_sum
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
               [costs[s1 + 1], costs[s2 + 1], costs[s3 + 1], costs[s4 + 1],
                costs[s5 + 1], costs[s6 + 1], costs[s7 + 1], costs[s8 + 1],
                costs[s9 + 1], costs[s10 + 1]] AS lo,
               [costs[s2], costs[s3], costs[s4], costs[s5], costs[s6],
                costs[s7], costs[s8], costs[s9], costs[s10], costs[s11]] AS hi
        FROM (
            SELECT week, team, workflow, n,
                   arrayMap(k -> reinterpretAsInt128(bitXor(toUInt128(bitShiftRight(k, 72)),
                                                            bitShiftLeft(toUInt128(1), 127))),
                            sorted) AS costs,
                   arrayCumSum(arrayMap(k -> toUInt64(bitAnd(k, toUInt256(255))), sorted))
                       AS accepted_before,
                   arrayCumSum(costs) AS cost_before,
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
                       arraySort(groupArray(bitOr(bitOr(
                           bitShiftLeft(toUInt256(bitXor(
                               reinterpretAsUInt128(toDecimal128(fully_loaded_cost, 18)),
                               bitShiftLeft(toUInt128(1), 127))), 72),
                           bitShiftLeft(toUInt256(cityHash64(work_unit_id)), 8)),
                           toUInt256(accepted)))) AS sorted
                FROM {db}.v_units_since(from_time = {from_time:DateTime64(3, 'UTC')})
                WHERE decided_at IS NOT NULL
                  AND toMonday(decided_at) >= toDate({from_time:DateTime64(3, 'UTC')})
                  AND toMonday(decided_at) IN (SELECT arrayJoin(arrayFilter(w -> w.2 = 0, (
                    SELECT groupArray((week, generation))
                    FROM {db}.v_decile_weeks_since(from_time = {from_time:DateTime64(3, 'UTC')})))).1)
                  -- A unit decided in a week has its row on or after the week's start.
                  AND day >= (SELECT min(w.1) FROM (SELECT arrayJoin(arrayFilter(
                      w -> w.2 = 0, (
                    SELECT groupArray((week, generation))
                    FROM {db}.v_decile_weeks_since(from_time = {from_time:DateTime64(3, 'UTC')})))) AS w))
                GROUP BY week, team, workflow
            )
        )
    )
);
