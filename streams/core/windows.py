"""A partition's window bookings since its last checkpoint, as changes to cells.

The partition never holds window totals: it books changes (``+cost`` here, ``-1``
there) into the cells of every window size, and each checkpoint hands the changes to
the rollup stage, which adds them up across partitions. A change may land in any
window, however old: a window the rollup already declared final receives it as a
correction. Nothing is ever refused for being late.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from schemas.errors import StateError
from streams.core.cells import CELL_FIELDS, CellKey, changed_fields, from_changed_fields


class WindowBook:
    """Cell changes since the last ``take``, for every window size."""

    def __init__(self, sizes_ms: tuple[int, ...]) -> None:
        self.sizes_ms = sizes_ms
        self.changes: dict[CellKey, list[int]] = {}

    def cell(self, key: CellKey) -> list[int]:
        """The change list of one cell (created at zero)."""
        values = self.changes.get(key)
        if values is None:
            values = self.changes[key] = [0] * CELL_FIELDS
        return values

    def cells_at(self, t_ms: int, team: str, workflow: str, series: str) -> list[list[int]]:
        """The change lists of the cells holding ``t_ms``, one per window size."""
        changes = self.changes
        found = []
        for size in self.sizes_ms:
            key = (size, t_ms - t_ms % size, team, workflow, series)
            values = changes.get(key)
            if values is None:
                values = changes[key] = [0] * CELL_FIELDS
            found.append(values)
        return found

    def post(self, t_ms: int, team: str, workflow: str, series: str, field: int,
             amount: int) -> None:
        """Book ``amount`` into ``field`` of the cells holding ``t_ms``."""
        if amount:
            for values in self.cells_at(t_ms, team, workflow, series):
                values[field] += amount

    def take(self) -> dict[CellKey, list[int]]:
        """The changes so far (cells that net to zero left out); the book restarts."""
        changes = {k: v for k, v in self.changes.items() if any(v)}
        self.changes = {}
        return changes

    def __bool__(self) -> bool:
        return bool(self.changes)


#: Outbox encodings: 1 (no "format" key) lists all ``CELL_FIELDS`` values of each cell
#: as decimal strings under "cells"; 2 lists only the fields that changed
#: (``cells.changed_fields``) under "changes": a name a format 1 reader does not know, so
#: a worker not yet upgraded stops on a new outbox (KeyError) instead of adding index
#: and value pairs as if they were fields.
OUTBOX_FORMAT = 2


@dataclass(frozen=True, slots=True)
class Outbox:
    """The window changes of one checkpoint, for the rollup stage."""

    partition: int
    epoch: str
    seq: int
    clock_ms: int
    cells: dict[CellKey, list[int]]

    def encode(self) -> bytes:
        return orjson.dumps({
            "format": OUTBOX_FORMAT, "partition": self.partition, "epoch": self.epoch,
            "seq": self.seq, "clock_ms": self.clock_ms,
            "changes": [[*key, changed_fields(values)] for key, values in self.cells.items()],
        })

    @classmethod
    def decode(cls, data: bytes) -> Outbox:
        """An outbox of either format (a checkpoint written before an upgrade holds a
        format 1 outbox, resent as it is); an unknown format raises ``StateError``."""
        message = orjson.loads(data)
        found = message.get("format", 1)
        if found == OUTBOX_FORMAT:
            cells = {(c[0], c[1], c[2], c[3], c[4]): from_changed_fields(c[5])
                     for c in message["changes"]}
        elif found == 1:
            cells = {(c[0], c[1], c[2], c[3], c[4]): [int(x) for x in c[5]]
                     for c in message["cells"]}
        else:
            raise StateError(f"outbox format {found!r} is not one this version reads "
                             f"(1 or {OUTBOX_FORMAT}): upgrade the worker", format=found)
        return cls(int(message["partition"]), str(message["epoch"]), int(message["seq"]),
                   int(message["clock_ms"]), cells)
