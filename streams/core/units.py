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
from collections import deque
from collections.abc import Iterator
from typing import Protocol

from streams.core.unit import UnitState, Vocabulary, last_event_ms

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


def vocabulary_key(partition: int, index: int) -> bytes:
    return f"v/{partition}/{index}".encode()


def expiry_chunk_key(partition: int, day: int, index: int) -> bytes:
    return f"sx/{partition}/{day}/{index}".encode()


Version = tuple[str, int, bytes]  # (life, checkpoint seq, the unit's bytes)


def encode_summary(life: str, seq: int, data: bytes, previous: Version | None = None) -> bytes:
    """A summary record: the life and checkpoint that wrote it and the unit's bytes, then
    the version it replaces, if any. A record is overwritten in place, before the meta
    record that vouches for it: should that checkpoint die, the replaced version
    (vouched for by an earlier meta) is still in the record."""
    record = f"{life} {seq} {len(data)}\n".encode() + data
    if previous is not None:
        record += f"{previous[0]} {previous[1]} {len(previous[2])}\n".encode() + previous[2]
    return record


def decode_summary(record: bytes) -> list[Version]:
    """The versions in a record, newest first."""
    versions = []
    while record:
        head, _, rest = record.partition(b"\n")
        life, seq, length = head.decode().split(" ")
        versions.append((life, int(seq), rest[:int(length)]))
        record = rest[int(length):]
    return versions


class UnitStore:
    """Live units (hot and parked), and summaries of evicted ones."""

    def __init__(self, partition: int, reader: StoreReader, park_after: int) -> None:
        self.partition = partition
        self.reader = reader
        # A unit is parked once it went unused for this many checkpoints. Live traffic
        # touches a unit every few seconds: parked after one idle checkpoint, nearly
        # every event read its unit back from bytes (a decode per event).
        self.park_after = park_after
        self.vocabulary = Vocabulary()
        self.hot: dict[str, UnitState] = {}
        self.parked: dict[str, bytes] = {}
        # Bytes of hot units as they are now: their last checkpoint's dump, or the parked
        # bytes they were read from. A unit that changes is dirty, so the next checkpoint
        # dumps it again and its new bytes replace these; parking a unit that did not
        # change reuses them instead of serializing it again.
        self.clean: dict[str, bytes] = {}
        self.touched: set[str] = set()  # used since the last checkpoint
        # The units used in each of the previous ``park_after`` intervals between
        # checkpoints, oldest first: every hot unit is in one of them or in ``touched``.
        self.earlier: deque[set[str]] = deque()
        self.evicted: dict[str, bytes] = {}  # summaries the next checkpoint writes
        # The last durable checkpoint of each life of this partition's state (a life ends
        # with a crash). A summary written by a checkpoint no meta vouches for (one that
        # died before its meta record) is not read: the state it summarizes is being
        # rebuilt by the replay.
        self.lives: dict[str, int] = {}

    # -- live units --------------------------------------------------------------------
    def get(self, unit_id: str) -> UnitState | None:
        unit = self.hot.get(unit_id)
        if unit is None:
            data = self.parked.pop(unit_id, None)
            if data is None:
                return None
            unit = self.decode(unit_id, data)
            self.hot[unit_id] = unit
            self.clean[unit_id] = data
        self.touched.add(unit_id)
        return unit

    def add(self, unit: UnitState) -> None:
        self.hot[unit.unit_id] = unit
        self.clean.pop(unit.unit_id, None)  # a new object: no bytes of it yet
        self.touched.add(unit.unit_id)

    def remove(self, unit_id: str) -> None:
        self.hot.pop(unit_id, None)
        self.parked.pop(unit_id, None)
        self.clean.pop(unit_id, None)
        self.touched.discard(unit_id)
        for used in self.earlier:  # else an evicted unit's id stays held for a while
            used.discard(unit_id)

    def load_any(self, unit_id: str) -> UnitState | None:
        """A live unit without marking it used (reporting, sweeps)."""
        unit = self.hot.get(unit_id)
        if unit is not None:
            return unit
        data = self.parked.get(unit_id)
        return self.decode(unit_id, data) if data is not None else None

    def encode(self, unit: UnitState) -> bytes:
        return unit.dump(self.vocabulary)

    def decode(self, unit_id: str, data: bytes) -> UnitState:
        return UnitState.load(unit_id, data, self.vocabulary)

    def park_idle(self, dumped: dict[str, bytes]) -> int:
        """Park the units unused for ``park_after`` checkpoints, called by each
        checkpoint with the bytes it serialized (``dumped``: every unit changed since the
        last one). Bytes already serialized are reused: this checkpoint's, or a unit's
        clean bytes."""
        idle = self._idle()
        clean = self.clean
        for uid in idle:
            unit = self.hot.pop(uid)
            kept, data = clean.pop(uid, None), dumped.get(uid)
            if data is not None or kept is None:
                # A copy: the serializer's output keeps its ~4 KiB working buffer behind
                # a ~500-byte value; kept for every parked unit, that was 8x the state.
                # (Clean bytes are such copies already.)
                kept = bytes(memoryview(data if data is not None else self.encode(unit)))
            self.parked[uid] = kept
        # The units that stay hot, as this checkpoint wrote them (copies, as above).
        hot = self.hot
        for uid, data in dumped.items():
            if uid in hot:
                clean[uid] = bytes(memoryview(data))
        self.earlier.append(self.touched)
        self.touched = set()
        return len(idle)

    def _idle(self) -> list[str]:
        """The hot units unused for ``park_after`` checkpoints, this one included."""
        earlier = self.earlier
        if len(earlier) < self.park_after:
            return []
        # Only units used in the interval that leaves the window can have been idle for
        # ``park_after`` intervals: those not used again in a later one.
        oldest, hot = earlier.popleft(), self.hot
        later = [*earlier, self.touched]
        return [uid for uid in oldest
                if uid in hot and not any(uid in used for used in later)]

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
        self.evicted[unit.unit_id] = self.encode(unit)

    def summary(self, unit_id: str) -> bytes | None:
        """The summary of an evicted unit, if it has one."""
        data = self.evicted.get(unit_id)
        if data is not None:
            return data
        stored = self.stored_summary(unit_id)
        return stored[2] if stored is not None else None

    def stored_summary(self, unit_id: str) -> Version | None:
        """The newest version of a unit's summary record that a durable checkpoint
        vouches for."""
        record = self.reader.get(summary_key(self.partition, unit_id))
        if record is None:
            return None
        for version in decode_summary(record):
            if version[1] <= self.lives.get(version[0], -1):
                return version
        return None

    def revive(self, unit_id: str, data: bytes) -> UnitState:
        """Make an evicted unit live again from its summary. The stored summary stays
        until the unit is evicted again (which overwrites it) or the horizon passes: a
        crash before the next checkpoint then finds it where it was."""
        self.evicted.pop(unit_id, None)
        unit = self.decode(unit_id, data)
        self.add(unit)
        return unit


class DueWheel:
    """When each live unit next needs attention (expiry, eviction), in whole minutes.

    A unit has at most one entry: rescheduling it earlier moves the entry, and evicting
    it removes the entry, so the wheel holds nothing for closed units."""

    def __init__(self) -> None:
        self.buckets: dict[int, set[str]] = {}
        self.heap: list[int] = []
        self._heaped: set[int] = set()  # minutes in the heap (one entry each)
        self.due: dict[str, int] = {}

    def schedule(self, unit_id: str, due_ms: int) -> None:
        # Buckets are whole minutes, rounded up, so every entry of a popped bucket is due.
        minute = -(-due_ms // 60_000)
        current = self.due.get(unit_id)
        if current is not None:
            if current <= minute:
                return  # the earlier entry re-checks the unit and reschedules it
            self._discard(current, unit_id)
        self.put(unit_id, minute)

    def _discard(self, minute: int, unit_id: str) -> None:
        bucket = self.buckets.get(minute)
        if bucket is not None:
            bucket.discard(unit_id)
            if not bucket:  # a set never shrinks: drop it (its heap entry finds nothing)
                del self.buckets[minute]

    def put(self, unit_id: str, minute: int) -> None:
        self.due[unit_id] = minute
        bucket = self.buckets.get(minute)
        if bucket is None:
            bucket = self.buckets[minute] = set()
            if not self.heap or minute not in self._heaped:
                heapq.heappush(self.heap, minute)
                self._heaped.add(minute)
        bucket.add(unit_id)

    def pop_due(self, clock_ms: int) -> Iterator[str]:
        """Units due at or before ``clock_ms`` (in a deterministic order)."""
        heap = self.heap
        while heap and heap[0] * 60_000 <= clock_ms:
            minute = heapq.heappop(heap)
            self._heaped.discard(minute)
            for uid in sorted(self.buckets.pop(minute, ())):
                del self.due[uid]
                yield uid

    def forget(self, unit_id: str) -> None:
        minute = self.due.pop(unit_id, None)
        if minute is not None:
            self._discard(minute, unit_id)


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
