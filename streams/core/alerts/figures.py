"""Turning estimates into alert figures: Decimals, times and short human text."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal

from schemas.errors import TokenyieldError
from streams.core.money import RATIO_QUANTUM

SubjectDict = dict[str, str]
_CONTEXT = Context(prec=60, rounding=ROUND_HALF_EVEN)


def dec(x: float | int | Decimal) -> Decimal:
    """An estimate as a Decimal rounded to 9 places (the ratio scale of the outputs)."""
    if isinstance(x, float) and not math.isfinite(x):
        raise TokenyieldError(f"not a finite figure: {x}", value=repr(x))
    value = x if isinstance(x, Decimal) else Decimal(repr(x)) if isinstance(x, float) \
        else Decimal(x)
    return value.quantize(RATIO_QUANTUM, context=_CONTEXT)


def dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def iso(ms: int) -> str:
    """Event time for ids and messages: ``2026-12-03T10:15:00Z``."""
    return dt(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def clock(ms: int) -> str:
    return dt(ms).strftime("%Y-%m-%d %H:%M UTC")


def subject_key(subject: SubjectDict) -> str:
    """A subject as text for alert ids: ``team=acme/workflow=support/model=gpt-4o``."""
    return "/".join(f"{k}={v}" for k, v in subject.items())


def subject_name(subject: SubjectDict) -> str:
    """A subject for people: ``acme/support (model gpt-4o)``."""
    path = "/".join(v for k, v in subject.items() if k in ("team", "workflow") and v)
    rest = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in subject.items()
                     if k not in ("team", "workflow") and v)
    return f"{path} ({rest})" if path and rest else path or rest


def money(amount: Decimal | float, currency: str) -> str:
    """``12.40 USD``; small amounts keep four significant digits (``0.003412 USD``)."""
    value = amount if isinstance(amount, Decimal) else Decimal(repr(float(amount)))
    if abs(value) >= 1 or value == 0:
        return f"{value.quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN):,} {currency}"
    digits = 3 - value.adjusted()
    return f"{value.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_EVEN)} {currency}"


def pct(share: Decimal | float) -> str:
    return f"{float(share) * 100:.1f}%"


def times(ratio: Decimal | float) -> str:
    return f"{float(ratio):.1f}×"


def count(x: Decimal | float | int) -> str:
    value = float(x)
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}".rstrip("0").rstrip(".")
