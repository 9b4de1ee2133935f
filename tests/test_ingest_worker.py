"""Ingest through a real worker on the embedded broker, checked in ClickHouse:

- OTLP exports on the Collector's Kafka topic (``otlp_proto`` and ``otlp_json``, keyed
  by trace id as the exporter's ``partition_traces_by_id`` does), re-keyed onto
  ``calls``, joined to outcomes and priced; bad exports dead-lettered with their
  coordinates;
- HTTP: ``/v1/events`` (NDJSON and arrays), ``/v1/traces`` (OTLP/HTTP, both
  encodings), ``/v1/webhooks/github-pull-requests`` (the shipped mapping: cost per
  merged pull request), with bearer tokens and GitHub signatures, and size limits;
- budgets for gateways: ``/v1/budgets/check`` flipping to ``hard`` once spend crosses a
  budget, and the LiteLLM proxy hook (``deploy/litellm/budget_hook.py``) refusing then.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import hashlib
import hmac
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from schemas.kafka_publisher import Publisher
from tests.conftest import ROOT, WorkerHandle
from tests.test_otlp import add_resource, attribute, collector_json
from tests.test_webhook_mapping import pull_request_event

pytestmark = [pytest.mark.broker, pytest.mark.clickhouse]

DB = "tokenyield"
README = (ROOT / "README.md").read_text()
NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(minutes=5)
GPT4O = Decimal("0.0045")  # 1000 input x $2.50/M + 200 output x $10/M
MINI = Decimal("0.00027")  # 1000 input x $0.15/M + 200 output x $0.60/M


def span(trace: int, n: int, attributes: dict[str, Any], offset_s: int = 0) -> Span:
    """A span of ``START`` + offset, in the shape instrumentations export."""
    start_ns = int((START + timedelta(seconds=offset_s)).timestamp()) * 1_000_000_000
    result = Span(trace_id=bytes([0xC0, trace]) + bytes(13) + bytes([n or 1]),
                  span_id=bytes([0x5E, trace]) + bytes(5) + bytes([n]), name="chat",
                  kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=start_ns,
                  end_time_unix_nano=start_ns + 850_000_000)
    result.attributes.extend(attribute(k, v) for k, v in attributes.items())
    result.status.code = Status.STATUS_CODE_OK
    return result


def chat(model: str, unit: str | None = None, input_tokens: int = 1000,
         **extra: Any) -> dict[str, Any]:
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                  "gen_ai.request.model": model, "gen_ai.usage.input_tokens": input_tokens,
                  "gen_ai.usage.output_tokens": 200, **extra}
    if unit is not None:
        attributes["tokenyield.work_unit_id"] = unit
    return attributes


def outcome(event_id: str, unit: str, team: str, workflow: str, **fields: Any
            ) -> dict[str, Any]:
    return {"event_id": event_id, "work_unit_id": unit, "team": team, "workflow": workflow,
            "status": "accepted", "occurred_at": (START + timedelta(minutes=1)).isoformat(),
            **fields}


def call(event_id: str, unit: str, team: str = "platform", workflow: str = "code-review",
         **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "work_unit_id": unit, "occurred_at": START.isoformat(),
            "provider": "openai", "model": "gpt-4o", "input_tokens": 1000,
            "output_tokens": 200, "team": team, "workflow": workflow, **fields}


def post(worker: WorkerHandle, path: str, body: bytes, token: str | None = None,
         **headers: str) -> tuple[int, bytes, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{worker.web_port}{path}", data=body,
                                     method="POST", headers=headers)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), response.headers["Content-Type"] or ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"] or ""


def get(worker: WorkerHandle, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}{path}",
                                    timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def metric_value(worker: WorkerHandle, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in worker.metrics().splitlines():
        if line.startswith(f"{name}{{") or line.startswith(f"{name} "):
            series, _, value = line.rpartition(" ")
            found = series[series.find("{") + 1:-1] if "{" in series else ""
            if ",".join(sorted(found.split(","))) == wanted:
                return float(value)
    return 0.0


# -- OTLP from the Collector's Kafka topic ------------------------------------------------------


def test_collector_exports_on_kafka_in_both_encodings_are_joined_and_priced(
        make_worker: Any, prefix: str) -> None:
    otlp_topic = f"{prefix}otlp_spans"
    worker: WorkerHandle = make_worker(
        TOKENYIELD_OTLP_TOPIC=otlp_topic,
        TOKENYIELD_OTLP_SERVICE_DIMENSIONS='{"checkout-api": {"team": "payments", '
                                           '"workflow": "checkout"}}').start()
    bootstrap = worker.env["TOKENYIELD_KAFKA_BOOTSTRAP"]

    # otlp_proto: a checkout service (team from the service map); two model calls of
    # order-A, and the HTTP span around them (no GenAI usage: skipped and counted).
    proto = ExportTraceServiceRequest()
    add_resource(proto, {"service.name": "checkout-api", "telemetry.sdk.language": "python"},
                 {"opentelemetry.instrumentation.openai_v2": [
                     span(1, 2, chat("gpt-4o", "order-A")),
                     span(1, 3, chat("gpt-4o-mini", "order-A"), offset_s=2)],
                  "opentelemetry.instrumentation.aiohttp_server": [
                      span(1, 1, {"http.request.method": "POST", "http.route": "/pay"})]})
    # otlp_json: a support bot whose resource names team and workflow; the work unit is
    # the conversation id. Its second span reports negative usage: rejected.
    json_export = ExportTraceServiceRequest()
    add_resource(json_export, {"service.name": "support-bot", "tokenyield.team": "support",
                               "tokenyield.workflow": "triage"},
                 {"openllmetry": [
                     span(2, 1, chat("gpt-4o", None, **{"gen_ai.conversation.id": "conv-B"})),
                     span(2, 2, chat("gpt-4o", None, input_tokens=-3,
                                     **{"gen_ai.conversation.id": "conv-B"}), offset_s=1)]})
    json_bytes = collector_json(json_export)
    assert json_bytes.startswith(b'{"resourceSpans"')

    async def scenario() -> list[Any]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            sent = [await producer.send_and_wait(otlp_topic, value, key=key) for key, value in (
                (proto.resource_spans[0].scope_spans[0].spans[0].trace_id,
                 proto.SerializeToString()),
                (json_export.resource_spans[0].scope_spans[0].spans[0].trace_id, json_bytes),
                (None, b"this is not an OTLP export"))]
        finally:
            await producer.stop()
        async with Publisher(bootstrap, topic_prefix=prefix, linger_ms=5) as publisher:
            await publisher.outcome(**outcome("o-A", "order-A", "payments", "checkout"))
            await publisher.outcome(**outcome("o-B", "conv-B", "support", "triage"))
        return sent

    metadata = asyncio.run(scenario())

    worker.wait_for(f"SELECT count() FROM {DB}.model_calls FINAL WHERE event_id LIKE 'otel:%'",
                    3)
    worker.wait_for(f"SELECT count() FROM {DB}.attributions_latest FINAL WHERE accepted = 1",
                    2)
    rows = {r[0]: r[1:] for r in worker.sql(
        f"SELECT work_unit_id, team, workflow, calls, model_cost, outcome_status "
        f"FROM {DB}.attributions_latest FINAL ORDER BY work_unit_id")}
    assert rows["order-A"][:3] == ["payments", "checkout", 2]
    assert Decimal(rows["order-A"][3]) == GPT4O + MINI
    assert rows["conv-B"][:3] == ["support", "triage", 1]
    assert Decimal(rows["conv-B"][3]) == GPT4O
    assert {r[4] for r in rows.values()} == {"accepted"}
    calls = worker.sql(f"SELECT model, service, latency_ms, toString(occurred_at) "
                       f"FROM {DB}.model_calls FINAL WHERE work_unit_id = 'order-A' "
                       f"ORDER BY occurred_at")
    assert [c[:3] for c in calls] == [["gpt-4o", "checkout-api", 850],
                                      ["gpt-4o-mini", "checkout-api", 850]]
    assert calls[0][3].startswith(START.strftime("%Y-%m-%d %H:%M:%S"))

    # The bad span and the message that is no export: dead letters with their reason,
    # topic, partition and offset; every span accounted for.
    worker.wait_for(f"SELECT count() FROM {DB}.dead_letters FINAL "
                    f"WHERE source_topic = '{otlp_topic}'", 2)
    dead = worker.sql(f"SELECT error_kind, kafka_partition, kafka_offset, item_index, reason "
                      f"FROM {DB}.dead_letters FINAL WHERE source_topic = '{otlp_topic}' "
                      f"ORDER BY error_kind")
    assert [d[:4] for d in dead] == [
        ["invalid_call", metadata[1].partition, metadata[1].offset, 1],
        ["malformed_export", metadata[2].partition, metadata[2].offset, None]]
    assert "input_tokens" in dead[0][4] and "not an OTLP trace export" in dead[1][4]
    assert metric_value(worker, "tokenyield_otlp_spans_skipped_total", source=otlp_topic,
                        reason="no_gen_ai_usage") == 1
    assert metric_value(worker, "tokenyield_events_in_total", topic=otlp_topic) == 6
    assert metric_value(worker, "tokenyield_events_out_total", topic=f"{prefix}calls") == 3


# -- HTTP in ---------------------------------------------------------------------------------------

TOKEN = "tok-ingest-6Rw2"


def ndjson(*events: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def pull_request(number: int, action: str, merged: bool) -> dict[str, Any]:
    event = copy.deepcopy(pull_request_event(
        action, merged=merged, closed=action == "closed",
        closed_at=(START + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")))
    event["number"] = event["pull_request"]["number"] = number
    event["pull_request"]["id"] += number
    return event


def test_http_events_traces_and_the_github_webhook(make_worker: Any) -> None:
    worker: WorkerHandle = make_worker(TOKENYIELD_HTTP_TOKENS=json.dumps([TOKEN]),
                                       TOKENYIELD_HTTP_MAX_BODY_BYTES="65536").start()

    # Authentication and size first: nothing is read, nothing is produced.
    body = ndjson(call("h-c1", "U-http", "support", "triage"))
    assert post(worker, "/v1/events", body)[0] == 401
    assert post(worker, "/v1/events", body, token="tok-wrong")[0] == 401
    too_big = ndjson(*[call(f"big-{i}", "U-big") for i in range(400)])
    assert len(too_big) > 65536
    status, answer, _ = post(worker, "/v1/events", too_big, token=TOKEN)
    assert status == 413 and b"TOKENYIELD_HTTP_MAX_BODY_BYTES" in answer
    assert post(worker, "/v1/events", b"", token=TOKEN)[0] == 400

    # NDJSON of calls and outcomes, gzip-compressed: per-event results.
    body = ndjson(call("h-c1", "U-http", "support", "triage"),
                  call("h-c2", "U-http", "support", "triage", model="gpt-4o-mini"),
                  outcome("h-o1", "U-http", "support", "triage"),
                  call("h-bad", "U-http", "support", "triage", output_tokens=-1)) + b"oops\n"
    status, answer, _ = post(worker, "/v1/events", gzip.compress(body), token=TOKEN,
                             **{"Content-Encoding": "gzip",
                                "Content-Type": "application/x-ndjson"})
    document = json.loads(answer)
    assert status == 200, document
    assert (document["accepted"], document["rejected"]) == (3, 2)
    assert [(r["line"], r["result"]) for r in document["results"]] == [
        (1, "accepted"), (2, "accepted"), (3, "accepted"), (4, "rejected"), (5, "rejected")]
    assert "output_tokens" in document["results"][3]["reason"]
    # The README's example, as printed there: the answer printed beside it.
    example = re.search(r"<<'NDJSON'\n(.*?)\nNDJSON\n", README, re.S)
    assert example is not None
    status, answer, _ = post(worker, "/v1/events", example.group(1).encode(), token=TOKEN,
                             **{"Content-Type": "application/x-ndjson"})
    printed = next(block for block in re.findall(r"```json\n(.*?)```", README, re.S)
                   if block.startswith('{"accepted"'))
    assert (status, json.loads(answer)) == (200, json.loads(printed))
    # Every event rejected: 422.
    status, answer, _ = post(worker, "/v1/events", orjson.dumps([{"event_id": "x"}]),
                             token=TOKEN)
    assert status == 422 and json.loads(answer)["rejected"] == 1

    # OTLP/HTTP, protobuf then JSON (a span without usage is skipped, a bad one rejected).
    traces = ExportTraceServiceRequest()
    add_resource(traces, {"service.name": "support-bot", "tokenyield.team": "support",
                          "tokenyield.workflow": "triage"},
                 {"openai": [span(3, 1, chat("gpt-4o", "U-trace")),
                             span(3, 2, {"http.request.method": "GET"})]})
    status, answer, content_type = post(worker, "/v1/traces", traces.SerializeToString(),
                                         token=TOKEN,
                                         **{"Content-Type": "application/x-protobuf"})
    assert (status, content_type) == (200, "application/x-protobuf")
    assert not ExportTraceServiceResponse.FromString(answer).HasField("partial_success")
    bad = ExportTraceServiceRequest()
    add_resource(bad, {"service.name": "support-bot", "tokenyield.team": "support",
                       "tokenyield.workflow": "triage"},
                 {"openai": [span(4, 1, chat("gpt-4o-mini", "U-trace")),
                             span(4, 2, chat("gpt-4o", "U-trace", input_tokens=-1))]})
    status, answer, _ = post(worker, "/v1/traces", collector_json(bad), token=TOKEN,
                             **{"Content-Type": "application/json"})
    document = json.loads(answer)
    assert status == 200 and document["partialSuccess"]["rejectedSpans"] == "1"
    assert [r["result"] for r in document["results"]] == ["accepted", "rejected"]
    assert post(worker, "/v1/traces", b"{}", token=TOKEN,
                **{"Content-Type": "text/plain"})[0] == 415
    status, answer, _ = post(worker, "/v1/traces", b"\x00\xffnot protobuf", token=TOKEN,
                             **{"Content-Type": "application/x-protobuf"})
    assert status == 400 and b"protobuf" in answer

    # GitHub pull requests: the review agent's calls, then the webhooks. #11 merged (by
    # bearer token), #12 closed unmerged (signed as GitHub signs, the token as its
    # secret), #13 only opened (ignored).
    units = {n: f"github:acme/checkout#{n}" for n in (11, 12, 13)}
    status, answer, _ = post(worker, "/v1/events", ndjson(
        call("pr11-c1", units[11]), call("pr11-c2", units[11]), call("pr12-c1", units[12]),
        call("pr13-c1", units[13])), token=TOKEN)
    assert status == 200 and json.loads(answer)["accepted"] == 4
    hook = "/v1/webhooks/github-pull-requests"
    status, answer, _ = post(worker, hook, orjson.dumps(pull_request(11, "closed", True)),
                             token=TOKEN, **{"X-GitHub-Event": "pull_request"})
    merged = json.loads(answer)
    assert status == 200 and merged["results"][0]["work_unit_id"] == units[11]
    unmerged = orjson.dumps(pull_request(12, "closed", False))
    signature = "sha256=" + hmac.new(TOKEN.encode(), unmerged, hashlib.sha256).hexdigest()
    status, answer, _ = post(worker, hook, unmerged, **{"X-Hub-Signature-256": signature})
    assert status == 200 and json.loads(answer)["accepted"] == 1
    assert post(worker, hook, unmerged + b" ", **{"X-Hub-Signature-256": signature})[0] == 401
    status, answer, _ = post(worker, hook, orjson.dumps(pull_request(13, "opened", False)),
                             token=TOKEN)
    assert status == 200 and json.loads(answer)["results"][0]["result"] == "ignored"
    status, answer, _ = post(worker, hook, b'{"action": "closed"}', token=TOKEN)
    assert status == 422 and "pull_request" in json.loads(answer)["results"][0]["reason"]
    assert post(worker, "/v1/webhooks/zendesk", b"{}", token=TOKEN)[0] == 404

    worker.wait_for(f"SELECT count() FROM {DB}.attributions_latest FINAL "
                    f"WHERE work_unit_id IN ('{units[11]}', '{units[12]}')", 2)
    prs = {r[0]: r[1:] for r in worker.sql(
        f"SELECT work_unit_id, outcome_status, accepted, model_cost "
        f"FROM {DB}.attributions_latest FINAL WHERE work_unit_id LIKE 'github:%'")}
    assert prs[units[11]][:2] == ["accepted", 1] and Decimal(prs[units[11]][2]) == 2 * GPT4O
    assert prs[units[12]][:2] == ["rejected", 0] and Decimal(prs[units[12]][2]) == GPT4O
    # Cost per merged pull request: all their spend over the merged ones.
    per_merged = worker.scalar(
        f"SELECT sum(model_cost) / countIf(accepted = 1) FROM {DB}.attributions_latest "
        f"FINAL WHERE work_unit_id IN ('{units[11]}', '{units[12]}')")
    assert Decimal(per_merged) == 3 * GPT4O
    # The README's query, as printed (unqualified: the configured database). #13 has no
    # outcome, so no attribution yet.
    query = re.search(r'tokenyield sql "(SELECT .*? cost_per_merged_pr .*?)"', README)
    assert query is not None
    assert Decimal(worker.scalar(query.group(1))) == 3 * GPT4O

    worker.wait_for(f"SELECT count() FROM {DB}.attributions_latest FINAL "
                    f"WHERE work_unit_id = 'U-http' AND accepted = 1", 1)
    assert Decimal(worker.scalar(f"SELECT model_cost FROM {DB}.attributions_latest FINAL "
                                 f"WHERE work_unit_id = 'U-http'")) == GPT4O + MINI
    worker.wait_for(f"SELECT count() FROM {DB}.model_calls FINAL "
                    f"WHERE work_unit_id = 'U-trace'", 2)
    # The README example's cost item went to `costs` and was booked like any item.
    worker.wait_for(f"SELECT toString(sum(amount)) FROM {DB}.cost_items FINAL "
                    f"WHERE event_id = 'k-2' AND work_unit_id = 'ticket-4712'", "0.02")
    assert metric_value(worker, "tokenyield_http_events_total", endpoint="/v1/webhooks",
                        result="ignored") == 1
    assert metric_value(worker, "tokenyield_http_requests_total", endpoint="/v1/events",
                        status="401") == 2
    assert metric_value(worker, "tokenyield_otlp_spans_skipped_total", source="/v1/traces",
                        reason="no_gen_ai_usage") == 1
    worker.stop()
    assert TOKEN not in worker.log() and "tok-wrong" not in worker.log()


# -- budgets for gateways --------------------------------------------------------------------------


def load_hook() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline
    spec = importlib.util.spec_from_file_location(
        "budget_hook", ROOT / "deploy" / "litellm" / "budget_hook.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hook_as_the_proxy_loads_it() -> Any:
    """``proxy_handler_instance``, loaded by LiteLLM's own loader from the shipped proxy
    config (``deploy/litellm/config.yaml``), configured by the environment."""
    from litellm.proxy.types_utils.utils import get_instance_fn

    config = ROOT / "deploy" / "litellm" / "config.yaml"
    (callback,) = yaml.safe_load(config.read_text())["litellm_settings"]["callbacks"]
    return get_instance_fn(callback, config_file_path=str(config))


def test_the_budget_check_flips_to_hard_and_the_litellm_hook_refuses(
        make_worker: Any, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A monthly budget of one workflow from the settings; a daily one of the whole team
    # set live with the command line. No tokens: the worker listens on 127.0.0.1 only.
    worker: WorkerHandle = make_worker(TOKENYIELD_BUDGETS=json.dumps([
        {"team": "sales", "workflow": "research", "period": "monthly", "amount": "1000"}])
    ).start()

    def budgets(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "streams.cli", "budgets", *args],
                              env=worker.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr

    budgets("set", "--team", "sales", "--period", "daily", "--amount", "0.01")
    # And a customer's, across teams: one call of 0.0045 uses it up.
    budgets("set", "--dimension", "customer", "--value", "globex", "--period", "daily",
            "--amount", "0.004")
    check = "/v1/budgets/check?team=sales&workflow=research"
    by_customer = "/v1/budgets/check?customer=globex"
    deadline = time.monotonic() + 30
    while (len(get(worker, check)[1]["budgets"]) < 2
           or not get(worker, by_customer)[1]["budgets"]) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert get(worker, by_customer)[1]["state"] == "ok"
    status, answer = get(worker, check)
    assert status == 200 and answer["allowed"] and answer["state"] == "ok"
    assert answer["remaining"] == "0.01" and answer["currency"] == "USD"
    tomorrow = (NOW + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    assert answer["resets_at"] == tomorrow
    assert get(worker, "/v1/budgets/check?workflow=research")[0] == 400
    assert get(worker, "/v1/budgets/check?team=sales&model=gpt-4o")[0] == 400
    assert get(worker, "/v1/budgets/check")[0] == 400

    module = load_hook()
    from litellm.caching.dual_cache import DualCache
    from litellm.exceptions import BudgetExceededError
    from litellm.proxy._types import UserAPIKeyAuth

    monkeypatch.setenv("BUDGET_CHECK_URL", f"http://127.0.0.1:{worker.web_port}")
    hook = hook_as_the_proxy_loads_it()
    assert type(hook).__name__ == "TokenyieldBudgetHook"
    key = UserAPIKeyAuth(team_alias="sales")
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
               "metadata": {"tokenyield_workflow": "research"}}

    async def ask(data: dict[str, Any], api_key: Any = key) -> Any:
        return await hook.async_pre_call_hook(user_api_key_dict=api_key, cache=DualCache(),
                                              data=data, call_type="completion")

    assert asyncio.run(ask(request)) == request  # within budget: passed on unchanged

    # Three calls of 0.0045: the daily 0.01 is crossed.
    async def spend() -> None:
        async with Publisher(worker.env["TOKENYIELD_KAFKA_BOOTSTRAP"], topic_prefix=prefix,
                             linger_ms=5) as publisher:
            for i in range(3):
                customer = {"customer": "globex"} if i == 0 else {}
                await publisher.call(**call(f"s-{i}", f"lead-{i}", "sales", "research",
                                            **customer))

    asyncio.run(spend())
    deadline = time.monotonic() + 60
    while get(worker, check)[1]["state"] != "hard" and time.monotonic() < deadline:
        time.sleep(0.5)
    status, answer = get(worker, check)
    assert (answer["allowed"], answer["state"], answer["remaining"]) == (False, "hard", "0")
    assert answer["resets_at"] == tomorrow
    daily = next(b for b in answer["budgets"] if b["budget_id"] == "team=sales/period=daily")
    assert Decimal(daily["spent"]) == 3 * GPT4O
    monthly = next(b for b in answer["budgets"] if b["period"] == "monthly")
    assert monthly["state"] == "ok" and Decimal(monthly["remaining"]) == 1000 - 3 * GPT4O

    with pytest.raises(BudgetExceededError) as refused:
        asyncio.run(ask(request))
    assert "team=sales/period=daily" in str(refused.value)
    # The customer's budget: used up by its one call, whichever team asks for it next.
    deadline = time.monotonic() + 60
    while get(worker, by_customer)[1]["allowed"] and time.monotonic() < deadline:
        time.sleep(0.5)
    status, answer = get(worker, by_customer)
    assert (status, answer["allowed"], answer["state"]) == (200, False, "hard")
    (globex,) = answer["budgets"]
    assert (globex["dimension"], globex["value"], Decimal(globex["spent"])) == (
        "customer", "globex", GPT4O)
    support_for_globex = "/v1/budgets/check?team=support&customer=globex"
    assert not get(worker, support_for_globex)[1]["allowed"]
    assert get(worker, "/v1/budgets/check?team=support&customer=initech")[1]["allowed"]
    for_globex = {**request, "metadata": {"tokenyield_customer": "globex"}}
    with pytest.raises(BudgetExceededError) as refused:
        asyncio.run(ask(for_globex, UserAPIKeyAuth(team_alias="support")))
    assert "customer=globex/period=daily" in str(refused.value)
    # Another team, and a request naming no team, still pass.
    other = UserAPIKeyAuth(team_alias="support")
    assert asyncio.run(ask(request, other)) == request
    assert asyncio.run(ask({"model": "gpt-4o"}, UserAPIKeyAuth())) == {"model": "gpt-4o"}

    # Raised live, the budget allows again at once (the rule in force judges the spend).
    budgets("set", "--team", "sales", "--period", "daily", "--amount", "5")
    deadline = time.monotonic() + 30
    while not get(worker, check)[1]["allowed"] and time.monotonic() < deadline:
        time.sleep(0.3)
    assert get(worker, check)[1]["allowed"]
    assert asyncio.run(ask(request)) == request

    # A worker that cannot be asked: open by default, closed when told.
    dead = module.TokenyieldBudgetHook(url="http://127.0.0.1:9", timeout_seconds=0.5)
    assert asyncio.run(dead.async_pre_call_hook(key, DualCache(), request, "completion")) \
        == request
    closed = module.TokenyieldBudgetHook(url="http://127.0.0.1:9", timeout_seconds=0.5,
                                         fail_open=False)
    with pytest.raises(module.BudgetCheckUnavailable):
        asyncio.run(closed.async_pre_call_hook(key, DualCache(), request, "completion"))
    assert metric_value(worker, "tokenyield_budget_checks_total", state="hard") >= 1
