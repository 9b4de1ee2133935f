"""The price book: exact costs, dates, patterns, tiers, unpriced models, and LiteLLM."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from importlib.resources import files
from pathlib import Path

import orjson
import pytest

from schemas.events import ModelCall
from schemas.litellm_import import (
    convert_litellm,
    convert_litellm_file,
    import_litellm,
)
from schemas.pricing import (
    LongContextTier,
    PriceBook,
    PriceEntry,
    cost_of_call,
    load_catalog,
    price_call,
    price_tokens,
    scaled_cost_of_call,
    scaled_price,
    service_tier_key,
)

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parent.parent


def at(day: int) -> datetime:
    return datetime(2026, 11, day, tzinfo=UTC)


def call(model: str = "m", provider: str = "acme", when: datetime | None = None,
         **tokens: int | Decimal | str) -> ModelCall:
    fields = {"input_tokens": 1_000_000, "output_tokens": 1_000_000, **tokens}
    return ModelCall(event_id="e", work_unit_id="w", occurred_at=when or at(15),
                     provider=provider, model=model, team="t", workflow="f", **fields)


def entry(**overrides: object) -> PriceEntry:
    base: dict[str, object] = {"provider": "acme", "model": "m", "input_per_mtok": "2",
                               "output_per_mtok": "8"}
    base.update(overrides)
    return PriceEntry.model_validate(base)


def test_cost_is_exact_and_broken_down_by_token_kind() -> None:
    book = PriceBook([entry(cached_input_per_mtok="0.5", cache_write_per_mtok="2.5",
                            reasoning_per_mtok="12")])
    priced = price_call(book, call(input_tokens=1_000_000, cached_input_tokens=300_000,
                                   cache_write_tokens=100_000, output_tokens=500_000,
                                   reasoning_tokens=200_000))
    assert priced.breakdown is not None
    assert priced.breakdown.input == Decimal("1.2")  # 600k uncached x 2/M
    assert priced.breakdown.cached_input == Decimal("0.15")
    assert priced.breakdown.cache_write == Decimal("0.25")
    assert priced.breakdown.output == Decimal("2.4")  # 300k non-reasoning x 8/M
    assert priced.breakdown.reasoning == Decimal("2.4")
    assert priced.cost == Decimal("6.4")
    assert not priced.unpriced


def test_missing_cache_and_reasoning_rates_fall_back_to_input_and_output() -> None:
    book = PriceBook([entry()])
    cost, _, _ = cost_of_call(book, call(input_tokens=100, cached_input_tokens=40,
                                         output_tokens=10, reasoning_tokens=5))
    assert cost == Decimal(100 * 2 + 10 * 8) / 1_000_000


def test_tiny_costs_are_not_rounded_away() -> None:
    book = PriceBook([entry(input_per_mtok="0.0375", output_per_mtok="0")])
    cost, _, _ = cost_of_call(book, call(input_tokens=1, output_tokens=0))
    assert cost == Decimal("0.0000000375")


def test_the_price_in_force_at_the_call_time_applies() -> None:
    book = PriceBook([
        entry(effective_from=at(1), input_per_mtok="3"),
        entry(effective_from=at(10), input_per_mtok="2"),
        entry(effective_from=at(20), input_per_mtok="1"),
    ])
    tokens = {"input_tokens": 1_000_000, "output_tokens": 0}
    assert cost_of_call(book, call(when=at(5), **tokens))[0] == Decimal(3)
    assert cost_of_call(book, call(when=at(10), **tokens))[0] == Decimal(2)
    assert cost_of_call(book, call(when=at(25), **tokens))[0] == Decimal(1)
    before_any = cost_of_call(book, call(when=datetime(2026, 10, 1, tzinfo=UTC), **tokens))
    assert before_any[0] is None


def test_exact_names_win_over_patterns_and_patterns_match_in_full() -> None:
    book = PriceBook([
        entry(model=None, model_pattern=r"gpt-4o(-\d{4}-\d{2}-\d{2})?", input_per_mtok="5"),
        entry(model="gpt-4o-2024-08-06", input_per_mtok="1"),
    ])
    tokens = {"input_tokens": 1_000_000, "output_tokens": 0}
    assert cost_of_call(book, call("GPT-4o-2024-05-13", **tokens))[0] == Decimal(5)
    assert cost_of_call(book, call("gpt-4o-2024-08-06", **tokens))[0] == Decimal(1)
    assert cost_of_call(book, call("gpt-4o-mini", **tokens))[0] is None


def test_a_provider_prefix_in_the_model_name_is_understood() -> None:
    book = PriceBook([entry(model="gpt-4o")])
    assert cost_of_call(book, call("acme/gpt-4o"))[0] == Decimal(10)


def test_long_context_tiers_price_the_whole_call_at_the_highest_crossed_tier() -> None:
    book = PriceBook([entry(long_context=[
        LongContextTier(above_input_tokens=200_000, input_per_mtok=Decimal(4),
                        output_per_mtok=Decimal(16)),
        LongContextTier(above_input_tokens=500_000, input_per_mtok=Decimal(6)),
    ])])
    def cost(n: int) -> Decimal | None:
        return cost_of_call(book, call(input_tokens=n, output_tokens=1_000_000))[0]
    assert cost(200_000) == Decimal("0.4") + 8
    assert cost(200_001) == Decimal(200_001 * 4) / 1_000_000 + 16
    # The 500k tier names no output rate: the entry's own applies, not the 200k tier's.
    assert cost(600_000) == Decimal("3.6") + 8
    inclusive = PriceBook([entry(long_context=[LongContextTier(
        above_input_tokens=100, inclusive=True, input_per_mtok=Decimal(4))])])
    assert price_call(inclusive, call(input_tokens=100, output_tokens=0)).long_context


def test_an_unpriced_model_costs_unknown_never_zero() -> None:
    priced = price_call(PriceBook([entry()]), call("unknown-model"))
    assert priced.cost is None
    assert priced.unpriced
    assert priced.breakdown is None


def test_the_reported_cost_wins_and_both_figures_are_kept() -> None:
    priced = price_call(PriceBook([entry()]), call(reported_cost="0.42", currency="USD"))
    assert priced.cost == Decimal("0.42")
    assert priced.computed_cost == Decimal(10)
    assert priced.reported_cost == Decimal("0.42")
    unpriced = price_call(PriceBook([]), call(reported_cost="0.42", currency="USD"))
    assert unpriced.cost == Decimal("0.42") and not unpriced.unpriced


def test_price_entries_must_name_one_model_and_valid_tiers() -> None:
    with pytest.raises(ValueError, match="exactly one of model and model_pattern"):
        entry(model_pattern="x")
    with pytest.raises(ValueError, match="not a regular expression"):
        entry(model=None, model_pattern="(")
    with pytest.raises(ValueError, match="ascending"):
        entry(long_context=[{"above_input_tokens": 5, "input_per_mtok": "1"},
                            {"above_input_tokens": 2, "input_per_mtok": "1"}])


def test_book_versions_follow_content() -> None:
    one = PriceBook([entry()], "v1")
    assert one.version == PriceBook([entry()], "v1").version
    changed = one.with_entries([entry(input_per_mtok="3")])
    assert changed.version != one.version
    assert cost_of_call(changed, call(output_tokens=0))[0] == Decimal(3)


def test_one_hour_cache_writes_have_their_own_rate_defaulting_to_the_write_rate() -> None:
    book = PriceBook([entry(cache_write_per_mtok="2.5", cache_write_1h_per_mtok="4",
                            long_context=[LongContextTier(above_input_tokens=500_000,
                                                          cache_write_1h_per_mtok=Decimal(8))])])
    priced = price_call(book, call(input_tokens=400_000, output_tokens=0,
                                   cache_write_tokens=300_000, cache_write_1h_tokens=100_000))
    assert priced.breakdown is not None
    assert priced.breakdown.cache_write == Decimal("0.5")  # 200k 5-minute writes x 2.5/M
    assert priced.breakdown.cache_write_1h == Decimal("0.4")  # 100k x 4/M
    assert priced.cost == Decimal("0.2") + Decimal("0.5") + Decimal("0.4")
    long = price_call(book, call(input_tokens=600_000, output_tokens=0,
                                 cache_write_tokens=100_000, cache_write_1h_tokens=100_000))
    assert long.breakdown is not None and long.breakdown.cache_write_1h == Decimal("0.8")
    # No 1-hour rate: 1-hour writes cost what other writes cost.
    plain_book = PriceBook([entry(cache_write_per_mtok="2.5")])
    both = price_call(plain_book, call(input_tokens=100, output_tokens=0, cache_write_tokens=100,
                                       cache_write_1h_tokens=40))
    assert both.cost == Decimal(100) * Decimal("2.5") / 1_000_000


def tiered_entry() -> PriceEntry:
    return entry(
        cached_input_per_mtok="0.5", reasoning_per_mtok="12",
        long_context=[LongContextTier(above_input_tokens=200_000, input_per_mtok=Decimal(4))],
        service_tiers={
            "priority": {"input_per_mtok": "4", "output_per_mtok": "16",
                         "long_context": [{"above_input_tokens": 200_000,
                                           "input_per_mtok": "8"}]},
            "flex": {"input_per_mtok": "1"},
        })


def test_a_call_is_priced_at_its_service_tier_and_rates_it_leaves_out_are_the_entry_s() -> None:
    book = PriceBook([tiered_entry()])
    tokens = {"input_tokens": 100_000, "cached_input_tokens": 20_000, "output_tokens": 10_000,
              "reasoning_tokens": 5_000}
    standard = price_call(book, call(**tokens))
    assert standard.cost == Decimal("0.16") + Decimal("0.01") + Decimal("0.04") + \
        Decimal("0.06")
    assert standard.service_tier is None
    priority = price_call(book, call(service_tier="priority", **tokens))
    # 80k x 4 + 20k cached x 0.5 (the entry's) + 5k x 16 + 5k reasoning x 12 (the entry's)
    assert priority.cost == Decimal("0.32") + Decimal("0.01") + Decimal("0.08") + \
        Decimal("0.06")
    assert priority.service_tier == "priority"
    # The flex tier names only its input rate: output is the entry's.
    flex = price_call(book, call(service_tier="flex", input_tokens=1_000_000, output_tokens=100))
    assert flex.cost == Decimal(1) + Decimal("0.0008")


def test_a_service_tier_has_its_own_long_context_tiers_and_only_those() -> None:
    book = PriceBook([tiered_entry()])
    big = {"input_tokens": 300_000, "output_tokens": 0}
    assert cost_of_call(book, call(**big))[0] == Decimal("1.2")  # the entry's tier: 4/M
    assert cost_of_call(book, call(service_tier="priority", **big))[0] == Decimal("2.4")
    # Flex has no long-context tier of its own: the entry's 4/M does not apply to it.
    assert cost_of_call(book, call(service_tier="flex", **big))[0] == Decimal("0.3")
    assert price_call(book, call(service_tier="flex", **big)).long_context is False


@pytest.mark.parametrize(("given", "key"), [
    (None, None), ("default", None), ("Standard", None), ("auto", None), ("on_demand", None),
    ("flex", "flex"), ("PRIORITY", "priority"), ("fast", "priority"),
    ("ON_DEMAND_PRIORITY", "priority"), ("batch", "batch"), ("scale", "scale"),
])
def test_service_tier_names_as_providers_report_them(given: str | None, key: str | None) -> None:
    assert service_tier_key(given) == key


def test_a_tier_the_entry_does_not_list_is_priced_at_standard_rates_and_says_so() -> None:
    book = PriceBook([tiered_entry()])
    for tier in ("default", "scale", "batch", "auto"):
        priced = price_call(book, call(service_tier=tier, input_tokens=100_000,
                                       output_tokens=0))
        assert (priced.cost, priced.service_tier) == (Decimal("0.2"), None), tier
    assert price_call(book, call(service_tier="fast", input_tokens=100_000,
                                 output_tokens=0)).cost == Decimal("0.4")


def test_scaled_price_is_the_exact_cost_in_atto_units_with_the_entry_currency() -> None:
    eur = entry(model="m-eur", currency="EUR", cache_write_1h_per_mtok="6",
                cache_write_per_mtok="3")
    fine = entry(model="m-fine", input_per_mtok="0.0000000000001")  # 13 decimals per Mtok
    book = PriceBook([tiered_entry(), eur, fine])
    rng = random.Random(7)
    for _ in range(300):
        model = rng.choice(["m", "m-eur", "m-fine", "unknown"])
        prompt = rng.randint(0, 400_000)
        written = rng.randint(0, prompt // 3)
        output = rng.randint(0, 5_000)
        one = call(model, input_tokens=prompt, cached_input_tokens=rng.randint(0, prompt // 3),
                   cache_write_tokens=written, cache_write_1h_tokens=rng.randint(0, written),
                   output_tokens=output, reasoning_tokens=rng.randint(0, output),
                   service_tier=rng.choice([None, "priority", "flex", "default", "batch"]))
        priced = price_call(book, one)
        scaled = scaled_price(book, one)
        if priced.cost is None:
            assert scaled is None and scaled_cost_of_call(book, one) is None
            continue
        # Exact to the atto unit; a rate finer than that (m-fine) rounds once, at the end.
        assert scaled == (int(priced.cost.scaleb(18).to_integral_value()), priced.currency)
        if model != "m-fine":
            assert priced.cost.scaleb(18) == scaled[0]
        assert scaled_cost_of_call(book, one) == scaled[0]
    assert scaled_price(book, call("m-eur", input_tokens=1_000_000, output_tokens=0)) == \
        (2 * 10**18, "EUR")


def test_service_tier_prices_are_validated() -> None:
    with pytest.raises(ValueError, match="pattern"):
        entry(service_tiers={"Flex Tier": {"input_per_mtok": "1"}})
    with pytest.raises(ValueError, match="ascending"):
        entry(service_tiers={"flex": {"long_context": [
            {"above_input_tokens": 5, "input_per_mtok": "1"},
            {"above_input_tokens": 2, "input_per_mtok": "1"}]}})
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        entry(service_tiers={"flex": {"input_per_mtok": "-1"}})
    with pytest.raises(ValueError, match="'default' is the standard one"):
        entry(service_tiers={"default": {"input_per_mtok": "1"}})
    with pytest.raises(ValueError, match="'fast' is priced as 'priority'"):
        entry(service_tiers={"fast": {"input_per_mtok": "1"}})


def test_price_records_without_tiers_are_written_as_older_workers_read_them() -> None:
    """The compacted prices topic is read by every worker, possibly of an older version
    whose entries forbid unknown fields: an entry without the new fields is encoded
    without them."""
    from streams.feeds.price_feed import encode_price

    before = {"provider", "model", "model_pattern", "effective_from", "currency",
              "input_per_mtok", "output_per_mtok", "cached_input_per_mtok",
              "cache_write_per_mtok", "reasoning_per_mtok", "long_context", "source"}
    plain_entry = entry(long_context=[{"above_input_tokens": 10, "input_per_mtok": "3"}])
    key, value = encode_price(plain_entry)
    record = orjson.loads(value)
    assert set(record) <= before and set(record["long_context"][0]) <= \
        {"above_input_tokens", "inclusive", "input_per_mtok"}
    assert PriceEntry.model_validate_json(value) == plain_entry
    tiered = tiered_entry()
    assert PriceEntry.model_validate_json(encode_price(tiered)[1]) == tiered
    assert key == plain_entry.key.encode()


def test_the_shipped_catalog_keeps_its_version_and_prices() -> None:
    """The catalog format grew (service tiers, 1-hour writes): a catalog written before
    loads as it did, with the same content version, so nothing downstream sees a price
    change that did not happen."""
    book = PriceBook.load()
    assert book.version == "2026-09-29#acb4099bba62"
    assert all(not e.service_tiers and e.cache_write_1h_per_mtok is None for e in book.entries)
    sonnet = price_call(book, call("claude-sonnet-4-5", provider="anthropic",
                                   cache_write_tokens=100_000, cache_write_1h_tokens=50_000,
                                   service_tier="priority"))
    assert sonnet.cost == Decimal("0.9") * 3 + Decimal("0.1") * Decimal("3.75") + 15


def test_the_shipped_catalog_covers_the_main_providers() -> None:
    catalog = load_catalog()
    assert catalog.as_of == "2026-09-29"
    providers = {e.provider for e in catalog.entries}
    assert {"openai", "anthropic", "gemini", "mistral", "xai", "deepseek"} <= providers
    book = PriceBook.from_catalog(catalog)
    for provider, model in [("openai", "gpt-4o"), ("openai", "gpt-5"),
                            ("anthropic", "claude-sonnet-4-5"),
                            ("gemini", "gemini-2.5-pro")]:
        assert book.entry_for(provider, model, at(1)) is not None, model


# The main providers whose chat models the sweep compares with LiteLLM, model by model.
SWEEP_PROVIDERS = {"openai", "azure", "azure_ai", "anthropic", "gemini", "vertex_ai",
                   "vertex_ai-language-models", "vertex_ai-anthropic_models", "mistral",
                   "deepseek", "xai", "groq", "bedrock", "bedrock_converse"}
# LiteLLM's cost_per_token takes no service tier for these providers (its deepseek and xai
# calculators drop it), so only their standard prices can be compared.
NO_TIER_ARGUMENT = {"deepseek", "xai"}
# A moment outside every off-peak window of the map (checked in the test): LiteLLM reads
# the clock for off-peak prices, and the importer keeps the standard (peak) ones.
PEAK_MOMENT = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)
# LiteLLM returns binary floats: each product and sum rounds to 53 bits (about 1e-16
# relative), so a float total of a few terms is within 1e-12 of the exact one; anything
# further off is a different price, not rounding.
FLOAT_TOLERANCE = Decimal("1e-12")


def litellm_map() -> tuple[bytes, dict[str, dict[str, object]]]:
    raw = files("litellm").joinpath("model_prices_and_context_window_backup.json").read_bytes()
    return raw, orjson.loads(raw)


def sweep_sizes(levels: list[LongContextTier]) -> list[int]:
    """Prompt sizes that exercise every long-context tier: below the first, exactly at
    each threshold (where an inclusive tier starts) and just past it."""
    sizes = {4_000}
    for tier in levels:
        sizes |= {tier.above_input_tokens, tier.above_input_tokens + 1}
    return sorted(sizes)


def litellm_usage(prompt: int, completion: int, cached: int, written: int, written_1h: int,
                  reasoning: int) -> object:
    from litellm import Usage

    details: dict[str, object] = {"cached_tokens": cached, "cache_creation_tokens": written}
    if written_1h:
        details["cache_creation_token_details"] = {"ephemeral_1h_input_tokens": written_1h}
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=prompt + completion, prompt_tokens_details=details,
                 completion_tokens_details={"reasoning_tokens": reasoning} if reasoning else None)


def test_imported_prices_match_litellm_cost_per_token_on_every_main_provider_model() -> None:
    """Every chat model of the main providers, every long-context tier, every service
    tier LiteLLM accepts, batch jobs, aliases, cache reads and both cache-write lifetimes:
    the imported catalog prices each case as ``litellm.cost_per_token`` does.

    No imported model is left out: the map's per-second and per-character-only models
    have no token prices, so they are not imported (the import report counts them), and
    LiteLLM prices the per-character Vertex models by their tokens when given tokens.
    DeepSeek's off-peak models are compared at a peak moment."""
    litellm = pytest.importorskip("litellm")  # a test-only dependency, always installed
    from litellm._internal_context import pinned_billing_time
    from litellm.litellm_core_utils.llm_cost_calc.utils import _is_off_peak

    raw, spec = litellm_map()
    imported = convert_litellm(raw, providers=SWEEP_PROVIDERS)
    assert not any(_is_off_peak(s["off_peak_pricing"], PEAK_MOMENT) for s in spec.values()
                   if isinstance(s, dict) and s.get("off_peak_pricing"))
    mismatches: list[tuple[object, ...]] = []
    compared: Counter[str] = Counter()
    start = time.monotonic()
    with pinned_billing_time(PEAK_MOMENT):
        for priced_entry in imported.catalog.entries:
            compared["models"] += 1
            compared["aliases"] += " (alias of " in priced_entry.source
            tiers: list[str | None] = [None]
            if priced_entry.provider not in NO_TIER_ARGUMENT:
                tiers += sorted(priced_entry.service_tiers)
            for tier in tiers:
                levels = priced_entry.long_context if tier is None \
                    else priced_entry.service_tiers[tier].long_context
                for prompt in sweep_sizes(levels):
                    mismatches += compare_with_litellm(litellm, priced_entry, tier, prompt)
                    compared["cases"] += 1
                    compared[f"tier {tier or 'standard'}"] += 1
                    compared["long-context cases"] += prompt > 4_000
    elapsed = time.monotonic() - start
    assert mismatches == []
    assert compared["models"] >= 1_200 and compared["aliases"] >= 40, compared
    assert {p for p in SWEEP_PROVIDERS} == {e.provider for e in imported.catalog.entries}
    for tier in ("flex", "priority", "batch", "ultrafast"):
        assert compared[f"tier {tier}"] >= 10, compared
    assert compared["long-context cases"] >= 300, compared
    assert elapsed < 30, f"the sweep took {elapsed:.1f} s"


def compare_with_litellm(litellm: object, priced_entry: PriceEntry, tier: str | None,
                         prompt: int) -> list[tuple[object, ...]]:
    """Two calls of ``prompt`` tokens, one without caching and one with cache reads, 5-minute
    and 1-hour writes and reasoning, priced both ways; the differences found."""
    found = []
    for cached, written, written_1h, reasoning in [(0, 0, 0, 0),
                                                   (prompt // 4, prompt // 8, prompt // 24, 700)]:
        completion = 2_000
        usage = litellm_usage(prompt, completion, cached, written, written_1h, reasoning)
        options: dict[str, object] = {"call_type": "retrieve_batch"} if tier == "batch" \
            else {"service_tier": tier}
        expected_in, expected_out = litellm.cost_per_token(  # type: ignore[attr-defined]
            model=priced_entry.model, custom_llm_provider=priced_entry.provider,
            usage_object=usage, **options)
        _, parts, _ = price_tokens(priced_entry, prompt, completion, cached, written, reasoning,
                                   cache_write_1h_tokens=written_1h, service_tier=tier)
        ours_in = parts.input + parts.cached_input + parts.cache_write + parts.cache_write_1h
        ours_out = parts.output + parts.reasoning
        for ours, theirs in ((ours_in, expected_in), (ours_out, expected_out)):
            exact = Decimal(repr(theirs))
            if abs(ours - exact) > FLOAT_TOLERANCE * max(abs(exact), Decimal(1)):
                found.append((priced_entry.source, tier, prompt, cached, written, written_1h,
                              reasoning, str(ours), theirs))
    return found


def test_import_litellm_prefers_the_provider_prefixed_entry() -> None:
    spec = {
        "deepseek-chat": {"litellm_provider": "deepseek", "mode": "chat",
                          "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
        "deepseek/deepseek-chat": {"litellm_provider": "deepseek", "mode": "chat",
                                   "input_cost_per_token": 3e-7, "output_cost_per_token": 2e-6,
                                   "cache_creation_input_token_cost": 0.0},
        "text-embedding-3-small": {"litellm_provider": "openai", "mode": "embedding",
                                   "input_cost_per_token": 2e-8, "output_cost_per_token": 0},
        "sample_spec": {"mode": "chat"},
    }
    catalog = import_litellm(orjson.dumps(spec))
    assert [(e.provider, e.model) for e in catalog.entries] == [("deepseek", "deepseek-chat")]
    only = catalog.entries[0]
    assert only.input_per_mtok == Decimal("0.3")
    assert only.cache_write_per_mtok == Decimal(0)  # an explicit zero stays zero


def chat(provider: str, input_cost: float, output_cost: float, **more: object
         ) -> dict[str, object]:
    return {"litellm_provider": provider, "mode": "chat", "input_cost_per_token": input_cost,
            "output_cost_per_token": output_cost, **more}


def test_aliases_are_priced_as_their_targets_following_chains() -> None:
    spec = {
        "claude-x-5": chat("anthropic", 1e-6, 5e-6, cache_creation_input_token_cost_above_1hr=2e-6),
        "claude-x-latest": {"alias_of": "claude-x-5"},
        "claude-newest": {"alias_of": "claude-x-latest"},  # a chain: alias of an alias
        "anthropic/claude-x": {"alias_of": "claude-x-5"},  # prefixed: model "claude-x"
        "gpt-9": chat("openai", 2e-6, 8e-6, aliases=["gpt-nine", "gpt-9"]),
    }
    imported = convert_litellm(orjson.dumps(spec))
    by_model = {e.model: e for e in imported.catalog.entries}
    assert set(by_model) == {"claude-x-5", "claude-x-latest", "claude-newest", "claude-x",
                             "gpt-9", "gpt-nine"}
    target = by_model["claude-x-5"]
    for alias in ("claude-x-latest", "claude-newest", "claude-x"):
        priced = by_model[alias]
        assert priced.provider == "anthropic"
        assert priced.model_dump(exclude={"model", "source"}) == \
            target.model_dump(exclude={"model", "source"})
        assert priced.source.endswith("(alias of claude-x-5)")
    assert by_model["gpt-nine"].input_per_mtok == Decimal(2)
    assert imported.report.aliases == 4
    # "gpt-9" in its own aliases list names a key the map already has.
    assert imported.report.skipped == {"alias_collides": 1}


def test_alias_cycles_and_missing_targets_are_reported_not_imported() -> None:
    spec = {
        "a": {"alias_of": "b"}, "b": {"alias_of": "c"}, "c": {"alias_of": "a"},
        "self": {"alias_of": "self"},
        "gone": {"alias_of": "no-such-model"},
        "odd": {"alias_of": 7},
        "speech-latest": {"alias_of": "tts-1"},
        "tts-1": {"litellm_provider": "openai", "mode": "audio_speech",
                  "input_cost_per_character": 1.5e-5},
        "per-second-latest": {"alias_of": "per-second"},
        "per-second": {"litellm_provider": "acme", "mode": "chat",
                       "input_cost_per_second": 1e-4},
        "m": chat("acme", 1e-6, 1e-6),
    }
    imported = convert_litellm(orjson.dumps(spec))
    assert [e.model for e in imported.catalog.entries] == ["m"]
    report = imported.report
    assert report.skipped == {"alias_cycle": 4, "alias_missing_target": 1, "alias_bad": 1,
                              "other_mode": 2, "no_token_prices": 1,
                              "alias_target_skipped": 1}
    assert report.examples["alias_cycle"] == ["a", "b", "c"]
    text = "\n".join(report.lines())
    assert "4  alias in a cycle of aliases (e.g. a, b, c)" in text
    assert "1  alias whose target is not in the map (e.g. gone)" in text


def test_a_real_entry_wins_over_an_alias_of_the_same_name() -> None:
    spec = {
        "m-2": chat("acme", 2e-6, 2e-6),
        "acme/m": {"alias_of": "m-2"},
        "m": chat("acme", 1e-6, 1e-6),
    }
    imported = convert_litellm(orjson.dumps(spec))
    assert {e.model: e.input_per_mtok for e in imported.catalog.entries} == \
        {"m": Decimal(1), "m-2": Decimal(2)}
    assert imported.report.skipped == {"duplicate": 1}
    assert imported.report.examples["duplicate"] == ["acme/m"]


def test_the_rules_block_and_other_unpriced_structures_are_counted() -> None:
    spec = {
        "fallback_generalizations": {"rules": [
            {"name": "route", "pattern": "^x-", "model_info": {"litellm_provider": "acme"}},
            {"name": "caps", "pattern": "x-", "model_info": {"supports_vision": True}},
            {"name": "priced", "pattern": "y-", "model_info": {"input_cost_per_token": 1e-6}},
        ]},
        "sample_spec": {"mode": "chat"},
        "tiered": {"litellm_provider": "dashscope", "mode": "chat", "tiered_pricing": [
            {"input_cost_per_token": 1e-7, "output_cost_per_token": 1e-6, "range": [0, 1e5]}]},
        "broken": [1, 2],
        "orphan": {"mode": "chat", "input_cost_per_token": 1e-6},
        "m": chat("acme", 1e-6, 1e-6),
    }
    imported = convert_litellm(orjson.dumps(spec))
    assert [e.model for e in imported.catalog.entries] == ["m"]
    assert imported.report.skipped == {"rules": 1, "rules_with_prices": 1, "sample_spec": 1,
                                       "tiered_pricing": 1, "not_an_object": 1,
                                       "no_provider": 1}
    assert imported.report.notes == [
        "fallback_generalizations: 3 rules (1 infer a provider, 2 fill in capabilities), "
        "1 with prices"]
    assert imported.report.examples["rules_with_prices"] == ["fallback_generalizations:priced"]


def test_service_tier_and_batch_keys_become_service_tiers() -> None:
    spec = {"m": chat(
        "openai", 2e-6, 8e-6, cache_read_input_token_cost=5e-7,
        input_cost_per_token_priority=4e-6, output_cost_per_token_priority=1.6e-5,
        input_cost_per_token_flex=1e-6,
        input_cost_per_token_above_200k_tokens=4e-6,
        input_cost_per_token_above_200k_tokens_priority=8e-6,
        output_cost_per_token_batches=4e-6,  # no batch input rate: LiteLLM halves the input
    )}
    entry_ = import_litellm(orjson.dumps(spec)).entries[0]
    assert set(entry_.service_tiers) == {"priority", "flex", "batch"}
    priority = entry_.service_tiers["priority"]
    assert (priority.input_per_mtok, priority.output_per_mtok) == (Decimal(4), Decimal(16))
    assert priority.cached_input_per_mtok == Decimal("0.5")  # the standard cache-read rate
    assert [(t.above_input_tokens, t.input_per_mtok) for t in priority.long_context] == \
        [(200_000, Decimal(8))]
    flex = entry_.service_tiers["flex"]
    assert (flex.input_per_mtok, flex.output_per_mtok) == (Decimal(1), Decimal(8))
    # The standard 200k tier applies to flex calls too, in LiteLLM: flex gets it as its own.
    assert [(t.above_input_tokens, t.input_per_mtok) for t in flex.long_context] == \
        [(200_000, Decimal(4))]
    batch = entry_.service_tiers["batch"]
    assert (batch.input_per_mtok, batch.output_per_mtok, batch.cached_input_per_mtok) == \
        (Decimal(1), Decimal(4), Decimal("0.25"))
    assert batch.long_context == []
    # A model whose map names no tier price has no tiers: nothing is guessed.
    assert import_litellm(orjson.dumps({"n": chat("openai", 1e-6, 1e-6)})).entries[0] \
        .service_tiers == {}


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **env},
                          timeout=120)


def test_cli_import_litellm_then_quote(tmp_path: Path) -> None:
    raw, spec = litellm_map()
    source = tmp_path / "litellm.json"
    source.write_bytes(raw)
    output = tmp_path / "catalog.json"
    result = cli("prices", "import-litellm", str(source), "-o", str(output),
                 "--provider", "openai", "--provider", "anthropic")
    assert result.returncode == 0, result.stderr
    imported = convert_litellm_file(output.parent / "litellm.json",
                                    providers={"openai", "anthropic"})
    assert len(load_catalog(output).entries) == len(imported.catalog.entries) > 50
    # What was left out is printed, counted by reason: here every other provider, the
    # rules block and the format's sample entry.
    report = imported.report
    assert report.skipped["other_provider"] > 1000 and report.skipped["rules"] == 1
    for line in report.lines():
        assert line in result.stdout
    assert f"({report.aliases} of them aliases)" in result.stdout and report.aliases >= 8
    rules = spec["fallback_generalizations"]["rules"]
    routing = sum(1 for r in rules if set(r["model_info"]) == {"litellm_provider"})
    assert 0 < routing < len(rules)
    assert f"fallback_generalizations: {len(rules)} rules ({routing} infer a provider, " \
           f"{len(rules) - routing} fill in capabilities), 0 with prices" in result.stdout

    quoted = cli("prices", "quote", "--catalog", str(output), "--provider", "openai",
                 "--model", "gpt-4o", "--input-tokens", "1000", "--output-tokens", "500",
                 "--cached-input-tokens", "200", "--at", "2026-11-01")
    assert quoted.returncode == 0, quoted.stderr
    answer = json.loads(quoted.stdout)
    gpt4o = spec["gpt-4o"]
    expected = (Decimal(repr(gpt4o["input_cost_per_token"])) * 800
                + Decimal(repr(gpt4o["cache_read_input_token_cost"])) * 200
                + Decimal(repr(gpt4o["output_cost_per_token"])) * 500)
    assert Decimal(answer["cost"]) == expected
    assert set(answer["breakdown"]) == {"input", "cached_input", "cache_write",
                                        "cache_write_1h", "output", "reasoning"}
    assert answer["service_tier"] == "standard"
    assert Decimal(answer["breakdown"]["cached_input"]) == \
        Decimal(repr(gpt4o["cache_read_input_token_cost"])) * 200

    # An alias priced as its target, in the batch tier, with 1-hour cache writes.
    haiku = spec["claude-haiku-5-5"]
    assert spec["claude-haiku-latest"] == {"alias_of": "claude-haiku-5-5"}
    batch = cli("prices", "quote", "--catalog", str(output), "--provider", "anthropic",
                "--model", "claude-haiku-latest", "--input-tokens", "1000",
                "--output-tokens", "100", "--cache-write-tokens", "300",
                "--cache-write-1h-tokens", "100", "--service-tier", "batch")
    assert batch.returncode == 0, batch.stderr
    answer = json.loads(batch.stdout)
    def rate(key: str) -> Decimal:
        return Decimal(repr(haiku[key]))
    assert answer["service_tier"] == "batch"
    assert Decimal(answer["cost"]) == (
        rate("input_cost_per_token_batches") * 700
        + rate("cache_creation_input_token_cost_batches") * 300  # no 1h batch rate: the write
        + rate("output_cost_per_token_batches") * 100)
    one_hour = cli("prices", "quote", "--catalog", str(output), "--provider", "anthropic",
                   "--model", "claude-haiku-latest", "--input-tokens", "1000",
                   "--output-tokens", "0", "--cache-write-tokens", "300",
                   "--cache-write-1h-tokens", "100")
    breakdown = json.loads(one_hour.stdout)["breakdown"]
    assert Decimal(breakdown["cache_write"]) == rate("cache_creation_input_token_cost") * 200
    assert Decimal(breakdown["cache_write_1h"]) == \
        rate("cache_creation_input_token_cost_above_1hr") * 100
    invalid = cli("prices", "quote", "--catalog", str(output), "--provider", "anthropic",
                  "--model", "claude-haiku-latest", "--input-tokens", "10",
                  "--output-tokens", "0", "--cache-write-tokens", "3",
                  "--cache-write-1h-tokens", "4")
    assert invalid.returncode != 0
    assert "cache_write_1h_tokens (4) exceed cache_write_tokens (3)" in invalid.stderr


def test_cli_quote_defaults_to_the_shipped_catalog_and_flags_unpriced_models() -> None:
    known = cli("prices", "quote", "--provider", "anthropic", "--model", "claude-sonnet-4-5",
                "--input-tokens", "1000000", "--output-tokens", "0")
    assert json.loads(known.stdout)["cost"] == "3"
    unknown = cli("prices", "quote", "--provider", "acme", "--model", "nope",
                  "--input-tokens", "1", "--output-tokens", "1")
    answer = json.loads(unknown.stdout)
    assert (answer["cost"], answer["unpriced"], unknown.returncode) == ("unknown", True, 1)


def test_prices_in_a_currency_without_an_exchange_rate_are_refused() -> None:
    from schemas.errors import ConfigurationError
    from streams.feeds.price_feed import PriceBookHolder

    gbp = PriceEntry(provider="uk", model="m", currency="GBP", input_per_mtok=Decimal(1),
                     output_per_mtok=Decimal(1))
    with pytest.raises(ConfigurationError, match="GBP"):
        PriceBookHolder(PriceBook([gbp]), frozenset({"USD"}))
    holder = PriceBookHolder(PriceBook([]), frozenset({"USD", "EUR"}))
    eur = gbp.model_copy(update={"currency": "EUR", "model": "e"})
    holder.apply([gbp, eur], set())  # live, from the prices topic
    assert holder.refused == 1
    assert [e.currency for e in holder.current().entries] == ["EUR"]
