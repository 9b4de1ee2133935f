"""The ledger rule, defect by defect (issue 13): every event counts exactly once,
whatever its delay, order, currency or duplication, and every figure says which
currency it is in. Pure core, through ``PartitionEngine`` and the rollup, with no
broker and no ClickHouse. Each test names the defect it guards against."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import orjson

from schemas.partitioner import partition_for
from schemas.pricing import PriceBook, PriceEntry
from streams.clickhouse.sink import CALL_COLUMNS, _columns
from streams.core.units import summary_key
from tests.core_harness import BOOK, T0, Harness, call, outcome

HOUR = 3600
DAY = 86_400
GPT4O_CALL = Decimal(1000) * Decimal("2.5") / 1_000_000 + Decimal(200) * 10 / 1_000_000


# In these tests the wall clock stands still (``Harness.now_ms``), so an input that has
# gone quiet would hold its partition's clock for ever: ``input_idle_seconds=0`` lets the
# clock follow the inputs that deliver, as a live worker's does once the others fall silent.


def totals(harness: Harness, size: int = 3600, scope: str = "total") -> dict[str, Decimal]:
    """Every window row of one size and scope added up (rows plus corrections)."""
    figures: dict[str, Decimal] = {}
    for key, window in harness.run.window_totals().items():
        if key.startswith(f"{size}:") and f":{scope}:" in key:
            for name, amount in window.items():
                figures[name] = figures.get(name, 0) + amount
    return figures


def windows(harness: Harness, size: int = 3600, scope: str = "total") -> list[dict]:
    return [w for k, w in harness.run.window_totals().items()
            if k.startswith(f"{size}:") and f":{scope}:" in k]


def balanced(harness: Harness) -> None:
    for engine in harness.engines.values():
        ledger = engine.ledger
        assert ledger.received == (ledger.rejected + ledger.duplicates + ledger.rerouted
                                   + ledger.applied), ledger
        assert sum(engine.applied_split()) == ledger.applied, (engine.applied_split(), ledger)


# -- delay ------------------------------------------------------------------------------

def test_events_hours_late_are_applied_to_their_windows_as_corrections() -> None:
    # Issue 13, "what was found": events more than the allowed lateness late were diverted
    # to `late` and never counted. Now they are applied (and audited).
    harness = Harness(allowed_lateness_seconds=300, deadline_seconds=DAY, input_idle_seconds=0)
    harness.send([call("a1", "A", 0), outcome("ao", "A", 60)])
    harness.send([call("z1", "Z", 5 * HOUR)])  # the clock is now hours ahead
    harness.collect_windows()  # the first hour's windows are final
    out = harness.message("calls", [call("a2", "A", 120)])  # two minutes into that hour
    assert [e.event_id for e in out.late] == ["a2"] and out.late[0].lateness_seconds > 4 * HOUR
    harness.send([outcome("zo", "Z", 5 * HOUR + 10)])
    run = harness.finish()
    assert run.attributions["A"].calls == 2
    assert run.attributions["A"].model_cost == 2 * GPT4O_CALL
    first_hour = next(w for k, w in run.window_totals().items()
                      if k.startswith(f"3600:{int(T0.timestamp() * 1000)}:") and ":total:" in k)
    assert first_hour["calls"] == 2 and first_hour["spend"] == 2 * GPT4O_CALL
    assert first_hour["linked_spend"] == 2 * GPT4O_CALL
    corrections = [w for w in run.windows.values() if w.correction]
    assert corrections and all(w.final for w in corrections)
    assert totals(harness)["spend"] == 3 * GPT4O_CALL
    balanced(harness)


def test_an_outcome_after_eviction_merges_into_the_same_attribution() -> None:
    # Defect 15: an outcome 26 h after its calls (defaults: 24 h deadline, 1 h retention)
    # started a fresh unit whose 0-cost attribution replaced the unit's unattributed spend.
    harness = Harness(deadline_seconds=DAY, retention_seconds=HOUR, allowed_lateness_seconds=300,
                      input_idle_seconds=0)
    harness.send([call("c1", "U", 0), call("c2", "U", 30)])
    harness.send([call("k1", "K", 26 * HOUR)])  # U expired at 24 h, evicted at 25 h
    engine = harness.engines[0]
    assert "U" not in engine.units and "U" in engine.units.evicted
    expired = harness.run.attributions["U"]
    assert (expired.state, expired.model_cost) == ("unattributed", 2 * GPT4O_CALL)
    harness.send([outcome("uo", "U", 26 * HOUR + 60, value="4")])
    merged = harness.run.attributions["U"]
    assert merged.attribution_id == expired.attribution_id == "U"
    assert merged.revision > expired.revision
    assert (merged.state, merged.calls, merged.outcomes) == ("revised", 2, 1)
    assert merged.model_cost == 2 * GPT4O_CALL and merged.value == 4
    harness.finish()
    # U's unlinked booking was taken back exactly where it was made; K never got one.
    assert totals(harness)["unlinked_spend"] == GPT4O_CALL
    assert totals(harness)["linked_spend"] == 2 * GPT4O_CALL
    balanced(harness)


def test_a_summary_lives_in_the_store_and_revives_after_a_crash() -> None:
    harness = Harness(deadline_seconds=HOUR, retention_seconds=600, input_idle_seconds=0)
    harness.send([call("c1", "U", 0), outcome("o1", "U", 10, is_final=True)])
    harness.send([call("k1", "K", 2 * HOUR)])
    harness.checkpoint(0)
    engine = harness.engines[0]
    assert "U" not in engine.units and not engine.units.evicted  # nothing in memory
    assert summary_key(0, "U") in harness.stores[0]
    harness.crash_and_restore(0)
    harness.send([call("c2", "U", 20)])  # a late call for the evicted unit
    revived = harness.run.attributions["U"]
    assert (revived.calls, revived.outcomes, revived.model_cost) == (2, 1, 2 * GPT4O_CALL)
    harness.send([outcome("o1", "U", 10, is_final=True)])  # a redelivery after eviction
    assert harness.engines[0].ledger.duplicates == 1
    balanced(harness)


def test_a_redelivered_final_outcome_after_eviction_counts_once() -> None:
    # Defect 14 (second half): with retention equal to lateness (both 0, which validation
    # allows), a redelivered final outcome after eviction was applied twice.
    harness = Harness(retention_seconds=0, allowed_lateness_seconds=0, deadline_seconds=HOUR,
                      input_idle_seconds=0)
    harness.send([call("c1", "U", 0), outcome("o1", "U", 10, value="3")])
    harness.send([call("k1", "K", 100)])  # the unit is evicted at once
    assert "U" not in harness.engines[0].units
    harness.send([outcome("o1", "U", 10, value="3")])
    unit = harness.run.attributions["U"]
    assert (unit.outcomes, unit.value) == (1, 3)
    assert harness.engines[0].ledger.duplicates == 1
    balanced(harness)


def test_a_summary_from_an_unfinished_checkpoint_is_not_read() -> None:
    # A crash after a checkpoint wrote a summary but before its meta record: the restored
    # state rebuilds the unit from the replayed events, which must not meet the summary
    # (they would count as duplicates and the ledger would not balance).
    harness = Harness(deadline_seconds=HOUR, retention_seconds=600, input_idle_seconds=0)
    harness.send([call("k0", "K", 0)])
    harness.checkpoint(0)
    harness.send([call("c1", "U", 10), outcome("o1", "U", 20)])
    harness.send([call("k1", "K", 2 * HOUR)])  # U is evicted
    plan = harness.checkpointers[0].plan()
    for key, value in plan.batched:  # the summaries reached the store, the meta did not
        harness.stores[0][key] = value
    assert summary_key(0, "U") in harness.stores[0]
    harness.crash_and_restore(0)
    harness.send([call("c1", "U", 10), outcome("o1", "U", 20), call("k1", "K", 2 * HOUR)])
    assert harness.engines[0].ledger.duplicates == 0
    assert harness.run.attributions["U"].calls == 1
    balanced(harness)


def test_past_the_horizon_events_go_to_a_bucket_and_still_count() -> None:
    harness = Harness(deadline_seconds=HOUR, retention_seconds=600, horizon_seconds=2 * DAY,
                      input_idle_seconds=0, now=T0 + timedelta(days=5))
    harness.send([call("c1", "Old", 0), outcome("o1", "Old", 10)])
    harness.send([call("k1", "K", 5 * DAY)])
    # Checkpoint 1 writes the summary and its expiry index; the next tick's sweep finds it
    # past the horizon; the deletion reaches the store one checkpoint after the one that
    # records the sweep (checkpoint 3).
    for _ in range(3):
        harness.run.keep(harness.engines[0].tick())
        harness.checkpoint(0)
    assert summary_key(0, "Old") not in harness.stores[0]
    ledger = harness.engines[0].ledger
    assert ledger.forgotten_attributed == 2 and ledger.summarized_attributed == 0
    out = harness.message("calls", [call("c2", "Old", 20)])  # five days late: beyond
    assert [c.call.event_id for c in out.calls] == ["c2"]
    assert ledger.beyond_horizon == 1
    harness.finish()
    bucket = next(a for uid, a in harness.run.attributions.items() if uid.startswith("~"))
    assert bucket.work_unit_id.startswith("~horizon:p0:calls:support:triage:")
    assert (bucket.state, bucket.model_cost) == ("unattributed", GPT4O_CALL)
    assert harness.run.attributions["Old"].calls == 1  # its own row is not replaced
    assert totals(harness)["spend"] == 3 * GPT4O_CALL
    balanced(harness)


# -- the spend classes ---------------------------------------------------------------------

def test_a_call_after_the_deadline_is_unlinked_spend_then_linked_by_an_outcome() -> None:
    # Defects 1 and 10: a call that revived an expired unit took its own cost back from
    # the unlinked spend (too low by that call, negative after a later outcome), and
    # windows showed coverage above 100 %.
    harness = Harness(deadline_seconds=600, retention_seconds=7200, input_idle_seconds=0)
    harness.send([call("r1", "R", 0)])
    harness.send([call("z1", "Z", 800)])  # R expires (deadline from its first call)
    harness.send([call("r2", "R", 805)])  # the looping agent goes on after the deadline
    assert harness.run.attributions["R"].state == "unattributed"
    harness.collect_windows()
    assert totals(harness)["unlinked_spend"] == 2 * GPT4O_CALL  # both of R's calls
    harness.send([outcome("ro", "R", 810)])
    harness.finish(seconds_later=120)
    figures = totals(harness)
    assert figures["unlinked_spend"] == 0
    assert figures["linked_spend"] == 2 * GPT4O_CALL
    for window in windows(harness) + windows(harness, 60):
        assert window["unlinked_spend"] >= 0 and window["linked_spend"] >= 0
    rows = [w for w in harness.run.windows.values() if w.attribution_coverage is not None]
    assert all(0 <= w.attribution_coverage <= 1 for w in rows)
    balanced(harness)


def test_a_looping_agent_is_unattributed_at_the_deadline_from_its_first_call() -> None:
    harness = Harness(deadline_seconds=600)
    harness.send([call(f"l{i}", "Loop", 50 * i) for i in range(30)])  # never stops
    assert harness.run.attributions["Loop"].state == "unattributed"
    assert harness.run.attributions["Loop"].calls >= 14


# -- money and currency ----------------------------------------------------------------------

def test_computed_cost_is_converted_from_the_price_entrys_currency() -> None:
    # Defect 2: a price entry's currency was never used: EUR reporting with the shipped USD
    # book gave USD figures labelled EUR. Defect 11: model_calls.currency labelled a
    # converted cost with the call's original currency.
    harness = Harness(currency="EUR", fx_rates={"USD": Decimal("0.9")})
    out = harness.message("calls", [call("e1", "E", 0),
                                    call("e2", "E", 5, reported_cost="0.01", currency="USD")])
    harness.send([outcome("eo", "E", 10, value="10", currency="EUR")])
    unit = harness.run.attributions["E"]
    assert unit.currency == "EUR"
    assert unit.computed_cost == 2 * GPT4O_CALL * Decimal("0.9")
    assert unit.model_cost == GPT4O_CALL * Decimal("0.9") + Decimal("0.009")
    first, reported = out.calls
    assert (first.currency, first.price_currency, first.cost) == \
        ("EUR", "USD", GPT4O_CALL * Decimal("0.9"))
    assert (reported.currency, reported.cost) == ("EUR", Decimal("0.009"))
    names, columns = _columns(out.calls, CALL_COLUMNS)
    row = dict(zip(names, (c[1] for c in columns), strict=True))
    assert (row["currency"], row["reported_currency"], row["reported_cost"]) == \
        ("EUR", "USD", Decimal("0.01"))
    assert row["cost"] == Decimal("0.009")


def test_an_outcome_in_a_currency_without_a_rate_but_no_money_is_applied() -> None:
    # Defect 12: rejected as unknown_currency although it carried no amount.
    harness = Harness()
    out = harness.message("outcomes", [outcome("j1", "J", 0, value=None, currency="JPY")])
    assert out.dead_letters == [] and harness.run.attributions["J"].outcomes == 1


def test_conversions_and_review_cost_round_half_even() -> None:
    # Defect 14 (first half): review cost and FX conversion rounded down.
    harness = Harness(fx_rates={"EUR": Decimal("1.5")})
    harness.send([outcome("h1", "H", 0, human_review_minutes="0.000001",
                          review_rate="0.00000000009"),  # exactly 1.5e-18
                  outcome("h2", "G", 0, value="0.000000000000000001", currency="EUR")])
    assert harness.run.attributions["H"].human_cost == Decimal("2E-18")  # not 1E-18
    assert harness.run.attributions["G"].value == Decimal("2E-18")


def test_money_sent_as_a_json_number_is_exact_or_rejected() -> None:
    # Defect 13: money as a JSON number lost digits beyond a double's precision, silently.
    harness = Harness()
    value = b'{"event_id": "n1", "work_unit_id": "N", "occurred_at": "%s", "team": "support",' \
            b' "workflow": "triage", "status": "accepted", "currency": "USD",' \
            b' "value": 12345678.123456789012345678}' % T0.isoformat().encode()
    harness.message("outcomes", value)
    assert harness.run.attributions["N"].value == Decimal("12345678.123456789012345678")
    too_fine = value.replace(b"12345678.123456789012345678", b"0.1234567890123456789")
    out = harness.message("outcomes", too_fine.replace(b'"n1"', b'"n2"'))
    assert out.dead_letters and "more than 18 decimal places" in out.dead_letters[0].reason


# -- what counts as accepted -------------------------------------------------------------------

def test_windows_count_units_accepted_by_their_deciding_outcome() -> None:
    # Defect 3: windows counted accepted outcome *events*: a non-final `accepted` then a
    # final `rejected` counted as a success; an accepted unit with two outcomes twice.
    harness = Harness()
    harness.send([call("a1", "A", 0), outcome("a-o1", "A", 10, status="accepted", is_final=False),
                  outcome("a-o2", "A", 20, status="rejected", value=None, currency=None),
                  call("b1", "B", 0), outcome("b-o1", "B", 10), outcome("b-o2", "B", 30)])
    harness.finish()
    figures = totals(harness)
    assert figures["outcomes"] == 4  # events
    assert figures["decided_units"] == 2
    assert figures["accepted_outcomes"] == 1  # B only, once
    row = next(w for w in harness.run.windows.values()
               if w.scope == "total" and w.window_seconds == 3600 and not w.correction)
    assert row.acceptance_rate == Decimal("0.5")
    assert row.cost_per_accepted_outcome == 2 * GPT4O_CALL  # the hour's spend / 1 accepted


def test_a_units_cost_per_outcome_is_its_cost_when_accepted_and_none_otherwise() -> None:
    # Defect 4: the attribution's cost_per_outcome divided by every outcome event.
    harness = Harness()
    harness.send([call("b1", "B", 0), outcome("b-o1", "B", 10), outcome("b-o2", "B", 30),
                  call("r1", "R", 0), outcome("r-o", "R", 10, status="rejected")])
    assert harness.run.attributions["B"].cost_per_outcome == GPT4O_CALL
    assert harness.run.attributions["R"].cost_per_outcome is None


def test_a_later_final_outcome_moves_the_decision_between_windows() -> None:
    harness = Harness()
    harness.send([call("c", "U", 0), outcome("o1", "U", 30, status="accepted", is_final=False)])
    harness.collect_windows()  # the first hour counted U as decided and accepted, for now
    harness.send([outcome("o2", "U", 2 * HOUR, status="rejected", value=None, currency=None)])
    harness.finish()
    start = int(T0.timestamp() * 1000)
    decided = {(int(k.split(":")[1]) - start) // 3_600_000:
               (w["decided_units"], w["accepted_outcomes"])
               for k, w in harness.run.window_totals().items()
               if k.startswith("3600:") and ":total:" in k}
    assert decided[0] == (0, 0)  # taken back from the first hour...
    assert decided[2] == (1, 0)  # ... and decided, rejected, in the hour of o2


# -- order and identity -------------------------------------------------------------------------

def test_dims_come_from_the_earliest_call_whatever_the_order() -> None:
    # Defect 6: a unit's dims came from whichever call was applied first.
    early = call("c-early", "U", 5, team="alpha", workflow="w1", agent="first", owner="ann")
    late = call("c-late", "U", 10, team="beta", workflow="w2", agent="second", owner="bob")
    results = []
    for order in ([early, late], [late, early]):
        harness = Harness()
        harness.send([*order, outcome("o", "U", 20, team="alpha", workflow="w1")])
        a = harness.run.attributions["U"]
        results.append((a.team, a.workflow, a.agent, a.owner, a.revision))
    assert results[0] == results[1] == ("alpha", "w1", "first", "ann", 10)


def test_model_names_cannot_collide_with_series_names() -> None:
    # Defect 7: a model called `*` doubled work units; others (`agent:...`, `mix:...`)
    # lost their spend from every window row.
    book = PriceBook([*BOOK.entries, *(PriceEntry(provider="odd", model=name,
                                                  input_per_mtok=Decimal(1),
                                                  output_per_mtok=Decimal(1))
                                       for name in ("*", "agent:x", "mix:y", "t"))])
    harness = Harness()
    harness.book = book
    harness.send([call(f"c{i}", "U", i, provider="odd", model=name)
                  for i, name in enumerate(("*", "agent:x", "mix:y", "t"))])
    harness.send([outcome("o", "U", 10)])
    harness.finish()
    spend = 4 * Decimal("0.0012")
    assert harness.run.attributions["U"].model_cost == spend
    assert totals(harness)["spend"] == spend
    assert totals(harness, scope="model")["spend"] == spend
    assert totals(harness)["work_units"] == 1
    assert {w.model for w in harness.run.windows.values() if w.scope == "model"} == \
        {"*", "agent:x", "mix:y", "t"}


def test_a_misrouted_event_is_judged_by_its_own_partition() -> None:
    # Defect 8: a misrouted event was judged late by the wrong partition's clock (and so
    # never rerouted) before it was forwarded.
    harness = Harness(partitions=4)
    owned_by = {p: next(f"u{i}" for i in range(500) if partition_for(f"u{i}", 4) == p)
                for p in range(4)}
    harness.send([call("far", owned_by[1], 5 * HOUR)])  # partition 1's clock is far ahead
    out = harness.message("calls", [call("m1", owned_by[2], 0)], partition=1)
    assert [(k, u) for k, u, _ in out.reroute] == [("calls", owned_by[2])]
    assert out.late == [] and harness.engines[1].ledger.late == 0
    delivered = harness.message("calls", out.reroute[0][2], partition=2)
    assert [c.call.event_id for c in delivered.calls] == ["m1"] and delivered.late == []
    balanced(harness)


def test_a_call_and_an_outcome_may_share_an_event_id() -> None:
    # Defect 9: they deduplicated each other, and the outcome was lost.
    harness = Harness()
    harness.send([call("same", "U", 0), outcome("same", "U", 10)])
    unit = harness.run.attributions["U"]
    assert (unit.calls, unit.outcomes) == (1, 1)
    assert harness.engines[0].ledger.duplicates == 0


# -- prices -------------------------------------------------------------------------------

def acme_book(rate: str = "1") -> PriceBook:
    return PriceBook([*BOOK.entries, PriceEntry(provider="acme", model="m1",
                                                 input_per_mtok=Decimal(rate),
                                                 output_per_mtok=Decimal(rate))])


def test_an_unpriced_call_is_priced_when_its_price_arrives() -> None:
    harness = Harness(deadline_seconds=HOUR, input_idle_seconds=0)
    harness.send([call("u1", "U", 0, provider="acme", model="m1"), outcome("o", "U", 10)])
    assert harness.run.attributions["U"].unpriced_calls == 1
    before = harness.run.attributions["U"]
    harness.collect_windows()
    harness.send([call("k", "K", 3 * HOUR)])  # U's windows are final, U evicted
    harness.collect_windows()
    harness.book = acme_book()
    out = harness.engines[0].tick()
    harness.run.keep(out)
    assert [(c.call.event_id, c.cost) for c in out.calls] == [("u1", Decimal("0.0012"))]
    after = harness.run.attributions["U"]
    assert (after.unpriced_calls, after.model_cost) == (0, Decimal("0.0012"))
    assert after.revision > before.revision
    harness.finish()
    figures = totals(harness)
    assert figures["unpriced_calls"] == 0
    assert figures["spend"] == Decimal("0.0012") + GPT4O_CALL
    assert figures["linked_spend"] == Decimal("0.0012")
    assert harness.engines[0].ledger.repriced == 1
    assert not harness.engines[0].unpriced  # nothing left to price
    balanced(harness)


def test_a_later_price_for_a_priced_model_does_not_reprice_the_past() -> None:
    harness = Harness()
    harness.book = acme_book("1")
    harness.send([call("u1", "U", 0, provider="acme", model="m1"), outcome("o", "U", 10)])
    harness.book = acme_book("5")
    harness.run.keep(harness.engines[0].tick())
    harness.send([call("u2", "U", 20, provider="acme", model="m1")])
    assert harness.run.attributions["U"].model_cost == Decimal("0.0012") + Decimal("0.006")


def test_checkpoints_keep_the_unpriced_index() -> None:
    harness = Harness()
    harness.send([call("u1", "U", 0, provider="acme", model="m1"), outcome("o", "U", 10)])
    harness.checkpoint(0)
    harness.crash_and_restore(0)
    assert harness.engines[0].unpriced == {"acme\x00m1": {"U"}}
    harness.book = acme_book()
    harness.run.keep(harness.engines[0].tick())
    assert harness.run.attributions["U"].unpriced_calls == 0


# -- the outbox ---------------------------------------------------------------------------------

def test_window_changes_reach_the_rollup_once_across_a_crash_before_sending() -> None:
    harness = Harness()
    harness.send([call("c1", "U", 0), outcome("o", "U", 10)])
    harness.checkpoint(0, send=False)  # durable, then the worker dies before sending
    harness.crash_and_restore(0)  # the restored worker sends it
    harness.checkpoint(0)
    harness.crash_and_restore(0)  # and again: this time the rollup has it already
    harness.finish()
    assert totals(harness)["spend"] == GPT4O_CALL
    assert totals(harness)["calls"] == 1
    assert harness.rollup.duplicates == 1


def test_outbox_messages_round_trip() -> None:
    harness = Harness()
    harness.send([call("c1", "U", 0)])
    plan = harness.checkpoint(0, send=False)
    assert plan.outbox is not None
    decoded = orjson.loads(plan.outbox_record[1])
    assert decoded["seq"] == plan.seq and decoded["changes"]


def test_a_price_for_the_past_reprices_as_a_counted_correction() -> None:
    from streams.app.repricing import plan_repricing

    harness = Harness(input_idle_seconds=0)
    harness.book = acme_book("1")
    first = harness.message("calls", [call("u1", "U", 0, provider="acme", model="m1")])
    harness.send([outcome("o", "U", 10), call("k", "K", 2 * HOUR)])
    harness.collect_windows()  # U's windows are final
    booked = first.calls[0]
    row = {**call("u1", "U", 0, provider="acme", model="m1", owner="", task_type="",
                  service="", environment="", status="ok", attempt=1,
                  cached_input_tokens=0, cache_write_tokens=0, cache_write_1h_tokens=0,
                  reasoning_tokens=0, attributes={}),
           "computed_cost": booked.computed_cost}
    newer = acme_book("5")  # the price held since before the call, published late
    plan = plan_repricing([row], newer, "USD", {})
    assert (len(plan.events), plan.unchanged, plan.difference) == (1, 0, Decimal("0.0048"))
    assert plan_repricing([row], harness.book, "USD", {}).events == []  # nothing to do
    harness.book = newer
    out = harness.message("calls", [plan.events[0]])
    assert [(c.call.event_id, c.cost) for c in out.calls] == [("u1", Decimal("0.006"))]
    unit = harness.run.attributions["U"]
    assert (unit.model_cost, unit.calls) == (Decimal("0.006"), 1)
    assert harness.engines[0].ledger.repriced == 1
    harness.message("calls", [plan.events[0]])  # delivered twice: once
    assert harness.engines[0].ledger.duplicates == 1
    lost = harness.message("calls", [{**plan.events[0], "event_id": "reprice:x",
                                      "reprices": {"event_id": "nope", "previous_cost": "1"}}])
    assert lost.dead_letters[0].error_kind == "unknown_call"
    harness.finish()
    figures = totals(harness)
    assert figures["spend"] == Decimal("0.006") + GPT4O_CALL
    assert figures["linked_spend"] == Decimal("0.006")  # U's share moved with its cost
    assert any(w.correction for w in harness.run.windows.values())
    balanced(harness)
