"""A LiteLLM proxy pre-call hook: refuse a request once its team's hard budget is spent.

Before the proxy forwards a request, the hook asks a tokenyield worker
``GET /v1/budgets/check?team=...&workflow=...`` (answered from memory, well under a
millisecond on the worker) and raises LiteLLM's ``BudgetExceededError`` when the answer
is ``allowed: false`` (a hard budget is used up). Soft budgets only warn (logged).

Put this file next to the proxy's config and name it there::

    litellm_settings:
      callbacks: budget_hook.proxy_handler_instance

Configuration (environment of the proxy):

- ``BUDGET_CHECK_URL``: the worker, default ``http://127.0.0.1:6066``;
- ``BUDGET_CHECK_TOKEN``: one of the worker's ``TOKENYIELD_HTTP_TOKENS`` (needed unless
  the worker is on the same machine with no tokens);
- ``BUDGET_CHECK_TIMEOUT_SECONDS``: default 0.5;
- ``BUDGET_CHECK_FAIL_OPEN``: ``true`` (default) lets requests through when the worker
  cannot be asked, logging it; ``false`` refuses them instead.

The team and workflow of a request are taken from, first present: the request's
``metadata`` (``tokenyield_team``, ``tokenyield_workflow``), the virtual key's metadata
(same names), then the key's team alias. Its customer and user, for budgets of a
customer or a user (``tokenyield budgets set --dimension customer --value acme``), come
from ``tokenyield_customer`` and ``tokenyield_user`` in the same places, the user also
from the request's OpenAI ``user`` field, then the key's end user. A request with none
of these is not checked.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import httpx
from litellm.exceptions import BudgetExceededError
from litellm.integrations.custom_logger import CustomLogger

log = logging.getLogger("tokenyield.budget_hook")

TEAM_KEY = "tokenyield_team"
WORKFLOW_KEY = "tokenyield_workflow"
CUSTOMER_KEY = "tokenyield_customer"
USER_KEY = "tokenyield_user"


class BudgetCheckUnavailable(Exception):
    """The worker could not answer (fail-closed mode)."""


class TokenyieldBudgetHook(CustomLogger):
    def __init__(self, url: str | None = None, token: str | None = None,
                 timeout_seconds: float | None = None, fail_open: bool | None = None) -> None:
        super().__init__()
        self.url = (url or os.environ.get("BUDGET_CHECK_URL") or "http://127.0.0.1:6066"
                    ).rstrip("/")
        self.token = token if token is not None else os.environ.get("BUDGET_CHECK_TOKEN", "")
        self.timeout = timeout_seconds if timeout_seconds is not None else float(
            os.environ.get("BUDGET_CHECK_TIMEOUT_SECONDS", "0.5"))
        self.fail_open = fail_open if fail_open is not None else os.environ.get(
            "BUDGET_CHECK_FAIL_OPEN", "true").strip().lower() not in ("false", "0", "no")
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> httpx.AsyncClient:
        # One pooled client: a kept-alive connection makes each check one round trip.
        # Its connections belong to the event loop that opened them: the proxy runs one,
        # but a new loop (a reload, a test) gets a client of its own.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._loop = loop
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._client = httpx.AsyncClient(base_url=self.url, headers=headers,
                                             timeout=self.timeout)
        return self._client

    async def check(self, team: str | None, workflow: str | None,
                    **dimensions: str | None) -> dict[str, Any]:
        named = {"team": team, "workflow": workflow, **dimensions}
        params = {name: value for name, value in named.items() if value}
        response = await self.client().get("/v1/budgets/check", params=params)
        response.raise_for_status()
        return response.json()

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict,
                                  call_type: Any) -> dict:
        team, workflow = dimensions(user_api_key_dict, data)
        customer, user = customer_and_user(user_api_key_dict, data)
        if not (team or customer or user):
            return data
        try:
            answer = await self.check(team, workflow if team else None, customer=customer,
                                      user=user)
        except (httpx.HTTPError, ValueError) as exc:
            # Never the token: only where and what failed.
            log.warning("tokenyield budget check at %s failed (%s: %s); %s", self.url,
                        type(exc).__name__, exc, "allowing" if self.fail_open else "refusing")
            if self.fail_open:
                return data
            raise BudgetCheckUnavailable(
                f"the tokenyield budget check at {self.url} did not answer") from exc
        if answer.get("allowed", True):
            if answer.get("state") == "soft":
                log.info("%s is past a soft budget: %s %s left",
                         who(team, workflow, customer, user), answer.get("remaining"),
                         answer.get("currency"))
            return data
        hard = [b for b in answer.get("budgets", []) if b.get("state") == "hard"]
        first = hard[0] if hard else {}
        names = ", ".join(b.get("budget_id", "?") for b in hard) or "a budget"
        raise BudgetExceededError(
            # LiteLLM's error takes floats; the message carries the exact figures.
            current_cost=float(first.get("spent", 0)),
            max_budget=float(first.get("amount", 0)),
            message=(f"tokenyield: {names} is used up ({first.get('spent')} of "
                     f"{first.get('amount')} {answer.get('currency')} spent); it resets at "
                     f"{answer.get('resets_at')}"),
            entity_type="team" if team else "customer" if customer else "user",
            entity_id=team or customer or user)


def _first(key: Any, data: dict, name: str, *fallbacks: Any) -> str | None:
    """The first text value of ``name`` in the request's metadata, then the key's
    metadata, then the fallbacks."""
    request = data.get("metadata") or {}
    key_metadata = getattr(key, "metadata", None) or {}
    for value in (request.get(name), key_metadata.get(name), *fallbacks):
        if isinstance(value, str) and value:
            return value
    return None


def dimensions(key: Any, data: dict) -> tuple[str | None, str | None]:
    """The request's team and workflow (see the module's docstring)."""
    return (_first(key, data, TEAM_KEY, getattr(key, "team_alias", None)),
            _first(key, data, WORKFLOW_KEY))


def customer_and_user(key: Any, data: dict) -> tuple[str | None, str | None]:
    """The request's customer and user (see the module's docstring)."""
    return (_first(key, data, CUSTOMER_KEY),
            _first(key, data, USER_KEY, data.get("user"), getattr(key, "end_user_id", None)))


def who(team: str | None, workflow: str | None, customer: str | None,
        user: str | None) -> str:
    parts = [f"team {team}{f'/{workflow}' if workflow else ''}" if team else "",
             f"customer {customer}" if customer else "", f"user {user}" if user else ""]
    return ", ".join(part for part in parts if part)


proxy_handler_instance = TokenyieldBudgetHook()
