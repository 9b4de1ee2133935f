"""Import LiteLLM's ``model_prices_and_context_window.json`` into a tokenyield catalog.

Many teams already keep prices in this format. The mapping reproduces LiteLLM's own
arithmetic (checked case by case against ``litellm.cost_per_token`` in the tests):

- ``input_cost_per_token`` etc. are per token; catalogs are per million tokens.
- ``cache_read_input_token_cost`` / ``cache_creation_input_token_cost`` map to cached
  input and cache write; ``output_cost_per_reasoning_token`` to reasoning.
- ``*_above_<N>[k]_tokens`` keys become long-context tiers. LiteLLM applies every
  crossed threshold in ascending order, each field keeping its previous value when a
  tier does not name it; each imported tier therefore carries the resolved rates.
  xAI's thresholds are inclusive (``>=``), everyone else's exclusive.
- A key ``provider/model`` and a bare ``model`` of the same provider both name the
  model; LiteLLM prefers the prefixed one, and so does this importer.

Not imported: batch, flex and priority tiers, off-peak (time-of-day) pricing, regional
multipliers, and image, audio and per-request fees: token prices only.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from schemas.errors import PriceBookError
from schemas.pricing import LongContextTier, PriceCatalog, PriceEntry

MILLION = Decimal(1_000_000)
_TIER_KEY = re.compile(
    r"^(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost|"
    r"cache_creation_input_token_cost)_above_(\d+)(k?)_tokens$"
)
_FIELDS = {
    "input_cost_per_token": "input_per_mtok",
    "output_cost_per_token": "output_per_mtok",
    "cache_read_input_token_cost": "cached_input_per_mtok",
    "cache_creation_input_token_cost": "cache_write_per_mtok",
}
_INCLUSIVE_PROVIDERS = frozenset({"xai"})
CHAT_MODES = frozenset({"chat", "completion", "responses"})


def _per_million(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = repr(value)
    try:
        return Decimal(value) * MILLION
    except ArithmeticError as exc:
        raise PriceBookError(f"not a price: {value!r}") from exc


def _tiers(spec: dict[str, Any], base: dict[str, Decimal | None], inclusive: bool
           ) -> list[LongContextTier]:
    by_threshold: dict[int, dict[str, Decimal]] = {}
    for key, value in spec.items():
        match = _TIER_KEY.match(key)
        if match is None or value is None:
            continue
        threshold = int(match.group(2)) * (1000 if match.group(3) else 1)
        rate = _per_million(value)
        if rate is not None:
            by_threshold.setdefault(threshold, {})[_FIELDS[match.group(1)]] = rate
    tiers = []
    current = dict(base)
    for threshold in sorted(by_threshold):
        current.update(by_threshold[threshold])
        tiers.append(LongContextTier(above_input_tokens=threshold, inclusive=inclusive,
                                     **{k: v for k, v in current.items() if v is not None}))
    return tiers


def entry_from_litellm(key: str, spec: dict[str, Any],
                       effective_from: datetime) -> PriceEntry | None:
    """One LiteLLM map entry as a price entry, or None if it has no token prices."""
    provider = spec.get("litellm_provider")
    if not isinstance(provider, str) or not provider:
        return None
    input_rate = _per_million(spec.get("input_cost_per_token"))
    output_rate = _per_million(spec.get("output_cost_per_token"))
    if input_rate is None and output_rate is None:
        return None
    model = key[len(provider) + 1:] if key.startswith(f"{provider}/") else key
    base: dict[str, Decimal | None] = {
        "input_per_mtok": input_rate or Decimal(0),
        "output_per_mtok": output_rate or Decimal(0),
        "cached_input_per_mtok": _per_million(spec.get("cache_read_input_token_cost")),
        "cache_write_per_mtok": _per_million(spec.get("cache_creation_input_token_cost")),
    }
    return PriceEntry(
        provider=provider,
        model=model,
        effective_from=effective_from,
        reasoning_per_mtok=_per_million(spec.get("output_cost_per_reasoning_token")),
        long_context=_tiers(spec, base, provider in _INCLUSIVE_PROVIDERS),
        source=f"litellm:{key}",
        **base,
    )


def import_litellm(
    data: bytes | dict[str, Any],
    *,
    providers: set[str] | None = None,
    modes: frozenset[str] | None = CHAT_MODES,
    effective_from: datetime = datetime(2000, 1, 1, tzinfo=UTC),
    version: str = "litellm",
    as_of: str = "",
) -> PriceCatalog:
    """Convert a LiteLLM price map (bytes or parsed) into a catalog."""
    spec_map = orjson.loads(data) if isinstance(data, bytes) else data
    if not isinstance(spec_map, dict):
        raise PriceBookError("a LiteLLM price map is a JSON object of model -> prices")
    chosen: dict[tuple[str, str], tuple[bool, PriceEntry]] = {}
    for key, spec in spec_map.items():
        if key == "sample_spec" or not isinstance(spec, dict):
            continue
        if modes is not None and spec.get("mode") not in modes:
            continue
        if providers is not None and spec.get("litellm_provider") not in providers:
            continue
        entry = entry_from_litellm(key, spec, effective_from)
        if entry is None:
            continue
        prefixed = key.startswith(f"{entry.provider}/")
        identity = (entry.provider, (entry.model or "").lower())
        previous = chosen.get(identity)
        if previous is None or (prefixed and not previous[0]):
            chosen[identity] = (prefixed, entry)
    entries = sorted((e for _, e in chosen.values()), key=lambda e: (e.provider, e.model or ""))
    return PriceCatalog(catalog="litellm-import", version=version, as_of=as_of,
                        currency="USD", source="LiteLLM model_prices_and_context_window.json",
                        entries=entries)


def import_litellm_file(path: Path | str, **options: Any) -> PriceCatalog:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PriceBookError(f"cannot read {path}: {exc}", path=str(path)) from exc
    try:
        return import_litellm(raw, **options)
    except orjson.JSONDecodeError as exc:
        raise PriceBookError(f"{path} is not JSON: {exc}", path=str(path)) from exc


def dump_catalog(catalog: PriceCatalog) -> bytes:
    return orjson.dumps(
        catalog.model_dump(mode="json", exclude_none=True, exclude_defaults=False),
        option=orjson.OPT_INDENT_2,
    )
