-- The live deciles by each unit's rank, not by eleven boundary indexes (issue 15).
--
-- Migration 0017 ranks each live week's units by one key and reads the deciles from
-- eleven boundary positions: s1..s11, each a cumulative array indexed at each of them,
-- and a tuple per decile built from all of those. The analyzer copies every alias into
-- each place it is used, so that expression is thousands of nodes, and analysing it was
-- about 20 ms of the 2-day panel's 100 (median over 10 million calls: EXPLAIN PLAN of
-- the live view 68 ms against 49 here; the sort and the read are the same).
--
-- Here each group's sorted keys are unnested with their rank r (1-based) and the decile
-- is ntile(10)'s, from r and the group's size n alone: the first n % 10 deciles hold
-- intDiv(n, 10) + 1 units, the others intDiv(n, 10), in key order. A decile with no
-- units (n < 10) has no row, as before. Units, accepted units, min, max and the cost
-- sum are then plain aggregates per decile, over the same Int128 costs, so every figure
-- is the same value and type as before (tests/test_dashboard_aggregates.py checks the
-- panel against the ntile view, ties across decile boundaries included; the settling
-- run records weeks from this view, so settled and live weeks stay equal too).

CREATE OR REPLACE VIEW {db}.v_deciles_of_live_weeks_since AS
SELECT week, team, workflow, decile,
       units, accepted_units, accepted_units / units AS acceptance_rate,
       toDecimal128(min_raw, 0) * toDecimal128('0.000000000000000001', 18) AS min_cost,
       toDecimal128(max_raw, 0) * toDecimal128('0.000000000000000001', 18) AS max_cost,
       toDecimal128(sum_raw, 0) * toDecimal128('0.000000000000000001', 18) / units
           AS mean_cost
FROM (
    SELECT week, team, workflow, decile,
           count() AS units, sum(accepted) AS accepted_units,
           min(cost) AS min_raw, max(cost) AS max_raw, sum(cost) AS sum_raw
    FROM (
        SELECT week, team, workflow,
               reinterpretAsInt128(bitXor(toUInt128(bitShiftRight(key, 72)),
                                          bitShiftLeft(toUInt128(1), 127))) AS cost,
               toUInt64(bitAnd(key, toUInt256(255))) AS accepted,
               -- ntile(10): r in the first n % 10 deciles of size q + 1, or after them.
               toUInt8(1 + if(rank <= (intDiv(n, 10) + 1) * (n % 10),
                              intDiv(rank - 1, intDiv(n, 10) + 1),
                              n % 10 + intDiv(rank - 1 - (intDiv(n, 10) + 1) * (n % 10),
                                              greatest(intDiv(n, 10), 1)))) AS decile
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
        ARRAY JOIN sorted AS key, arrayEnumerate(sorted) AS rank
    )
    GROUP BY week, team, workflow, decile
);

INLINE VIEWS {db}.v_deciles_of_live_weeks_since, {db}.v_acceptance_by_cost_decile_since;
