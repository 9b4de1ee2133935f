"""``python -m loadtest.live_shape``, small: the traffic it replays is the latency stage's
in envelopes of the size asked, and every event goes through the engine and its
checkpoints (the figures themselves are measured, not asserted)."""

from __future__ import annotations

import orjson

from loadtest.live_shape import live_messages, run, table


def test_live_messages_are_the_scenario_in_envelopes_of_the_size_asked() -> None:
    small, large = live_messages(2000, 4, 5), live_messages(2000, 4, 100)
    assert sum(n for *_, n in small) == sum(n for *_, n in large) > 1000
    assert all(len(orjson.loads(value)) == n for _, _, value, n in small)
    assert max(n for *_, n in small) == 5 and max(n for *_, n in large) == 100
    assert len(small) > len(large)


def test_the_live_shape_bench_reports_every_shape() -> None:
    results = run(2000, 4, [5, 100], [0.5, 2.0], rounds=1)
    assert len(results["shapes"]) == 4
    for shape in results["shapes"]:
        assert shape["events_per_second"] > 0
        assert 0 < shape["plan_share"] < 1
        assert shape["unit_writes_per_event"] > 0
    by = {(s["events_per_envelope"], s["checkpoint_seconds"]): s for s in results["shapes"]}
    # Fewer checkpoints write each unit fewer times: the figure the bench is for.
    assert by[(5, 2.0)]["unit_writes_per_event"] < by[(5, 0.5)]["unit_writes_per_event"]
    assert "unit writes/event" in table(results)
