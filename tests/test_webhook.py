"""The alert webhook against a real HTTP server on 127.0.0.1 (aiohttp, a random port)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from schemas.outputs import Alert
from streams.ops.webhook import AlertWebhook, slack_payload

SECRET = "T0SECRET/B0SECRET/s3cr3t-t0ken"


def alert(n: int = 1, status: str = "firing", severity: str = "warning") -> Alert:
    at = datetime(2026, 12, 1, 10, n, tzinfo=UTC)
    return Alert(
        alert_id=f"spend_spike:team=acme/workflow=support:{n}", kind="spend_spike",
        status=status, severity=severity, subject={"team": "acme", "workflow": "support"},
        observed=Decimal("12.40"), expected=Decimal("2.38"), threshold=Decimal("4.76"),
        unit="USD", window_start=at, window_end=at, occurred_at=at,
        message=f"Spend spike #{n} in acme/support: 12.40 USD <5.2×> & more", details={})


class Hook:
    """A webhook receiver that answers from a script: a status code, or ``"slow"``
    (sleep ``slow_seconds`` then 200). Past the script's end it answers 200."""

    def __init__(self) -> None:
        self.script: list[int | str] = []
        self.received: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.slow_seconds = 1.0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        step = self.script.pop(0) if self.script else 200
        if step == "slow":
            await asyncio.sleep(self.slow_seconds)
            step = 200
        if step == 200:
            self.received.append(await request.json())
        return web.Response(status=int(step), text="ok" if step == 200 else "no")


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    receiver = Hook()
    app = web.Application()
    app.router.add_post("/services/{rest:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)  # the receiver logs paths; we test the sender
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}/services/{SECRET}"
    yield receiver
    await runner.cleanup()


def webhook(url: str, **options: Any) -> AlertWebhook:
    options.setdefault("backoff_seconds", 0.01)
    return AlertWebhook(SecretStr(url), **options)


async def test_delivers_a_slack_message(hook: Hook) -> None:
    sender = webhook(hook.url)
    sender.notify([alert(1), alert(2, status="resolved")])
    await sender.drain()
    assert (sender.delivered, sender.failures, sender.pending) == (2, 0, 0)
    assert hook.paths == [f"/services/{SECRET}"] * 2
    first, second = hook.received
    assert first["text"] == "[WARNING] Spend spike #1 in acme/support: 12.40 USD <5.2×> & more"
    attachment = first["attachments"][0]
    assert attachment["color"] == "#f2a900"
    assert attachment["blocks"][0]["text"]["text"] == \
        "*WARNING* Spend spike #1 in acme/support: 12.40 USD &lt;5.2×&gt; &amp; more"
    fields = [f["text"] for f in attachment["blocks"][1]["fields"]]
    assert fields[:4] == ["*Alert*\nspend spike (team=acme, workflow=support)",
                          "*Observed*\n12.4 USD", "*Expected*\n2.38 USD",
                          "*Threshold*\n4.76 USD"]
    assert "spend_spike:team=acme/workflow=support:1" in \
        attachment["blocks"][2]["elements"][0]["text"]
    assert second["text"].startswith("[RESOLVED] ")
    assert second["attachments"][0]["color"] == "#2eb67d"


async def test_server_errors_are_retried_with_backoff(hook: Hook) -> None:
    hook.script = [500, 503]
    sender = webhook(hook.url, retries=3, backoff_seconds=0.05)
    started = time.monotonic()
    sender.notify([alert()])
    await sender.drain()
    assert len(hook.paths) == 3 and len(hook.received) == 1
    assert (sender.delivered, sender.failures) == (1, 0)
    assert time.monotonic() - started >= 0.05 + 0.1  # backoff doubles


async def test_gives_up_after_the_retries_and_reports(hook: Hook) -> None:
    hook.script = [500] * 10
    failed: list[tuple[str, str]] = []
    sender = webhook(hook.url, retries=2, on_failure=lambda a, why: failed.append(
        (a.alert_id, why)))
    sender.notify([alert()])
    await sender.drain()
    assert len(hook.paths) == 3
    assert (sender.delivered, sender.failures) == (0, 1)
    assert failed == [("spend_spike:team=acme/workflow=support:1", "HTTP 500")]


async def test_a_client_error_is_not_retried(hook: Hook) -> None:
    hook.script = [404]
    sender = webhook(hook.url, retries=3)
    sender.notify([alert()])
    await sender.drain()
    assert len(hook.paths) == 1 and sender.failures == 1


async def test_a_timeout_counts_as_a_failed_attempt(hook: Hook) -> None:
    hook.script = ["slow", "slow", "slow"]
    failed: list[str] = []
    sender = webhook(hook.url, timeout_seconds=0.2, retries=1,
                     on_failure=lambda a, why: failed.append(why))
    started = time.monotonic()
    sender.notify([alert()])
    await sender.drain()
    assert len(hook.paths) == 2 and hook.received == []
    assert failed == ["timeout"]
    assert time.monotonic() - started < hook.slow_seconds * 1.5


async def test_notify_does_not_wait_and_keeps_the_order(hook: Hook) -> None:
    hook.script = ["slow"]
    hook.slow_seconds = 0.3
    sender = webhook(hook.url)
    started = time.monotonic()
    sender.notify([alert(1)])
    sender.notify([alert(2)])
    assert time.monotonic() - started < 0.05 and sender.pending == 2
    await sender.drain()
    assert [m["text"].split()[3] for m in hook.received] == ["#1", "#2"]


async def test_too_many_waiting_alerts_are_dropped_and_counted(hook: Hook) -> None:
    sender = webhook(hook.url, max_pending=2)
    sender.notify([alert(1), alert(2), alert(3)])
    await sender.drain()
    assert (sender.delivered, sender.failures) == (2, 1)


def test_without_a_running_loop_nothing_raises() -> None:
    failed: list[str] = []
    sender = webhook("http://127.0.0.1:9/services/x", on_failure=lambda a, why: failed.append(why))
    sender.notify([alert()])
    assert failed == ["no running event loop"] and sender.failures == 1


async def test_the_url_never_reaches_the_logs(hook: Hook, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    reasons: list[str] = []
    for url, script in ((hook.url, [200]), (hook.url, [500, 500, 404]),
                        (hook.url, ["slow", "slow"]),
                        (f"http://127.0.0.1:{closed}/services/{SECRET}", []),
                        (f"http://[bad/services/{SECRET}", [])):
        hook.script = list(script)
        sender = webhook(url, retries=1, timeout_seconds=0.2,
                         on_failure=lambda a, why: reasons.append(why))
        sender.notify([alert()])
        await sender.drain()
        assert repr(sender).count("**********") == 1
    assert reasons == ["HTTP 500", "timeout", "ClientConnectorError", "InvalidUrlClientError"]
    assert "gave up on spend_spike" in caplog.text and "retrying" in caplog.text
    assert "s3cr3t" not in caplog.text and "SECRET" not in caplog.text
    assert all("s3cr3t" not in why for why in reasons)


def test_payload_severity_colours() -> None:
    colours = {s: slack_payload(alert(severity=s))["attachments"][0]["color"]
               for s in ("info", "warning", "critical")}
    assert len(set(colours.values())) == 3
    long = alert().model_copy(update={"message": "x" * 5000})
    assert len(slack_payload(long)["attachments"][0]["blocks"][0]["text"]["text"]) <= 3000
