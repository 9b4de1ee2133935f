"""The price book a worker prices with, and its live updates from the ``prices`` topic.

The topic is compacted and keyed by ``PriceEntry.key``; a value is one entry as JSON,
an empty value (tombstone) removes that key. Every worker reads the whole topic from
the beginning, so a price published once reaches every worker, also ones started
later, without a restart. Calls are priced with the book as it is when they are
processed (no repricing of the past), and every attribution names the book version.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import orjson
from pydantic import ValidationError

from schemas.errors import ConfigurationError
from schemas.kafka_options import KafkaConnection
from schemas.pricing import PriceBook, PriceEntry
from streams.kafka.compacted import CompactedRecord, follow_compacted

log = logging.getLogger(__name__)


class PriceBookHolder:
    """The current book; replaced (never mutated) when prices change.

    Every price must be in a currency the worker can convert (the reporting currency or
    one of ``TOKENYIELD_FX_RATES``): a catalog with another one is refused at start-up;
    such an entry arriving live is refused (logged and counted in ``refused``), so the
    calls it would price stay unpriced, and are priced once a usable price arrives.
    """

    def __init__(self, book: PriceBook, currencies: frozenset[str] | None = None) -> None:
        self.currencies = currencies
        if currencies is not None:
            unknown = sorted({e.currency for e in book.entries} - currencies)
            if unknown:
                raise ConfigurationError(
                    f"the price catalog has prices in {', '.join(unknown)}, which have no "
                    f"exchange rate (set TOKENYIELD_FX_RATES)", currencies=unknown)
        self._book = book
        self.updates = 0
        self.refused = 0

    @classmethod
    def from_catalog(cls, path: Path | None,
                     currencies: frozenset[str] | None = None) -> PriceBookHolder:
        return cls(PriceBook.load(path), currencies)

    def current(self) -> PriceBook:
        return self._book

    def apply(self, entries: list[PriceEntry], removed: set[str]) -> None:
        if self.currencies is not None:
            usable = [e for e in entries if e.currency in self.currencies]
            for entry in entries:
                if entry.currency not in self.currencies:
                    self.refused += 1
                    log.error("refusing price %s: its currency %s has no exchange rate "
                              "(set TOKENYIELD_FX_RATES)", entry.key, entry.currency)
            entries = usable
        if entries or removed:
            self._book = self._book.with_entries(entries, removed)
            self.updates += 1
            log.info("price book updated: %d entries, %d removed, now %s",
                     len(entries), len(removed), self._book.version)


def encode_price(entry: PriceEntry) -> tuple[bytes, bytes]:
    """Key and value to publish a price on the compacted ``prices`` topic.

    An entry without service tiers is written without the field, byte for byte as before
    it existed, so a worker of an older version still reads it (entries forbid unknown
    fields); only an entry that has service tiers needs a worker that knows them."""
    data = entry.model_dump(mode="json", exclude_none=True)
    if not data.get("service_tiers"):
        data.pop("service_tiers", None)
    return entry.key.encode(), orjson.dumps(data)


async def follow_prices(connection: KafkaConnection, topic: str, holder: PriceBookHolder,
                        ready: asyncio.Event | None = None) -> None:
    """Apply every record of the prices topic, then keep following it (runs forever)."""
    await follow_compacted(connection, topic, lambda records: apply_records(holder, records),
                           ready, what="price feed")


def apply_records(holder: PriceBookHolder, records: list[CompactedRecord]) -> None:
    """One poll of the prices topic into the book: entries, and tombstones that remove."""
    entries: list[PriceEntry] = []
    removed: set[str] = set()
    for record in records:
        if record.value is None:
            removed.add(record.key)
            continue
        try:
            entries.append(PriceEntry.model_validate_json(record.value))
        except ValidationError as exc:
            log.error("ignoring invalid price at %s: %s", record.position, exc)
    holder.apply(entries, removed)
