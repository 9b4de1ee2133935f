"""Exact money on the hot path: integers of 10^-18 currency units ("atto").

Python integers are exact and about three times faster to add than Decimals; a
Decimal with up to 18 decimal places converts to and from them without loss (more
places are rounded half-even at 10^-18, far below any real price). Outputs turn them
back into Decimal.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal

SCALE = 18
ATTO = 10**SCALE
_QUANTUM = Decimal(1).scaleb(-SCALE)
_CONTEXT = Context(prec=60, rounding=ROUND_HALF_EVEN)
RATIO_QUANTUM = Decimal("1e-9")


def to_atto(amount: Decimal) -> int:
    """Decimal money to an exact integer count of 10^-18 units."""
    return int(amount.quantize(_QUANTUM, context=_CONTEXT).scaleb(SCALE, context=_CONTEXT))


def from_atto(atto: int) -> Decimal:
    """Integer atto units back to Decimal, exactly (zero as plain ``0``)."""
    if not atto:
        return Decimal(0)
    return Decimal(atto).scaleb(-SCALE, context=_CONTEXT)


def atto_text(atto: int) -> str:
    """Atto money as its shortest exact decimal text ("0.0012124", "-3", "10"), in
    integer arithmetic: Decimal's ``normalize`` rounds to 28 digits, and this is state
    that must read back to the same integer whatever its size."""
    if not atto:
        return "0"
    sign = "-" if atto < 0 else ""
    whole, fraction = divmod(abs(atto), ATTO)
    if not fraction:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:018d}".rstrip("0")


def atto_of_text(text: str) -> int:
    """:func:`atto_text`'s text (or any plain decimal text) back to atto, exactly; text
    in another shape (an exponent, more than 18 places) goes through Decimal."""
    negative = text[:1] == "-"
    whole, _, fraction = (text[1:] if negative else text).partition(".")
    if not (text.isascii() and whole.isdigit() and len(fraction) <= SCALE
            and (not fraction or fraction.isdigit())):
        return to_atto(Decimal(text))
    atto = int(whole) * ATTO + (int(fraction.ljust(SCALE, "0")) if fraction else 0)
    return -atto if negative else atto


def ratio(numerator: int | Decimal, denominator: int | Decimal) -> Decimal | None:
    """numerator / denominator rounded to 9 places; None when the denominator is zero."""
    if not denominator:
        return None
    return _CONTEXT.divide(Decimal(numerator), Decimal(denominator)).quantize(
        RATIO_QUANTUM, context=_CONTEXT
    )


def per(amount_atto: int, count: int) -> Decimal | None:
    """Money divided by a count, rounded half-even to 10^-18."""
    if not count:
        return None
    return from_atto(divide_half_even(amount_atto, count))


def divide_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half-even to an integer (denominator > 0)."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return quotient


def convert(amount_atto: int, rate_atto: int) -> int:
    """Money times an exchange rate (both atto), rounded half-even at 10^-18: banks
    round a conversion to the nearest unit, not down."""
    return divide_half_even(amount_atto * rate_atto, ATTO)
