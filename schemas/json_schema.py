"""JSON Schema files of the contract, for publishers that are not written in Python.

``tokenyield schemas export`` (re)writes them to ``schemas/json/``; a test fails when
the committed files drift from the models. Unknown properties are allowed on input
events (``additionalProperties: true``): the engine ignores them, which is what lets a
newer publisher talk to an older engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from schemas.events import CONTRACT_VERSION, CostItem, ModelCall, Outcome
from schemas.outputs import Alert, CostPerOutcomeWindow, DeadLetter, LateEvent, WorkUnitAttribution
from schemas.pricing import PriceCatalog, PriceEntry

SCHEMA_DIR = Path(__file__).parent / "json"
BASE_ID = "https://tokenyield.dev/schemas"

INPUTS: dict[str, type[BaseModel]] = {"model_call": ModelCall, "outcome": Outcome,
                                      "cost_item": CostItem}
OUTPUTS: dict[str, type[BaseModel]] = {
    "work_unit_attribution": WorkUnitAttribution,
    "cost_per_outcome_window": CostPerOutcomeWindow,
    "alert": Alert,
    "dead_letter": DeadLetter,
    "late_event": LateEvent,
    "price_entry": PriceEntry,
    "price_catalog": PriceCatalog,
}


def schema_for(name: str, model: type[BaseModel], *, is_input: bool) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation" if is_input else "serialization")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{BASE_ID}/v{CONTRACT_VERSION}/{name}.schema.json",
        **schema,
    }
    if is_input:
        schema["additionalProperties"] = True
        schema["description"] = (
            (schema.get("description") or "").strip()
            + "\n\nUnknown properties are accepted and ignored (forward compatibility)."
        ).strip()
    return schema


def envelope_schema() -> dict[str, Any]:
    refs = [{"$ref": f"{name}.schema.json"} for name in INPUTS]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{BASE_ID}/v{CONTRACT_VERSION}/envelope.schema.json",
        "title": "Envelope",
        "description": "A Kafka message value: one event, a JSON array of events, or an "
                       "envelope object. All events of one message go to the same topic.",
        "oneOf": [
            {"anyOf": refs},
            {"type": "array", "items": {"anyOf": refs}},
            {
                "type": "object",
                "properties": {
                    "envelope": {"const": "tokenyield/1"},
                    "events": {"type": "array", "items": {"anyOf": refs}},
                },
                "required": ["events"],
            },
        ],
    }


def all_schemas() -> dict[str, dict[str, Any]]:
    schemas = {name: schema_for(name, model, is_input=True) for name, model in INPUTS.items()}
    schemas.update(
        {name: schema_for(name, model, is_input=False) for name, model in OUTPUTS.items()})
    schemas["envelope"] = envelope_schema()
    return schemas


def render(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_bytes(render(schema))
        written.append(path)
    return written
