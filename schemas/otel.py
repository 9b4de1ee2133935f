"""OpenTelemetry GenAI attribute names mapped onto the ``ModelCall`` contract.

A publisher that already emits OTel GenAI span attributes can send them as they are:
a flat JSON object with ``gen_ai.*`` keys (or a span-like object whose ``attributes``
hold them). tokenyield's own fields may appear bare (``team``) or prefixed
(``tokenyield.team``). ``gen_ai.response.model`` (the model that answered) wins over
``gen_ai.request.model``.
"""

from __future__ import annotations

from typing import Any

# OTel semantic conventions for GenAI (Development status), v1.37+ names, plus the
# older aliases still emitted by common instrumentations.
OTEL_FIELDS: dict[str, str] = {
    "gen_ai.provider.name": "provider",
    "gen_ai.system": "provider",
    "gen_ai.usage.input_tokens": "input_tokens",
    "gen_ai.usage.prompt_tokens": "input_tokens",
    "gen_ai.usage.output_tokens": "output_tokens",
    "gen_ai.usage.completion_tokens": "output_tokens",
    "gen_ai.usage.cache_read.input_tokens": "cached_input_tokens",
    "gen_ai.usage.cache_creation.input_tokens": "cache_write_tokens",
    "gen_ai.usage.reasoning.output_tokens": "reasoning_tokens",
    # Spellings from before the dotted names, still emitted: the Anthropic API's own
    # (OpenLLMetry's semconv-ai before 0.5) and OpenLLMetry's reasoning count.
    "gen_ai.usage.cache_read_input_tokens": "cached_input_tokens",
    "gen_ai.usage.cache_creation_input_tokens": "cache_write_tokens",
    "gen_ai.usage.reasoning_tokens": "reasoning_tokens",
    # The tier OpenAI served the call on (default, flex, priority, scale): it sets the
    # price. The current name first, then the gen_ai.-prefixed one of older conventions.
    "openai.response.service_tier": "service_tier",
    "gen_ai.openai.response.service_tier": "service_tier",
    "gen_ai.agent.name": "agent",
    "gen_ai.operation.name": "task_type",
    "gen_ai.conversation.id": "work_unit_id",
    # Who the call served: OTel's general user attribute (``enduser.id`` before it);
    # a customer has no convention, so it comes as ``tokenyield.customer``.
    "user.id": "user",
    "enduser.id": "user",
    "service.name": "service",
    "deployment.environment.name": "environment",
    "deployment.environment": "environment",
    "span_id": "event_id",
    "start_time": "occurred_at",
}
#: Model names, the one that answered first.
MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model")
#: Prefix of tokenyield's own fields among OTel attributes (``tokenyield.team``).
NATIVE_PREFIX = "tokenyield."


def looks_like_otel(item: Any) -> bool:
    """True when ``item`` uses GenAI attribute names: at the top level, or in a span's
    ``attributes`` when there is no native ``model`` field (a native event may well
    carry ``gen_ai.*`` keys in its own string map of attributes)."""
    if not isinstance(item, dict):
        return False
    if any(isinstance(k, str) and k.startswith("gen_ai.") for k in item):
        return True
    attributes = item.get("attributes")
    return "model" not in item and isinstance(attributes, dict) and any(
        isinstance(k, str) and k.startswith("gen_ai.") for k in attributes)


def from_otel(item: dict[str, Any]) -> dict[str, Any]:
    """Rename OTel GenAI keys to ``ModelCall`` fields; explicit native fields win."""
    flat: dict[str, Any] = {}
    attributes = item.get("attributes")
    if isinstance(attributes, dict):
        flat.update(attributes)
    flat.update({k: v for k, v in item.items() if k != "attributes"})

    native: dict[str, Any] = {}
    mapped: dict[str, Any] = {}
    for key, value in flat.items():
        if key in OTEL_FIELDS:
            mapped.setdefault(OTEL_FIELDS[key], value)
        elif key.startswith(NATIVE_PREFIX):
            native[key[len(NATIVE_PREFIX) :]] = value
        elif not key.startswith("gen_ai."):
            native[key] = value
    for key in MODEL_KEYS:
        if flat.get(key) is not None:
            mapped["model"] = flat[key]
            break
    if "error.type" in flat and "status" not in native:
        mapped["status"] = "timeout" if str(flat["error.type"]) == "timeout" else "error"
    return {**mapped, **native}
