"""Alert delivery to a Slack-compatible incoming webhook, off the processing path.

``notify`` only schedules: each call becomes one task on the running loop, chained to
the previous one so alerts arrive in the order they were raised (a firing alert before
its resolution). A delivery retries connection errors, timeouts, HTTP 429 and 5xx with
exponential backoff, then gives up, counts the failure and calls ``on_failure``; other
4xx answers are not retried. Delivery is at least once per call of ``notify``: after a
crash the rollup replays its input and may raise (and send) the same alert again, with
the same ``alert_id``.

The URL is a secret (Slack's carries its token in the path): it is read only to post,
and nothing here logs it or an exception's text, which could contain it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from pydantic import SecretStr

from schemas.outputs import Alert

log = logging.getLogger(__name__)

COLORS = {"critical": "#d00000", "warning": "#f2a900", "info": "#439fe0"}
RESOLVED_COLOR = "#2eb67d"
MAX_TEXT = 2900  # Slack rejects a section text over 3000 characters

FailureHandler = Callable[[Alert, str], None]


class AlertWebhook:
    """Posts each alert as a Slack message. Call ``drain`` before shutting down."""

    def __init__(self, url: SecretStr, *, timeout_seconds: float = 5.0, retries: int = 3,
                 backoff_seconds: float = 0.5, max_backoff_seconds: float = 30.0,
                 max_pending: int = 1000, on_failure: FailureHandler | None = None) -> None:
        self._url = url
        self.timeout_seconds = timeout_seconds
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_pending = max_pending
        self.on_failure = on_failure
        self.delivered = 0
        self.failures = 0
        self.pending = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._tail: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"AlertWebhook(url={self._url!r}, pending={self.pending})"

    def notify(self, alerts: list[Alert]) -> None:
        """Schedule delivery of ``alerts`` on the running loop and return at once."""
        if not alerts:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            for alert in alerts:
                self._failed(alert, "no running event loop")
            return
        room = max(0, self.max_pending - self.pending)
        for alert in alerts[room:]:
            self._failed(alert, "too many alerts waiting for delivery")
        batch = alerts[:room]
        if not batch:
            return
        self.pending += len(batch)
        previous = self._tail if self._tail is not None and self._tail.get_loop() is loop \
            else None
        task = loop.create_task(self._run(batch, previous))
        self._tail = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait until every scheduled delivery has succeeded or given up."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run(self, alerts: list[Alert], previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        done = 0
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout_seconds)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                for alert in alerts:
                    await self._deliver(session, alert)
                    done += 1
                    self.pending -= 1
        except Exception as exc:  # never an unretrieved task exception, never its text
            log.error("alert webhook: delivery failed unexpectedly (%s)", type(exc).__name__)
            for alert in alerts[done:]:
                self.pending -= 1
                self._failed(alert, type(exc).__name__)

    async def _deliver(self, session: aiohttp.ClientSession, alert: Alert) -> bool:
        body = orjson.dumps(slack_payload(alert))
        attempts = self.retries + 1
        reason = ""
        for attempt in range(1, attempts + 1):
            delay = self._backoff(attempt)
            try:
                async with session.post(self._url.get_secret_value(), data=body,
                                        headers={"Content-Type": "application/json"}) as resp:
                    if 200 <= resp.status < 300:
                        self.delivered += 1
                        return True
                    reason = f"HTTP {resp.status}"
                    if resp.status != 429 and resp.status < 500:
                        break  # our request is wrong: retrying will not help
                    delay = _retry_after(resp.headers.get("Retry-After"), delay,
                                         self.max_backoff_seconds)
            except TimeoutError:
                reason = "timeout"
            except aiohttp.ClientError as exc:
                reason = type(exc).__name__
            if attempt < attempts:
                log.warning("alert webhook: %s for %s (attempt %d of %d), retrying in %.2f s",
                            reason, alert.alert_id, attempt, attempts, delay)
                await asyncio.sleep(delay)
        self._failed(alert, reason)
        return False

    def _backoff(self, attempt: int) -> float:
        return min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))

    def _failed(self, alert: Alert, reason: str) -> None:
        self.failures += 1
        log.error("alert webhook: gave up on %s (%s %s): %s", alert.alert_id, alert.kind,
                  alert.status, reason)
        if self.on_failure is not None:
            try:
                self.on_failure(alert, reason)
            except Exception:
                log.exception("alert webhook: on_failure callback raised")


def _retry_after(header: str | None, default: float, cap: float) -> float:
    try:
        return min(cap, max(0.0, float(header))) if header else default
    except ValueError:
        return default


# -- the message -------------------------------------------------------------------------------
def slack_payload(alert: Alert) -> dict[str, Any]:
    """A Slack message: ``text`` (the notification), and an attachment coloured by severity
    (green once resolved) holding blocks with the message, the figures and the id."""
    resolved = alert.status == "resolved"
    label = "RESOLVED" if resolved else alert.severity.upper()
    title = alert.kind.replace("_", " ")
    subject = ", ".join(f"{k}={v}" for k, v in alert.subject.items())
    fields = [("Alert", f"{title} ({subject})"), ("Observed", _figure(alert.observed, alert.unit))]
    if alert.expected is not None:
        fields.append(("Expected", _figure(alert.expected, alert.unit)))
    if alert.threshold is not None:
        fields.append(("Threshold", _figure(alert.threshold, alert.unit)))
    fields.append(("Window", f"{alert.window_start:%Y-%m-%d %H:%M} – "
                             f"{alert.window_end:%Y-%m-%d %H:%M} UTC"))
    blocks: list[dict[str, Any]] = [
        {"type": "section",
         "text": {"type": "mrkdwn", "text": f"*{label}* {_escape(alert.message)}"[:MAX_TEXT]}},
        {"type": "section",
         "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{_escape(value)}"}
                    for name, value in fields]},
        {"type": "context",
         "elements": [{"type": "mrkdwn",
                       "text": f"`{_escape(alert.alert_id)}` · "
                               f"{alert.occurred_at:%Y-%m-%d %H:%M:%S} UTC (event time)"}]},
    ]
    return {
        "text": f"[{label}] {alert.message}"[:MAX_TEXT],
        "attachments": [{"color": RESOLVED_COLOR if resolved else COLORS[alert.severity],
                         "fallback": f"[{label}] {title}: {subject}", "blocks": blocks}],
    }


def _figure(value: Any, unit: str) -> str:
    return f"{value.normalize():f} {unit}" if hasattr(value, "normalize") else f"{value} {unit}"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
