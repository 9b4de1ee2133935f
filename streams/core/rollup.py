"""Global cost-per-outcome windows from the partitions' window changes.

Each partition's checkpoint sends its *outbox*: the changes it booked into window cells
since its previous checkpoint, numbered ``(epoch, seq)``. The rollup applies each
outbox exactly once (a resent one is recognised by its number), adds the changes up
into the totals of open windows, and declares a window final once the clock of every
*active* partition has passed its end. A partition whose clock has not moved for
``idle_seconds`` is idle and does not hold windows open (else one quiet partition would
stall every window).

A change for a window that is already final becomes a **correction row**: a row of its
own, id ``<window>#p<partition>:<epoch>:<seq>``, carrying just that change. A window's
figures are its final row plus its corrections; every view adds them up. So no change
is ever refused, and the rollup keeps nothing of a window once it is final.

Determinism: "now" is the time stamp of the message being applied (its Kafka
CreateTime), never the wall clock, and windows close as messages are applied, so the
same sequence of messages gives the same final rows and corrections, which is what
makes a replay of this stage harmless.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from schemas.outputs import ALL_MODELS, CostPerOutcomeWindow
from streams.core import cells as cf
from streams.core.cells import CellKey
from streams.core.money import from_atto, per, ratio
from streams.core.windows import Outbox

RowKey = CellKey
MIX_KEEP_MS = 2 * 3_600_000  # model-mix cells kept this long after their hour ends
HISTOGRAM_KEEP_MS = 8 * cf.DAY_MS  # cost histograms: a week of days, and today


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


@dataclass(frozen=True, slots=True)
class CostBucket:
    """Decided units of one workflow whose deciding outcome fell on one UTC day, in one
    bucket of fully loaded cost (``cells.bucket_bounds``): how many, how many accepted,
    and what they cost together. Exact: each unit is in one bucket, moved when its cost
    or its decision changes."""

    day: datetime
    team: str
    workflow: str
    bucket: int
    units: int
    accepted: int
    cost: Decimal


def _micros(value: int) -> Decimal:
    return Decimal(value).scaleb(-6) if value else Decimal(0)


def window_id(key: RowKey, correction: str = "") -> str:
    size, start, team, workflow, series = key
    scope, name = cf.scope_of(series)
    if scope == "dimension":
        name = "=".join(cf.dimension_of(series))
    base = f"{size // 1000}:{start}:{team}:{workflow}:{scope}:{name}"
    return f"{base}#{correction}" if correction else base


def window_row(key: RowKey, v: list[int], revision: int, final: bool, currency: str,
               correction: str = "") -> CostPerOutcomeWindow:
    """A window row (or a correction row) from its additive figures."""
    size, start, team, workflow, series = key
    scope, name = cf.scope_of(series)
    assert scope is not None
    loaded = v[cf.SPEND] + v[cf.HUMAN] + v[cf.OTHER_COST] + v[cf.SHARED_COST]
    resolved = v[cf.LINKED] + v[cf.UNLINKED]
    ratios = not correction
    is_total = scope in ("total", "dimension") and ratios
    dimension, dimension_value = cf.dimension_of(series) if scope == "dimension" else ("", "")
    return CostPerOutcomeWindow(
        window_id=window_id(key, correction),
        window_start=_dt(start),
        window_end=_dt(start + size),
        window_seconds=size // 1000,
        team=team,
        workflow=workflow,
        # Dimension and unit rows name no model: a query picking totals the old way
        # (model '*', no agent) never counts them twice.
        model=name if scope == "model" else "" if scope in ("dimension", "unit")
        else ALL_MODELS,
        agent=name if scope in ("agent", "unit") else "",
        scope=scope,
        dimension=dimension,
        dimension_value=dimension_value,
        correction=correction,
        revision=revision,
        final=final,
        currency=currency,
        calls=v[cf.CALLS],
        retries=v[cf.RETRIES],
        failed_calls=v[cf.FAILED],
        input_tokens=v[cf.INPUT],
        output_tokens=v[cf.OUTPUT],
        cached_input_tokens=v[cf.CACHED],
        cache_write_tokens=v[cf.CACHE_WRITE],
        latency_ms_sum=v[cf.LATENCY_MS],
        latency_calls=v[cf.LATENCY_CALLS],
        reasoning_tokens=v[cf.REASONING],
        overhead_tokens=v[cf.OVERHEAD],
        system_prompt_tokens=v[cf.SYSTEM],
        spend=from_atto(v[cf.SPEND]),
        unpriced_calls=v[cf.UNPRICED],
        work_units=v[cf.WORK_UNITS],
        outcomes=v[cf.OUTCOMES],
        decided_units=v[cf.DECIDED],
        accepted_outcomes=v[cf.ACCEPTED],
        value=from_atto(v[cf.VALUE]),
        human_cost=from_atto(v[cf.HUMAN]),
        other_cost=from_atto(v[cf.OTHER_COST]),
        shared_cost=from_atto(v[cf.SHARED_COST]),
        cost_items=v[cf.COST_ITEMS],
        fully_loaded_cost=from_atto(loaded),
        linked_spend=from_atto(v[cf.LINKED]),
        unlinked_spend=from_atto(v[cf.UNLINKED]),
        attributed_spend=from_atto(v[cf.ATTRIBUTED_AT_CALL]),
        unattributed_spend=from_atto(v[cf.UNATTRIBUTED_AT_CALL]),
        reviewed_outcomes=v[cf.REVIEWED],
        review_minutes=_micros(v[cf.REVIEW_MINUTES]),
        verdicts=v[cf.VERDICTS],
        units_without_outcome=v[cf.UNITS_WITHOUT_OUTCOME],
        spend_without_outcome=from_atto(v[cf.SPEND_WITHOUT_OUTCOME]),
        quality_failed_units=v[cf.QUALITY_FAILED],
        latency_failed_units=v[cf.LATENCY_FAILED],
        integrity_failed_units=v[cf.INTEGRITY_FAILED],
        accepted_value=from_atto(v[cf.ACCEPTED_VALUE]),
        value_at_risk=from_atto(v[cf.AT_RISK]),
        strategic_units=v[cf.STRATEGIC_UNITS],
        strategic_score_sum=_micros(v[cf.STRATEGIC_SCORE]),
        strategic_confidence_sum=_micros(v[cf.STRATEGIC_CONFIDENCE]),
        strategic_confident_units=v[cf.STRATEGIC_CONFIDENT],
        evidence_confidence_sum=_micros(v[cf.EVIDENCE_CONFIDENCE]),
        evidence_confident_units=v[cf.EVIDENCE_CONFIDENT],
        cost_per_accepted_outcome=per(loaded, v[cf.ACCEPTED]) if is_total else None,
        acceptance_rate=ratio(v[cf.ACCEPTED], v[cf.DECIDED]) if is_total else None,
        yield_ratio=ratio(v[cf.ACCEPTED_VALUE], loaded) if is_total else None,
        error_adjusted_yield=ratio(v[cf.ACCEPTED_VALUE] - v[cf.AT_RISK], loaded)
        if is_total else None,
        integrity_failure_rate=ratio(v[cf.INTEGRITY_FAILED], v[cf.DECIDED]) if is_total
        else None,
        attribution_coverage=ratio(v[cf.LINKED], resolved) if ratios and resolved > 0
        else None,
        retry_share=ratio(v[cf.RETRIES], v[cf.CALLS]) if ratios else None,
        context_share=ratio(v[cf.OVERHEAD], v[cf.INPUT]) if ratios else None,
    )


def total_key(key: RowKey) -> RowKey:
    return (key[0], key[1], key[2], key[3], cf.TOTAL)


def totals_of(cells: dict[CellKey, list[int]]) -> dict[RowKey, list[int]]:
    """Row figures of a set of cells: model and agent rows as they are, total rows with
    their own cell plus the spend side of their model rows."""
    rows: dict[RowKey, list[int]] = {}
    for key, values in cells.items():
        scope, _ = cf.scope_of(key[4])
        if scope is None:
            continue
        row = rows.setdefault(key, cf.zero())
        cf.add_into(row, values)
        if scope == "model":
            total = rows.setdefault(total_key(key), cf.zero())
            for field in cf.SPEND_SIDE:
                total[field] += values[field]
    return rows


class WindowRollup:
    """Adds partition outboxes into global window rows and decides when rows are final."""

    def __init__(self, currency: str, idle_seconds: float = 30.0, partitions: int = 1,
                 dimension_cap: int = 500) -> None:
        self.currency = currency
        # The values of each dimension with rows of their own, in the order they came
        # (sticky: a value once admitted keeps its rows, corrections included); values
        # beyond the cap go to __other__, so a dimension's rows always add up.
        self.dimension_cap = dimension_cap
        self.dimension_values: dict[str, set[str]] = {}
        self.idle_ms = int(idle_seconds * 1000)
        self.partitions = partitions
        self.first_seen_ms: int | None = None  # time of the first message applied
        self.cells: dict[CellKey, list[int]] = {}  # open windows only
        self.windows: dict[tuple[int, int], set[CellKey]] = {}
        self.heap: list[tuple[int, int, int]] = []  # (end, size, start) of open windows
        self.finalized_ms = 0  # windows ending at or before this are final: monotonic
        self.clocks: dict[int, int] = {}
        self.clock_moved_at: dict[int, int] = {}  # message time the clock last advanced
        self.applied: dict[int, tuple[str, int]] = {}  # partition -> (epoch, seq)
        self.revisions: dict[RowKey, int] = {}
        self.dirty: set[RowKey] = set()
        self.mix_cells: dict[CellKey, list[int]] = {}
        self.histogram_cells: dict[CellKey, list[int]] = {}
        self.ready: list[CostPerOutcomeWindow] = []  # final and correction rows to emit
        self.duplicates = 0

    # -- input ------------------------------------------------------------------------
    def apply(self, outbox: Outbox, now_ms: int) -> bool:
        """Apply one partition's outbox; False if it was applied already."""
        p = outbox.partition
        if self.first_seen_ms is None:
            self.first_seen_ms = now_ms
        applied = self.applied.get(p)
        if applied is not None and applied[0] == outbox.epoch and outbox.seq <= applied[1]:
            self.duplicates += 1
            return False
        self.applied[p] = (outbox.epoch, outbox.seq)
        if outbox.clock_ms > self.clocks.get(p, -1):
            self.clocks[p] = outbox.clock_ms
            self.clock_moved_at[p] = now_ms
        late: dict[CellKey, list[int]] = {}
        for key, values in outbox.cells.items():
            size, start, _, _, series = key
            if series.startswith(cf.MIX):
                cf.add_into(self.mix_cells.setdefault(key, cf.zero()), values)
                continue
            if series.startswith(cf.HISTOGRAM):
                cf.add_into(self.histogram_cells.setdefault(key, cf.zero()), values)
                continue
            if series.startswith(cf.DIMENSION):
                key = self._capped(key)  # several values may share __other__: add up
            if start + size <= self.finalized_ms:
                cf.add_into(late.setdefault(key, cf.zero()), values)
            else:
                self._add(key, values)
        if late:
            correction = f"p{p}:{outbox.epoch}:{outbox.seq}"
            for key, values in sorted(totals_of(late).items()):
                self.ready.append(window_row(key, values, 1, True, self.currency, correction))
        self.close(now_ms)
        return True

    def _capped(self, key: CellKey) -> CellKey:
        dimension, value = cf.dimension_of(key[4])
        admitted = self.dimension_values.setdefault(dimension, set())
        if value in admitted:
            return key
        if len(admitted) < self.dimension_cap:
            admitted.add(value)
            return key
        return (key[0], key[1], key[2], key[3], cf.dimension_series(dimension, cf.OTHER_VALUE))

    def _add(self, key: CellKey, values: list[int]) -> None:
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = cf.zero()
            size, start = key[0], key[1]
            members = self.windows.get((size, start))
            if members is None:
                members = self.windows[(size, start)] = set()
                heapq.heappush(self.heap, (start + size, size, start))
            members.add(key)
        cf.add_into(cell, values)
        self.dirty.add(key)
        self.dirty.add(total_key(key))

    # -- closing ------------------------------------------------------------------------
    def low_watermark(self, now_ms: int) -> int | None:
        """The smallest clock among partitions that moved within the idle timeout. Until
        every partition has reported once, or the idle timeout has passed since the first
        one did, nothing is final: the others may be just starting."""
        if len(self.clocks) < self.partitions and (
                self.first_seen_ms is None or now_ms - self.first_seen_ms < self.idle_ms):
            return None
        active = [c for p, c in self.clocks.items()
                  if now_ms - self.clock_moved_at.get(p, 0) <= self.idle_ms]
        if active:
            return min(active)
        return max(self.clocks.values()) if self.clocks else None

    def close(self, now_ms: int) -> None:
        """Finalise the windows every active partition has passed (``now_ms`` is the
        time of the message or tick being applied)."""
        watermark = self.low_watermark(now_ms)
        if watermark is not None and watermark > self.finalized_ms:
            self.finalized_ms = watermark
        while self.heap and self.heap[0][0] <= self.finalized_ms:
            _, size, start = heapq.heappop(self.heap)
            members = self.windows.pop((size, start))
            cells = {key: self.cells.pop(key) for key in members}
            for key, values in sorted(totals_of(cells).items()):
                revision = self.revisions.pop(key, 0) + 1
                self.ready.append(window_row(key, values, revision, True, self.currency))
                self.dirty.discard(key)
        newest = max(self.clocks.values(), default=0)
        for key in [k for k in self.mix_cells if k[1] + k[0] + MIX_KEEP_MS <= newest]:
            del self.mix_cells[key]
        for key in [k for k in self.histogram_cells
                    if k[1] + k[0] + HISTOGRAM_KEEP_MS <= newest]:
            del self.histogram_cells[key]

    def _running_revision(self, key: RowKey) -> int:
        revision = self.revisions[key] = self.revisions.get(key, 0) + 1
        return revision

    # -- output -------------------------------------------------------------------------
    def has_pending(self, now_ms: int) -> bool:
        """Rows to emit, or a window that can close now."""
        if self.ready or self.dirty:
            return True
        watermark = self.low_watermark(now_ms)
        return bool(self.heap) and watermark is not None and self.heap[0][0] <= watermark

    def updates(self) -> list[CostPerOutcomeWindow]:
        """Running rows of the open rows changed since the last call."""
        rows: dict[RowKey, list[int]] = {}
        for window in {(k[0], k[1]) for k in self.dirty}:
            members = {k: self.cells[k] for k in self.windows.get(window, ())}
            for key, values in totals_of(members).items():
                if key in self.dirty:
                    rows[key] = values
        self.dirty = set()
        return [window_row(key, values, self._running_revision(key), False, self.currency)
                for key, values in sorted(rows.items())]

    def take_ready(self) -> list[CostPerOutcomeWindow]:
        """Final rows and corrections decided since the last call, in order."""
        ready, self.ready = self.ready, []
        return ready

    def mix(self) -> list[ModelMix]:
        """Model-mix figures of the recent hours, for the mismatch detector."""
        found = []
        for key, v in self.mix_cells.items():
            _size, start, task_type, _, series = key
            found.append(ModelMix(_dt(start), task_type, series[len(cf.MIX):], v[cf.DECIDED],
                                  v[cf.ACCEPTED], from_atto(v[cf.SPEND])))
        return sorted(found, key=lambda m: (m.window_start, m.task_type, m.model))

    def histograms(self) -> list[CostBucket]:
        """Cost histograms of the recent days, for the spend-plateau detector."""
        found = []
        for key, v in self.histogram_cells.items():
            _size, start, team, workflow, series = key
            if v[cf.DECIDED]:
                found.append(CostBucket(_dt(start), team, workflow,
                                        int(series[len(cf.HISTOGRAM):]), v[cf.DECIDED],
                                        v[cf.ACCEPTED], from_atto(v[cf.SPEND])))
        return sorted(found, key=lambda b: (b.day, b.team, b.workflow, b.bucket))

    # -- persistence --------------------------------------------------------------------
    def dump(self) -> bytes:
        """The state (call after ``take_ready``: rows not taken are not saved)."""
        return orjson.dumps({
            # Sparse cells (cells.changed_fields), under names the dense format did not
            # use: a version that predates them fails to load (KeyError) rather than
            # read index and value pairs as fields.
            "sparse_cells": [[*k, cf.changed_fields(v)] for k, v in self.cells.items()],
            "sparse_mix": [[*k, cf.changed_fields(v)] for k, v in self.mix_cells.items()],
            "sparse_histograms": [[*k, cf.changed_fields(v)]
                                  for k, v in self.histogram_cells.items()],
            "finalized_ms": self.finalized_ms,
            "first_seen_ms": self.first_seen_ms,
            "clocks": {str(p): c for p, c in self.clocks.items()},
            "moved_at": {str(p): c for p, c in self.clock_moved_at.items()},
            "applied": {str(p): list(a) for p, a in self.applied.items()},
            "revisions": [[*k, r] for k, r in self.revisions.items()],
            "dimension_values": {d: sorted(v) for d, v in self.dimension_values.items()},
        })

    def load(self, data: bytes) -> None:
        decoded: dict[str, Any] = orjson.loads(data)
        if "sparse_cells" in decoded:
            for item in decoded["sparse_cells"]:
                self._add((item[0], item[1], item[2], item[3], item[4]),
                          cf.from_changed_fields(item[5]))
            for item in decoded["sparse_mix"]:
                self.mix_cells[(item[0], item[1], item[2], item[3], item[4])] = \
                    cf.from_changed_fields(item[5])
            for item in decoded["sparse_histograms"]:
                self.histogram_cells[(item[0], item[1], item[2], item[3], item[4])] = \
                    cf.from_changed_fields(item[5])
        else:  # saved before sparse cells: every field as a decimal string
            for item in decoded["cells"]:
                self._add((item[0], item[1], item[2], item[3], item[4]),
                          [int(x) for x in item[5]])
            for item in decoded["mix"]:
                self.mix_cells[(item[0], item[1], item[2], item[3], item[4])] = \
                    [int(x) for x in item[5]]
            for item in decoded.get("histograms", []):
                self.histogram_cells[(item[0], item[1], item[2], item[3], item[4])] = \
                    [int(x) for x in item[5]]
        self.finalized_ms = decoded["finalized_ms"]
        self.first_seen_ms = decoded["first_seen_ms"]
        self.clocks = {int(p): c for p, c in decoded["clocks"].items()}
        self.clock_moved_at = {int(p): c for p, c in decoded["moved_at"].items()}
        self.applied = {int(p): (a[0], int(a[1])) for p, a in decoded["applied"].items()}
        self.revisions = {(i[0], i[1], i[2], i[3], i[4]): i[5] for i in decoded["revisions"]}
        self.dimension_values = {d: set(v) for d, v in
                                 decoded.get("dimension_values", {}).items()}
        self.dirty = set()
