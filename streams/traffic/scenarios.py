"""Synthetic traffic with a known answer: scenarios, their events, and the ground truth.

Pure: no Kafka here. ``raw_events(scenario)`` yields events in publication order as
wire-form dicts; ``events`` validates them into ``ModelCall``/``Outcome`` and
``encoded_events``/``encode_all`` turn them into JSON bytes (the fast path for
benchmarks). Everything is a function of the scenario: the same seed gives the same
events, ids and bytes, and only ``end`` (default: now minus ``lag_seconds``) moves the
timestamps.

Publication order is not event-time order, on purpose. Each event is published at a
*publish time* within ``disorder_horizon_seconds`` (h) of its ``occurred_at``: late
(out-of-order events and duplicates re-sent up to h after) or early (an outcome sent
before its unit's calls, at most h before it happened). Hence no event trails an
earlier-published one by more than 2h of event time; keep 2h below the engine's
allowed lateness (300 s by default) and no event is late, so ``ground_truth`` is what
the engine must end with.

``ground_truth`` is the reference the engine is tested against: deliberately naive
(dedupe, then add up), sharing nothing with the engine but the event models and
``schemas.pricing.price_call``.
"""

from __future__ import annotations

import gc
import heapq
import math
import random
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from statistics import NormalDist
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.codec import call_codec, outcome_codec
from schemas.errors import TokenyieldError
from schemas.events import (
    ACCEPTING_STATUSES,
    STAGES,
    CostKind,
    ModelCall,
    Outcome,
    OutcomeStatus,
    Share,
    ValueDimension,
    shared_bucket_id,
)
from schemas.pricing import PriceBook, price_call

Kind = Literal["calls", "outcomes", "costs"]
UNPRICED_PROVIDER = "internal"
UNPRICED_MODEL = "acme-distill-8b"
MAX_CALLS = 40  # per ordinary unit
MAX_LATENCY_MS = 45_000
REVIEW_RATES = (45, 75, 90, 120)  # per hour; multiples of 3, so minutes/60 x rate is exact


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelOption(_Frozen):
    """A model a workflow uses, how often, and how well it does there."""

    provider: str
    model: str
    weight: float = Field(1.0, gt=0)
    reasoning: bool = Field(False, description="Reports reasoning tokens (part of output).")
    cache_writes: bool = Field(False, description="Reports explicit prompt-cache writes.")
    quality: float = Field(1.0, gt=0, description="Multiplies the workflow's acceptance.")
    tokens_per_second: int = Field(100, gt=0)


class Workflow(_Frozen):
    """One team's workflow: its models, call and token shapes, and what outcomes are worth."""

    team: str
    name: str
    weight: float = Field(gt=0, description="Share of work units, relative to the others.")
    models: tuple[ModelOption, ...] = Field(min_length=1)
    task_type: str = ""
    agent: str | None = None
    service: str = ""
    owner: str = ""
    calls_median: float = Field(2.0, ge=1)
    calls_sigma: float = Field(0.5, ge=0)
    input_median: int = Field(2000, gt=0)
    output_median: int = Field(200, gt=0)
    token_sigma: float = Field(0.6, ge=0)
    system_prompt_tokens: int = Field(800, ge=0)
    context_share: float = Field(0.5, ge=0, le=0.95)
    cache_hit_rate: Share = Field(0.5, ge=0, le=1)
    call_gap_median_seconds: float = Field(1.5, gt=0)
    acceptance: Share = Field(0.8, ge=0, le=1)
    success_status: OutcomeStatus = "accepted"
    interim_status: OutcomeStatus = "completed"
    failure_statuses: tuple[tuple[OutcomeStatus, float], ...] = (("rejected", 1.0),)
    value_median: Decimal | None = None
    value_dimension: ValueDimension = "revenue"
    baseline_cost: Decimal | None = None
    review_share: Share = Field(0.3, ge=0, le=1)
    review_minutes_median: float = Field(2.0, gt=0)

    @property
    def key(self) -> str:
        return f"{self.team}/{self.name}"


def _m(provider: str, model: str, weight: float, **extra: Any) -> ModelOption:
    return ModelOption(provider=provider, model=model, weight=weight, **extra)


# Every model below is priced in schemas/catalog/default_prices.json (tests check it).
DEFAULT_WORKFLOWS: tuple[Workflow, ...] = (
    Workflow(
        team="support", name="triage", weight=0.30, task_type="classification",
        service="helpdesk", owner="support-ops",
        models=(_m("openai", "gpt-4o-mini", 0.6, quality=0.97),
                _m("gemini", "gemini-2.5-flash", 0.25, reasoning=True),
                _m("anthropic", "claude-haiku-4-5", 0.15, cache_writes=True)),
        calls_median=1.4, calls_sigma=0.4, input_median=1800, output_median=120,
        system_prompt_tokens=700, context_share=0.5, cache_hit_rate=0.6,
        call_gap_median_seconds=0.8, acceptance=0.9, success_status="resolved",
        failure_statuses=(("escalated", 0.6), ("rejected", 0.3), ("abandoned", 0.1)),
        value_median=Decimal("4.00"), value_dimension="cost_avoided",
        baseline_cost=Decimal("3.50"), review_share=0.1, review_minutes_median=1.0),
    Workflow(
        team="support", name="reply-draft", weight=0.22, task_type="generation",
        service="helpdesk", owner="support-ops",
        models=(_m("anthropic", "claude-sonnet-4-5", 0.5, cache_writes=True),
                _m("openai", "gpt-4o", 0.35, quality=0.97),
                _m("openai", "gpt-4o-mini", 0.15, quality=0.85)),
        calls_median=2.5, input_median=4500, output_median=450, system_prompt_tokens=1200,
        context_share=0.6, cache_hit_rate=0.7, call_gap_median_seconds=1.5,
        acceptance=0.78, success_status="resolved", interim_status="escalated",
        failure_statuses=(("rejected", 0.5), ("escalated", 0.4), ("abandoned", 0.1)),
        value_median=Decimal("9.00"), value_dimension="cost_avoided",
        baseline_cost=Decimal("7.50"), review_share=0.6, review_minutes_median=3.0),
    Workflow(
        team="sales", name="lead-research", weight=0.12, task_type="research",
        agent="lead-researcher", service="crm-agents", owner="revops",
        models=(_m("openai", "gpt-5", 0.5, reasoning=True),
                _m("gemini", "gemini-2.5-pro", 0.3, reasoning=True, quality=0.95),
                _m("openai", "gpt-5-mini", 0.2, reasoning=True, quality=0.85)),
        calls_median=6, calls_sigma=0.5, input_median=9000, output_median=900,
        system_prompt_tokens=1500, context_share=0.7, cache_hit_rate=0.5,
        call_gap_median_seconds=2.5, acceptance=0.55, success_status="completed",
        failure_statuses=(("rejected", 0.6), ("abandoned", 0.3), ("failed", 0.1)),
        value_median=Decimal("60.00"), value_dimension="revenue",
        baseline_cost=Decimal("35.00"), review_share=0.8, review_minutes_median=5.0),
    Workflow(
        team="legal", name="contract-review", weight=0.08, task_type="review",
        agent="contract-reviewer", service="legal-desk", owner="legal-ops",
        models=(_m("anthropic", "claude-opus-4-5", 0.35, cache_writes=True, quality=1.05),
                _m("anthropic", "claude-sonnet-4-5", 0.45, cache_writes=True),
                _m("openai", "gpt-5", 0.2, reasoning=True, quality=0.98)),
        calls_median=4, input_median=28000, output_median=1600, system_prompt_tokens=2500,
        context_share=0.8, cache_hit_rate=0.6, call_gap_median_seconds=3.0,
        acceptance=0.7, success_status="accepted",
        failure_statuses=(("rejected", 0.6), ("escalated", 0.4)),
        value_median=Decimal("180.00"), value_dimension="risk_avoided",
        baseline_cost=Decimal("220.00"), review_share=0.95, review_minutes_median=12.0),
    Workflow(
        team="eng", name="code-review", weight=0.16, task_type="review",
        agent="pr-reviewer", service="ci-bot", owner="dev-productivity",
        models=(_m("anthropic", "claude-sonnet-4-5", 0.5, cache_writes=True),
                _m("openai", "gpt-5", 0.3, reasoning=True),
                _m("openai", "o4-mini", 0.2, reasoning=True, quality=0.9)),
        calls_median=5, input_median=14000, output_median=800, system_prompt_tokens=1800,
        context_share=0.75, cache_hit_rate=0.65, call_gap_median_seconds=2.0,
        acceptance=0.65, success_status="accepted",
        failure_statuses=(("rejected", 0.8), ("abandoned", 0.2)),
        value_median=Decimal("25.00"), value_dimension="capacity",
        baseline_cost=Decimal("30.00"), review_share=0.9, review_minutes_median=6.0),
    Workflow(
        team="finance", name="invoice-matching", weight=0.12, task_type="extraction",
        service="ap-automation", owner="finance-ops",
        models=(_m("openai", "gpt-4o-mini", 0.5, quality=0.95),
                _m("gemini", "gemini-2.5-flash", 0.3, reasoning=True),
                _m("mistral", "mistral-small-latest", 0.2, quality=0.88)),
        calls_median=2, input_median=2600, output_median=220, system_prompt_tokens=600,
        context_share=0.4, cache_hit_rate=0.5, call_gap_median_seconds=1.0,
        acceptance=0.88, success_status="completed",
        failure_statuses=(("rejected", 0.5), ("failed", 0.3), ("escalated", 0.2)),
        value_median=Decimal("2.50"), value_dimension="cost_avoided",
        baseline_cost=Decimal("2.20"), review_share=0.25, review_minutes_median=1.5),
)


class SpendSpike(_Frozen):
    """For a while, one workflow gets ``rate_multiplier`` times its units, each with
    ``token_multiplier`` times the tokens. ``at`` is a fraction of the scenario span."""

    team: str = "sales"
    workflow: str = "lead-research"
    at: float = Field(0.75, ge=0, le=1)
    duration_seconds: int = Field(300, gt=0)
    rate_multiplier: float = Field(5.0, ge=1)
    token_multiplier: float = Field(3.0, ge=1)


class RunawayUnit(_Frozen):
    """One work unit that keeps calling and never reports an outcome (a looping agent)."""

    team: str = "eng"
    workflow: str = "code-review"
    calls: int = Field(500, ge=1)
    at: float = Field(0.5, ge=0, le=1)
    gap_seconds: float = Field(1.0, gt=0)


class RetryStorm(_Frozen):
    """For a while, one provider's calls fail and are retried far more often."""

    provider: str = "openai"
    at: float = Field(0.4, ge=0, le=1)
    duration_seconds: int = Field(240, gt=0)
    retry_probability: Share = Field(0.6, ge=0, le=1)
    max_attempts: int = Field(6, ge=1)


class ContextBloat(_Frozen):
    """For a while, one workflow's context grows with every call of a unit."""

    team: str = "support"
    workflow: str = "reply-draft"
    at: float = Field(0.55, ge=0, le=1)
    duration_seconds: int = Field(600, gt=0)
    growth_tokens_per_call: int = Field(6000, gt=0)


class CostItemShape(_Frozen):
    """Cost items a workflow's units carry besides tokens: a tool, an API, retrieval."""

    kind: CostKind = "tool_call"
    description: str = "tool call"
    per_unit: float = Field(1.0, ge=0, description="Mean items per unit (Poisson-ish)")
    quantity_median: float = Field(1.0, gt=0)
    unit_price: Decimal = Field(Decimal("0.01"), gt=0)


class ValueTraffic(_Frozen):
    """The value side of the product, for the demo: customers, cost items, shared costs,
    the conversion chain and audits. Off by default (benchmarks keep the plain mix)."""

    customers: int = Field(12, ge=1)
    cost_items: dict[str, CostItemShape] = Field(default_factory=lambda: {
        "sales/lead-research": CostItemShape(description="enrichment API", per_unit=2.0,
                                             quantity_median=3, unit_price=Decimal("0.45")),
        "legal/contract-review": CostItemShape(kind="retrieval", description="clause search",
                                               per_unit=1.0, quantity_median=40,
                                               unit_price=Decimal("0.002")),
        "eng/code-review": CostItemShape(kind="gpu", description="test sandbox",
                                         per_unit=0.5, quantity_median=2,
                                         unit_price=Decimal("0.09")),
    })
    shared_per_hour: dict[str, Decimal] = Field(default_factory=lambda: {
        "support/reply-draft": Decimal("1.80"), "legal/contract-review": Decimal("4.00")})
    # The chain after an accepted output: each stage reached with this share of the last.
    stage_shares: tuple[float, float, float] = (0.7, 0.6, 0.7)
    audited: dict[str, float] = Field(default_factory=lambda: {
        "legal/contract-review": 0.4, "finance/invoice-matching": 0.1})
    overturn_share: Share = 0.2
    audit_delay_seconds: int = Field(180, ge=1)


class Scenario(_Frozen):
    """Everything that shapes the traffic. Shares are probabilities per unit or event."""

    seed: int = 7
    run_id: str | None = Field(None, description="Id prefix; default 'seed<seed>'.")
    work_units: int = Field(2000, ge=0, description="Ordinary units (injections add more).")
    workflows: tuple[Workflow, ...] = Field(DEFAULT_WORKFLOWS, min_length=1)
    end: AwareDatetime | None = Field(
        None, description="Unit starts fall in [end - span, end); default: now - lag.")
    span_seconds: int = Field(3600, gt=0)
    lag_seconds: int = Field(
        900, ge=0, description="Without `end`: room for the last units to finish by now.")
    environment: str = "production"
    retry_probability: Share = Field(0.04, ge=0, le=1, description="Per attempt.")
    max_attempts: int = Field(4, ge=1)
    no_outcome_share: Share = Field(0.06, ge=0, le=1, description="Never report an outcome.")
    non_final_share: Share = Field(0.12, ge=0, le=1, description="Interim outcome first.")
    outcome_delay_median_seconds: float = Field(20.0, gt=0)
    outcome_delay_max_seconds: float = Field(600.0, gt=0)
    review_rate_share: Share = Field(0.3, ge=0, le=1, description="Outcomes with own rate.")
    duplicate_share: Share = Field(0.02, ge=0, le=1, description="Events sent twice.")
    out_of_order_share: Share = Field(0.10, ge=0, le=1, description="Events sent late.")
    outcome_first_share: Share = Field(0.05, ge=0, le=1, description="Outcome sent first.")
    disorder_horizon_seconds: int = Field(60, ge=0, le=3600)
    unpriced_share: Share = Field(0.0, ge=0, le=1, description="Calls to an unpriced model.")
    spend_spike: SpendSpike | None = SpendSpike()
    runaway: RunawayUnit | None = RunawayUnit()
    retry_storm: RetryStorm | None = RetryStorm()
    context_bloat: ContextBloat | None = ContextBloat()
    value: ValueTraffic | None = None

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        keys = [w.key for w in self.workflows]
        if len(set(keys)) != len(keys):
            raise ValueError(f"workflows must be distinct: {keys}")
        for name in ("spend_spike", "runaway", "context_bloat"):
            target = getattr(self, name)
            if target is not None and f"{target.team}/{target.workflow}" not in keys:
                raise ValueError(f"{name} names {target.team}/{target.workflow}, "
                                 f"not one of the workflows {keys}")
        return self

    def quiet(self) -> Scenario:
        """The same traffic without injections."""
        return self.model_copy(update={"spend_spike": None, "runaway": None,
                                       "retry_storm": None, "context_bloat": None})

    def clean(self) -> Scenario:
        """No injections, duplicates or disorder: for tests that want plain traffic."""
        return self.quiet().model_copy(update={
            "duplicate_share": 0.0, "out_of_order_share": 0.0, "outcome_first_share": 0.0})

    @classmethod
    def for_events(cls, events: int, **fields: Any) -> Scenario:
        """A scenario of about ``events`` events or a few more (about five per unit)."""
        return cls(work_units=max(1, math.ceil(events / 4.5)), **fields)

    def live(self, now: datetime | None = None) -> Scenario:
        """The same traffic starting now: replay it at speed 1 for events stamped as
        they are published (``generator.publish(..., replay_speed=1)``)."""
        moment = now or datetime.now(UTC)
        return self.model_copy(update={"end": moment + timedelta(seconds=self.span_seconds)})

    def end_ms(self) -> int:
        if self.end is not None:
            return int(self.end.timestamp()) * 1000
        return (int(time.time()) - self.lag_seconds) * 1000

    @property
    def prefix(self) -> str:
        return self.run_id or f"seed{self.seed}"


class RawEvent(NamedTuple):
    """One event to publish: its topic kind, key, wire-form fields and publish time."""

    kind: Kind
    work_unit_id: str
    data: dict[str, Any]
    publish_ms: int


class EncodedEvent(NamedTuple):
    """The same, encoded: ``value`` is the JSON of one event."""

    kind: Kind
    work_unit_id: str
    value: bytes
    publish_ms: int


@dataclass
class GenerationStats:
    """What a generation run did, counted as units are generated (a consumer that stops
    early has seen fewer events than counted)."""

    units: int = 0
    calls: int = 0
    outcomes: int = 0
    cost_items: int = 0
    duplicates: int = 0
    delayed: int = 0
    outcome_first_units: int = 0
    no_outcome_units: int = 0
    non_final_units: int = 0
    injected_units: dict[str, int] = field(default_factory=dict)

    @property
    def events(self) -> int:
        return self.calls + self.outcomes + self.cost_items + self.duplicates


# -- generation --------------------------------------------------------------------------

_Entry = tuple[int, int, Kind, str, dict[str, Any]]  # (publish ms, seq, kind, unit, data)


def raw_events(scenario: Scenario, stats: GenerationStats | None = None) -> Iterator[RawEvent]:
    """The scenario's events in publication order, as wire-form dicts."""
    for at, _, kind, unit_id, data in _Generator(scenario, stats or GenerationStats()).run():
        yield RawEvent(kind, unit_id, data, at)


def events(scenario: Scenario, stats: GenerationStats | None = None
           ) -> Iterator[ModelCall | Outcome]:
    """The scenario's events in publication order, validated into the contract's models."""
    for raw in raw_events(scenario, stats):
        if raw.kind == "calls":
            yield ModelCall.model_validate(raw.data)
        elif raw.kind == "outcomes":
            yield Outcome.model_validate(raw.data)


def encoded_events(scenario: Scenario, stats: GenerationStats | None = None
                   ) -> Iterator[EncodedEvent]:
    """The scenario's events in publication order, as JSON bytes (one event each)."""
    dumps = orjson.dumps
    for at, _, kind, unit_id, data in _Generator(scenario, stats or GenerationStats()).run():
        yield EncodedEvent(kind, unit_id, dumps(data), at)


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """Events encoded once and packed into one buffer, for benchmarks: publishing from
    it measures the broker path, not generation. Event ``i`` is
    ``data[ends[i - 1]:ends[i]]``, keyed by ``keys[i]``, a call when ``is_call[i]``."""

    data: bytes
    ends: array[int]
    keys: list[str]
    is_call: bytes

    def __len__(self) -> int:
        return len(self.ends)

    def __iter__(self) -> Iterator[EncodedEvent]:
        data, begin = self.data, 0
        for end, key, call in zip(self.ends, self.keys, self.is_call, strict=True):
            yield EncodedEvent("calls" if call else "outcomes", key, data[begin:end], 0)
            begin = end


def encode_all(scenario: Scenario, limit: int | None = None,
               stats: GenerationStats | None = None) -> EncodedBatch:
    """The scenario's first ``limit`` events (all by default), encoded into one buffer.

    One growing buffer instead of a bytes object per event, and the cyclic garbage
    collector paused meanwhile: both cost more than generating when kept per event.
    """
    buffer, ends, keys, is_call = bytearray(), array("q"), [], bytearray()
    dumps = orjson.dumps
    paused = gc.isenabled()
    gc.disable()
    try:
        entries = _Generator(scenario, stats or GenerationStats()).run()
        for count, (_, _, kind, unit_id, data) in enumerate(entries):
            if count == limit:
                break
            buffer += dumps(data)
            ends.append(len(buffer))
            keys.append(unit_id)
            is_call.append(kind == "calls")
    finally:
        if paused:
            gc.enable()
    return EncodedBatch(bytes(buffer), ends, keys, bytes(is_call))


# Standard normal quantiles: a table lookup is several times faster than
# random.lognormvariate, and tails cut at 3.4 sigma suit token counts fine.
_NORMAL = tuple(NormalDist().inv_cdf((i + 0.5) / 4096) for i in range(4096))
_Fields = dict[str, Any]


class _Generator:
    """Units are generated in start order; their events wait in a heap keyed by publish
    time. Every event of a unit publishes at or after the unit's start, so once the next
    unit starts at S, everything keyed before S can be released: memory stays bounded."""

    def __init__(self, scenario: Scenario, stats: GenerationStats) -> None:
        self.s = scenario
        self.stats = stats
        self.rng = random.Random(scenario.seed)
        self.end_ms = scenario.end_ms()
        self.start_ms = self.end_ms - scenario.span_seconds * 1000
        self.horizon_ms = scenario.disorder_horizon_seconds * 1000
        self.heap: list[_Entry] = []
        self.seq = 0
        self.by_key = {w.key: w for w in scenario.workflows}
        self.cum_workflows = _cumulative([w.weight for w in scenario.workflows])
        self.cum_models = {w.key: _cumulative([m.weight for m in w.models])
                           for w in scenario.workflows}
        self.static: dict[tuple[str, int], _Fields] = {}
        self.unpriced_share = scenario.unpriced_share
        self.delayed_share = scenario.out_of_order_share if self.horizon_ms else 0.0
        self.dup_share = scenario.duplicate_share
        bloat = scenario.context_bloat
        self.bloat_key = f"{bloat.team}/{bloat.workflow}" if bloat else ""
        self.bloat = self._window(bloat.at, bloat.duration_seconds) if bloat else (0, 0)
        storm = scenario.retry_storm
        self.storm = self._window(storm.at, storm.duration_seconds) if storm else (0, 0)

    def _lognormal(self, median: float, sigma: float) -> float:
        return median * math.exp(sigma * _NORMAL[int(self.rng.random() * 4096)])

    def _window(self, at: float, duration_seconds: float) -> tuple[int, int]:
        begin = self.start_ms + int(at * self.s.span_seconds * 1000)
        return begin, begin + int(duration_seconds * 1000)

    def _arrivals(self) -> list[tuple[int, str, str]]:
        """(start ms, workflow key, injection) of every unit, in start order."""
        s, rng = self.s, self.rng
        span_ms = s.span_seconds * 1000
        keys = [w.key for w in s.workflows]
        picked = rng.choices(keys, cum_weights=self.cum_workflows, k=s.work_units)
        arrivals = [(self.start_ms + int(rng.random() * span_ms), key, "") for key in picked]
        spike = s.spend_spike
        if spike is not None:
            begin, finish = self._window(spike.at, spike.duration_seconds)
            total = sum(w.weight for w in s.workflows)
            key = f"{spike.team}/{spike.workflow}"
            base = s.work_units * self.by_key[key].weight / total
            extra = round(base * (finish - begin) / span_ms * (spike.rate_multiplier - 1))
            arrivals += [(begin + int(rng.random() * (finish - begin)), key, "spend_spike")
                         for _ in range(extra)]
        if s.runaway is not None:
            begin, _ = self._window(s.runaway.at, 0)
            arrivals.append((begin, f"{s.runaway.team}/{s.runaway.workflow}", "runaway"))
        arrivals.sort(key=lambda a: a[0])
        return arrivals

    def run(self) -> Iterator[_Entry]:
        heap = self.heap
        pop = heapq.heappop
        if self.s.value is not None:
            self._shared_costs(self.s.value)
        for index, (start, key, injection) in enumerate(self._arrivals()):
            while heap and heap[0][0] < start:
                yield pop(heap)
            self._unit(index, start, self.by_key[key], injection)
        while heap:
            yield pop(heap)

    # -- one work unit -------------------------------------------------------------------
    def _unit(self, index: int, start: int, workflow: Workflow, injection: str) -> None:
        s, rng, stats = self.s, self.rng, self.stats
        unit_id = f"{s.prefix}-{index:07d}"
        stats.units += 1
        choice = _pick(rng, self.cum_models[workflow.key])
        if injection == "runaway" and s.runaway is not None:
            count, gap = s.runaway.calls, s.runaway.gap_seconds
        else:
            drawn = self._lognormal(workflow.calls_median, workflow.calls_sigma)
            count, gap = min(MAX_CALLS, max(1, round(drawn))), 0.0
        if not injection and workflow.key == self.bloat_key \
                and self.bloat[0] <= start < self.bloat[1]:
            injection = "context_bloat"
        if injection:
            stats.injected_units[injection] = stats.injected_units.get(injection, 0) + 1
        calls, gave_up = self._calls(unit_id, start, workflow, choice, count, gap, injection)
        outcomes: list[tuple[int, _Fields]] = []
        if injection == "runaway" or rng.random() < s.no_outcome_share:
            stats.no_outcome_units += 1
        else:
            outcomes = self._outcomes(unit_id, calls[-1][0], workflow,
                                      workflow.models[choice], gave_up)
        if s.value is not None:
            self._value(s.value, unit_id, workflow, calls, outcomes)
        stats.calls += len(calls)
        stats.outcomes += len(outcomes)
        if outcomes and rng.random() < s.outcome_first_share:
            # Sent before the calls (a business system faster than the telemetry path),
            # but at most the horizon before it happened: see the module docstring.
            stats.outcome_first_units += 1
            at, data = outcomes[0]
            self._push(unit_id, "outcomes", [(at, data)], max(start, at - self.horizon_ms))
            outcomes = outcomes[1:]
        self._push(unit_id, "calls", calls)
        if outcomes:
            self._push(unit_id, "outcomes", outcomes)

    def _push(self, unit_id: str, kind: Kind, items: list[tuple[int, _Fields]],
              publish_ms: int | None = None) -> None:
        """Queue events at their publish time: their own time, or up to the horizon
        later for the delayed share; the duplicated share is queued a second time."""
        random_, heap, push, stats = self.rng.random, self.heap, heapq.heappush, self.stats
        horizon, delayed, duplicated = self.horizon_ms, self.delayed_share, self.dup_share
        seq = self.seq
        for at, data in items:
            key = at if publish_ms is None else publish_ms
            if publish_ms is None and random_() < delayed:
                stats.delayed += 1
                key += 1 + int(random_() * horizon)
            seq += 1
            push(heap, (key, seq, kind, unit_id, data))
            if random_() < duplicated:
                stats.duplicates += 1
                seq += 1
                push(heap, (max(key, at + int(random_() * horizon)), seq, kind, unit_id, data))
        self.seq = seq

    def _static(self, workflow: Workflow, choice: int) -> _Fields:
        """The fields every call of this workflow and model shares."""
        key = (workflow.key, choice)
        found = self.static.get(key)
        if found is None:
            model = workflow.models[choice]
            found = self.static[key] = {
                "provider": model.provider, "model": model.model, "team": workflow.team,
                "owner": workflow.owner, "workflow": workflow.name,
                "task_type": workflow.task_type, "service": workflow.service,
                "environment": self.s.environment,
            }
            if workflow.agent:
                found["agent"] = workflow.agent
        return found

    def _calls(self, unit_id: str, start: int, workflow: Workflow, choice: int, count: int,
               fixed_gap: float, injection: str) -> tuple[list[tuple[int, _Fields]], bool]:
        """The unit's calls, retries included: ([(occurred ms, fields)], gave up?)."""
        s, rng = self.s, self.rng
        model = workflow.models[choice]
        static = self._static(workflow, choice)
        storm = s.retry_storm if s.retry_storm and s.retry_storm.provider == model.provider \
            else None
        storm_begin, storm_end = self.storm
        spike = s.spend_spike
        token_mult = spike.token_multiplier if injection == "spend_spike" and spike else 1.0
        bloat = s.context_bloat
        growth = bloat.growth_tokens_per_call if injection == "context_bloat" and bloat else 0
        calls: list[tuple[int, _Fields]] = []
        t = start
        n = 0
        for step in range(count):
            attempt = 1
            while True:
                stormy = storm is not None and storm_begin <= t < storm_end
                if stormy and storm is not None:
                    p_fail, limit = storm.retry_probability, storm.max_attempts
                elif fixed_gap:
                    p_fail, limit = 0.0, 1  # the runaway's calls all succeed
                else:
                    p_fail, limit = s.retry_probability, s.max_attempts
                status = "ok"
                if p_fail and rng.random() < p_fail:
                    status = "timeout" if rng.random() < 0.3 else "error"
                n += 1
                data, latency = self._call(static, f"{unit_id}-c{n}", unit_id, t, workflow,
                                           model, step, attempt, status, token_mult, growth)
                if injection or stormy:
                    data["attributes"] = _tags(injection, stormy)
                calls.append((t, data))
                if fixed_gap:  # a looping agent: one call per cycle, whatever it takes
                    t += int(fixed_gap * 1000)
                else:
                    t += latency + int(self._lognormal(workflow.call_gap_median_seconds, 0.5)
                                       * 1000)
                if status == "ok":
                    break
                if attempt >= limit:
                    return calls, True
                attempt += 1
        return calls, False

    def _call(self, static: _Fields, event_id: str, unit_id: str, t: int,
              workflow: Workflow, model: ModelOption, step: int, attempt: int, status: str,
              token_mult: float, growth: int) -> tuple[_Fields, int]:
        # The hot path of generation: draws are inlined (see _lognormal).
        random_ = self.rng.random
        normal, exp = _NORMAL, math.exp
        sigma = workflow.token_sigma
        input_tokens = max(50, int(workflow.input_median * token_mult
                                   * exp(sigma * normal[int(random_() * 4096)])))
        system = min(workflow.system_prompt_tokens, input_tokens // 2)
        share = workflow.context_share + 0.1 * normal[int(random_() * 4096)]
        context = int((input_tokens - system) * (0.95 if share > 0.95 else max(0.0, share)))
        if growth:
            input_tokens += growth * (step + 1)
            context += growth * (step + 1)
        cached = written = 0
        if random_() < workflow.cache_hit_rate * (1.0 if step else 0.5):
            cached = system + (int(context * random_()) if step else 0)
        elif model.cache_writes:
            written = system
        visible = max(1, int(workflow.output_median * token_mult
                             * exp(sigma * normal[int(random_() * 4096)])))
        reasoning = int(visible * 2.0 * exp(0.5 * normal[int(random_() * 4096)])) \
            if model.reasoning else 0
        latency = min(MAX_LATENCY_MS, 250 + input_tokens // 40
                      + (visible + reasoning) * 1000 // model.tokens_per_second)
        if status != "ok":
            if status == "error":
                visible = reasoning = 0
                latency = 150 + int(random_() * 400)
            else:
                visible, reasoning = int(visible * random_() * 0.5), 0
                latency = 30_000
        data = {
            "event_id": event_id, "work_unit_id": unit_id,
            "occurred_at": datetime.fromtimestamp(t / 1000, UTC), **static,
            "input_tokens": input_tokens, "output_tokens": visible + reasoning,
            "cached_input_tokens": cached, "cache_write_tokens": written,
            "reasoning_tokens": reasoning, "system_prompt_tokens": system,
            "context_tokens": context, "latency_ms": latency, "status": status,
            "attempt": attempt,
        }
        if self.unpriced_share and random_() < self.unpriced_share:
            data["provider"], data["model"] = UNPRICED_PROVIDER, UNPRICED_MODEL
        return data, latency

    def _outcomes(self, unit_id: str, last_ms: int, workflow: Workflow, model: ModelOption,
                  gave_up: bool) -> list[tuple[int, _Fields]]:
        """The final outcome, after an interim (non-final) one for some units. The delays
        add up to at most ``outcome_delay_max_seconds`` after the last call."""
        s, rng = self.s, self.rng
        if gave_up:
            status: OutcomeStatus = "failed"
        elif rng.random() < min(1.0, workflow.acceptance * model.quality):
            status = workflow.success_status
        else:
            statuses = [st for st, _ in workflow.failure_statuses]
            status = rng.choices(statuses, [w for _, w in workflow.failure_statuses])[0]
        median, limit = s.outcome_delay_median_seconds, s.outcome_delay_max_seconds * 1000
        at = last_ms + int(min(limit, self._lognormal(median, 0.8) * 1000))
        found: list[tuple[int, _Fields]] = []
        if rng.random() < s.non_final_share:
            self.stats.non_final_units += 1
            found.append((at, self._outcome(f"{unit_id}-o1", unit_id, at, workflow,
                                            workflow.interim_status, final=False)))
            later = at + int(self._lognormal(3 * median, 0.8) * 1000)
            at = max(at + 1, min(later, last_ms + int(limit)))
        found.append((at, self._outcome(f"{unit_id}-o{len(found) + 1}", unit_id, at, workflow,
                                        status, final=True)))
        return found

    def _outcome(self, event_id: str, unit_id: str, t: int, workflow: Workflow,
                 status: OutcomeStatus, final: bool) -> _Fields:
        rng = self.rng
        accepted = status in ACCEPTING_STATUSES
        data: _Fields = {
            "event_id": event_id, "work_unit_id": unit_id,
            "occurred_at": datetime.fromtimestamp(t / 1000, UTC),
            "team": workflow.team, "workflow": workflow.name, "status": status,
            "is_final": final,
            "quality_score": round(rng.uniform(0.7, 1.0) if accepted
                                   else rng.uniform(0.05, 0.6), 2),
        }
        if rng.random() < workflow.review_share:
            minutes = self._lognormal(workflow.review_minutes_median, 0.6)
            data["human_review_minutes"] = str(max(1, round(minutes * 2)) / 2)
            if rng.random() < self.s.review_rate_share:
                data["review_rate"] = str(rng.choice(REVIEW_RATES))
                data["currency"] = "USD"
        if final and accepted and workflow.value_median is not None:
            value = self._lognormal(float(workflow.value_median), 0.5)
            data["value"] = f"{value:.2f}"
            data["value_dimension"] = workflow.value_dimension
            data["currency"] = "USD"
        if final and workflow.baseline_cost is not None:
            data["baseline_cost"] = str(workflow.baseline_cost)
            data["currency"] = "USD"
        return data


    # -- the value side (Scenario.value) --------------------------------------------
    def _value(self, value: ValueTraffic, unit_id: str, workflow: Workflow,
               calls: list[tuple[int, _Fields]], outcomes: list[tuple[int, _Fields]]) -> None:
        """A customer on every event, cost items at the unit's calls, a stage on its
        accepted outcome, and for audited workflows a verdict a few minutes later."""
        rng = self.rng
        customer = f"customer-{int(rng.random() * value.customers):02d}"
        for _, data in calls:
            data["customer"] = customer
        for _, data in outcomes:
            data["customer"] = customer
        shape = value.cost_items.get(workflow.key)
        if shape is not None:
            items = []
            for k in range(int(shape.per_unit) + (rng.random() < shape.per_unit % 1)):
                at = calls[rng.randrange(len(calls))][0]
                quantity = max(1, round(self._lognormal(shape.quantity_median, 0.5)))
                items.append((at, {
                    "event_id": f"{unit_id}-k{k}", "work_unit_id": unit_id,
                    "occurred_at": datetime.fromtimestamp(at / 1000, UTC),
                    "team": workflow.team, "workflow": workflow.name, "kind": shape.kind,
                    "quantity": str(quantity), "unit_price": str(shape.unit_price),
                    "currency": "USD", "description": shape.description,
                    "customer": customer}))
            self.stats.cost_items += len(items)
            self._push(unit_id, "costs", items)
        final = outcomes[-1][1] if outcomes else None
        if final is None or final["status"] not in ACCEPTING_STATUSES:
            return
        reached = 0
        for share in value.stage_shares:
            if rng.random() >= share:
                break
            reached += 1
        if reached:
            final["stage"] = STAGES[reached]
        audit = value.audited.get(workflow.key, 0.0)
        if audit and rng.random() < audit:
            at = outcomes[-1][0] + value.audit_delay_seconds * 1000
            overturned = rng.random() < value.overturn_share
            verdict: _Fields = {
                "event_id": f"{unit_id}-audit", "work_unit_id": unit_id,
                "occurred_at": datetime.fromtimestamp(at / 1000, UTC),
                "team": workflow.team, "workflow": workflow.name,
                "verdict": "overturned" if overturned else "upheld",
                "human_review_minutes": "2", "customer": customer}
            if overturned and "value" in final:
                verdict["value_at_risk"] = str(Decimal(final["value"]) * 2)
                verdict["currency"] = "USD"
            outcomes.append((at, verdict))

    def _shared_costs(self, value: ValueTraffic) -> None:
        """Each hour's shared cost of a workflow (a vector store, reserved GPUs), at the
        start of the hour: no work unit, keyed by its bucket."""
        hour = 3_600_000
        for key, amount in value.shared_per_hour.items():
            workflow = self.by_key.get(key)
            if workflow is None:
                continue
            start = self.start_ms - self.start_ms % hour
            while start < self.end_ms:
                moment = datetime.fromtimestamp(max(start, self.start_ms) / 1000, UTC)
                bucket = shared_bucket_id(workflow.team, workflow.name, moment)
                self.stats.cost_items += 1
                self._push(bucket, "costs", [(int(moment.timestamp() * 1000), {
                    "event_id": f"{self.s.prefix}-shared-{workflow.name}-{start}",
                    "occurred_at": moment, "team": workflow.team, "workflow": workflow.name,
                    "kind": "infra", "amount": str(amount), "currency": "USD",
                    "description": "shared infrastructure, one hour"})])
                start += hour


def _tags(injection: str, stormy: bool) -> dict[str, str]:
    tags = {"injection": injection} if injection else {}
    if stormy:
        tags["incident"] = "retry_storm"
    return tags


def _cumulative(weights: list[float]) -> list[float]:
    total, out = 0.0, []
    for weight in weights:
        total += weight
        out.append(total)
    return out


def _pick(rng: random.Random, cumulative: list[float]) -> int:
    x = rng.random() * cumulative[-1]
    for i, bound in enumerate(cumulative):
        if x < bound:
            return i
    return len(cumulative) - 1


# -- ground truth ------------------------------------------------------------------------

@dataclass
class UnitTruth:
    """A work unit's expected final figures."""

    work_unit_id: str
    team: str = ""
    workflow: str = ""
    calls: int = 0
    retries: int = 0
    failed_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    system_prompt_tokens: int = 0
    context_tokens: int = 0
    model_cost: Decimal = Decimal(0)
    unpriced_calls: int = 0
    outcomes: int = 0
    outcome_status: str | None = None
    accepted: bool = False
    is_final: bool = False
    value: Decimal | None = None
    baseline_cost: Decimal | None = None
    human_review_minutes: Decimal = Decimal(0)
    human_cost: Decimal = Decimal(0)
    quality_score: float | None = None

    @property
    def has_outcome(self) -> bool:
        return self.outcomes > 0

    @property
    def fully_loaded_cost(self) -> Decimal:
        return self.model_cost + self.human_cost


@dataclass
class Truth:
    """Expected figures per unit and in total."""

    units: dict[str, UnitTruth]
    events: int  # as published, duplicates included
    duplicates: int
    calls: int
    outcomes: int
    retries: int
    spend: Decimal
    human_cost: Decimal
    value: Decimal
    unpriced_calls: int

    @property
    def distinct_events(self) -> int:
        return self.events - self.duplicates

    @property
    def attributed_units(self) -> int:
        return sum(1 for u in self.units.values() if u.has_outcome)

    @property
    def unattributed_units(self) -> int:
        """Units with calls and no outcome: unattributed once the deadline passes."""
        return sum(1 for u in self.units.values() if not u.has_outcome and u.calls)

    @property
    def accepted_units(self) -> int:
        return sum(1 for u in self.units.values() if u.accepted)


AnyEvent = ModelCall | Outcome | RawEvent | EncodedEvent


def _model(event: AnyEvent) -> ModelCall | Outcome:
    if isinstance(event, ModelCall | Outcome):
        return event
    if isinstance(event, RawEvent):
        model = ModelCall if event.kind == "calls" else Outcome
        return model.model_validate(event.data)
    codec = call_codec if event.kind == "calls" else outcome_codec
    decoded = codec.decode(event.value)
    if decoded.errors or len(decoded.events) != 1:
        raise TokenyieldError(f"not one valid event: {decoded.errors}")
    return decoded.events[0]


def ground_truth(events: Iterable[AnyEvent], default_review_rate: Decimal = Decimal(60),
                 review_rates_by_team: dict[str, Decimal] | None = None,
                 book: PriceBook | None = None) -> Truth:
    """What the engine must end with for these events (none of them late).

    Events count once per (work unit, event id), the first copy seen. Cost is
    ``price_call`` under ``book`` (default: the shipped catalog). Human cost is
    minutes / 60 x (the outcome's review rate, else the team's, else the default).
    Status, acceptance and quality come from the outcome with the greatest
    (is_final, occurred_at, event_id); value, baseline and review add up over outcomes.
    """
    book = book or PriceBook.load()
    rates = review_rates_by_team or {}
    seen: dict[tuple[str, str], ModelCall | Outcome] = {}
    published = 0
    for item in events:
        event = _model(item)
        published += 1
        seen.setdefault((event.work_unit_id, event.event_id), event)
    units: dict[str, UnitTruth] = {}
    deciders: dict[str, Outcome] = {}
    for event in seen.values():
        unit = units.setdefault(event.work_unit_id, UnitTruth(event.work_unit_id))
        unit.team = unit.team or event.team
        unit.workflow = unit.workflow or event.workflow
        if isinstance(event, ModelCall):
            _add_call(unit, event, book)
        else:
            _add_outcome(unit, event, rates.get(event.team, default_review_rate))
            best = deciders.get(event.work_unit_id)
            if best is None or _rank(event) > _rank(best):
                deciders[event.work_unit_id] = event
    for unit_id, outcome in deciders.items():
        unit = units[unit_id]
        unit.outcome_status = outcome.status
        unit.accepted = outcome.accepted
        unit.is_final = outcome.is_final
        unit.quality_score = outcome.quality_score
    all_units = list(units.values())
    return Truth(
        units=units, events=published, duplicates=published - len(seen),
        calls=sum(u.calls for u in all_units), outcomes=sum(u.outcomes for u in all_units),
        retries=sum(u.retries for u in all_units),
        spend=sum((u.model_cost for u in all_units), Decimal(0)),
        human_cost=sum((u.human_cost for u in all_units), Decimal(0)),
        value=sum((u.value for u in all_units if u.value is not None), Decimal(0)),
        unpriced_calls=sum(u.unpriced_calls for u in all_units),
    )


def _rank(outcome: Outcome) -> tuple[bool, datetime, str]:
    return (outcome.is_final, outcome.occurred_at, outcome.event_id)


def _add_call(unit: UnitTruth, call: ModelCall, book: PriceBook) -> None:
    unit.calls += 1
    unit.retries += 1 if call.attempt > 1 else 0
    unit.failed_calls += 1 if call.status != "ok" else 0
    unit.input_tokens += call.input_tokens
    unit.output_tokens += call.output_tokens
    unit.cached_input_tokens += call.cached_input_tokens
    unit.cache_write_tokens += call.cache_write_tokens
    unit.reasoning_tokens += call.reasoning_tokens
    unit.system_prompt_tokens += call.system_prompt_tokens or 0
    unit.context_tokens += call.context_tokens or 0
    cost = price_call(book, call).cost
    if cost is None:
        unit.unpriced_calls += 1
    else:
        unit.model_cost += cost


def _add_outcome(unit: UnitTruth, outcome: Outcome, team_rate: Decimal) -> None:
    unit.outcomes += 1
    if outcome.value is not None:
        unit.value = (unit.value or Decimal(0)) + outcome.value
    if outcome.baseline_cost is not None:
        unit.baseline_cost = (unit.baseline_cost or Decimal(0)) + outcome.baseline_cost
    rate = outcome.review_rate if outcome.review_rate is not None else team_rate
    unit.human_review_minutes += outcome.human_review_minutes
    unit.human_cost += outcome.human_review_minutes * rate / 60
