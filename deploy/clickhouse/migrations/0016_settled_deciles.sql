-- Settled weeks of the deciles (issue 15).
--
-- After migration 0015 every unit panel over 30 days answers in a quarter of a second
-- but one: acceptance by decile ranks each week's units (2.6 million over 30 days) by
-- cost, and sorting them is most of its time whatever reads the units. Yet a week's
-- deciles only change when one of its units does, and the rows say when: a unit decided
-- in a week has a row or a tombstone on every day from its first event to its last
-- (migration 0012), its deciding outcome's day among them, so any change to it (a
-- revision, a later event that moves its row, a new decision in the week) writes a row
-- on one of the week's own days. So the checksum of the week's seven days (the sum of
-- their day checksums, migration 0015) changes whenever its deciles can.
--
-- settled_deciles holds a week's figures as the live view computes them, under the
-- settling run's generation; settled_weeks records the week's checksum when they were
-- computed (the run checks it again after, as for the days). The panel reads a week
-- from its record while the checksum matches and ranks it live otherwise: the current
-- week always, a past one until the next settling run after it changed. Only complete
-- weeks (ended before today) are settled. A merge on the week's days changes the
-- checksum and only costs a recomputation; deleting a unit's rows by hand (a mutation
-- outside the week's days) is the one change this cannot see: run `tokenyield db
-- settle --again` after one.
--
-- tests/test_settled_days.py checks the panel against the ntile view with weeks
-- settled, changed after settling and live.

CREATE TABLE IF NOT EXISTS {db}.settled_deciles
(
    week Date,
    generation UInt64 COMMENT 'the settling run that computed the row (settled_weeks)',
    team LowCardinality(String),
    workflow LowCardinality(String),
    decile UInt8,
    units UInt64,
    accepted_units UInt64,
    min_cost Decimal(38, 18),
    max_cost Decimal(38, 18),
    mean_cost Decimal(38, 18)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(week)
ORDER BY (week, generation, team, workflow, decile)
TTL week + INTERVAL 400 DAY
SETTINGS ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {db}.settled_weeks
(
    week Date,
    generation UInt64,
    rows UInt64 COMMENT 'the week''s raw rows in work_units_by_day when computed',
    checksum UInt64 COMMENT 'the sum of its days'' checksums (v_unit_day_checksums_since)',
    settled_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(generation)
ORDER BY week;

-- Every week from from_time's day on that has rows, with the generation of
-- settled_deciles to read it from (0: rank it live); as v_unit_days_since does for days.
CREATE OR REPLACE VIEW {db}.v_decile_weeks_since AS
SELECT week, if(count() = 2, max(g), toUInt64(0)) AS generation
FROM (
    SELECT toMonday(day) AS week, sum(rows) AS rows, sum(checksum) AS checksum,
           toUInt64(0) AS g
    FROM {db}.v_unit_day_checksums_since(from_time = {from_time:DateTime64(3, 'UTC')})
    GROUP BY week
    UNION ALL
    SELECT week, rows, checksum, generation AS g
    FROM {db}.settled_weeks FINAL
    WHERE week >= toMonday(toDate({from_time:DateTime64(3, 'UTC')}))
)
GROUP BY week, rows, checksum
HAVING min(g) = 0;

-- Migration 0014's deciles, for the weeks v_decile_weeks_since reads live only, from
-- their first day on.
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

-- The panel's view: settled weeks from their record, the others live. Both halves take
-- the weeks from one scalar subquery, written the same (computed once per query).
CREATE OR REPLACE VIEW {db}.v_acceptance_by_cost_decile_since AS
SELECT week, team, workflow, decile, units, accepted_units,
       accepted_units / units AS acceptance_rate, min_cost, max_cost, mean_cost
FROM {db}.settled_deciles
WHERE week >= toDate({from_time:DateTime64(3, 'UTC')})
  AND (week, generation) IN (SELECT arrayJoin((
                    SELECT groupArray((week, generation))
                    FROM {db}.v_decile_weeks_since(from_time = {from_time:DateTime64(3, 'UTC')}))))
UNION ALL
SELECT week, team, workflow, decile, units, accepted_units, acceptance_rate, min_cost,
       max_cost, mean_cost
FROM {db}.v_deciles_of_live_weeks_since(from_time = {from_time:DateTime64(3, 'UTC')});
