"""Data commands: publish NDJSON, migrate and query ClickHouse, the HTML report, export
schemas, config."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from schemas.errors import ConfigurationError, StorageError
from schemas.events import shared_bucket_id
from schemas.json_schema import SCHEMA_DIR, export
from schemas.kafka_publisher import Publisher
from streams.app.worker import running_worker
from streams.cli.common import bootstrap_for, load_settings, parse_moment
from streams.clickhouse.client import connect, migrate, use_database
from streams.clickhouse.settled_days import settle_days
from streams.ops.web import to_jsonable
from streams.ops.worker_client import worker_sql
from streams.settings import Settings


def register(sub: Any) -> None:
    publish = sub.add_parser(
        "publish", help="publish NDJSON events (a file or stdin) onto the right topic")
    publish.add_argument("file", nargs="?", default="-", help="NDJSON file, or - for stdin")
    publish.add_argument("--kind", choices=["auto", "model_call", "outcome", "cost_item"],
                         default="auto",
                         help="auto: a line's 'kind' field when it names one of these; else "
                              "a model call if it has 'model', a cost item if it has "
                              "'amount' or 'unit_price', an outcome otherwise")
    publish.set_defaults(handler=publish_command)

    db = sub.add_parser("db", help="ClickHouse schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    migrate_parser = db_commands.add_parser("migrate", help="apply pending migrations")
    migrate_parser.set_defaults(handler=migrate_command)
    settle = db_commands.add_parser(
        "settle", help="settle the unit panels' quiet days now (what the worker does every "
                       "TOKENYIELD_DASHBOARD_SETTLE_INTERVAL_SECONDS)",
        description="Copies what work_units_by_day FINAL keeps of each day before today "
                    "whose rows changed since it was last settled, so the unit panels read "
                    "it without FINAL until it changes again (migration 0015), and computes "
                    "the deciles of each complete week that changed (0016). The figures "
                    "are the same either way.")
    settle.add_argument("--days", type=int, default=None,
                        help="how many days back (default "
                             "TOKENYIELD_DASHBOARD_SETTLE_HORIZON_DAYS)")
    settle.add_argument("--again", action="store_true",
                        help="settle every day and week again, changed or not (after rows "
                             "of work_units_by_day were deleted by hand)")
    settle.set_defaults(handler=settle_command)

    sql = sub.add_parser("sql", help="run a read-only query against the configured ClickHouse")
    sql.add_argument("query", help='for example "SELECT count() FROM attributions_latest": '
                                   "it runs in the configured database "
                                   "(TOKENYIELD_CLICKHOUSE_DATABASE); qualified names reach others")
    sql.add_argument("--format", choices=["table", "json", "csv"], default="table")
    sql.set_defaults(handler=sql_command)

    schemas = sub.add_parser("schemas", help="JSON Schema files of the event contract")
    schema_commands = schemas.add_subparsers(dest="schemas_command", required=True,
                                             metavar="ACTION")
    exp = schema_commands.add_parser("export", help=f"write them (default {SCHEMA_DIR})")
    exp.add_argument("-o", "--output", type=Path, default=SCHEMA_DIR)
    exp.set_defaults(handler=export_command)

    report = sub.add_parser(
        "report", help="write a static HTML report with charts (opens offline)",
        description="Cost per accepted outcome over time, yield by workflow, attribution "
                    "coverage and alerts, from the configured ClickHouse (through a running "
                    "worker when it owns the chdb directory), as one self-contained page.")
    report.add_argument("-o", "--output", type=Path, default=Path("tokenyield-report.html"))
    report.add_argument("--since", default=None,
                        help="only event time from then: ISO date/time, or 24h / 7d ago")
    report.set_defaults(handler=report_command)

    config = sub.add_parser("config", help="print the effective settings (secrets masked)")
    config.set_defaults(handler=config_command)


def _kind(line: dict[str, Any], forced: str) -> str:
    if forced != "auto":
        return forced
    kind = line.get("kind")
    if kind in ("model_call", "outcome", "cost_item"):
        return str(kind)
    if "model" in line or any(str(k).startswith("gen_ai.") for k in line):
        return "model_call"
    if "amount" in line or "unit_price" in line:
        return "cost_item"
    return "outcome"


def _key(line: dict[str, Any], kind: str) -> str | None:
    """The key the publisher would give the line: its work unit; for a shared cost item
    (no work unit) the bucket of its team, workflow and day, when the line says them."""
    unit = line.get("work_unit_id")
    if unit or kind != "cost_item":
        return str(unit) if unit else None
    try:
        moment = datetime.fromisoformat(str(line["occurred_at"]).replace("Z", "+00:00"))
        return shared_bucket_id(str(line["team"]), str(line["workflow"]), moment)
    except (KeyError, ValueError):
        return None  # the worker rejects it with the reason


def publish_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    bootstrap = bootstrap_for(settings)
    stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    counts = {"model_call": 0, "outcome": 0, "cost_item": 0}

    async def send() -> None:
        async with Publisher(settings.kafka(bootstrap, "tokenyield-publish"),
                             topic_prefix=settings.topic_prefix,
                             expected_partitions=settings.partitions) as publisher:
            for number, raw in enumerate(stream, start=1):
                if not raw.strip():
                    continue
                try:
                    line = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    # Still published: the worker dead-letters it with the reason, so
                    # nothing disappears between here and there.
                    print(f"line {number}: not JSON; sent to calls for dead-lettering",
                          file=sys.stderr)
                    line = {}
                kind = _kind(line, args.kind) if isinstance(line, dict) else "model_call"
                topic = {"model_call": publisher.calls_topic, "cost_item": publisher.costs_topic,
                         "outcome": publisher.outcomes_topic}[kind]
                key = _key(line, kind) if isinstance(line, dict) else None
                await publisher.publish_raw(topic, key or f"line-{number}", raw.strip())
                counts[kind] += 1

    try:
        asyncio.run(send())
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    print(f"published {counts['model_call']} model calls, {counts['outcome']} outcomes and "
          f"{counts['cost_item']} cost items")
    return 0


def migrate_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    if running_worker(settings.data_dir) and settings.clickhouse_target().startswith("chdb://"):
        print("a worker is running on this data dir and migrated it at start-up")
        return 0
    client = connect(settings.clickhouse_target(), username=settings.clickhouse_username,
                     password=_password(settings))
    applied = migrate(client, settings.clickhouse_database, cluster=settings.clickhouse_cluster)
    cluster = f", cluster {settings.clickhouse_cluster}" if settings.clickhouse_cluster else ""
    print(f"applied {', '.join(applied)}" if applied else "schema is up to date",
          f"({settings.clickhouse_display()}, database {settings.clickhouse_database}"
          f"{cluster})")
    return 0


def settle_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    if running_worker(settings.data_dir) and settings.clickhouse_target().startswith("chdb://"):
        interval = settings.dashboard_settle_interval_seconds
        print("a worker owns this data dir's chdb: " + (
            f"it settles the days every {interval:g} s" if interval > 0 else
            "it does not settle days (TOKENYIELD_DASHBOARD_SETTLE_INTERVAL_SECONDS=0); "
            "stop it to settle them from here"))
        return 0
    client = connect(settings.clickhouse_target(), username=settings.clickhouse_username,
                     password=_password(settings))
    report = settle_days(client, settings.clickhouse_database,
                         horizon_days=args.days or settings.dashboard_settle_horizon_days,
                         cluster=settings.clickhouse_cluster, again=args.again,
                         progress=lambda line: print(line, file=sys.stderr))
    print(report.summary())
    return 1 if report.failed else 0


def _password(settings: Settings) -> str | None:
    return settings.clickhouse_password.get_secret_value() if settings.clickhouse_password \
        else None


def query(settings: Settings, sql: str) -> tuple[list[str], list[list[Any]]]:
    """Run a read-only query, through the running worker when it owns the chdb path."""
    worker = running_worker(settings.data_dir)
    if worker is not None and settings.clickhouse_target().startswith("chdb://"):
        result = worker_sql(int(worker["web_port"]), sql)
        return result["columns"], result["rows"]
    try:
        client = connect(settings.clickhouse_target(), username=settings.clickhouse_username,
                         password=_password(settings))
        use_database(client, settings.clickhouse_database)
        result = client.query(sql, settings={"readonly": 1} if not settings.clickhouse_target()
                              .startswith("chdb://") else None)
    except StorageError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"query failed: {exc}{_hint(exc, settings)}",
                                 database=settings.clickhouse_database) from exc
    rows = [[to_jsonable(v) for v in row] for row in result.result_rows]
    return list(result.column_names), rows


def _hint(exc: Exception, settings: Settings) -> str:
    if "UNKNOWN_DATABASE" in str(exc):
        return (f" (database {settings.clickhouse_database} is created by `tokenyield db "
                "migrate` or a worker's start)")
    return ""


def sql_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    columns, rows = query(settings, args.query)
    if args.format == "json":
        print(orjson.dumps([dict(zip(columns, r, strict=True)) for r in rows],
                           option=orjson.OPT_INDENT_2).decode())
    elif args.format == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(rows)
        print(out.getvalue(), end="")
    else:
        print(render_table(columns, rows))
    return 0


def render_table(columns: list[str], rows: list[list[Any]]) -> str:
    cells = [[_text(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, rule, *body, f"({len(rows)} row{'s' if len(rows) != 1 else ''})"])


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)


def export_command(args: argparse.Namespace) -> int:
    for path in export(args.output):
        print(path)
    return 0


def config_command(args: argparse.Namespace) -> int:
    print(orjson.dumps(load_settings().public(), option=orjson.OPT_INDENT_2,
                       default=str).decode())
    return 0


def parse_since(text: str | None) -> datetime | None:
    if not text:
        return None
    match = re.fullmatch(r"(\d+)([hd])", text.strip())
    if match:
        hours = int(match.group(1)) * (24 if match.group(2) == "d" else 1)
        return datetime.now(UTC) - timedelta(hours=hours)
    return parse_moment(text, "--since", ", or 24h, 7d")


def report_command(args: argparse.Namespace) -> int:
    from streams.report.html_page import gather, render

    settings = load_settings()
    data = gather(lambda sql: query(settings, sql)[1], settings.clickhouse_database,
                  parse_since(args.since))
    page = render(data, database=settings.clickhouse_database,
                  source=settings.clickhouse_display(), currency=settings.currency)
    args.output.write_text(page, encoding="utf-8")
    headline = data["headline"]
    print(f"report: {headline.work_units:,} work units, {len(data['alerts'])} recent alerts "
          f"-> {args.output.resolve()}")
    return 0
