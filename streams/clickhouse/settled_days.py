"""Settle quiet days of ``work_units_by_day`` for the unit panels (migration 0015).

A settling run copies, for each day before today whose rows changed since it was last
settled, what ``work_units_by_day FINAL`` keeps of that day into ``settled_units``, and
records the day in ``settled_days`` with the checksum of the raw rows it read. The
panels read a recorded day from its copy while the checksum still matches, and live
otherwise, so nothing here can change a figure: a run that fails, is interrupted, or
never happens leaves the panels exact and only slower. Which is why errors are
reported and the run moves on to the next day, and the worker's loop logs and goes on.

Per day, in this order:

1. the day's checksum (``v_unit_day_checksums_since``);
2. ``INSERT ... SELECT`` of the day's FINAL rows under a new generation (the run's
   nanosecond clock, so later runs outrank earlier ones in ``settled_days``);
3. the checksum again; if it moved, the copy may mix two states: it is not recorded,
   so no view ever reads it (the next run deletes it);
4. the record; then the day's rows of every other generation are deleted (a mutation,
   in the background).

A crash between 2 and 4 leaves rows no record names: never read, deleted by the next
run that settles that day.

Then the complete weeks (Monday to Sunday, before today) whose rows changed get their
deciles computed and recorded the same way (``settled_deciles``, ``settled_weeks``,
migration 0016): a week's checksum is the sum of its seven days'.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from clickhouse_connect.driver.client import Client

# work_units_by_day's columns as settled_units holds them (is_deleted and row_hash left
# out; generation added in front).
UNIT_COLUMNS = (
    "work_unit_id", "version", "state", "team", "workflow", "agent", "primary_model",
    "first_event_at", "last_event_at", "decided_at", "cycle_seconds", "calls", "retries",
    "unpriced_calls", "currency", "model_cost", "fully_loaded_cost", "outcomes", "accepted",
    "stage", "value", "evidence_confidence")

DEFAULT_HORIZON_DAYS = 35  # the dashboard's widest preset range (30 days) and a margin


@dataclass(slots=True)
class SettleReport:
    """What one run did: days settled, days that changed while being copied (left live
    until the next run), days already settled, and days whose copy failed."""

    settled: list[date] = field(default_factory=list)
    moved: list[date] = field(default_factory=list)
    unchanged: int = 0
    failed: dict[date, str] = field(default_factory=dict)
    units: int = 0
    weeks: list[date] = field(default_factory=list)  # weeks of deciles settled (0016)
    seconds: float = 0.0

    def summary(self) -> str:
        parts = [f"{len(self.settled)} day(s) settled ({self.units:,} units)",
                 f"{self.unchanged} already settled",
                 f"{len(self.weeks)} week(s) of deciles settled"]
        if self.moved:
            parts.append(f"{len(self.moved)} changed while copied (left live)")
        if self.failed:
            parts.append(f"{len(self.failed)} failed: " + "; ".join(
                f"{day}: {reason}" for day, reason in sorted(self.failed.items())))
        return ", ".join(parts) + f" in {self.seconds:.1f} s"


def _checksums(client: Client, database: str, first: date, last: date
               ) -> dict[date, tuple[int, int]]:
    rows = client.query(
        f"SELECT day, rows, checksum FROM {database}.v_unit_day_checksums_since("
        f"from_time = {{first:DateTime64(3, 'UTC')}}) WHERE day <= {{last:Date}}",
        parameters={"first": datetime(first.year, first.month, first.day, tzinfo=UTC),
                    "last": last}).result_rows
    return {day: (int(count), int(checksum)) for day, count, checksum in rows}


def _records(client: Client, database: str, table: str, period: str, first: date
             ) -> dict[date, tuple[int, int]]:
    """The latest record of each day (settled_days) or week (settled_weeks) from first."""
    rows = client.query(
        f"SELECT {period}, rows, checksum FROM {database}.{table} FINAL "
        f"WHERE {period} >= {{first:Date}}", parameters={"first": first}).result_rows
    return {when: (int(count), int(checksum)) for when, count, checksum in rows}


def days_to_settle(client: Client, database: str, *, today: date,
                   horizon_days: int = DEFAULT_HORIZON_DAYS, again: bool = False
                   ) -> tuple[dict[date, tuple[int, int]], int]:
    """The days before ``today`` (and within the horizon) whose rows differ from their
    record (``again``: every one), with their current (rows, checksum); and how many
    others have rows."""
    first, last = today - timedelta(days=horizon_days), today - timedelta(days=1)
    current = _checksums(client, database, first, last)
    recorded = {} if again else _records(client, database, "settled_days", "day", first)
    changed = {day: sums for day, sums in sorted(current.items()) if recorded.get(day) != sums}
    return changed, len(current) - len(changed)


def settle_days(client: Client, database: str, *, today: date | None = None,
                horizon_days: int = DEFAULT_HORIZON_DAYS, cluster: str = "",
                again: bool = False,
                clock_ns: Callable[[], int] = time.time_ns,
                progress: Callable[[str], None] | None = None) -> SettleReport:
    """Settle every day before ``today`` (UTC) whose rows changed since its record, then
    every complete week whose deciles did. ``cluster``: the migrations' cluster, if any
    (the clean-up runs on its shards). ``again``: every day and week, changed or not
    (after rows were deleted by hand, which a week's checksum cannot see)."""
    started = time.monotonic()
    today = today or datetime.now(UTC).date()
    report = SettleReport()
    pending, report.unchanged = days_to_settle(client, database, today=today,
                                               horizon_days=horizon_days, again=again)
    for index, (day, sums) in enumerate(pending.items(), 1):
        settle_day(client, database, day, sums, report, generation=clock_ns(), cluster=cluster)
        if progress is not None:
            progress(f"settled {index}/{len(pending)} days ({day})")
    for week, sums in weeks_to_settle(client, database, today=today,
                                      horizon_days=horizon_days, again=again).items():
        settle_week(client, database, week, sums, report, generation=clock_ns(),
                    cluster=cluster)
    report.seconds = time.monotonic() - started
    return report


def _week_sums(client: Client, database: str, first: date, last: date
               ) -> dict[date, tuple[int, int]]:
    """Each week's (rows, checksum): the sums of its days', as v_decile_weeks_since
    adds them (a UInt64 sum, which wraps)."""
    weeks: dict[date, tuple[int, int]] = {}
    for day, (count, checksum) in _checksums(client, database, first, last).items():
        week = day - timedelta(days=day.weekday())
        rows, total = weeks.get(week, (0, 0))
        weeks[week] = (rows + count, (total + checksum) % 2**64)
    return weeks


def weeks_to_settle(client: Client, database: str, *, today: date,
                    horizon_days: int = DEFAULT_HORIZON_DAYS, again: bool = False
                    ) -> dict[date, tuple[int, int]]:
    """The complete weeks (Monday to Sunday, before ``today``) within the horizon whose
    rows differ from their deciles' record, with their current (rows, checksum)."""
    start = today - timedelta(days=horizon_days)
    first = start + timedelta(days=(7 - start.weekday()) % 7)  # the first whole week
    last = today - timedelta(days=today.weekday() + 1)  # the Sunday before this week
    if last < first:
        return {}
    current = _week_sums(client, database, first, last)
    recorded = {} if again else _records(client, database, "settled_weeks", "week", first)
    return {week: sums for week, sums in sorted(current.items()) if recorded.get(week) != sums}


def settle_week(client: Client, database: str, week: date, sums: tuple[int, int],
                report: SettleReport, *, generation: int | None = None,
                cluster: str = "") -> None:
    """Compute and record one complete week's deciles (migration 0016), as settle_day
    does a day's units: recorded only if the week's rows did not change meanwhile."""
    generation = generation or time.time_ns()
    parameters = {"week": week, "generation": generation,
                  "start": datetime(week.year, week.month, week.day, tzinfo=UTC)}
    try:
        client.command(
            f"INSERT INTO {database}.settled_deciles (week, generation, team, workflow, "
            f"decile, units, accepted_units, min_cost, max_cost, mean_cost) "
            f"SELECT week, {{generation:UInt64}}, team, workflow, decile, units, "
            f"accepted_units, min_cost, max_cost, mean_cost "
            f"FROM {database}.v_deciles_of_live_weeks_since("
            f"from_time = {{start:DateTime64(3, 'UTC')}}) WHERE week = {{week:Date}}",
            parameters=parameters)
        if _week_sums(client, database, week, week + timedelta(days=6)).get(week) != sums:
            report.moved.append(week)
            return
        client.command(
            f"INSERT INTO {database}.settled_weeks (week, generation, rows, checksum, "
            f"settled_at) SELECT {{week:Date}}, {{generation:UInt64}}, {{rows:UInt64}}, "
            f"{{checksum:UInt64}}, now64(3)",
            parameters=parameters | {"rows": sums[0], "checksum": sums[1]})
        report.weeks.append(week)
        _delete_other_generations(client, database, "settled_deciles", "week", parameters,
                                  cluster)
    except Exception as exc:
        report.failed[week] = f"{type(exc).__name__}: {str(exc)[:200]}"


def settle_day(client: Client, database: str, day: date, sums: tuple[int, int],
               report: SettleReport, *, generation: int | None = None,
               cluster: str = "") -> None:
    """Settle one day whose raw rows had ``sums`` (rows, checksum) when chosen; the
    outcome goes into ``report`` (a failure as its reason: never raised, since the
    panels stay exact without the copy)."""
    columns = ", ".join(UNIT_COLUMNS)
    parameters = {"day": day, "generation": generation or time.time_ns()}
    try:
        client.command(
            f"INSERT INTO {database}.settled_units (day, generation, {columns}) "
            f"SELECT day, {{generation:UInt64}}, {columns} "
            f"FROM {database}.work_units_by_day FINAL WHERE day = {{day:Date}}",
            parameters=parameters)
        if _checksums(client, database, day, day).get(day) != sums:
            report.moved.append(day)  # the copy is never recorded, so never read
            return
        copied = int(client.command(
            f"SELECT count() FROM {database}.settled_units "
            f"WHERE day = {{day:Date}} AND generation = {{generation:UInt64}}",
            parameters=parameters))
        client.command(
            f"INSERT INTO {database}.settled_days "
            f"(day, generation, rows, checksum, settled_units, settled_at) "
            f"SELECT {{day:Date}}, {{generation:UInt64}}, {{rows:UInt64}}, "
            f"{{checksum:UInt64}}, {{copied:UInt64}}, now64(3)",
            parameters=parameters | {"rows": sums[0], "checksum": sums[1], "copied": copied})
        report.settled.append(day)
        report.units += copied
        _delete_other_generations(client, database, "settled_units", "day", parameters,
                                  cluster)
    except Exception as exc:
        report.failed[day] = f"{type(exc).__name__}: {str(exc)[:200]}"


def _delete_other_generations(client: Client, database: str, table: str, period: str,
                              parameters: dict[str, object], cluster: str) -> None:
    # Space only: rows of older generations (and of runs that crashed or saw the period
    # change) are never read once this record is the period's latest. Asynchronous: the
    # delete is a mutation, which waits for the table's merges (a synchronous one would
    # hang while merges are stopped). On a cluster the shards' local tables are cleaned
    # (a Distributed table takes no DELETE).
    where = f"{period} = {{{period}:Date}} AND generation != {{generation:UInt64}}"
    if cluster:
        client.command(f"ALTER TABLE {database}.{table}_local ON CLUSTER '{cluster}' "
                       f"DELETE WHERE {where} SETTINGS mutations_sync = 0",
                       parameters=parameters)
    else:
        client.command(f"DELETE FROM {database}.{table} WHERE {where} "
                       f"SETTINGS lightweight_deletes_sync = 0", parameters=parameters)
