"""HTTP in, on the worker's web port: events, OTLP traces, webhooks, the budget check.

- ``POST /v1/events``: a JSON array, NDJSON or one object of model calls and outcomes
  (``schemas.ingest``).
- ``POST /v1/traces``: OTLP/HTTP, ``application/x-protobuf`` or ``application/json``
  (``schemas.otlp``): the spans' model calls; the answer is the OTLP
  ``ExportTraceServiceResponse`` (its ``partialSuccess`` counts rejected spans), in JSON
  with tokenyield's per-span results beside it.
- ``POST /v1/webhooks/{name}``: a third party's payload, turned into an outcome by the
  mapping of that name (``schemas.webhook_mapping``, files in
  ``TOKENYIELD_WEBHOOK_MAPPINGS_DIR``).
- ``GET /v1/budgets/check?team=T[&workflow=W][&customer=C][&user=U]...``: may this
  request spend now, under every budget it would count against: the team's, the
  workflow's, and those of any dimension value named (``user``, ``customer``, the
  promoted ``TOKENYIELD_DIMENSIONS``) (``streams.core.alerts.budget_check``), from
  memory.

Every endpoint is authenticated (``http_auth``), and bodies are limited to
``TOKENYIELD_HTTP_MAX_BODY_BYTES`` after decompression (413 beyond). Accepted events are
produced to ``calls`` / ``outcomes`` by the murmur2 partition of their work unit, as
the publisher sends them, and only reported accepted once the broker has them.

Answers list every event with what became of it: ``accepted``, ``rejected`` (with the
reason; it is not produced, so nothing downstream counts it), ``ignored`` (a webhook
its mapping filters out) or ``failed`` (Kafka did not take it: send it again; event ids
make a resend count once). Status: 200 when something was accepted or ignored, or
nothing was sent; 422 when every event was rejected; 503 when any failed; 400 for a
body that holds no events; 401/403 for authentication; 413 for size.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust
from faust.web import Request, Response, View
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from schemas.ingest import BodyError, ItemResult, Routed, decode_events, kind_named, route_call
from schemas.otlp import OtlpConfig, calls_from_export, parse_export
from schemas.webhook_mapping import WebhookMapping
from streams.core.alerts.budget_check import BudgetIndex, check_budgets
from streams.feeds.budget_state_feed import BudgetStateBook
from streams.kafka.keyed_sender import KeyedSender
from streams.ops.http_auth import HttpAuth
from streams.ops.metrics import Metrics

log = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: Dimensions every budget check takes; the worker adds user, customer and the promoted
#: attributes (``IngestContext.dimensions``).
BUDGET_DIMENSIONS = ("team", "workflow")
BUILT_IN_DIMENSIONS = ("user", "customer")


@dataclass
class IngestContext:
    """What the /v1 views need; the worker builds one."""

    auth: HttpAuth
    sender: KeyedSender
    metrics: Metrics
    max_body_bytes: int
    otlp: OtlpConfig
    mappings: dict[str, WebhookMapping]
    budget_index: Callable[[], BudgetIndex]  # the rules in force, by team
    budget_states: BudgetStateBook
    currency: str
    dimensions: tuple[str, ...] = BUILT_IN_DIMENSIONS  # besides team and workflow
    clock: Callable[[], float] = time.time


class TooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The body, decompressed (aiohttp undoes Content-Encoding), at most ``limit``
    bytes; ``TooLarge`` past that, without reading the rest."""
    declared = request.content_length  # type: ignore[attr-defined]
    if declared is not None and declared > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):  # type: ignore[attr-defined]
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def summary(results: list[ItemResult]) -> tuple[int, dict[str, Any]]:
    counts = Counter(r.result for r in results)
    if counts["failed"]:
        status = 503
    elif counts["rejected"] and not counts["accepted"] and not counts["ignored"]:
        status = 422
    else:
        status = 200
    return status, {"accepted": counts["accepted"], "rejected": counts["rejected"],
                    "ignored": counts["ignored"], "failed": counts["failed"],
                    "results": [r.to_json() for r in results]}


async def deliver(context: IngestContext, results: list[ItemResult],
                  routed: list[Routed]) -> list[ItemResult]:
    """Produce the accepted events; those Kafka did not take become ``failed``."""
    if not routed:
        return results
    delivery = await context.sender.send(routed)
    if not delivery.failed:
        return results
    log.warning("%d events received over HTTP were not produced: %s", len(delivery.failed),
                next(iter(delivery.failed.values())))
    by_index = {r.index: r for r in results}
    for index, reason in delivery.failed.items():
        by_index[index] = dataclasses.replace(by_index[index], result="failed", reason=reason)
    return [by_index[r.index] for r in results]


def register_ingest_views(app: faust.App, context: IngestContext) -> None:
    metrics, auth = context.metrics, context.auth

    def record(endpoint: str, status: int, results: list[ItemResult] | None) -> None:
        metrics.http_requests.labels(endpoint, str(status)).inc()
        for result in results or ():
            metrics.http_events.labels(endpoint, result.result).inc()

    def finish(view: View, endpoint: str, status: int, document: Any,
               results: list[ItemResult] | None = None) -> Response:
        record(endpoint, status, results)
        return view.json(document, status=status)

    async def admitted(view: View, request: Request, endpoint: str
                       ) -> tuple[bytes | None, Response | None]:
        """The body of an authenticated request of acceptable size, or the answer."""
        headers = request.headers  # type: ignore[attr-defined]
        if not auth.needs_body(headers):
            verdict = auth.check(headers)
            if not verdict.ok:
                return None, finish(view, endpoint, verdict.status, {"error": verdict.message})
        try:
            body = await read_body(request, context.max_body_bytes)
        except TooLarge:
            return None, finish(view, endpoint, 413, {
                "error": f"the body is over {context.max_body_bytes} bytes "
                         "(TOKENYIELD_HTTP_MAX_BODY_BYTES): send fewer events per request"})
        if auth.needs_body(headers):
            verdict = auth.check(headers, body)
            if not verdict.ok:
                return None, finish(view, endpoint, verdict.status, {"error": verdict.message})
        return body, None

    @app.page("/v1/events")
    class Events(View):
        async def post(self, request: Request) -> Response:
            endpoint = "/v1/events"
            body, refusal = await admitted(self, request, endpoint)
            if refusal is not None:
                return refusal
            assert body is not None
            try:
                decoded = decode_events(body)
            except BodyError as exc:
                return finish(self, endpoint, exc.status, {"error": exc.reason})
            results = await deliver(context, decoded.results, decoded.routed)
            status, document = summary(results)
            return finish(self, endpoint, status, document, results)

    @app.page("/v1/traces")
    class Traces(View):
        async def post(self, request: Request) -> Response:
            endpoint = "/v1/traces"
            content_type = request.content_type  # type: ignore[attr-defined]
            if content_type not in (PROTOBUF, JSON):
                return finish(self, endpoint, 415, {
                    "error": f"Content-Type {content_type!r}: OTLP/HTTP is {PROTOBUF} or "
                             f"{JSON}"})
            body, refusal = await admitted(self, request, endpoint)
            if refusal is not None:
                return refusal
            assert body is not None
            export, problem = parse_export(
                body, "otlp_proto" if content_type == PROTOBUF else "otlp_json")
            if export is None:
                return finish(self, endpoint, 400, {"error": problem})
            decoded = calls_from_export(export, context.otlp)
            for reason, count in decoded.skipped.items():
                metrics.otlp_spans_skipped.labels(endpoint, reason).inc(count)
            results = [ItemResult(i, "accepted", "model_call", c.event_id, c.work_unit_id)
                       for i, c in enumerate(decoded.calls)]
            routed = [route_call(i, c) for i, c in enumerate(decoded.calls)]
            results = await deliver(context, results, routed)
            offset = len(results)
            results += [ItemResult(offset + n, "rejected", "model_call", e.event_id,
                                   e.work_unit_id, e.as_decode_error().reason)
                        for n, e in enumerate(decoded.errors)]
            status, document = summary(results)
            if status == 422:
                status = 200  # OTLP: a partial success (all spans rejected) is still 200
            rejected = document["rejected"] + document["failed"]
            response = ExportTraceServiceResponse()
            if rejected:
                response.partial_success.rejected_spans = rejected
                response.partial_success.error_message = "; ".join(
                    r.reason or "" for r in results if r.result != "accepted")[:2000]
            record(endpoint, status, results)
            if content_type == PROTOBUF:
                return self.bytes(response.SerializeToString(), content_type=PROTOBUF,
                                  status=status)
            document = {**json_format.MessageToDict(response), **document,
                        "skipped": dict(decoded.skipped)}
            return self.json(document, status=status)

    @app.page("/v1/webhooks/{name}")
    class Webhooks(View):
        async def post(self, request: Request, name: str) -> Response:
            endpoint = "/v1/webhooks"
            mapping = context.mappings.get(name)
            if mapping is None:
                return finish(self, endpoint, 404, {
                    "error": f"no webhook mapping named {name!r}",
                    "mappings": sorted(context.mappings)})
            body, refusal = await admitted(self, request, endpoint)
            if refusal is not None:
                return refusal
            assert body is not None
            applied = mapping.apply_json(body)
            routed: list[Routed] = []
            if applied.outcome is not None:
                outcome = applied.outcome
                result = ItemResult(0, "accepted", "outcome", outcome.event_id,
                                    outcome.work_unit_id)
                kind = kind_named("outcome")
                routed.append(Routed(0, kind.topic, outcome.work_unit_id,
                                     kind.encode(outcome)))
            elif applied.ignored:
                result = ItemResult(0, "ignored", reason=f"not selected by the mapping's "
                                                         f"when: {mapping.when}")
            else:
                assert applied.error is not None
                result = ItemResult(0, "rejected", "outcome", reason=applied.error.reason)
            results = await deliver(context, [result], routed)
            status, document = summary(results)
            return finish(self, endpoint, status, {"mapping": name, **document}, results)

    @app.page("/v1/budgets/check")
    class BudgetCheck(View):
        async def get(self, request: Request) -> Response:
            endpoint = "/v1/budgets/check"
            verdict = auth.check(request.headers)  # type: ignore[attr-defined]
            if not verdict.ok:
                return finish(self, endpoint, verdict.status, {"error": verdict.message})
            query = request.query  # type: ignore[attr-defined]
            accepted = (*BUDGET_DIMENSIONS, *context.dimensions)
            unknown = sorted(set(query) - set(accepted))
            team, workflow = query.get("team", ""), query.get("workflow", "")
            named = {name: query[name] for name in context.dimensions if query.get(name)}
            problem = (f"budgets have the dimensions {', '.join(accepted)}; unknown: "
                       f"{', '.join(unknown)}" if unknown else
                       "a workflow is checked with its team" if workflow and not team else
                       "name a team, or a dimension's value (customer=..., user=...)"
                       if not team and not named else "")
            if problem:
                return finish(self, endpoint, 400, {"error": problem,
                                                    "dimensions": list(accepted)})
            answer = check_budgets(context.budget_index().of(team, named),
                                   context.budget_states.states, team, workflow,
                                   int(context.clock() * 1000), context.currency, named)
            metrics.budget_checks.labels(answer.state).inc()
            return finish(self, endpoint, 200, answer.to_json())


__all__ = ["IngestContext", "read_body", "register_ingest_views", "summary"]
