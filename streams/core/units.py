"""Where a partition's units live, and when each is due for attention.

Live units are in memory: the recently used ones as objects, idle ones parked as their
bytes. A unit evicted after its retention leaves a *summary* (its state's bytes) in
the partition's key-value store, read back when a late event arrives for it, so late
money merges into the same attribution. Summaries cost nothing in memory: the store
keeps them on disk (RocksDB in the worker) and the engine only remembers, per day, how
many index chunks list the summaries that expire then.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Protocol

from streams.core.unit import UnitState, last_event_ms

DAY_MS = 86_400_000


class StoreReader(Protocol):
    """Read access to the partition's key-value store (writes go through checkpoints)."""

    def get(self, key: bytes) -> bytes | None: ...


class NoStore:
    """A store with nothing in it (an engine without a durable store: tests, tools)."""

    def get(self, key: bytes) -> bytes | None:
        return None


def summary_key(partition: int, unit_id: str) -> bytes:
    return f"s/{partition}/{unit_id}".encode()


def expiry_chunk_key(partition: int, day: int, index: int) -> bytes:
    return f"sx/{partition}/{day}/{index}".encode()


def encode_summary(seq: int, data: bytes) -> bytes:
    """A summary record: the checkpoint that wrote it, then the unit's bytes."""
    return b"%d\n" % seq + data


def decode_summary(record: bytes) -> tuple[int, bytes]:
    seq, _, data = record.partition(b"\n")
    return int(seq), data


class UnitStore:
    """Live units (hot and parked), and summaries of evicted ones."""

    def __init__(self, partition: int, reader: StoreReader) -> None:
        self.partition = partition
        self.reader = reader
        self.hot: dict[str, UnitState] = {}
        self.parked: dict[str, bytes] = {}
        self.touched: set[str] = set()
        self.evicted: dict[str, bytes] = {}  # summaries the next checkpoint writes
        # Summaries written by a checkpoint after this one belong to a checkpoint that
        # never completed (a crash before its meta record): the state they summarize is
        # being rebuilt by the replay, so they are not read.
        self.durable_seq = 0

    # -- live units --------------------------------------------------------------------
    def get(self, unit_id: str) -> UnitState | None:
        unit = self.hot.get(unit_id)
        if unit is None:
            data = self.parked.pop(unit_id, None)
            if data is None:
                return None
            unit = UnitState.load(data)
            self.hot[unit_id] = unit
        self.touched.add(unit_id)
        return unit

    def add(self, unit: UnitState) -> None:
        self.hot[unit.unit_id] = unit
        self.touched.add(unit.unit_id)

    def remove(self, unit_id: str) -> None:
        self.hot.pop(unit_id, None)
        self.parked.pop(unit_id, None)
        self.touched.discard(unit_id)

    def load_any(self, unit_id: str) -> UnitState | None:
        """A live unit without marking it used (reporting, sweeps)."""
        unit = self.hot.get(unit_id)
        if unit is not None:
            return unit
        data = self.parked.get(unit_id)
        return UnitState.load(data) if data is not None else None

    def park_idle(self, dumped: dict[str, bytes]) -> int:
        """Park units not used since the last call; reuse bytes already serialized."""
        idle = [uid for uid in self.hot if uid not in self.touched]
        for uid in idle:
            unit = self.hot.pop(uid)
            # A copy: orjson's output keeps its ~4 KiB working buffer allocated behind a
            # ~500-byte value; kept for every parked unit, that was 8x the state.
            self.parked[uid] = bytes(memoryview(dumped.get(uid) or unit.dump()))
        self.touched = set()
        return len(idle)

    def __len__(self) -> int:
        return len(self.hot) + len(self.parked)

    def __contains__(self, unit_id: str) -> bool:
        return unit_id in self.hot or unit_id in self.parked

    def ids(self) -> list[str]:
        return [*self.hot, *self.parked]

    # -- summaries ---------------------------------------------------------------------
    def evict(self, unit: UnitState) -> None:
        """Replace the live unit by its summary (written at the next checkpoint)."""
        self.remove(unit.unit_id)
        self.evicted[unit.unit_id] = unit.dump()

    def summary(self, unit_id: str) -> bytes | None:
        """The summary of an evicted unit, if it has one."""
        data = self.evicted.get(unit_id)
        if data is not None:
            return data
        record = self.reader.get(summary_key(self.partition, unit_id))
        if record is None:
            return None
        seq, data = decode_summary(record)
        return data if seq <= self.durable_seq else None

    def revive(self, unit_id: str, data: bytes) -> UnitState:
        """Make an evicted unit live again from its summary. The stored summary stays
        until the unit is evicted again (which overwrites it) or the horizon passes: a
        crash before the next checkpoint then finds it where it was."""
        self.evicted.pop(unit_id, None)
        unit = UnitState.load(data)
        self.add(unit)
        return unit


class DueWheel:
    """When each live unit next needs attention (expiry, eviction), in whole minutes."""

    def __init__(self) -> None:
        self.buckets: dict[int, list[str]] = {}
        self.heap: list[int] = []
        self.due: dict[str, int] = {}

    def schedule(self, unit_id: str, due_ms: int) -> None:
        # Buckets are whole minutes, rounded up, so every entry of a popped bucket is due.
        minute = -(-due_ms // 60_000)
        current = self.due.get(unit_id)
        if current is not None and current <= minute:
            return  # the earlier entry re-checks the unit and reschedules it
        self.put(unit_id, minute)

    def put(self, unit_id: str, minute: int) -> None:
        self.due[unit_id] = minute
        bucket = self.buckets.get(minute)
        if bucket is None:
            bucket = self.buckets[minute] = []
            heapq.heappush(self.heap, minute)
        bucket.append(unit_id)

    def pop_due(self, clock_ms: int) -> Iterator[str]:
        """Units due at or before ``clock_ms`` (each once, however often scheduled)."""
        heap = self.heap
        while heap and heap[0] * 60_000 <= clock_ms:
            minute = heapq.heappop(heap)
            for uid in self.buckets.pop(minute, ()):
                if self.due.get(uid) != minute:
                    continue  # stale entry: the unit was rescheduled earlier
                del self.due[uid]
                yield uid

    def forget(self, unit_id: str) -> None:
        self.due.pop(unit_id, None)


class SummaryIndex:
    """Which summaries expire on which day, so the horizon can delete them.

    Each checkpoint writes the ids it summarized as one chunk per expiry day; the meta
    record keeps the chunk count per day (a few dozen numbers). Once the clock has
    passed a day, its chunks are read back and every summary still due then is
    deleted: one that was revived and evicted again later is listed under its new day.
    """

    def __init__(self, partition: int, horizon_ms: int) -> None:
        self.partition = partition
        self.horizon_ms = horizon_ms
        self.chunks: dict[int, int] = {}  # expiry day -> chunks in the store
        self.pending: dict[int, list[str]] = {}  # written at the next checkpoint

    def add(self, unit_id: str, last_ms: int) -> None:
        day = (last_ms + self.horizon_ms) // DAY_MS
        self.pending.setdefault(day, []).append(unit_id)

    def take_writes(self) -> list[tuple[bytes, bytes]]:
        writes = []
        for day, ids in sorted(self.pending.items()):
            index = self.chunks.get(day, 0)
            writes.append((expiry_chunk_key(self.partition, day, index),
                           "\n".join(ids).encode()))
            self.chunks[day] = index + 1
        self.pending = {}
        return writes

    def due_days(self, clock_ms: int) -> list[int]:
        return sorted(day for day in self.chunks if (day + 1) * DAY_MS <= clock_ms)

    def expired(self, data: bytes, clock_ms: int) -> bool:
        return last_event_ms(data) + self.horizon_ms <= clock_ms
