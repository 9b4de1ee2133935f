"""Events sent over HTTP (``POST /v1/events``) to validated events and Kafka batches.

Pure: bytes in, per-event results and the messages to produce out; the worker's web
view (``streams/ops/ingest.py``) does the I/O.

A body is one of:

- a JSON array of events;
- NDJSON (one event per line; blank lines are skipped);
- one JSON object: an event, or an envelope ``{"events": [...]}`` as on Kafka.

Each event is a model call, an outcome or a cost item (``KINDS``): its ``kind`` field
says which when it names one (``model_call``, ``outcome``, ``cost_item``), else its
shape does, as ``tokenyield publish`` decides: a ``model`` or ``gen_ai.*`` key makes a
call, an ``amount`` or ``unit_price`` (or a ``kind`` that is a cost item's kind, such
as ``tool_call``: a cost item's own ``kind`` field) a cost item, anything else an
outcome; any other ``kind`` value is rejected, not guessed. It is validated against the contract
exactly as the engine does (OpenTelemetry GenAI names accepted; money exact), and
either accepted, to be produced, or rejected with the reason: one bad event never
stops its neighbours, and the answer lists every event with what became of it.

Accepted events are grouped as the publisher groups them (``plan_batches``): by topic
and by the partition ``murmur2`` of their key picks (the work unit; for a shared cost
item, the bucket of its team, workflow and day, ``CostItem.key``), in JSON-array envelopes of at
most ``max_events`` events and about ``max_bytes`` bytes, in the order they came.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.codec import _LONG_NUMBER, ENVELOPE_VERSION, _exact_loads, explain
from schemas.events import COST_KINDS, CostItem, ModelCall, Outcome
from schemas.otel import from_otel, looks_like_otel
from schemas.partitioner import partition_for

MAX_EVENTS_PER_REQUEST = 20_000
Result = Literal["accepted", "rejected", "ignored", "failed"]


@dataclass(frozen=True, slots=True)
class EventKind:
    """One kind of event: its name (the ``kind`` field), the topic it goes to (after the
    prefix), its contract, how to recognise it when ``kind`` is absent, and its Kafka
    key (as the publisher keys it)."""

    name: str
    topic: str
    model: type[BaseModel]
    looks_like: Callable[[dict[str, Any]], bool]
    key: Callable[[Any], str] = lambda event: event.work_unit_id
    adapter: TypeAdapter[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapter", TypeAdapter(self.model))

    def encode(self, event: BaseModel) -> bytes:
        """As the codec encodes it (``None`` fields left out)."""
        return self.adapter.dump_json(event, exclude_none=True)


def _call_shaped(item: dict[str, Any]) -> bool:
    return "model" in item or any(isinstance(k, str) and k.startswith("gen_ai.") for k in item)


def _cost_shaped(item: dict[str, Any]) -> bool:
    return "amount" in item or "unit_price" in item or item.get("kind") in COST_KINDS


#: Every kind an event may be, tried in order when its ``kind`` names none: the last
#: one takes what no other claims.
KINDS: tuple[EventKind, ...] = (
    EventKind("model_call", "calls", ModelCall, _call_shaped),
    EventKind("cost_item", "costs", CostItem, _cost_shaped, key=lambda item: item.key),
    EventKind("outcome", "outcomes", Outcome, lambda item: True),
)
KIND_NAMES = tuple(kind.name for kind in KINDS)


def kind_named(name: str) -> EventKind:
    return next(k for k in KINDS if k.name == name)


def route_call(index: int, call: ModelCall) -> Routed:
    """A call decoded elsewhere (an OTLP span), bound for ``calls`` by its unit."""
    kind = kind_named("model_call")
    return Routed(index, kind.topic, call.work_unit_id, kind.encode(call))


def kind_of(item: dict[str, Any]) -> EventKind | None:
    """The event's kind: its ``kind`` field when it names one, else its shape; ``None``
    for a ``kind`` value that is neither an event's nor a cost item's (an error, not a
    guess)."""
    named = item.get("kind")
    chosen = next((k for k in KINDS if k.name == named), None)
    if chosen is not None:
        return chosen
    shaped = next(k for k in KINDS if k.looks_like(item))
    if named is not None and shaped.name != "cost_item":
        return None
    return shaped


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What became of one event of a request (``index`` counts events from 0; ``line``
    is the NDJSON line, from 1)."""

    index: int
    result: Result
    kind: str | None = None
    event_id: str | None = None
    work_unit_id: str | None = None
    reason: str | None = None
    line: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in (
            ("index", self.index), ("line", self.line), ("result", self.result),
            ("kind", self.kind), ("event_id", self.event_id),
            ("work_unit_id", self.work_unit_id), ("reason", self.reason)) if v is not None}


@dataclass(frozen=True, slots=True)
class Routed:
    """An accepted event, encoded, bound for ``topic`` (after the prefix) by its key
    (its work unit; a shared cost item's bucket)."""

    index: int
    topic: str
    work_unit_id: str  # the Kafka key
    value: bytes


@dataclass(slots=True)
class Decoded:
    """Every event of a request: its result, and for the accepted ones what to send."""

    results: list[ItemResult] = field(default_factory=list)
    routed: list[Routed] = field(default_factory=list)


class BodyError(ValueError):
    """The body as a whole is unusable (empty, a broken array, too many events); the
    request is answered 400 (413 for too many) with this reason."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def decode_events(data: bytes) -> Decoded:
    """Validate every event of a request body; raises ``BodyError`` only for a body
    that holds no events to judge one by one."""
    decoded = Decoded()
    for index, (line, item) in enumerate(_items(data)):
        result, routed = judge(index, item, line)
        decoded.results.append(result)
        if routed is not None:
            decoded.routed.append(routed)
    return decoded


def judge(index: int, item: Any, line: int | None = None) -> tuple[ItemResult, Routed | None]:
    """One event: accepted (with its message) or rejected (with the reason)."""
    if isinstance(item, _NotJson):
        return ItemResult(index, "rejected", reason=f"not JSON: {item.reason}", line=line), None
    if not isinstance(item, dict):
        return ItemResult(index, "rejected", line=line,
                          reason=f"expected a JSON object, got {type(item).__name__}"), None
    kind = kind_of(item)
    if kind is None:
        return ItemResult(index, "rejected", line=line, event_id=_text(item.get("event_id")),
                          reason=f"kind {item.get('kind')!r} is not one of "
                                 f"{', '.join(KIND_NAMES)} (nor a cost item's: "
                                 f"{', '.join(COST_KINDS)})"), None
    candidate = from_otel(item) if looks_like_otel(item) else item
    try:
        event = kind.adapter.validate_python(candidate)
    except ValidationError as exc:
        return ItemResult(index, "rejected", kind.name, _text(candidate.get("event_id")),
                          _text(candidate.get("work_unit_id")), explain(exc), line), None
    return (ItemResult(index, "accepted", kind.name, event.event_id, event.work_unit_id,
                       line=line),
            Routed(index, kind.topic, kind.key(event), kind.encode(event)))


@dataclass(frozen=True, slots=True)
class _NotJson:
    reason: str


def _loads(data: bytes) -> Any:
    # Money sent as a long JSON number is read exactly, as the Kafka codec reads it.
    return _exact_loads(data) if _LONG_NUMBER.search(data) else orjson.loads(data)


def _items(data: bytes) -> list[tuple[int | None, Any]]:
    """The body's events, each with its NDJSON line (``None`` outside NDJSON)."""
    text = data.strip()
    if not text:
        raise BodyError("empty body: send a JSON array or NDJSON of events")
    items: list[tuple[int | None, Any]]
    try:
        whole = _loads(text)
    except (orjson.JSONDecodeError, ValueError, RecursionError) as exc:
        if text[:1] == b"[":
            raise BodyError(f"the body starts a JSON array but is not one: {exc}") from exc
        items = _ndjson(text)
    else:
        if isinstance(whole, list):
            items = [(None, item) for item in whole]
        elif isinstance(whole, dict) and "events" in whole and "event_id" not in whole:
            items = _envelope(whole)
        else:
            items = [(None, whole)]
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise BodyError(f"{len(items)} events in one request, over the limit of "
                        f"{MAX_EVENTS_PER_REQUEST}", status=413)
    return items


def _envelope(document: dict[str, Any]) -> list[tuple[int | None, Any]]:
    events = document["events"]
    if not isinstance(events, list):
        raise BodyError("envelope 'events' must be a JSON array")
    version = document.get("envelope", ENVELOPE_VERSION)
    if version != ENVELOPE_VERSION:
        raise BodyError(f"unsupported envelope {version!r}; expected {ENVELOPE_VERSION!r}")
    return [(None, item) for item in events]


def _ndjson(text: bytes) -> list[tuple[int | None, Any]]:
    items: list[tuple[int | None, Any]] = []
    for number, raw in enumerate(text.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            items.append((number, _loads(raw)))
        except (orjson.JSONDecodeError, ValueError, RecursionError) as exc:
            items.append((number, _NotJson(str(exc))))
    return items


def _text(value: Any) -> str | None:
    return value[:256] if isinstance(value, str) else None


# -- batches, as the publisher makes them --------------------------------------------------


@dataclass(slots=True)
class Batch:
    """One Kafka message: a JSON array of events of one topic partition."""

    topic: str
    partition: int
    value: bytes
    indexes: list[int]


def plan_batches(routed: Iterable[Routed], partitions: int, *, max_events: int = 500,
                 max_bytes: int = 512 * 1024) -> list[Batch]:
    """Group events by topic and by the partition of their work unit (Kafka's murmur2,
    as ``schemas.kafka_publisher`` does), in order; a group is cut at ``max_events``
    events or once it reaches ``max_bytes``."""
    open_groups: dict[tuple[str, int], tuple[list[bytes], list[int], int]] = {}
    batches: list[Batch] = []

    def close(key: tuple[str, int]) -> None:
        values, indexes, _ = open_groups.pop(key)
        batches.append(Batch(key[0], key[1], b"[" + b",".join(values) + b"]", indexes))

    for event in routed:
        key = (event.topic, partition_for(event.work_unit_id, partitions))
        values, indexes, size = open_groups.setdefault(key, ([], [], 0))
        values.append(event.value)
        indexes.append(event.index)
        size += len(event.value) + 1
        open_groups[key] = (values, indexes, size)
        if len(values) >= max_events or size >= max_bytes:
            close(key)
    for key in list(open_groups):
        close(key)
    return batches


__all__ = [
    "KINDS",
    "KIND_NAMES",
    "MAX_EVENTS_PER_REQUEST",
    "Batch",
    "BodyError",
    "Decoded",
    "EventKind",
    "ItemResult",
    "Routed",
    "decode_events",
    "judge",
    "kind_named",
    "kind_of",
    "plan_batches",
    "route_call",
]
