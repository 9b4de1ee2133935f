"""``tokenyield export focus``: model costs as a FOCUS 1.2 file for FinOps tools.

The rules and the column mapping are in streams/report/focus_export.py. ClickHouse is read the
way ``tokenyield sql`` reads it: through a running worker's /sql/ endpoint when that
worker owns the embedded chdb directory (one process per chdb path), else directly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from schemas.errors import FocusExportError
from streams.app.worker import running_worker
from streams.cli.common import load_settings
from streams.clickhouse.client import connect
from streams.ops.worker_client import worker_sql
from streams.report.focus_export import (
    FOCUS_VERSION,
    FORMATS,
    BillingAccounts,
    ExportSummary,
    Fetch,
    Granularity,
    Progress,
    clickhouse_fetch,
    decimal_text,
    export_focus,
    inline_parameters,
    parse_window,
)
from streams.settings import Settings

# A day of a busy deployment through the worker's JSON endpoint can take a while.
WORKER_TIMEOUT_SECONDS = 600.0


def register(sub: Any) -> None:
    export = sub.add_parser("export", help="export costs for other tools (FOCUS)")
    kinds = export.add_subparsers(dest="export_kind", required=True, metavar="FORMAT")
    focus = kinds.add_parser(
        "focus", help=f"a FOCUS {FOCUS_VERSION} cost and usage file (CSV or Parquet)",
        description=(
            f"Write model and other costs (cost items) in [--from, --to) as a FOCUS "
            f"{FOCUS_VERSION} cost and usage file for FinOps tools (Vantage's custom "
            "providers, any FOCUS reader): one row per hour, provider, model (or cost "
            "kind) and work unit, with team, workflow, work unit and the attributes in "
            "Tags. Unpriced calls cannot be FOCUS rows (cost "
            "columns are never null); they are left out and counted on stderr."))
    focus.add_argument("--from", dest="start", required=True, metavar="TIME",
                       help="inclusive start: ISO date or time, UTC unless an offset is "
                            "given (2026-11-01, 2026-11-01T06:00:00Z)")
    focus.add_argument("--to", dest="end", required=True, metavar="TIME",
                       help="exclusive end, same forms")
    focus.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                       help="file to write (.csv or .parquet)")
    focus.add_argument("--format", choices=FORMATS, default=None,
                       help="default: from FILE's extension")
    focus.add_argument("--granularity", choices=[g.value for g in Granularity],
                       default=Granularity.UNIT.value,
                       help="unit (default): a row per work unit and hour; workflow: "
                            "without the work unit, far fewer rows")
    focus.add_argument("--billing-account-id", action="append", default=[],
                       metavar="[PROVIDER=]ID",
                       help="BillingAccountId to write, for one provider or (without "
                            "PROVIDER=) all; repeatable. Default: tokenyield/<provider>")
    focus.set_defaults(handler=focus_command)


def billing_accounts(values: list[str]) -> BillingAccounts:
    ids: dict[str, str] = {}
    for value in values:
        provider, sep, account = value.partition("=")
        provider, account = (provider, account) if sep else ("*", provider)
        if not provider.strip() or not account.strip():
            raise FocusExportError(
                f"--billing-account-id {value!r}: use ID or PROVIDER=ID",
                option="--billing-account-id", value=value)
        ids[provider.strip()] = account.strip()
    return BillingAccounts(ids)


def worker_fetch(web_port: int) -> Fetch:
    """A query through the worker's /sql/: it takes SQL text only and answers JSON, with
    decimals as exact strings."""
    def fetch(sql: str, parameters: Mapping[str, datetime]) -> Iterator[Mapping[str, Any]]:
        result = worker_sql(web_port, inline_parameters(sql, parameters),
                            timeout=WORKER_TIMEOUT_SECONDS)
        columns = result["columns"]
        for row in result["rows"]:
            yield dict(zip(columns, row, strict=True))
    return fetch


def open_fetch(settings: Settings) -> Fetch:
    target = settings.clickhouse_target()
    worker = running_worker(settings.data_dir)
    if worker is not None and target.startswith("chdb://"):
        return worker_fetch(int(worker["web_port"]))
    password = settings.clickhouse_password.get_secret_value() \
        if settings.clickhouse_password else None
    client = connect(target, username=settings.clickhouse_username, password=password)
    # A server gets readonly=1 like `tokenyield sql`; embedded chdb is this process's own.
    return clickhouse_fetch(client, readonly=not target.startswith("chdb://"))


def show_progress(step: Progress) -> None:
    print(f"focus export: {step.window.start:%Y-%m-%d %H:%M} .. "
          f"{step.window.end:%Y-%m-%d %H:%M} UTC done ({step.done}/{step.total}), "
          f"{step.rows} rows so far", file=sys.stderr, flush=True)


def focus_command(args: argparse.Namespace) -> int:
    window = parse_window(args.start, args.end)
    accounts = billing_accounts(args.billing_account_id)
    settings = load_settings()
    slices = len(window.slices())
    summary = export_focus(open_fetch(settings), args.output, window,
                           database=settings.clickhouse_database, fmt=args.format,
                           granularity=Granularity(args.granularity), accounts=accounts,
                           progress=show_progress if slices > 1 else None)
    print(summary_line(summary))
    for warning in warnings(summary):
        print(f"tokenyield: {warning}", file=sys.stderr)
    return 0


def summary_line(summary: ExportSummary) -> str:
    money = ", ".join(f"{decimal_text(total)} {currency}"
                      for currency, total in sorted(summary.cost.items())) or "no cost"
    items = summary.by_source.get("cost_items", 0)
    counted = f"{summary.by_source.get('model_calls', 0)} priced calls" + (
        f", {items} cost items" if items else "")
    return (f"wrote {summary.rows} FOCUS {FOCUS_VERSION} rows ({counted}, {money}) for "
            f"{summary.window.start:%Y-%m-%dT%H:%M:%SZ} .. "
            f"{summary.window.end:%Y-%m-%dT%H:%M:%SZ} to {summary.path} ({summary.format})")


def _whole(quantity: Decimal) -> str:
    text = decimal_text(quantity)
    return text.removesuffix(".0")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def warnings(summary: ExportSummary) -> list[str]:
    found = []
    if summary.unpriced:
        detail = "; ".join(
            f"{sku}: {_count(usage.count, 'call')}, {_whole(usage.quantity)} "
            f"{(usage.unit or '').lower()}"
            for (_, sku), usage in sorted(summary.unpriced.items()))
        found.append(
            f"left out {_count(summary.unpriced_count, 'unpriced call')} ({detail}). FOCUS "
            "cost columns cannot be null and a 0 would be a placeholder; add prices for "
            "these models (see `tokenyield prices`) and export again")
    if summary.dropped_tag_keys:
        found.append(
            f"left {_count(summary.dropped_tag_keys, 'attribute key')} out of Tags: keys "
            "beginning with 'tokenyield/' are reserved for tokenyield's own tags")
    return found
