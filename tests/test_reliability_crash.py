"""SIGKILL a worker mid-stream, several times: nothing is lost, nothing counted twice."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import WorkerHandle
from tests.stream_truth import publish_in_background, stream, truth

pytestmark = [pytest.mark.broker, pytest.mark.clickhouse, pytest.mark.slow]
DB = "tokenyield"


def test_kill_9_several_times_mid_stream_changes_nothing(make_worker: Any, prefix: str) -> None:
    events = stream(units=3000, seed=11, span_seconds=120)
    expected = truth(events)
    worker: WorkerHandle = make_worker(TOKENYIELD_ALLOWED_LATENESS_SECONDS="900",
                                       TOKENYIELD_RETENTION_SECONDS="3600").start()
    thread, state = publish_in_background(worker.env["TOKENYIELD_KAFKA_BOOTSTRAP"], prefix,
                                          events, rate=1500)
    kills = 0
    for fraction in (0.2, 0.45, 0.7):
        while state["sent"] < fraction * len(events) and thread.is_alive():
            time.sleep(0.05)
        time.sleep(0.3)  # mid-checkpoint, mid-batch: wherever it happens to be
        worker.kill()
        kills += 1
        worker.start()
    thread.join(timeout=120)
    assert state["error"] is None, state["error"]
    assert state["sent"] == len(events)

    units_with_outcome = len(expected.unit_outcomes)
    worker.wait_for(f"SELECT count() FROM {DB}.model_calls FINAL", expected.calls, 120)
    worker.wait_for(f"SELECT count() FROM {DB}.outcomes FINAL", expected.outcomes, 60)
    worker.wait_for(f"SELECT count() FROM {DB}.attributions_latest FINAL",
                    units_with_outcome, 60)
    worker.wait_for(f"SELECT sum(calls) FROM {DB}.cost_per_outcome_windows FINAL "
                    f"WHERE window_seconds = 3600 AND model = '*' AND agent = ''",
                    expected.calls, 60)
    assert kills == 3

    # Every unit's figures equal the truth exactly.
    rows = worker.sql(f"SELECT work_unit_id, calls, outcomes, accepted, model_cost "
                      f"FROM {DB}.attributions_latest FINAL")
    got = {r[0]: (r[1], r[2], bool(r[3]), Decimal(r[4])) for r in rows}
    want = {unit: (expected.unit_calls.get(unit, 0), expected.unit_outcomes[unit],
                   expected.unit_accepted[unit], expected.unit_cost.get(unit, Decimal(0)))
            for unit in expected.unit_outcomes}
    assert got == want

    # Totals: spend and accepted outcomes, in the raw tables and in the windows.
    assert Decimal(worker.scalar(f"SELECT sum(cost) FROM {DB}.model_calls FINAL")) == \
        expected.spend
    windows = worker.sql(
        f"SELECT sum(calls), sum(spend), sum(outcomes), sum(accepted_outcomes), sum(value) "
        f"FROM {DB}.cost_per_outcome_windows FINAL "
        f"WHERE window_seconds = 3600 AND model = '*' AND agent = ''")[0]
    assert windows[0] == expected.calls
    assert Decimal(windows[1]) == expected.spend
    assert windows[2:4] == [expected.outcomes, expected.accepted]
    assert Decimal(windows[4]) == expected.value
    hourly = {(r[0], r[1], r[2]): Decimal(r[3]) for r in worker.sql(
        f"SELECT toString(toDateTime(window_start)), team, workflow, spend "
        f"FROM {DB}.cost_per_outcome_windows FINAL "
        f"WHERE window_seconds = 3600 AND model = '*' AND agent = ''")}
    assert hourly == {(h.strftime("%Y-%m-%d %H:%M:%S"), t, w): v
                      for (h, t, w), v in expected.hourly_spend.items()}

    # Every event accounted for: in = applied (attributed or pending) + duplicates;
    # nothing rejected, nothing late.
    distinct = expected.calls + expected.outcomes
    assert distinct + expected.duplicates == len(events)
    assert worker.scalar(f"SELECT count() FROM {DB}.dead_letters FINAL") == 0
    assert worker.scalar(f"SELECT count() FROM {DB}.late_events FINAL") == 0
    pending_units = set(expected.unit_calls) - set(expected.unit_outcomes)
    pending_calls = sum(expected.unit_calls[u] for u in pending_units)
    attributed_events = worker.scalar(
        f"SELECT sum(calls) + sum(outcomes) FROM {DB}.attributions_latest FINAL")
    assert attributed_events + pending_calls == distinct
