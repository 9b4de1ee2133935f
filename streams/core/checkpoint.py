"""Atomic checkpoints of a partition's state, as a few large records in one table.

Why not one table key per work unit: on this hardware a changelogged table write costs
~80 µs (measured, docs/BENCHMARKS.md), which would cap a worker near 10k events/s.
Instead a checkpoint writes the units and window cells changed since the previous one
as *segment* records (chunks of up to ``CHUNK_BYTES``), then one *meta* record that
lists the live segments and the input offsets the state covers.

Atomicity without Kafka transactions: all records of a partition go to the same
changelog partition in order, and the meta record goes last. Recovery reads the meta
and only the segments it lists, so a checkpoint cut short by a crash is invisible: the
state is exactly the previous checkpoint, and the inputs after its offsets are
processed again (at least once; outputs carry deterministic ids).

Segments become garbage as units are rewritten or evicted. When the bytes written
since the last full rewrite exceed twice the live estimate, the next checkpoint is a
full one: every live entry in fresh segments, the old ones deleted once the meta that
drops them is durable (one checkpoint later).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.core.engine import Ledger, PartitionEngine
from streams.core.state import Cell, UnitState

CHUNK_BYTES = 512 * 1024
FORMAT = 1


def meta_key(partition: int) -> bytes:
    return f"meta/{partition}".encode()


def segment_key(partition: int, seq: int, chunk: int) -> bytes:
    return f"seg/{partition}/{seq}/{chunk}".encode()


@dataclass(slots=True)
class CheckpointPlan:
    """Records to write, in order: segments, deletions, then the meta record."""

    seq: int
    writes: list[tuple[bytes, bytes]] = field(default_factory=list)
    deletes: list[bytes] = field(default_factory=list)
    meta: tuple[bytes, bytes] = (b"", b"")
    full: bool = False
    units_written: int = 0
    cells_written: int = 0

    @property
    def bytes(self) -> int:
        return sum(len(v) for _, v in self.writes) + len(self.meta[1])


class Checkpointer:
    """Builds checkpoint plans for one engine and restores engines from them."""

    def __init__(self, engine: PartitionEngine) -> None:
        self.engine = engine
        self.seq = 0
        self.segments: dict[int, int] = {}  # seq -> chunk count, for live segments
        self.to_delete: list[bytes] = []
        self.written_since_full = 0
        self.live_estimate = 0
        self.extra: dict[str, Any] = {}

    def plan(self, *, force_full: bool = False) -> CheckpointPlan:
        engine = self.engine
        self.seq += 1
        seq = self.seq
        live_entries = len(engine.units) + len(engine.cells)
        full = force_full or (
            self.written_since_full > 2 * max(self.live_estimate, 64 * 1024)
        )
        plan = CheckpointPlan(seq=seq, full=full)
        plan.deletes, self.to_delete = self.to_delete, []
        entries: list[bytes] = []
        dumped: dict[str, bytes] = {}
        if full:
            unit_ids = engine.units.ids()
            cell_keys = list(engine.cells)
            removed_units: set[str] = set()
            removed_cells: set[Any] = set()
        else:
            unit_ids = sorted(engine.dirty_units)
            cell_keys = [k for k in engine.cells if engine.cells[k].dirty]
            removed_units = engine.removed_units
            removed_cells = engine.removed_cells
        # Removals first: a unit evicted and then reopened in the same interval is live.
        for uid in sorted(removed_units):
            entries.append(orjson.dumps(["x", uid]))
        for key in sorted(removed_cells):
            entries.append(orjson.dumps(["y", list(key)]))
        for uid in unit_ids:
            unit = engine.units.hot.get(uid)
            data = unit.dump() if unit is not None else engine.units.parked[uid]
            dumped[uid] = data
            due = engine.due.get(uid)
            entries.append(orjson.dumps(["u", uid, due, orjson.Fragment(data)]))
        for key in cell_keys:
            entries.append(orjson.dumps(["c", engine.cells[key].dump(key)]))
        plan.units_written = len(unit_ids)
        plan.cells_written = len(cell_keys)

        chunks = _chunk(entries)
        for index, chunk in enumerate(chunks):
            plan.writes.append((segment_key(engine.partition, seq, index), chunk))
        written = sum(len(c) for c in chunks)
        if full:
            for old_seq, count in self.segments.items():
                self.to_delete.extend(
                    segment_key(engine.partition, old_seq, i) for i in range(count))
            self.segments = {}
            self.written_since_full = 0
            self.live_estimate = written
        else:
            self.written_since_full += written
            average = written / max(1, len(entries)) if entries else 0
            self.live_estimate = max(self.live_estimate, int(average * live_entries))
        if chunks:
            self.segments[seq] = len(chunks)
        plan.meta = (meta_key(engine.partition), self._meta(seq))

        # The engine's change tracking restarts from this checkpoint.
        engine.dirty_units.clear()
        engine.removed_units.clear()
        engine.removed_cells.clear()
        for cell in engine.cells.values():
            cell.dirty = False
        engine.units.park_idle(dumped)
        return plan

    def _meta(self, seq: int) -> bytes:
        engine = self.engine
        return orjson.dumps({
            "format": FORMAT,
            "seq": seq,
            "partition": engine.partition,
            "segments": {str(k): v for k, v in sorted(self.segments.items())},
            "offsets": engine.applied_offsets,
            "max_event_ms": engine.max_event_ms,
            "input_max_ms": engine.input_max_ms,
            "ledger": engine.ledger.dump(),
            "live_estimate": self.live_estimate,
            "written_since_full": self.written_since_full,
            "extra": self.extra,
        })

    # -- recovery ---------------------------------------------------------------------
    @staticmethod
    def segment_keys(partition: int, meta: bytes) -> list[bytes]:
        """The records a restore needs, in the order to read them."""
        decoded = orjson.loads(meta)
        return [segment_key(partition, int(seq), i)
                for seq, count in sorted(decoded["segments"].items(), key=lambda x: int(x[0]))
                for i in range(count)]

    def restore(self, meta: bytes, chunks: list[bytes]) -> None:
        """Load the state a meta record and its segments describe into the engine."""
        engine = self.engine
        decoded = orjson.loads(meta)
        if decoded.get("format") != FORMAT:
            raise ValueError(f"unknown checkpoint format {decoded.get('format')!r}")
        self.seq = decoded["seq"]
        self.segments = {int(k): v for k, v in decoded["segments"].items()}
        self.live_estimate = decoded["live_estimate"]
        self.written_since_full = decoded["written_since_full"]
        self.extra = decoded.get("extra", {})
        engine.applied_offsets = dict(decoded["offsets"])
        engine.max_event_ms = decoded["max_event_ms"]
        engine.input_max_ms = {"calls": engine.max_event_ms, "outcomes": engine.max_event_ms,
                               **decoded.get("input_max_ms", {})}
        engine.ledger = Ledger.load(decoded["ledger"])
        units: dict[str, tuple[int | None, bytes]] = {}
        cells: dict[tuple[int, int, str, str, str], Cell] = {}
        for chunk in chunks:
            for line in chunk.splitlines():
                if not line:
                    continue
                item = orjson.loads(line)
                tag = item[0]
                if tag == "u":
                    units[item[1]] = (item[2], orjson.dumps(item[3]))
                elif tag == "x":
                    units.pop(item[1], None)
                elif tag == "c":
                    key, cell = Cell.load(item[1])
                    cells[key] = cell
                elif tag == "y":
                    cells.pop(tuple(item[1]), None)  # type: ignore[arg-type]
        for uid, (due, data) in units.items():
            engine.units.parked[uid] = data
            if due is None:
                due = -(-engine._next_due(UnitState.load(data)) // 60_000)
            engine.due[uid] = due
            bucket = engine.wheel.get(due)
            if bucket is None:
                bucket = engine.wheel[due] = []
                heapq.heappush(engine.wheel_heap, due)
            bucket.append(uid)
        for key, cell in cells.items():
            engine.cells[key] = cell
            size, start, team, workflow, model = key
            engine.groups.setdefault((size, start, team, workflow), set()).add(model)
            if (size, start) not in engine.open_windows:
                engine.open_windows.add((size, start))
                heapq.heappush(engine.window_heap, (start + size, size, start))


def _chunk(entries: list[bytes]) -> list[bytes]:
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for entry in entries:
        if current and size + len(entry) > CHUNK_BYTES:
            chunks.append(b"\n".join(current))
            current, size = [], 0
        current.append(entry)
        size += len(entry) + 1
    if current:
        chunks.append(b"\n".join(current))
    return chunks
