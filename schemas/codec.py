"""Bytes to events and back, with orjson. Errors are data, not exceptions.

A Kafka message value may hold:
- one event: ``{"event_id": ..., ...}``;
- a batch as a JSON array: ``[{...}, {...}]``;
- a batch envelope object: ``{"envelope": "tokenyield/1", "events": [{...}, ...]}``
  (``envelope`` is optional; other envelope keys are ignored);
- any of the above with OpenTelemetry GenAI attribute names (see ``otel.py``).

One bad event in a batch is reported with its index and reason; the good ones are kept.
A message that is not JSON at all (or not UTF-8, or nested too deep) is one error with
index ``None``.

Speed: a well-formed message is validated in one msgspec pass (``fast_codec``, which
only ever accepts what pydantic accepts, with equal values); a message it does not
vouch for is validated in one pass in pydantic's Rust core, and only a batch that fails
there falls back to validating item by item to find the bad ones, with pydantic's
messages.

Exact numbers: both fast parsers read a JSON number with a fraction as a binary float,
which keeps about 15 significant digits. A message holding a longer number literal
(money such as ``0.12345678901234567891``) is parsed with the standard library's exact
decimals instead, so money sent as a JSON number is exactly what was written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.events import CostItem, ModelCall, Outcome
from schemas.fast_codec import (
    CallFields,
    FastDecoder,
    OutcomeFields,
    _CallEnvelope,
    _OutcomeEnvelope,
    calls_from,
    outcomes_from,
)
from schemas.otel import from_otel, looks_like_otel

ENVELOPE_VERSION = "tokenyield/1"
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_EVENTS_PER_MESSAGE = 20_000

E = TypeVar("E", bound=BaseModel)

# A number literal with 16 or more digits (and points), or with an exponent: a binary
# float may not hold it exactly. (Also matches inside strings: harmless, just slower.)
_LONG_NUMBER = re.compile(rb"[0-9][0-9.]{15,}|[0-9][eE][-+]?[0-9]")


def _exact_loads(data: bytes) -> Any:
    """JSON with every fractional number as an exact Decimal.

    A number whose exponent no Decimal can hold (``1e40046744073709551616``) is valid
    JSON but no amount: it raises ``ValueError``, as any other unreadable body does, so
    the callers reject the message with the reason instead of crashing the worker."""
    try:
        return json.loads(data, parse_float=Decimal)
    except InvalidOperation:
        raise ValueError("a number's exponent is out of range") from None


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Why one item (``index``) of a message, or the whole message (``None``), was rejected."""

    index: int | None
    kind: str
    reason: str
    raw: bytes
    event_id: str | None = None
    work_unit_id: str | None = None


@dataclass(slots=True)
class Decoded(Generic[E]):
    """The events that passed (with their position in the message) and the ones that did not."""

    events: list[E] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    errors: list[DecodeError] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.events) + len(self.errors)


def explain(error: ValidationError) -> str:
    """A one-line, field-by-field account of a validation failure."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        location = ".".join(str(p) for p in item["loc"]) or "event"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    return "; ".join(parts)


class EventCodec(Generic[E]):
    """Decoder and encoder for one event type (one topic)."""

    def __init__(self, model: type[E], fast: FastDecoder | None = None) -> None:
        self.model = model
        self.fast = fast
        self._one = TypeAdapter(model)
        self._many = TypeAdapter(list[model])  # type: ignore[valid-type]

    # -- decoding -----------------------------------------------------------------
    def decode(self, data: bytes) -> Decoded[E]:
        """Decode one Kafka message value; never raises on bad data."""
        result: Decoded[E] = Decoded()
        if len(data) > MAX_MESSAGE_BYTES:
            result.errors.append(
                DecodeError(None, "size_limit", f"message is {len(data)} bytes, over the "
                            f"{MAX_MESSAGE_BYTES}-byte limit", data[:4096])
            )
            return result
        if self.fast is not None:
            events = self.fast.decode(data)
            if events is not None:
                result.events = events
                result.indexes = list(range(len(events)))
                return result
        return self.decode_slow(data, result)

    def decode_slow(self, data: bytes, result: Decoded[E] | None = None) -> Decoded[E]:
        """The authoritative path (pydantic): every error with its index and message."""
        result = Decoded() if result is None else result
        exact = _LONG_NUMBER.search(data) is not None
        first = data.lstrip()[:1]
        if not exact and first == b"[" and self._fast_batch(data, result):
            return result
        try:
            parsed = _exact_loads(data) if exact else orjson.loads(data)
        except (orjson.JSONDecodeError, ValueError, RecursionError) as exc:
            result.errors.append(DecodeError(None, "malformed_json", f"not JSON: {exc}", data))
            return result
        items, whole = self._items(parsed)
        if items is None:
            result.errors.append(DecodeError(None, "invalid_envelope", whole, data))
            return result
        if len(items) > MAX_EVENTS_PER_MESSAGE:
            result.errors.append(
                DecodeError(None, "size_limit", f"{len(items)} events in one message, over "
                            f"the limit of {MAX_EVENTS_PER_MESSAGE}", data[:4096])
            )
            return result
        for index, item in enumerate(items):
            self._decode_item(index, item, result)
        return result

    def _fast_batch(self, data: bytes, result: Decoded[E]) -> bool:
        try:
            events = self._many.validate_json(data)
        except ValidationError:
            return False
        if len(events) > MAX_EVENTS_PER_MESSAGE:
            return False
        result.events.extend(events)
        result.indexes.extend(range(len(events)))
        return True

    @staticmethod
    def _items(parsed: Any) -> tuple[list[Any] | None, str]:
        if isinstance(parsed, list):
            return parsed, ""
        if isinstance(parsed, dict):
            if "events" in parsed and "event_id" not in parsed:
                events = parsed["events"]
                if not isinstance(events, list):
                    return None, "envelope 'events' must be a JSON array"
                version = parsed.get("envelope", ENVELOPE_VERSION)
                if version != ENVELOPE_VERSION:
                    return None, f"unsupported envelope {version!r}; expected {ENVELOPE_VERSION!r}"
                return events, ""
            return [parsed], ""
        return None, f"expected a JSON object or array, got {type(parsed).__name__}"

    def _decode_item(self, index: int, item: Any, result: Decoded[E]) -> None:
        if not isinstance(item, dict):
            result.errors.append(
                DecodeError(index, "invalid_event", f"expected a JSON object, got "
                            f"{type(item).__name__}", _dump(item))
            )
            return
        candidate = from_otel(item) if looks_like_otel(item) else item
        try:
            event = self._one.validate_python(candidate)
        except ValidationError as exc:
            result.errors.append(
                DecodeError(index, "invalid_event", explain(exc), _dump(item),
                            _text(candidate.get("event_id")), _text(candidate.get("work_unit_id")))
            )
            return
        result.events.append(event)
        result.indexes.append(index)

    # -- encoding -----------------------------------------------------------------
    def encode(self, event: E) -> bytes:
        return self._one.dump_json(event, exclude_none=True)

    def encode_batch(self, events: list[E]) -> bytes:
        return self._many.dump_json(events, exclude_none=True)


def _dump(item: Any) -> bytes:
    try:
        return orjson.dumps(item, default=_exact_default)
    except TypeError:
        return repr(item).encode(errors="replace")


def _exact_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())  # the number as written
    raise TypeError


def _text(value: Any) -> str | None:
    return value[:256] if isinstance(value, str) else None


call_codec: EventCodec[ModelCall] = EventCodec(ModelCall, FastDecoder(
    CallFields, _CallEnvelope, calls_from, MAX_EVENTS_PER_MESSAGE, ENVELOPE_VERSION))
outcome_codec: EventCodec[Outcome] = EventCodec(Outcome, FastDecoder(
    OutcomeFields, _OutcomeEnvelope, outcomes_from, MAX_EVENTS_PER_MESSAGE, ENVELOPE_VERSION))
# Cost items are rare next to calls (a few per unit at most), so they keep the pydantic path.
cost_codec: EventCodec[CostItem] = EventCodec(CostItem)
#: The codec of each input topic's events, by kind (the topic's name after the prefix).
CODECS: dict[str, EventCodec[Any]] = {"calls": call_codec, "outcomes": outcome_codec,
                                      "costs": cost_codec}


def codec_of(event: BaseModel) -> EventCodec[Any]:
    """The codec of an event's kind."""
    if isinstance(event, ModelCall):
        return call_codec
    return outcome_codec if isinstance(event, Outcome) else cost_codec


def encoded_models(models: Iterable[Any]) -> Iterator[bytes]:
    """Each output model (attributions, windows, alerts...) as its JSON object."""
    return (m.__pydantic_serializer__.to_json(m) for m in models)


def encode_models(models: Iterable[Any]) -> bytes:
    """Encode output models as one JSON array."""
    return b"[" + b",".join(encoded_models(models)) + b"]"
