"""The additive figures of a window row, and how a row is named.

A window *cell* is one row's figures as a list of integers (money in atto units),
indexed by the field constants below. Partitions send the rollup stage *changes* to
cells; the rollup adds them up, so every field must be additive (ratios are computed
from the sums at the output boundary, never stored).

A cell key is ``(size_ms, start_ms, team, workflow, series)``. The series says what the
row is about, with a tag that no user-supplied name can forge (a model called ``*`` or
``agent:x`` is still a model):

- ``"m:" + model``  spend-side figures of one model;
- ``"t"``           the all-models total of a team and workflow, where outcome figures
                    and distinct work units are booked (spend-side figures of the total
                    are the sum of its model rows, added by the rollup);
- ``"a:" + agent``  spend-side figures of one agent (spike detection per agent);
- ``"d:" + dimension + NUL + value``  one value of a business dimension (``user``,
                    ``customer`` or a TOKENYIELD_DIMENSIONS attribute): spend, outcomes,
                    cost items and decisions of the events and units that name it (the
                    rollup caps the values per dimension, the rest in ``__other__``);
- ``"h:" + bucket`` decided units by their fully loaded cost (a log-scale bucket, see
                    ``cost_bucket``), in one-day cells at the deciding outcome's day:
                    ``DECIDED``, ``ACCEPTED`` and the units' cost in ``SPEND``. Exact
                    (settled like the decision), for the spend-plateau detector; never
                    rows.
- ``"x:" + model``  units finalised with that primary model, for model-mismatch
                    detection; the key's team slot holds the task type. Approximate by
                    design and never part of the ledger.
"""

from __future__ import annotations

from typing import Literal

CellKey = tuple[int, int, str, str, str]

# Spend side: booked by each call in its own window, under its own team and workflow.
CALLS = 0
RETRIES = 1
FAILED = 2
INPUT = 3
OUTPUT = 4
CACHED = 5
REASONING = 6
OVERHEAD = 7  # system prompt + context tokens
SPEND = 8  # atto, priced calls
UNPRICED = 9  # calls without a price (yet)
SYSTEM = 10
# Unit side: booked from a unit's state, moved exactly when the state changes.
WORK_UNITS = 11  # distinct units with calls in the row
LINKED = 12  # atto: spend of units with an outcome
UNLINKED = 13  # atto: spend of units past their deadline without one
DECIDED = 14  # units whose deciding outcome falls in the window (total rows)
ACCEPTED = 15  # ... and accepted by it
# Outcome side: booked by each outcome in its own window (total rows).
OUTCOMES = 16  # outcome events
VALUE = 17  # atto
HUMAN = 18  # atto, review cost
CACHE_WRITE = 19  # cache-write tokens (spend side)
LATENCY_MS = 20  # summed latency of the calls that reported one (spend side)
LATENCY_CALLS = 21  # calls that reported a latency
# Cost items (total rows, each item in its own window, under its own team and workflow).
OTHER_COST = 22  # atto: cost items of work units
SHARED_COST = 23  # atto: cost items without a work unit (shared by the workflow)
COST_ITEMS = 24  # cost items, shared ones included
# The decision (total rows, in the deciding outcome's window; see Postings.settle).
QUALITY_FAILED = 25  # decided units a success status did not save: quality under the bar
LATENCY_FAILED = 26  # ... or a call slower than the workflow's maximum
INTEGRITY_FAILED = 27  # ... or overturned by a later verdict
ACCEPTED_VALUE = 28  # atto: the value of the successful units
AT_RISK = 29  # atto: value at risk of the overturned units
STRATEGIC_UNITS = 30  # decided units whose outcome gave a strategic score
STRATEGIC_SCORE = 31  # their scores, in millionths (0-10 each)
STRATEGIC_CONFIDENCE = 32  # their evidence confidence, in millionths (0-1 each)
STRATEGIC_CONFIDENT = 33  # ... of the units that gave one
# The spend classes again, booked in each call's own window (unit side, model rows): what
# the dashboard's coverage by day reads, so that no panel joins calls to attributions.
ATTRIBUTED_AT_CALL = 34  # atto: spend of calls whose unit has an outcome
UNATTRIBUTED_AT_CALL = 35  # atto: ... whose unit passed its deadline without one
# Review effort per outcome event, verdicts included (outcome side, total rows): what the
# intervention panel reads (v_acceptance_and_intervention counts every outcome row).
REVIEWED = 36  # outcome events (verdicts too) with human review minutes
VERDICTS = 37  # verdict events (a later review; not in OUTCOMES)
# Unit rows ("u:" + agent): each work unit once, in the window of its last event, under
# its own team, workflow and agent (Postings.place); WORK_UNITS and SPEND count them and
# their model spend there, and these the ones without an outcome.
UNITS_WITHOUT_OUTCOME = 38
SPEND_WITHOUT_OUTCOME = 39  # atto
# The evidence confidence of the decisions (total rows, with the decision, in its deciding
# outcome's window): what the portfolio judges its workflows' evidence by, so that it reads
# no attribution. Any decided unit whose deciding outcome gave one, strategic or not.
EVIDENCE_CONFIDENCE = 40  # millionths (0-1 each)
EVIDENCE_CONFIDENT = 41  # decided units whose deciding outcome gave an evidence confidence
# Review minutes of each outcome event, verdicts included (outcome side, total rows, in the
# event's window): what the business case's time saved reads, instead of outcomes FINAL.
REVIEW_MINUTES = 42  # millionths of a minute (the contract allows six places: exact)
CELL_FIELDS = 43

FIELD_NAMES = (
    "calls", "retries", "failed_calls", "input_tokens", "output_tokens",
    "cached_input_tokens", "reasoning_tokens", "overhead_tokens", "spend", "unpriced_calls",
    "system_prompt_tokens", "work_units", "linked_spend", "unlinked_spend", "decided_units",
    "accepted_outcomes", "outcomes", "value", "human_cost", "cache_write_tokens",
    "latency_ms_sum", "latency_calls", "other_cost", "shared_cost", "cost_items",
    "quality_failed_units", "latency_failed_units", "integrity_failed_units",
    "accepted_value", "value_at_risk", "strategic_units", "strategic_score_micros",
    "strategic_confidence_micros", "strategic_confident_units", "attributed_spend",
    "unattributed_spend", "reviewed_outcomes", "verdicts", "units_without_outcome",
    "spend_without_outcome", "evidence_confidence_micros", "evidence_confident_units",
    "review_minutes_micros",
)
MONEY_FIELDS = frozenset({SPEND, LINKED, UNLINKED, VALUE, HUMAN, OTHER_COST, SHARED_COST,
                          ACCEPTED_VALUE, AT_RISK, ATTRIBUTED_AT_CALL, UNATTRIBUTED_AT_CALL,
                          SPEND_WITHOUT_OUTCOME})
#: What a decided unit books in its deciding outcome's window (``Postings.settle``).
DECISION_FIELDS = (DECIDED, ACCEPTED, QUALITY_FAILED, LATENCY_FAILED, INTEGRITY_FAILED,
                   ACCEPTED_VALUE, AT_RISK, STRATEGIC_UNITS, STRATEGIC_SCORE,
                   STRATEGIC_CONFIDENCE, STRATEGIC_CONFIDENT, EVIDENCE_CONFIDENCE,
                   EVIDENCE_CONFIDENT)
MICROS = 1_000_000

#: Fields a total row takes from its model rows (the rest are booked on the total itself).
SPEND_SIDE = (CALLS, RETRIES, FAILED, INPUT, OUTPUT, CACHED, REASONING, OVERHEAD, SPEND,
              UNPRICED, SYSTEM, LINKED, UNLINKED, CACHE_WRITE, LATENCY_MS, LATENCY_CALLS,
              ATTRIBUTED_AT_CALL, UNATTRIBUTED_AT_CALL)

TOTAL = "t"
MODEL = "m:"
AGENT = "a:"
UNIT = "u:"
DIMENSION = "d:"
MIX = "x:"
HISTOGRAM = "h:"
DAY_MS = 86_400_000
# Cost buckets: bucket i holds units costing [BUCKET_BASE * 2^(i/4), BUCKET_BASE *
# 2^((i+1)/4)) atto: four buckets per doubling (19 % wide), from a millionth of the
# currency unit; bucket 0 also holds anything cheaper (a unit costing nothing included).
BUCKET_BASE = 10**12  # atto: 0.000001
BUCKETS_PER_DOUBLING = 4
DIMENSION_SEP = "\x00"  # between a dimension's name and its value: no value can forge it
OTHER_VALUE = "__other__"  # the values of a dimension beyond its cardinality cap

Scope = Literal["total", "model", "agent", "dimension", "unit"]

#: What a dimension row books from a call (spend side).
DIMENSION_CALL_FIELDS = (CALLS, INPUT, OUTPUT, SPEND, UNPRICED)


def model_series(model: str) -> str:
    return MODEL + model


def agent_series(agent: str) -> str:
    return AGENT + agent


def mix_series(model: str) -> str:
    return MIX + model


def dimension_series(dimension: str, value: str) -> str:
    return DIMENSION + dimension + DIMENSION_SEP + value


def dimension_of(series: str) -> tuple[str, str]:
    """(dimension, value) of a dimension series."""
    dimension, _, value = series[len(DIMENSION):].partition(DIMENSION_SEP)
    return dimension, value


def scope_of(series: str) -> tuple[Scope | None, str]:
    """(scope, name) of a series: the row kind and the model or agent it names.
    ``None`` for detector-only series (the model mix), which never become rows."""
    if series == TOTAL:
        return "total", ""
    if series.startswith(MODEL):
        return "model", series[len(MODEL):]
    if series.startswith(AGENT):
        return "agent", series[len(AGENT):]
    if series.startswith(DIMENSION):
        return "dimension", series[len(DIMENSION):]
    if series.startswith(UNIT):
        return "unit", series[len(UNIT):]
    return None, series[len(MIX):]


def cost_bucket(cost_atto: int) -> int:
    """The histogram bucket of a unit costing ``cost_atto`` (exact integer arithmetic:
    the same cost always lands in the same bucket)."""
    if cost_atto < BUCKET_BASE:
        return 0
    i = ((cost_atto // BUCKET_BASE).bit_length() - 1) * BUCKETS_PER_DOUBLING
    while _bucket_floor(i + 1) <= cost_atto:
        i += 1
    return i


def _bucket_floor(i: int) -> int:
    """The lowest cost (atto) of bucket ``i``: BUCKET_BASE * 2^(i/4), rounded down."""
    whole, part = divmod(i, BUCKETS_PER_DOUBLING)
    # 2^(part/4) for part 0..3, as exact ratios of integers (to 9 digits: buckets need
    # to be stable, not exact powers).
    ratio = (1_000_000_000, 1_189_207_115, 1_414_213_562, 1_681_792_830)[part]
    return BUCKET_BASE * (2 ** whole) * ratio // 1_000_000_000


def bucket_bounds(i: int) -> tuple[int, int]:
    """[low, high) of bucket ``i`` in atto."""
    return (0 if i == 0 else _bucket_floor(i)), _bucket_floor(i + 1)


def histogram_series(bucket: int) -> str:
    return HISTOGRAM + str(bucket)


def zero() -> list[int]:
    return [0] * CELL_FIELDS


# orjson writes integers of up to 64 bits; larger amounts (atto-units past about 9.2
# units of money) are written as decimal strings, which read back as the same int.
_INT64_MIN, _INT64_END = -(1 << 63), 1 << 63
_ZEROS = [0] * CELL_FIELDS


def changed_fields(values: list[int]) -> list[int | str]:
    """A cell's non-zero fields as a flat ``[index, value, ...]`` list, for JSON.

    A cell changes about 5 of its 43 fields, and every outbox and rollup state is
    written and read in full, so only those are written (docs/BENCHMARKS.md: under half
    the time to encode and to decode, and 2.3 times fewer bytes).
    """
    changed: list[int | str] = []
    for index, value in enumerate(values):
        if value:
            changed.append(index)
            changed.append(value if _INT64_MIN <= value < _INT64_END else str(value))
    return changed


def from_changed_fields(changed: list[int | str]) -> list[int]:
    """The cell ``changed_fields`` wrote (fields not listed are zero)."""
    values = _ZEROS.copy()
    for at in range(0, len(changed), 2):
        value = changed[at + 1]
        values[changed[at]] = value if type(value) is int else int(value)  # type: ignore[index]
    return values


def add_into(target: list[int], values: list[int]) -> None:
    for i, x in enumerate(values):
        if x:
            target[i] += x
