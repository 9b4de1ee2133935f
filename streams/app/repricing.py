"""Repricing the past: a counted correction when a price is published for dates already
priced (``tokenyield prices reprice``).

A price published later for a model already priced does not reprice the past on its
own: every call keeps the cost it was applied with. When a price's ``effective_from``
says it held for calls already priced (a provider changed its price on a date and the
new price was published afterwards), this job reads those calls from ClickHouse
(``model_calls FINAL``: every call's own tokens), prices each again with the price
book in force now, and publishes one *repricing* event per call whose cost changes, on
the calls topic, keyed by its work unit. The engine books exactly the difference into
the unit and the call's windows (``ledger.repriced`` counts them) and writes the call's
row again. Running the job twice changes nothing more: a call already repriced has its
new cost in ``model_calls``, and a repricing event delivered twice is a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from schemas.events import ModelCall
from schemas.pricing import PriceBook, scaled_price
from streams.core.money import ATTO, convert, from_atto, to_atto
from streams.feeds.price_feed import PriceBookHolder, apply_records
from streams.kafka.compacted import follow_compacted
from streams.settings import Settings

#: The model_calls columns a repricing event is rebuilt from.
CALL_FIELDS = (
    "event_id", "work_unit_id", "occurred_at", "provider", "model", "team", "owner",
    "workflow", "task_type", "agent", "service", "environment", "status", "attempt",
    "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
    "cache_write_1h_tokens", "reasoning_tokens", "system_prompt_tokens", "context_tokens",
    "latency_ms", "service_tier", "attributes", "computed_cost")


@dataclass
class RepricingPlan:
    """What a run would publish, and what it found."""

    events: list[dict[str, Any]] = field(default_factory=list)
    examined: int = 0
    unchanged: int = 0
    unpriced: int = 0
    difference: Decimal = Decimal(0)  # in the reporting currency


def calls_query(database: str, since: datetime, until: datetime | None,
                models: list[str]) -> str:
    """The calls that may be repriced: priced from the book (no reported cost)."""
    where = [f"occurred_at >= toDateTime64('{since:%Y-%m-%d %H:%M:%S}', 3, 'UTC')",
             "reported_cost IS NULL", "computed_cost IS NOT NULL"]
    if until is not None:
        where.append(f"occurred_at < toDateTime64('{until:%Y-%m-%d %H:%M:%S}', 3, 'UTC')")
    if models:
        quoted = ", ".join("'" + m.replace("\\", "\\\\").replace("'", "\\'") + "'"
                           for m in models)
        where.append(f"model IN ({quoted})")
    return (f"SELECT {', '.join(CALL_FIELDS)} FROM {database}.model_calls FINAL "
            f"WHERE {' AND '.join(where)} ORDER BY occurred_at, event_id")


def plan_repricing(rows: Iterable[dict[str, Any]], book: PriceBook, currency: str,
                   fx_rates: dict[str, Decimal]) -> RepricingPlan:
    """A repricing event for every call whose cost with ``book`` differs from the cost it
    was booked with. Pure: rows as ``calls_query`` returns them."""
    plan = RepricingPlan()
    rates = {c: to_atto(r) for c, r in fx_rates.items()}
    for row in rows:
        plan.examined += 1
        call = ModelCall.model_validate(_event(row))
        priced = scaled_price(book, call)
        if priced is None:
            plan.unpriced += 1
            continue
        cost, price_currency = priced
        rate = ATTO if price_currency == currency else rates.get(price_currency)
        if rate is None:
            plan.unpriced += 1
            continue
        new = convert(cost, rate) if rate != ATTO else cost
        previous = to_atto(Decimal(str(row["computed_cost"])))
        if new == previous:
            plan.unchanged += 1
            continue
        plan.difference += from_atto(new - previous)
        event = _event(row)
        event["event_id"] = f"reprice:{row['event_id']}:{book.version}"
        event["reprices"] = {"event_id": row["event_id"],
                             "previous_cost": str(from_atto(previous))}
        plan.events.append(event)
    return plan


def _event(row: dict[str, Any]) -> dict[str, Any]:
    """A call event from its model_calls row (empty defaults left out)."""
    event = {k: v for k, v in row.items() if k != "computed_cost"}
    occurred = event["occurred_at"]
    if isinstance(occurred, datetime):
        event["occurred_at"] = occurred.isoformat()
    elif isinstance(occurred, str) and "+" not in occurred and not occurred.endswith("Z"):
        event["occurred_at"] = occurred.replace(" ", "T") + "+00:00"
    for name in ("agent", "service_tier"):
        if not event.get(name):
            event.pop(name, None)
    for name in ("latency_ms", "system_prompt_tokens", "context_tokens"):
        if event.get(name) is None:
            event.pop(name, None)
    return event


async def current_book(settings: Settings, bootstrap: str, timeout: float = 30.0) -> PriceBook:
    """The book a worker holds now: the catalog, then every record of the prices topic."""
    holder = PriceBookHolder.from_catalog(
        settings.price_catalog, frozenset({settings.currency, *settings.fx_rates}))
    ready = asyncio.Event()
    follower = asyncio.create_task(follow_compacted(
        settings.kafka(bootstrap), settings.topic("prices"),
        lambda records: apply_records(holder, records), ready, what="prices"))
    try:
        await asyncio.wait_for(ready.wait(), timeout)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    return holder.current()
