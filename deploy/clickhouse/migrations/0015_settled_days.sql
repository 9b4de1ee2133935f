-- Settled days: the unit panels without FINAL over quiet days (issue 15).
--
-- Every unit panel (cycle time, the conversion chain, cost spread, acceptance by cost
-- decile, top spenders) reads work_units_by_day FINAL from its range's first day on.
-- Over 30 days of 10 million calls that FINAL is most of each panel's time (300 ms of
-- a count that takes 4 ms without it), for the 0.1 % of rows it drops; and most of those
-- days no longer change.
--
-- settled_units holds, for a day, the rows that work_units_by_day FINAL keeps for that
-- day (tombstones and superseded revisions left out), copied by a settling run
-- (streams.clickhouse.settled_days: the worker runs one every
-- TOKENYIELD_DASHBOARD_SETTLE_INTERVAL_SECONDS, `tokenyield db settle` on
-- demand). settled_days records, per day, the run's generation with the row count and
-- the checksum of the raw rows it copied from: count() and the sum of cityHash64(unit,
-- version, is_deleted) (row_hash), over every stored row of the day, without FINAL.
--
-- A settled day counts only while its checksum is still the day's: FINAL over one day
-- depends on that day's rows alone (the key is (day, unit)), and any change to them
-- changes the checksum: an insert adds rows (a replayed one too, until merged), a merge
-- or a TTL drop removes some, a mutation rewrites them. (A unit's row moving to a later
-- day writes a tombstone on every earlier day, so its old days change too.) A day whose
-- checksum moved is read live, with FINAL, until the next run settles it again. So the
-- figures are the exact view's whatever the settling runs did or missed: a stale,
-- crashed or never-run settling only makes a panel slower, never different. Today and
-- the days after are never settled.
--
-- A run copies a day's rows under a new generation first, checks the checksum again,
-- and only then records the day: rows of a run that crashed, or that saw the day
-- change under it, are never counted (no recorded generation names them); the next run
-- deletes them with the generations its record replaced.
--
-- tests/test_settled_days.py checks every unit panel against its exact form with days
-- settled, changed after settling (late events, replays, merges) and never settled.

CREATE TABLE IF NOT EXISTS {db}.settled_units
(
    day Date,
    generation UInt64 COMMENT 'the settling run that copied the row (settled_days)',
    work_unit_id String,
    version UInt64,
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
ENGINE = MergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, generation, work_unit_id)
TTL day + INTERVAL 400 DAY
SETTINGS ttl_only_drop_parts = 1;

-- One row per settling of a day; the latest generation of a day is its record (FINAL).
CREATE TABLE IF NOT EXISTS {db}.settled_days
(
    day Date,
    generation UInt64,
    rows UInt64 COMMENT 'count() of the day''s raw rows in work_units_by_day when copied',
    checksum UInt64 COMMENT 'sum(cityHash64(work_unit_id, version, is_deleted)) of them',
    settled_units UInt64 COMMENT 'the rows copied to settled_units',
    settled_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(generation)
ORDER BY day;

-- Each raw row's share of its day's checksum, computed once at insert (the checksum
-- over 30 days then reads 8 bytes a row instead of every unit id: 22 ms, not 52).
-- Parts written before this migration get it from the mutation, and until then from
-- the expression at read time: the same value either way.
ALTER TABLE {db}.work_units_by_day
    ADD COLUMN IF NOT EXISTS row_hash UInt64
        MATERIALIZED cityHash64(work_unit_id, version, is_deleted)
        COMMENT 'this row''s term of the day''s checksum (migration 0015)';

ALTER TABLE {db}.work_units_by_day MATERIALIZE COLUMN row_hash;

-- The checksum of each day's raw rows from from_time's UTC day on (no FINAL: every
-- stored row, replays and tombstones included).
CREATE OR REPLACE VIEW {db}.v_unit_day_checksums_since AS
SELECT day, count() AS rows, sum(row_hash) AS checksum
FROM {db}.work_units_by_day
WHERE day >= toDate({from_time:DateTime64(3, 'UTC')})
GROUP BY day;

-- Every day from from_time's on that has rows, with the generation of settled_units to
-- read it from: its record's, if the record still matches the day's rows, else 0 (read
-- the day live).
CREATE OR REPLACE VIEW {db}.v_unit_days_since AS
-- Without a join (a hash join's set-up alone costs more than the rest): each day's
-- checksum row (generation 0) and its record, grouped by (day, rows, checksum). A
-- record that matches shares its day's group; one that does not forms a group of its
-- own, without a checksum row, which HAVING leaves out with the days that have no
-- rows. (settled_days FINAL: one record per day.)
SELECT day, if(count() = 2, max(g), toUInt64(0)) AS generation
FROM (
    SELECT day, rows, checksum, toUInt64(0) AS g
    FROM {db}.v_unit_day_checksums_since(from_time = {from_time:DateTime64(3, 'UTC')})
    UNION ALL
    SELECT day, rows, checksum, generation AS g
    FROM {db}.settled_days FINAL
    WHERE day >= toDate({from_time:DateTime64(3, 'UTC')})
)
GROUP BY day, rows, checksum
HAVING min(g) = 0;

-- What work_units_by_day FINAL holds from from_time's day on (tombstones left out):
-- settled days from their copy, the others live. Same columns as work_units_by_day,
-- is_deleted (always 0 here) and row_hash left out.
--
-- Both halves take the days from one scalar subquery, written the same in both:
-- ClickHouse computes a scalar subquery once per query (per distinct text), so both see
-- the same checksums and a day is read from exactly one half, even while rows arrive.
-- (As an IN subquery each half would compute its own, and a day that changed between
-- the two could be read from both.) The live half's days reach the index as a plain
-- `day IN`, which prunes the FINAL to them; a tuple with a constant would not. A
-- generation is a settling run's time in nanoseconds, never 0.
CREATE OR REPLACE VIEW {db}.v_unit_rows_since AS
SELECT day, work_unit_id, version, state, team, workflow, agent, primary_model,
       first_event_at, last_event_at, decided_at, cycle_seconds, calls, retries,
       unpriced_calls, currency, model_cost, fully_loaded_cost, outcomes, accepted, stage,
       value, evidence_confidence
FROM {db}.settled_units
WHERE day >= toDate({from_time:DateTime64(3, 'UTC')})
  AND (day, generation) IN (SELECT arrayJoin((
      SELECT groupArray((day, generation))
      FROM {db}.v_unit_days_since(from_time = {from_time:DateTime64(3, 'UTC')}))))
UNION ALL
SELECT day, work_unit_id, version, state, team, workflow, agent, primary_model,
       first_event_at, last_event_at, decided_at, cycle_seconds, calls, retries,
       unpriced_calls, currency, model_cost, fully_loaded_cost, outcomes, accepted, stage,
       value, evidence_confidence
FROM {db}.work_units_by_day FINAL
WHERE day >= toDate({from_time:DateTime64(3, 'UTC')})
  AND day IN (SELECT arrayJoin(arrayFilter(d -> d.2 = 0, (
      SELECT groupArray((day, generation))
      FROM {db}.v_unit_days_since(from_time = {from_time:DateTime64(3, 'UTC')})))).1);

-- Migration 0012's two unit readers, now through v_unit_rows_since; every unit panel's
-- view reads one of them, so all follow.
CREATE OR REPLACE VIEW {db}.v_units_since AS
SELECT *
FROM {db}.v_unit_rows_since(from_time = {from_time:DateTime64(3, 'UTC')})
WHERE state != 'pending';

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
FROM {db}.v_unit_rows_since(from_time = {from_time:DateTime64(3, 'UTC')})
WHERE last_event_at >= {from_time:DateTime64(3, 'UTC')}
  AND last_event_at <= {to_time:DateTime64(3, 'UTC')};
