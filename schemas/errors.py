"""The one exception root of tokenyield, and the structured errors under it.

Errors on the hot path are data (see ``codec.DecodeError``), not exceptions: a bad
event in an envelope must not abort its good neighbours. Exceptions are for the
caller's mistakes and for infrastructure failures, and every one carries fields a
program can act on, not only a message.
"""

from __future__ import annotations

from typing import Any


class TokenyieldError(Exception):
    """Root of every error tokenyield raises on purpose."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": self.message, **self.fields}


class InvalidEventError(TokenyieldError):
    """An event failed validation; ``reasons`` lists every problem found."""

    def __init__(self, message: str, reasons: list[str], index: int | None = None) -> None:
        super().__init__(message, reasons=reasons, index=index)
        self.reasons = reasons
        self.index = index


class PriceBookError(TokenyieldError):
    """A price catalog could not be read or is inconsistent."""


class PublishError(TokenyieldError):
    """The broker did not accept an event; nothing was silently dropped."""


class ConfigurationError(TokenyieldError):
    """Settings are inconsistent (for example a hard budget below its soft one)."""


class StorageError(TokenyieldError):
    """ClickHouse refused or could not be reached; the caller retries."""


class SinkError(TokenyieldError):
    """A batch cannot be written and retrying cannot help: a fault in tokenyield (a
    column builder, a row that does not fit its table), not in ClickHouse. The worker
    stops; its unacknowledged input is processed again once the fault is fixed."""


class StateError(TokenyieldError):
    """Saved state cannot be read back (an unknown format, a missing record): reset the
    worker's state to start over."""


class BrokerError(TokenyieldError):
    """The embedded broker would not start."""


class FocusExportError(TokenyieldError):
    """A FOCUS export cannot be made as asked (bad range, file type, or data FOCUS
    rejects)."""


class QueryRefused(TokenyieldError):
    """A query the read-only SQL endpoint does not run (one read-only statement only)."""
