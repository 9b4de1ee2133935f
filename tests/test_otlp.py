"""OTLP trace exports, as the Collector's Kafka exporter writes them, to model calls.

Exports are built with the opentelemetry-proto types and serialised both ways the
exporter does: ``otlp_proto`` (``SerializeToString``) and ``otlp_json`` (protobuf's JSON
mapping with hex ids, integer enums and int64 as strings, per the OTLP spec).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from schemas.errors import ConfigurationError
from schemas.events import MAX_ATTRIBUTE_VALUE_LENGTH, ModelCall
from schemas.otlp import OtlpConfig, decode_export, parse_export

START = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
START_NS = int(START.timestamp()) * 1_000_000_000 + 123_456_789  # sub-microsecond part
SERVICES = {"checkout-api": {"team": "payments", "workflow": "checkout"}}
CONFIG = OtlpConfig(service_dimensions=SERVICES)


# -- building Collector-shaped exports -----------------------------------------------------


def attribute(key: str, value: Any) -> KeyValue:
    pair = KeyValue(key=key)
    _set_value(pair.value, value)
    return pair


def _set_value(target: Any, value: Any) -> None:
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, list):
        for item in value:
            _set_value(target.array_value.values.add(), item)
    else:
        target.string_value = value


def trace_id(n: int) -> bytes:
    return bytes([0xA0 + n]) + bytes(14) + bytes([n])


def span_id(n: int) -> bytes:
    return bytes([0x5B]) + bytes(6) + bytes([n])


def make_span(n: int, trace: int, attributes: dict[str, Any], *, offset_ms: int = 0,
              duration_ns: int = 1_234_600_000, error: bool = False,
              name: str = "chat") -> Span:
    span = Span(trace_id=trace_id(trace), span_id=span_id(n), name=name,
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=START_NS + offset_ms * 1_000_000)
    span.end_time_unix_nano = span.start_time_unix_nano + duration_ns
    span.parent_span_id = span_id(0)
    span.attributes.extend(attribute(k, v) for k, v in attributes.items())
    if error:
        span.status.code = Status.STATUS_CODE_ERROR
        span.status.message = "upstream failed"
    else:
        span.status.code = Status.STATUS_CODE_OK
    return span


def add_resource(request: ExportTraceServiceRequest, attributes: dict[str, Any],
                 scopes: dict[str, list[Span]]) -> ResourceSpans:
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(attribute(k, v) for k, v in attributes.items())
    for scope_name, spans in scopes.items():
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = scope_name
        scope_spans.scope.version = "0.40b0"
        scope_spans.spans.extend(spans)
    return resource_spans


def chat(provider: str, model: str, input_tokens: int, output_tokens: int,
         **extra: Any) -> dict[str, Any]:
    return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider,
            "gen_ai.request.model": model, "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens, **extra}


def collector_export() -> ExportTraceServiceRequest:
    """Four resources, five scopes, nine spans: what one Collector batch may hold."""
    request = ExportTraceServiceRequest()
    add_resource(request, {"service.name": "checkout-api",
                           "deployment.environment.name": "prod"}, {
        "opentelemetry.instrumentation.aiohttp_server": [
            make_span(1, 1, {"http.request.method": "POST", "http.route": "/checkout"},
                      name="POST /checkout"),
        ],
        "opentelemetry.instrumentation.openai_v2": [
            make_span(2, 1, chat(
                "openai", "gpt-4o", 1200, 300,
                **{"gen_ai.response.model": "gpt-4o-2024-08-06",
                   "gen_ai.usage.cache_read.input_tokens": 1000,
                   "gen_ai.usage.reasoning.output_tokens": 120,
                   "gen_ai.conversation.id": "conv-1",
                   "openai.response.service_tier": "flex",
                   "gen_ai.response.finish_reasons": ["stop"],
                   "gen_ai.input.messages": "[{\"role\": \"user\", \"content\": \"secret\"}]"}),
                offset_ms=10),
        ],
        "opentelemetry.instrumentation.anthropic": [
            make_span(3, 1, chat(
                "anthropic", "claude-sonnet-4-5", 5000, 0,
                **{"gen_ai.usage.cache_read.input_tokens": 4000,
                   "gen_ai.usage.cache_creation.input_tokens": 500,
                   "tokenyield.work_unit_id": "order-42",
                   "error.type": "overloaded_error"}),
                offset_ms=20, error=True),
        ],
    })
    add_resource(request, {"service.name": "support-bot", "tokenyield.team": "support",
                           "tokenyield.workflow": "triage",
                           "tokenyield.work_unit_id": "ticket-7"}, {
        # OpenLLMetry before the 1.37 names: gen_ai.system, prompt/completion tokens.
        "opentelemetry.instrumentation.langchain": [
            make_span(4, 2, {"gen_ai.system": "Anthropic",
                             "gen_ai.request.model": "claude-haiku-4-5",
                             "gen_ai.usage.prompt_tokens": 800,
                             "gen_ai.usage.completion_tokens": 50,
                             "gen_ai.usage.cache_read_input_tokens": 600,
                             "gen_ai.usage.total_tokens": 850,
                             "tokenyield.owner": "ana"}, offset_ms=30),
            make_span(5, 2, {"gen_ai.operation.name": "invoke_agent",
                             "gen_ai.agent.name": "triager",
                             "gen_ai.usage.input_tokens": 800,
                             "gen_ai.usage.output_tokens": 50}, offset_ms=29,
                      name="invoke_agent triager"),
            make_span(6, 2, {"gen_ai.operation.name": "execute_tool",
                             "gen_ai.tool.name": "lookup_order"}, name="execute_tool"),
        ],
    })
    add_resource(request, {"service.name": "batch-jobs", "tokenyield.team": "research",
                           "tokenyield.workflow": "eval"}, {
        "genai-sdk": [
            make_span(7, 3, {**chat("gcp.gemini", "gemini-2.5-flash", 90, 10),
                             "error.type": "timeout", "gen_ai.agent.name": "grader"},
                      offset_ms=40, duration_ns=30_000_000_000, error=True),
        ],
    })
    add_resource(request, {"service.name": "unmapped-svc"}, {
        "opentelemetry.instrumentation.openai_v2": [
            make_span(8, 4, chat("openai", "gpt-4o-mini", 10, 5), offset_ms=50),
            make_span(9, 4, {"db.system.name": "postgresql"}, name="SELECT"),
        ],
    })
    return request


def collector_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as the spec (and the Collector's pdata marshaler) writes it: camelCase,
    integer enums, int64 as decimal strings, trace and span ids in hex."""
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return orjson.dumps(document)


def hex_id(raw: bytes) -> str:
    return raw.hex()


def expected_calls() -> list[dict[str, Any]]:
    """Every field of the calls ``collector_export`` must produce, in span order."""
    base = {"schema_version": "1", "attempt": 1, "agent": None, "reported_cost": None,
            "currency": None, "system_prompt_tokens": None, "context_tokens": None,
            "owner": "", "environment": "", "cache_write_tokens": 0,
            "cached_input_tokens": 0, "reasoning_tokens": 0, "cache_write_1h_tokens": 0,
            "service_tier": None, "reprices": None, "user": None, "customer": None}

    def ids(n: int, trace: int) -> dict[str, str]:
        return {"trace_id": hex_id(trace_id(trace)), "span_id": hex_id(span_id(n))}

    def at(offset_ms: int) -> datetime:
        return datetime(2026, 12, 1, 10, 0, 0, 123_456 + offset_ms * 1000, tzinfo=UTC)

    return [
        {**base, "event_id": f"otel:{hex_id(trace_id(1))}:{hex_id(span_id(2))}",
         "work_unit_id": "conv-1", "occurred_at": at(10), "provider": "openai",
         "model": "gpt-4o-2024-08-06", "input_tokens": 1200, "output_tokens": 300,
         "cached_input_tokens": 1000, "reasoning_tokens": 120, "latency_ms": 1235,
         "service_tier": "flex",  # openai.response.service_tier: priced at flex rates
         "status": "ok", "team": "payments", "workflow": "checkout", "task_type": "chat",
         "service": "checkout-api", "environment": "prod",
         "attributes": {**ids(2, 1), "openai.response.service_tier": "flex",
                        "gen_ai.response.finish_reasons": "stop"}},
        {**base, "event_id": f"otel:{hex_id(trace_id(1))}:{hex_id(span_id(3))}",
         "work_unit_id": "order-42", "occurred_at": at(20), "provider": "anthropic",
         "model": "claude-sonnet-4-5", "input_tokens": 5000, "output_tokens": 0,
         "cached_input_tokens": 4000, "cache_write_tokens": 500, "latency_ms": 1235,
         "status": "error", "team": "payments", "workflow": "checkout",
         "task_type": "chat", "service": "checkout-api", "environment": "prod",
         "attributes": {**ids(3, 1), "error.type": "overloaded_error"}},
        {**base, "event_id": f"otel:{hex_id(trace_id(2))}:{hex_id(span_id(4))}",
         "work_unit_id": "ticket-7", "occurred_at": at(30), "provider": "Anthropic",
         "model": "claude-haiku-4-5", "input_tokens": 800, "output_tokens": 50,
         "cached_input_tokens": 600, "latency_ms": 1235, "status": "ok",
         "team": "support", "workflow": "triage", "owner": "ana", "task_type": "",
         "service": "support-bot", "attributes": ids(4, 2)},
        {**base, "event_id": f"otel:{hex_id(trace_id(3))}:{hex_id(span_id(7))}",
         "work_unit_id": hex_id(trace_id(3)), "occurred_at": at(40),
         "provider": "gcp.gemini", "model": "gemini-2.5-flash", "input_tokens": 90,
         "output_tokens": 10, "latency_ms": 30_000, "status": "timeout",
         "team": "research", "workflow": "eval", "task_type": "chat", "agent": "grader",
         "service": "batch-jobs", "attributes": {**ids(7, 3), "error.type": "timeout"}},
    ]


# -- the whole export, both encodings ------------------------------------------------------


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_a_collector_export_becomes_exactly_the_expected_calls(encoding: str) -> None:
    request = collector_export()
    data = request.SerializeToString() if encoding == "otlp_proto" else collector_json(request)

    result = decode_export(data, CONFIG)

    assert [c.model_dump() for c in result.calls] == expected_calls()
    assert all(isinstance(c, ModelCall) for c in result.calls)
    assert result.skipped == {"no_gen_ai_usage": 3, "aggregate_operation:invoke_agent": 1}
    assert [(e.kind, e.trace_id, e.span_id, e.index) for e in result.errors] == [
        ("missing_dimension", hex_id(trace_id(4)), hex_id(span_id(8)), 7)]
    reason = result.errors[0].reason
    assert "no team" in reason and "no workflow" in reason
    assert "'unmapped-svc'" in reason and "service_dimensions" in reason
    assert result.spans == 9 == len(result.calls) + sum(result.skipped.values()) + 1


def test_both_encodings_give_identical_calls_and_the_json_is_the_spec_form() -> None:
    request = collector_export()
    text = collector_json(request)
    document = orjson.loads(text)
    first_span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    # What the OTLP spec prescribes, checked on the bytes this test decodes.
    assert first_span["traceId"] == trace_id(1).hex() and len(first_span["traceId"]) == 32
    assert first_span["spanId"] == span_id(1).hex()
    assert first_span["startTimeUnixNano"] == str(START_NS)
    assert first_span["kind"] == 3 and first_span["status"] == {"code": 1}
    token_value = document["resourceSpans"][0]["scopeSpans"][1]["spans"][0]["attributes"][3]
    assert token_value == {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1200"}}

    from_json = decode_export(text, CONFIG)
    from_proto = decode_export(request.SerializeToString(), CONFIG)
    assert from_json.calls == from_proto.calls
    assert from_json.skipped == from_proto.skipped


def test_hand_written_otlp_json_with_upper_case_hex_and_numeric_times() -> None:
    # The shape of opentelemetry-proto's examples/trace.json, written out by hand.
    text = b"""{"resourceSpans": [{
      "resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "checkout-api"}}]},
      "scopeSpans": [{
        "scope": {"name": "my.library", "version": "1.0.0"},
        "spans": [{
          "traceId": "5B8EFFF798038103D269B633813FC60C",
          "spanId": "EEE19B7EC3C1B174",
          "parentSpanId": "EEE19B7EC3C1B173",
          "name": "chat gpt-4o",
          "startTimeUnixNano": 1764583200000000000,
          "endTimeUnixNano": "1764583200250000000",
          "kind": 3,
          "attributes": [
            {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "42"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 7}}],
          "status": {"code": 2, "message": "boom"},
          "someFieldFromTheFuture": {"x": 1}
        }]}]}]}"""

    result = decode_export(text, CONFIG)

    assert result.errors == []
    [call] = result.calls
    assert call.event_id == "otel:5b8efff798038103d269b633813fc60c:eee19b7ec3c1b174"
    assert call.work_unit_id == "5b8efff798038103d269b633813fc60c"
    assert call.occurred_at == datetime(2025, 12, 1, 10, 0, tzinfo=UTC)
    assert (call.input_tokens, call.output_tokens, call.latency_ms) == (42, 7, 250)
    assert call.status == "error" and (call.team, call.workflow) == ("payments", "checkout")


def test_json_ids_are_read_as_hex_not_as_base64() -> None:
    # 32 hex digits are also valid base64 (24 bytes): plain json_format would accept
    # them and produce a wrong trace id.
    request = collector_export()
    [parsed_json, _] = parse_export(collector_json(request), "otlp_json")
    assert parsed_json is not None
    span = parsed_json.resource_spans[0].scope_spans[1].spans[0]
    assert span.trace_id == trace_id(1) and span.span_id == span_id(2)
    assert span.parent_span_id == span_id(0)


# -- work unit, team and workflow ----------------------------------------------------------


def single(attributes: dict[str, Any], resource: dict[str, Any] | None = None,
           scope: str = "s", **span_options: Any) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    add_resource(request, resource or {"service.name": "checkout-api"},
                 {scope: [make_span(1, 1, attributes, **span_options)]})
    return request


def decode_one(request: ExportTraceServiceRequest, config: OtlpConfig = CONFIG) -> Any:
    result = decode_export(request.SerializeToString(), config)
    assert result.spans == 1
    return result


def test_work_unit_sources_are_configurable_and_name_span_or_resource() -> None:
    request = single(chat("openai", "gpt-4o", 5, 1, **{
        "tokenyield.work_unit_id": "span-unit", "gen_ai.conversation.id": "conv"}),
        resource={"service.name": "checkout-api", "tokenyield.work_unit_id": "res-unit"})

    def unit(*sources: str) -> str:
        config = OtlpConfig(work_unit_sources=sources, service_dimensions=SERVICES)
        return decode_one(request, config).calls[0].work_unit_id

    assert unit("span:tokenyield.work_unit_id", "trace_id") == "span-unit"
    assert unit("resource:tokenyield.work_unit_id", "trace_id") == "res-unit"
    assert unit("span:gen_ai.conversation.id", "trace_id") == "conv"
    assert unit("span:absent", "resource:absent", "trace_id") == hex_id(trace_id(1))
    assert decode_one(request).calls[0].work_unit_id == "span-unit"  # the default order


def test_an_integer_work_unit_is_text_and_a_list_is_an_error() -> None:
    numeric = single(chat("openai", "gpt-4o", 5, 1, **{"tokenyield.work_unit_id": 1234}))
    assert decode_one(numeric).calls[0].work_unit_id == "1234"

    listed = single(chat("openai", "gpt-4o", 5, 1, **{"tokenyield.work_unit_id": ["a"]}))
    [error] = decode_one(listed).errors
    assert error.kind == "invalid_attribute"
    assert "span:tokenyield.work_unit_id is a list" in error.reason


def test_without_trace_id_in_the_sources_a_span_with_no_unit_is_an_error() -> None:
    config = OtlpConfig(work_unit_sources=("span:tokenyield.work_unit_id",),
                        service_dimensions=SERVICES)
    [error] = decode_one(single(chat("openai", "gpt-4o", 5, 1)), config).errors
    assert error.kind == "invalid_attribute"
    assert error.reason == "no work unit: none of span:tokenyield.work_unit_id is set on this span"


def test_span_dimensions_win_over_resource_and_the_service_map_fills_only_gaps() -> None:
    request = single(chat("openai", "gpt-4o", 5, 1, **{"tokenyield.team": "growth"}),
                     resource={"service.name": "checkout-api", "tokenyield.team": "ignored",
                               "tokenyield.environment": "staging"})
    [call] = decode_one(request).calls
    assert (call.team, call.workflow, call.environment) == ("growth", "checkout", "staging")


def test_a_span_with_no_team_reports_which_dimension_and_how_to_fix_it() -> None:
    request = single(chat("openai", "gpt-4o", 5, 1, **{"tokenyield.workflow": "w"}),
                     resource={"service.name": "svc-x"})
    [error] = decode_one(request).errors
    assert error.kind == "missing_dimension"
    assert error.reason == ("no team: set tokenyield.team on the span or its resource, "
                            "or map service.name 'svc-x' in service_dimensions")
    assert error.event_id == f"otel:{hex_id(trace_id(1))}:{hex_id(span_id(1))}"
    assert error.work_unit_id == hex_id(trace_id(1))


# -- token semantics -----------------------------------------------------------------------


def test_cache_beyond_input_is_an_error_that_points_at_the_scope_option() -> None:
    # Anthropic's raw usage: input_tokens 200 excludes 4000 cache reads and 500 writes.
    attributes = chat("anthropic", "claude-sonnet-4-5", 200, 10, **{
        "gen_ai.usage.cache_read.input_tokens": 4000,
        "gen_ai.usage.cache_creation.input_tokens": 500})
    request = single(attributes, scope="acme.anthropic")

    [error] = decode_one(request).errors
    assert error.kind == "invalid_call"
    assert "exceed input_tokens (200)" in error.reason
    assert "'acme.anthropic'" in error.reason and "input_excludes_cache_scopes" in error.reason

    config = OtlpConfig(service_dimensions=SERVICES,
                        input_excludes_cache_scopes=frozenset({"acme.anthropic"}))
    [call] = decode_one(request, config).calls
    assert (call.input_tokens, call.cached_input_tokens, call.cache_write_tokens) == (
        4700, 4000, 500)


def test_current_names_win_over_older_ones_whatever_their_order() -> None:
    attributes = {"gen_ai.system": "openai", "gen_ai.usage.prompt_tokens": 1,
                  "gen_ai.usage.completion_tokens": 1,
                  "gen_ai.usage.reasoning_tokens": 1,
                  "gen_ai.provider.name": "azure.ai.openai", "gen_ai.request.model": "gpt-4o",
                  "gen_ai.usage.input_tokens": 70, "gen_ai.usage.output_tokens": 30,
                  "gen_ai.usage.reasoning.output_tokens": 20}
    [call] = decode_one(single(attributes)).calls
    assert (call.provider, call.input_tokens, call.output_tokens, call.reasoning_tokens) == (
        "azure.ai.openai", 70, 30, 20)


def test_whole_doubles_are_counts_and_fractions_are_errors() -> None:
    [call] = decode_one(single(chat("openai", "gpt-4o", 120.0, 8.0))).calls
    assert (call.input_tokens, call.output_tokens) == (120, 8)

    [error] = decode_one(single(chat("openai", "gpt-4o", 120.5, 8))).errors
    assert error.kind == "invalid_call" and error.reason.startswith("input_tokens:")


def test_usage_with_only_a_total_is_an_error_not_a_skip() -> None:
    request = single({"gen_ai.request.model": "gpt-4o", "gen_ai.usage.total_tokens": 99})
    result = decode_one(request)
    assert result.skipped == {} and result.calls == []
    assert result.errors[0].reason == (
        "usage without input or output token counts (['gen_ai.usage.total_tokens'])")


def test_a_contract_violation_names_the_field_and_keeps_the_neighbours() -> None:
    request = collector_export()
    bad = make_span(20, 9, chat("openai", "gpt-4o", 10, 5, **{
        "gen_ai.usage.reasoning.output_tokens": 6}), offset_ms=60)
    request.resource_spans[0].scope_spans[1].spans.append(bad)

    result = decode_export(request.SerializeToString(), CONFIG)

    assert len(result.calls) == 4
    bad_error = next(e for e in result.errors if e.span_id == hex_id(span_id(20)))
    assert bad_error.kind == "invalid_call"
    assert bad_error.trace_id == hex_id(trace_id(9))
    assert bad_error.reason == "event: reasoning_tokens (6) exceed output_tokens (5)"
    assert bad_error.event_id == f"otel:{hex_id(trace_id(9))}:{hex_id(span_id(20))}"


def test_a_span_that_ends_before_it_starts_is_rejected_by_the_contract() -> None:
    [error] = decode_one(single(chat("openai", "gpt-4o", 5, 1),
                                duration_ns=-5_000_000)).errors
    assert error.reason.startswith("latency_ms: Input should be greater than or equal to 0")


def test_a_span_without_a_start_time_is_rejected_by_the_contract() -> None:
    request = single(chat("openai", "gpt-4o", 5, 1))
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.start_time_unix_nano = 0
    span.end_time_unix_nano = 5_000_000
    [error] = decode_one(request).errors
    assert error.reason.startswith("occurred_at: must fall between 2000-01-01 and 2100-01-01")


def test_a_span_with_an_all_zero_trace_id_is_an_invalid_span() -> None:
    request = single(chat("openai", "gpt-4o", 5, 1))
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = bytes(16)
    [error] = decode_one(request).errors
    assert error.kind == "invalid_span" and "trace id" in error.reason


# -- attributes ----------------------------------------------------------------------------


def test_kept_attributes_are_cut_to_the_contract_limit_and_content_is_not_copied() -> None:
    request = single(chat("openai", "gpt-4o", 5, 1, **{
        "server.address": "x" * 300, "gen_ai.output.messages": "private answer"}))
    [call] = decode_one(request).calls
    assert call.attributes == {"trace_id": hex_id(trace_id(1)),
                               "span_id": hex_id(span_id(1)),
                               "server.address": "x" * MAX_ATTRIBUTE_VALUE_LENGTH}


def test_explicit_tokenyield_fields_pass_through() -> None:
    request = single(chat("openai", "gpt-4o", 5, 1, **{
        "tokenyield.status": "cancelled", "tokenyield.attempt": 2,
        "tokenyield.reported_cost": "0.0125", "tokenyield.currency": "USD"}), error=True)
    [call] = decode_one(request).calls
    assert (call.status, call.attempt) == ("cancelled", 2)
    assert (call.reported_cost, call.currency) == (Decimal("0.0125"), "USD")


def test_the_user_comes_from_user_id_and_the_customer_from_tokenyield_customer() -> None:
    # Spend per user and per customer (budgets, spikes) from spans as instrumented.
    request = single(chat("openai", "gpt-4o", 5, 1, **{"user.id": "u-42"}),
                     resource={"service.name": "checkout-api",
                               "tokenyield.customer": "globex"})
    [call] = decode_one(request).calls
    assert (call.user, call.customer) == ("u-42", "globex")
    older = single(chat("openai", "gpt-4o", 5, 1, **{"enduser.id": "u-7"}))
    assert decode_one(older).calls[0].user == "u-7"


# -- dedup, malformed messages, replay -----------------------------------------------------


def test_event_ids_are_deterministic_across_deliveries_and_encodings() -> None:
    first = decode_export(collector_export().SerializeToString(), CONFIG)
    again = decode_export(collector_export().SerializeToString(), CONFIG)
    as_json = decode_export(collector_json(collector_export()), CONFIG)
    ids = [c.event_id for c in first.calls]
    assert ids == [c.event_id for c in again.calls] == [c.event_id for c in as_json.calls]
    assert len(set(ids)) == len(ids) == 4


@pytest.mark.parametrize("data", [
    b"",
    b"definitely not an export",
    b"\x08\x01",  # valid wire format, unknown fields only
    b'{"resourceSpans": [',
    b'{"resourceSpans": 5}',
    b'{"event_id": "e1", "work_unit_id": "w"}',  # a tokenyield event on the wrong topic
    b"[1, 2, 3]",
], ids=["empty", "text", "unknown-fields", "cut-json", "wrong-type", "native-event", "array"])
def test_a_message_that_is_no_export_is_one_error_for_the_whole_message(data: bytes) -> None:
    result = decode_export(data, CONFIG)
    assert result.calls == [] and result.spans == 0 and not result.skipped
    [error] = result.errors
    assert (error.kind, error.trace_id, error.span_id, error.index) == (
        "malformed_export", None, None, None)
    assert error.raw == data and error.reason


def test_a_truncated_protobuf_export_is_one_error() -> None:
    data = collector_export().SerializeToString()
    [error] = decode_export(data[: len(data) // 2], CONFIG).errors
    assert error.kind == "malformed_export"
    assert "otlp_proto, protobuf does not parse" in error.reason


def test_a_pinned_encoding_does_not_fall_back_to_the_other() -> None:
    proto = collector_export().SerializeToString()
    pinned_json = OtlpConfig(service_dimensions=SERVICES, encoding="otlp_json")
    [error] = decode_export(proto, pinned_json).errors
    assert error.reason.startswith("not JSON")
    pinned_proto = OtlpConfig(service_dimensions=SERVICES, encoding="otlp_proto")
    assert len(decode_export(proto, pinned_proto).calls) == 4


def test_a_span_error_carries_a_one_span_export_that_replays_once_fixed() -> None:
    result = decode_export(collector_export().SerializeToString(), CONFIG)
    [error] = result.errors

    fixed = OtlpConfig(service_dimensions={
        **SERVICES, "unmapped-svc": {"team": "ops", "workflow": "misc"}})
    replayed = decode_export(error.raw, fixed)

    assert replayed.spans == 1 and replayed.errors == []
    [call] = replayed.calls
    assert (call.event_id, call.team, call.workflow, call.model) == (
        f"otel:{hex_id(trace_id(4))}:{hex_id(span_id(8))}", "ops", "misc", "gpt-4o-mini")

    as_codec = error.as_decode_error()
    assert (as_codec.index, as_codec.kind, as_codec.raw) == (7, "missing_dimension", error.raw)
    assert as_codec.reason.startswith(f"span {hex_id(trace_id(4))}/{hex_id(span_id(8))}: no team")


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    ({"work_unit_sources": ("attribute:x",)}, "is not span:KEY, resource:KEY or trace_id"),
    ({"work_unit_sources": ("span:",)}, "is not span:KEY, resource:KEY or trace_id"),
    ({"work_unit_sources": ()}, "work_unit_sources is empty"),
    ({"service_dimensions": {"a": {"tean": "x"}}}, "unknown keys ['tean']"),
    ({"service_dimensions": {"a": {"team": ""}}}, "team must be non-empty text"),
    ({"kept_attributes": tuple(f"k{i}" for i in range(31))}, "at most 30 fit"),
    ({"kept_attributes": ("x" * 65,)}, "must be 1-64 characters"),
    ({"encoding": "otlp_avro"}, "unknown OTLP encoding 'otlp_avro'"),
])
def test_bad_configuration_fails_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        OtlpConfig(**options)
    assert message in raised.value.message


def test_the_config_is_frozen_and_copies_the_service_map() -> None:
    services = {"svc": {"team": "t", "workflow": "w"}}
    config = OtlpConfig(service_dimensions=services)
    services["svc"]["team"] = "changed later"
    assert config.service_dimensions["svc"]["team"] == "t"
    with pytest.raises(AttributeError):
        config.encoding = "otlp_json"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.service_dimensions["svc"]["team"] = "x"  # type: ignore[index]


def test_the_flat_json_path_reads_the_older_cache_and_reasoning_names_too() -> None:
    # One table (otel.OTEL_FIELDS) serves both paths; the codec gains the older names.
    from schemas.codec import call_codec

    decoded = call_codec.decode(orjson.dumps({
        "event_id": "e1", "work_unit_id": "w1", "start_time": "2026-12-01T10:00:00Z",
        "team": "t", "workflow": "f", "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude-haiku-4-5", "gen_ai.usage.prompt_tokens": 900,
        "gen_ai.usage.completion_tokens": 40,
        "gen_ai.usage.cache_read_input_tokens": 700,
        "gen_ai.usage.cache_creation_input_tokens": 100,
        "gen_ai.usage.reasoning_tokens": 30}))
    assert decoded.errors == []
    [call] = decoded.events
    assert (call.input_tokens, call.cached_input_tokens, call.cache_write_tokens,
            call.output_tokens, call.reasoning_tokens) == (900, 700, 100, 40, 30)
