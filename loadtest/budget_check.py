"""How fast a worker answers ``GET /v1/budgets/check``, as a gateway would ask it.

Starts a worker (embedded broker and chdb in a temporary directory, or uses ``--url``),
sets ``--budgets`` daily budgets on its ``budgets`` topic (a team budget and a workflow
budget per team), spends past one of them so that its answer is ``hard``, then asks
``--requests`` times over one kept-alive connection (what the LiteLLM hook's pooled
client does) and prints the latency distribution as the client sees it: request, the
worker's answer from memory, response; then the same for ``/health/``, the web
server's floor, as the baseline of the same run; then through the LiteLLM
proxy hook (``deploy/litellm/budget_hook.py``) when litellm is installed. Measured, not
asserted (CONTRIBUTING.md).

    python -m loadtest.budget_check --requests 5000 --budgets 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.core.alerts import BudgetRule
from streams.feeds.budget_feed import encode_budget
from streams.kafka.tansu_broker import free_port

ROOT = Path(__file__).resolve().parent.parent


def budgets(count: int) -> list[dict[str, str]]:
    """``count`` budgets: team budgets and one workflow budget per team, alternately."""
    rules = []
    for i in range(count):
        team = f"team-{i // 2}"
        rules.append({"team": team, "period": "daily", "amount": "0.01"} if i % 2 == 0 else
                     {"team": team, "workflow": "wf", "period": "daily", "amount": "1000"})
    return rules


@contextmanager
def worker() -> Iterator[tuple[str, str]]:
    """A worker subprocess; yields its URL and its (embedded) broker."""
    data = Path(tempfile.mkdtemp(prefix="ty-budget-check-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENYIELD_")}
    env.update({"TOKENYIELD_DATA_DIR": str(data), "TOKENYIELD_WEB_PORT": str(port),
                "TOKENYIELD_LOG_LEVEL": "warning", "TOKENYIELD_OTLP_TOPIC": ""})
    log = open(data / "worker.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError((data / "worker.log").read_text()[-3000:])
            try:
                status, _ = ask_once(url, "/health/")
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        yield url, json.loads((data / "worker.json").read_text())["bootstrap"]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
        shutil.rmtree(data, ignore_errors=True)


def ask_once(url: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("POST" if body else "GET", path, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def set_budgets(url: str, bootstrap: str, rules: list[dict[str, str]]) -> None:
    """Publish the budgets on the worker's topic (as ``tokenyield budgets set`` does) and
    wait until the worker judges the last one."""

    async def publish() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for rule in rules:
                key, value = encode_budget(BudgetRule.model_validate(rule))
                await producer.send("tokenyield.budgets", value, key=key)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(publish())
    last = rules[-1]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, answer = ask_once(url, f"/v1/budgets/check?team={last['team']}&workflow=wf")
        if len(json.loads(answer)["budgets"]) == 2:
            return
        time.sleep(0.5)
    raise RuntimeError("the worker never saw the budgets")


def spend(url: str, team: str) -> None:
    """Calls past the team's 0.01 budget, through ``/v1/events``; then wait for the
    rollup to publish the state and the worker to follow it."""
    now = datetime.now(UTC).isoformat()
    lines = [json.dumps({"event_id": f"lt-{i}", "work_unit_id": f"lt-{i}", "occurred_at": now,
                         "provider": "openai", "model": "gpt-4o", "input_tokens": 1000,
                         "output_tokens": 200, "team": team, "workflow": "wf"})
             for i in range(3)]
    status, answer = ask_once(url, "/v1/events", "\n".join(lines).encode())
    if status != 200:
        raise RuntimeError(f"/v1/events answered {status}: {answer[:300]!r}")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        _, answer = ask_once(url, f"/v1/budgets/check?team={team}")
        if json.loads(answer)["state"] == "hard":
            return
        time.sleep(0.5)
    raise RuntimeError("the budget never turned hard")


def timed(url: str, requests: int, path_of: Any) -> tuple[list[float], dict[str, int]]:
    """``requests`` GETs of ``path_of(i)`` over one kept-alive connection (after 200 to
    warm up): their latencies in ms, and the answers' ``state`` counts."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    timings: list[float] = []
    states: dict[str, int] = {}
    try:
        for i in range(requests + 200):
            started = time.perf_counter()
            connection.request("GET", path_of(i))
            response = connection.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - started
            if i >= 200:  # the first ones warm up the connection and the worker
                timings.append(elapsed * 1000)
                state = json.loads(body).get("state") if body.startswith(b"{") else None
                if state:
                    states[state] = states.get(state, 0) + 1
    finally:
        connection.close()
    return sorted(timings), states


def distribution(timings: list[float]) -> dict[str, float]:
    def pct(p: float) -> float:
        return round(timings[min(len(timings) - 1, int(p * len(timings)))], 3)

    return {"p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "max_ms": round(timings[-1], 3), "mean_ms": round(statistics.fmean(timings), 3)}


def measure(url: str, requests: int, teams: int) -> dict[str, Any]:
    """The check, then the worker's cheapest page (``/health/``) the same way: the
    baseline of the web server and the connection, measured in the same run."""
    checks, states = timed(
        url, requests, lambda i: f"/v1/budgets/check?team=team-{i % max(teams, 1)}&workflow=wf")
    health, _ = timed(url, requests, lambda i: "/health/")
    figures: dict[str, Any] = {"requests": len(checks), "states": states,
                               **distribution(checks)}
    baseline = distribution(health)
    figures["health_baseline"] = baseline
    figures["p50_over_health"] = round(figures["p50_ms"] / baseline["p50_ms"], 2)
    hook = through_the_litellm_hook(url, requests, teams)
    if hook is not None:
        figures["litellm_hook"] = distribution(hook)
    return figures


def through_the_litellm_hook(url: str, requests: int, teams: int) -> list[float] | None:
    """The same checks as the proxy makes them: ``deploy/litellm/budget_hook.py``'s
    pre-call hook (its pooled httpx client), refusals included. None without litellm
    (a test tool, not a dependency of the worker)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline
    try:
        from litellm.caching.dual_cache import DualCache
        from litellm.exceptions import BudgetExceededError
        from litellm.proxy._types import UserAPIKeyAuth
    except ImportError:
        return None
    spec = importlib.util.spec_from_file_location(
        "budget_hook", ROOT / "deploy" / "litellm" / "budget_hook.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    hook = module.TokenyieldBudgetHook(url=url, timeout_seconds=5)
    keys = [UserAPIKeyAuth(team_alias=f"team-{i}") for i in range(max(teams, 1))]
    request = {"model": "gpt-4o", "metadata": {"tokenyield_workflow": "wf"}}

    async def run() -> list[float]:
        timings = []
        cache = DualCache()
        for i in range(requests + 200):
            started = time.perf_counter()
            with contextlib.suppress(BudgetExceededError):  # a refusal is an answer too
                await hook.async_pre_call_hook(keys[i % len(keys)], cache, request,
                                               "completion")
            if i >= 200:
                timings.append((time.perf_counter() - started) * 1000)
        return sorted(timings)

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--budgets", type=int, default=100,
                        help="budgets configured on the worker (default 100)")
    parser.add_argument("--url", default=None,
                        help="a running worker instead (its budgets as they are)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    teams = max(1, args.budgets // 2)
    if args.url:
        figures = measure(args.url, args.requests, teams)
    else:
        with worker() as (url, bootstrap):
            set_budgets(url, bootstrap, budgets(args.budgets))
            spend(url, "team-0")
            figures = measure(url, args.requests, teams)
    figures["budgets"] = args.budgets
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
