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

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from schemas.kafka_options import KafkaConnection
from schemas.pricing import PriceBook, PriceEntry

log = logging.getLogger(__name__)


class PriceBookHolder:
    """The current book; replaced (never mutated) when prices change."""

    def __init__(self, book: PriceBook) -> None:
        self._book = book
        self.updates = 0

    @classmethod
    def from_catalog(cls, path: Path | None) -> PriceBookHolder:
        return cls(PriceBook.load(path))

    def current(self) -> PriceBook:
        return self._book

    def apply(self, entries: list[PriceEntry], removed: set[str]) -> None:
        if entries or removed:
            self._book = self._book.with_entries(entries, removed)
            self.updates += 1
            log.info("price book updated: %d entries, %d removed, now %s",
                     len(entries), len(removed), self._book.version)


def encode_price(entry: PriceEntry) -> tuple[bytes, bytes]:
    """Key and value to publish a price on the compacted ``prices`` topic."""
    return entry.key.encode(), entry.model_dump_json(exclude_none=True).encode()


async def follow_prices(connection: KafkaConnection, topic: str, holder: PriceBookHolder,
                        ready: asyncio.Event | None = None) -> None:
    """Apply every record of the prices topic, then keep following it (runs forever)."""
    consumer = AIOKafkaConsumer(
        topic, **connection.aiokafka_kwargs(), group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False)
    while True:
        try:
            await consumer.start()
            break
        except KafkaError as exc:
            log.warning("price feed cannot reach Kafka yet (%s); retrying", exc)
            await asyncio.sleep(1.0)
    try:
        caught_up = False
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            entries: list[PriceEntry] = []
            removed: set[str] = set()
            for records in batches.values():
                for record in records:
                    key = record.key.decode() if record.key else ""
                    if not record.value:
                        removed.add(key)
                        continue
                    try:
                        entries.append(PriceEntry.model_validate_json(record.value))
                    except ValidationError as exc:
                        log.error("ignoring invalid price at %s[%d]@%d: %s", record.topic,
                                  record.partition, record.offset, exc)
            holder.apply(entries, removed)
            if not caught_up and not batches:
                caught_up = True
                if ready is not None:
                    ready.set()
    finally:
        await consumer.stop()
