"""The rollup stage: partitions' window changes added up, finality by clocks, late
changes as corrections."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from schemas.errors import StateError
from streams.core import cells as cf
from streams.core.money import ATTO
from streams.core.rollup import WindowRollup
from streams.core.windows import OUTBOX_FORMAT, Outbox

MINUTE = 60_000
START = 1_795_168_800_000


def cell(calls: int = 0, spend: int = 0, accepted: int = 0, decided: int = 0,
         outcomes: int = 0, units: int = 0) -> list[int]:
    values = cf.zero()
    values[cf.CALLS], values[cf.SPEND] = calls, spend * ATTO
    values[cf.ACCEPTED], values[cf.DECIDED] = accepted, decided
    values[cf.OUTCOMES], values[cf.WORK_UNITS] = outcomes, units
    return values


def key(series: str, start: int = START) -> tuple[int, int, str, str, str]:
    return (MINUTE, start, "t", "w", series)


MODEL = cf.model_series("m")


def box(partition: int, seq: int, clock: int, cells: dict, epoch: str = "e") -> Outbox:
    return Outbox(partition, epoch, seq, clock, cells)


def test_outboxes_are_added_up_and_a_resent_one_counts_once() -> None:
    rollup = WindowRollup("USD", idle_seconds=60)
    assert rollup.apply(box(0, 1, START, {key(MODEL): cell(calls=2, spend=1)}), now_ms=0)
    rollup.apply(box(1, 1, START, {key(MODEL): cell(calls=3, spend=2),
                                   key(cf.TOTAL): cell(accepted=1, decided=2, units=1)}), 0)
    rollup.apply(box(0, 2, START, {key(MODEL): cell(calls=4, spend=3)}), now_ms=0)
    # A worker restored after a crash sends its last outbox again: applied once.
    assert not rollup.apply(box(0, 2, START, {key(MODEL): cell(calls=4, spend=3)}), 0)
    rows = {r.scope: r for r in rollup.updates()}
    assert rows["model"].calls == 9
    total = rows["total"]
    assert (total.calls, total.spend, total.accepted_outcomes) == (9, Decimal(6), 1)
    assert total.cost_per_accepted_outcome == Decimal(6)
    assert total.acceptance_rate == Decimal("0.5")  # accepted / decided units
    assert rollup.updates() == []  # nothing changed since
    # A partition whose state started over (new epoch) counts from its seq 1 again.
    assert rollup.apply(box(0, 1, START, {key(MODEL): cell(calls=1)}, epoch="f"), 0)
    assert {r.scope: r.calls for r in rollup.updates()}["model"] == 10


def test_a_window_is_final_once_every_active_partition_passed_it() -> None:
    rollup = WindowRollup("USD", idle_seconds=30, partitions=2)
    rollup.apply(box(0, 1, START + 2 * MINUTE, {key(MODEL): cell(calls=1)}), now_ms=1000)
    rollup.apply(box(1, 1, START + 30_000, {key(MODEL): cell(calls=1)}), now_ms=1000)
    rollup.close(now_ms=2000)
    assert rollup.take_ready() == []  # partition 1 is active and behind
    rollup.apply(box(1, 2, START + MINUTE, {}), now_ms=3000)
    finals = rollup.take_ready()
    assert {r.scope for r in finals} == {"model", "total"}
    assert all(r.final and r.calls == 2 and not r.correction for r in finals)


def test_nothing_is_final_before_every_partition_reported_or_the_idle_time_passed() -> None:
    rollup = WindowRollup("USD", idle_seconds=30, partitions=3)
    rollup.apply(box(0, 1, START + 5 * MINUTE, {key(MODEL): cell(calls=1)}), now_ms=0)
    rollup.apply(box(1, 1, START + 5 * MINUTE, {}), now_ms=1000)
    rollup.close(now_ms=29_000)
    assert rollup.take_ready() == []  # partition 2 has not said anything yet
    rollup.close(now_ms=30_000)
    assert [r.calls for r in rollup.take_ready() if r.scope == "model"] == [1]


def test_an_idle_partition_does_not_hold_windows_open() -> None:
    rollup = WindowRollup("USD", idle_seconds=30, partitions=2)
    rollup.apply(box(0, 1, START + 5 * MINUTE, {key(MODEL): cell(calls=1)}), now_ms=0)
    rollup.apply(box(1, 1, START - MINUTE, {}), now_ms=0)
    rollup.close(now_ms=10_000)
    assert rollup.take_ready() == []
    rollup.apply(box(0, 2, START + 6 * MINUTE, {}), now_ms=40_000)  # 0 moving, 1 idle
    assert [r.calls for r in rollup.take_ready() if r.scope == "model"] == [1]


def test_a_change_for_a_final_window_is_a_correction_never_a_partial_final_row() -> None:
    # Regression: the old rollup forgot a closed window after its retention, then rebuilt
    # it from the one partition that woke up, emitting a *final* row with that
    # partition's figures alone and a revision that went backwards.
    rollup = WindowRollup("USD", idle_seconds=30)
    rollup.apply(box(0, 1, START + 10 * MINUTE, {key(MODEL): cell(calls=4, spend=2)}), 0)
    first = [r for r in rollup.take_ready() if r.scope == "model"]
    assert [(r.calls, r.final, r.correction) for r in first] == [(4, True, "")]
    rollup.apply(box(1, 7, START + 11 * MINUTE, {key(MODEL): cell(calls=1, spend=1)}), 60_000)
    late = rollup.take_ready()
    assert {r.scope for r in late} == {"model", "total"}
    model = next(r for r in late if r.scope == "model")
    assert (model.calls, model.spend, model.final, model.correction) == \
        (1, Decimal(1), True, "p1:e:7")
    assert model.window_id == f"{first[0].window_id}#p1:e:7"
    assert model.cost_per_accepted_outcome is None and model.retry_share is None
    # The window's figures are its row plus its corrections: 5 calls, 3 spent.
    assert first[0].calls + model.calls == 5 and first[0].spend + model.spend == 3
    assert rollup.cells == {}  # nothing of a final window is kept


def test_the_same_messages_give_the_same_rows() -> None:
    def run() -> list:
        rollup = WindowRollup("USD", idle_seconds=30)
        rows = []
        for seq, (p, clock, now) in enumerate([(0, START + 90_000, 0), (1, START, 1000),
                                               (1, START + 200_000, 50_000),
                                               (0, START + 10_000, 60_000)]):
            rollup.apply(box(p, seq + 1, clock, {key(MODEL, START): cell(calls=seq + 1)}),
                         now)
            rows += rollup.take_ready()
        return [r.model_dump() for r in rows]

    assert run() == run()


def test_rollup_state_survives_a_dump_and_load() -> None:
    rollup = WindowRollup("USD", idle_seconds=30)
    rollup.apply(box(0, 1, START, {key(MODEL): cell(calls=2, spend=1)}), now_ms=0)
    rollup.updates()
    copy = WindowRollup("USD", idle_seconds=30)
    copy.load(rollup.dump())
    for target in (copy, rollup):
        assert not target.apply(box(0, 1, START, {key(MODEL): cell(calls=2)}), now_ms=0)
        target.apply(box(1, 1, START + MINUTE, {key(MODEL): cell(calls=1)}), now_ms=0)
    assert [r.model_dump() for r in copy.take_ready()] == \
        [r.model_dump() for r in rollup.take_ready()]


# Amounts a cell can hold: past 64 bits either way (atto-units of large spend), at the
# edges of orjson's integers, negative corrections, and zeros between them.
EDGES = [0, 1, -1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**30 + 7, -(10**25)]


def edge_cells() -> dict:
    wide = cf.zero()
    for index, amount in enumerate(EDGES):
        wide[index * 4] = amount  # spread over the fields, zeros left in between
    return {key(MODEL): wide, key(cf.TOTAL): cf.zero(), key(MODEL, START + MINUTE): cell(calls=3)}


def test_an_outbox_round_trips_every_amount_and_writes_only_changed_fields() -> None:
    outbox = box(2, 7, START, edge_cells())
    body = outbox.encode()
    assert Outbox.decode(body) == outbox
    message = orjson.loads(body)
    assert message["format"] == OUTBOX_FORMAT and "cells" not in message
    # Fields left at zero are not written; amounts past 64 bits go as strings.
    written = {tuple(c[:5]): c[5] for c in message["changes"]}
    assert written[key(cf.TOTAL)] == []
    assert written[key(MODEL, START + MINUTE)] == [cf.CALLS, 3]
    assert str(10**30 + 7) in written[key(MODEL)] and 2**63 - 1 in written[key(MODEL)]


def test_an_outbox_written_before_sparse_cells_still_decodes() -> None:
    # What a checkpoint saved by an earlier version holds, and resends after the upgrade.
    cells = edge_cells()
    dense = orjson.dumps({"partition": 1, "epoch": "e", "seq": 3, "clock_ms": START,
                          "cells": [[*k, [str(x) for x in v]] for k, v in cells.items()]})
    assert Outbox.decode(dense) == box(1, 3, START, cells)


def test_an_outbox_of_an_unknown_format_is_refused_with_its_format() -> None:
    body = orjson.dumps({"format": 9, "partition": 0, "epoch": "e", "seq": 1,
                         "clock_ms": START, "changes": []})
    with pytest.raises(StateError) as raised:
        Outbox.decode(body)
    assert raised.value.fields == {"format": 9}


def test_rollup_state_of_every_amount_and_of_the_dense_format_loads() -> None:
    rollup = WindowRollup("USD", idle_seconds=30)
    rollup.apply(box(0, 1, START, edge_cells()), now_ms=0)
    state = rollup.dump()
    saved = orjson.loads(state)
    assert "cells" not in saved and saved["sparse_cells"]
    copy = WindowRollup("USD", idle_seconds=30)
    copy.load(state)
    assert copy.cells == rollup.cells and copy.mix_cells == rollup.mix_cells
    # State saved by an earlier version: every field of every cell as a string.
    for name in ("cells", "mix", "histograms"):
        saved[name] = [[*c[:5], [str(x) for x in cf.from_changed_fields(c[5])]]
                       for c in saved.pop(f"sparse_{name}")]
    older = WindowRollup("USD", idle_seconds=30)
    older.load(orjson.dumps(saved))
    assert older.cells == rollup.cells and older.histogram_cells == rollup.histogram_cells
