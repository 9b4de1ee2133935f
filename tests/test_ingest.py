"""HTTP and OTLP ingest without a broker: request bodies to per-event results, batches
keyed as the publisher keys them, the token policy, the sender's delivery report and
the OTLP agent's handler (a recording producer, a list sink, real metrics)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr, TypeAdapter

from schemas.errors import PublishError
from schemas.events import CostItem
from schemas.ingest import (
    KINDS,
    MAX_EVENTS_PER_REQUEST,
    BodyError,
    ItemResult,
    Routed,
    decode_events,
    plan_batches,
)
from schemas.outputs import DeadLetter
from schemas.partitioner import partition_for
from streams.kafka.keyed_sender import KeyedSender
from streams.kafka.otlp_handler import OtlpHandler
from streams.kafka.topics import Topics
from streams.ops.http_auth import HttpAuth, is_loopback
from streams.ops.ingest import summary
from streams.ops.metrics import Metrics
from streams.settings import Settings
from tests.core_harness import call, outcome
from tests.test_handlers import Acks, ListSink, Message, RecordingProducer, metric
from tests.test_otlp import CONFIG, add_resource, chat, collector_json, make_span

TOPICS = Topics("t.", 4)


def ndjson(*items: Any) -> bytes:
    return b"\n".join(orjson.dumps(i) for i in items) + b"\n"


# -- request bodies -------------------------------------------------------------------------


def test_ndjson_of_calls_and_outcomes_is_judged_event_by_event() -> None:
    body = ndjson(call("c1", "U1", 0), outcome("o1", "U1", 10)) + b"\n" + ndjson(
        call("c2", "U1", 5, input_tokens=-1)) + b"{not json\n" + ndjson([1, 2])
    decoded = decode_events(body)
    assert [(r.index, r.line, r.result, r.kind) for r in decoded.results] == [
        (0, 1, "accepted", "model_call"), (1, 2, "accepted", "outcome"),
        (2, 4, "rejected", "model_call"), (3, 5, "rejected", None),
        (4, 6, "rejected", None)]
    assert "input_tokens" in (decoded.results[2].reason or "")
    assert decoded.results[2].event_id == "c2"
    assert decoded.results[3].reason.startswith("not JSON")  # type: ignore[union-attr]
    assert decoded.results[4].reason == "expected a JSON object, got list"
    assert [(r.topic, r.work_unit_id) for r in decoded.routed] == [("calls", "U1"),
                                                                   ("outcomes", "U1")]


def test_an_array_an_object_and_an_envelope_are_bodies_too() -> None:
    events = [call("c1", "U1", 0), outcome("o1", "U1", 10)]
    for body in (orjson.dumps(events), orjson.dumps({"envelope": "tokenyield/1",
                                                     "events": events})):
        decoded = decode_events(body)
        assert [r.result for r in decoded.results] == ["accepted", "accepted"]
        assert all(r.line is None for r in decoded.results)
    pretty = orjson.dumps(call("c1", "U1", 0), option=orjson.OPT_INDENT_2)
    assert b"\n" in pretty  # one object over several lines is not NDJSON
    assert [r.result for r in decode_events(pretty).results] == ["accepted"]


def test_the_kind_field_decides_and_an_unknown_kind_is_rejected_not_guessed() -> None:
    # An outcome-shaped event explicitly sent as a call is judged as a call.
    decoded = decode_events(ndjson({**outcome("o1", "U1", 0), "kind": "model_call"},
                                   {**call("c1", "U1", 0), "kind": "cost"},
                                   {**outcome("o2", "U1", 0), "kind": "outcme"}))
    assert [(r.result, r.kind) for r in decoded.results] == [
        ("rejected", "model_call"), ("rejected", None), ("rejected", None)]
    assert "provider" in (decoded.results[0].reason or "")
    assert "'cost' is not one of model_call, cost_item, outcome (nor a cost item's: " \
        "tool_call," in (decoded.results[1].reason or "")
    assert "'outcme' is not one of" in (decoded.results[2].reason or "")
    assert [k.name for k in KINDS] == ["model_call", "cost_item", "outcome"]


def cost(event_id: str, unit: str | None, **fields: Any) -> dict[str, Any]:
    item = {"event_id": event_id, "occurred_at": "2026-12-01T10:00:00Z", "team": "support",
            "workflow": "triage", "kind": "tool_call", "amount": "0.004", "currency": "USD",
            **fields}
    return {**item, "work_unit_id": unit} if unit is not None else item


def test_cost_items_are_known_by_their_shape_and_keyed_as_the_publisher_keys_them() -> None:
    # A cost item's own ``kind`` is its cost kind; an amount or a unit price says the
    # same without one. A shared item (no unit) goes by its bucket, as the publisher
    # sends it; a bad one is rejected with the contract's reason.
    shared = cost("k2", None, kind="seat", amount=None, quantity="3", unit_price="0.5")
    decoded = decode_events(ndjson(
        cost("k1", "U1"), shared, cost("k3", "U1", kind="gpuu"),
        {**cost("k4", "U1"), "amount": "1", "unit_price": "1", "quantity": "1"}))
    assert [(r.result, r.kind) for r in decoded.results] == [
        ("accepted", "cost_item"), ("accepted", "cost_item"), ("rejected", "cost_item"),
        ("rejected", "cost_item")]
    assert "kind" in (decoded.results[2].reason or "")
    assert "not both" in (decoded.results[3].reason or "")
    item = CostItem.model_validate(shared)
    assert [(r.topic, r.work_unit_id) for r in decoded.routed] == [
        ("costs", "U1"), ("costs", item.key)]
    assert item.key.startswith("~shared:support:triage:")
    assert decoded.results[1].work_unit_id is None
    sent = orjson.loads(decoded.routed[1].value)
    assert (Decimal(sent["quantity"]), Decimal(sent["unit_price"])) == (3, Decimal("0.5"))


def test_opentelemetry_names_are_calls_and_long_money_stays_exact() -> None:
    otel = {"event_id": "g1", "work_unit_id": "U1", "occurred_at": "2026-12-01T10:00:00Z",
            "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 2,
            "team": "support", "workflow": "triage"}
    money = b'{"event_id": "c1", "work_unit_id": "U1", "occurred_at": ' \
            b'"2026-12-01T10:00:00Z", "provider": "openai", "model": "gpt-4o", ' \
            b'"input_tokens": 1, "output_tokens": 1, "team": "t", "workflow": "w", ' \
            b'"reported_cost": 0.123456789012345678, "currency": "USD"}'
    decoded = decode_events(ndjson(otel) + money)
    assert [r.result for r in decoded.results] == ["accepted", "accepted"]
    sent = orjson.loads(decoded.routed[1].value)
    assert Decimal(sent["reported_cost"]) == Decimal("0.123456789012345678")  # not a float
    assert orjson.loads(decoded.routed[0].value)["model"] == "gpt-4o"


@pytest.mark.parametrize(("body", "status", "reason"), [
    (b"", 400, "empty body"), (b"  \n ", 400, "empty body"),
    (b'[{"event_id": 1}, ', 400, "starts a JSON array"),
    (orjson.dumps({"events": {}}), 400, "must be a JSON array"),
    (orjson.dumps([{}] * (MAX_EVENTS_PER_REQUEST + 1)), 413, "over the limit"),
])
def test_a_body_with_no_events_to_judge_is_refused_as_a_whole(body: bytes, status: int,
                                                               reason: str) -> None:
    with pytest.raises(BodyError) as refused:
        decode_events(body)
    assert refused.value.status == status and reason in refused.value.reason


def test_a_number_no_decimal_holds_rejects_its_line_not_the_request() -> None:
    huge = b'{"event_id": "c2", "input_tokens": 1e99999999999999999999}\n'
    body = ndjson(call("c1", "U1", 0)) + huge
    decoded = decode_events(body)
    assert [r.result for r in decoded.results] == ["accepted", "rejected"]
    assert "out of range" in (decoded.results[1].reason or "")
    with pytest.raises(BodyError, match="out of range"):
        decode_events(b'[{"event_id": "c3", "input_tokens": 1e99999999999999999999}]')


def test_the_answer_status_follows_the_results() -> None:
    def results(*kinds: str) -> list[ItemResult]:
        return [ItemResult(i, k) for i, k in enumerate(kinds)]  # type: ignore[arg-type]

    assert summary(results("accepted", "rejected"))[0] == 200
    assert summary(results("rejected", "rejected"))[0] == 422
    assert summary(results("ignored"))[0] == 200
    assert summary(results("accepted", "failed"))[0] == 503
    _status, document = summary(results("accepted", "rejected", "rejected"))
    assert (document["accepted"], document["rejected"], len(document["results"])) == (1, 2, 3)


# -- batches keyed by work unit ---------------------------------------------------------------


def routed(n: int, topic: str = "calls", size: int = 10) -> list[Routed]:
    return [Routed(i, topic, f"unit-{i % 7}", b"x" * size) for i in range(n)]


def test_batches_go_to_the_murmur2_partition_of_their_unit_in_order() -> None:
    events = routed(40) + [Routed(40 + i, "outcomes", f"unit-{i}", b"{}") for i in range(3)]
    batches = plan_batches(events, 4)
    for batch in batches:
        units = {events[i].work_unit_id for i in batch.indexes}
        assert {partition_for(u, 4) for u in units} == {batch.partition}
        assert {events[i].topic for i in batch.indexes} == {batch.topic}
        assert batch.indexes == sorted(batch.indexes)  # arrival order within a partition
    assert sorted(i for b in batches for i in b.indexes) == list(range(43))


def test_batches_are_cut_at_the_event_and_byte_limits() -> None:
    by_count = plan_batches([Routed(i, "calls", "u", b"1") for i in range(7)], 4, max_events=3)
    assert [len(b.indexes) for b in by_count] == [3, 3, 1]
    assert orjson.loads(by_count[0].value) == [1, 1, 1]
    by_size = plan_batches([Routed(i, "calls", "u", b"2" * 40) for i in range(5)], 4,
                           max_bytes=100)
    assert [len(b.indexes) for b in by_size] == [3, 2]


# -- the token policy -------------------------------------------------------------------------


def test_without_tokens_only_a_loopback_web_host_is_open() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    assert not is_loopback("worker.internal")  # a name may resolve anywhere
    assert HttpAuth((), "127.0.0.1").check({}).ok
    refused = HttpAuth((), "0.0.0.0").check({"Authorization": "Bearer anything"})
    assert (refused.verdict, refused.status) == ("refused", 403)
    assert "TOKENYIELD_HTTP_TOKENS" in refused.message


def test_with_tokens_a_request_needs_one_whatever_the_host() -> None:
    auth = HttpAuth((SecretStr("tok-one"), SecretStr("tok-two")), "127.0.0.1")
    assert auth.check({"Authorization": "Bearer tok-two"}).ok
    assert auth.check({"Authorization": "bearer tok-one"}).ok  # the scheme is not case-sensitive
    for headers, verdict in (({}, "missing"), ({"Authorization": "Bearer tok-on"}, "invalid"),
                             ({"Authorization": "Bearer tok-one2"}, "invalid"),
                             ({"Authorization": "Basic dG9rLW9uZQ=="}, "missing")):
        result = auth.check(headers)
        assert (result.verdict, result.status) == (verdict, 401), headers
        assert "tok-" not in result.message  # no token is ever echoed


def test_a_github_signature_made_with_a_token_authenticates_its_body() -> None:
    auth = HttpAuth((SecretStr("gh-secret"),), "0.0.0.0")
    body = b'{"action": "closed"}'
    signature = "sha256=" + hmac.new(b"gh-secret", body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": signature}
    assert auth.needs_body(headers)
    assert auth.check(headers, body).ok
    assert auth.check(headers, body + b" ").verdict == "invalid"
    assert auth.check({"X-Hub-Signature-256": "sha1=" + signature[7:]}, body).verdict == \
        "invalid"
    assert not auth.needs_body({"Authorization": "Bearer x", **headers})


def test_tokens_are_secrets_in_the_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, http_tokens=(SecretStr("s3cret-token"),))
    assert "s3cret-token" not in repr(settings) and "s3cret-token" not in str(settings.public())


# -- the sender ---------------------------------------------------------------------------------


class FailingProducer(RecordingProducer):
    """Refuses every send to one partition, as a broker that lost its leader would."""

    def __init__(self, bad_partition: int) -> None:
        super().__init__()
        self.bad = bad_partition

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None) -> Any:
        if partition == self.bad:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(ConnectionError("leader not available"))
            return future
        return await super().send(topic, key, value, partition)


def test_the_sender_reports_which_events_the_broker_did_not_take() -> None:
    events = [Routed(i, "calls", f"unit-{i}", orjson.dumps({"i": i})) for i in range(12)]
    bad = partition_for("unit-0", 4)
    producer = FailingProducer(bad)
    delivery = asyncio.run(KeyedSender(producer, TOPICS).send(events))
    failed = {i for i in range(12) if partition_for(f"unit-{i}", 4) == bad}
    assert set(delivery.failed) == failed and failed
    assert sorted(delivery.delivered) == sorted(set(range(12)) - failed)
    assert all("leader not available" in why for why in delivery.failed.values())
    assert {topic for topic, *_ in producer.sent} == {"t.calls"}
    assert delivery.by_topic == {"t.calls": 12 - len(failed)}


# -- the OTLP agent's handler ----------------------------------------------------------------------


def collector_message() -> Any:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    request = ExportTraceServiceRequest()
    add_resource(request, {"service.name": "checkout-api"}, {"openai": [
        make_span(1, 1, chat("openai", "gpt-4o", 100, 10, **{
            "tokenyield.work_unit_id": "order-1"})),
        make_span(2, 1, chat("openai", "gpt-4o", 200, 20, **{
            "tokenyield.work_unit_id": "order-2"}), offset_ms=5),
        make_span(3, 1, {"http.request.method": "POST"}),
        make_span(4, 1, chat("openai", "gpt-4o", -5, 1, **{
            "tokenyield.work_unit_id": "order-3"}), offset_ms=7),
    ]})
    return request


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_the_otlp_handler_rekeys_calls_skips_and_dead_letters(encoding: str) -> None:
    request = collector_message()
    value = request.SerializeToString() if encoding == "otlp_proto" else collector_json(request)
    producer, sink, metrics, acks = RecordingProducer(), ListSink(), Metrics(), Acks()
    topics = Topics("t.", 4, otlp="spans")
    handler = OtlpHandler(CONFIG, topics, producer, sink, metrics, clock=lambda: 1.8e9)
    asyncio.run(handler.handle(Message("spans", 2, 17), value, acks.of(17)))

    assert acks.done == [17]
    calls = producer.to("t.calls")
    units = {orjson.loads(v)[0]["work_unit_id"]: p for _, v, p in calls}
    assert units == {"order-1": partition_for("order-1", 4),
                     "order-2": partition_for("order-2", 4)}
    [(_, letters, dl_partition)] = producer.to("t.dead-letter")
    [letter] = TypeAdapter(list[DeadLetter]).validate_json(letters)
    assert (letter.source_topic, letter.partition, letter.offset, letter.index) == \
        ("spans", 2, 17, 3)
    assert letter.error_kind == "invalid_call" and "input_tokens" in letter.reason
    assert dl_partition == 2
    # The raw bytes are a one-span export: fixed, it replays through the decoder.
    from schemas.otlp import parse_export
    replay, _ = parse_export(base64.b64decode(letter.raw))
    assert replay is not None and len(replay.resource_spans[0].scope_spans[0].spans) == 1
    [batch] = sink.batches
    assert batch.dead_letters == [letter] and batch.ranges == {"spans[2]": (17, 17)}
    assert metric(metrics, "tokenyield_otlp_spans_skipped_total",
                  {"source": "spans", "reason": "no_gen_ai_usage"}) == 1
    assert metric(metrics, "tokenyield_events_in_total", {"topic": "spans"}) == 4
    assert metric(metrics, "tokenyield_events_rejected_total",
                  {"topic": "spans", "kind": "invalid_call"}) == 1
    assert metric(metrics, "tokenyield_events_out_total", {"topic": "t.calls"}) == 2


def test_a_message_that_is_no_export_is_one_dead_letter_with_its_coordinates() -> None:
    producer, sink, acks = RecordingProducer(), ListSink(), Acks()
    handler = OtlpHandler(CONFIG, Topics("t.", 4, otlp="spans"), producer, sink, Metrics())
    asyncio.run(handler.handle(Message("spans", 5, 3), b'{"resourceSpans": 7', acks.of(3)))
    [(_, letters, partition)] = producer.to("t.dead-letter")
    [letter] = TypeAdapter(list[DeadLetter]).validate_json(letters)
    assert (letter.error_kind, letter.partition, letter.offset, letter.index) == \
        ("malformed_export", 5, 3, None)
    assert partition == 5 % 4 and acks.done == [3] and producer.to("t.calls") == []
    assert base64.b64decode(letter.raw) == b'{"resourceSpans": 7'


def test_a_call_kafka_refuses_stops_the_handler_before_the_ack() -> None:
    request = collector_message()
    producer, acks = FailingProducer(partition_for("order-1", 4)), Acks()
    handler = OtlpHandler(CONFIG, Topics("t.", 4, otlp="spans"), producer, ListSink(),
                          Metrics())
    with pytest.raises(PublishError):
        asyncio.run(handler.handle(Message("spans", 0, 0), request.SerializeToString(),
                                   acks.of(0)))
    assert acks.done == []  # read again by the next worker: the same ids, counted once
