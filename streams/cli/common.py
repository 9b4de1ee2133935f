"""Helpers shared by the commands: settings, finding the broker and the worker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from schemas.errors import ConfigurationError
from streams.kafka.tansu_broker import running_broker
from streams.settings import Settings


def load_settings() -> Settings:
    return Settings()


def bootstrap_for(settings: Settings) -> str:
    """Configured Kafka, else the embedded broker of a running worker or demo."""
    if not settings.embedded:
        return settings.kafka_bootstrap
    found = running_broker(settings.data_dir)
    if found is None:
        raise ConfigurationError(
            f"no Kafka: set TOKENYIELD_KAFKA_BOOTSTRAP, or start `tokenyield worker` (or "
            f"`tokenyield demo`) with the same data dir ({settings.data_dir})")
    return found


def publish_keyed(settings: Settings, topic: str, records: list[tuple[bytes, bytes | None]]
                  ) -> None:
    """Send key/value records (None: a tombstone) to a topic and wait for the acks."""
    from aiokafka import AIOKafkaProducer

    bootstrap = bootstrap_for(settings)

    async def send() -> None:
        producer = AIOKafkaProducer(**settings.kafka(bootstrap).aiokafka_kwargs(), acks="all")
        await producer.start()
        try:
            for key, value in records:
                await producer.send(topic, value, key=key)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())


def parse_moment(text: str, option: str, hint: str = "") -> datetime:
    """An ISO date or time from the command line; one without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigurationError(f"{option} {text!r}: use an ISO date or time{hint}",
                                 option=option, value=text) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def print_rules(settings: Settings, table: str, columns: str, order: str) -> int:
    """``list`` of a live rule command: the rules in force, as ClickHouse holds them."""
    from streams.cli.data_commands import query, render_table

    found = query(settings, f"SELECT {columns} FROM {settings.clickhouse_database}.{table} "
                            f"FINAL ORDER BY {order}")
    print(render_table(*found))
    return 0
