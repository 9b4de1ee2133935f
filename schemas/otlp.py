"""OTLP traces, as the OpenTelemetry Collector's Kafka exporter writes them, to model calls.

A message value holds one ``ExportTraceServiceRequest`` (``resourceSpans`` ->
``scopeSpans`` -> ``spans``) in one of the exporter's two trace encodings:

- ``otlp_proto`` (the exporter's default): the protobuf bytes;
- ``otlp_json``: protobuf's JSON mapping with OTLP's deviations: trace and span ids are
  hex strings (case-insensitive), not base64; enums are integers; 64-bit integers
  (``intValue``, ``startTimeUnixNano``) are decimal strings or numbers; unknown fields
  are ignored.

``decode_export`` finds out which (``OtlpConfig.encoding``, ``"auto"`` by default) and
turns every span that reports GenAI token usage into a ``ModelCall``, validated
against the contract. Errors are data, as in ``codec``: a bad span is one
``SpanError`` naming its trace and span ids, and its good neighbours are kept; bytes
that are no export at all are one error with no span ids. Spans without usage (HTTP,
database, tool spans) are counted in ``skipped`` by reason, never dropped unseen.

How a span becomes a call:

- Attribute names are the GenAI semantic conventions' (``otel.OTEL_FIELDS``, one table
  for the flat JSON path and this one); when a span carries both a current and an older
  name (``gen_ai.provider.name`` and ``gen_ai.system``), the one listed first there wins.
  Span attributes win over resource attributes.
- ``event_id`` is ``otel:<trace id>:<span id>`` (hex), so a re-delivered export produces
  the same ids and the engine's dedup drops the copy.
- ``occurred_at`` is the span's start; ``latency_ms`` is end minus start, rounded to the
  nearest millisecond; ``status`` is ``error`` when the span status is ERROR (``timeout``
  when ``error.type`` says so), ``ok`` otherwise, unless ``tokenyield.status`` is set.
- The work unit is the first present of ``OtlpConfig.work_unit_sources``; team and
  workflow come from ``tokenyield.team`` / ``tokenyield.workflow`` (span, then
  resource), then from ``OtlpConfig.service_dimensions`` by ``service.name``.
- Token parts follow the contract (cache reads and writes are parts of input, reasoning
  a part of output), which is also the convention's rule and what OpenLLMetry and the
  OpenAI and Anthropic instrumentations report. Anthropic's API itself counts
  ``input_tokens`` without the cache; an instrumentation that passes that number on
  unchanged is named in ``OtlpConfig.input_excludes_cache_scopes`` (by its scope name)
  and its input is made whole here. Without that, its calls fail validation with a
  reason that says so, rather than being priced wrong.
- Spans of agent and workflow invocations (``gen_ai.operation.name`` in
  ``OtlpConfig.aggregate_operations``) are skipped: their usage, when present, sums the
  model calls inside them, which arrive as spans of their own.
- ``attributes`` keeps the span's ``trace_id`` and ``span_id`` (to find the trace from a
  call) and the attributes named in ``OtlpConfig.kept_attributes`` (short descriptive
  ones such as ``openai.response.service_tier``, which changes the price), as text cut
  to the contract's length limit. Prompt and completion content is never copied.
"""

from __future__ import annotations

import base64
import contextlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from pydantic import TypeAdapter, ValidationError

from schemas.codec import MAX_MESSAGE_BYTES, DecodeError, explain
from schemas.errors import ConfigurationError
from schemas.events import (
    MAX_ATTRIBUTE_KEY_LENGTH,
    MAX_ATTRIBUTE_VALUE_LENGTH,
    MAX_ATTRIBUTES,
    ModelCall,
)
from schemas.otel import MODEL_KEYS, NATIVE_PREFIX, OTEL_FIELDS, from_otel

Encoding = Literal["auto", "otlp_proto", "otlp_json"]

#: Where the work unit comes from, first present wins. ``span:KEY`` and
#: ``resource:KEY`` name an attribute of the span or of its resource; ``trace_id``
#: (always present) makes every trace its own work unit.
DEFAULT_WORK_UNIT_SOURCES: tuple[str, ...] = (
    "span:tokenyield.work_unit_id",
    "resource:tokenyield.work_unit_id",
    "span:gen_ai.conversation.id",
    "trace_id",
)
#: Descriptive attributes copied into ``ModelCall.attributes`` (span, else resource).
DEFAULT_KEPT_ATTRIBUTES: tuple[str, ...] = (
    "openai.response.service_tier",
    "openai.request.service_tier",
    "gen_ai.openai.response.service_tier",  # the name before openai.* (semconv <= 1.36)
    "gen_ai.response.id",
    "gen_ai.response.finish_reasons",
    "server.address",
    "error.type",
)
#: Operations whose spans wrap model calls that are traced as spans of their own.
DEFAULT_AGGREGATE_OPERATIONS: frozenset[str] = frozenset({"invoke_agent", "invoke_workflow"})

_ALWAYS_KEPT = ("trace_id", "span_id")
_DIMENSIONS = ("team", "workflow")
_SERVICE_MAP_FIELDS = frozenset({"team", "workflow", "owner"})
_TOKEN_FIELDS = frozenset(
    {"input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
     "reasoning_tokens"}
)
#: The attribute names that report token counts: a span with none of them has no usage.
USAGE_KEYS: frozenset[str] = frozenset(k for k, f in OTEL_FIELDS.items() if f in _TOKEN_FIELDS)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TRACE_ID_BYTES = 16
_SPAN_ID_BYTES = 8
_ID_KEYS = ("traceId", "spanId", "parentSpanId")
_CALL = TypeAdapter(ModelCall)


@dataclass(frozen=True, slots=True)
class OtlpConfig:
    """How spans map onto calls; the worker builds one from its settings.

    ``service_dimensions`` maps a ``service.name`` to fallback ``team``, ``workflow``
    (and ``owner``) for spans that do not carry ``tokenyield.*`` attributes, e.g.
    ``{"checkout-api": {"team": "payments", "workflow": "checkout"}}``.
    """

    work_unit_sources: tuple[str, ...] = DEFAULT_WORK_UNIT_SOURCES
    service_dimensions: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    kept_attributes: tuple[str, ...] = DEFAULT_KEPT_ATTRIBUTES
    aggregate_operations: frozenset[str] = DEFAULT_AGGREGATE_OPERATIONS
    input_excludes_cache_scopes: frozenset[str] = frozenset()
    encoding: Encoding = "auto"
    _sources: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, at construction
        set_(self, "work_unit_sources", tuple(self.work_unit_sources))
        set_(self, "kept_attributes", tuple(self.kept_attributes))
        set_(self, "aggregate_operations", frozenset(self.aggregate_operations))
        set_(self, "input_excludes_cache_scopes", frozenset(self.input_excludes_cache_scopes))
        set_(self, "_sources", _parse_sources(self.work_unit_sources))
        set_(self, "service_dimensions", _frozen_service_map(self.service_dimensions))
        _check_kept(self.kept_attributes)
        if self.encoding not in ("auto", "otlp_proto", "otlp_json"):
            raise ConfigurationError(
                f"unknown OTLP encoding {self.encoding!r}; expected auto, otlp_proto or "
                "otlp_json", setting="encoding", value=self.encoding)


def _parse_sources(sources: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    if not sources:
        raise ConfigurationError("work_unit_sources is empty; end it with trace_id",
                                 setting="work_unit_sources")
    parsed = []
    for entry in sources:
        if entry == "trace_id":
            parsed.append(("trace_id", ""))
            continue
        where, _, key = entry.partition(":")
        if where not in ("span", "resource") or not key:
            raise ConfigurationError(
                f"work unit source {entry!r} is not span:KEY, resource:KEY or trace_id",
                setting="work_unit_sources", value=entry)
        parsed.append((where, key))
    return tuple(parsed)


def _frozen_service_map(
    services: Mapping[str, Mapping[str, str]],
) -> Mapping[str, Mapping[str, str]]:
    frozen = {}
    for service, dimensions in services.items():
        unknown = set(dimensions) - _SERVICE_MAP_FIELDS
        if unknown:
            raise ConfigurationError(
                f"service_dimensions[{service!r}] has unknown keys {sorted(unknown)}; "
                f"allowed: {sorted(_SERVICE_MAP_FIELDS)}",
                setting="service_dimensions", service=service)
        bad = [k for k, v in dimensions.items() if not isinstance(v, str) or not v]
        if bad:
            raise ConfigurationError(
                f"service_dimensions[{service!r}]: {', '.join(sorted(bad))} must be "
                "non-empty text", setting="service_dimensions", service=service)
        frozen[service] = MappingProxyType(dict(dimensions))
    return MappingProxyType(frozen)


def _check_kept(kept: tuple[str, ...]) -> None:
    room = MAX_ATTRIBUTES - len(_ALWAYS_KEPT)
    if len(kept) > room:
        raise ConfigurationError(
            f"kept_attributes lists {len(kept)} names; at most {room} fit beside "
            f"{', '.join(_ALWAYS_KEPT)}", setting="kept_attributes")
    too_long = [k for k in kept if not 0 < len(k) <= MAX_ATTRIBUTE_KEY_LENGTH]
    if too_long:
        raise ConfigurationError(
            f"kept_attributes names must be 1-{MAX_ATTRIBUTE_KEY_LENGTH} characters: "
            f"{too_long}", setting="kept_attributes")


DEFAULT_CONFIG = OtlpConfig()


@dataclass(frozen=True, slots=True)
class SpanError:
    """Why one span (``trace_id``/``span_id`` set) or the whole message (both ``None``)
    gave no call. ``index`` counts spans in message order; ``raw`` is a one-span export
    in protobuf (the message's own bytes for a whole-message error), so a dead letter
    replays through ``decode_export`` once the cause is fixed."""

    kind: str
    reason: str
    trace_id: str | None
    span_id: str | None
    index: int | None
    raw: bytes
    event_id: str | None = None
    work_unit_id: str | None = None

    def as_decode_error(self) -> DecodeError:
        """The codec's error type, for the worker's existing dead-letter path."""
        where = f"span {self.trace_id}/{self.span_id}: " if self.span_id is not None else ""
        return DecodeError(self.index, self.kind, where + self.reason, self.raw,
                           self.event_id, self.work_unit_id)


@dataclass(slots=True)
class OtlpDecoded:
    """Calls found in one export, spans skipped by reason, and errors.

    ``spans == len(calls) + sum(skipped.values()) + span errors`` always holds."""

    calls: list[ModelCall] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[SpanError] = field(default_factory=list)
    spans: int = 0


# -- entry points ------------------------------------------------------------------------


def decode_export(data: bytes, config: OtlpConfig = DEFAULT_CONFIG) -> OtlpDecoded:
    """Decode one Kafka message value from the Collector's traces topic; never raises
    on bad data."""
    request, problem = parse_export(data, config.encoding)
    if request is None:
        result = OtlpDecoded()
        raw = data if len(data) <= MAX_MESSAGE_BYTES else data[:4096]
        result.errors.append(SpanError("malformed_export", problem, None, None, None, raw))
        return result
    return calls_from_export(request, config)


def parse_export(
    data: bytes, encoding: Encoding = "auto",
) -> tuple[ExportTraceServiceRequest | None, str]:
    """The export in ``data``, or ``None`` and why not."""
    if not data:
        return None, "empty message: no ExportTraceServiceRequest"
    if len(data) > MAX_MESSAGE_BYTES:
        return None, f"message is {len(data)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"
    if encoding == "otlp_proto":
        return _parse_proto(data)
    if encoding == "otlp_json":
        return _parse_json(data)
    # A JSON export starts with "{"; a protobuf one with field 1's tag (0x0A). JSON is
    # tried first only when it looks like JSON, and the other encoding still gets a go.
    looks_json = data.lstrip(b" \t\r\n")[:1] == b"{"
    order = (_parse_json, _parse_proto) if looks_json else (_parse_proto, _parse_json)
    request, first_problem = order[0](data)
    if request is not None:
        return request, ""
    request, second_problem = order[1](data)
    if request is not None:
        return request, ""
    names = ("otlp_json", "otlp_proto") if looks_json else ("otlp_proto", "otlp_json")
    return None, (f"not an OTLP trace export: as {names[0]}, {first_problem}; "
                  f"as {names[1]}, {second_problem}")


def calls_from_export(
    request: ExportTraceServiceRequest, config: OtlpConfig = DEFAULT_CONFIG,
) -> OtlpDecoded:
    """Model calls from an already parsed export (an OTLP receiver can call this too)."""
    result = OtlpDecoded()
    for resource_spans in request.resource_spans:
        resource_attributes = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                _convert_span(
                    _SpanContext(span, resource_spans, scope_spans, resource_attributes,
                                 result.spans),
                    config, result)
                result.spans += 1
    return result


# -- parsing -----------------------------------------------------------------------------


def _parse_proto(data: bytes) -> tuple[ExportTraceServiceRequest | None, str]:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except ProtobufDecodeError as exc:
        return None, f"protobuf does not parse ({exc})"
    # Protobuf keeps fields it does not know; bytes that parse into nothing but those
    # are something else that happens to be valid wire format.
    if not request.resource_spans and len(UnknownFieldSet(request)):
        return None, "protobuf parses, but into unknown fields only (no resourceSpans)"
    return request, ""


def _parse_json(data: bytes) -> tuple[ExportTraceServiceRequest | None, str]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON ({exc})"
    if not isinstance(document, dict) or "resourceSpans" not in document:
        return None, "JSON without a top-level resourceSpans"
    try:
        _hex_ids_to_base64(document)
        request = ExportTraceServiceRequest()
        # OTLP/JSON receivers must ignore unknown fields (forward compatibility).
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, AttributeError,
            RecursionError) as exc:
        return None, f"JSON is not an ExportTraceServiceRequest ({exc})"
    return request, ""


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    """OTLP/JSON writes ids in hex where protobuf's JSON mapping expects base64; rewrite
    them in place so ``json_format`` reads the right bytes. (A 32-digit hex id is also
    valid base64, so left alone it would decode, silently, to 24 wrong bytes.) An id
    that is not hex is left for ``json_format`` to read as base64."""
    for resource_spans in _dicts(document.get("resourceSpans")):
        for scope_spans in _dicts(resource_spans.get("scopeSpans")):
            for span in _dicts(scope_spans.get("spans")):
                _rewrite_ids(span)
                for link in _dicts(span.get("links")):
                    _rewrite_ids(link)


def _dicts(value: Any) -> Iterable[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _rewrite_ids(node: dict[str, Any]) -> None:
    for key in _ID_KEYS:
        value = node.get(key)
        if isinstance(value, str):
            # Not hex: json_format reads it as base64, or says why it cannot.
            with contextlib.suppress(ValueError):
                node[key] = base64.b64encode(bytes.fromhex(value)).decode()


# -- one span ----------------------------------------------------------------------------


@dataclass(slots=True)
class _SpanContext:
    span: Span
    resource_spans: ResourceSpans
    scope_spans: ScopeSpans
    resource_attributes: dict[str, Any]
    index: int
    attributes: dict[str, Any] = field(default_factory=dict)
    trace_id: str = ""
    span_id: str = ""

    def __post_init__(self) -> None:
        self.attributes = _attributes(self.span.attributes)
        self.trace_id = self.span.trace_id.hex()
        self.span_id = self.span.span_id.hex()

    def error(self, kind: str, reason: str, fields: Mapping[str, Any] | None = None) -> SpanError:
        fields = fields or {}
        return SpanError(kind, reason, self.trace_id, self.span_id, self.index,
                         self.one_span_export(), _text(fields.get("event_id")),
                         _text(fields.get("work_unit_id")))

    def one_span_export(self) -> bytes:
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.CopyFrom(self.resource_spans.resource)
        resource_spans.schema_url = self.resource_spans.schema_url
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.CopyFrom(self.scope_spans.scope)
        scope_spans.schema_url = self.scope_spans.schema_url
        scope_spans.spans.add().CopyFrom(self.span)
        return request.SerializeToString()


def _convert_span(context: _SpanContext, config: OtlpConfig, result: OtlpDecoded) -> None:
    attributes = context.attributes
    if not USAGE_KEYS.intersection(attributes):
        usage = sorted(k for k in attributes if k.startswith("gen_ai.usage."))
        if usage:  # a total alone cannot be priced: say so rather than skip the cost
            result.errors.append(context.error(
                "invalid_call", f"usage without input or output token counts ({usage})"))
        else:
            result.skipped["no_gen_ai_usage"] += 1
        return
    operation = attributes.get("gen_ai.operation.name")
    if operation in config.aggregate_operations:
        result.skipped[f"aggregate_operation:{operation}"] += 1
        return
    problem = _id_problem(context.span)
    if problem:
        result.errors.append(context.error("invalid_span", problem))
        return
    fields, error = _call_fields(context, config)
    if error is not None:
        result.errors.append(error)
        return
    try:
        result.calls.append(_CALL.validate_python(fields))
    except ValidationError as exc:
        reason = explain(exc) + _cache_hint(fields, context.scope_spans.scope.name)
        result.errors.append(context.error("invalid_call", reason, fields))


def _id_problem(span: Span) -> str:
    if len(span.trace_id) != _TRACE_ID_BYTES or not any(span.trace_id):
        return f"trace id {span.trace_id.hex()!r} is not 16 bytes with one non-zero"
    if len(span.span_id) != _SPAN_ID_BYTES or not any(span.span_id):
        return f"span id {span.span_id.hex()!r} is not 8 bytes with one non-zero"
    return ""


def _call_fields(
    context: _SpanContext, config: OtlpConfig,
) -> tuple[dict[str, Any], SpanError | None]:
    merged = {**context.resource_attributes, **context.attributes}
    fields = from_otel(_convention_keys(merged))
    _whole_token_counts(fields)
    if context.scope_spans.scope.name in config.input_excludes_cache_scopes:
        fields["input_tokens"] = _add_cache_to_input(fields)
    span = context.span
    fields["event_id"] = f"otel:{context.trace_id}:{context.span_id}"
    fields["occurred_at"] = _EPOCH + timedelta(microseconds=span.start_time_unix_nano // 1000)
    fields["latency_ms"] = _latency_ms(span)
    if "tokenyield.status" not in merged:
        fields["status"] = _status(span, merged.get("error.type"))
    fields["attributes"] = _kept_attributes(context, config.kept_attributes)

    work_unit, problem = _work_unit(context, config)
    if work_unit is None:
        return fields, context.error("invalid_attribute", problem, fields)
    fields["work_unit_id"] = work_unit
    missing = _fill_dimensions(fields, merged.get("service.name"), config)
    if missing:
        return fields, context.error("missing_dimension", missing, fields)
    return fields, None


def _convention_keys(merged: dict[str, Any]) -> dict[str, Any]:
    """Only the attributes that name contract fields, in ``OTEL_FIELDS`` order so that
    ``from_otel`` (first one wins) prefers current names over older ones. Other
    attributes stay out: an application's own ``status`` or ``model`` attribute is not
    a tokenyield field."""
    relevant = {k: merged[k] for k in OTEL_FIELDS if k in merged}
    relevant.update({k: merged[k] for k in MODEL_KEYS if k in merged})
    if "error.type" in merged:
        relevant["error.type"] = merged["error.type"]
    relevant.update({k: v for k, v in merged.items() if k.startswith(NATIVE_PREFIX)})
    return relevant


def _whole_token_counts(fields: dict[str, Any]) -> None:
    # An SDK without an integer type (JavaScript's number) may record 120 as 120.0;
    # that is still a whole count. A fractional count stays and fails validation.
    for name in _TOKEN_FIELDS:
        value = fields.get(name)
        if isinstance(value, float) and value.is_integer():
            fields[name] = int(value)


def _add_cache_to_input(fields: dict[str, Any]) -> Any:
    parts = [fields.get(n, 0) for n in ("input_tokens", "cached_input_tokens",
                                        "cache_write_tokens")]
    if all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
        return sum(parts)
    return fields.get("input_tokens")  # not numbers: validation names the field


def _cache_hint(fields: Mapping[str, Any], scope: str) -> str:
    parts = [fields.get(n, 0) for n in ("input_tokens", "cached_input_tokens",
                                        "cache_write_tokens")]
    if not all(isinstance(p, int) for p in parts) or parts[1] + parts[2] <= parts[0]:
        return ""
    return (f" (if instrumentation scope {scope!r} reports input without the cache, as "
            "Anthropic's API does, list it in input_excludes_cache_scopes)")


def _latency_ms(span: Span) -> int | None:
    if not span.end_time_unix_nano:
        return None
    # Negative when the span ends before it starts: the contract rejects it, by name.
    return (span.end_time_unix_nano - span.start_time_unix_nano + 500_000) // 1_000_000


def _status(span: Span, error_type: Any) -> str:
    if span.status.code != Status.STATUS_CODE_ERROR:
        return "ok"
    return "timeout" if str(error_type) == "timeout" else "error"


def _kept_attributes(context: _SpanContext, kept: tuple[str, ...]) -> dict[str, str]:
    out = {"trace_id": context.trace_id, "span_id": context.span_id}
    for key in kept:
        value = context.attributes.get(key, context.resource_attributes.get(key))
        if value is not None:
            out[key] = _attribute_text(value)[:MAX_ATTRIBUTE_VALUE_LENGTH]
    return out


def _attribute_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_attribute_text(v) for v in value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return orjson.dumps(value, default=str).decode()
    return str(value)


def _work_unit(context: _SpanContext, config: OtlpConfig) -> tuple[str | None, str]:
    for where, key in config._sources:
        if where == "trace_id":
            return context.trace_id, ""
        source = context.attributes if where == "span" else context.resource_attributes
        value = source.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, str):
            return value, ""
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value), ""
        return None, (f"work unit attribute {where}:{key} is a {type(value).__name__}, "
                      "expected text or an integer")
    return None, ("no work unit: none of " + ", ".join(config.work_unit_sources)
                  + " is set on this span")


def _fill_dimensions(
    fields: dict[str, Any], service: Any, config: OtlpConfig,
) -> str:
    fallback = config.service_dimensions.get(service, {}) if isinstance(service, str) else {}
    for name, value in fallback.items():
        if fields.get(name) in (None, ""):
            fields[name] = value
    missing = [name for name in _DIMENSIONS if fields.get(name) in (None, "")]
    if not missing:
        return ""
    return "; ".join(
        f"no {name}: set {NATIVE_PREFIX}{name} on the span or its resource, or map "
        f"service.name {service!r} in service_dimensions" for name in missing)


# -- attribute values --------------------------------------------------------------------


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {pair.key: _value(pair.value) for pair in value.kvlist_value.values}
    return getattr(value, kind)


def _text(value: Any) -> str | None:
    return value[:256] if isinstance(value, str) else None


__all__ = [
    "DEFAULT_AGGREGATE_OPERATIONS",
    "DEFAULT_CONFIG",
    "DEFAULT_KEPT_ATTRIBUTES",
    "DEFAULT_WORK_UNIT_SOURCES",
    "USAGE_KEYS",
    "OtlpConfig",
    "OtlpDecoded",
    "SpanError",
    "calls_from_export",
    "decode_export",
    "parse_export",
]
