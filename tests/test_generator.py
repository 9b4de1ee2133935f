"""The traffic generator: deterministic scenarios, their shape, the ground truth, and a
round trip through the real embedded broker."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from schemas.codec import call_codec, outcome_codec
from schemas.events import ModelCall, Outcome
from schemas.partitioner import partition_for
from schemas.pricing import PriceBook, price_call
from streams.core.engine import PartitionEngine, Source
from streams.core.engine_config import EngineConfig
from streams.kafka.tansu_broker import EmbeddedBroker
from streams.traffic.generator import Progress, TokenBucket, publish, run_generator
from streams.traffic.scenarios import (
    UNPRICED_MODEL,
    EncodedEvent,
    GenerationStats,
    RawEvent,
    Scenario,
    encode_all,
    encoded_events,
    events,
    ground_truth,
    raw_events,
)

END = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
BOOK = PriceBook.load()


def scenario(**fields: object) -> Scenario:
    return Scenario(end=END, **fields)  # type: ignore[arg-type]


@cache
def default_run() -> tuple[list[RawEvent], GenerationStats]:
    stats = GenerationStats()
    return list(raw_events(scenario(work_units=3000), stats)), stats


def occurred_ms(event: RawEvent) -> int:
    return int(event.data["occurred_at"].timestamp() * 1000)


# -- determinism -------------------------------------------------------------------------

def test_a_seed_gives_the_same_bytes_and_another_seed_other_ones() -> None:
    first = [e.value for e in encoded_events(scenario(work_units=200))]
    again = [e.value for e in encoded_events(scenario(work_units=200))]
    other = [e.value for e in encoded_events(scenario(work_units=200, seed=8))]
    assert first == again
    assert first != other


def test_the_end_moves_timestamps_only() -> None:
    early = list(raw_events(scenario(work_units=100)))
    later = list(raw_events(Scenario(work_units=100, end=END + timedelta(hours=5))))
    assert [e.data["event_id"] for e in early] == [e.data["event_id"] for e in later]
    shifts = {occurred_ms(b) - occurred_ms(a) for a, b in zip(early, later, strict=True)}
    assert shifts == {5 * 3600 * 1000}


def test_without_an_end_the_traffic_ends_before_now() -> None:
    now_ms = time.time() * 1000
    times = [occurred_ms(e) for e in raw_events(Scenario(work_units=300, runaway=None))]
    assert now_ms - 2 * 3600 * 1000 < min(times)
    assert max(times) < now_ms + 60 * 1000  # never rejected as a future event


def test_the_packed_batch_holds_the_same_events() -> None:
    source = scenario(work_units=100)
    batch = encode_all(source, limit=300)
    assert len(batch) == 300
    assert [(e.kind, e.work_unit_id, e.value) for e in batch] == \
        [(e.kind, e.work_unit_id, e.value) for e in encoded_events(source)][:300]


def test_sized_scenarios_have_at_least_the_events_asked_for() -> None:
    assert len(encode_all(Scenario.for_events(5000, end=END))) >= 5000


# -- the contract ------------------------------------------------------------------------

def test_every_event_validates_as_models_and_as_bytes() -> None:
    source = scenario(work_units=400, unpriced_share=0.05)
    models = list(events(source))
    assert {type(m) for m in models} == {ModelCall, Outcome}
    for model, encoded in zip(models, encoded_events(source), strict=True):
        codec = call_codec if encoded.kind == "calls" else outcome_codec
        decoded = codec.decode(encoded.value)
        assert not decoded.errors
        assert decoded.events == [model]
        assert partition_for(encoded.work_unit_id, 4) == \
            partition_for(model.work_unit_id, 4)


def test_every_model_of_the_default_workflows_is_priced_in_the_shipped_catalog() -> None:
    for workflow in Scenario().workflows:
        for option in workflow.models:
            assert BOOK.entry_for(option.provider, option.model, END) is not None, option
    raw, _ = default_run()
    assert {e.data["model"] for e in raw if e.kind == "calls"} >= {"gpt-4o", "gpt-5"}
    assert ground_truth(raw[:3000]).unpriced_calls == 0


def test_unpriced_calls_only_when_asked_for() -> None:
    truth = ground_truth(raw_events(scenario(work_units=300, unpriced_share=0.1)))
    assert 0.05 * truth.calls < truth.unpriced_calls < 0.2 * truth.calls
    assert BOOK.entry_for("internal", UNPRICED_MODEL, END) is None


def test_token_parts_look_real() -> None:
    raw, _ = default_run()
    calls = [e.data for e in raw if e.kind == "calls"]
    assert sum(c["cached_input_tokens"] > 0 for c in calls) > 0.2 * len(calls)
    assert any(c["cache_write_tokens"] for c in calls)
    reasoning = {c["model"] for c in calls if c["reasoning_tokens"]}
    assert "gpt-5" in reasoning and "gpt-4o" not in reasoning
    assert all(c["system_prompt_tokens"] and c["context_tokens"] for c in calls[:100])
    retries = [c for c in calls if c["attempt"] > 1]
    assert retries and {c["status"] for c in calls if c["status"] != "ok"} == \
        {"error", "timeout"}


# -- configured shares -------------------------------------------------------------------

def test_configured_shares_roughly_hold() -> None:
    raw, stats = default_run()
    published = len(raw)
    distinct = len({(e.work_unit_id, e.data["event_id"]) for e in raw})
    assert stats.events == published
    assert published - distinct == stats.duplicates
    assert 0.01 < stats.duplicates / distinct < 0.03  # 2%
    assert 0.07 < stats.delayed / distinct < 0.13  # 10%
    ordinary = stats.units - 1  # the runaway never reports
    assert 0.04 < (stats.no_outcome_units - 1) / ordinary < 0.08  # 6%
    assert 0.09 < stats.non_final_units / ordinary < 0.15  # 12%
    with_outcome = ordinary - stats.no_outcome_units + 1
    assert 0.03 < stats.outcome_first_units / with_outcome < 0.07  # 5%


def test_outcomes_really_come_first_for_some_units_and_are_final_last() -> None:
    raw, stats = default_run()
    first_kind: dict[str, str] = {}
    finals: Counter[str] = Counter()
    for event in raw:
        first_kind.setdefault(event.work_unit_id, event.kind)
    for event in {e.data["event_id"]: e for e in raw if e.kind == "outcomes"}.values():
        finals[event.work_unit_id] += event.data["is_final"]
    outcome_first = sum(kind == "outcomes" for kind in first_kind.values())
    assert 0.8 * stats.outcome_first_units <= outcome_first <= stats.outcome_first_units
    assert set(finals.values()) == {1}  # exactly one final outcome per reporting unit


def test_disorder_stays_within_twice_the_horizon() -> None:
    raw, _ = default_run()
    horizon_ms = Scenario().disorder_horizon_seconds * 1000
    newest = behind = worst = 0
    for event in raw:
        at = occurred_ms(event)
        if at < newest:
            behind += 1
            worst = max(worst, newest - at)
        newest = max(newest, at)
    assert behind > 0.05 * len(raw)  # really out of order...
    assert worst <= 2 * horizon_ms  # ...but never later than the engine's lateness


# -- injections --------------------------------------------------------------------------

def test_the_spend_spike_multiplies_units_and_tokens_in_its_window() -> None:
    raw, stats = default_run()
    spike = Scenario().spend_spike
    assert spike is not None
    start_ms = int(END.timestamp() * 1000) - 3600 * 1000
    begin = start_ms + int(spike.at * 3600 * 1000)
    window_ms = spike.duration_seconds * 1000
    units: dict[str, list[dict[str, object]]] = defaultdict(list)
    for event in raw:
        if event.kind == "calls" and event.data["workflow"] == spike.workflow:
            units[event.work_unit_id].append(event.data)
    first_ms = {uid: min(int(c["occurred_at"].timestamp() * 1000) for c in calls)  # type: ignore[attr-defined]
                for uid, calls in units.items()}
    during = [uid for uid, at in first_ms.items() if begin <= at < begin + window_ms]
    before = [uid for uid, at in first_ms.items() if begin - window_ms <= at < begin]
    assert len(during) > 3 * len(before)
    tagged = [uid for uid in units if units[uid][0].get("attributes", {}).get(
        "injection") == "spend_spike"]
    assert len(tagged) == stats.injected_units["spend_spike"] > 0


def test_the_runaway_unit_calls_500_times_and_never_reports() -> None:
    truth = ground_truth(raw_events(scenario(work_units=50)))
    runaways = [u for u in truth.units.values() if u.calls >= 500]
    assert len(runaways) == 1
    assert runaways[0].calls == 500 and not runaways[0].has_outcome


def test_the_retry_storm_hits_one_provider_in_its_window() -> None:
    raw, _ = default_run()
    calls = {e.data["event_id"]: e.data for e in raw if e.kind == "calls"}.values()
    stormy = [c for c in calls if c.get("attributes", {}).get("incident") == "retry_storm"]
    calm_openai = [c for c in calls if c["provider"] == "openai" and c not in stormy]
    assert {c["provider"] for c in stormy} == {"openai"}
    share = sum(c["attempt"] > 1 for c in stormy) / len(stormy)
    calm_share = sum(c["attempt"] > 1 for c in calm_openai) / len(calm_openai)
    assert share > 0.3 > 0.1 > calm_share


def test_context_bloat_grows_context_call_after_call() -> None:
    raw, stats = default_run()
    bloated: dict[str, list[int]] = defaultdict(list)
    for event in raw:
        if event.data.get("attributes", {}).get("injection") == "context_bloat":
            bloated[event.work_unit_id].append(event.data["context_tokens"])
    assert len(bloated) == stats.injected_units["context_bloat"] > 5
    means = [sum(ctx) / len(ctx) for ctx in bloated.values()]
    normal = [e.data["context_tokens"] for e in raw if e.kind == "calls"
              and e.data["workflow"] == "reply-draft" and "attributes" not in e.data]
    assert sum(means) / len(means) > 2 * sum(normal) / len(normal)


# -- ground truth ------------------------------------------------------------------------

def test_duplicates_are_not_counted_twice() -> None:
    raw = list(raw_events(scenario(work_units=500, duplicate_share=0.3)))
    once = list({(e.work_unit_id, e.data["event_id"]): e for e in raw}.values())
    truth, plain = ground_truth(raw), ground_truth(once)
    assert truth.duplicates == len(raw) - len(once) > 0
    assert plain.duplicates == 0
    assert (truth.calls, truth.outcomes, truth.spend, truth.human_cost, truth.value) == \
        (plain.calls, plain.outcomes, plain.spend, plain.human_cost, plain.value)
    assert truth.units == plain.units


def test_spend_is_the_sum_of_distinct_calls_prices() -> None:
    models = list(events(scenario(work_units=300)))
    distinct = {(m.work_unit_id, m.event_id): m for m in models if isinstance(m, ModelCall)}
    expected = sum((price_call(BOOK, c).cost for c in distinct.values()), Decimal(0))
    truth = ground_truth(models)
    assert truth.spend == expected > 0
    assert truth.calls == len(distinct)
    assert truth.spend == sum(u.model_cost for u in truth.units.values())


def test_truth_by_hand() -> None:
    at = END.isoformat()
    later = (END + timedelta(minutes=5)).isoformat()
    call = ModelCall(event_id="c1", work_unit_id="u", occurred_at=at, provider="openai",
                     model="gpt-4o", input_tokens=1_000_000, output_tokens=100_000,
                     team="t", workflow="w")
    retry = call.model_copy(update={"event_id": "c2", "attempt": 2, "status": "error"})
    interim = Outcome(event_id="o1", work_unit_id="u", occurred_at=later, team="t",
                      workflow="w", status="completed", is_final=False,
                      human_review_minutes=Decimal(3))
    final = Outcome(event_id="o2", work_unit_id="u", occurred_at=at, team="t", workflow="w",
                    status="rejected", human_review_minutes=Decimal("1.5"),
                    review_rate=Decimal(90), currency="USD", value=Decimal(0))
    truth = ground_truth([call, interim, call, retry, final, final],
                         default_review_rate=Decimal(40))
    unit = truth.units["u"]
    assert (truth.events, truth.duplicates, unit.calls, unit.retries, unit.failed_calls) == \
        (6, 2, 2, 1, 1)
    assert unit.model_cost == truth.spend == Decimal("7.0")  # 2 x (2.50 + 1.00)
    assert unit.human_cost == Decimal(2) + Decimal("2.25")
    assert (unit.outcome_status, unit.accepted, unit.is_final) == ("rejected", False, True)
    assert truth.attributed_units == 1 and truth.accepted_units == 0


def test_the_engine_ends_where_the_ground_truth_says() -> None:
    """The reference in use: the pure engine, fed the scenario in publication order."""
    encoded = list(encoded_events(scenario(work_units=600, unpriced_share=0.02)))
    truth = ground_truth(encoded)
    config = EngineConfig(partitions=4)
    now_ms = int((END + timedelta(days=1)).timestamp() * 1000)
    engines = [PartitionEngine(p, config, lambda: BOOK, lambda: now_ms) for p in range(4)]
    offsets: Counter[tuple[str, int]] = Counter()
    latest = {}
    for event in encoded:
        partition = partition_for(event.work_unit_id, 4)
        key = (event.kind, partition)
        out = engines[partition].process(event.kind, event.value,
                                         Source(event.kind, partition, offsets[key]))
        offsets[key] += 1
        assert not out.late and not out.dead_letters
        latest.update((a.work_unit_id, a) for a in out.attributions)
    assert sum(e.ledger.duplicates for e in engines) == truth.duplicates
    assert set(latest) == {uid for uid, u in truth.units.items() if u.has_outcome}
    for uid, attribution in latest.items():
        unit = truth.units[uid]
        assert (attribution.calls, attribution.retries, attribution.input_tokens,
                attribution.output_tokens, attribution.model_cost, attribution.human_cost,
                attribution.outcome_status, attribution.accepted, attribution.value,
                attribution.unpriced_calls) == \
            (unit.calls, unit.retries, unit.input_tokens, unit.output_tokens,
             unit.model_cost, unit.human_cost, unit.outcome_status, unit.accepted,
             unit.value, unit.unpriced_calls), uid


# -- publishing --------------------------------------------------------------------------

class FakePublisher:
    """Just enough of ``Publisher`` to count what ``publish`` hands over."""

    calls_topic, outcomes_topic, costs_topic = "p.calls", "p.outcomes", "p.costs"
    max_batch_events = 500

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes]] = []
        self.messages_sent = 0

    async def publish_raw(self, topic: str, work_unit_id: str, value: bytes) -> None:
        self.sent.append((topic, work_unit_id, value))

    async def publish(self, event: ModelCall | Outcome) -> None:
        topic = self.calls_topic if isinstance(event, ModelCall) else self.outcomes_topic
        self.sent.append((topic, event.work_unit_id, call_codec.encode(event)
                          if isinstance(event, ModelCall) else outcome_codec.encode(event)))

    async def flush(self) -> None:
        self.messages_sent = len(self.sent)


async def test_publish_counts_every_kind_of_input_and_reports_progress() -> None:
    source = scenario(work_units=300)
    batch = encode_all(source)
    seen: list[Progress] = []
    for items in (batch, list(encoded_events(source)), list(raw_events(source)),
                  list(events(source))):
        fake = FakePublisher()
        report = await publish(items, fake, progress=seen.append,  # type: ignore[arg-type]
                               progress_interval=0)
        assert report.events == len(batch) == len(fake.sent)
        assert report.calls == sum(t == "p.calls" for t, _, _ in fake.sent)
        assert [v for _, _, v in fake.sent][:3] != []
    assert seen[-1].events == len(batch)


async def test_the_token_bucket_paces_and_replay_follows_event_time() -> None:
    bucket = TokenBucket(2000, burst=1)
    started = time.monotonic()
    for _ in range(300):
        await bucket.take()
    assert time.monotonic() - started >= 0.12
    timed = [EncodedEvent("calls", "u", b"{}", ms) for ms in (0, 100, 400)]
    fake = FakePublisher()
    started = time.monotonic()
    await publish(timed, fake, replay_speed=2.0)  # type: ignore[arg-type]
    assert 0.18 <= time.monotonic() - started < 1.0


@pytest.mark.broker
async def test_a_scenario_arrives_whole_through_the_embedded_broker(prefix: str) -> None:
    source = scenario(work_units=150, runaway=None)
    expected = Counter((e.work_unit_id, e.data["event_id"]) for e in raw_events(source))
    with EmbeddedBroker() as broker:
        report = await run_generator(broker.bootstrap, source, partitions=4,
                                     topic_prefix=prefix)
        assert report.events == sum(expected.values())
        assert report.messages < report.events / 5  # envelopes, not one per event
        received = await read_events(broker.bootstrap, prefix, report.events)
    assert received == expected


async def read_events(bootstrap: str, prefix: str, expected: int,
                      timeout: float = 20.0) -> Counter[tuple[str, str]]:
    consumer = AIOKafkaConsumer(f"{prefix}calls", f"{prefix}outcomes",
                                bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    seen: Counter[tuple[str, str]] = Counter()
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while sum(seen.values()) < expected and asyncio.get_running_loop().time() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                codec = call_codec if tp.topic.endswith("calls") else outcome_codec
                for record in records:
                    decoded = codec.decode(record.value)
                    assert not decoded.errors
                    for event in decoded.events:
                        assert partition_for(event.work_unit_id, 4) == tp.partition
                        seen[(event.work_unit_id, event.event_id)] += 1
    finally:
        await consumer.stop()
    return seen


def test_value_traffic_carries_customers_cost_items_stages_and_audits() -> None:
    from collections import Counter

    from schemas.codec import CODECS
    from schemas.events import CostItem
    from streams.traffic.scenarios import ValueTraffic

    # A fixed end: without one the traffic ends "now", and two generations a second
    # apart differ (this test failed in CI when they straddled a second).
    scenario = Scenario(work_units=1500, value=ValueTraffic(), seed=11,
                        end=datetime(2026, 12, 1, 12, tzinfo=UTC)).quiet()
    stats = GenerationStats()
    found = list(raw_events(scenario, stats))
    assert found == list(raw_events(scenario))  # a function of the scenario
    kinds = Counter(r.kind for r in found)
    assert kinds["costs"] > 0 and stats.events == len(found)
    finals: dict[str, Any] = {}
    for r in found:
        decoded = CODECS[r.kind].decode(orjson.dumps(r.data))
        assert not decoded.errors, (r.kind, r.data, decoded.errors)
        event = decoded.events[0]
        if r.kind == "costs":
            assert isinstance(event, CostItem) and r.work_unit_id == event.key
        else:
            assert event.customer is not None and event.customer.startswith("customer-")
        if r.kind == "outcomes" and r.data.get("is_final") and "verdict" not in r.data:
            finals[r.work_unit_id] = r.data
    audits = [r.data for r in found if "verdict" in r.data]
    assert audits and all(a["work_unit_id"] in finals for a in audits)
    assert all(a["occurred_at"] > finals[a["work_unit_id"]]["occurred_at"] for a in audits)
    assert {"action_taken", "outcome_realised", "value_captured"} <= {
        f.get("stage") for f in finals.values()}
    shared = [r for r in found if r.kind == "costs" and "work_unit_id" not in r.data]
    assert shared and all(r.work_unit_id.startswith("~shared:") for r in shared)
    # The plain scenario is untouched by the value side: same events, none of its kinds.
    assert not any(r.kind == "costs" for r in raw_events(scenario.model_copy(
        update={"value": None})))
