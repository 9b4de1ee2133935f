"""The dashboard's pre-aggregates equal the exact views, on traffic with late events,
crash replays and replayed inserts.

The data goes through the real engine, the partition runtimes, the rollup and the sink
into chdb (``loadtest.engine_into_clickhouse``), in a database of its own:

- about one event in eight arrives at the end, long after its time: past the allowed
  lateness (window corrections), outcomes past their unit's deadline (an unattributed
  unit becomes attributed), calls of units already evicted (revived from summaries);
- partitions crash after their rows were inserted and before their checkpoint was
  saved, and replay those messages from the last checkpoint into batches of another
  shape (another dedup token: the rows are stored twice);
- window batches are inserted a second time under another token.

Then every pre-aggregate over the window rows is compared with its exact view
(``v_attribution_coverage_hourly`` with ``v_attribution_coverage``, calls joined to
attributions; ``v_intervention_hourly`` with ``v_acceptance_and_intervention``, over
outcomes FINAL), and every rewritten panel with the query it replaces
(``loadtest.dashboard_exact``), figure for figure.
"""

from __future__ import annotations

import asyncio
import math
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from loadtest.dashboard_exact import EXACT_PANELS
from loadtest.engine_into_clickhouse import EngineIntoClickHouse
from loadtest.grafana_sql import Selection, TimeRange, load_dashboard, panels, render
from schemas.partitioner import partition_for
from schemas.pricing import PriceBook
from streams.clickhouse.client import MIGRATIONS_DIR, migrate, split_statements
from streams.clickhouse.settled_days import settle_days
from streams.clickhouse.sink import merge_batches, unit_days
from streams.core.engine import EventKind, PartitionEngine
from streams.core.engine_config import EngineConfig
from streams.core.records import Outputs, PendingUnit
from streams.runtime.partition_runtime import PartitionRuntime
from tests.clickhouse_fixtures import generate_events, loaded_database
from tests.core_harness import key_of, kind_of

pytestmark = pytest.mark.clickhouse

DB = "tokenyield_aggregates"
PARTITIONS = 4
CHECKPOINT_EVENTS = 300
LATE_SHARE = 0.12
CRASH_EVERY = 3  # checkpoints

class CrashingLoad:
    """The engine into ClickHouse, with partitions that crash between their insert and
    their checkpoint and replay from the last checkpoint."""

    def __init__(self, pipeline: EngineIntoClickHouse, config: EngineConfig,
                 now: datetime) -> None:
        self.pipeline = pipeline
        self.config = config
        self.now_ms = int(now.timestamp() * 1000)
        self.book = PriceBook.load()
        self.offsets: dict[tuple[str, int], int] = {}
        self.since_checkpoint: dict[int, list[tuple[EventKind, bytes, int]]] = {
            p: [] for p in range(PARTITIONS)}
        self.crashes = 0
        self.window_batches: list[Outputs] = []
        sink = pipeline.sink
        insert = sink.write

        async def write(batch: Outputs) -> None:
            if batch.windows:
                self.window_batches.append(batch)
            await insert(batch)

        sink.write = write  # type: ignore[method-assign]

    def apply(self, kind: EventKind, partition: int, value: bytes) -> None:
        offset = self.offsets.get((kind, partition), -1) + 1
        self.offsets[(kind, partition)] = offset
        self.pipeline.runtimes[partition].apply(kind, kind, value, offset)
        self.since_checkpoint[partition].append((kind, value, offset))

    async def checkpoint(self) -> None:
        await self.pipeline.checkpoint()
        for messages in self.since_checkpoint.values():
            messages.clear()

    async def crash(self, partition: int) -> None:
        """The batch's rows reach ClickHouse, then the worker dies before saving the
        checkpoint: a new runtime restores the last one and reads the same messages
        again (their next checkpoint covers more, so its token differs)."""
        runtime = self.pipeline.runtimes[partition]
        await self.pipeline.sink.write(runtime.batch)
        engine = PartitionEngine(partition, self.config, lambda: self.book,
                                 lambda: self.now_ms, store=self.pipeline.store)
        fresh = PartitionRuntime(engine, self.pipeline.sink, interval_seconds=math.inf,
                                 max_events=2**62)
        fresh.restore(self.pipeline.store)
        self.pipeline.runtimes[partition] = fresh
        for kind, value, offset in self.since_checkpoint[partition]:
            fresh.apply(kind, kind, value, offset)
        self.crashes += 1


def with_verdicts(events: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """A later review of every seventh outcome: a verdict (an outcome row, not an
    outcome), some after review minutes; none later than the traffic's end."""
    verdicts = []
    for n, event in enumerate(e for e in events if kind_of(e) == "outcomes"):
        if n % 7 == 0:
            at = min(datetime.fromisoformat(event["occurred_at"]) + timedelta(minutes=20),
                     now - timedelta(minutes=3))
            verdicts.append({
                "event_id": f"{event['event_id']}-v", "work_unit_id": event["work_unit_id"],
                "occurred_at": at.isoformat(), "team": event["team"],
                "workflow": event["workflow"],
                "verdict": "overturned" if n % 2 else "upheld",
                "human_review_minutes": str(n % 3 * 4)})
    return sorted(events + verdicts, key=lambda e: e["occurred_at"])


def past_midnight(events: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """A verdict ten minutes after midnight for every outcome of the hour before one (UTC):
    the unit, decided and stored, has its last event on a later day (its row on the
    earlier day must stop counting)."""
    verdicts = []
    for event in events:
        at = datetime.fromisoformat(event["occurred_at"])
        midnight = (at + timedelta(days=1)).replace(hour=0, minute=0, second=0,
                                                    microsecond=0)
        if kind_of(event) == "outcomes" and midnight - at < timedelta(hours=1) \
                and midnight + timedelta(minutes=10) < now - timedelta(minutes=3):
            verdicts.append({
                "event_id": f"{event['event_id']}-m", "work_unit_id": event["work_unit_id"],
                "occurred_at": (midnight + timedelta(minutes=10)).isoformat(),
                "team": event["team"], "workflow": event["workflow"], "verdict": "upheld",
                "human_review_minutes": "2"})
    return sorted(events + verdicts, key=lambda e: e["occurred_at"])


def disordered(events: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The events in time order, except a share of them delivered at the very end."""
    rng = random.Random(seed)
    late = [e for e in events if rng.random() < LATE_SHARE]
    chosen = {id(e) for e in late}
    rng.shuffle(late)
    return [e for e in events if id(e) not in chosen] + late


async def _load(client: Client, now: datetime) -> dict[str, int]:
    migrate(client, DB)
    # Keep the replayed rows apart, as freshly loaded parts are (chdb merges in seconds):
    # the views must be exact without the merges' help.
    for table in ("model_calls", "attributions", "attributions_latest",
                  "cost_per_outcome_windows", "work_units_by_day"):
        client.command(f"SYSTEM STOP MERGES {DB}.{table}")
    config = EngineConfig(partitions=PARTITIONS, deadline_seconds=3600, retention_seconds=3600,
                          allowed_lateness_seconds=120)
    pipeline = EngineIntoClickHouse(client, DB, config, now, retry_max_seconds=1)
    load = CrashingLoad(pipeline, config, now)
    events = disordered(past_midnight(with_verdicts(generate_events(now, seed=23), now), now),
                        seed=5)
    checkpoints = 0
    try:
        for count, event in enumerate(events, 1):
            kind: EventKind = kind_of(event)  # type: ignore[assignment]
            partition = partition_for(key_of(event), PARTITIONS)
            load.apply(kind, partition, orjson.dumps(event))
            if count % CHECKPOINT_EVENTS == 0:
                checkpoints += 1
                if checkpoints % CRASH_EVERY == 0:
                    # Instead of this checkpoint: the next one covers more messages.
                    await load.crash(checkpoints % PARTITIONS)
                else:
                    await load.checkpoint()
        await load.checkpoint()
        # Window rows inserted again under other tokens (a rollup that crashed after
        # its insert): stored twice, the same rows.
        for index, batch in enumerate(load.window_batches[-3:]):
            again = Outputs(windows=batch.windows)
            again.cover("rollup-replay", 0, index)
            await pipeline.sink.write(again)
    finally:
        pipeline.close()
    return {"crashes": load.crashes, "late": int(len(events) * LATE_SHARE)}


_STATE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def aggregates_db() -> dict[str, Any]:
    if not _STATE:
        # The traffic starts in the last minutes of an hour (it spans 48 hours up to
        # now): that hour has calls and no outcome yet, which the intervention panel
        # must show as no point, as its exact form does (it showed a NULL one).
        now = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=58, second=30,
                                                                microsecond=0)
        client = loaded_database().client  # the process's one chdb (built outside the loop)
        _STATE.update(asyncio.run(_load(client, now)), now=now)
    return _STATE


def _rows(sql: str) -> list[dict[str, Any]]:
    result = loaded_database().client.query(sql)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def _tuples(sql: str) -> list[tuple[Any, ...]]:
    return loaded_database().client.query(sql).result_rows


def _scalar(sql: str) -> Any:
    return loaded_database().client.query(sql).result_rows[0][0]


SPEND = ("attributed_spend", "unattributed_spend", "pending_spend", "total_spend")


def _exact_by_day() -> dict[tuple[Any, ...], tuple[Decimal, ...]]:
    return {(r["day"], r["team"], r["workflow"]): tuple(r[c] for c in SPEND) for r in _rows(f"""
        SELECT day, team, workflow, {", ".join(SPEND)} FROM {DB}.v_attribution_coverage""")}


def _hourly_by_day() -> dict[tuple[Any, ...], tuple[Decimal, ...]]:
    sums = ", ".join(f"sum({c}) AS {c}_total" for c in SPEND)
    return {(r["day"], r["team"], r["workflow"]): tuple(r[f"{c}_total"] for c in SPEND)
            for r in _rows(f"""
        SELECT toDate(hour) AS day, team, workflow, {sums}
        FROM {DB}.v_attribution_coverage_hourly
        GROUP BY day, team, workflow
        HAVING total_spend_total != 0""")}


def test_the_data_has_what_the_aggregates_must_survive(aggregates_db: dict[str, Any]) -> None:
    assert aggregates_db["crashes"] >= 3
    # Replayed inserts are stored twice (until a merge): the exact views read FINAL.
    assert _scalar(f"SELECT count() - uniqExact(event_id) FROM {DB}.model_calls") > 0
    assert _scalar(f"SELECT count() - uniqExact(window_id, version) "
                   f"FROM {DB}.cost_per_outcome_windows") > 0
    assert _scalar(f"SELECT count() FROM {DB}.cost_per_outcome_windows WHERE correction != ''"
                   ) > 0, "no late corrections"
    states = {r["state"]: r["n"] for r in _rows(f"""
        SELECT multiIf(a.work_unit_id = '', 'pending', a.outcomes > 0, 'attributed',
                       'unattributed') AS state, count() AS n
        FROM (SELECT DISTINCT work_unit_id FROM {DB}.model_calls) AS c
        LEFT JOIN (SELECT work_unit_id, outcomes FROM {DB}.attributions_latest FINAL) AS a
            ON a.work_unit_id = c.work_unit_id
        GROUP BY state""")}
    assert set(states) == {"pending", "attributed", "unattributed"}, states
    # Units that expired, then met their (late) outcome: their spend moved class.
    assert _scalar(f"""SELECT count() FROM {DB}.attributions FINAL
                       WHERE state = 'unattributed' AND work_unit_id IN (
                           SELECT work_unit_id FROM {DB}.attributions_latest FINAL
                           WHERE outcomes > 0)""") > 0


def test_hourly_coverage_equals_the_exact_view_day_by_day(
        aggregates_db: dict[str, Any]) -> None:
    exact, hourly = _exact_by_day(), _hourly_by_day()
    assert exact and hourly == exact
    assert all(sum(v[:3]) == v[3] for v in exact.values())


def test_the_rewritten_panels_equal_the_panels_they_replace(
        aggregates_db: dict[str, Any]) -> None:
    now: datetime = aggregates_db["now"]
    hour = now.replace(minute=0, second=0)
    dashboard = {p["id"]: p for p in panels(load_dashboard())}
    answered: set[tuple[int, int]] = set()
    # Hours as Grafana asks for them: the hour filter keeps whole hours, the exact view
    # every call from the first second; they agree on ranges that start on an hour.
    for start, end in ((hour - timedelta(hours=30), now), (hour - timedelta(hours=3), now),
                       (hour - timedelta(days=30), now)):
        time_range = TimeRange(start, end, 3600)
        for (panel_id, index), exact_sql in EXACT_PANELS.items():
            sql = dashboard[panel_id]["targets"][index]["rawSql"]
            assert "_hourly" in sql or "_since(" in sql or "_by_day" in sql
            selection = Selection(None, None, None)
            fast = loaded_database().client.query(
                render(sql, selection, {}, time_range, DB)).result_rows
            slow = loaded_database().client.query(
                render(exact_sql, selection, {}, time_range, DB)).result_rows
            if panel_id in (16, 34, 39):  # tables: rows with equal sort keys in any order
                fast, slow = sorted(fast), sorted(slow)
            assert fast == slow, (panel_id, start)
            if fast and fast[0][0] is not None:
                answered.add((panel_id, index))
    # Each panel showed something over at least one range (units decided in the last
    # three hours may be none), so the comparisons compared figures.
    assert answered == set(EXACT_PANELS)


def test_the_deciles_panel_ranks_every_week_the_range_touches(
        aggregates_db: dict[str, Any]) -> None:
    """A range that starts after a Monday shows the week it starts in, ranked whole
    (deciles are per week): the panel showed only the weeks that start inside the
    range, so over two days it was empty from Thursday to Sunday."""
    now: datetime = aggregates_db["now"]
    weeks_with_units = {week for (week,) in _tuples(
        f"SELECT DISTINCT toMonday(decided_at) FROM {DB}.attributions_latest FINAL "
        f"WHERE decided_at IS NOT NULL")}
    hour = now.replace(minute=0, second=0)
    start = next(s for s in (hour - timedelta(hours=h) for h in range(1, 48))
                 if s.weekday() != 0
                 and s.date() - timedelta(days=s.weekday()) in weeks_with_units)
    first_week = start.date() - timedelta(days=start.weekday())
    weeks = [first_week + timedelta(days=7 * k) for k in range(3)
             if first_week + timedelta(days=7 * k) <= now.date()]
    week_list = ", ".join(f"toDate('{week}')" for week in weeks)
    expected = _tuples(f"""
        SELECT concat('decile ', toString(decile)) AS decile_name,
               sum(accepted_units) / sum(units) AS acceptance_rate
        FROM {DB}.v_acceptance_by_cost_decile WHERE week IN ({week_list})
        GROUP BY decile, decile_name ORDER BY decile""")
    sql = {p["id"]: p for p in panels(load_dashboard())}[38]["targets"][0]["rawSql"]
    shown = loaded_database().client.query(render(
        sql, Selection(None, None, None), {}, TimeRange(start, now, 3600), DB)).result_rows
    assert expected and shown == expected, (start, weeks)


def test_hourly_reviews_equal_the_exact_view(aggregates_db: dict[str, Any]) -> None:
    exact = {(r["hour"], r["team"], r["workflow"]): (r["outcomes"], r["reviewed_outcomes"])
             for r in _rows(f"SELECT hour, team, workflow, outcomes, reviewed_outcomes "
                            f"FROM {DB}.v_acceptance_and_intervention")}
    hourly = {(r["hour"], r["team"], r["workflow"]): (r["outcomes"], r["reviewed_outcomes"])
              for r in _rows(f"SELECT hour, team, workflow, outcomes, reviewed_outcomes "
                             f"FROM {DB}.v_intervention_hourly WHERE outcomes != 0")}
    assert exact and hourly == exact
    assert _scalar(f"SELECT countIf(verdict != '') FROM {DB}.outcomes FINAL") > 0


def test_units_by_last_event_equal_the_exact_view(aggregates_db: dict[str, Any]) -> None:
    keys = "hour, team, workflow, agent"
    exact = {tuple(r[k] for k in ("hour", "team", "workflow", "agent")):
             (r["units"], r["without"], r["spend_total"], r["without_spend"]) for r in _rows(f"""
        SELECT toStartOfHour(last_event_at) AS hour, team, workflow, agent,
               count() AS units, countIf(outcomes = 0) AS without,
               sum(spend) AS spend_total, sumIf(spend, outcomes = 0) AS without_spend
        FROM {DB}.v_work_units GROUP BY {keys}""")}
    hourly = {tuple(r[k] for k in ("hour", "team", "workflow", "agent")):
              (r["units"], r["units_without_outcome"], r["spend"], r["spend_without_outcome"])
              for r in _rows(f"SELECT * FROM {DB}.v_units_by_agent_hourly WHERE units != 0")}
    assert exact and hourly == exact
    # Pending units (no attribution yet) are among them, and units without an outcome.
    assert _scalar(f"SELECT countIf(state = 'pending') FROM {DB}.v_work_units") > 0
    assert sum(v[1] for v in hourly.values()) > 0


UNIT_COLUMNS = ("work_unit_id", "version", "state", "team", "workflow", "agent",
                "primary_model", "first_event_at", "last_event_at", "decided_at",
                "cycle_seconds", "calls", "retries", "unpriced_calls", "currency", "model_cost",
                "fully_loaded_cost", "outcomes", "accepted", "stage", "value",
                "evidence_confidence")


def test_units_by_day_are_the_latest_attributions_from_any_day_on(
        aggregates_db: dict[str, Any]) -> None:
    """work_units_by_day read from a day on (v_units_since) holds exactly the latest
    attribution of every unit whose last event is on or after that day: no unit twice,
    none left behind on a day its last event has left, whatever revisions came in which
    order or twice."""
    columns = ", ".join(UNIT_COLUMNS)
    days = [r["day"] for r in _rows(f"SELECT DISTINCT toDate(last_event_at) AS day "
                                    f"FROM {DB}.attributions ORDER BY day")]
    assert len(days) >= 2
    for day in days:
        since = f"toDateTime64('{day} 00:00:00', 3, 'UTC')"
        by_day = _tuples(f"SELECT {columns} FROM {DB}.v_units_since(from_time = {since}) "
                         f"ORDER BY work_unit_id")
        exact = _tuples(f"SELECT {columns} FROM {DB}.attributions_latest FINAL "
                        f"WHERE toDate(last_event_at) >= '{day}' ORDER BY work_unit_id")
        assert by_day == exact, day
    # What the tombstones are for: units whose last event moved to a later day after an
    # attribution of theirs was stored (here: verdicts after midnight), and replays.
    hidden = _scalar(f"""
        SELECT count() FROM (
            SELECT day, work_unit_id, max(is_deleted) AS deleted, min(is_deleted) AS kept
            FROM {DB}.work_units_by_day GROUP BY day, work_unit_id)
        WHERE deleted = 1 AND kept = 0""")
    assert hidden > 0
    assert _scalar(f"SELECT count() - uniqExact(work_unit_id, version, day) "
                   f"FROM {DB}.work_units_by_day") > 0, "no replayed rows"


def test_a_pending_row_goes_with_a_tombstone_on_every_earlier_day_and_batches_keep_the_latest(
        ) -> None:
    day = 86_400_000
    first = PendingUnit("u1", 5, "t", "w", "", "m", 3 * day - 1, 3 * day + 10, 2, 0, 0,
                        10, 10, "USD")
    later = PendingUnit("u1", 9, "t", "w", "", "m", 2 * day + 7, 5 * day, 3, 0, 0, 20, 20,
                        "USD")
    assert [(d, deleted) for _, d, deleted in unit_days([first, later])] == [
        (2, 1), (3, 0), (2, 1), (3, 1), (4, 1), (5, 0)]
    batches = [Outputs(pending_units=[first]), Outputs(pending_units=[later]),
               Outputs(pending_units=[first])]  # a replay of the first, after
    assert merge_batches(batches).pending_units == [later]


def test_every_unit_by_day_is_the_unit_v_work_units_lists(
        aggregates_db: dict[str, Any]) -> None:
    """Decided units from their attributions and pending ones from the engine's rows:
    work_units_by_day over all days is v_work_units (calls joined to attributions at
    query time), unit for unit, pending ones included."""
    columns = ("work_unit_id", "state", "team", "workflow", "calls", "retries",
               "unpriced_calls", "spend", "first_event_at", "last_event_at", "outcomes")
    names = ", ".join(columns)
    epoch = "toDateTime64('1970-01-02 00:00:00', 3, 'UTC')"
    far = "toDateTime64('2100-01-01 00:00:00', 3, 'UTC')"
    by_day = _tuples(f"SELECT {names} FROM {DB}.v_work_units_between_by_day("
                     f"from_time = {epoch}, to_time = {far}) ORDER BY work_unit_id")
    exact = _tuples(f"SELECT {names} FROM {DB}.v_work_units "
                    f"WHERE position(work_unit_id, '~shared:') != 1 ORDER BY work_unit_id")
    assert by_day == exact
    states = {row[1] for row in by_day}
    assert states == {"pending", "attributed", "unattributed"}
    # Pending rows the engine wrote and then replaced by the unit's decision: still in
    # the table, outranked.
    assert _scalar(f"""
        SELECT count() FROM {DB}.work_units_by_day AS p
        WHERE p.state = 'pending' AND p.work_unit_id IN (
            SELECT work_unit_id FROM {DB}.attributions_latest FINAL)""") > 0


def test_the_migration_books_the_classes_of_windows_written_before_it(
        aggregates_db: dict[str, Any]) -> None:
    """Migration 0010's backfill, run on windows without the new figures, books exactly
    what the engine booked."""
    client = loaded_database().client
    before = _hourly_by_day()
    client.command(f"SYSTEM START MERGES {DB}.cost_per_outcome_windows")  # mutations merge
    reviews = _rows(f"SELECT * FROM {DB}.v_intervention_hourly ORDER BY hour, team, workflow")
    client.command(f"ALTER TABLE {DB}.cost_per_outcome_windows UPDATE attributed_spend = 0, "
                   f"unattributed_spend = 0, reviewed_outcomes = 0, verdicts = 0 WHERE 1",
                   settings={"mutations_sync": 2})
    by_unit = (f"SELECT * EXCEPT final FROM {DB}.v_units_by_agent_hourly WHERE units != 0 "
               f"ORDER BY hour, team, workflow, agent")  # backfilled rows are not final
    units = _rows(by_unit)
    client.command(f"ALTER TABLE {DB}.cost_per_outcome_windows DELETE WHERE scope = 'unit'",
                   settings={"mutations_sync": 2})
    assert _hourly_by_day() != before
    migration = Path(MIGRATIONS_DIR) / "0010_dashboard_aggregates.sql"
    backfill = [s for s in split_statements(migration.read_text())
                if "\n".join(line for line in s.splitlines()
                             if not line.startswith("--")).lstrip().startswith("INSERT")]
    assert len(backfill) == 4
    for statement in backfill:
        client.command(statement.replace("{db}", DB))
    assert _hourly_by_day() == before == _exact_by_day()
    assert _rows(f"SELECT * FROM {DB}.v_intervention_hourly ORDER BY hour, team, workflow"
                 ) == reviews
    assert _rows(by_unit) == units


def test_the_deciles_without_a_window_rank_as_ntile_does_ties_and_small_weeks_included(
) -> None:
    """v_acceptance_by_cost_decile_since (migration 0014) ranks each week's units from
    one sorted array instead of ntile(10) over a window: the same deciles, figure for
    figure, as the ntile view, where costs tie across decile boundaries (broken by unit
    id), where a week has fewer than ten units or a multiple of ten or one more, and
    where a unit's later revision changed its cost."""
    database = "tokenyield_deciles"
    client = loaded_database().client
    client.command(f"DROP DATABASE IF EXISTS {database}")
    migrate(client, database)
    rng = random.Random(14)
    monday = datetime(2026, 11, 2, tzinfo=UTC)
    rows = []
    sizes = [1, 3, 9, 10, 11, 19, 20, 23, 57, 101, 240]
    for week, size in enumerate(sizes):
        for index in range(size):
            unit = f"u{rng.randrange(10**6):06d}-{week}-{index}"  # ids not in cost order
            decided = monday + timedelta(days=7 * (week % 4), hours=rng.randrange(150))
            for revision in (1, 2) if index % 7 == 0 else (1,):
                # Four costs only: ties across every decile boundary.
                cost = Decimal(rng.choice(["0", "0.25", "0.25", "1.5", "7"]))
                rows.append([f"{unit}#{revision}", unit, revision, revision,
                             "attributed", "support", f"flow-{week // 4}",
                             decided - timedelta(minutes=5), decided, decided, cost,
                             rng.randrange(2), "USD", 1])
    client.insert(f"{database}.attributions", rows, column_names=[
        "attribution_id", "work_unit_id", "revision", "version", "state", "team",
        "workflow", "first_event_at", "last_event_at", "decided_at", "fully_loaded_cost",
        "accepted", "currency", "outcomes"])
    since = monday.strftime("%Y-%m-%d %H:%M:%S")
    columns = "week, team, workflow, decile, units, accepted_units, min_cost, max_cost, " \
              "mean_cost"

    def fast_and_ntile() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        return client.query(
            f"SELECT {columns} FROM {database}.v_acceptance_by_cost_decile_since(from_time "
            f"= toDateTime64('{since}', 3, 'UTC')) ORDER BY ALL").result_rows, client.query(
            f"SELECT {columns} FROM {database}.v_acceptance_by_cost_decile "
            f"WHERE week >= '{since[:10]}' ORDER BY ALL").result_rows

    fast, ntile = fast_and_ntile()
    assert fast == ntile
    # Settled weeks (migration 0016) give the same figures, and a week whose unit is
    # revised after it was settled is ranked live again until settled anew.
    later = date(2027, 1, 4)  # every week of the data is complete by then
    report = settle_days(client, database, today=later, horizon_days=400)
    decided_weeks = {monday.date() + timedelta(days=7 * k) for k in range(4)}
    assert decided_weeks <= set(report.weeks) and not report.failed, report.summary()
    assert fast_and_ntile() == (ntile, ntile)
    revised = rows[0][:]
    revised[0], revised[2], revised[3] = f"{revised[1]}#9", 9, 9
    revised[10] = Decimal("1000")  # the most expensive unit of its week now
    client.insert(f"{database}.attributions", [revised], column_names=[
        "attribution_id", "work_unit_id", "revision", "version", "state", "team",
        "workflow", "first_event_at", "last_event_at", "decided_at", "fully_loaded_cost",
        "accepted", "currency", "outcomes"])
    fast, changed = fast_and_ntile()
    assert changed != ntile and fast == changed
    again = settle_days(client, database, today=later, horizon_days=400)
    assert len(again.weeks) == 1, again.summary()
    assert fast_and_ntile() == (changed, changed)
    by_group: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for row in ntile:
        by_group.setdefault(row[:3], []).append(row)
    assert {len(deciles) for deciles in by_group.values()} >= {1, 3, 9, 10}
    # Ties cross boundaries: some cost is the max of one decile and the min of the next.
    assert any(a[7] == b[6] for deciles in by_group.values()
               for a, b in pairwise(deciles))
    client.command(f"DROP DATABASE {database}")
