"""Global cost-per-outcome windows from the partitions' window cells.

Each partition's engine books its own events into window cells and sends the cells
it changed, with its event-time clock, at every checkpoint. The rollup keeps the
latest cell of every partition (a newer message replaces, so a replay changes
nothing), sums them into global rows, and declares a window final once the clock of
every *active* partition has passed its end. A partition whose clock has not moved for
``idle_seconds`` of wall time is idle and does not hold windows open (otherwise one
quiet partition would stall every window); if it wakes up with events for a window
already final, the window's cells are still kept (for ``closed_retention_seconds`` of
event time) and a corrected final row with a higher revision follows.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from schemas.outputs import ALL_MODELS, CostPerOutcomeWindow
from streams.core import state as cf
from streams.core.money import from_atto, per, ratio

CellKey = tuple[int, int, str, str, str]
RowKey = CellKey


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class ModelMix:
    """Units of one task type finalised with one primary model in an hour."""

    window_start: datetime
    task_type: str
    model: str
    units: int
    accepted: int
    cost: Decimal


def is_detector_series(model: str) -> bool:
    """Series that are not model rows: agent spend and the model mix."""
    return model.startswith(cf.AGENT_SERIES) or model.startswith(cf.MIX_SERIES)


def window_row(key: RowKey, v: list[int], revision: int, final: bool,
               currency: str) -> CostPerOutcomeWindow:
    """A window row from its additive figures."""
    size, start, team, workflow, series = key
    agent = series[len(cf.AGENT_SERIES):] if series.startswith(cf.AGENT_SERIES) else ""
    model = ALL_MODELS if agent else series
    loaded = v[cf.SPEND] + v[cf.HUMAN]
    resolved = v[cf.LINKED] + v[cf.UNLINKED]
    is_total = model == ALL_MODELS and not agent
    return CostPerOutcomeWindow(
        window_id=f"{size // 1000}:{start}:{team}:{workflow}:{model}:{agent}",
        window_start=_dt(start),
        window_end=_dt(start + size),
        window_seconds=size // 1000,
        team=team,
        workflow=workflow,
        model=model,
        agent=agent,
        revision=revision,
        final=final,
        currency=currency,
        calls=v[cf.CALLS],
        retries=v[cf.RETRIES],
        failed_calls=v[cf.FAILED],
        input_tokens=v[cf.INPUT],
        output_tokens=v[cf.OUTPUT],
        cached_input_tokens=v[cf.CACHED],
        reasoning_tokens=v[cf.REASONING],
        overhead_tokens=v[cf.OVERHEAD],
        system_prompt_tokens=v[cf.SYSTEM],
        spend=from_atto(v[cf.SPEND]),
        unpriced_calls=v[cf.UNPRICED],
        work_units=v[cf.WORK_UNITS],
        outcomes=v[cf.OUTCOMES],
        accepted_outcomes=v[cf.ACCEPTED],
        value=from_atto(v[cf.VALUE]),
        human_cost=from_atto(v[cf.HUMAN]),
        fully_loaded_cost=from_atto(loaded),
        linked_spend=from_atto(v[cf.LINKED]),
        unlinked_spend=from_atto(v[cf.UNLINKED]),
        cost_per_accepted_outcome=per(loaded, v[cf.ACCEPTED]) if is_total else None,
        acceptance_rate=ratio(v[cf.ACCEPTED], v[cf.OUTCOMES]) if is_total else None,
        yield_ratio=ratio(v[cf.VALUE], loaded) if is_total else None,
        attribution_coverage=ratio(v[cf.LINKED], resolved) if resolved > 0 else None,
        retry_share=ratio(v[cf.RETRIES], v[cf.CALLS]),
        context_share=ratio(v[cf.OVERHEAD], v[cf.INPUT]),
    )


def encode_partials(partition: int, clock_ms: int,
                    cells: list[tuple[CellKey, int, list[int]]]) -> bytes:
    """The message a partition sends to the rollup at each checkpoint."""
    return orjson.dumps({
        "partition": partition,
        "clock_ms": clock_ms,
        "cells": [[*key, revision, [str(x) for x in values]] for key, revision, values in cells],
    })


def decode_partials(data: bytes) -> tuple[int, int, list[tuple[CellKey, list[int]]]]:
    message = orjson.loads(data)
    cells = [((c[0], c[1], c[2], c[3], c[4]), [int(x) for x in c[6]])
             for c in message["cells"]]
    return int(message["partition"]), int(message["clock_ms"]), cells


class WindowRollup:
    """Sums partition cells into global window rows and decides when rows are final."""

    def __init__(self, currency: str, idle_seconds: float = 30.0,
                 closed_retention_seconds: int = 7200) -> None:
        self.currency = currency
        self.idle_ms = int(idle_seconds * 1000)
        self.closed_retention_ms = closed_retention_seconds * 1000
        self.closed: dict[tuple[int, int], int] = {}  # closed window -> its end
        self.corrected: set[RowKey] = set()
        self.cells: dict[CellKey, dict[int, list[int]]] = {}
        self.groups: dict[tuple[int, int, str, str], set[str]] = {}
        self.clocks: dict[int, int] = {}
        self.clock_moved_at: dict[int, int] = {}  # wall ms when the clock last advanced
        self.revisions: dict[RowKey, int] = {}
        self.finalized: dict[tuple[int, int], int] = {}  # window -> wall ms it went final
        self.heap: list[tuple[int, int, int]] = []
        self.open: set[tuple[int, int]] = set()
        self.dirty: set[RowKey] = set()

    def apply(self, partition: int, clock_ms: int, cells: list[tuple[CellKey, list[int]]],
              now_ms: int) -> None:
        if clock_ms > self.clocks.get(partition, -1):
            self.clocks[partition] = clock_ms
            self.clock_moved_at[partition] = now_ms
        for key, values in cells:
            per_partition = self.cells.get(key)
            size, start, team, workflow, model = key
            if per_partition is None:
                per_partition = self.cells[key] = {}
                self.groups.setdefault((size, start, team, workflow), set()).add(model)
                if (size, start) not in self.open and (size, start) not in self.closed:
                    self.open.add((size, start))
                    heapq.heappush(self.heap, (start + size, size, start))
            per_partition[partition] = values
            changed = self.corrected if (size, start) in self.closed else self.dirty
            changed.add(key)
            changed.add((*key[:4], ALL_MODELS))

    def low_watermark(self, now_ms: int) -> int | None:
        """The smallest clock among partitions that moved within the idle timeout."""
        active = [c for p, c in self.clocks.items()
                  if now_ms - self.clock_moved_at.get(p, 0) <= self.idle_ms]
        if active:
            return min(active)
        return max(self.clocks.values()) if self.clocks else None

    def has_pending(self, now_ms: int) -> bool:
        """Rows to emit, corrections, or a window that can close now."""
        if self.corrected or any(not k[4].startswith(cf.MIX_SERIES) for k in self.dirty):
            return True
        watermark = self.low_watermark(now_ms)
        return bool(self.heap) and watermark is not None and self.heap[0][0] <= watermark

    def updates(self) -> list[CostPerOutcomeWindow]:
        """Running rows of every row changed since the last call."""
        rows = [self._row(key, final=False) for key in sorted(self.dirty)
                if not key[4].startswith(cf.MIX_SERIES)]
        self.dirty = {k for k in self.dirty if k[4].startswith(cf.MIX_SERIES)}
        return [r for r in rows if r is not None]

    def mix(self) -> list[ModelMix]:
        """Model-mix figures of the open and recently closed hours, for the detectors."""
        found = []
        for key, parts in self.cells.items():
            _size, start, task_type, _, series = key
            if not series.startswith(cf.MIX_SERIES):
                continue
            units = sum(v[cf.OUTCOMES] for v in parts.values())
            accepted = sum(v[cf.ACCEPTED] for v in parts.values())
            cost = sum(v[cf.SPEND] for v in parts.values())
            found.append(ModelMix(_dt(start), task_type, series[len(cf.MIX_SERIES):], units,
                                  accepted, from_atto(cost)))
        self.dirty = {k for k in self.dirty if not k[4].startswith(cf.MIX_SERIES)}
        return sorted(found, key=lambda m: (m.window_start, m.task_type, m.model))

    def close(self, now_ms: int) -> list[CostPerOutcomeWindow]:
        """Final rows of the windows every active partition has passed; then forget them."""
        watermark = self.low_watermark(now_ms)
        finals: list[CostPerOutcomeWindow] = []
        for key in sorted(self.corrected):
            if key[4].startswith(cf.MIX_SERIES):
                continue
            row = self._row(key, final=True)
            if row is not None:
                finals.append(row)
        self.corrected.clear()
        if watermark is None:
            return finals
        while self.heap and self.heap[0][0] <= watermark:
            end, size, start = heapq.heappop(self.heap)
            self.open.discard((size, start))
            self.closed[(size, start)] = end
            for group in sorted(g for g in self.groups if g[0] == size and g[1] == start):
                keys = [(*group, m) for m in sorted(self.groups[group] | {ALL_MODELS})
                        if not m.startswith(cf.MIX_SERIES)]
                finals.extend(r for k in keys if (r := self._row(k, final=True)) is not None)
                for key in keys:
                    self.dirty.discard(key)
        self._forget_closed()
        return finals

    def _forget_closed(self) -> None:
        newest = max(self.clocks.values(), default=0)
        expired = [w for w, end in self.closed.items()
                   if end + self.closed_retention_ms <= newest]
        for size, start in expired:
            del self.closed[(size, start)]
            for group in [g for g in self.groups if g[0] == size and g[1] == start]:
                for model in self.groups.pop(group) | {ALL_MODELS}:
                    self.cells.pop((*group, model), None)
                    self.revisions.pop((*group, model), None)

    def _row(self, key: RowKey, final: bool) -> CostPerOutcomeWindow | None:
        size, start, team, workflow, model = key
        values = [0] * cf.CELL_FIELDS
        if model == ALL_MODELS:
            found = False
            for m in self.groups.get((size, start, team, workflow), ()):
                if is_detector_series(m):
                    continue
                for cell in self.cells.get((size, start, team, workflow, m), {}).values():
                    found = True
                    for i, x in enumerate(cell):
                        # Distinct work units are counted on the "*" cell itself.
                        if i != cf.WORK_UNITS or m == ALL_MODELS:
                            values[i] += x
            if not found:
                return None
        else:
            parts = self.cells.get(key)
            if not parts:
                return None
            for cell in parts.values():
                for i, x in enumerate(cell):
                    values[i] += x
        revision = self.revisions.get(key, 0) + 1
        self.revisions[key] = revision
        return window_row(key, values, revision, final, self.currency)

    # -- persistence --------------------------------------------------------------------
    def dump(self) -> bytes:
        return orjson.dumps({
            "cells": [[*k, {str(p): [str(x) for x in v] for p, v in parts.items()}]
                      for k, parts in self.cells.items()],
            "clocks": {str(p): c for p, c in self.clocks.items()},
            "closed": [[size, start, end] for (size, start), end in self.closed.items()],
            "revisions": [[*k, r] for k, r in self.revisions.items()],
        })

    def load(self, data: bytes, now_ms: int) -> None:
        decoded: dict[str, Any] = orjson.loads(data)
        for p, clock in decoded["clocks"].items():
            self.clocks[int(p)] = clock
            self.clock_moved_at[int(p)] = now_ms
        for size, start, end in decoded.get("closed", []):
            self.closed[(size, start)] = end
        for item in decoded["cells"]:
            key = (item[0], item[1], item[2], item[3], item[4])
            for p, values in item[5].items():
                self.apply(int(p), self.clocks.get(int(p), 0), [(key, [int(x) for x in values])],
                           now_ms)
        for item in decoded["revisions"]:
            self.revisions[(item[0], item[1], item[2], item[3], item[4])] = item[5]
        self.dirty.clear()
        self.corrected.clear()
