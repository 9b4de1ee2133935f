"""Batched, idempotent inserts of the engine's results into ClickHouse.

The worker hands each checkpoint's rows to ``write``; offsets of the messages that
produced them are acknowledged only after it returns, so a row is never lost. While
ClickHouse is down or refuses (``is_storage_failure``) ``write`` retries with
exponential backoff (the partition simply stops advancing) until it succeeds or the
worker stops; nothing is dropped. Any other exception is a fault in tokenyield itself
(a column builder, a row of the wrong type): retrying would never succeed and would
leave the worker "degraded" for ever, so ``write`` raises ``SinkError`` at once and the
worker stops with that message; its unacknowledged input is processed again after the
fix.

Nothing is counted twice either: every table is a ReplacingMergeTree keyed by the row's
identity (event id, attribution id and revision, ...), and each insert carries a
deduplication token built from the topic, partition and offset range it covers and a
digest of the rows themselves, so an identical retry of a batch is discarded by
ClickHouse itself, and nothing else is. (The ranges alone were not enough: a checkpoint
that read no message, only the clock moving, say to expire units, has no range, so
every such batch had the same token and ClickHouse dropped all but the first; and a
replay of the same messages can tick at other moments and produce other rows.)

clickhouse-connect is synchronous and chdb runs in-process, so inserts run on one
dedicated thread: the event loop (and Kafka heartbeats) keep going meanwhile.

**One insert for many batches.** An insert costs ClickHouse a new part, about 8 ms on
chdb whatever its size, so ``write`` calls that wait together (the checkpoints of
partitions served by different agents, and the rollup's) are written as one insert per
table: the batches' rows together, under a token built from all their
offset ranges (a replay that groups them differently is a different insert, whose rows
ReplacingMergeTree collapses, as after any crash). Within a batch only the latest
revision of each attribution is written: the intermediate ones of one checkpoint are on
the ``attributions`` topic, and ``attributions_latest`` keeps the latest anyway.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    DataError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)

from schemas.errors import SinkError, StorageError
from schemas.outputs import Alert, CostPerOutcomeWindow, DeadLetter, LateEvent, WorkUnitAttribution
from schemas.pricing import PriceEntry
from streams.clickhouse.arrow_rows import ArrowBodies
from streams.core.alerts.alert_config import BudgetRow
from streams.core.alerts.forecast import SpendForecast
from streams.core.attribution import version_of
from streams.core.money import from_atto
from streams.core.records import CallRecord, CostRecord, OutcomeRecord, Outputs, PendingUnit
from streams.core.workflows import WorkflowRow

log = logging.getLogger(__name__)

FINAL_BIT = 1 << 62
R = TypeVar("R")


def _ts(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def attribution_version(a: WorkUnitAttribution) -> int:
    """Later events outrank earlier ones, then the revision breaks ties (``version_of``)."""
    return version_of(int(a.last_event_at.timestamp()), a.revision)


def window_version(w: CostPerOutcomeWindow) -> int:
    return (FINAL_BIT if w.final else 0) | min(w.revision, FINAL_BIT - 1)


def _columns(rows: Sequence[Any], spec: list[tuple[str, Callable[[Any], Any]]]
             ) -> tuple[list[str], list[list[Any]]]:
    """Column-oriented data: one pass per column (a comprehension, no per-cell call
    overhead for plain attributes)."""
    names = [name for name, _ in spec]
    data = []
    for _, getter in spec:
        path = getattr(getter, "path", None)
        if path is None:
            data.append([getter(row) for row in rows])
        elif len(path) == 1:
            data.append([getattr(row, path[0]) for row in rows])
        else:
            outer, inner = path
            data.append([getattr(getattr(row, outer), inner) for row in rows])
    return names, data


class _Path:
    """A getter that is only attribute access, so ``_columns`` can inline it."""

    def __init__(self, *path: str) -> None:
        self.path = path

    def __call__(self, row: Any) -> Any:
        for name in self.path:
            row = getattr(row, name)
        return row


def _attr(name: str) -> Callable[[Any], Any]:
    return _Path(name)


def _call(name: str) -> Callable[[CallRecord], Any]:
    return _Path("call", name)


def _outcome(name: str) -> Callable[[OutcomeRecord], Any]:
    return _Path("outcome", name)


CALL_COLUMNS: list[tuple[str, Callable[[CallRecord], Any]]] = [
    ("event_id", _call("event_id")),
    ("work_unit_id", _call("work_unit_id")),
    ("occurred_at", lambda r: r.call.occurred_at),
    ("provider", _call("provider")),
    ("model", _call("model")),
    ("team", _call("team")),
    ("owner", _call("owner")),
    ("workflow", _call("workflow")),
    ("task_type", _call("task_type")),
    ("agent", lambda r: r.call.agent or ""),
    ("service", _call("service")),
    ("environment", _call("environment")),
    ("status", _call("status")),
    ("attempt", _call("attempt")),
    ("input_tokens", _call("input_tokens")),
    ("output_tokens", _call("output_tokens")),
    ("cached_input_tokens", _call("cached_input_tokens")),
    ("cache_write_tokens", _call("cache_write_tokens")),
    ("cache_write_1h_tokens", _call("cache_write_1h_tokens")),
    ("service_tier", lambda r: r.call.service_tier or ""),
    ("reasoning_tokens", _call("reasoning_tokens")),
    ("system_prompt_tokens", lambda r: r.call.system_prompt_tokens or 0),
    ("context_tokens", lambda r: r.call.context_tokens or 0),
    ("latency_ms", _call("latency_ms")),
    ("cost", _attr("cost")),
    ("computed_cost", _attr("computed_cost")),
    ("reported_cost", _call("reported_cost")),
    ("currency", _attr("currency")),
    ("reported_currency", lambda r: r.call.currency or ""),
    ("price_currency", _attr("price_currency")),
    ("price_book_version", lambda r: r.price_book_version),
    ("attributes", _call("attributes")),
    ("user", lambda r: r.call.user or ""),
    ("customer", lambda r: r.call.customer or ""),
    ("kafka_partition", lambda r: r.partition),
    ("kafka_offset", lambda r: r.offset),
]

OUTCOME_COLUMNS: list[tuple[str, Callable[[OutcomeRecord], Any]]] = [
    ("event_id", _outcome("event_id")),
    ("work_unit_id", _outcome("work_unit_id")),
    ("occurred_at", lambda r: r.outcome.occurred_at),
    ("team", _outcome("team")),
    ("workflow", _outcome("workflow")),
    ("status", lambda r: r.outcome.status or ""),
    ("accepted", lambda r: int(r.outcome.accepted)),
    ("value", lambda r: r.value),
    ("original_value", _outcome("value")),
    ("original_currency", lambda r: r.outcome.currency or ""),
    ("value_dimension", lambda r: r.outcome.value_dimension or ""),
    ("human_review_minutes", _outcome("human_review_minutes")),
    ("human_cost", lambda r: r.human_cost),
    ("quality_score", _outcome("quality_score")),
    ("baseline_cost", _outcome("baseline_cost")),
    ("evidence_confidence", _outcome("evidence_confidence")),
    ("is_final", lambda r: int(r.outcome.is_final)),
    ("verdict", lambda r: r.outcome.verdict or ""),
    ("value_at_risk", _attr("value_at_risk")),
    ("strategic_score", _outcome("strategic_score")),
    ("stage", lambda r: r.outcome.stage or ""),
    ("user", lambda r: r.outcome.user or ""),
    ("customer", lambda r: r.outcome.customer or ""),
    ("kafka_partition", lambda r: r.partition),
    ("kafka_offset", lambda r: r.offset),
]

COST_ITEM_COLUMNS: list[tuple[str, Callable[[CostRecord], Any]]] = [
    ("event_id", lambda r: r.item.event_id),
    ("work_unit_id", lambda r: r.item.work_unit_id or ""),
    ("shared", lambda r: int(r.item.is_shared)),
    ("occurred_at", lambda r: r.item.occurred_at),
    ("team", lambda r: r.item.team),
    ("workflow", lambda r: r.item.workflow),
    ("kind", lambda r: r.item.kind),
    ("amount", _attr("amount")),
    ("currency", _attr("currency")),
    ("original_amount", lambda r: r.item.cost),
    ("original_currency", lambda r: r.item.currency),
    ("quantity", lambda r: r.item.quantity),
    ("unit_price", lambda r: r.item.unit_price),
    ("description", lambda r: r.item.description),
    ("user", lambda r: r.item.user or ""),
    ("customer", lambda r: r.item.customer or ""),
    ("attributes", lambda r: r.item.attributes),
    ("kafka_partition", _attr("partition")),
    ("kafka_offset", _attr("offset")),
]

_ATTRIBUTION_FIELDS = [
    "attribution_id", "work_unit_id", "revision", "state", "team", "workflow", "owner",
    "task_type", "service", "environment", "agent", "models", "primary_model", "providers",
    "first_event_at", "last_event_at", "calls", "retries", "failed_calls", "input_tokens",
    "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens",
    "system_prompt_tokens", "context_tokens", "currency", "model_cost", "computed_cost",
    "reported_cost", "unpriced_calls", "human_review_minutes", "human_cost",
    "fully_loaded_cost", "outcomes", "value", "quality_score", "baseline_cost",
    "evidence_confidence", "cost_per_outcome", "yield_ratio", "net_value", "roi",
    "price_book_version", "user", "customer", "other_cost", "other_cost_by_kind", "cost_items",
    "max_latency_ms", "value_at_risk", "accepted_value", "strategic_score", "first_call_at",
    "decided_at", "cycle_seconds",
]
ATTRIBUTION_COLUMNS: list[tuple[str, Callable[[WorkUnitAttribution], Any]]] = [
    *((name, _attr(name)) for name in _ATTRIBUTION_FIELDS),
    ("version", attribution_version),
    ("outcome_status", lambda a: a.outcome_status or ""),
    ("accepted", lambda a: int(a.accepted)),
    ("is_final", lambda a: int(a.is_final)),
    ("value_dimension", lambda a: a.value_dimension or ""),
    ("quality_failed", lambda a: int(a.quality_failed)),
    ("latency_failed", lambda a: int(a.latency_failed)),
    ("integrity_failed", lambda a: int(a.integrity_failed)),
    ("verdict", lambda a: a.verdict or ""),
    ("stage", lambda a: a.stage or ""),
    ("kafka_partition", _attr("partition")),
]

_WINDOW_FIELDS = [
    "window_id", "window_start", "window_end", "window_seconds", "team", "workflow", "scope",
    "model", "agent", "correction", "system_prompt_tokens", "revision", "currency", "calls",
    "retries", "failed_calls", "input_tokens", "output_tokens", "cached_input_tokens",
    "cache_write_tokens", "reasoning_tokens", "overhead_tokens", "latency_ms_sum",
    "latency_calls", "spend", "unpriced_calls",
    "work_units", "outcomes", "decided_units", "accepted_outcomes", "value", "human_cost",
    "fully_loaded_cost", "linked_spend", "unlinked_spend", "cost_per_accepted_outcome",
    "acceptance_rate", "yield_ratio", "attribution_coverage", "retry_share", "context_share",
    "other_cost", "shared_cost", "cost_items", "quality_failed_units", "latency_failed_units",
    "integrity_failed_units", "accepted_value", "value_at_risk", "strategic_units",
    "strategic_score_sum", "strategic_confidence_sum", "strategic_confident_units",
    "error_adjusted_yield", "integrity_failure_rate", "dimension", "dimension_value",
    "attributed_spend", "unattributed_spend", "reviewed_outcomes", "verdicts",
    "units_without_outcome", "spend_without_outcome", "evidence_confidence_sum",
    "evidence_confident_units", "review_minutes",
]
WINDOW_COLUMNS: list[tuple[str, Callable[[CostPerOutcomeWindow], Any]]] = [
    *((name, _attr(name)) for name in _WINDOW_FIELDS),
    ("final", lambda w: int(w.final)),
    ("version", window_version),
]

ALERT_COLUMNS: list[tuple[str, Callable[[Alert], Any]]] = [
    (name, _attr(name)) for name in [
        "alert_id", "kind", "status", "severity", "subject", "observed", "expected",
        "threshold", "unit", "window_start", "window_end", "occurred_at", "message", "details",
    ]
]

DEAD_LETTER_COLUMNS: list[tuple[str, Callable[[DeadLetter], Any]]] = [
    ("dead_letter_id", _attr("dead_letter_id")),
    ("source_topic", _attr("source_topic")),
    ("kafka_partition", _attr("partition")),
    ("kafka_offset", _attr("offset")),
    ("item_index", _attr("index")),
    ("error_kind", _attr("error_kind")),
    ("reason", _attr("reason")),
    ("raw", _attr("raw")),
    ("raw_preview", _attr("raw_preview")),
    ("event_id", _attr("event_id")),
    ("work_unit_id", _attr("work_unit_id")),
    ("rejected_at", _attr("rejected_at")),
]

LATE_COLUMNS: list[tuple[str, Callable[[LateEvent], Any]]] = [
    ("late_id", _attr("late_id")),
    ("source_topic", _attr("source_topic")),
    ("kafka_partition", _attr("partition")),
    ("kafka_offset", _attr("offset")),
    ("event_kind", _attr("event_kind")),
    ("event_id", _attr("event_id")),
    ("work_unit_id", _attr("work_unit_id")),
    ("occurred_at", _attr("occurred_at")),
    ("watermark", _attr("watermark")),
    ("lateness_seconds", _attr("lateness_seconds")),
    ("event", _attr("event")),
]

PRICE_COLUMNS: list[tuple[str, Callable[[tuple[PriceEntry, str]], Any]]] = [
    ("price_key", lambda p: p[0].key),
    ("provider", lambda p: p[0].provider),
    ("model", lambda p: p[0].model or ""),
    ("model_pattern", lambda p: p[0].model_pattern or ""),
    ("effective_from", lambda p: p[0].effective_from),
    ("currency", lambda p: p[0].currency),
    ("input_per_mtok", lambda p: p[0].input_per_mtok),
    ("output_per_mtok", lambda p: p[0].output_per_mtok),
    ("cached_input_per_mtok", lambda p: p[0].cached_input_per_mtok),
    ("cache_write_per_mtok", lambda p: p[0].cache_write_per_mtok),
    ("reasoning_per_mtok", lambda p: p[0].reasoning_per_mtok),
    ("long_context", lambda p: orjson.dumps(
        [t.model_dump(mode="json") for t in p[0].long_context]).decode()),
    ("price_book_version", lambda p: p[1]),
    ("source", lambda p: p[0].source),
]

BUDGET_COLUMNS: list[tuple[str, Callable[[BudgetRow], Any]]] = [
    ("team", lambda b: b[0].team),
    ("workflow", lambda b: b[0].workflow),
    ("period", lambda b: b[0].period),
    ("amount", lambda b: b[0].amount),
    ("soft_share", lambda b: b[0].soft_share),
    ("dimension", lambda b: b[0].dimension),
    ("value", lambda b: b[0].value),
    ("updated_at", lambda b: b[1]),
    ("is_deleted", lambda b: b[2]),
]

WORKFLOW_COLUMNS: list[tuple[str, Callable[[WorkflowRow], Any]]] = [
    *((name, (lambda n: lambda w: getattr(w[0], n))(name)) for name in (
        "team", "workflow", "owner", "min_quality_score", "max_latency_ms",
        "baseline_minutes_per_unit", "baseline_rate_per_hour", "baseline_cost_per_unit",
        "target_cost_per_accepted_outcome", "expected_value_per_unit", "started_on")),
    ("success_statuses", lambda w: list(w[0].success_statuses)),
    ("updated_at", lambda w: w[1]),
    ("is_deleted", lambda w: w[2]),
]

#: The hot tables, written as Arrow columns built from the specs above (``arrow_rows``,
#: tests/test_arrow_rows.py); the others (few rows, bytes and JSON columns) through
#: clickhouse-connect.
ARROW_TABLES = frozenset({"model_calls", "outcomes", "attributions",
                          "cost_per_outcome_windows", "work_units_by_day"})


def _ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


FORECAST_COLUMNS: list[tuple[str, Callable[[tuple[SpendForecast, str]], Any]]] = [
    ("as_of", lambda f: _ms(f[0].projection.as_of_ms)),
    ("period_end", lambda f: _ms(f[0].projection.end_ms)),
    ("team", lambda f: f[0].subject.get("team", "")),
    ("workflow", lambda f: f[0].subject.get("workflow", "")),
    ("budget", lambda f: f[0].subject.get("budget", "")),
    ("subject", lambda f: dict(f[0].subject)),
    ("currency", lambda f: f[1]),
    ("spent", lambda f: f[0].projection.spent),
    ("expected", lambda f: f[0].projection.expected),
    ("low", lambda f: f[0].projection.low),
    ("high", lambda f: f[0].projection.high),
    ("method", lambda f: f[0].projection.method),
    ("history_days", lambda f: f[0].projection.history_days),
]

DAY_MS = 86_400_000
_EPOCH = date(1970, 1, 1)
UnitDay = tuple[PendingUnit, int, int]  # the unit, a day (days since 1970), is_deleted


def unit_days(units: Sequence[PendingUnit]) -> list[UnitDay]:
    """Each pending unit's row on the UTC day of its last event, and a tombstone on every
    earlier day since its first event: the rows migration 0012's materialized view
    writes for an attribution, so that a row left on a day the unit's last event has
    since left stops counting, whichever of them is read first."""
    rows: list[UnitDay] = []
    for unit in units:
        last_day = unit.last_ms // DAY_MS
        rows.extend((unit, day, 1) for day in range(unit.first_ms // DAY_MS, last_day))
        rows.append((unit, last_day, 0))
    return rows


UNIT_DAY_COLUMNS: list[tuple[str, Callable[[UnitDay], Any]]] = [
    ("day", lambda r: _EPOCH + timedelta(days=r[1])),
    ("work_unit_id", lambda r: r[0].unit_id),
    ("version", lambda r: r[0].version),
    ("is_deleted", lambda r: r[2]),
    ("state", lambda r: "pending"),
    ("team", lambda r: r[0].team),
    ("workflow", lambda r: r[0].workflow),
    ("agent", lambda r: r[0].agent),
    ("primary_model", lambda r: r[0].primary_model),
    ("first_event_at", lambda r: _ms(r[0].first_ms)),
    ("last_event_at", lambda r: _ms(r[0].last_ms)),
    ("calls", lambda r: r[0].calls),
    ("retries", lambda r: r[0].retries),
    ("unpriced_calls", lambda r: r[0].unpriced),
    ("currency", lambda r: r[0].currency),
    ("model_cost", lambda r: from_atto(r[0].cost_atto)),
    ("fully_loaded_cost", lambda r: from_atto(r[0].loaded_atto)),
]

#: Batch lists written as more rows than they hold.
EXPANDED: dict[str, Callable[[Sequence[Any]], list[Any]]] = {"pending_units": unit_days}

TABLES: list[tuple[str, str, list[tuple[str, Callable[[Any], Any]]]]] = [
    ("calls", "model_calls", CALL_COLUMNS),
    ("outcomes", "outcomes", OUTCOME_COLUMNS),
    ("cost_items", "cost_items", COST_ITEM_COLUMNS),
    ("attributions", "attributions", ATTRIBUTION_COLUMNS),
    ("windows", "cost_per_outcome_windows", WINDOW_COLUMNS),
    ("alerts", "alerts", ALERT_COLUMNS),
    ("dead_letters", "dead_letters", DEAD_LETTER_COLUMNS),
    ("late", "late_events", LATE_COLUMNS),
    ("prices", "prices", PRICE_COLUMNS),
    ("budgets", "budgets", BUDGET_COLUMNS),
    ("workflows", "workflows", WORKFLOW_COLUMNS),
    ("forecasts", "spend_forecasts", FORECAST_COLUMNS),
    ("pending_units", "work_units_by_day", UNIT_DAY_COLUMNS),
]


def merge_batches(batches: list[Outputs]) -> Outputs:
    """Batches as one: their rows, the union of their offset ranges and their tags; of
    each attribution only the latest revision, and of each pending unit only its latest
    row (the unit's state when the batch closed: the intermediate ones of a checkpoint
    are on the ``attributions`` topic, and ``attributions_latest`` and
    ``work_units_by_day`` would keep only the latest anyway)."""
    if len(batches) == 1:
        merged = batches[0]
    else:
        merged = Outputs()
        tags = []
        for batch in batches:
            merged.extend(batch)
            for key, (first, last) in batch.ranges.items():
                low, high = merged.ranges.get(key, (first, last))
                merged.ranges[key] = (min(low, first), max(high, last))
            if batch.tag:
                tags.append(batch.tag)
        merged.tag = "+".join(tags)
    merged.attributions = _latest(merged.attributions, lambda a: a.attribution_id,
                                  lambda a: a.revision)
    merged.pending_units = _latest(merged.pending_units, lambda u: u.unit_id,
                                   lambda u: u.version)
    return merged


def dedup_token(batch: Outputs, table: str, body: bytes) -> str:
    """The insert's deduplication token: what it covers (``Outputs.token``) and a digest
    of its encoded rows. An identical retry has the same token and is dropped; rows that
    differ, even for the same offsets or for none, are another insert."""
    return f"{batch.token(table)}|{hashlib.blake2b(body, digest_size=12).hexdigest()}"


def _latest(rows: list[R], identity: Callable[[R], str], rank: Callable[[R], int]) -> list[R]:
    """Of the rows of each identity, the one of the highest rank (of equal ranks, the
    later): the unit's state when the batch closed."""
    if len(rows) < 2:
        return rows
    kept: dict[str, R] = {}
    for row in rows:
        held = kept.get(identity(row))
        if held is None or rank(row) >= rank(held):
            kept[identity(row)] = row
    return rows if len(kept) == len(rows) else list(kept.values())


def is_storage_failure(exc: BaseException) -> bool:
    """True for a failure of ClickHouse or of the way to it, worth retrying: no
    connection, a time-out, a stream cut short, or the server (chdb's engine) refusing
    the insert (a full disk, memory, too many parts, a table missing until migrations
    run again). False for an error raised before anything reached ClickHouse: the
    driver rejecting our columns (``ProgrammingError``, ``DataError``...) or a plain
    Python error in our code; those fail the same way on every retry."""
    if isinstance(exc, StorageError | OperationalError | OSError):
        return True
    if isinstance(exc, ProgrammingError | DataError | NotSupportedError | InternalError
                  | InterfaceError):
        return False
    return isinstance(exc, DatabaseError)


class ClickHouseSink:
    """Writes batches to ClickHouse on its own thread, retrying until they land."""

    def __init__(
        self,
        client_factory: Callable[[], Client],
        database: str,
        *,
        retry_max_seconds: float = 30.0,
        reconnect_on_error: bool = True,
        on_error: Callable[[str, BaseException], None] | None = None,
        on_written: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self._factory = client_factory
        self._client: Client | None = None
        self.database = database
        self.retry_max_seconds = retry_max_seconds
        self.reconnect_on_error = reconnect_on_error
        self.on_error = on_error
        self.on_written = on_written
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._lock = threading.RLock()  # the sink thread, the relay, tools: one at a time
        self._stopping = False
        self.failures = 0
        self.rows_written = 0
        self.failing_since: float | None = None  # monotonic time of the first failure
        self.last_error = ""
        self.table = ""  # the table being written, for error messages
        self._queue: list[tuple[Outputs, asyncio.Future[None]]] = []
        self._drain: asyncio.Future[None] | None = None
        self.arrow = True  # False: every table through clickhouse-connect (tests compare)
        self._bodies: ArrowBodies | None = None  # column types read once, on first insert

    def client(self) -> Client:
        """The sink's client (opened on first use, by one thread only)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._factory()
        return self._client

    async def call(self, fn: Callable[[Client], Any]) -> Any:
        """Run ``fn(client)`` on the sink thread (chdb is not thread-safe)."""
        return await self._on_thread(lambda: self.run_locked(fn))

    async def _on_thread(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def run_locked(self, fn: Callable[[Client], Any]) -> Any:
        """Run ``fn(client)`` on the calling thread, one at a time with every other use of
        the client (the group's relay runs the other workers' inserts this way)."""
        with self._lock:
            return fn(self.client())

    async def write(self, batch: Outputs) -> None:
        """Insert every table's rows of ``batch``; retries storage failures until success
        or ``stop``; raises ``SinkError`` for anything else (see the module's notes).
        Batches written while an insert runs go together in the next one."""
        if not len(batch):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((batch, future))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.ensure_future(self._drain_queue())
        await future

    async def _drain_queue(self) -> None:
        while self._queue:
            taken, self._queue = self._queue, []
            try:
                await self._write_now(merge_batches([batch for batch, _ in taken]))
            except BaseException as exc:
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                for _, future in taken:
                    if not future.done():
                        future.set_result(None)

    async def _write_now(self, batch: Outputs) -> None:
        delay = 0.2
        while True:
            try:
                # Not under the lock as a whole: _insert_all takes it for each insert.
                await self._on_thread(lambda: self._insert_all(self.client(), batch))
                self.failing_since = None
                return
            except Exception as exc:
                self.failures += 1
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                if self.on_error is not None:
                    self.on_error("insert", exc)
                if not is_storage_failure(exc):
                    raise SinkError(
                        f"writing {self.table} failed with {type(exc).__name__}: "
                        f"{str(exc)[:300]}. This is a fault in tokenyield, not in ClickHouse, "
                        f"and retrying cannot fix it: the worker stops. Nothing was "
                        f"acknowledged, so a fixed worker processes the same input again.",
                        table=self.table, cause=type(exc).__name__) from exc
                if self._stopping:
                    raise
                log.warning("ClickHouse insert failed (%s); retrying in %.1fs",
                            type(exc).__name__, delay)
                if self.reconnect_on_error:
                    self._client = None  # a server client may be broken; chdb's is not
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)

    def _insert_all(self, client: Client, batch: Outputs) -> None:
        # The bodies are built without the lock, which guards only the client's calls: the
        # group's relay (streams.clickhouse.relay_server) inserts the other workers'
        # bodies meanwhile, instead of waiting for this worker's Python column building.
        for attribute, table, spec in TABLES:
            rows = getattr(batch, attribute)
            if not rows:
                continue
            if attribute in EXPANDED:
                rows = EXPANDED[attribute](rows)
            started = time.perf_counter()
            self.table = table
            built = (self._arrow(client).body(table, spec, rows)
                     if self.arrow and table in ARROW_TABLES else None)
            if built is not None:
                names, body = built
                settings = {"insert_deduplication_token": dedup_token(batch, table, body)}
                with self._lock:
                    client.raw_insert(f"{self.database}.{table}", names, body,
                                      settings=settings, fmt="ArrowStream")
            else:
                names, data = _columns(rows, spec)
                settings = {"insert_deduplication_token": dedup_token(
                    batch, table, orjson.dumps(data, default=str))}
                with self._lock:
                    client.insert(f"{self.database}.{table}", data, column_names=names,
                                  column_oriented=True, settings=settings)
            self.rows_written += len(rows)
            if self.on_written is not None:
                self.on_written(table, len(rows), time.perf_counter() - started)

    def _arrow(self, client: Client) -> ArrowBodies:
        if self._bodies is None:
            described: dict[str, dict[str, str]] = {}

            def describe(table: str) -> dict[str, str]:
                if not described:  # every table's columns in one query (one relay trip)
                    with self._lock:
                        rows = client.query(
                            "SELECT table, name, type FROM system.columns "
                            "WHERE database = {d:String}", parameters={"d": self.database})
                    for owner, name, kind in rows.result_rows:
                        described.setdefault(owner, {})[name] = kind
                return described.get(table, {})
            self._bodies = ArrowBodies(describe)
        return self._bodies

    def query(self, sql: str, parameters: dict[str, Any] | None = None,
              settings: dict[str, Any] | None = None) -> Any:
        """Run a query synchronously on the caller's thread (tools, tests)."""
        return self.client().query(sql, parameters=parameters, settings=settings)

    def stop(self) -> None:
        self._stopping = True
        self._executor.shutdown(wait=True)
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

