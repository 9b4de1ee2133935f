"""Every Grafana panel's SQL over millions of calls in chdb (``tokenyield bench --dashboards``).

The data is made the way production makes it, then multiplied: a seed of generated
traffic over 30 days (``streams.traffic.scenarios``) runs through the pure core (validation,
pricing, join, windows) into ClickHouse through the sink; then copies of the seed's calls,
outcomes and attributions under new ids are inserted with ``INSERT ... SELECT`` until the
calls table holds the asked number of rows (the hourly rollup and ``attributions_latest``
fill from their materialized views, as in production). Window and alert rows come from
the seed only: their count depends on time and dimensions, not on call volume.

The worker settles quiet days every few minutes (migration 0015,
``streams.clickhouse.settled_days``); the bench times the unit panels before any day is
settled (the state right after changes on every day), then settles the days before
today, as the worker's next run would, and times every panel.

Each panel's queries (every target, not only the first) are expanded as Grafana would
(``loadtest.grafana_sql``), with every variable at All, and timed ``runs`` times over the
dashboard's default range (2 days) and over the whole 30 days; the figure is the median.
The panels that read pre-aggregates are also timed in their exact form
(``loadtest.dashboard_exact``): what they cost before, in the same run. (Pre-aggregates
kept by the rollup, the window rows, come from the seed like every window: their count
depends on time and dimensions, not on call volume. Over the copies their figures are
the seed's, so the bench times them; the tests check that they are exact.)
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from loadtest.dashboard_exact import EXACT_PANELS
from loadtest.engine_into_clickhouse import EngineIntoClickHouse
from loadtest.grafana_sql import (
    DATABASE,
    Selection,
    TimeRange,
    load_dashboard,
    panels,
    render,
    variable_queries,
)
from schemas.partitioner import partition_for
from streams.clickhouse.client import connect, migrate
from streams.clickhouse.settled_days import settle_days
from streams.core.engine import EventKind
from streams.core.engine_config import EngineConfig
from streams.traffic.scenarios import Scenario, encoded_events

PARTITIONS = 4
DAYS = 30
SEED_CALLS = 400_000
CHECKPOINT_EVENTS = 50_000
COPIED_TABLES = ("model_calls", "outcomes", "attributions", "work_units_by_day")
ID_COLUMNS = {"model_calls": ("event_id", "work_unit_id"),
              "outcomes": ("event_id", "work_unit_id"),
              "attributions": ("attribution_id", "work_unit_id"),
              "work_units_by_day": ("work_unit_id",)}
# The pending units' rows, which the engine writes; the decided units' rows come from the
# copied attributions through their materialized view.
COPY_FILTERS = {"work_units_by_day": " AND state = 'pending'"}
# The panels that read work_units_by_day (through v_unit_rows_since, migration 0015):
# top spenders, cycle time, the conversion chain, the deciles, the cost spread.
UNIT_PANEL_IDS = frozenset({15, 34, 37, 38, 39})

Say = Callable[[str], None]


async def _load_seed(client: Client, scenario: Scenario, now: datetime, say: Say) -> int:
    pipeline = EngineIntoClickHouse(client, DATABASE, EngineConfig(partitions=PARTITIONS), now)
    buffers: dict[tuple[EventKind, int], list[bytes]] = {}

    def apply(kind: EventKind, partition: int) -> None:
        values = buffers.pop((kind, partition), [])
        if values:
            pipeline.apply(kind, partition, b"[" + b",".join(values) + b"]")

    try:
        for count, event in enumerate(encoded_events(scenario), 1):
            key = (event.kind, partition_for(event.work_unit_id, PARTITIONS))
            buffer = buffers.setdefault(key, [])
            buffer.append(event.value)
            if len(buffer) >= 500:
                apply(*key)
            if count % CHECKPOINT_EVENTS == 0:
                await pipeline.checkpoint()
                say(f"dashboards: seed {count:,} events through the engine")
        for key in list(buffers):
            apply(*key)
        pipeline.run_clock_to_now()  # close every window and deadline of the seed
        await pipeline.checkpoint()
    finally:
        pipeline.close()
    return pipeline.calls


def _multiply(client: Client, seed_calls: int, target_calls: int, say: Say) -> int:
    copies = max(0, math.ceil(target_calls / max(seed_calls, 1)) - 1)
    for copy in range(1, copies + 1):
        for table in COPIED_TABLES:
            replaced = ", ".join(f"concat({c}, '~{copy}') AS {c}" for c in ID_COLUMNS[table])
            # The filter sits in a subquery: ClickHouse resolves SELECT aliases in WHERE,
            # so beside ``... AS work_unit_id`` it would test the copy's id, never the seed's.
            client.command(
                f"INSERT INTO {DATABASE}.{table} SELECT * REPLACE ({replaced}) FROM "
                f"(SELECT * FROM {DATABASE}.{table} WHERE position(work_unit_id, '~') = 0"
                f"{COPY_FILTERS.get(table, '')})")
        loaded = int(client.command(f"SELECT count() FROM {DATABASE}.model_calls"))
        say(f"dashboards: {loaded:,} of ~{target_calls:,} calls loaded")
        if loaded < (copy + 1) * seed_calls:
            # A copy that adds nothing must not pass for 10 million calls: measure what
            # is there, and say so.
            say(f"dashboards: the copies were not stored (INSERT ... SELECT added no rows); "
                f"timing over {loaded:,} calls instead")
            break
    return int(client.command(f"SELECT count() FROM {DATABASE}.model_calls"))


def _options(client: Client, time_range: TimeRange) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    selection = Selection(None, None, None)
    for name, sql in variable_queries(load_dashboard()).items():
        rows = client.query(render(sql, selection, options, time_range)).result_rows
        options[name] = [row[0] for row in rows]
    return options


def _median_ms(client: Client, sql: str, runs: int) -> float:
    client.query(sql)  # warm: the first run also reads parts into the page cache
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        client.query(sql)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


def _time_panels(client: Client, time_range: TimeRange, runs: int,
                 only: frozenset[int] | None = None
                 ) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms of every panel's queries (or of the panels ``only`` names), and of the
    exact forms of the panels that read pre-aggregates (what they cost before, measured
    in the same run)."""
    options = _options(client, time_range)
    selection = Selection(None, None, None)
    medians: dict[str, float] = {}
    exact: dict[str, float] = {}
    for panel in panels(load_dashboard()):
        if only is not None and panel["id"] not in only:
            continue
        title = f"{panel['title']} (panel {panel['id']})"
        for index, target in enumerate(panel["targets"]):
            # Every query of a panel is timed: its first as the panel, the others by refId.
            name = title if index == 0 else \
                f"{panel['title']} (panel {panel['id']}, {target.get('refId', index)})"
            sql = render(target["rawSql"], selection, options, time_range)
            medians[name] = _median_ms(client, sql, runs)
            if (panel["id"], index) in EXACT_PANELS:
                sql = render(EXACT_PANELS[(panel["id"], index)], selection, options,
                             time_range)
                exact[name] = _median_ms(client, sql, runs)
    return medians, exact


def run_dashboards(calls: int, root: Path, say: Say, runs: int = 5,
                   seed_calls: int = SEED_CALLS) -> dict[str, Any]:
    """Load ``calls`` calls, then time every panel as loaded and after merges."""
    root.mkdir(parents=True, exist_ok=True)
    client = connect(f"chdb://{root / 'chdb'}")
    try:
        migrate(client, DATABASE)
        now = datetime.now(UTC).replace(microsecond=0)
        seed_calls = min(calls, seed_calls)
        scenario = Scenario(seed=21, run_id="dash", work_units=max(1, int(seed_calls / 3.4)),
                            span_seconds=DAYS * 86400, end=now - timedelta(hours=1))
        started = time.monotonic()
        loaded_seed = asyncio.run(_load_seed(client, scenario, now, say))
        total = _multiply(client, loaded_seed, calls, say)
        load_seconds = time.monotonic() - started
        distinct = int(client.command(f"SELECT uniqExact(event_id) FROM {DATABASE}.model_calls"))
        parts = _parts(client)
        say(f"dashboards: {total:,} calls in chdb ({load_seconds:.0f} s, {parts} parts); "
            f"timing {len(panels(load_dashboard()))} panels x {runs} runs")
        # Before any day is settled (right after changes on every day): the unit panels.
        live = _time_ranges(client, now, runs, say, "as loaded, no day settled",
                            only=UNIT_PANEL_IDS)
        settled = settle_days(client, DATABASE, today=now.date())
        say(f"dashboards: {settled.summary()}")
        loaded = _time_ranges(client, now, runs, say, "as loaded")
        # Fresh inserts leave many parts, which FINAL merges at read time; ClickHouse's
        # background merges shrink them over time. Time both ends of that. (A merge
        # changes the days' raw rows: the worker's next settling run settles them again.)
        for table in (*COPIED_TABLES, "attributions_latest"):
            client.command(f"OPTIMIZE TABLE {DATABASE}.{table} FINAL")
        merged_parts = _parts(client)
        resettled = settle_days(client, DATABASE, today=now.date())
        merged = _time_ranges(client, now, runs, say, "merged")
    finally:
        client.close()
    figures: dict[str, Any] = {"dashboard_calls": total, "dashboard_distinct_call_ids": distinct,
                               "dashboard_model_calls_parts": parts,
                               "dashboard_model_calls_parts_merged": merged_parts,
                               "dashboard_panels": len(panels(load_dashboard())),
                               "dashboard_queries": len(loaded["2d"]),
                               "dashboard_settle_seconds": round(settled.seconds, 1),
                               "dashboard_settled_days": len(settled.settled),
                               "dashboard_settled_units": settled.units,
                               "dashboard_resettle_seconds_merged": round(resettled.seconds, 1)}
    for name in ("2d", "30d"):
        figures[f"dashboard_median_ms_by_unit_panel_{name}_unsettled"] = live[name]
        figures[f"dashboard_median_ms_worst_unit_panel_{name}_unsettled"] = max(
            live[name].values())
    for suffix, by_range in (("", loaded), ("_merged", merged)):
        worst_2d, worst_30d = max(by_range["2d"].values()), max(by_range["30d"].values())
        figures |= {
            f"dashboard_median_ms_by_panel_2d{suffix}": by_range["2d"],
            f"dashboard_median_ms_by_panel_30d{suffix}": by_range["30d"],
            f"dashboard_median_ms_by_exact_panel_2d{suffix}": by_range["2d_exact"],
            f"dashboard_median_ms_by_exact_panel_30d{suffix}": by_range["30d_exact"],
            f"dashboard_median_ms_worst_panel{suffix}": max(worst_2d, worst_30d),
            f"dashboard_median_ms_worst_panel_2d{suffix}": worst_2d,
            f"dashboard_median_ms_worst_panel_30d{suffix}": worst_30d,
            f"dashboard_median_ms_median_panel_30d{suffix}": statistics.median(
                by_range["30d"].values())}
    return figures


def _parts(client: Client) -> int:
    return int(client.command(f"SELECT count() FROM system.parts WHERE active AND "
                              f"database = '{DATABASE}' AND table = 'model_calls'"))


def _time_ranges(client: Client, now: datetime, runs: int, say: Say,
                 label: str, only: frozenset[int] | None = None
                 ) -> dict[str, dict[str, float]]:
    by_range = {}
    for name, span, step in (("2d", timedelta(days=2), 60),
                             ("30d", timedelta(days=DAYS), 3600)):
        by_range[name], by_range[f"{name}_exact"] = _time_panels(
            client, TimeRange(now - span, now, step), runs, only)
        worst = max(by_range[name].items(), key=lambda item: item[1])
        say(f"dashboards ({name}, {label}): median of the slowest panel {worst[1]} ms "
            f"({worst[0]})")
    return by_range


def main(argv: list[str] | None = None) -> int:
    """The dashboard stage alone: ``python -m loadtest.dashboard_bench --calls N``."""
    import argparse
    import json
    import shutil
    import sys
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m loadtest.dashboard_bench",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--seed-calls", type=int, default=SEED_CALLS,
                        help="calls made through the engine before copying")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per panel")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="tokenyield-dashboards-"))
    try:
        figures = run_dashboards(args.calls, root, lambda text: print(text, file=sys.stderr,
                                                                      flush=True),
                                 args.runs, args.seed_calls)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
