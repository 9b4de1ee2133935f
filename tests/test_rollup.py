"""The rollup stage: partitions' cells summed into global windows, finality by clocks."""

from __future__ import annotations

from decimal import Decimal

from schemas.outputs import ALL_MODELS
from streams.core import state as cf
from streams.core.money import ATTO
from streams.core.rollup import WindowRollup

MINUTE = 60_000
START = 1_795_168_800_000


def cell(calls: int = 0, spend: int = 0, accepted: int = 0, outcomes: int = 0,
         units: int = 0) -> list[int]:
    values = [0] * cf.CELL_FIELDS
    values[cf.CALLS], values[cf.SPEND] = calls, spend * ATTO
    values[cf.ACCEPTED], values[cf.OUTCOMES], values[cf.WORK_UNITS] = accepted, outcomes, units
    return values


def key(model: str, start: int = START) -> tuple[int, int, str, str, str]:
    return (MINUTE, start, "t", "w", model)


def test_partitions_are_summed_and_a_newer_cell_replaces_the_older() -> None:
    rollup = WindowRollup("USD", idle_seconds=60)
    rollup.apply(0, START, [(key("m"), cell(calls=2, spend=1))], now_ms=0)
    rollup.apply(1, START, [(key("m"), cell(calls=3, spend=2)),
                            (key(ALL_MODELS), cell(accepted=1, outcomes=2, units=1))], now_ms=0)
    rollup.apply(0, START, [(key("m"), cell(calls=4, spend=3))], now_ms=0)  # replaces 2/1
    rows = {(r.model, r.final): r for r in rollup.updates()}
    assert rows[("m", False)].calls == 7
    total = rows[(ALL_MODELS, False)]
    assert (total.calls, total.spend, total.accepted_outcomes) == (7, Decimal(5), 1)
    assert total.cost_per_accepted_outcome == Decimal(5)
    assert total.acceptance_rate == Decimal("0.5")
    assert rollup.updates() == []  # nothing changed since


def test_a_window_is_final_once_every_active_partition_passed_it() -> None:
    rollup = WindowRollup("USD", idle_seconds=30)
    rollup.apply(0, START + 2 * MINUTE, [(key("m"), cell(calls=1))], now_ms=1000)
    rollup.apply(1, START + 30_000, [(key("m"), cell(calls=1))], now_ms=1000)
    assert rollup.close(now_ms=2000) == []  # partition 1 is active and behind
    rollup.apply(1, START + MINUTE, [], now_ms=3000)
    finals = rollup.close(now_ms=3000)
    assert {r.model for r in finals} == {"m", ALL_MODELS}
    assert all(r.final and r.calls == 2 for r in finals)


def test_an_idle_partition_does_not_hold_windows_open() -> None:
    rollup = WindowRollup("USD", idle_seconds=30)
    rollup.apply(0, START + 5 * MINUTE, [(key("m"), cell(calls=1))], now_ms=0)
    rollup.apply(1, START - MINUTE, [], now_ms=0)
    assert rollup.close(now_ms=10_000) == []
    rollup.apply(0, START + 6 * MINUTE, [], now_ms=40_000)  # 0 still moving, 1 idle
    assert [r.calls for r in rollup.close(now_ms=40_000) if r.model == "m"] == [1]


def test_late_cells_for_a_final_window_produce_a_corrected_final_row() -> None:
    rollup = WindowRollup("USD", idle_seconds=30)
    rollup.apply(0, START + 2 * MINUTE, [(key("m"), cell(calls=1))], now_ms=0)
    first = [r for r in rollup.close(now_ms=0) if r.model == "m"]
    rollup.apply(1, START + 2 * MINUTE, [(key("m"), cell(calls=5))], now_ms=1)
    second = [r for r in rollup.close(now_ms=1) if r.model == "m"]
    assert [r.calls for r in first] == [1] and [r.calls for r in second] == [6]
    assert second[0].final and second[0].revision > first[0].revision


def test_rollup_state_survives_a_dump_and_load() -> None:
    rollup = WindowRollup("USD", idle_seconds=30)
    rollup.apply(0, START, [(key("m"), cell(calls=2, spend=1))], now_ms=0)
    rollup.updates()
    copy = WindowRollup("USD", idle_seconds=30)
    copy.load(rollup.dump(), now_ms=0)
    copy.apply(1, START + MINUTE, [(key("m"), cell(calls=1))], now_ms=0)
    rollup.apply(1, START + MINUTE, [(key("m"), cell(calls=1))], now_ms=0)
    assert [r.model_dump() for r in copy.close(now_ms=0)] == \
        [r.model_dump() for r in rollup.close(now_ms=0)]
