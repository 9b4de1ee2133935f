"""Helpers shared by the commands: settings, finding the broker and the worker."""

from __future__ import annotations

import asyncio

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
