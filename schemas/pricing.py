"""The price book, and pricing as a pure function with an exact Decimal result.

Prices are per million tokens. A call is priced at the entry in force at its
``occurred_at`` (the latest ``effective_from`` not after it). An entry names a model
exactly, or by a regular expression (``model_pattern``, matched in full, case-
insensitive); exact names win over patterns. A model with no entry is *unpriced*:
its cost is ``None`` and flagged, never zero.

Token arithmetic follows the OpenTelemetry convention (see ``events.py``):
uncached input = input - cache reads - cache writes, and reasoning is a part of output.
``long_context`` holds optional tiers: once a call's input tokens exceed a tier's
threshold (or reach it, for an ``inclusive`` tier), every token of that call is priced
at the rates of the highest such tier, which is how the providers bill it. A rate a
tier leaves out is the entry's own; a missing cache rate is the tier's input rate.

Cache writes come in two lifetimes: ``cache_write_tokens`` are all of a call's cache
writes, and ``cache_write_1h_tokens`` the part of them written for one hour (Anthropic's
``ephemeral_1h_input_tokens``), priced at ``cache_write_1h_per_mtok``; the rest are
short-lived (5-minute) writes at ``cache_write_per_mtok``.

``service_tiers`` holds the prices of a provider's service tiers (``flex``,
``priority``, ``batch``...), by tier name. A call that names a tier the entry lists
(``ModelCall.service_tier``) is priced at that tier's rates; a call in the default tier,
or in a tier the entry does not list, at the entry's own. A rate a service tier leaves
out is the entry's own, and its ``long_context`` tiers are its own: the entry's
long-context tiers do not apply to a call in a service tier.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from datetime import UTC, datetime
from decimal import Context, Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from schemas.errors import PriceBookError
from schemas.events import ModelCall

MONEY = Context(prec=38)
MILLION = Decimal(1_000_000)
COST_QUANTUM = Decimal("1e-18")
DEFAULT_CATALOG = Path(__file__).parent / "catalog" / "default_prices.json"

Rate = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


#: Names a call may give its service tier that mean the provider's standard prices.
STANDARD_SERVICE_TIERS = frozenset({"", "auto", "default", "standard", "standard_only",
                                    "on_demand"})
#: Other spellings of a tier, as providers and LiteLLM report them.
SERVICE_TIER_ALIASES = {"fast": "priority", "on_demand_priority": "priority",
                        "on_demand_flex": "flex", "batches": "batch"}
ServiceTierName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


def service_tier_key(name: str | None) -> str | None:
    """The catalog key of a call's service tier: None for the standard tier."""
    if name is None:
        return None
    key = name.strip().lower()
    if key in STANDARD_SERVICE_TIERS:
        return None
    return SERVICE_TIER_ALIASES.get(key, key)


class OverrideRates(BaseModel):
    """Rates per million tokens that replace the entry's own where given (a long-context
    tier's, a service tier's); a rate left out is the entry's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_mtok: Rate | None = None
    output_per_mtok: Rate | None = None
    cached_input_per_mtok: Rate | None = None
    cache_write_per_mtok: Rate | None = None
    cache_write_1h_per_mtok: Rate | None = None
    reasoning_per_mtok: Rate | None = None


class LongContextTier(OverrideRates):
    """Rates that apply to a whole call once its input exceeds ``above_input_tokens``."""

    above_input_tokens: int = Field(gt=0)
    inclusive: bool = Field(False, description="Apply at exactly the threshold too.")


def _check_thresholds(tiers: list[LongContextTier]) -> None:
    thresholds = [t.above_input_tokens for t in tiers]
    if thresholds != sorted(set(thresholds)):
        raise ValueError("long_context tiers must have distinct, ascending thresholds")


class ServiceTierPrices(OverrideRates):
    """A service tier's rates (per million tokens). A rate left out is the entry's own."""

    long_context: list[LongContextTier] = Field(
        default_factory=list,
        description="This tier's own long-context tiers; the entry's do not apply to it.")

    @model_validator(mode="after")
    def _tiers_ascend(self) -> ServiceTierPrices:
        _check_thresholds(self.long_context)
        return self


class PriceEntry(BaseModel):
    """One model's prices from a date on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str = Field(min_length=1, max_length=128)
    model: str | None = Field(None, min_length=1, max_length=256)
    model_pattern: str | None = Field(None, min_length=1, max_length=512)
    effective_from: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    input_per_mtok: Rate
    output_per_mtok: Rate
    cached_input_per_mtok: Rate | None = Field(None, description="Default: the input rate.")
    cache_write_per_mtok: Rate | None = Field(
        None, description="Cache writes (short-lived, 5-minute ones). Default: the input rate.")
    cache_write_1h_per_mtok: Rate | None = Field(
        None, description="1-hour cache writes (ModelCall.cache_write_1h_tokens). "
                          "Default: the cache-write rate.")
    reasoning_per_mtok: Rate | None = Field(None, description="Default: the output rate.")
    long_context: list[LongContextTier] = Field(default_factory=list)
    service_tiers: dict[ServiceTierName, ServiceTierPrices] = Field(
        default_factory=dict,
        description="Prices of service tiers (flex, priority, batch...) by name; a call in "
                    "a tier not listed here is priced at the entry's own rates.")
    source: str = ""

    @model_validator(mode="after")
    def _one_name(self) -> PriceEntry:
        if (self.model is None) == (self.model_pattern is None):
            raise ValueError("give exactly one of model and model_pattern")
        if self.model_pattern is not None:
            try:
                re.compile(self.model_pattern)
            except re.error as exc:
                raise ValueError(f"model_pattern is not a regular expression: {exc}") from exc
        if self.effective_from.tzinfo is None:
            raise ValueError("effective_from needs a timezone")
        _check_thresholds(self.long_context)
        for name in self.service_tiers:
            # Calls name tiers as providers do; these names never reach a catalog key.
            if name in STANDARD_SERVICE_TIERS:
                raise ValueError(f"service tier {name!r} is the standard one: its rates are "
                                 "the entry's own")
            if name in SERVICE_TIER_ALIASES:
                raise ValueError(f"service tier {name!r} is priced as "
                                 f"{SERVICE_TIER_ALIASES[name]!r}: name it so")
        return self

    @property
    def key(self) -> str:
        """Stable identity: the compacted ``prices`` topic is keyed by it."""
        name = self.model if self.model is not None else f"~{self.model_pattern}"
        return f"{self.provider.lower()}/{name}@{self.effective_from.isoformat()}"


class PriceBreakdown(BaseModel):
    """Cost of each kind of token, in the entry's currency; the parts add up to the cost.
    ``cache_write`` is the short-lived (5-minute) writes, ``cache_write_1h`` the 1-hour ones."""

    model_config = ConfigDict(frozen=True)

    input: Decimal = Decimal(0)
    cached_input: Decimal = Decimal(0)
    cache_write: Decimal = Decimal(0)
    cache_write_1h: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    reasoning: Decimal = Decimal(0)


class PricedCall(BaseModel):
    """The result of pricing one call. ``cost`` is None when nothing prices it."""

    model_config = ConfigDict(frozen=True)

    cost: Decimal | None
    computed_cost: Decimal | None
    reported_cost: Decimal | None
    currency: str
    unpriced: bool
    long_context: bool = False
    service_tier: str | None = Field(
        None, description="The service tier whose rates priced the call; None: standard.")
    breakdown: PriceBreakdown | None = None
    price_key: str | None = None


class PriceCatalog(BaseModel):
    """A catalog file: entries plus where they came from and as of when."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    catalog: str = "custom"
    version: str = "1"
    as_of: str = ""
    currency: str = "USD"
    source: str = ""
    entries: list[PriceEntry]


def _identity(entry: PriceEntry) -> dict[str, object]:
    """An entry's content for the book's version hash. Fields added since the first
    catalog format are left out while unset, so a catalog written before them keeps
    its version (a version change reads as a price change downstream)."""
    data = entry.model_dump(mode="json")
    if not data["service_tiers"]:
        del data["service_tiers"]
    for holder in [data, *data["long_context"]]:
        if holder.get("cache_write_1h_per_mtok") is None:
            holder.pop("cache_write_1h_per_mtok", None)
    return data


class PriceBook:
    """Immutable lookup over price entries. Build a new one to change prices."""

    def __init__(self, entries: list[PriceEntry], version: str = "custom") -> None:
        self.entries = tuple(sorted(entries, key=lambda e: (e.key,)))
        self._exact: dict[tuple[str, str], list[PriceEntry]] = {}
        self._patterns: dict[tuple[str, str], tuple[re.Pattern[str], list[PriceEntry]]] = {}
        for entry in self.entries:
            provider = entry.provider.lower()
            if entry.model is not None:
                self._exact.setdefault((provider, entry.model.lower()), []).append(entry)
            else:
                pattern = entry.model_pattern or ""
                compiled = re.compile(pattern, re.IGNORECASE)
                self._patterns.setdefault((provider, pattern), (compiled, []))[1].append(entry)
        for bucket in [*self._exact.values(), *(p[1] for p in self._patterns.values())]:
            bucket.sort(key=lambda e: e.effective_from)
        self._resolved: dict[tuple[str, str], tuple[list[float], list[PriceEntry]]] = {}
        self.base_version = version

    @cached_property
    def version(self) -> str:
        """``<catalog version>#<content hash>``: equal books have equal versions."""
        digest = hashlib.sha256()
        for entry in self.entries:
            digest.update(orjson.dumps(_identity(entry), option=orjson.OPT_SORT_KEYS))
        return f"{self.base_version}#{digest.hexdigest()[:12]}"

    def with_entries(self, entries: list[PriceEntry], removed: set[str] = frozenset()) -> PriceBook:
        """A new book where ``entries`` replace those with the same key."""
        merged = {e.key: e for e in self.entries if e.key not in removed}
        merged.update({e.key: e for e in entries})
        return PriceBook(list(merged.values()), self.base_version)

    def _candidates(self, provider: str, model: str) -> tuple[list[float], list[PriceEntry]]:
        cache_key = (provider, model)
        found = self._resolved.get(cache_key)
        if found is not None:
            return found
        p, m = provider.lower(), model.lower()
        entries = self._exact.get((p, m))
        if entries is None and "/" in m:
            entries = self._exact.get((p, m.split("/", 1)[1]))
        if entries is None:
            for (pattern_provider, _), (compiled, bucket) in self._patterns.items():
                if pattern_provider == p and compiled.fullmatch(model):
                    entries = bucket
                    break
        entries = entries or []
        found = ([e.effective_from.timestamp() for e in entries], entries)
        if len(self._resolved) < 100_000:  # bounded: model names come from publishers
            self._resolved[cache_key] = found
        return found

    def entry_for(self, provider: str, model: str, at: datetime) -> PriceEntry | None:
        """The entry in force for ``provider``/``model`` at ``at``, if any."""
        starts, entries = self._candidates(provider, model)
        i = bisect.bisect_right(starts, at.timestamp())
        return entries[i - 1] if i else None

    @classmethod
    def from_catalog(cls, catalog: PriceCatalog) -> PriceBook:
        return cls(list(catalog.entries), catalog.version)

    @classmethod
    def load(cls, path: Path | str | None = None) -> PriceBook:
        return cls.from_catalog(load_catalog(path))


_catalog_adapter = TypeAdapter(PriceCatalog)


def load_catalog(path: Path | str | None = None) -> PriceCatalog:
    """Read a catalog file (the shipped default when ``path`` is None)."""
    target = Path(path) if path is not None else DEFAULT_CATALOG
    try:
        return _catalog_adapter.validate_json(target.read_bytes())
    except FileNotFoundError as exc:
        raise PriceBookError(f"no price catalog at {target}", path=str(target)) from exc
    except ValueError as exc:
        raise PriceBookError(f"price catalog {target} is invalid: {exc}", path=str(target)) from exc


#: Per-token rates of one price level, in this order.
RATE_FIELDS = ("input", "cached_input", "cache_write", "cache_write_1h", "output", "reasoning")
RateTuple = tuple[Decimal, Decimal, Decimal, Decimal, Decimal, Decimal]
RateSource = PriceEntry | ServiceTierPrices | LongContextTier


SCALE = 18
_ATTO = Decimal(10) ** SCALE


class _Level:
    """The rates of one service tier of an entry (the standard one or a named one) and of
    its long-context tiers, resolved once (defaults filled in, divided by 1e6), also as
    integers of 10^-18 currency units per token when that is exact (it is for any price
    with at most 12 decimals per million tokens) so the hot path can price with integer
    arithmetic."""

    __slots__ = ("base", "scaled_base", "scaled_tiers", "tiers")

    def __init__(self, layers: tuple[RateSource, ...], long_context: list[LongContextTier]
                 ) -> None:
        self.base = _per_token_rates(layers)
        # Highest threshold first: the first tier a call crosses is the one that applies.
        self.tiers = [
            (t.above_input_tokens, t.inclusive, _per_token_rates((t, *layers)))
            for t in reversed(long_context)
        ]
        self.scaled_base = _scaled(self.base)
        self.scaled_tiers = [(t, i, _scaled(r)) for t, i, r in self.tiers]

    def for_input(self, input_tokens: int) -> tuple[RateTuple, bool]:
        for threshold, inclusive, rates in self.tiers:
            if input_tokens > threshold or (inclusive and input_tokens == threshold):
                return rates, True
        return self.base, False

    def scaled_for_input(self, input_tokens: int) -> tuple[int, ...] | None:
        for threshold, inclusive, rates in self.scaled_tiers:
            if input_tokens > threshold or (inclusive and input_tokens == threshold):
                return rates
        return self.scaled_base


class _Rates:
    """Every price level of one entry: the standard one and one per service tier."""

    __slots__ = ("levels", "standard")

    def __init__(self, entry: PriceEntry) -> None:
        self.standard = _Level((entry,), entry.long_context)
        self.levels = {name: _Level((prices, entry), prices.long_context)
                       for name, prices in entry.service_tiers.items()}

    def level(self, service_tier: str | None) -> tuple[_Level, str | None]:
        """The level a call in ``service_tier`` is priced at, and that level's name."""
        if service_tier is None or not self.levels:
            return self.standard, None
        key = service_tier_key(service_tier)
        found = self.levels.get(key) if key is not None else None
        return (found, key) if found is not None else (self.standard, None)


def _scaled(rates: RateTuple) -> tuple[int, ...] | None:
    scaled = [r * _ATTO for r in rates]
    if any(x != x.to_integral_value() for x in scaled):
        return None  # more than 18 decimals per token: price with Decimals instead
    return tuple(int(x) for x in scaled)


def _pick(layers: tuple[RateSource, ...], name: str, *defaults: Decimal) -> Decimal:
    return _first(*(getattr(layer, name) for layer in layers), *defaults)


def _per_token_rates(layers: tuple[RateSource, ...]) -> RateTuple:
    """Rates of the most specific layer first (long-context tier, service tier, entry),
    each missing rate taken from the next layer, then derived from this level's own."""
    input_rate = _pick(layers, "input_per_mtok")
    output_rate = _pick(layers, "output_per_mtok")
    cache_write = _pick(layers, "cache_write_per_mtok", input_rate)
    chosen = (
        input_rate,
        _pick(layers, "cached_input_per_mtok", input_rate),
        cache_write,
        _pick(layers, "cache_write_1h_per_mtok", cache_write),
        output_rate,
        _pick(layers, "reasoning_per_mtok", output_rate),
    )
    # Dividing by 10**6 only moves the exponent: exact.
    return tuple(MONEY.divide(r, MILLION) for r in chosen)  # type: ignore[return-value]


_rates_cache: dict[int, tuple[PriceEntry, _Rates]] = {}


def _rates(entry: PriceEntry) -> _Rates:
    found = _rates_cache.get(id(entry))
    if found is not None and found[0] is entry:
        return found[1]
    rates = _Rates(entry)
    if len(_rates_cache) > 50_000:
        _rates_cache.clear()
    _rates_cache[id(entry)] = (entry, rates)
    return rates


class TokenCounts(NamedTuple):
    """One call's tokens as the price book needs them (parts as in ``ModelCall``)."""

    input: int
    output: int
    cached_input: int = 0
    cache_write: int = 0
    reasoning: int = 0
    cache_write_1h: int = 0

    @classmethod
    def of(cls, call: ModelCall) -> TokenCounts:
        return cls(call.input_tokens, call.output_tokens, call.cached_input_tokens,
                   call.cache_write_tokens, call.reasoning_tokens, call.cache_write_1h_tokens)

    def billed(self) -> tuple[int, int, int, int, int, int]:
        """Token counts in ``RATE_FIELDS`` order, each billed once."""
        return (self.input - self.cached_input - self.cache_write, self.cached_input,
                self.cache_write - self.cache_write_1h, self.cache_write_1h,
                self.output - self.reasoning, self.reasoning)


def _parts(entry: PriceEntry, tokens: TokenCounts, service_tier: str | None
           ) -> tuple[tuple[Decimal, ...], bool, str | None]:
    level, tier_name = _rates(entry).level(service_tier)
    rates, use_tier = level.for_input(tokens.input)
    mul = MONEY.multiply
    parts = tuple(mul(rate, Decimal(count)) for rate, count in zip(rates, tokens.billed(),
                                                                    strict=True))
    return parts, use_tier, tier_name


def price_tokens(
    entry: PriceEntry,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
    *,
    cache_write_1h_tokens: int = 0,
    service_tier: str | None = None,
) -> tuple[Decimal, PriceBreakdown, bool]:
    """Exact cost of one call's tokens under ``entry``: (total, breakdown, long-context?)."""
    tokens = TokenCounts(input_tokens, output_tokens, cached_input_tokens, cache_write_tokens,
                         reasoning_tokens, cache_write_1h_tokens)
    parts, use_tier, _ = _parts(entry, tokens, service_tier)
    return _sum(parts), _breakdown(parts), use_tier


def _breakdown(parts: tuple[Decimal, ...]) -> PriceBreakdown:
    return PriceBreakdown(**dict(zip(RATE_FIELDS, parts, strict=True)))


def _sum(parts: tuple[Decimal, ...]) -> Decimal:
    total = Decimal(0)
    for part in parts:
        total = MONEY.add(total, part)
    return total


def _first(*rates: Decimal | None) -> Decimal:
    for rate in rates:
        if rate is not None:
            return rate
    raise PriceBookError("a price entry has no input or output rate")


def plain(amount: Decimal) -> str:
    """A Decimal as plain positional text without trailing zeros ("0.00725", "0")."""
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def scaled_price(book: PriceBook, call: ModelCall) -> tuple[int, str] | None:
    """The computed cost of a call in integer 10^-18 units of the price entry's currency,
    exactly, with that currency; None if unpriced. Honours the call's service tier.

    The engine's hot path: integer arithmetic, no Decimal (unless a rate has more than
    12 decimals per million tokens).
    """
    entry = book.entry_for(call.provider, call.model, call.occurred_at)
    if entry is None:
        return None
    rates_of_entry = _rates(entry)
    tier = call.service_tier
    level = rates_of_entry.standard if tier is None else rates_of_entry.level(tier)[0]
    input_tokens = call.input_tokens
    rates = level.scaled_for_input(input_tokens)
    if rates is None:
        parts, _, _ = _parts(entry, TokenCounts.of(call), call.service_tier)
        return int(_sum(parts).scaleb(SCALE).to_integral_value()), entry.currency
    cached = call.cached_input_tokens
    written = call.cache_write_tokens
    written_1h = call.cache_write_1h_tokens
    reasoning = call.reasoning_tokens
    return ((input_tokens - cached - written) * rates[0] + cached * rates[1]
            + (written - written_1h) * rates[2] + written_1h * rates[3]
            + (call.output_tokens - reasoning) * rates[4] + reasoning * rates[5],
            entry.currency)


def scaled_cost_of_call(book: PriceBook, call: ModelCall) -> int | None:
    """The computed cost of a call in integer 10^-18 units of the price entry's
    currency, exactly; None if unpriced. See ``scaled_price``, which also says the
    currency."""
    priced = scaled_price(book, call)
    return priced[0] if priced is not None else None


def cost_of_call(book: PriceBook, call: ModelCall) -> tuple[Decimal | None, Decimal | None, bool]:
    """The price of a call: (cost, computed cost, long-context tier used?).

    ``cost`` is the provider's reported cost when given, else the computed one; both
    are None when no entry prices the model and nothing was reported.
    """
    entry = book.entry_for(call.provider, call.model, call.occurred_at)
    computed = None
    use_tier = False
    if entry is not None:
        parts, use_tier, _ = _parts(entry, TokenCounts.of(call), call.service_tier)
        computed = _sum(parts)
    cost = call.reported_cost if call.reported_cost is not None else computed
    return cost, computed, use_tier


def price_call(book: PriceBook, call: ModelCall, currency: str = "USD") -> PricedCall:
    """Price one call with its breakdown. The provider's ``reported_cost`` wins; both kept."""
    entry = book.entry_for(call.provider, call.model, call.occurred_at)
    computed: Decimal | None = None
    breakdown = None
    long_context = False
    tier_name = None
    if entry is not None:
        parts, long_context, tier_name = _parts(entry, TokenCounts.of(call), call.service_tier)
        computed, breakdown = _sum(parts), _breakdown(parts)
    cost = call.reported_cost if call.reported_cost is not None else computed
    if call.reported_cost is not None and call.currency:
        cost_currency = call.currency
    else:
        cost_currency = entry.currency if entry is not None else currency
    return PricedCall(
        cost=cost,
        computed_cost=computed,
        reported_cost=call.reported_cost,
        currency=cost_currency,
        unpriced=cost is None,
        long_context=long_context,
        service_tier=tier_name,
        breakdown=breakdown,
        price_key=entry.key if entry is not None else None,
    )
