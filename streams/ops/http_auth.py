"""Who may call the worker's ``/v1/*`` endpoints: bearer tokens from the settings.

- With tokens configured (``TOKENYIELD_HTTP_TOKENS``), a request must carry one:
  ``Authorization: Bearer <token>``, or, for senders that cannot set headers but sign
  their payloads (GitHub webhooks), ``X-Hub-Signature-256: sha256=<HMAC of the body>``
  with one of the tokens as the webhook secret.
- With none, the endpoints are open only when the web server listens on a loopback
  address (``TOKENYIELD_WEB_HOST`` 127.0.0.1, the default, or ::1/localhost): only
  processes on the same machine reach them. On any other address (0.0.0.0 in a
  container) they refuse every request (403) rather than take events from anyone.

Tokens are compared in constant time (``hmac.compare_digest`` on their SHA-256, so
neither content nor length leaks through timing), every configured token is tried
whatever matched, and no token is ever logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

Verdict = Literal["ok", "missing", "invalid", "refused"]


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name that may resolve to anything: not loopback


@dataclass(frozen=True, slots=True)
class AuthResult:
    verdict: Verdict
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    @property
    def status(self) -> int:
        return {"ok": 200, "missing": 401, "invalid": 401, "refused": 403}[self.verdict]


class HttpAuth:
    """The policy, built once from the settings' tokens and the web host."""

    def __init__(self, tokens: tuple[SecretStr, ...], web_host: str) -> None:
        secrets = [t.get_secret_value().encode() for t in tokens]
        self._secrets = secrets  # for HMAC signatures
        self._digests = [hashlib.sha256(s).digest() for s in secrets]
        self.open = not secrets and is_loopback(web_host)
        self.web_host = web_host

    @property
    def refusing(self) -> bool:
        """No tokens and a non-loopback address: every request is refused."""
        return not self._digests and not self.open

    def needs_body(self, headers: Mapping[str, str]) -> bool:
        """The request is to be judged by a signature of its body (read it first);
        otherwise its headers decide, before the body is read."""
        return (not self.open and not self.refusing and "X-Hub-Signature-256" in headers
                and not headers.get("Authorization"))

    def check(self, headers: Mapping[str, str], body: bytes = b"") -> AuthResult:
        """Judge one request by its headers (and its body, for a signature)."""
        if self.open:
            return AuthResult("ok")
        if self.refusing:
            return AuthResult("refused", (
                f"no TOKENYIELD_HTTP_TOKENS are configured and the worker listens on "
                f"{self.web_host}, not a loopback address: set tokens to accept requests"))
        authorization = headers.get("Authorization", "")
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            if self._token_matches(credential.strip().encode()):
                return AuthResult("ok")
            return AuthResult("invalid", "the bearer token is not one of the configured ones")
        signature = headers.get("X-Hub-Signature-256", "")
        if signature:
            if self._signature_matches(signature, body):
                return AuthResult("ok")
            return AuthResult("invalid", "X-Hub-Signature-256 does not match the body "
                                         "under any configured token")
        return AuthResult("missing", "send Authorization: Bearer <token> (one of "
                                     "TOKENYIELD_HTTP_TOKENS)")

    def _token_matches(self, given: bytes) -> bool:
        digest = hashlib.sha256(given).digest()
        matched = False
        for expected in self._digests:  # no early exit: timing says nothing of which
            matched |= hmac.compare_digest(digest, expected)
        return matched

    def _signature_matches(self, header: str, body: bytes) -> bool:
        algorithm, _, given = header.strip().partition("=")
        if algorithm != "sha256" or not given:
            return False
        matched = False
        for secret in self._secrets:
            expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
            matched |= hmac.compare_digest(given.lower().encode(), expected.encode())
        return matched
