"""Model and other costs as a FOCUS 1.2 cost and usage file (CSV or Parquet) for
FinOps tools.

FOCUS, the FinOps Open Cost and Usage Specification, is the column set of the
hyperscalers' cost exports, which FinOps tools read (Vantage's custom providers take a
FOCUS CSV). This
module turns tokenyield's exact costs into FOCUS rows; ``tokenyield export focus`` runs
it (streams/cli/export_commands.py).

Sources read for the rules below (FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec, tag
``v1.2``, commit 7296e31):
``specification/columns/*.md`` (each column's requirements and content constraints),
``specification/attributes/*.md`` (ColumnHandling, CurrencyFormat, DateTimeFormat,
KeyValueFormat, NullHandling, NumericFormat, StringHandling, UnitFormat), and the FinOps
Foundation's validator rules for 1.2 (finopsfoundation/focus_validator,
``focus_validator/rules/model-1.2.json``: which columns are mandatory, and the
formats it checks), plus https://focus.finops.org/technology-categories/focus-for-ai/
(the model is the SKU; AI services are "AI and Machine Learning").

What FOCUS 1.2 asks, and what this export writes:

- **Mandatory columns** (all 21 are written): BilledCost, BillingAccountId,
  BillingAccountName, BillingCurrency, BillingPeriodEnd, BillingPeriodStart,
  ChargeCategory, ChargeClass, ChargeDescription, ChargePeriodEnd, ChargePeriodStart,
  ContractedCost, EffectiveCost, InvoiceIssuerName, ListCost, PricingQuantity,
  PricingUnit, ProviderName, PublisherName, ServiceCategory, ServiceName.
  (ServiceProviderName and HostProviderName are FOCUS 1.3 names; 1.2 has ProviderName.)
- **Recommended and conditional columns written**: ChargeFrequency, ServiceSubcategory,
  ConsumedQuantity and ConsumedUnit (usage is measured, in tokens), SkuId, SkuPriceId,
  SkuMeter, SkuPriceDetails (null: allowed) and Tags (tags are supported).
- **Costs**: Decimal, never null, in BillingCurrency. A row's cost is the sum of its
  calls' ``cost``, the call's own figure (reported, else computed from the price book).
  There are no discounts, commitments or amortization to express, so ListCost,
  ContractedCost and EffectiveCost equal BilledCost, which is what FOCUS requires of a
  cost whose unit price is null.
- **Unit prices are left out** (ListUnitPrice, ContractedUnitPrice: conditional). A row
  holds input, cached, cache-write and output tokens, each at its own price, and FOCUS
  requires unit price x PricingQuantity to equal the cost exactly. No single unit price
  does that for a blend. PricingCategory (conditional) is left out too: tokenyield does
  not know whether a call ran at standard, batch or committed rates.
- **Units** (UnitFormat): prices are per million tokens, so PricingUnit is
  "1000000 Tokens" and PricingQuantity is tokens / 10^6 (exact). ConsumedUnit is
  "Tokens" and ConsumedQuantity is input + output tokens (cache reads and writes are
  parts of input, reasoning is a part of output: schemas/events.py).
- **Times** (DateTimeFormat): UTC, ``YYYY-MM-DDTHH:mm:ssZ`` in CSV and UTC timestamps (whole
  seconds, stored in milliseconds: Parquet has no second unit) in Parquet. Charge
  periods are inclusive-start and exclusive-end hours, cut to the export's range;
  billing periods are the calendar month (UTC) of the charge.
- **Nulls** (NullHandling): NULL where there is no value, never an empty string or 0 as a
  placeholder. An *unpriced* call (cost NULL) therefore cannot become a FOCUS row: every
  cost column is not-null and a 0 would be a placeholder. Unpriced calls are left out and
  counted in the summary (``ExportSummary.unpriced``), which the command prints.
- **Tags** (Tags, KeyValueFormat): a JSON object of string or ``true`` values. tokenyield's
  own dimensions form one tag scheme with the reserved prefix ``tokenyield/``
  (``tokenyield/team``, ``tokenyield/workflow``, ``tokenyield/work_unit_id``,
  ``tokenyield/owner``, ``tokenyield/agent``, ``tokenyield/service``,
  ``tokenyield/environment``, ``tokenyield/task_type``); the call's ``attributes`` are the
  one user-defined scheme and keep their keys unprefixed, as the spec requires ("MUST
  NOT prefix tag keys when the provider has only one user-defined tag scheme"). FOCUS
  keeps ``x_`` for custom *columns* (ColumnHandling) and SkuPriceDetails properties, not
  for tag keys. An attribute with an empty value is a valueless tag: ``true``. An
  attribute key that uses the reserved prefix is left out (the spec forbids reserved
  prefixes in a prefixless scheme) and counted. Empty dimensions are left out.
- **Custom columns** (ColumnHandling): after the FOCUS columns, prefixed ``x_``:
  x_Calls, x_InputTokens, x_CachedInputTokens, x_CacheWriteTokens, x_OutputTokens,
  x_ReasoningTokens (null on cost-item rows), x_Items (null on model-call rows).
- **Numbers** (NumericFormat): CSV holds exact decimal strings (no exponent, no sign for
  positives, always with a decimal point so that readers that infer types from text see a
  decimal); Parquet holds decimal128(38, 18) for money and decimal128(38, 6) for
  quantities. Floats are never used.

Granularity: one row per charge hour, provider, model, currency, team, workflow, work
unit and the other tag values. A FinOps tool allocates by tags, and the work unit is
what tokenyield joins outcomes to; most units last minutes, so a row is about one unit's
calls of a model. ``Granularity.WORKFLOW`` drops the work unit (far fewer rows when units
are many and short).

**Other costs** (``cost_items``: tools, retrieval, GPUs, seats, infrastructure, people;
docs/SEMANTICS.md) are rows of their own, one per charge hour, cost kind, provider,
quantity form, team, workflow, work unit (none for a shared cost) and tags:

- ServiceCategory and ServiceSubcategory follow the kind (``ITEM_SERVICES``): a tool
  call is Integration, an embedding AI and Machine Learning, retrieval Analytics /
  Search, GPU time Compute, a seat Business Applications, infrastructure and people's
  time Other. ServiceName says the kind ("Tool calls"), SkuId and SkuPriceId are
  ``tokenyield/cost/<kind>``.
- ProviderName, PublisherName and InvoiceIssuerName are the item's ``provider``
  attribute (who is paid), else "Unspecified": tokenyield is not told, and the column
  may not be null.
- The cost is the item's ``amount`` as stored: in the reporting currency, exact (the
  engine converts other currencies and multiplies quantity by unit price).
- Quantities: items priced as quantity x unit price are counted in ``Units`` (their
  quantities summed), items given as an amount in ``Items`` (how many); the two forms
  are separate rows, so a row's unit means one thing. PricingQuantity and
  ConsumedQuantity are that figure; unit prices stay null (a row may mix prices).
- A shared cost (no work unit) carries the tag ``tokenyield/shared`` (true); how it is
  allocated to units is tokenyield's view (``v_shared_cost_allocation``), not the bill.

A new cost source is a ``CostSource``: one SQL text and one function from its result
rows to ``CostLine``, added to ``SOURCES``. Everything after the lines (FOCUS columns,
writers, summary) is shared.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import Any, Literal, Protocol

from clickhouse_connect.driver.client import Client

from schemas.errors import FocusExportError

FOCUS_VERSION = "1.2"
TAG_PREFIX = "tokenyield/"
HOUR = timedelta(hours=1)
MILLION_TOKENS_UNIT = "1000000 Tokens"
BATCH_ROWS = 10_000
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


class Granularity(StrEnum):
    UNIT = "unit"
    WORKFLOW = "workflow"


# ---------------------------------------------------------------------------- the range

@dataclass(frozen=True)
class Window:
    """``[start, end)`` in UTC, whole seconds (FOCUS times have no fractions)."""

    start: datetime
    end: datetime

    def slices(self, hours: int = 24) -> list[Window]:
        """The range cut at multiples of ``hours`` since the epoch (UTC midnights for 24),
        so each query's GROUP BY stays bounded and progress can be shown. Cuts fall on
        hour boundaries, so no charge hour is split between two slices."""
        step = hours * 3600
        cuts: list[Window] = []
        cursor = self.start
        while cursor < self.end:
            boundary = datetime.fromtimestamp((int(cursor.timestamp()) // step + 1) * step, UTC)
            stop = min(boundary, self.end)
            cuts.append(Window(cursor, stop))
            cursor = stop
        return cuts


def parse_bound(text: str, option: str) -> datetime:
    """An ISO date (midnight UTC) or date and time; no zone means UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise FocusExportError(
            f"{option} {text!r} is not a date or time: use ISO 8601, for example 2026-11-01 "
            "or 2026-11-01T06:00:00Z (UTC when no offset is given)",
            option=option, value=text) from exc
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment.microsecond:
        raise FocusExportError(
            f"{option} {text!r} has fractions of a second; FOCUS times are whole seconds",
            option=option, value=text)
    if not _EARLIEST <= moment <= _LATEST:
        raise FocusExportError(f"{option} {text!r} is outside 2000-01-01..2100-01-01",
                               option=option, value=text)
    return moment


def parse_window(start: str, end: str) -> Window:
    window = Window(parse_bound(start, "--from"), parse_bound(end, "--to"))
    if window.start >= window.end:
        raise FocusExportError(
            f"--from ({window.start:%Y-%m-%dT%H:%M:%SZ}) must be before --to "
            f"({window.end:%Y-%m-%dT%H:%M:%SZ}): the range is [from, to)",
            option="--to", value=end)
    return window


# ---------------------------------------------------------------------- lines, sources

TagValue = str | bool


@dataclass(frozen=True)
class CostLine:
    """One aggregated charge of any source, in FOCUS terms but before FOCUS columns."""

    source: str
    charge_start: datetime
    charge_end: datetime
    provider: str
    publisher: str
    invoice_issuer: str
    service_name: str
    service_category: str
    service_subcategory: str
    sku_id: str
    sku_meter: str
    description: str
    cost: Decimal | None  # None: unpriced, left out of the file and counted
    currency: str
    pricing_quantity: Decimal
    pricing_unit: str
    consumed_quantity: Decimal | None
    consumed_unit: str | None
    count: int  # source records in the line (calls, items)
    tags: dict[str, TagValue]
    dropped_tag_keys: int = 0
    custom: dict[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class CostSource:
    """A table to export: its SQL (``{db}``, ``{work_unit}``, and the ``start``/``end``
    parameters) and the mapping of its rows to lines."""

    name: str
    sql: str
    to_line: Callable[[Mapping[str, Any], Window], CostLine]

    def query(self, database: str, granularity: Granularity) -> str:
        if not _IDENTIFIER.match(database):
            raise FocusExportError(f"database name {database!r} is not an identifier",
                                   database=database)
        unit = "work_unit_id" if granularity is Granularity.UNIT else "''"
        return self.sql.replace("{db}", database).replace("{work_unit}", unit)


# FINAL: model_calls is a ReplacingMergeTree, and a replayed call stays a second row until
# a merge; FINAL collapses it at read time, so it is never exported twice. Aggregates are
# not named after their columns (ClickHouse would resolve the alias inside the aggregate).
# The hour is returned as epoch seconds, which both result paths (clickhouse-connect and
# the worker's JSON) carry without time-zone guesswork.
MODEL_CALLS_SQL = """SELECT
    toUnixTimestamp(toStartOfHour(occurred_at)) AS hour,
    provider, model, currency, team, workflow, {work_unit} AS unit,
    owner, agent, service, environment, task_type, user, customer,
    mapSort(attributes) AS tag_attributes,
    cost IS NOT NULL AS priced,
    count() AS calls,
    sum(ifNull(cost, 0)) AS cost_total,
    sum(input_tokens) AS input_total,
    sum(cached_input_tokens) AS cached_input_total,
    sum(cache_write_tokens) AS cache_write_total,
    sum(output_tokens) AS output_total,
    sum(reasoning_tokens) AS reasoning_total
FROM {db}.model_calls FINAL
WHERE occurred_at >= {start:DateTime64(3, 'UTC')} AND occurred_at < {end:DateTime64(3, 'UTC')}
GROUP BY hour, provider, model, currency, team, workflow, unit, owner, agent, service,
    environment, task_type, user, customer, tag_attributes, priced
ORDER BY hour, provider, model, team, workflow, unit, priced"""

DIMENSION_TAGS: tuple[tuple[str, str], ...] = (
    ("team", "team"), ("workflow", "workflow"), ("work_unit_id", "unit"), ("owner", "owner"),
    ("agent", "agent"), ("service", "service"), ("environment", "environment"),
    ("task_type", "task_type"), ("user", "user"), ("customer", "customer"))


def call_tags(row: Mapping[str, Any]) -> tuple[dict[str, TagValue], int]:
    """Tags of a model-calls (or cost-items) row, and how many attribute keys had to be
    left out."""
    tags: dict[str, TagValue] = {}
    dropped = 0
    for key, value in sorted(dict(row.get("tag_attributes") or {}).items()):
        if str(key).startswith(TAG_PREFIX):
            dropped += 1
            continue
        # A valueless tag is true (FOCUS Tags); any other value is kept as given.
        tags[str(key)] = str(value) if value != "" else True
    for tag, column in DIMENSION_TAGS:
        value = str(row.get(column) or "")
        if value:
            tags[TAG_PREFIX + tag] = value
    return tags, dropped


def model_call_line(row: Mapping[str, Any], window: Window) -> CostLine:
    """A model-calls result row (one hour x model x tags) as a cost line."""
    hour = datetime.fromtimestamp(int(row["hour"]), UTC)
    provider, model = str(row["provider"]), str(row["model"])
    calls = int(row["calls"])
    input_tokens, output_tokens = int(row["input_total"]), int(row["output_total"])
    tokens = Decimal(input_tokens + output_tokens)
    tags, dropped = call_tags(row)
    return CostLine(
        source="model_calls",
        charge_start=max(hour, window.start), charge_end=min(hour + HOUR, window.end),
        provider=provider, publisher=provider, invoice_issuer=provider,
        service_name=f"{provider} API", service_category="AI and Machine Learning",
        service_subcategory="Generative AI",
        sku_id=f"{provider}/{model}", sku_meter="Tokens",
        description=(f"{model} ({provider}): {calls} call{'s' if calls != 1 else ''}, "
                     f"{input_tokens} input and {output_tokens} output tokens"),
        cost=as_decimal(row["cost_total"]) if _truthy(row["priced"]) else None,
        currency=str(row["currency"]),
        pricing_quantity=tokens.scaleb(-6), pricing_unit=MILLION_TOKENS_UNIT,
        consumed_quantity=tokens, consumed_unit="Tokens",
        count=calls, tags=tags, dropped_tag_keys=dropped,
        custom={"x_Calls": calls, "x_InputTokens": input_tokens,
                "x_CachedInputTokens": int(row["cached_input_total"]),
                "x_CacheWriteTokens": int(row["cache_write_total"]),
                "x_OutputTokens": output_tokens,
                "x_ReasoningTokens": int(row["reasoning_total"])})


MODEL_CALLS = CostSource("model_calls", MODEL_CALLS_SQL, model_call_line)

# FINAL, as for the calls: a replayed item is one row. ``amount`` is already in the
# reporting currency (``currency``) and exact; a quantity-priced item keeps its quantity.
COST_ITEMS_SQL = """SELECT
    toUnixTimestamp(toStartOfHour(occurred_at)) AS hour,
    kind, currency, team, workflow, {work_unit} AS unit, shared, user, customer,
    attributes['provider'] AS item_provider,
    mapSort(mapFilter((k, v) -> k != 'provider', attributes)) AS tag_attributes,
    quantity IS NOT NULL AS quantified,
    count() AS items,
    sum(amount) AS amount_total,
    sum(ifNull(quantity, 0)) AS quantity_total
FROM {db}.cost_items FINAL
WHERE occurred_at >= {start:DateTime64(3, 'UTC')} AND occurred_at < {end:DateTime64(3, 'UTC')}
GROUP BY hour, kind, currency, team, workflow, unit, shared, user, customer, item_provider,
    tag_attributes, quantified
ORDER BY hour, kind, team, workflow, unit, item_provider, quantified"""

#: FOCUS ServiceCategory and ServiceSubcategory, and a ServiceName, of each cost kind.
ITEM_SERVICES: dict[str, tuple[str, str, str]] = {
    "tool_call": ("Integration", "Other (Integration)", "Tool calls"),
    "embedding": ("AI and Machine Learning", "Other (AI and Machine Learning)", "Embeddings"),
    "retrieval": ("Analytics", "Search", "Retrieval"),
    "gpu": ("Compute", "Other (Compute)", "GPU time"),
    "seat": ("Business Applications", "Other (Business Applications)", "Seats"),
    "infra": ("Other", "Other (Other)", "Infrastructure"),
    "human_labour": ("Other", "Other (Other)", "Human labour"),
    "other": ("Other", "Other (Other)", "Other costs"),
}
UNSPECIFIED_PROVIDER = "Unspecified"


def cost_item_line(row: Mapping[str, Any], window: Window) -> CostLine:
    """A cost-items result row (one hour x kind x provider x tags) as a cost line."""
    hour = datetime.fromtimestamp(int(row["hour"]), UTC)
    kind = str(row["kind"])
    category, subcategory, service = ITEM_SERVICES.get(kind, ITEM_SERVICES["other"])
    provider = str(row.get("item_provider") or "") or UNSPECIFIED_PROVIDER
    items = int(row["items"])
    quantified = _truthy(row["quantified"])
    quantity = as_decimal(row["quantity_total"]) if quantified else Decimal(items)
    unit = "Units" if quantified else "Items"
    tags, dropped = call_tags(row)
    if _truthy(row["shared"]):
        tags[TAG_PREFIX + "shared"] = True
    shared = " shared by the workflow" if _truthy(row["shared"]) else ""
    return CostLine(
        source="cost_items",
        charge_start=max(hour, window.start), charge_end=min(hour + HOUR, window.end),
        provider=provider, publisher=provider, invoice_issuer=provider,
        service_name=service, service_category=category, service_subcategory=subcategory,
        sku_id=f"{TAG_PREFIX}cost/{kind}", sku_meter=unit,
        description=(f"{service} ({provider}): {items} cost item{'s' if items != 1 else ''}"
                     f"{shared}, {decimal_text(quantity)} {unit.lower()}"),
        cost=as_decimal(row["amount_total"]), currency=str(row["currency"]),
        pricing_quantity=quantity, pricing_unit=unit,
        consumed_quantity=quantity, consumed_unit=unit,
        count=items, tags=tags, dropped_tag_keys=dropped, custom={"x_Items": items})


COST_ITEMS = CostSource("cost_items", COST_ITEMS_SQL, cost_item_line)
SOURCES: tuple[CostSource, ...] = (MODEL_CALLS, COST_ITEMS)


def as_decimal(value: Any) -> Decimal:
    """Decimals arrive as Decimal (clickhouse-connect) or as exact strings (the worker's
    JSON). A float would already have lost digits, so it is refused."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str | int) and not isinstance(value, bool):
        return Decimal(value)
    raise FocusExportError(f"expected an exact decimal, got {type(value).__name__} {value!r}")


def _truthy(value: Any) -> bool:
    return value not in (0, False, None, "0", "false")


# -------------------------------------------------------------------- FOCUS columns

ColumnKind = Literal["money", "quantity", "datetime", "string", "json", "integer"]


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind


# FOCUS columns first, alphabetically, then the custom x_ columns (ColumnHandling).
COLUMNS: tuple[Column, ...] = (
    Column("BilledCost", "money"),
    Column("BillingAccountId", "string"),
    Column("BillingAccountName", "string"),
    Column("BillingCurrency", "string"),
    Column("BillingPeriodEnd", "datetime"),
    Column("BillingPeriodStart", "datetime"),
    Column("ChargeCategory", "string"),
    Column("ChargeClass", "string"),
    Column("ChargeDescription", "string"),
    Column("ChargeFrequency", "string"),
    Column("ChargePeriodEnd", "datetime"),
    Column("ChargePeriodStart", "datetime"),
    Column("ConsumedQuantity", "quantity"),
    Column("ConsumedUnit", "string"),
    Column("ContractedCost", "money"),
    Column("EffectiveCost", "money"),
    Column("InvoiceIssuerName", "string"),
    Column("ListCost", "money"),
    Column("PricingQuantity", "quantity"),
    Column("PricingUnit", "string"),
    Column("ProviderName", "string"),
    Column("PublisherName", "string"),
    Column("ServiceCategory", "string"),
    Column("ServiceName", "string"),
    Column("ServiceSubcategory", "string"),
    Column("SkuId", "string"),
    Column("SkuMeter", "string"),
    Column("SkuPriceDetails", "json"),
    Column("SkuPriceId", "string"),
    Column("Tags", "json"),
    Column("x_Calls", "integer"),
    Column("x_InputTokens", "integer"),
    Column("x_CachedInputTokens", "integer"),
    Column("x_CacheWriteTokens", "integer"),
    Column("x_OutputTokens", "integer"),
    Column("x_ReasoningTokens", "integer"),
    Column("x_Items", "integer"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)


@dataclass(frozen=True)
class BillingAccounts:
    """BillingAccountId per provider. FOCUS requires one on every row and tokenyield does
    not see the provider's account, so without ``--billing-account-id`` the id is
    ``tokenyield/<provider>``: one account per provider, plainly not a provider's own id.
    ``"*"`` applies to every provider not named."""

    ids: Mapping[str, str] = field(default_factory=dict)

    def id_for(self, provider: str) -> str:
        return self.ids.get(provider) or self.ids.get("*") or f"{TAG_PREFIX}{provider}"


def billing_period(moment: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) holding ``moment``: providers bill monthly."""
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return start, datetime(following.year, following.month, 1, tzinfo=UTC)


def focus_record(line: CostLine, accounts: BillingAccounts) -> dict[str, Any]:
    """One FOCUS 1.2 row (column name -> value; None is null) for a priced line."""
    if line.cost is None:
        raise FocusExportError("an unpriced line has no FOCUS row", sku=line.sku_id)
    if not _CURRENCY.match(line.currency):
        raise FocusExportError(
            f"{line.source} has currency {line.currency!r}: BillingCurrency must be an "
            "ISO 4217 code such as USD", source=line.source, currency=line.currency)
    period_start, period_end = billing_period(line.charge_start)
    record: dict[str, Any] = {
        "BilledCost": line.cost,
        "BillingAccountId": accounts.id_for(line.provider),
        "BillingAccountName": None,  # unknown to tokenyield; nullable in 1.2
        "BillingCurrency": line.currency,
        "BillingPeriodEnd": period_end,
        "BillingPeriodStart": period_start,
        "ChargeCategory": "Usage",
        "ChargeClass": None,  # null: not a correction of an invoiced period
        "ChargeDescription": line.description,
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": line.charge_end,
        "ChargePeriodStart": line.charge_start,
        "ConsumedQuantity": line.consumed_quantity,
        "ConsumedUnit": line.consumed_unit,
        "ContractedCost": line.cost,
        "EffectiveCost": line.cost,
        "InvoiceIssuerName": line.invoice_issuer,
        "ListCost": line.cost,
        "PricingQuantity": line.pricing_quantity,
        "PricingUnit": line.pricing_unit,
        "ProviderName": line.provider,
        "PublisherName": line.publisher,
        "ServiceCategory": line.service_category,
        "ServiceName": line.service_name,
        "ServiceSubcategory": line.service_subcategory,
        "SkuId": line.sku_id,
        "SkuMeter": line.sku_meter,
        "SkuPriceDetails": None,
        "SkuPriceId": line.sku_id,  # one price per model (per cost kind) at a time
        "Tags": tags_json(line.tags),
    }
    for column in COLUMNS:
        if column.name.startswith("x_"):
            record[column.name] = line.custom.get(column.name)
    return record


def tags_json(tags: Mapping[str, TagValue]) -> str | None:
    if not tags:
        return None
    return json.dumps(dict(tags), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -------------------------------------------------------------------------- writers

class FocusWriter(Protocol):
    def write(self, records: Sequence[Mapping[str, Any]]) -> None: ...
    def close(self) -> None: ...


def decimal_text(value: Decimal) -> str:
    """Exact, plain notation, and always with a decimal point ("12.0"): a reader that
    infers column types from CSV text must see a decimal, not an integer."""
    text = format(value, "f")
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0") or "0"
    if whole == "-0" and fraction == "0":
        whole = "0"
    return f"{whole}.{fraction}"


def csv_text(value: Any, kind: ColumnKind) -> str:
    if value is None:
        return ""  # CSV's null
    if kind in ("money", "quantity"):
        return decimal_text(value)
    if kind == "datetime":
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


class CsvFocusWriter:
    def __init__(self, path: Path) -> None:
        self._file = path.open("w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._csv.writerow(COLUMN_NAMES)

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        self._csv.writerows([csv_text(r[c.name], c.kind) for c in COLUMNS] for r in records)

    def close(self) -> None:
        self._file.close()


def arrow_schema() -> Any:
    import pyarrow as pa

    types = {
        "money": pa.decimal128(38, 18),  # as ClickHouse keeps cost: Decimal(38, 18)
        "quantity": pa.decimal128(38, 6),  # tokens / 10^6 is exact at scale 6
        "datetime": pa.timestamp("ms", tz="UTC"),  # Parquet has no second unit
        "string": pa.string(),
        "json": pa.string(),
        "integer": pa.int64(),
    }
    return pa.schema([pa.field(c.name, types[c.kind]) for c in COLUMNS],
                     metadata={"FocusVersion": FOCUS_VERSION, "DataGenerator": "tokenyield"})


class ParquetFocusWriter:
    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        self._schema = arrow_schema()
        self._writer = pq.ParquetWriter(str(path), self._schema, compression="zstd")

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        import pyarrow as pa

        if records:
            # A Decimal with more digits than the column's scale raises here: never rounded.
            self._writer.write_table(pa.Table.from_pylist(list(records), schema=self._schema))

    def close(self) -> None:
        self._writer.close()


FORMATS = ("csv", "parquet")


def file_format(path: Path, given: str | None) -> str:
    if given is not None:
        if given not in FORMATS:
            raise FocusExportError(f"--format {given!r}: use csv or parquet", value=given)
        return given
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise FocusExportError(
        f"cannot tell the format of {path.name!r} from its extension: name it .csv or "
        ".parquet, or pass --format csv|parquet", path=str(path))


def open_writer(path: Path, fmt: str) -> FocusWriter:
    return CsvFocusWriter(path) if fmt == "csv" else ParquetFocusWriter(path)


# ------------------------------------------------------------------ ClickHouse access

Fetch = Callable[[str, Mapping[str, datetime]], Iterable[Mapping[str, Any]]]


def clickhouse_fetch(client: Client, *, readonly: bool = True) -> Fetch:
    """Rows of a query through clickhouse-connect, streamed block by block, with the
    range bound as server-side parameters."""
    def fetch(sql: str, parameters: Mapping[str, datetime]) -> Iterator[Mapping[str, Any]]:
        settings = {"readonly": 1} if readonly else None
        with client.query_row_block_stream(sql, parameters=dict(parameters),
                                           settings=settings) as stream:
            names = stream.source.column_names
            for block in stream:
                for row in block:
                    yield dict(zip(names, row, strict=True))
    return fetch


_DATETIME_PARAMETER = re.compile(r"\{(\w+):DateTime64\(3, 'UTC'\)\}")


def inline_parameters(sql: str, parameters: Mapping[str, datetime]) -> str:
    """The query with its time parameters as literals, for a path that takes SQL text
    only (a running worker's /sql/). The values are datetimes formatted here, never
    user text, so nothing can be injected."""
    def literal(match: re.Match[str]) -> str:
        moment = parameters[match.group(1)].astimezone(UTC)
        return f"toDateTime64('{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d}', " \
               "3, 'UTC')"
    rendered = _DATETIME_PARAMETER.sub(literal, sql)
    if re.search(r"\{\w+:[^}]+\}", rendered):
        raise FocusExportError("only DateTime64(3, 'UTC') parameters can be inlined")
    return rendered


# ----------------------------------------------------------------------- the export

@dataclass
class UnpricedUsage:
    count: int = 0
    quantity: Decimal = Decimal(0)
    unit: str | None = None


@dataclass
class ExportSummary:
    path: Path
    format: str
    window: Window
    rows: int = 0
    records: int = 0  # source records (calls, cost items) in the rows
    by_source: dict[str, int] = field(default_factory=dict)  # records of each source
    cost: dict[str, Decimal] = field(default_factory=dict)  # by BillingCurrency
    unpriced: dict[tuple[str, str], UnpricedUsage] = field(default_factory=dict)
    dropped_tag_keys: int = 0

    @property
    def unpriced_count(self) -> int:
        return sum(u.count for u in self.unpriced.values())

    def add(self, line: CostLine) -> None:
        self.dropped_tag_keys += line.dropped_tag_keys
        if line.cost is None:
            usage = self.unpriced.setdefault((line.source, line.sku_id), UnpricedUsage())
            usage.count += line.count
            usage.quantity += line.consumed_quantity or Decimal(0)
            usage.unit = line.consumed_unit
            return
        self.rows += 1
        self.records += line.count
        self.by_source[line.source] = self.by_source.get(line.source, 0) + line.count
        self.cost[line.currency] = self.cost.get(line.currency, Decimal(0)) + line.cost


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    window: Window
    rows: int


def focus_rows(rows: Iterable[Mapping[str, Any]], source: CostSource, window: Window,
               accounts: BillingAccounts, summary: ExportSummary) -> Iterator[dict[str, Any]]:
    """Result rows of ``source`` as FOCUS records; unpriced lines are counted instead."""
    for row in rows:
        line = source.to_line(row, window)
        summary.add(line)
        if line.cost is not None:
            yield focus_record(line, accounts)


def batches(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch


def export_focus(fetch: Fetch, path: Path, window: Window, *, database: str = "tokenyield",
                 fmt: str | None = None, granularity: Granularity = Granularity.UNIT,
                 accounts: BillingAccounts | None = None,
                 sources: Sequence[CostSource] = SOURCES, slice_hours: int = 24,
                 progress: Callable[[Progress], None] | None = None) -> ExportSummary:
    """Write the FOCUS file for ``window``; the file appears whole or not at all."""
    fmt = file_format(path, fmt)
    accounts = accounts or BillingAccounts()
    summary = ExportSummary(path=path, format=fmt, window=window)
    queries = [(s, s.query(database, granularity)) for s in sources]
    slices = window.slices(slice_hours)
    # Written beside the target and renamed at the end, so an upload job watching the
    # target never picks up half an export.
    partial = path.with_name(f".{path.name}.partial")
    try:
        writer = open_writer(partial, fmt)
    except OSError as exc:
        raise FocusExportError(f"cannot write {path}: {exc.strerror or exc}",
                               path=str(path)) from exc
    try:
        for done, piece in enumerate(slices, start=1):
            for source, sql in queries:
                rows = fetch(sql, {"start": piece.start, "end": piece.end})
                # Bounded batches: a busy day must not sit in memory as Python dicts.
                records = focus_rows(rows, source, piece, accounts, summary)
                for batch in batches(records, BATCH_ROWS):
                    writer.write(batch)
            if progress is not None:
                progress(Progress(done, len(slices), piece, summary.rows))
        writer.close()
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(Exception):  # the first error is the one to report
            writer.close()
        partial.unlink(missing_ok=True)
        raise
    return summary
