"""The horizon: summaries of units whose last event is older than it are deleted.

Each checkpoint lists the units it summarized under the day their summary expires
(``SummaryIndex``). Once the clock has passed a day, a bounded number of its entries are
checked per tick: a summary still due then is deleted and its events move, in the
ledger, from *summarized* to *forgotten*. One that was revived and evicted again later
is listed under its new day and left alone. Deletions reach the store one checkpoint
after the one that records them (``Checkpointer``), so a crash in between finds every
summary the restored state still counts.
"""

from __future__ import annotations

from collections.abc import Callable

from streams.core.records import Ledger
from streams.core.unit import UnitState
from streams.core.units import SummaryIndex, UnitStore, expiry_chunk_key, summary_key

SWEEP_PER_STEP = 2_000  # summaries checked per tick


class HorizonSweeper:
    def __init__(self, partition: int, units: UnitStore, index: SummaryIndex,
                 ledger: Callable[[], Ledger], forget: Callable[[UnitState], None]) -> None:
        self.partition = partition
        self.units = units
        self.index = index
        self.ledger = ledger  # the engine's current ledger (a restore replaces it)
        self.forget = forget  # what else the engine drops of a forgotten unit
        self.swept: set[str] = set()  # summaries being deleted: not readable any more
        self.deletes: list[bytes] = []  # keys to delete, for the next checkpoint
        self._cursor: tuple[int, int, list[str]] | None = None  # (day, chunk, ids left)

    def sweep(self, clock_ms: int) -> None:
        budget = SWEEP_PER_STEP
        while budget > 0:
            if self._cursor is None:
                days = self.index.due_days(clock_ms)
                if not days:
                    return
                self._cursor = (days[0], 0, [])
            day, chunk, ids = self._cursor
            if not ids:
                if chunk >= self.index.chunks.get(day, 0):
                    del self.index.chunks[day]
                    self._cursor = None
                    continue
                key = expiry_chunk_key(self.partition, day, chunk)
                record = self.units.reader.get(key)
                self.deletes.append(key)
                self._cursor = (day, chunk + 1, record.decode().split("\n") if record else [])
                continue
            uid = ids.pop()
            budget -= 1
            if uid in self.units or uid in self.units.evicted or uid in self.swept:
                continue
            data = self.units.summary(uid)
            if data is None or not self.index.expired(data, clock_ms):
                continue
            self._forget(self.units.decode(uid, data))

    def _forget(self, unit: UnitState) -> None:
        ledger = self.ledger()
        if unit.outcomes:
            ledger.summarized_attributed -= unit.events
            ledger.forgotten_attributed += unit.events
        else:
            ledger.summarized_unattributed -= unit.events
            ledger.forgotten_unattributed += unit.events
        self.forget(unit)
        self.swept.add(unit.unit_id)
        self.deletes.append(summary_key(self.partition, unit.unit_id))
