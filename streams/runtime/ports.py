"""The ports the runtimes use: where state is kept, where rows go, who is told of a
checkpoint. The worker plugs in a Faust table, the ClickHouse sink and its Prometheus
metrics; tests plug in a dict and fakes (``tests/core_harness.py``)."""

from __future__ import annotations

from typing import Protocol

from streams.core.records import Outputs


class StateStore(Protocol):
    """A partition's key-value state (a Faust table, RocksDB and changelog, in the
    worker). Writes happen during stream iteration of the partition's own events."""

    def get(self, key: bytes) -> bytes | None: ...

    def set(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


class Sink(Protocol):
    """Where a checkpoint's rows go. ``write`` returns once they are stored (and
    retries, while the store is down, until they are); a replayed batch is a duplicate
    by its ``Outputs.token``."""

    async def write(self, batch: Outputs) -> None: ...


class CheckpointObserver(Protocol):
    """Told of every partition checkpoint (the worker's metrics)."""

    def checkpointed(self, partition: int, seconds: float, open_units: int) -> None: ...
