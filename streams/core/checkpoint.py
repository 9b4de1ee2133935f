"""Atomic checkpoints of a partition's state, as a few large records in one table.

Why not one table key per live unit: a changelogged table write costs ~10-80 µs here
(docs/BENCHMARKS.md), which would cap a worker near 10k events/s. Instead a checkpoint
writes the live units changed since the previous one as *segment* records (chunks of up
to ``CHUNK_BYTES``), then one *meta* record that lists the live segments and the input
offsets the state covers. Evicted units are the exception: each leaves one *summary*
record under its own key (read back by key when a late event arrives), written once.

A checkpoint writes, in this order:

1. the summaries of units evicted since the last one, and the horizon index chunks;
2. the segments;
3. deletions decided one checkpoint earlier (old segments, summaries past the horizon);
4. the *outbox*: the window changes booked since the last checkpoint, numbered by the
   checkpoint (``seq``) and the state's ``epoch``;
5. the meta record, last.

Atomicity without Kafka transactions: all records of a partition go to the same
changelog partition in order, and the meta record goes last. Recovery reads the meta
and only what it names, so a checkpoint cut short by a crash is invisible: the state is
exactly the previous checkpoint, and the inputs after its offsets are processed again
(at least once; outputs carry deterministic ids). Summaries written by the unfinished
checkpoint carry its life and number, which no meta vouches for, and are not read
(``UnitStore.lives``); a summary record keeps the version it replaced for that case.

The outbox is sent to the rollup only after the meta record is durable, and sent again
after a restore (the rollup drops an ``(epoch, seq)`` it has applied): window changes
reach the rollup exactly once, although a crash may make the replay book them in
other batches.

Segments become garbage as units are rewritten or evicted. When the bytes written
since the last full rewrite exceed twice the live estimate, the next checkpoint is a
full one: every live entry in fresh segments, the old ones deleted once the meta that
drops them is durable (one checkpoint later).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any

import orjson
import ormsgpack

from schemas.errors import StateError
from streams.core.engine import PartitionEngine
from streams.core.records import EVENT_KINDS, Ledger
from streams.core.units import encode_summary, summary_key, vocabulary_key
from streams.core.windows import Outbox

CHUNK_BYTES = 512 * 1024
FORMAT = 2


class CheckpointError(StateError):
    """A checkpoint cannot be read back (unknown format, a missing record)."""


def meta_key(partition: int) -> bytes:
    return f"meta/{partition}".encode()


def segment_key(partition: int, seq: int, chunk: int) -> bytes:
    return f"seg/{partition}/{seq}/{chunk}".encode()


def outbox_key(partition: int) -> bytes:
    return f"outbox/{partition}".encode()


@dataclass(slots=True)
class CheckpointPlan:
    """Records to write, in order: ``batched`` (in any batching), each of ``writes``
    alone, ``deletes``, the outbox record, then the meta record."""

    seq: int
    batched: list[tuple[bytes, bytes]] = field(default_factory=list)
    writes: list[tuple[bytes, bytes]] = field(default_factory=list)
    deletes: list[bytes] = field(default_factory=list)
    outbox: Outbox | None = None
    outbox_record: tuple[bytes, bytes] = (b"", b"")
    meta: tuple[bytes, bytes] = (b"", b"")
    full: bool = False
    units_written: int = 0
    summaries_written: int = 0

    @property
    def bytes(self) -> int:
        return (sum(len(v) for _, v in self.batched) + sum(len(v) for _, v in self.writes)
                + len(self.meta[1]))


class Checkpointer:
    """Builds checkpoint plans for one engine and restores engines from them."""

    def __init__(self, engine: PartitionEngine) -> None:
        self.engine = engine
        self.seq = 0
        # A fresh state gets a new epoch: the rollup then knows its checkpoint numbers
        # start again (the embedded broker forgets everything on restart).
        self.epoch = os.urandom(6).hex()
        self.segments: dict[int, int] = {}  # seq -> chunk count, for live segments
        self.to_delete: list[bytes] = []
        self.swept_pending: set[str] = set()  # summaries deleted by the next plan
        # This life of the state: a new one at every restore (see ``UnitStore.lives``).
        self.life = os.urandom(4).hex()
        self.written_since_full = 0
        self.live_estimate = 0
        self.extra: dict[str, Any] = {}

    def plan(self, *, force_full: bool = False) -> CheckpointPlan:
        engine = self.engine
        self.seq += 1
        seq = self.seq
        live_entries = len(engine.units)
        full = force_full or (
            self.written_since_full > 2 * max(self.live_estimate, 64 * 1024)
        )
        plan = CheckpointPlan(seq=seq, full=full)
        units = engine.units
        for uid, data in units.evicted.items():
            plan.batched.append((summary_key(engine.partition, uid), encode_summary(
                self.life, seq, data, units.stored_summary(uid))))
        plan.summaries_written = len(units.evicted)
        units.evicted = {}
        plan.batched.extend(engine.index.take_writes())
        # Deletions decided before the previous checkpoint: that checkpoint, now durable,
        # no longer needs what they delete. The ones decided since wait for this one.
        sweeper = engine.sweeper
        plan.deletes, self.to_delete = self.to_delete, list(sweeper.deletes)
        sweeper.deletes = []
        sweeper.swept -= self.swept_pending
        self.swept_pending = set(sweeper.swept)

        entries: list[bytes] = []
        dumped: dict[str, bytes] = {}
        if full:
            unit_ids = units.ids()
            removed: set[str] = set()
            unpriced = [(key, uid, True) for key, ids in engine.repricer.index.units.items()
                        for uid in sorted(ids)]
        else:
            unit_ids = sorted(engine.dirty_units)
            removed = engine.removed_units
            unpriced = [(key, uid, present) for (key, uid), present
                        in sorted(engine.repricer.index.changes.items())]
        # Removals first: a unit evicted and then revived in the same interval is live.
        for uid in sorted(removed):
            entries.append(ormsgpack.packb(["x", uid]))
        for uid in unit_ids:
            unit = units.hot.get(uid)
            data = units.encode(unit) if unit is not None else units.parked[uid]
            dumped[uid] = data
            due = engine.wheel.due.get(uid)
            entries.append(ormsgpack.packb(["u", uid, due, data]))
        for key, uid, present in unpriced:
            entries.append(ormsgpack.packb(["p", key, uid, present]))
        plan.units_written = len(unit_ids)
        # The strings of this checkpoint's states (segments and summaries), written first
        # (the meta record, which vouches for both, comes later).
        plan.batched[:0] = units.vocabulary.take_writes(
            lambda i: vocabulary_key(engine.partition, i))

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
        plan.outbox = Outbox(engine.partition, self.epoch, seq, engine.clock_ms,
                             engine.book.take())
        plan.outbox_record = (outbox_key(engine.partition), plan.outbox.encode())
        plan.meta = (meta_key(engine.partition), self._meta(seq))

        # The engine's change tracking restarts from this checkpoint.
        engine.dirty_units.clear()
        engine.removed_units.clear()
        engine.repricer.index.changes.clear()
        units.lives[self.life] = seq  # durable once the runtime has written the plan
        units.park_idle(dumped)
        return plan

    def _meta(self, seq: int) -> bytes:
        engine = self.engine
        return orjson.dumps({
            "format": FORMAT,
            "seq": seq,
            "epoch": self.epoch,
            "partition": engine.partition,
            "segments": {str(k): v for k, v in sorted(self.segments.items())},
            "offsets": engine.applied_offsets,
            "max_event_ms": engine.max_event_ms,
            "input_max_ms": engine.input_max_ms,
            "ledger": engine.ledger.dump(),
            "horizon_index": {str(d): n for d, n in sorted(engine.index.chunks.items())},
            "vocabulary": engine.units.vocabulary.chunks,
            "lives": {**engine.units.lives, self.life: seq},
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

    def restore(self, meta: bytes, chunks: list[bytes], outbox: bytes | None = None
                ) -> Outbox | None:
        """Load the state a meta record and its segments describe into the engine.
        Returns the meta's outbox when the record holds it (it may not have reached the
        rollup: send it again)."""
        engine = self.engine
        decoded = orjson.loads(meta)
        if decoded.get("format") != FORMAT:
            raise CheckpointError(
                f"checkpoint format {decoded.get('format')!r} is not {FORMAT}: this state "
                f"was written by another version; reset the worker's state to start over",
                format=decoded.get("format"), partition=engine.partition)
        self.seq = decoded["seq"]
        self.epoch = decoded["epoch"]
        self.segments = {int(k): v for k, v in decoded["segments"].items()}
        self.live_estimate = decoded["live_estimate"]
        self.written_since_full = decoded["written_since_full"]
        self.extra = decoded.get("extra", {})
        engine.applied_offsets = dict(decoded["offsets"])
        engine.max_event_ms = decoded["max_event_ms"]
        engine.input_max_ms = {**{kind: engine.max_event_ms for kind in EVENT_KINDS},
                               **decoded.get("input_max_ms", {})}
        engine.ledger = Ledger.load(decoded["ledger"])
        engine.index.chunks = {int(d): n for d, n in decoded["horizon_index"].items()}
        vocabulary = []
        for index in range(decoded["vocabulary"]):
            chunk = engine.units.reader.get(vocabulary_key(engine.partition, index))
            if chunk is None:
                raise CheckpointError("a vocabulary record the meta names is missing",
                                      partition=engine.partition, index=index)
            vocabulary.append(chunk)
        engine.units.vocabulary.load(vocabulary)
        # The life that died may have been writing the next checkpoint; no meta will vouch
        # for what it wrote. This life continues from the meta under a name of its own.
        engine.units.lives = {str(k): int(v) for k, v in decoded["lives"].items()}
        units: dict[str, tuple[int | None, bytes]] = {}
        unpriced: dict[tuple[str, str], bool] = {}
        for chunk in chunks:
            for item in _entries(chunk):
                tag = item[0]
                if tag == "u":
                    units[item[1]] = (item[2], item[3])
                elif tag == "x":
                    units.pop(item[1], None)
                elif tag == "p":
                    unpriced[(item[1], item[2])] = bool(item[3])
        for uid, (due, data) in units.items():
            engine.units.parked[uid] = data
            if due is None:
                engine.schedule(engine.units.decode(uid, data))
            else:
                engine.wheel.put(uid, due)
        engine.repricer.restore(unpriced)
        if outbox is not None:
            found = Outbox.decode(outbox)
            if found.seq == self.seq and found.epoch == self.epoch:
                return found
        return None


def _chunk(entries: list[bytes]) -> list[bytes]:
    """Entries into records of up to ``CHUNK_BYTES``, each entry behind its length."""
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for entry in entries:
        if current and size + len(entry) > CHUNK_BYTES:
            chunks.append(b"".join(current))
            current, size = [], 0
        current.append(struct.pack("<I", len(entry)) + entry)
        size += len(entry) + 4
    if current:
        chunks.append(b"".join(current))
    return chunks


def _entries(chunk: bytes) -> list[Any]:
    found = []
    position = 0
    while position < len(chunk):
        (length,) = struct.unpack_from("<I", chunk, position)
        position += 4
        found.append(ormsgpack.unpackb(chunk[position:position + length]))
        position += length
    return found
