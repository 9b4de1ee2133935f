"""``tokenyield prices``: import LiteLLM maps, quote a call, publish prices live."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.codec import explain
from schemas.errors import InvalidEventError
from schemas.events import ModelCall
from schemas.litellm_import import CHAT_MODES, convert_litellm_file, dump_catalog
from schemas.pricing import PriceBook, load_catalog, plain, price_call
from streams.cli.common import load_settings, parse_moment, publish_keyed
from streams.feeds.price_feed import encode_price


def register(sub: Any) -> None:
    prices = sub.add_parser("prices", help="price catalogs: import, quote, publish")
    commands = prices.add_subparsers(dest="prices_command", required=True, metavar="ACTION")

    imp = commands.add_parser(
        "import-litellm", help="convert LiteLLM's model_prices_and_context_window.json")
    imp.add_argument("file", type=Path, help="LiteLLM price map (JSON)")
    imp.add_argument("-o", "--output", type=Path, required=True, help="catalog to write")
    imp.add_argument("--provider", action="append", dest="providers",
                     help="keep only this litellm_provider (repeatable)")
    imp.add_argument("--all-modes", action="store_true",
                     help="also import embedding, image and audio models")
    imp.add_argument("--version", default=None, help="catalog version (default: today)")
    imp.set_defaults(handler=import_command)

    quote = commands.add_parser("quote", help="price one call; prints JSON")
    quote.add_argument("--catalog", type=Path, default=None,
                       help="catalog file (default: the shipped catalog)")
    quote.add_argument("--provider", required=True)
    quote.add_argument("--model", required=True)
    quote.add_argument("--input-tokens", type=int, required=True)
    quote.add_argument("--output-tokens", type=int, required=True)
    quote.add_argument("--cached-input-tokens", type=int, default=0)
    quote.add_argument("--cache-write-tokens", type=int, default=0,
                       help="cache writes of any lifetime")
    quote.add_argument("--cache-write-1h-tokens", type=int, default=0,
                       help="the part of --cache-write-tokens written for one hour")
    quote.add_argument("--service-tier", default=None,
                       help="the provider's service tier (flex, priority, batch...)")
    quote.add_argument("--reasoning-tokens", type=int, default=0)
    quote.add_argument("--at", default=None, help="ISO date or time the call happened "
                                                  "(default: now)")
    quote.set_defaults(handler=quote_command)

    publish = commands.add_parser(
        "publish", help="publish a catalog to the compacted prices topic (live update)")
    publish.add_argument("catalog", type=Path)
    publish.set_defaults(handler=publish_command)

    reprice = commands.add_parser(
        "reprice", help="price calls of the past again with the prices in force now (after "
                        "a price was published for dates already priced): a counted "
                        "correction")
    reprice.add_argument("--since", required=True, help="ISO date or time: calls from then")
    reprice.add_argument("--until", default=None, help="ISO date or time: calls before then")
    reprice.add_argument("--model", action="append", dest="models", default=[],
                         help="only calls to this model (repeatable)")
    reprice.add_argument("--dry-run", action="store_true",
                         help="say what would change, publish nothing")
    reprice.set_defaults(handler=reprice_command)


def import_command(args: argparse.Namespace) -> int:
    version = args.version or datetime.now(UTC).date().isoformat()
    imported = convert_litellm_file(
        args.file, providers=set(args.providers) if args.providers else None,
        modes=None if args.all_modes else CHAT_MODES, version=version, as_of=version)
    args.output.write_bytes(dump_catalog(imported.catalog))
    # What was left out is printed every time: a silently dropped model would later
    # show up as "unpriced" with no hint why.
    for line in imported.report.lines():
        print(line)
    print(f"wrote {len(imported.catalog.entries)} entries to {args.output}")
    return 0


def reprice_command(args: argparse.Namespace) -> int:
    import asyncio

    from streams.app.repricing import calls_query, current_book, plan_repricing
    from streams.cli.common import bootstrap_for
    from streams.cli.data_commands import query

    settings = load_settings()
    since = _moment(args.since, "--since")
    until = _moment(args.until, "--until") if args.until else None
    book = asyncio.run(current_book(settings, bootstrap_for(settings)))
    columns, rows = query(settings, calls_query(settings.clickhouse_database, since, until,
                                                args.models))
    plan = plan_repricing((dict(zip(columns, r, strict=True)) for r in rows), book,
                          settings.currency, dict(settings.fx_rates))
    sign = "+" if plan.difference >= 0 else ""
    print(f"price book {book.version}: {plan.examined} calls examined, "
          f"{len(plan.events)} to reprice ({sign}{plain(plan.difference)} {settings.currency}), "
          f"{plan.unchanged} unchanged, {plan.unpriced} without a price now")
    if plan.events and not args.dry_run:
        publish_keyed(settings, settings.topic("calls"),
                      [(e["work_unit_id"].encode(), orjson.dumps(e)) for e in plan.events])
        print(f"published {len(plan.events)} repricing events to {settings.topic('calls')}")
    return 0


def _moment(text: str | None, option: str) -> datetime:
    return datetime.now(UTC) if text is None else parse_moment(text, option)


def quote_command(args: argparse.Namespace) -> int:
    book = PriceBook.load(args.catalog)
    try:
        call = _quoted_call(args)
    except ValidationError as exc:
        raise InvalidEventError(f"the call to quote is invalid: {explain(exc)}",
                                reasons=[explain(exc)]) from exc
    priced = price_call(book, call)
    result = {
        "provider": args.provider,
        "model": args.model,
        "at": call.occurred_at.isoformat(),
        "cost": plain(priced.cost) if priced.cost is not None else "unknown",
        "currency": priced.currency,
        "unpriced": priced.unpriced,
        "long_context": priced.long_context,
        "service_tier": priced.service_tier or "standard",
        "price_key": priced.price_key,
        "breakdown": {k: plain(v) for k, v in priced.breakdown.model_dump().items()}
        if priced.breakdown else None,
        "catalog_version": book.version,
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0 if not priced.unpriced else 1


def _quoted_call(args: argparse.Namespace) -> ModelCall:
    return ModelCall(
        event_id="quote", work_unit_id="quote", occurred_at=_moment(args.at, "--at"),
        provider=args.provider, model=args.model, input_tokens=args.input_tokens,
        output_tokens=args.output_tokens, cached_input_tokens=args.cached_input_tokens,
        cache_write_tokens=args.cache_write_tokens,
        cache_write_1h_tokens=args.cache_write_1h_tokens, reasoning_tokens=args.reasoning_tokens,
        service_tier=args.service_tier, team="-", workflow="-")


def publish_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    catalog = load_catalog(args.catalog)
    publish_keyed(settings, settings.topic("prices"),
                  [encode_price(entry) for entry in catalog.entries])
    print(f"published {len(catalog.entries)} prices to {settings.topic('prices')}")
    return 0
