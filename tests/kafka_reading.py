"""Read a topic from its beginning, as a plain consumer outside any group, in tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer


async def read_until(bootstrap: str, topic: str, enough: Callable[[Any], bool],
                     timeout: float = 30.0) -> list[Any]:
    """Records of ``topic`` until ``enough(record)`` has said yes once, or ``timeout``
    passes (then the records so far: the caller's assertion says what is missing)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    found: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        done = False
        while not done and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    found.append(record)
                    done = enough(record) or done
    finally:
        await consumer.stop()
    return found
