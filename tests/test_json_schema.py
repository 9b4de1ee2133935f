"""The exported JSON Schema files match the models and validate real events."""

from __future__ import annotations

import json

import jsonschema
import orjson
import pytest
from referencing import Registry, Resource

from schemas.json_schema import SCHEMA_DIR, all_schemas, render
from tests.test_events import call, outcome


def test_the_committed_schema_files_are_current() -> None:
    for name, schema in all_schemas().items():
        path = SCHEMA_DIR / f"{name}.schema.json"
        assert path.exists(), f"run `tokenyield schemas export` ({path} is missing)"
        assert path.read_bytes() == render(schema), \
            f"{path.name} is stale: run `tokenyield schemas export`"


def validator(name: str) -> jsonschema.Draft202012Validator:
    resources = []
    for path in SCHEMA_DIR.glob("*.schema.json"):
        schema = json.loads(path.read_text())
        resources.append((path.name, Resource.from_contents(schema)))
        resources.append((schema["$id"], Resource.from_contents(schema)))
    registry = Registry().with_resources(resources)
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, registry=registry)


@pytest.mark.parametrize(("name", "good", "bad"), [
    ("model_call", call(future="ignored"), call(input_tokens=-1)),
    ("outcome", outcome(), outcome(status="done")),
    ("envelope", [call(), call(event_id="b")], [call(model=7)]),
    ("envelope", {"envelope": "tokenyield/1", "events": [outcome()]}, {"events": "x"}),
])
def test_schemas_accept_good_events_and_reject_bad_ones(name: str, good: object,
                                                       bad: object) -> None:
    checker = validator(name)
    assert list(checker.iter_errors(orjson.loads(orjson.dumps(good)))) == []
    assert list(checker.iter_errors(bad)) != []
