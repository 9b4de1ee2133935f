-- The unit panels' views flattened (issue 15).
--
-- Every unit panel's view calls parameterized views that call others (v_units_since ->
-- v_unit_rows_since -> v_unit_days_since -> v_unit_day_checksums_since, and the
-- deciles' weeks beside them), and ClickHouse analyses each call afresh: over a range
-- with no rows at all, v_units_since took 57 ms and the deciles panel 216 ms, nearly
-- all of it analysis; the same SQL with the calls written as subqueries took 28 and
-- 104. INLINE VIEWS (streams.clickhouse.inline_views) recreates each view below with
-- every call of a parameterized view replaced by that view's body: the same SQL, so
-- the same figures, analysed once. The views they call stay defined, for analysts.
--
-- A migration that redefines one of the inlined bodies (any view these call) must end
-- with INLINE VIEWS for the views below again; the runner refuses to migrate otherwise.

INLINE VIEWS
    {db}.v_unit_days_since,
    {db}.v_unit_rows_since,
    {db}.v_units_since,
    {db}.v_work_units_between_by_day,
    {db}.v_cycle_time_since,
    {db}.v_conversion_funnel_since,
    {db}.v_unit_cost_spread_since,
    {db}.v_decile_weeks_since,
    {db}.v_deciles_of_live_weeks_since,
    {db}.v_acceptance_by_cost_decile_since;
