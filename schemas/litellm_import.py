"""Import LiteLLM's ``model_prices_and_context_window.json`` into a tokenyield catalog.

Many teams already keep prices in this format. The mapping reproduces LiteLLM's own
arithmetic (checked model by model against ``litellm.cost_per_token`` in the tests):

- ``input_cost_per_token`` etc. are per token; catalogs are per million tokens.
- ``cache_read_input_token_cost`` / ``cache_creation_input_token_cost`` map to cached
  input and cache write, ``cache_creation_input_token_cost_above_1hr`` to the 1-hour
  cache write, ``output_cost_per_reasoning_token`` to reasoning.
- ``*_above_<N>[k]_tokens`` keys become long-context tiers. LiteLLM applies every
  crossed threshold in ascending order, each field keeping its previous value when a
  tier does not name it; each imported tier therefore carries the resolved rates.
  xAI's thresholds are inclusive (``>=``), everyone else's exclusive.
- Service tiers: keys ending ``_flex``, ``_priority``, ``_balanced`` and ``_ultrafast``
  become the entry's ``service_tiers`` of those names, priced as LiteLLM prices a call
  with that ``service_tier`` (a rate the tier does not name is the standard one); keys
  ending ``_batches`` become the ``batch`` tier, priced as LiteLLM prices a batch job
  (a batch rate it does not name is half the standard one). A tier is imported only
  where the map names a price for it.
- ``{"alias_of": "<key>"}`` rows (and a row's ``aliases`` list) name another entry: the
  alias is imported with its target's prices, under its own name. Chains of aliases are
  followed; a cycle or a missing target is reported, not imported.
- A key ``provider/model`` and a bare ``model`` of the same provider both name the
  model; LiteLLM prefers the prefixed one, and so does this importer. A real entry wins
  over an alias of the same name.

Everything the importer leaves out is counted in an ``ImportReport`` (the CLI prints
it): the ``fallback_generalizations`` rules block (it infers providers and capabilities
for unmapped names and carries no prices), entries with no token prices, entries
priced by a ``tiered_pricing`` table, aliases that do not resolve, other modes and
providers when filtered. Imported with a part left out, also counted: off-peak
(time-of-day) prices (the standard ones are imported) and 12-hour cache writes (a call
has no 12-hour write count). Image, audio, per-request and regional prices are never
imported: token prices only.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from schemas.errors import PriceBookError
from schemas.pricing import LongContextTier, PriceCatalog, PriceEntry, ServiceTierPrices

MILLION = Decimal(1_000_000)
CHAT_MODES = frozenset({"chat", "completion", "responses"})
_INCLUSIVE_PROVIDERS = frozenset({"xai"})

INPUT = "input_cost_per_token"
OUTPUT = "output_cost_per_token"
CACHE_READ = "cache_read_input_token_cost"
CACHE_WRITE = "cache_creation_input_token_cost"
CACHE_WRITE_1H = "cache_creation_input_token_cost_above_1hr"
CACHE_WRITE_12H = "cache_creation_input_token_cost_above_12hr"
REASONING = "output_cost_per_reasoning_token"
_THRESHOLD_PREFIXES = tuple(f"{p}_above_" for p in (INPUT, OUTPUT, CACHE_READ, CACHE_WRITE))
_TEXT_RATE_PREFIXES = (INPUT, OUTPUT, CACHE_READ, CACHE_WRITE, REASONING)

#: LiteLLM's service-tier key suffixes, by the catalog's tier name (its ``ServiceTier``
#: values; "fast" is priced with the ``_priority`` keys, "auto" is standard).
SERVICE_TIER_SUFFIXES = {"flex": "_flex", "balanced": "_balanced", "priority": "_priority",
                         "ultrafast": "_ultrafast"}
BATCH_TIER = "batch"
_BATCH_SUFFIX = "_batches"
# Suffixes that make an above-threshold key belong to a tier other than the standard one.
_NON_STANDARD_SUFFIXES = ("_ultrafast", "_priority", "_balanced", "_flex", "_auto", "_fast",
                          _BATCH_SUFFIX)
_BATCH_RATE_PREFIXES = (INPUT, OUTPUT, CACHE_READ, CACHE_WRITE, CACHE_WRITE_1H, CACHE_WRITE_12H)
_BATCH_TIER_KEY = re.compile(
    rf"^({'|'.join(map(re.escape, _BATCH_RATE_PREFIXES))})_above_(\d+k?)_tokens_batches$")

#: Why a map entry was not imported, as the report says it.
SKIP_REASONS = {
    "other_mode": "another mode than chat, completion or responses (--all-modes imports them)",
    "other_provider": "another provider than those asked for (--provider)",
    "sample_spec": "sample_spec: the format's own documentation, not a model",
    "rules": "fallback_generalizations: rules that infer the provider and capabilities of "
             "unmapped model names; no token prices",
    "rules_with_prices": "fallback_generalizations rules carrying prices: a rule prices "
                         "names by pattern for any provider, not imported",
    "not_an_object": "not a JSON object",
    "no_provider": "no litellm_provider",
    "no_token_prices": "no per-token prices (priced per second, character, image or request)",
    "tiered_pricing": "priced by a tiered_pricing table (input-size ranges), not imported",
    "alias_missing_target": "alias whose target is not in the map",
    "alias_cycle": "alias in a cycle of aliases",
    "alias_bad": "alias_of is not a string, or an aliases list is not a list of strings",
    "alias_collides": "name in an aliases list that is already a key of the map",
    "alias_target_skipped": "alias of an entry that is skipped for one of the other reasons",
    "duplicate": "same provider and model as another entry (the provider-prefixed key, "
                 "or the real entry over an alias, wins)",
}
#: Parts of imported entries that were left out.
PARTIAL_REASONS = {
    "off_peak_pricing": "off-peak (time-of-day) prices left out: standard rates imported",
    "cache_write_12h": "12-hour cache-write prices left out: a call has no 12-hour "
                       "write count, so its writes are priced as 5-minute or 1-hour ones",
}


@dataclass
class ImportReport:
    """What an import took from the map, and what it left out and why."""

    imported: int = 0
    aliases: int = 0
    service_tiers: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    partial: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, key: str) -> None:
        self.skipped[reason] += 1
        self._example(reason, key)

    def part_left_out(self, reason: str, key: str) -> None:
        self.partial[reason] += 1
        self._example(reason, key)

    def _example(self, reason: str, key: str) -> None:
        examples = self.examples.setdefault(reason, [])
        if len(examples) < 3:
            examples.append(key)

    def lines(self) -> list[str]:
        """The report as lines of text, most frequent reason first."""
        tiers = ", ".join(f"{name} {count}" for name, count in sorted(self.service_tiers.items()))
        out = [f"imported {self.imported} entries ({self.aliases} of them aliases); "
               f"service tiers: {tiers or 'none'}"]
        out += self._section("skipped", self.skipped, SKIP_REASONS)
        out += self._section("imported without a part", self.partial, PARTIAL_REASONS)
        out += [f"  note: {note}" for note in self.notes]
        return out

    def _section(self, title: str, counts: Counter[str], reasons: dict[str, str]) -> list[str]:
        if not counts:
            return []
        lines = [f"{title} {sum(counts.values())} map entries:"]
        for reason, count in counts.most_common():
            example = ", ".join(self.examples.get(reason, []))
            lines.append(f"  {count:6d}  {reasons[reason]}" + (f" (e.g. {example})"
                                                                if example else ""))
        return lines


@dataclass(frozen=True)
class LitellmImport:
    catalog: PriceCatalog
    report: ImportReport


# -- rates -------------------------------------------------------------------------------
def _per_token(value: Any) -> Decimal | None:
    """A map value as an exact per-token Decimal (its shortest float text), or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = repr(value)
    try:
        rate = Decimal(value)
    except ArithmeticError as exc:
        raise PriceBookError(f"not a price: {value!r}") from exc
    if not rate.is_finite():
        raise PriceBookError(f"not a price: {value!r}")
    return rate


def _threshold(text: str) -> int:
    return int(text.removesuffix("k")) * (1000 if text.endswith("k") else 1)


def _crossed(tokens: int, threshold: int, inclusive: bool) -> bool:
    return tokens > threshold or (inclusive and tokens == threshold)


@dataclass(frozen=True)
class _Level:
    """Per-token rates of one price level, every default resolved."""

    input: Decimal
    output: Decimal
    cached: Decimal
    write: Decimal
    write_1h: Decimal
    reasoning: Decimal

    def per_million(self) -> dict[str, Decimal]:
        return {"input_per_mtok": self.input * MILLION, "output_per_mtok": self.output * MILLION,
                "cached_input_per_mtok": self.cached * MILLION,
                "cache_write_per_mtok": self.write * MILLION,
                "cache_write_1h_per_mtok": self.write_1h * MILLION,
                "reasoning_per_mtok": self.reasoning * MILLION}


class _Spec:
    """One map entry's prices, read the way LiteLLM's cost calculator reads them."""

    def __init__(self, spec: dict[str, Any], inclusive: bool) -> None:
        self.spec = spec
        self.inclusive = inclusive

    def rate(self, key: str) -> Decimal | None:
        return _per_token(self.spec.get(key))

    def tier_rate(self, key: str, suffix: str) -> Decimal | None:
        """A tier's rate, else the standard one (LiteLLM's ``get_cost_per_unit``)."""
        found = self.rate(f"{key}{suffix}") if suffix else None
        return found if found is not None else self.rate(key)

    def present(self, key: str) -> bool:
        return self.spec.get(key) is not None

    # -- the standard tier and the named service tiers (LiteLLM's _get_token_base_cost)
    def threshold_keys(self, suffix: str) -> list[tuple[int, str]]:
        """(threshold, its text) of every above-threshold key of this tier, ascending."""
        found = []
        for key, value in self.spec.items():
            if value is None or not key.startswith(_THRESHOLD_PREFIXES) or "_tokens" not in key:
                continue
            if key.endswith(_NON_STANDARD_SUFFIXES) and not (suffix and key.endswith(suffix)):
                continue
            text = key.rsplit("_above_", 1)[1].split("_tokens")[0]
            if re.fullmatch(r"\d+k?", text):
                found.append((_threshold(text), text))
        return sorted(set(found))

    def tier_level(self, suffix: str, tokens: int) -> _Level:
        input_rate = self.tier_rate(INPUT, suffix) or Decimal(0)
        output_rate = self.tier_rate(OUTPUT, suffix) or Decimal(0)
        write = self.tier_rate(CACHE_WRITE, suffix)
        cached = self.tier_rate(CACHE_READ, suffix)
        write_1h_key = f"{CACHE_WRITE_1H}{suffix}"
        for threshold, text in self.threshold_keys(suffix):
            if not _crossed(tokens, threshold, self.inclusive):
                continue
            above = f"_above_{text}_tokens"
            input_rate = _first(self.tier_rate(f"{INPUT}{above}", suffix), input_rate)
            output_rate = _first(self.tier_rate(f"{OUTPUT}{above}", suffix), output_rate)
            write = _first(self.tier_rate(f"{CACHE_WRITE}{above}", suffix), write)
            cached = _first(self.tier_rate(f"{CACHE_READ}{above}", suffix), cached)
            if self.present(f"{CACHE_WRITE_1H}{above}{suffix}"):
                write_1h_key = f"{CACHE_WRITE_1H}{above}{suffix}"
        cached = _first(cached, input_rate)
        write = _first(write, input_rate)
        # The chosen key, else the same key without the tier suffix, else the write rate.
        write_1h = _first(self.rate(write_1h_key), self.rate(write_1h_key.removesuffix(suffix)),
                          write)
        return _Level(input_rate, output_rate, cached, write, write_1h,
                      self._reasoning(suffix, output_rate))

    def _reasoning(self, suffix: str, output_rate: Decimal) -> Decimal:
        # LiteLLM's _resolve_reasoning_token_cost: the tier's own reasoning rate; else,
        # when the tier has its own output rate, that; else the standard reasoning rate.
        if suffix and self.present(f"{REASONING}{suffix}"):
            return self.rate(f"{REASONING}{suffix}")  # type: ignore[return-value]
        if suffix and self.present(f"{OUTPUT}{suffix}"):
            return output_rate
        return _first(self.rate(REASONING), output_rate)

    # -- batch jobs (LiteLLM's batch_cost_calculator) --------------------------------------
    def batch_thresholds(self) -> list[int]:
        found = {_threshold(m.group(2)) for key, value in self.spec.items()
                 if value is not None and (m := _BATCH_TIER_KEY.match(key))}
        found |= {t for t, _ in self._standard_cache_read_thresholds()}
        return sorted(found)

    def _batch_rate(self, prefix: str, tokens: int) -> Decimal | None:
        texts = [m.group(2) for key, value in self.spec.items()
                 if value is not None and (m := _BATCH_TIER_KEY.match(key))
                 and m.group(1) == prefix]
        crossed = [t for t in texts if _crossed(tokens, _threshold(t), self.inclusive)]
        flat = self.rate(f"{prefix}{_BATCH_SUFFIX}")
        if not crossed:
            return flat
        highest = max(crossed, key=_threshold)
        return _first(self.rate(f"{prefix}_above_{highest}_tokens{_BATCH_SUFFIX}"), flat)

    def _standard_cache_read_thresholds(self) -> list[tuple[int, str]]:
        prefix = f"{CACHE_READ}_above_"
        found = []
        for key, value in self.spec.items():
            if value is not None and key.startswith(prefix) and key.endswith("_tokens"):
                text = key[len(prefix):].removesuffix("_tokens")
                if re.fullmatch(r"\d+k?", text):
                    found.append((_threshold(text), text))
        return sorted(found)

    def _standard_cache_read(self, tokens: int) -> Decimal | None:
        # LiteLLM's get_modality_token_cost_key: always an exclusive comparison here.
        crossed = [text for t, text in self._standard_cache_read_thresholds() if tokens > t]
        if crossed:
            return self.rate(f"{CACHE_READ}_above_{crossed[-1]}_tokens")
        return self.rate(CACHE_READ)

    def has_batch_prices(self) -> bool:
        return any(key.endswith(_BATCH_SUFFIX) and key.startswith(_TEXT_RATE_PREFIXES)
                   and value is not None for key, value in self.spec.items())

    def batch_level(self, tokens: int) -> _Level:
        standard_input = self.rate(INPUT)
        standard_output = self.rate(OUTPUT)
        batch_output = self._batch_rate(OUTPUT, tokens)
        output_rate = _first(batch_output, _half(standard_output), Decimal(0))
        input_rate = self._batch_rate(INPUT, tokens)
        if input_rate is None:
            # No batch input price: LiteLLM bills half the flat standard rates.
            input_rate = _half(standard_input) or Decimal(0)
            cached = _first(_half(self.rate(CACHE_READ)), input_rate)
            write = _half(_first(self.rate(CACHE_WRITE), standard_input or Decimal(0)))
            return _Level(input_rate, output_rate, cached, write, write, output_rate)
        cached = _first(self._batch_rate(CACHE_READ, tokens), self._standard_cache_read(tokens),
                        input_rate)
        batch_write = self._batch_rate(CACHE_WRITE, tokens)
        write_1h = self._batch_rate(CACHE_WRITE_1H, tokens)
        bills_writes = (batch_write is not None or write_1h is not None
                        or self._batch_rate(CACHE_WRITE_12H, tokens) is not None)
        write = _first(batch_write, input_rate) if bills_writes else input_rate
        write_1h = _first(write_1h, write) if bills_writes else input_rate
        # A batch job bills reasoning as output: there is no batch reasoning rate.
        return _Level(input_rate, output_rate, cached, write, write_1h, output_rate)


def _first(*rates: Decimal | None) -> Any:
    return next((r for r in rates if r is not None), None)


def _half(rate: Decimal | None) -> Decimal | None:
    return rate / 2 if rate is not None else None


def _long_context(level_at: Callable[[int], _Level], thresholds: Iterable[int],
                  inclusive: bool) -> list[LongContextTier]:
    """One tier per threshold where the rates change, each with every rate resolved."""
    tiers = []
    previous = level_at(0)
    for threshold in thresholds:
        current = level_at(threshold if inclusive else threshold + 1)
        if current != previous:
            tiers.append(LongContextTier(above_input_tokens=threshold, inclusive=inclusive,
                                         **current.per_million()))
        previous = current
    return tiers


def _service_tiers(reader: _Spec) -> dict[str, ServiceTierPrices]:
    tiers = {}
    for name, suffix in SERVICE_TIER_SUFFIXES.items():
        if not any(key.endswith(suffix) and key.startswith(_TEXT_RATE_PREFIXES)
                   and value is not None for key, value in reader.spec.items()):
            continue
        thresholds = [t for t, _ in reader.threshold_keys(suffix)]

        def level_at(tokens: int, suffix: str = suffix) -> _Level:
            return reader.tier_level(suffix, tokens)

        tiers[name] = ServiceTierPrices(
            **level_at(0).per_million(),
            long_context=_long_context(level_at, thresholds, reader.inclusive))
    if reader.has_batch_prices():
        tiers[BATCH_TIER] = ServiceTierPrices(
            **reader.batch_level(0).per_million(),
            long_context=_long_context(reader.batch_level, reader.batch_thresholds(),
                                       reader.inclusive))
    return tiers


def _per_million(value: Any) -> Decimal | None:
    rate = _per_token(value)
    return rate * MILLION if rate is not None else None


def entry_from_litellm(key: str, spec: dict[str, Any], effective_from: datetime,
                       name: str | None = None, source: str | None = None) -> PriceEntry | None:
    """One LiteLLM map entry as a price entry (under ``name``, for an alias), or None if
    it has no token prices."""
    provider = spec.get("litellm_provider")
    if not isinstance(provider, str) or not provider:
        return None
    if spec.get(INPUT) is None and spec.get(OUTPUT) is None:
        return None
    name = name or key
    model = name[len(provider) + 1:] if name.startswith(f"{provider}/") else name
    inclusive = provider in _INCLUSIVE_PROVIDERS
    reader = _Spec(spec, inclusive)
    thresholds = [t for t, _ in reader.threshold_keys("")]
    return PriceEntry(
        provider=provider,
        model=model,
        effective_from=effective_from,
        input_per_mtok=_per_million(spec.get(INPUT)) or Decimal(0),
        output_per_mtok=_per_million(spec.get(OUTPUT)) or Decimal(0),
        cached_input_per_mtok=_per_million(spec.get(CACHE_READ)),
        cache_write_per_mtok=_per_million(spec.get(CACHE_WRITE)),
        cache_write_1h_per_mtok=_per_million(spec.get(CACHE_WRITE_1H)),
        reasoning_per_mtok=_per_million(spec.get(REASONING)),
        long_context=_long_context(lambda tokens: reader.tier_level("", tokens), thresholds,
                                   inclusive),
        service_tiers=_service_tiers(reader),
        source=source or f"litellm:{key}",
    )


# -- the map -------------------------------------------------------------------------
def _alias_rows(spec_map: dict[str, Any], report: ImportReport) -> dict[str, str]:
    """Every alias name -> the key it names, from ``alias_of`` rows and ``aliases`` lists."""
    aliases: dict[str, str] = {}
    for key, spec in spec_map.items():
        if not isinstance(spec, dict):
            continue
        if "alias_of" in spec:
            target = spec["alias_of"]
            if isinstance(target, str):
                aliases[key] = target
            else:
                report.skip("alias_bad", key)
        listed = spec.get("aliases")
        if listed is None or "alias_of" in spec:
            continue
        if not isinstance(listed, list) or not all(isinstance(a, str) for a in listed):
            report.skip("alias_bad", key)
            continue
        for alias in listed:
            if alias in spec_map or alias in aliases:
                report.skip("alias_collides", alias)
            else:
                aliases[alias] = key
    return aliases


def resolve_alias(name: str, aliases: dict[str, str], spec_map: dict[str, Any]
                  ) -> tuple[str | None, str | None]:
    """(the real entry an alias names, None) following chains, or (None, why not)."""
    seen = [name]
    current = name
    while current in aliases:
        target = aliases[current]
        if target in seen:
            return None, "alias_cycle"
        seen.append(target)
        current = target
    if current not in spec_map or not isinstance(spec_map[current], dict):
        return None, "alias_missing_target"
    return current, None


def _skip_reason(key: str, spec: Any, providers: set[str] | None,
                 modes: frozenset[str] | None) -> str | None:
    if key == "sample_spec":
        return "sample_spec"
    if not isinstance(spec, dict):
        return "not_an_object"
    if "rules" in spec and "litellm_provider" not in spec:
        return "rules"
    if not isinstance(spec.get("litellm_provider"), str) or not spec["litellm_provider"]:
        return "no_provider"
    if modes is not None and spec.get("mode") not in modes:
        return "other_mode"
    if providers is not None and spec["litellm_provider"] not in providers:
        return "other_provider"
    if spec.get("tiered_pricing"):
        return "tiered_pricing"
    if spec.get(INPUT) is None and spec.get(OUTPUT) is None:
        return "no_token_prices"
    return None


def _note_rules(key: str, spec: dict[str, Any], report: ImportReport) -> None:
    rules = spec.get("rules")
    rules = rules if isinstance(rules, list) else []
    priced = [r.get("name", "?") for r in rules if isinstance(r, dict)
              and isinstance(r.get("model_info"), dict)
              and any("cost" in k for k in r["model_info"])]
    routing = sum(1 for r in rules if isinstance(r, dict) and isinstance(r.get("model_info"), dict)
                  and set(r["model_info"]) == {"litellm_provider"})
    report.notes.append(f"{key}: {len(rules)} rules ({routing} infer a provider, "
                        f"{len(rules) - routing} fill in capabilities), {len(priced)} with prices")
    if priced:
        report.skip("rules_with_prices", f"{key}:{','.join(priced)}")


def _partial_parts(key: str, spec: dict[str, Any], report: ImportReport) -> None:
    if spec.get("off_peak_pricing"):
        report.part_left_out("off_peak_pricing", key)
    if any(k.startswith(CACHE_WRITE_12H) and v is not None for k, v in spec.items()):
        report.part_left_out("cache_write_12h", key)


def convert_litellm(
    data: bytes | dict[str, Any],
    *,
    providers: set[str] | None = None,
    modes: frozenset[str] | None = CHAT_MODES,
    effective_from: datetime = datetime(2000, 1, 1, tzinfo=UTC),
    version: str = "litellm",
    as_of: str = "",
) -> LitellmImport:
    """Convert a LiteLLM price map (bytes or parsed) into a catalog and a report of what
    was left out."""
    spec_map = orjson.loads(data) if isinstance(data, bytes) else data
    if not isinstance(spec_map, dict):
        raise PriceBookError("a LiteLLM price map is a JSON object of model -> prices")
    report = ImportReport()
    aliases = _alias_rows(spec_map, report)
    # (provider, model) -> (rank, entry, key): a real entry beats an alias, and a
    # provider-prefixed key beats a bare one.
    chosen: dict[tuple[str, str], tuple[tuple[bool, bool], PriceEntry, str]] = {}

    def offer(entry: PriceEntry, key: str, is_alias: bool) -> None:
        identity = (entry.provider, (entry.model or "").lower())
        rank = (not is_alias, key.startswith(f"{entry.provider}/"))
        previous = chosen.get(identity)
        if previous is None or rank > previous[0]:
            if previous is not None:
                report.skip("duplicate", previous[2])
            chosen[identity] = (rank, entry, key)
        else:
            report.skip("duplicate", key)

    for key, spec in spec_map.items():
        if key in aliases or (isinstance(spec, dict) and "alias_of" in spec):
            continue  # aliases come after the entries they name; a bad one is reported
        reason = _skip_reason(key, spec, providers, modes)
        if reason == "rules":
            _note_rules(key, spec, report)
        if reason is not None:
            report.skip(reason, key)
            continue
        entry = entry_from_litellm(key, spec, effective_from)
        if entry is not None:
            _partial_parts(key, spec, report)
            offer(entry, key, is_alias=False)

    for alias in aliases:
        target, why = resolve_alias(alias, aliases, spec_map)
        if target is None:
            report.skip(why or "alias_missing_target", alias)
            continue
        reason = _skip_reason(target, spec_map[target], providers, modes)
        if reason is not None:
            report.skip(reason if reason in ("other_mode", "other_provider")
                        else "alias_target_skipped", alias)
            continue
        entry = entry_from_litellm(target, spec_map[target], effective_from, name=alias,
                                   source=f"litellm:{alias} (alias of {target})")
        if entry is not None:
            offer(entry, alias, is_alias=True)

    entries = sorted((e for _, e, _ in chosen.values()), key=lambda e: (e.provider, e.model or ""))
    report.imported = len(entries)
    report.aliases = sum(1 for rank, _, _ in chosen.values() if not rank[0])
    for entry in entries:
        report.service_tiers.update(entry.service_tiers.keys())
    catalog = PriceCatalog(catalog="litellm-import", version=version, as_of=as_of,
                           currency="USD", source="LiteLLM model_prices_and_context_window.json",
                           entries=entries)
    return LitellmImport(catalog, report)


def import_litellm(data: bytes | dict[str, Any], **options: Any) -> PriceCatalog:
    """Convert a LiteLLM price map (bytes or parsed) into a catalog."""
    return convert_litellm(data, **options).catalog


def convert_litellm_file(path: Path | str, **options: Any) -> LitellmImport:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PriceBookError(f"cannot read {path}: {exc}", path=str(path)) from exc
    try:
        return convert_litellm(raw, **options)
    except orjson.JSONDecodeError as exc:
        raise PriceBookError(f"{path} is not JSON: {exc}", path=str(path)) from exc


def import_litellm_file(path: Path | str, **options: Any) -> PriceCatalog:
    return convert_litellm_file(path, **options).catalog


def dump_catalog(catalog: PriceCatalog) -> bytes:
    return orjson.dumps(
        catalog.model_dump(mode="json", exclude_none=True, exclude_defaults=False),
        option=orjson.OPT_INDENT_2,
    )
