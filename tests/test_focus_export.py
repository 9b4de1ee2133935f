"""``tokenyield export focus``: the file is FOCUS 1.2, column by column, and its money is
exactly ClickHouse's ``model_calls FINAL``.

The rules checked here are restated from the FOCUS 1.2 specification (FOCUS_Spec tag
v1.2: specification/columns/*.md and specification/attributes/*.md), not imported from
the module under test, so a change of the export that breaks the spec fails here.

Calls are loaded as tests/clickhouse_fixtures.py loads them (the engine's partition
runtimes into ``ClickHouseSink``), into a database of their own in the process's one
chdb engine. Merges of that ``model_calls`` are stopped and every call is then written
again in a batch of another shape (another deduplication token), as a replay after a
crash would: until a merge the duplicates are real rows, and only FINAL hides them.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from clickhouse_connect.driver.client import Client

from loadtest.engine_into_clickhouse import EngineIntoClickHouse
from schemas.errors import FocusExportError, TokenyieldError
from schemas.partitioner import partition_for
from streams.cli import build_parser, main
from streams.clickhouse.client import migrate
from streams.core.engine_config import EngineConfig
from streams.core.records import Outputs
from streams.report.focus_export import (
    MODEL_CALLS,
    BillingAccounts,
    Granularity,
    Window,
    clickhouse_fetch,
    export_focus,
    focus_record,
    inline_parameters,
    model_call_line,
    parse_window,
)
from tests.clickhouse_fixtures import LoadedClickHouse, loaded_clickhouse
from tests.conftest import ROOT, WorkerHandle

__all__ = ["loaded_clickhouse"]  # the fixture, imported for pytest

pytestmark = pytest.mark.clickhouse

DATABASE = "focus_export"
PARTITIONS = 4
FORMATS = ["csv", "parquet"]

# ---- FOCUS 1.2, restated from the specification ------------------------------------

MANDATORY = [
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
    "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass",
    "ChargeDescription", "ChargePeriodEnd", "ChargePeriodStart", "ContractedCost",
    "EffectiveCost", "InvoiceIssuerName", "ListCost", "PricingQuantity", "PricingUnit",
    "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
]
# Conditional or recommended, and applicable: usage is measured in tokens, models are
# SKUs, tags are supported.
ALSO_PRESENT = ["ChargeFrequency", "ServiceSubcategory", "ConsumedQuantity", "ConsumedUnit",
                "SkuId", "SkuPriceId", "SkuMeter", "SkuPriceDetails", "Tags"]
NOT_NULL = ["BilledCost", "BillingAccountId", "BillingCurrency", "BillingPeriodEnd",
            "BillingPeriodStart", "ChargeCategory", "ChargePeriodEnd", "ChargePeriodStart",
            "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost",
            "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
            "ChargeFrequency", "ServiceSubcategory",
            # not null because ChargeCategory is "Usage" and ChargeClass is not "Correction"
            "PricingQuantity", "PricingUnit", "ConsumedQuantity", "ConsumedUnit", "SkuId",
            "SkuPriceId"]
CHARGE_CATEGORIES = {"Usage", "Purchase", "Tax", "Credit", "Adjustment"}
CHARGE_FREQUENCIES = {"One-Time", "Recurring", "Usage-Based"}
SERVICE_CATEGORIES = {
    "AI and Machine Learning", "Analytics", "Business Applications", "Compute", "Databases",
    "Developer Tools", "Multicloud", "Identity", "Integration", "Internet of Things",
    "Management and Governance", "Media", "Migration", "Mobile", "Networking", "Security",
    "Storage", "Web", "Other"}
AI_SUBCATEGORIES = {"AI Platforms", "Bots", "Generative AI", "Machine Learning",
                    "Natural Language Processing", "Other (AI and Machine Learning)"}
MONEY = ["BilledCost", "ContractedCost", "EffectiveCost", "ListCost"]
QUANTITIES = ["PricingQuantity", "ConsumedQuantity"]
DATETIMES = ["BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd", "ChargePeriodStart"]
JSON_COLUMNS = ["Tags", "SkuPriceDetails"]
# NumericFormat: plain integer or decimal, "-" only for negatives, no exponent needed.
NUMERIC_TEXT = re.compile(r"^-?[0-9]+\.[0-9]+$")
# DateTimeFormat: extended ISO 8601 in UTC.
DATETIME_TEXT = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")
# UnitFormat: "<plural-units>", "<quantity> <plural-units>", "<unit>-<plural-time-units>",
# "<plural-units>/<singular-time-unit>", "<plural-units>/<interval> <plural-time-units>".
_TIMES = "Years|Months|Days|Hours|Minutes|Seconds"
UNIT_TEXT = re.compile(rf"^([0-9]+ )?[A-Z][A-Za-z]*(-({_TIMES})|/(Year|Month|Day|Hour|Minute|"
                       rf"Second)|/[0-9]+ ({_TIMES}))?$")
TAG = "tokenyield/"

# ---- the loaded calls ----------------------------------------------------------------

ATTRIBUTES = {"customer_tier": "gold", "ticket": "T-1", "flagged": "",
              "région": "Île-de-France", "tokenyield/team": "spoofed"}
U1_DIMENSIONS = {"owner": "alice", "agent": "planner", "service": "helpdesk",
                 "environment": "prod", "task_type": "triage"}
U1_COST = Decimal("0.123456789012345678") + Decimal("0.000000000000000001")


def call(event_id: str, unit: str, at: datetime, **fields: Any) -> dict[str, Any]:
    event = {"event_id": event_id, "work_unit_id": unit, "occurred_at": at.isoformat(),
             "provider": "openai", "model": "gpt-4o", "input_tokens": 1000,
             "output_tokens": 200, "team": "support", "workflow": "triage"}
    event.update(fields)
    return event


def focus_events(h0: datetime) -> list[dict[str, Any]]:
    """Calls around the range [h0, h0 + 3 h): its edges, a unit with attributes and
    exact reported costs, an unpriced call, a unit over two hours, a unit that differs
    from another only by its id, one call 40 days earlier (another billing period)."""
    def m(minutes: float) -> datetime:
        return h0 + timedelta(minutes=minutes)

    sonnet = {"provider": "anthropic", "model": "claude-sonnet-4-5", "team": "sales",
              "workflow": "outreach"}
    events = [
        call("old-1", "focus-old", h0 - timedelta(days=40), team="eng",
             workflow="code-review"),
        call("edge-before", "focus-edge", h0 - timedelta(seconds=1)),
        call("edge-start", "focus-edge", h0),
        call("u1-c1", "focus-u1", m(10), attributes=ATTRIBUTES, **U1_DIMENSIONS,
             reported_cost="0.123456789012345678", currency="USD",
             cached_input_tokens=300, cache_write_tokens=100),
        call("u1-c2", "focus-u1", m(20), attributes=ATTRIBUTES, **U1_DIMENSIONS,
             reported_cost="0.000000000000000001", currency="USD", output_tokens=350,
             reasoning_tokens=120),
        call("u2-c1", "focus-u2", m(15), provider="acme", model="acme-internal-llm"),
        call("u2-c2", "focus-u2", m(16), model="gpt-4o-mini"),
        call("u3-c1", "focus-u3", m(50), **sonnet),
        call("u3-c2", "focus-u3", m(70), **sonnet),
        # the same hour, model, team and workflow as edge-start, and no other tags
        call("u4-c1", "focus-u4", m(25)),
        call("edge-end", "focus-edge", h0 + timedelta(hours=3)),
    ]
    return sorted(events, key=lambda e: e["occurred_at"])


@dataclass
class FocusDb:
    client: Client
    database: str
    chdb_path: str
    h0: datetime
    window: Window  # [h0, h0 + 3 h)
    replayed: int

    def scalar(self, sql: str, window: Window | None = None) -> Any:
        window = window or self.window
        return self.client.query(
            sql.replace("{db}", self.database),
            parameters={"start": window.start, "end": window.end}).result_rows[0][0]

    def final_cost(self, window: Window | None = None) -> Decimal:
        return self.scalar(RANGE_SUM.replace("{table}", "{db}.model_calls FINAL"), window)

    def raw_cost(self, window: Window | None = None) -> Decimal:
        return self.scalar(RANGE_SUM.replace("{table}", "{db}.model_calls"), window)


RANGE = ("occurred_at >= {start:DateTime64(3, 'UTC')} "
         "AND occurred_at < {end:DateTime64(3, 'UTC')}")
RANGE_SUM = f"SELECT sum(cost) FROM {{table}} WHERE {RANGE}"


async def _load(client: Client, events: list[dict[str, Any]], now: datetime) -> int:
    config = EngineConfig(partitions=PARTITIONS, deadline_seconds=3600, retention_seconds=3600,
                          allowed_lateness_seconds=120)
    pipeline = EngineIntoClickHouse(client, DATABASE, config, now, retry_max_seconds=1)
    try:
        for event in events:
            pipeline.apply("calls", partition_for(event["work_unit_id"], PARTITIONS),
                           orjson.dumps(event))
        calls = [c for batch in await pipeline.checkpoint() for c in batch.calls]
        # The replay: the same calls again under another token, with merges stopped so
        # that the duplicates stay rows (chdb merges within seconds otherwise).
        client.command(f"SYSTEM STOP MERGES {DATABASE}.model_calls")
        again = Outputs(calls=calls)
        again.cover("calls-replay", 0, 1)
        await pipeline.sink.write(again)
        return len(calls)
    finally:
        pipeline.close()


@pytest.fixture(scope="module")
def focus_db(loaded_clickhouse: LoadedClickHouse) -> FocusDb:
    # chdb opens one path per process: a database of this module's own in that engine.
    client = loaded_clickhouse.client
    migrate(client, DATABASE)
    now = datetime.now(UTC).replace(microsecond=0)
    h0 = now.replace(minute=0, second=0) - timedelta(hours=6)
    replayed = asyncio.run(_load(client, focus_events(h0), now))
    path = client.query("SELECT path FROM system.disks WHERE name = 'default'").result_rows
    return FocusDb(client, DATABASE, str(path[0][0]).rstrip("/"), h0,
                   Window(h0, h0 + timedelta(hours=3)), replayed)


def export(db: FocusDb, path: Path, window: Window | None = None, **options: Any) -> Any:
    return export_focus(clickhouse_fetch(db.client, readonly=False), path,
                        window or db.window, database=db.database, **options)


# ---- reading a FOCUS file back, with the format checks of each format ----------------

def read_focus(path: Path, fmt: str) -> tuple[list[str], list[dict[str, Any]]]:
    return read_csv(path) if fmt == "csv" else read_parquet(path)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    records = []
    for raw in rows:
        record: dict[str, Any] = {}
        for name, text in zip(header, raw, strict=True):
            record[name] = None if text == "" else _typed(name, text)
        records.append(record)
    return header, records


def _typed(name: str, text: str) -> Any:
    if name in MONEY or name in QUANTITIES:
        assert NUMERIC_TEXT.match(text), f"{name} {text!r} is not an exact decimal"
        return Decimal(text)
    if name in DATETIMES:
        assert DATETIME_TEXT.match(text), f"{name} {text!r} is not YYYY-MM-DDTHH:mm:ssZ"
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    if name.startswith("x_"):
        return int(text)
    return text


def read_parquet(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    table = pq.read_table(path)
    for column in table.schema:
        kind = column.type
        if column.name in MONEY:
            assert kind == pa.decimal128(38, 18), (column.name, kind)
        elif column.name in QUANTITIES:
            assert pa.types.is_decimal(kind), (column.name, kind)
        elif column.name in DATETIMES:
            assert pa.types.is_timestamp(kind) and kind.tz == "UTC", (column.name, kind)
        elif column.name.startswith("x_"):
            assert pa.types.is_integer(kind), (column.name, kind)
        else:
            assert pa.types.is_string(kind), (column.name, kind)
    assert table.schema.metadata[b"FocusVersion"] == b"1.2"
    records = table.to_pylist()
    for record in records:
        # NullHandling: no empty strings for "no value" (CSV cannot tell them apart).
        assert "" not in record.values(), record
    return table.column_names, records


def tags(record: Mapping[str, Any]) -> dict[str, Any]:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"duplicate tag keys in {pairs}"
        return dict(pairs)

    parsed = json.loads(record["Tags"], object_pairs_hook=unique)
    assert isinstance(parsed, dict)
    return parsed


def check_focus_rules(records: list[dict[str, Any]], window: Window) -> None:
    """Every row against the FOCUS 1.2 column requirements."""
    assert records
    for r in records:
        for name in NOT_NULL:
            assert r[name] is not None, f"{name} is null in {r}"
        for name in MONEY:
            assert isinstance(r[name], Decimal)
        # No discounts or amortization: the four costs are the same charge.
        assert r["BilledCost"] == r["EffectiveCost"] == r["ListCost"] == r["ContractedCost"]
        assert r["BillingCurrency"] == "USD" and re.fullmatch(r"[A-Z]{3}", r["BillingCurrency"])
        assert r["ChargeCategory"] in CHARGE_CATEGORIES and r["ChargeCategory"] == "Usage"
        assert r["ChargeClass"] is None  # null unless a correction of an invoiced period
        assert r["ChargeFrequency"] in CHARGE_FREQUENCIES and r["ChargeFrequency"] == "Usage-Based"
        assert r["ChargeDescription"] and r["ChargeDescription"].strip()
        assert r["ServiceCategory"] in SERVICE_CATEGORIES
        assert r["ServiceCategory"] == "AI and Machine Learning"
        assert r["ServiceSubcategory"] in AI_SUBCATEGORIES  # its parent is AI and ML
        start, end = r["ChargePeriodStart"], r["ChargePeriodEnd"]
        assert start < end <= start + timedelta(hours=1)
        assert window.start <= start and end <= window.end
        assert start == window.start or (start.minute, start.second) == (0, 0)
        assert r["BillingPeriodStart"] <= start and end <= r["BillingPeriodEnd"]
        assert r["BillingPeriodStart"] == start.replace(day=1, hour=0, minute=0, second=0)
        next_month = (r["BillingPeriodStart"] + timedelta(days=32)).replace(day=1)
        assert r["BillingPeriodEnd"] == next_month
        for name in ("ProviderName", "PublisherName", "InvoiceIssuerName", "ServiceName",
                     "BillingAccountId", "SkuId", "SkuPriceId", "SkuMeter"):
            assert r[name].strip(), name
        assert r["PricingUnit"] == "1000000 Tokens" and UNIT_TEXT.match(r["PricingUnit"])
        assert r["ConsumedUnit"] == "Tokens" and UNIT_TEXT.match(r["ConsumedUnit"])
        assert r["ConsumedQuantity"] == r["x_InputTokens"] + r["x_OutputTokens"]
        assert r["PricingQuantity"] * 1_000_000 == r["ConsumedQuantity"]
        assert r["SkuPriceDetails"] is None  # may be null when SkuPriceId is not
        assert r["x_Calls"] >= 1
        for key, value in tags(r).items():
            # KeyValueFormat: values are strings, numbers, true, false or null only.
            assert isinstance(key, str) and (value is None or isinstance(
                value, str | bool | int | float)), (key, value)


# ---- the tests ---------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_every_mandatory_column_is_present_and_custom_columns_come_last(
        focus_db: FocusDb, tmp_path: Path, fmt: str) -> None:
    header, _ = read_focus(*_exported(focus_db, tmp_path, fmt))
    assert set(MANDATORY) <= set(header), sorted(set(MANDATORY) - set(header))
    assert set(ALSO_PRESENT) <= set(header)
    assert len(header) == len(set(header))
    custom = [c for c in header if not c[0].isupper()]
    assert custom and all(c.startswith("x_") for c in custom)
    first_custom = header.index(custom[0])
    assert header[first_custom:] == custom  # ColumnHandling: custom columns after FOCUS ones
    assert all(re.fullmatch(r"[A-Z][A-Za-z]*", c) for c in header[:first_custom])


def _exported(db: FocusDb, tmp_path: Path, fmt: str, **options: Any) -> tuple[Path, str]:
    path = tmp_path / f"focus.{fmt}"
    export(db, path, **options)
    return path, fmt


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_row_follows_the_focus_column_rules(
        focus_db: FocusDb, tmp_path: Path, fmt: str) -> None:
    _, records = read_focus(*_exported(focus_db, tmp_path, fmt))
    check_focus_rules(records, focus_db.window)
    providers = {(r["ProviderName"], r["SkuId"]) for r in records}
    assert providers == {("openai", "openai/gpt-4o"), ("openai", "openai/gpt-4o-mini"),
                         ("anthropic", "anthropic/claude-sonnet-4-5")}


@pytest.mark.parametrize("fmt", FORMATS)
def test_billed_cost_is_the_exact_final_sum_despite_the_replay(
        focus_db: FocusDb, tmp_path: Path, fmt: str) -> None:
    final = focus_db.final_cost()
    calls_final = focus_db.scalar(
        f"SELECT count() FROM {{db}}.model_calls FINAL WHERE {RANGE} AND cost IS NOT NULL")
    # The replay is live: without FINAL every call is there twice.
    assert focus_db.replayed == 11
    assert focus_db.raw_cost() == 2 * final
    assert focus_db.scalar(f"SELECT count() FROM {{db}}.model_calls WHERE {RANGE}") == 16
    summary = export(focus_db, tmp_path / f"focus.{fmt}")
    _, records = read_focus(tmp_path / f"focus.{fmt}", fmt)
    assert sum(r["BilledCost"] for r in records) == final
    assert final == focus_db.scalar(
        "SELECT sum(cost) FROM {db}.model_calls FINAL WHERE event_id IN "
        "('edge-start', 'u1-c1', 'u1-c2', 'u2-c2', 'u3-c1', 'u3-c2', 'u4-c1')")
    assert sum(r["x_Calls"] for r in records) == calls_final == 7
    assert summary.rows == len(records) == 6  # edge, u1, u2's priced call, u3 x 2 hours, u4
    assert summary.cost == {"USD": final} and summary.records == 7
    distinct_currencies = focus_db.scalar(
        f"SELECT groupUniqArray(currency) FROM {{db}}.model_calls FINAL WHERE {RANGE}")
    assert {r["BillingCurrency"] for r in records} == set(distinct_currencies)


@pytest.mark.parametrize("fmt", FORMATS)
def test_tags_carry_the_unit_its_dimensions_and_its_attributes(
        focus_db: FocusDb, tmp_path: Path, fmt: str) -> None:
    summary = export(focus_db, tmp_path / f"focus.{fmt}")
    _, records = read_focus(tmp_path / f"focus.{fmt}", fmt)
    u1 = [r for r in records if tags(r).get(f"{TAG}work_unit_id") == "focus-u1"]
    assert len(u1) == 1
    assert tags(u1[0]) == {
        # the call's attributes: the one user-defined scheme, unprefixed; a valueless
        # attribute is true; the key using the reserved prefix is left out
        "customer_tier": "gold", "ticket": "T-1", "flagged": True, "région": "Île-de-France",
        f"{TAG}team": "support", f"{TAG}workflow": "triage", f"{TAG}work_unit_id": "focus-u1",
        f"{TAG}owner": "alice", f"{TAG}agent": "planner", f"{TAG}service": "helpdesk",
        f"{TAG}environment": "prod", f"{TAG}task_type": "triage"}
    assert summary.dropped_tag_keys == 1
    row = u1[0]
    assert row["BilledCost"] == U1_COST  # 18 decimal places, exact
    assert (row["x_Calls"], row["x_InputTokens"], row["x_CachedInputTokens"],
            row["x_CacheWriteTokens"], row["x_OutputTokens"], row["x_ReasoningTokens"]) == \
        (2, 2000, 300, 100, 550, 120)
    assert row["ConsumedQuantity"] == 2550 and row["PricingQuantity"] == Decimal("0.00255")
    # Empty dimensions are left out, not written as "".
    edge = next(r for r in records if tags(r)[f"{TAG}work_unit_id"] == "focus-edge")
    assert set(tags(edge)) == {f"{TAG}team", f"{TAG}workflow", f"{TAG}work_unit_id"}


def test_unpriced_calls_are_left_out_and_counted(focus_db: FocusDb, tmp_path: Path) -> None:
    summary = export(focus_db, tmp_path / "focus.csv")
    _, records = read_csv(tmp_path / "focus.csv")
    assert not [r for r in records if r["SkuId"] == "acme/acme-internal-llm"]
    assert summary.unpriced_count == 1
    usage = summary.unpriced[("model_calls", "acme/acme-internal-llm")]
    assert (usage.count, usage.quantity, usage.unit) == (1, Decimal(1200), "Tokens")
    # u2's priced call is still exported, alone in its row.
    u2 = [r for r in records if tags(r)[f"{TAG}work_unit_id"] == "focus-u2"]
    assert [(r["SkuId"], r["x_Calls"]) for r in u2] == [("openai/gpt-4o-mini", 1)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_charge_periods_are_cut_to_a_range_that_is_not_whole_hours(
        focus_db: FocusDb, tmp_path: Path, fmt: str) -> None:
    h0 = focus_db.h0
    window = Window(h0 + timedelta(minutes=30), h0 + timedelta(minutes=90))
    export(focus_db, tmp_path / f"cut.{fmt}", window)
    _, records = read_focus(tmp_path / f"cut.{fmt}", fmt)
    check_focus_rules(records, window)
    periods = sorted((r["ChargePeriodStart"], r["ChargePeriodEnd"]) for r in records)
    assert periods == [(window.start, h0 + timedelta(hours=1)),
                       (h0 + timedelta(hours=1), window.end)]  # u3's two calls
    assert sum(r["BilledCost"] for r in records) == focus_db.final_cost(window) > 0


def test_the_range_includes_its_start_and_excludes_its_end(
        focus_db: FocusDb, tmp_path: Path) -> None:
    export(focus_db, tmp_path / "focus.csv")
    _, records = read_csv(tmp_path / "focus.csv")
    edge = [r for r in records if tags(r)[f"{TAG}work_unit_id"] == "focus-edge"]
    # edge-start (at h0) only: edge-before (h0 - 1 s) and edge-end (h0 + 3 h) are outside.
    assert [(r["ChargePeriodStart"], r["x_Calls"]) for r in edge] == [(focus_db.h0, 1)]


def test_a_long_range_spans_billing_periods_and_reports_progress(
        focus_db: FocusDb, tmp_path: Path) -> None:
    window = Window(focus_db.h0 - timedelta(days=41), focus_db.h0 + timedelta(hours=3))
    seen: list[Any] = []
    export(focus_db, tmp_path / "long.parquet", window, progress=seen.append)
    _, records = read_parquet(tmp_path / "long.parquet")
    check_focus_rules(records, window)
    old = [r for r in records if tags(r)[f"{TAG}work_unit_id"] == "focus-old"]
    assert len(old) == 1 and old[0]["BillingPeriodStart"] < records[-1]["BillingPeriodStart"]
    assert sum(r["BilledCost"] for r in records) == focus_db.final_cost(window)
    # One step per UTC day, in order, ending with the whole range done.
    assert len(seen) == len(window.slices()) >= 41
    assert [s.done for s in seen] == list(range(1, len(seen) + 1))
    assert seen[-1].rows == len(records) and seen[-1].window.end == window.end


def test_workflow_granularity_drops_the_unit_and_keeps_the_money(
        focus_db: FocusDb, tmp_path: Path) -> None:
    export(focus_db, tmp_path / "unit.csv")
    export(focus_db, tmp_path / "workflow.csv", granularity=Granularity.WORKFLOW)
    _, by_unit = read_csv(tmp_path / "unit.csv")
    _, by_workflow = read_csv(tmp_path / "workflow.csv")
    check_focus_rules(by_workflow, focus_db.window)
    assert all(f"{TAG}work_unit_id" not in tags(r) for r in by_workflow)
    # Only edge-start and u4 differ by nothing but their unit: they become one row.
    assert (len(by_unit), len(by_workflow)) == (6, 5)
    merged = [r for r in by_workflow if r["x_Calls"] == 2 and r["SkuId"] == "openai/gpt-4o"
              and "customer_tier" not in tags(r)]
    assert len(merged) == 1
    assert sum(r["BilledCost"] for r in by_workflow) == sum(r["BilledCost"] for r in by_unit)
    assert sum(r["x_Calls"] for r in by_workflow) == sum(r["x_Calls"] for r in by_unit)


def test_a_failed_export_leaves_no_file(focus_db: FocusDb, tmp_path: Path) -> None:
    def failing(sql: str, parameters: Mapping[str, datetime]) -> Iterator[Mapping[str, Any]]:
        yield from clickhouse_fetch(focus_db.client, readonly=False)(sql, parameters)
        raise ConnectionError("ClickHouse went away")

    target = tmp_path / "focus.csv"
    with pytest.raises(ConnectionError):
        export_focus(failing, target, focus_db.window, database=focus_db.database)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_small_write_batches_give_the_same_file(
        focus_db: FocusDb, tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.report.focus_export as focus_export

    export(focus_db, tmp_path / f"whole.{fmt}")
    monkeypatch.setattr(focus_export, "BATCH_ROWS", 4)  # 6 rows: writes of 4 and 2
    export(focus_db, tmp_path / f"batched.{fmt}")
    assert read_focus(tmp_path / f"batched.{fmt}", fmt) == read_focus(
        tmp_path / f"whole.{fmt}", fmt)


def test_the_worker_path_query_returns_the_same_rows(focus_db: FocusDb) -> None:
    """The worker's /sql/ takes text only: the inlined query must mean the same."""
    sql = MODEL_CALLS.query(focus_db.database, Granularity.UNIT)
    parameters = {"start": focus_db.window.start, "end": focus_db.window.end}
    inlined = inline_parameters(sql, parameters)
    assert "{start" not in inlined and "toDateTime64('" in inlined
    bound = sorted(map(repr, focus_db.client.query(sql, parameters=parameters).result_rows))
    assert bound == sorted(map(repr, focus_db.client.query(inlined).result_rows))
    assert len(bound) == 7  # the six priced rows and the unpriced one


# ---- the mapping alone, without ClickHouse -------------------------------------------

def _row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "hour": int(datetime(2026, 3, 31, 23, tzinfo=UTC).timestamp()), "provider": "openai",
        "model": "gpt-4o", "currency": "EUR", "team": "t", "workflow": "w", "unit": "u-1",
        "owner": "", "agent": "", "service": "", "environment": "staging", "task_type": "",
        "tag_attributes": {"cost_center": "cc-7"}, "priced": True, "calls": 3,
        "cost_total": Decimal("1.500000000000000000"), "input_total": 3000,
        "cached_input_total": 0, "cache_write_total": 0, "output_total": 1500,
        "reasoning_total": 0}
    row.update(overrides)
    return row


def test_a_row_becomes_a_focus_record_with_exact_values() -> None:
    window = Window(datetime(2026, 3, 31, 23, 30, tzinfo=UTC), datetime(2026, 4, 2, tzinfo=UTC))
    record = focus_record(model_call_line(_row(), window), BillingAccounts({"openai": "org-1"}))
    assert record["BilledCost"] == Decimal("1.5") and record["BillingCurrency"] == "EUR"
    assert record["BillingAccountId"] == "org-1"
    assert record["ChargePeriodStart"] == window.start  # cut to the range
    assert record["ChargePeriodEnd"] == datetime(2026, 4, 1, tzinfo=UTC)
    assert (record["BillingPeriodStart"], record["BillingPeriodEnd"]) == (
        datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    assert record["PricingQuantity"] == Decimal("0.0045")
    assert json.loads(record["Tags"]) == {
        "cost_center": "cc-7", f"{TAG}team": "t", f"{TAG}workflow": "w",
        f"{TAG}work_unit_id": "u-1", f"{TAG}environment": "staging"}
    december = _row(hour=int(datetime(2026, 12, 31, 5, tzinfo=UTC).timestamp()))
    far = Window(datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC))
    record = focus_record(model_call_line(december, far), BillingAccounts())
    assert record["BillingPeriodEnd"] == datetime(2027, 1, 1, tzinfo=UTC)
    assert record["BillingAccountId"] == f"{TAG}openai"


def test_the_worker_json_shape_gives_the_same_record() -> None:
    """Through a worker, decimals are strings and booleans may be 1/0."""
    window = Window(datetime(2026, 3, 31, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    accounts = BillingAccounts()
    native = focus_record(model_call_line(_row(), window), accounts)
    as_json = focus_record(model_call_line(
        _row(cost_total="1.500000000000000000", priced=1), window), accounts)
    assert as_json == native
    with pytest.raises(FocusExportError):  # a float has already lost digits
        model_call_line(_row(cost_total=1.5), window)


def test_a_currency_that_is_not_iso_4217_is_refused() -> None:
    window = Window(datetime(2026, 3, 31, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    with pytest.raises(FocusExportError, match="ISO 4217") as error:
        focus_record(model_call_line(_row(currency="usd"), window), BillingAccounts())
    assert error.value.fields["currency"] == "usd"


def test_slices_cut_at_utc_midnights_and_cover_the_range() -> None:
    window = Window(datetime(2026, 1, 1, 6, tzinfo=UTC), datetime(2026, 1, 3, 12, tzinfo=UTC))
    cuts = window.slices()
    assert [(c.start.day, c.start.hour, c.end.day, c.end.hour) for c in cuts] == [
        (1, 6, 2, 0), (2, 0, 3, 0), (3, 0, 3, 12)]


@pytest.mark.parametrize(("start", "end", "message"), [
    ("yesterday", "2026-11-02", "--from 'yesterday' is not a date or time"),
    ("2026-11-01", "2026-13-01", "--to '2026-13-01' is not a date or time"),
    ("2026-11-02", "2026-11-01", "must be before --to"),
    ("2026-11-01", "2026-11-01T00:00:00Z", "must be before --to"),
    ("2026-11-01T00:00:00.5Z", "2026-11-02", "fractions of a second"),
    ("1970-01-01", "2026-11-02", "outside 2000-01-01..2100-01-01"),
])
def test_bad_ranges_are_refused_clearly(start: str, end: str, message: str) -> None:
    with pytest.raises(FocusExportError, match=re.escape(message)) as error:
        parse_window(start, end)
    assert isinstance(error.value, TokenyieldError) and error.value.fields["option"]


def test_times_without_an_offset_are_utc_and_offsets_are_converted() -> None:
    window = parse_window("2026-11-01", "2026-11-01T10:00:00+02:00")
    assert window == Window(datetime(2026, 11, 1, tzinfo=UTC),
                            datetime(2026, 11, 1, 8, tzinfo=UTC))


# ---- the command -------------------------------------------------------------------

@pytest.fixture
def cli_env(focus_db: FocusDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import os

    for name in list(os.environ):
        if name.startswith("TOKENYIELD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TOKENYIELD_CLICKHOUSE_DSN", f"chdb://{focus_db.chdb_path}")
    monkeypatch.setenv("TOKENYIELD_CLICKHOUSE_DATABASE", focus_db.database)
    monkeypatch.setenv("TOKENYIELD_DATA_DIR", str(tmp_path / "data"))  # no worker there
    return tmp_path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def _range_args(db: FocusDb) -> list[str]:
    return ["--from", f"{db.window.start:%Y-%m-%dT%H:%M:%SZ}",
            "--to", f"{db.window.end:%Y-%m-%dT%H:%M:%SZ}"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_command_writes_a_focus_file_by_its_extension(
        focus_db: FocusDb, cli_env: Path, capsys: pytest.CaptureFixture[str],
        fmt: str) -> None:
    target = cli_env / f"costs.{fmt}"
    code, out, err = run_cli(capsys, "export", "focus", *_range_args(focus_db), "-o", str(target))
    assert code == 0, err
    _, records = read_focus(target, fmt)
    check_focus_rules(records, focus_db.window)
    final = focus_db.final_cost()
    assert sum(r["BilledCost"] for r in records) == final
    total = format(final, "f").rstrip("0")
    assert f"wrote 6 FOCUS 1.2 rows (7 priced calls, {total} USD)" in out and str(target) in out
    # Nothing silent: the unpriced call and the reserved attribute key are reported.
    assert "left out 1 unpriced call (acme/acme-internal-llm: 1 call, 1200 tokens)" in err
    assert "left 1 attribute key out of Tags" in err
    # Progress only when the range spans more than one UTC day (it may, near midnight).
    assert ("focus export:" in err) == (len(focus_db.window.slices()) > 1)


def test_the_command_takes_a_format_flag_and_billing_accounts(
        focus_db: FocusDb, cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = cli_env / "costs.dat"
    code, _, err = run_cli(capsys, "export", "focus", *_range_args(focus_db), "-o", str(target),
                           "--format", "parquet", "--billing-account-id", "openai=org-42",
                           "--billing-account-id", "acct-all")
    assert code == 0, err
    _, records = read_parquet(target)
    accounts = {(r["ProviderName"], r["BillingAccountId"]) for r in records}
    assert accounts == {("openai", "org-42"), ("anthropic", "acct-all")}


def test_the_command_shows_progress_for_a_long_range(
        focus_db: FocusDb, cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    start = focus_db.h0 - timedelta(days=3)
    code, _, err = run_cli(capsys, "export", "focus", "--from", start.isoformat(),
                           "--to", focus_db.window.end.isoformat(), "-o",
                           str(cli_env / "long.csv"), "--granularity", "workflow")
    assert code == 0, err
    steps = re.findall(r"^focus export: .* done \((\d+)/(\d+)\), \d+ rows so far$", err, re.M)
    assert len(steps) >= 3 and steps[-1][0] == steps[-1][1] == str(len(steps))


@pytest.mark.parametrize(("args", "message"), [
    (["--from", "2026-11-02", "--to", "2026-11-01"], "must be before --to"),
    (["--from", "last tuesday", "--to", "2026-11-01"], "--from 'last tuesday' is not a date"),
])
def test_the_command_rejects_a_bad_range_before_touching_anything(
        cli_env: Path, capsys: pytest.CaptureFixture[str], args: list[str],
        message: str) -> None:
    code, out, err = run_cli(capsys, "export", "focus", *args, "-o", str(cli_env / "x.csv"))
    assert code == 2 and message in err and not out
    assert not (cli_env / "x.csv").exists()


def test_the_command_rejects_an_unknown_extension(
        focus_db: FocusDb, cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "export", "focus", *_range_args(focus_db), "-o",
                           str(cli_env / "costs.xlsx"))
    assert code == 2 and "--format csv|parquet" in err
    assert list(cli_env.glob("*costs*")) == []


def test_the_command_reports_a_directory_it_cannot_write(
        focus_db: FocusDb, cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = cli_env / "missing" / "costs.csv"
    code, _, err = run_cli(capsys, "export", "focus", *_range_args(focus_db), "-o", str(target))
    assert code == 2 and f"cannot write {target}" in err


def test_the_readme_example_is_a_valid_command() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Export to FinOps tools (FOCUS)", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^tokenyield (export focus .*)$", section, re.M)
    assert len(commands) >= 2
    for command in commands:
        args = build_parser().parse_args(["export", *command.split()[1:]])
        assert args.handler.__name__ == "focus_command"
        parse_window(args.start, args.end)


# ---- through a running worker --------------------------------------------------------

@pytest.mark.broker
def test_the_command_reads_through_a_running_worker(
        make_worker: Any, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The worker owns its chdb directory, so the export goes through its /sql/."""
    from schemas.kafka_publisher import Publisher

    worker: WorkerHandle = make_worker().start()
    base = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) - timedelta(hours=2)
    # Seconds apart: well inside the allowed lateness whatever order partitions are read.
    events = [call(f"w-{i}", f"w-unit-{i % 3}", base + timedelta(seconds=10 * i),
                   reported_cost=f"0.{i + 1:018d}", currency="USD",
                   attributes={"batch": "w"}) for i in range(12)]

    async def publish() -> None:
        async with Publisher(worker.env["TOKENYIELD_KAFKA_BOOTSTRAP"],
                             topic_prefix=prefix, linger_ms=5) as publisher:
            for event in events:
                await publisher.call(**event)

    asyncio.run(publish())
    worker.wait_for("SELECT count() FROM tokenyield.model_calls FINAL", 12)
    for name, value in worker.env.items():
        if name.startswith("TOKENYIELD_"):
            monkeypatch.setenv(name, value)
    from streams.cli.common import load_settings
    from streams.cli.export_commands import open_fetch

    assert open_fetch(load_settings()).__qualname__.startswith("worker_fetch")
    target = tmp_path / "through-worker.csv"
    end = base + timedelta(hours=2)
    code, out, err = run_cli(capsys, "export", "focus", "--from", base.isoformat(),
                             "--to", end.isoformat(), "-o", str(target))
    assert code == 0, err
    _, records = read_csv(target)
    check_focus_rules(records, Window(base, end))
    expected = Decimal(worker.scalar(
        "SELECT toString(sum(cost)) FROM tokenyield.model_calls FINAL"))
    assert sum(r["BilledCost"] for r in records) == expected == sum(
        Decimal(e["reported_cost"]) for e in events)
    assert {tags(r)["batch"] for r in records} == {"w"}
    assert "wrote" in out


# ---- other costs: cost items are FOCUS rows too ---------------------------------------

ITEMS_DATABASE = "focus_export_items"
# Restated from FOCUS 1.2 (specification/columns/servicesubcategory.md): each
# subcategory the cost kinds use, under its one parent category.
SUBCATEGORY_PARENTS = {
    "Other (Integration)": "Integration", "Other (AI and Machine Learning)":
    "AI and Machine Learning", "Search": "Analytics", "Other (Compute)": "Compute",
    "Other (Business Applications)": "Business Applications", "Other (Other)": "Other"}


def item(event_id: str, unit: str | None, at: datetime, **fields: Any) -> dict[str, Any]:
    event = {"event_id": event_id, "occurred_at": at.isoformat(), "team": "support",
             "workflow": "triage", "kind": "tool_call", "currency": "USD", **fields}
    return {**event, "work_unit_id": unit} if unit is not None else event


@dataclass
class ItemsDb:
    client: Client
    window: Window


@pytest.fixture(scope="module")
def items_db(loaded_clickhouse: LoadedClickHouse) -> ItemsDb:
    """A unit with a call and three cost items (two priced as quantity x unit price by
    one provider, one as an amount), a shared cost, and an item outside the range; each
    item written twice, as after a crash."""
    from schemas.events import CostItem

    client = loaded_clickhouse.client
    migrate(client, ITEMS_DATABASE)
    now = datetime.now(UTC).replace(microsecond=0)
    h0 = now.replace(minute=0, second=0) - timedelta(hours=4)
    bureau = {"attributes": {"provider": "credit-bureau", "product": "score"}}
    items = [
        item("fi-k1", "fi-u1", h0 + timedelta(minutes=5), quantity="3", unit_price="0.02",
             **bureau),
        item("fi-k2", "fi-u1", h0 + timedelta(minutes=6), quantity="2", unit_price="0.02",
             **bureau),
        item("fi-k3", "fi-u1", h0 + timedelta(minutes=7), amount="0.5", kind="retrieval"),
        item("fi-shared", None, h0 + timedelta(minutes=1), amount="12.50", kind="infra",
             description="vector database, one hour"),
        item("fi-late", "fi-u1", h0 + timedelta(hours=2, minutes=30), amount="9",
             kind="gpu"),
    ]
    config = EngineConfig(partitions=PARTITIONS, deadline_seconds=3600, retention_seconds=3600,
                          allowed_lateness_seconds=120)

    async def load() -> None:
        pipeline = EngineIntoClickHouse(client, ITEMS_DATABASE, config, now,
                                        retry_max_seconds=1)
        try:
            pipeline.apply("calls", partition_for("fi-u1", PARTITIONS), orjson.dumps(
                call("fi-c1", "fi-u1", h0 + timedelta(minutes=4), user="u-9",
                     customer="acme")))
            for event in items:
                key = CostItem.model_validate(event).key
                pipeline.apply("costs", partition_for(key, PARTITIONS), orjson.dumps(event))
            batches = await pipeline.checkpoint()
            written = [i for batch in batches for i in batch.cost_items]
            assert len(written) == len(items)
            client.command(f"SYSTEM STOP MERGES {ITEMS_DATABASE}.cost_items")
            again = Outputs(cost_items=written)
            again.cover("costs-replay", 0, 1)
            await pipeline.sink.write(again)
        finally:
            pipeline.close()

    asyncio.run(load())
    return ItemsDb(client, Window(h0, h0 + timedelta(hours=2)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_cost_items_are_focus_rows_of_their_own_kind_exact_once(
        items_db: ItemsDb, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"items.{fmt}"
    summary = export_focus(clickhouse_fetch(items_db.client, readonly=False), path,
                           items_db.window, database=ITEMS_DATABASE)
    _, records = read_focus(path, fmt)
    rows = {r["SkuId"]: r for r in records}
    assert len(rows) == len(records) == 4  # the call, the two kinds of fi-u1, the shared one
    for r in records:
        for name in NOT_NULL:
            assert r[name] is not None, f"{name} is null in {r}"
        assert r["BilledCost"] == r["EffectiveCost"] == r["ListCost"] == r["ContractedCost"]
        assert r["ChargeCategory"] == "Usage" and r["ChargeFrequency"] == "Usage-Based"
        assert r["ServiceCategory"] in SERVICE_CATEGORIES
        assert UNIT_TEXT.match(r["PricingUnit"]) and UNIT_TEXT.match(r["ConsumedUnit"])
        assert r["ChargePeriodStart"] >= items_db.window.start
        assert r["ChargePeriodEnd"] <= items_db.window.end
    call_row = rows["openai/gpt-4o"]
    assert call_row["ServiceSubcategory"] == "Generative AI" and call_row["x_Items"] is None
    assert (tags(call_row)[f"{TAG}user"], tags(call_row)[f"{TAG}customer"]) == ("u-9", "acme")

    tool = rows[f"{TAG}cost/tool_call"]
    assert (tool["ServiceCategory"], tool["ServiceSubcategory"], tool["ServiceName"]) == (
        "Integration", "Other (Integration)", "Tool calls")
    assert tool["ProviderName"] == tool["InvoiceIssuerName"] == "credit-bureau"
    assert tool["BillingAccountId"] == f"{TAG}credit-bureau"
    assert tool["BilledCost"] == Decimal("0.1")  # (3 + 2) x 0.02, exact
    assert (tool["PricingQuantity"], tool["PricingUnit"], tool["x_Items"]) == (5, "Units", 2)
    assert tool["ConsumedQuantity"] == 5 and tool["x_Calls"] is None
    assert tags(tool) == {"product": "score", f"{TAG}team": "support",
                          f"{TAG}workflow": "triage", f"{TAG}work_unit_id": "fi-u1"}

    retrieval = rows[f"{TAG}cost/retrieval"]
    assert (retrieval["ServiceCategory"], retrieval["ServiceSubcategory"]) == (
        "Analytics", "Search")
    assert retrieval["ProviderName"] == "Unspecified"
    assert (retrieval["BilledCost"], retrieval["PricingQuantity"],
            retrieval["PricingUnit"]) == (Decimal("0.5"), 1, "Items")

    shared = rows[f"{TAG}cost/infra"]
    assert (shared["ServiceCategory"], shared["ServiceSubcategory"]) == ("Other", "Other (Other)")
    assert shared["BilledCost"] == Decimal("12.5")
    assert tags(shared) == {f"{TAG}team": "support", f"{TAG}workflow": "triage",
                            f"{TAG}shared": True}
    assert "shared by the workflow" in shared["ChargeDescription"]
    for r in (tool, retrieval, shared):
        assert SUBCATEGORY_PARENTS[r["ServiceSubcategory"]] == r["ServiceCategory"]

    # Money: exactly cost_items FINAL in the range, though every item is there twice.
    final = items_db.client.query(
        f"SELECT sum(amount), count() FROM {ITEMS_DATABASE}.cost_items FINAL WHERE {RANGE}",
        parameters={"start": items_db.window.start, "end": items_db.window.end}).result_rows[0]
    raw = items_db.client.query(f"SELECT count() FROM {ITEMS_DATABASE}.cost_items"
                                ).result_rows[0][0]
    assert raw == 10 and final[1] == 4
    assert sum(r["BilledCost"] for r in records if r["x_Items"]) == final[0]
    assert summary.by_source == {"model_calls": 1, "cost_items": 4}
    from streams.cli.export_commands import summary_line
    assert "(1 priced calls, 4 cost items, " in summary_line(summary)


def test_cost_item_rows_through_the_worker_path_mean_the_same(items_db: ItemsDb) -> None:
    from streams.report.focus_export import COST_ITEMS

    sql = COST_ITEMS.query(ITEMS_DATABASE, Granularity.WORKFLOW)
    parameters = {"start": items_db.window.start, "end": items_db.window.end}
    bound = sorted(map(repr, items_db.client.query(sql, parameters=parameters).result_rows))
    inlined = inline_parameters(sql, parameters)
    assert bound == sorted(map(repr, items_db.client.query(inlined).result_rows))
    assert len(bound) == 3
