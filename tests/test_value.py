"""Fully loaded, quality-gated value in the pure core: cost items (a unit's and shared),
the workflow registry's success bars, verdicts and strategic value. Each figure is
checked on the attribution and on the windows, and every booking stays exact whatever
the order of the events or a change of rule."""

from __future__ import annotations

import itertools
import json
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import orjson
import ormsgpack
import pytest

from schemas.events import CostItem
from streams.core.money import atto_of_text, atto_text
from streams.core.unit import (
    BOOKED_FIELDS,
    FORMAT,
    FORMAT_4,
    FORMAT_5,
    PREVIOUS_FORMAT,
    UnitState,
    Vocabulary,
)
from streams.core.workflows import WorkflowRegistry, WorkflowRule
from tests.core_harness import Harness, call, cost, outcome

GPT4O_CALL = Decimal(1000) * Decimal("2.5") / 1_000_000 + Decimal(200) * 10 / 1_000_000
HOUR = 3600


def hourly_total(harness: Harness, team: str = "support", workflow: str = "triage"
                 ) -> dict[str, Any]:
    """The hourly total rows of a workflow, their figures added up (with corrections)."""
    totals = harness.run.window_totals()
    found: dict[str, Any] = {}
    for window_id, figures in totals.items():
        size, _start, w_team, w_workflow, scope = window_id.split(":")[:5]
        if size == str(HOUR) and scope == "total" and (w_team, w_workflow) == (team, workflow):
            for name, value in figures.items():
                found[name] = found.get(name, 0) + value
    return found


# -- cost items ---------------------------------------------------------------------------

def test_cost_items_join_their_unit_in_any_order_and_count_once() -> None:
    events = [call("c1", "U", 0), cost("t1", "U", 5, amount="0.40"),
              cost("g1", "U", 7, kind="gpu", quantity="3", unit_price="0.125"),
              outcome("o1", "U", 20, review_rate="60", human_review_minutes="1"),
              cost("t1", "U", 5, amount="0.40")]  # a duplicate
    expected = None
    for order in itertools.permutations(events):
        harness = Harness()
        harness.send(list(order))
        run = harness.finish()
        a = run.attributions["U"]
        assert a.other_cost == Decimal("0.775")
        assert a.other_cost_by_kind == {"gpu": Decimal("0.375"), "tool_call": Decimal("0.4")}
        assert a.cost_items == 2
        assert a.fully_loaded_cost == GPT4O_CALL + 1 + Decimal("0.775")
        assert a.cost_per_outcome == a.fully_loaded_cost  # accepted: its fully loaded cost
        figures = hourly_total(harness)
        assert figures["other_cost"] == Decimal("0.775") and figures["cost_items"] == 2
        assert figures["fully_loaded_cost"] == a.fully_loaded_cost
        assert harness.engines[0].ledger.duplicates == 1
        if expected is None:
            expected = (a.revision, a.model_dump(exclude={"state"}))
        assert (a.revision, a.model_dump(exclude={"state"})) == expected


def test_a_priced_cost_item_is_exact_and_converted_at_the_rate() -> None:
    harness = Harness(fx_rates={"EUR": Decimal("1.1")})
    harness.send([call("c1", "U", 0),
                  cost("x", "U", 1, quantity="0.333333333333333333",
                       unit_price="0.000000000000000003", currency="USD"),
                  cost("e", "U", 2, amount="10", currency="EUR"),
                  outcome("o1", "U", 5)])
    a = harness.finish().attributions["U"]
    # 0.333333333333333333 x 0.000000000000000003 = 9.99e-19: half-even at 10^-18 is 1e-18.
    assert a.other_cost == Decimal("11") + Decimal("1e-18")


def test_a_cost_item_in_an_unknown_currency_is_dead_lettered() -> None:
    harness = Harness()
    out = harness.message("costs", [cost("x", "U", 1, currency="JPY")])
    assert [d.error_kind for d in out.dead_letters] == ["unknown_currency"]
    assert harness.engines[0].ledger.rejected == 1 and out.cost_items == []


def test_a_unit_with_only_cost_items_expires_and_is_unattributed() -> None:
    harness = Harness()
    harness.send([cost("t1", "U", 0)])
    run = harness.finish()
    a = run.attributions["U"]
    assert a.state == "unattributed" and a.other_cost == Decimal("0.5")
    assert hourly_total(harness)["other_cost"] == Decimal("0.5")


def test_shared_costs_count_once_in_their_workflows_window_and_emit_no_attribution() -> None:
    harness = Harness(partitions=4)
    shared = cost("s1", None, 30, kind="infra", amount="12.5")
    harness.send([call("c1", "U", 0), outcome("o1", "U", 10), shared])
    # The same item again, sent to another partition: it is rerouted to its bucket's
    # partition and found a duplicate there.
    key = CostItem.model_validate(shared).key
    from schemas.partitioner import partition_for
    home = partition_for(key, 4)
    out = harness.message("costs", [shared], partition=(home + 1) % 4)
    assert [(kind, unit) for kind, unit, _ in out.reroute] == [("costs", key)]
    harness.message("costs", [shared], partition=home)
    run = harness.finish()
    assert set(run.attributions) == {"U"}
    figures = hourly_total(harness)
    assert figures["shared_cost"] == Decimal("12.5") and figures["cost_items"] == 1
    assert figures["fully_loaded_cost"] == GPT4O_CALL + Decimal("12.5")
    assert harness.engines[home].ledger.duplicates == 1
    assert [r.item.event_id for r in run.outputs.cost_items] == ["s1"]


# -- the success bar ------------------------------------------------------------------------

def rule(**fields: Any) -> WorkflowRule:
    return WorkflowRule(team="support", workflow="triage", **fields)


def test_a_score_under_the_bar_is_not_a_success() -> None:
    harness = Harness(workflows=(rule(min_quality_score=0.8),))
    harness.send([call("c1", "A", 0), outcome("oa", "A", 10, quality_score=0.7),
                  call("c2", "B", 0), outcome("ob", "B", 10, quality_score=0.9),
                  call("c3", "C", 0), outcome("oc", "C", 10)])  # no score: not judged
    run = harness.finish()
    a, b, c = (run.attributions[u] for u in "ABC")
    assert (a.accepted, a.quality_failed, a.cost_per_outcome) == (False, True, None)
    assert (b.accepted, b.quality_failed) == (True, False)
    assert (c.accepted, c.quality_failed) == (True, False)
    figures = hourly_total(harness)
    assert (figures["decided_units"], figures["accepted_outcomes"],
            figures["quality_failed_units"]) == (3, 2, 1)


def test_a_slow_call_arriving_after_acceptance_fails_the_latency_bar_exactly() -> None:
    harness = Harness(workflows=(rule(max_latency_ms=2000),))
    harness.send([call("c1", "U", 0, latency_ms=900), outcome("o1", "U", 10, value="5",
                                                            currency="USD")])
    harness.collect_windows()
    assert hourly_total(harness)["accepted_outcomes"] == 1
    harness.send([call("c2", "U", 12, latency_ms=2500)])
    run = harness.finish()
    a = run.attributions["U"]
    assert (a.accepted, a.latency_failed, a.max_latency_ms) == (False, True, 2500)
    assert a.accepted_value == 0 and a.yield_ratio == 0
    figures = hourly_total(harness)
    assert (figures["decided_units"], figures["accepted_outcomes"],
            figures["latency_failed_units"], figures["accepted_value"]) == (1, 0, 1, 0)
    assert figures["value"] == 5  # the outcome's value is still reported


def test_a_workflow_may_count_other_statuses_as_success() -> None:
    harness = Harness(workflows=(rule(success_statuses=("escalated",)),))
    harness.send([call("c1", "A", 0), outcome("oa", "A", 10, status="escalated"),
                  call("c2", "B", 0), outcome("ob", "B", 10, status="accepted")])
    run = harness.finish()
    assert run.attributions["A"].accepted and not run.attributions["B"].accepted
    assert hourly_total(harness)["accepted_outcomes"] == 1


def test_a_rule_changed_live_rebooks_exactly_what_was_booked() -> None:
    harness = Harness()
    harness.send([call("c1", "U", 0), outcome("o1", "U", 10, quality_score=0.5,
                                              is_final=False)])
    harness.collect_windows()
    assert hourly_total(harness)["accepted_outcomes"] == 1
    harness.registry = WorkflowRegistry((rule(min_quality_score=0.8),), "v2")
    harness.send([outcome("o2", "U", 20, quality_score=0.6)])  # the unit is judged again
    harness.collect_windows()
    figures = hourly_total(harness)
    assert (figures["decided_units"], figures["accepted_outcomes"],
            figures["quality_failed_units"]) == (1, 0, 1)
    harness.registry = WorkflowRegistry((), "v3")  # back to the default bar
    harness.send([cost("t1", "U", 25)])  # any change settles it again
    harness.finish()
    figures = hourly_total(harness)
    assert (figures["decided_units"], figures["accepted_outcomes"],
            figures["quality_failed_units"]) == (1, 1, 0)


# -- verdicts ------------------------------------------------------------------------------

def verdict(event_id: str, unit: str, seconds: float, **fields: Any) -> dict[str, Any]:
    event = outcome(event_id, unit, seconds, verdict="overturned")
    del event["status"], event["value"], event["currency"]
    event.update(fields)
    return event


def test_an_overturned_verdict_turns_a_success_into_an_integrity_failure() -> None:
    events = [call("c1", "U", 0), outcome("o1", "U", 10, value="100", currency="USD"),
              verdict("v1", "U", 5 * 86400 // 100, value_at_risk="40", currency="USD")]
    results = set()
    for order in itertools.permutations(events):
        harness = Harness()
        harness.send(list(order))
        run = harness.finish()
        a = run.attributions["U"]
        assert (a.accepted, a.integrity_failed, a.verdict) == (False, True, "overturned")
        assert a.value_at_risk == 40 and a.accepted_value == 0
        assert a.outcomes == 1  # a verdict is not an outcome
        figures = hourly_total(harness)
        assert (figures["decided_units"], figures["accepted_outcomes"],
                figures["integrity_failed_units"], figures["accepted_value"],
                figures["value_at_risk"], figures["outcomes"]) == (1, 0, 1, 0, 40, 1)
        results.add((a.revision, a.net_value))
    assert len(results) == 1
    assert results.pop()[1] == -40 - GPT4O_CALL


def test_the_latest_verdict_stands() -> None:
    harness = Harness()
    harness.send([call("c1", "U", 0), outcome("o1", "U", 10, value="100", currency="USD"),
                  verdict("v2", "U", 300, verdict="upheld"),
                  verdict("v1", "U", 200, value_at_risk="40", currency="USD")])
    a = harness.finish().attributions["U"]
    assert (a.accepted, a.integrity_failed, a.verdict, a.accepted_value) == \
        (True, False, "upheld", 100)
    figures = hourly_total(harness)
    assert (figures["integrity_failed_units"], figures["value_at_risk"],
            figures["accepted_value"]) == (0, 0, 100)


def test_a_verdict_needs_no_status_and_carries_no_value() -> None:
    from pydantic import ValidationError

    from schemas.events import Outcome
    event = verdict("v", "U", 0)
    assert Outcome.model_validate(event).status is None
    with pytest.raises(ValidationError, match="carries no value"):
        Outcome.model_validate({**event, "value": "3", "currency": "USD"})
    with pytest.raises(ValidationError, match="status"):
        Outcome.model_validate({k: v for k, v in outcome("o", "U", 0).items()
                                if k != "status"})


# -- strategic value --------------------------------------------------------------------------

def test_strategic_value_is_reported_apart_from_money() -> None:
    harness = Harness()
    harness.send([
        call("c1", "A", 0), outcome("oa", "A", 10, value=None, currency=None,
                                    value_dimension="strategic", strategic_score="7.5",
                                    evidence_confidence=0.6),
        call("c2", "B", 0), outcome("ob", "B", 10, value=None, currency=None,
                                    value_dimension="strategic", strategic_score="4")])
    run = harness.finish()
    assert run.attributions["A"].strategic_score == Decimal("7.5")
    assert run.attributions["A"].value is None and run.attributions["A"].yield_ratio is None
    figures = hourly_total(harness)
    assert (figures["strategic_units"], figures["strategic_score_sum"],
            figures["strategic_confidence_sum"], figures["strategic_confident_units"]) == \
        (2, Decimal("11.5"), Decimal("0.6"), 1)
    assert figures["value"] == 0 and figures["accepted_value"] == 0



def test_review_minutes_are_booked_in_each_events_window_verdicts_included() -> None:
    """The review minutes of every outcome event, verdicts too, exactly (six places), on
    the total rows of the event's own window: what the business case's time saved reads.
    A duplicate books nothing."""
    harness = Harness()
    harness.send([
        call("c1", "U", 0), outcome("o1", "U", 10, human_review_minutes="2.000001"),
        outcome("o1", "U", 10, human_review_minutes="2.000001"),  # the same event again
        call("c2", "V", 0), outcome("o2", "V", 20),
        verdict("v1", "U", 4000, human_review_minutes="0.5")])
    run = harness.finish()
    by_hour = {window_id.split(":")[1]: figures
               for window_id, figures in run.window_totals().items()
               if window_id.startswith(f"{HOUR}:") and ":total:" in window_id}
    assert sorted((f["review_minutes"], f["reviewed_outcomes"]) for f in by_hour.values()) \
        == [(Decimal("0.5"), 1), (Decimal("2.000001"), 1)]

def test_each_decisions_evidence_confidence_is_booked_with_it_and_moves_with_it() -> None:
    """Every decided unit whose deciding outcome gave an evidence confidence books it in
    the deciding outcome's window (strategic or not: what the portfolio reads); a later
    outcome that outranks the decider takes it back from there and books its own."""
    harness = Harness()
    harness.send([
        call("ca", "A", 0), outcome("oa", "A", 10, is_final=False, evidence_confidence=0.4),
        call("cb", "B", 0), outcome("ob", "B", 20, evidence_confidence=0.95),
        call("cc", "C", 0), outcome("oc", "C", 30)])
    harness.collect_windows()
    first = hourly_total(harness)
    assert (first["decided_units"], first["evidence_confidence_sum"],
            first["evidence_confident_units"]) == (3, Decimal("1.35"), 2)
    assert first["strategic_confident_units"] == 0  # none of them strategic
    # A's final outcome, an hour later, outranks its first: the confidence moves with it.
    harness.send([outcome("oa2", "A", 4000, evidence_confidence=0.8)])
    run = harness.finish()
    assert run.attributions["A"].evidence_confidence == 0.8
    by_hour = {window_id.split(":")[1]: figures
               for window_id, figures in run.window_totals().items()
               if window_id.startswith(f"{HOUR}:") and ":total:" in window_id}
    assert sorted((f["evidence_confidence_sum"], f["evidence_confident_units"])
                  for f in by_hour.values()) == [(Decimal("0.8"), 1), (Decimal("0.95"), 1)]


# -- state -------------------------------------------------------------------------------

def test_a_units_new_state_survives_its_summary_and_old_summaries_still_load() -> None:
    harness = Harness(workflows=(rule(max_latency_ms=100),))
    harness.send([call("c1", "U", 0, latency_ms=150, user="ana", customer="acme"),
                  cost("t1", "U", 1, kind="retrieval"), outcome("o1", "U", 10),
                  verdict("v1", "U", 20, value_at_risk="2", currency="USD")])
    unit = harness.engines[0].units.get("U")
    assert unit is not None
    vocabulary = Vocabulary()
    again = UnitState.load("U", unit.dump(vocabulary), vocabulary)
    for name in ("other_cost", "other_by_kind", "cost_items", "max_latency_ms", "verdict",
                 "user", "customer", "booked", "decider"):
        assert getattr(again, name) == getattr(unit, name), name
    # A summary written before this format: the new fields are empty, and the booking is
    # what the old rule booked (decided, and accepted by the status alone).
    old = _money_as_text(ormsgpack.unpackb(unit.dump(vocabulary)))
    old[0] = PREVIOUS_FORMAT
    old[11] = old[11][:7]
    loaded = UnitState.load("U", ormsgpack.packb(old[:-1]), vocabulary)
    assert loaded.cost_items == 0 and loaded.verdict is None
    assert (loaded.cost, loaded.value) == (unit.cost, unit.value)
    assert loaded.booked == (unit.decider.occurred_ms, "support", "triage",
                             (1, 1, *[0] * (len(BOOKED_FIELDS) - 2)), (), -1)


def _money(atto: int | None) -> str | None:
    """An amount as formats 3 to 5 stored it: decimal text."""
    return None if atto is None else atto_text(atto)


def _text(stored: int | str | None) -> str | None:
    return _money(stored) if type(stored) is int else stored  # type: ignore[return-value]


def _money_as_text(record: list[Any]) -> list[Any]:
    """A format 6 record with every amount as text: the record format 5 wrote."""
    assert record[0] == FORMAT
    record[0] = FORMAT_5
    record[7][:6] = [_text(x) for x in record[7][:6]]
    for entry in record[9]:
        entry[4] = _text(entry[4])
    added = (record[13] or []) + [None] * 10
    if added[1] is not None:  # the booking: its money figures and its cost
        figures = added[1][3]
        for i in (5, 6):
            if i < len(figures):
                figures[i] = _text(figures[i])
        added[1][5] = _text(added[1][5])
    if added[5] is not None:
        added[5] = _text(added[5])
    for pair in added[6] or []:
        pair[1] = _text(pair[1])
    if added[8] is not None:  # the verdict's value at risk
        added[8][3] = _text(added[8][3])
    if record[13] is not None:
        record[13] = added[:len(record[13])]
    return record


def _format_5(unit: UnitState, vocabulary: Vocabulary) -> bytes:
    return ormsgpack.packb(_money_as_text(ormsgpack.unpackb(unit.dump(vocabulary))))


def _format_4(unit: UnitState, vocabulary: Vocabulary) -> bytes:
    """The summary format 4 (until 2026-12-02) wrote for ``unit``: its value fields in
    their first order, every one present, the booking in full, amounts as text."""
    ref, t0 = vocabulary.ref, unit.first_ms
    record = _money_as_text(ormsgpack.unpackb(unit.dump(vocabulary)))
    record[0] = FORMAT_4
    seen = sorted(unit.seen)
    verdict = None
    if unit.verdict is not None:
        verdict = [unit.verdict.occurred_ms - t0, seen.index(unit.verdict.event_hash),
                   ref(unit.verdict.verdict), _money(unit.verdict.value_at_risk)]
    booked = None
    if unit.booked is not None:
        b_at, b_team, b_workflow, figures, b_dims, b_cost = unit.booked
        booked = [b_at - t0, ref(b_team), ref(b_workflow),
                  [_money(x) if i in (5, 6) else x for i, x in enumerate(figures)],
                  [ref(x) for x in b_dims], _money(b_cost)]
    record[-1] = [_money(unit.other_cost),
                  [[ref(k), _money(v)] for k, v in unit.other_by_kind.items()],
                  unit.cost_items, unit.max_latency_ms, verdict, ref(unit.user),
                  ref(unit.customer), [ref(x) for x in unit.extra_dims], booked, unit.stage]
    return ormsgpack.packb(record)


FIELDS = ("other_cost", "other_by_kind", "cost_items", "max_latency_ms", "verdict", "user",
          "customer", "extra_dims", "booked", "decider", "stage")


def test_summaries_leave_out_what_the_unit_says_and_formats_4_and_5_still_load() -> None:
    harness = Harness(workflows=(rule(max_latency_ms=100),))
    harness.send([
        # A plain decided unit: its booking is its decider's time, series and cost.
        call("p1", "plain", 0, latency_ms=50), outcome("po", "plain", 10, value="3"),
        # One whose booking says more than its fields: a verdict, a user and a customer,
        # a cost item, a latency bar failed.
        call("c1", "U", 0, latency_ms=150, user="ana", customer="acme"),
        cost("t1", "U", 1, kind="retrieval"), outcome("o1", "U", 10),
        verdict("v1", "U", 20, value_at_risk="2", currency="USD")])
    vocabulary = Vocabulary()
    for uid in ("plain", "U"):
        unit = harness.engines[0].units.get(uid)
        assert unit is not None and unit.booked is not None
        new, five, old = (unit.dump(vocabulary), _format_5(unit, vocabulary),
                          _format_4(unit, vocabulary))
        for data in (new, five, old):
            again = UnitState.load(uid, data, vocabulary)
            for name in FIELDS:
                assert getattr(again, name) == getattr(unit, name), (uid, name)
        assert ormsgpack.unpackb(new)[0] == FORMAT
        assert len(five) < len(old), uid
    plain = harness.engines[0].units.get("plain")
    assert plain is not None
    # Its booking's time, series and cost are left out, and its figures' trailing zeros.
    assert len(_format_4(plain, vocabulary)) - len(_format_5(plain, vocabulary)) >= 15


def test_a_units_money_of_any_size_survives_its_summary_exactly() -> None:
    # Decimal's normalize rounds to 28 digits: a summary once wrote 10^22 + 1 atto (ten
    # thousand currency units and one atto) as 10^22, and a unit's cost shifted.
    harness = Harness()
    harness.send([call("c1", "U", 0), outcome("o1", "U", 10)])
    unit = harness.engines[0].units.get("U")
    assert unit is not None
    amounts = (10**22 + 1, -(10**40 + 7), 10**18, 1, -1, 1234500000000000, 0,
               2**63 - 1, 2**63, -(2**63), -(2**63) - 1)  # 64 bits' edges: integer or text
    vocabulary = Vocabulary()
    for amount in amounts:
        unit.cost = unit.value = unit.other_cost = amount
        again = UnitState.load("U", unit.dump(vocabulary), vocabulary)
        assert (again.cost, again.value, again.other_cost) == (amount, amount, amount)


FORMAT_5_UNITS = Path(__file__).parent / "fixtures" / "unit_format5.json"


def test_units_the_previous_code_wrote_in_format_5_load_to_the_same_state() -> None:
    # tests/fixtures/unit_format5.json: events, and the bytes f46d175's UnitState.dump
    # wrote for the units they make (amounts as text): a decided unit, one with a cost
    # item, a user, a customer and a verdict, one past 64 bits of atto (13.5 of cost,
    # 123,456.789 of value) with two models, a pending one with a call awaiting a price.
    fixture = json.loads(FORMAT_5_UNITS.read_text())
    harness = Harness(workflows=(rule(max_latency_ms=100),))
    harness.send(fixture["events"])
    vocabulary = Vocabulary()
    vocabulary.load([orjson.dumps(fixture["vocabulary"])])
    for uid, hex_bytes in fixture["units"].items():
        data = bytes.fromhex(hex_bytes)
        assert ormsgpack.unpackb(data)[0] == FORMAT_5
        unit = harness.engines[0].units.get(uid)
        assert unit is not None
        loaded = UnitState.load(uid, data, vocabulary)
        for name in UnitState.__slots__:
            assert getattr(loaded, name) == getattr(unit, name), (uid, name)
        # Written again, it is format 6, and reads back to the same state.
        again = UnitState.load(uid, loaded.dump(vocabulary), vocabulary)
        assert ormsgpack.unpackb(loaded.dump(vocabulary))[0] == FORMAT
        for name in UnitState.__slots__:
            assert getattr(again, name) == getattr(unit, name), (uid, name)


def test_a_units_amounts_are_integers_within_64_bits_and_text_past_them() -> None:
    harness = Harness()
    harness.send([call("c1", "small", 0), outcome("o1", "small", 10, value="9"),
                  call("c2", "large", 0), outcome("o2", "large", 10, value="9.3")])
    vocabulary = Vocabulary()
    small, large = (harness.engines[0].units.get(uid) for uid in ("small", "large"))
    assert small is not None and large is not None
    small_money = ormsgpack.unpackb(small.dump(vocabulary))[7]
    large_money = ormsgpack.unpackb(large.dump(vocabulary))[7]
    assert small_money[0] == small.cost and small_money[3] == 9 * 10**18
    assert large_money[3] == "9.3"  # 9.3 * 10^18 atto passes 2^63
    assert UnitState.load("large", large.dump(vocabulary), vocabulary).value == 93 * 10**17


@pytest.mark.parametrize(("atto", "text"), [
    (0, "0"), (1, "0.000000000000000001"), (-5 * 10**17, "-0.5"), (10**19, "10"),
    (1212400000000000, "0.0012124"), (10**40 + 3, "1" + "0" * 22 + ".000000000000000003")])
def test_money_text_is_the_shortest_exact_decimal_and_reads_back(atto: int, text: str) -> None:
    assert atto_text(atto) == text
    assert atto_of_text(text) == atto
    assert Decimal(text).scaleb(18, context=Context(prec=100)) == atto


def test_money_text_in_another_shape_still_reads() -> None:
    assert atto_of_text("1E+1") == 10 * 10**18
    assert atto_of_text("2.50") == 25 * 10**17
    assert atto_of_text("-0.0000000000000000015") == -2  # half-even at 10^-18
