"""The worker's path from input message to ClickHouse row, in one process, without Kafka.

Benchmarks and test fixtures need ClickHouse filled with exactly what the engine would
write, faster than a broker and a worker can deliver it. This drives the same glue the
Faust agents call (``PartitionRuntime``: engine, outputs into sink batches, offsets
covered, checkpoints) and the same rollup stage, with an in-memory dict as the state
table. Every output kind reaches the sink: calls, outcomes, attributions, alerts, dead
letters, late events and the window rows.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from schemas.pricing import PriceBook
from streams.clickhouse.sink import ClickHouseSink
from streams.core.engine import EventKind, PartitionEngine
from streams.core.engine_config import EngineConfig
from streams.core.records import Outputs
from streams.core.rollup import WindowRollup
from streams.core.windows import Outbox
from streams.runtime.partition_runtime import PartitionRuntime


class UnclosableClient:
    """One chdb client lent to a sink without letting the sink's ``stop`` close it
    (chdb allows one client per path in a process)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def close(self) -> None:
        return None


class DictStateStore(dict[bytes, bytes]):
    """The state table, in memory: checkpoints are planned and written as in the worker,
    and kept only for the life of the load."""

    def set(self, key: bytes, value: bytes) -> None:
        self[key] = value

    def delete(self, key: bytes) -> None:
        self.pop(key, None)


class EngineIntoClickHouse:
    """Partition runtimes over one ClickHouse client; the event-time clock's "now" is
    fixed at ``now`` (events after it are future-skewed, as in a worker)."""

    def __init__(self, client: Client, database: str, config: EngineConfig, now: datetime,
                 *, retry_max_seconds: float = 5.0) -> None:
        self.now_ms = int(now.timestamp() * 1000)
        book = PriceBook.load()
        self.sink = ClickHouseSink(lambda: UnclosableClient(client), database,
                                   retry_max_seconds=retry_max_seconds)
        self.store = DictStateStore()
        self.runtimes = [
            PartitionRuntime(PartitionEngine(p, config, lambda: book, lambda: self.now_ms,
                                             store=self.store),
                             self.sink, interval_seconds=math.inf, max_events=2**62)
            for p in range(config.partitions)]
        self.rollup = WindowRollup(config.currency, dimension_cap=config.dimension_cap,
                                   idle_seconds=10**9,
                                   partitions=config.partitions)
        self.offsets: dict[tuple[str, int], int] = {}
        self.rollup_position = 0
        self.calls = 0

    def apply(self, kind: EventKind, partition: int, value: bytes) -> Outputs:
        """One Kafka message (an event or an envelope) at the next offset of its input."""
        offset = self.offsets.get((kind, partition), -1) + 1
        self.offsets[(kind, partition)] = offset
        out = self.runtimes[partition].apply(kind, kind, value, offset)
        self.calls += len(out.calls)
        return out

    async def checkpoint(self) -> list[Outputs]:
        """Every partition's checkpoint, then the rollup's window rows, as the worker
        orders them. Returns the partitions' batches as written."""
        written = []
        for runtime in self.runtimes:
            written.append(runtime.batch)
            await runtime.checkpoint(self.store, self._to_rollup, _nothing_to_flush)
        self.rollup_position += 1
        windows = Outputs(windows=self.rollup.updates() + self.rollup.take_ready())
        windows.cover("rollup", 0, self.rollup_position)
        await self.sink.write(windows)
        return written

    def run_clock_to_now(self) -> None:
        """Move every partition's event time to ``now``: windows close and deadlines
        pass as they would have by then."""
        for runtime in self.runtimes:
            runtime.engine.max_event_ms = max(runtime.engine.max_event_ms, self.now_ms)
            runtime.tick()

    def close(self) -> None:
        self.sink.stop()

    async def _to_rollup(self, outbox: Outbox) -> None:
        self.rollup.apply(Outbox.decode(outbox.encode()), self.now_ms)


async def _nothing_to_flush() -> None:
    return None
