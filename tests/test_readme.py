"""The README's examples are real: its events validate, its commands exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import orjson
import pytest

from schemas.codec import call_codec, cost_codec, outcome_codec
from streams.cli import build_parser

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def json_blocks() -> list[dict[str, object]]:
    return [orjson.loads(block) for block in re.findall(r"```json\n(.*?)```", README, re.S)]


def test_the_example_call_and_outcome_are_valid_and_belong_together() -> None:
    call, outcome, *_ = json_blocks()
    decoded_call = call_codec.decode(orjson.dumps(call))
    decoded_outcome = outcome_codec.decode(orjson.dumps(outcome))
    assert not decoded_call.errors and not decoded_outcome.errors
    assert decoded_call.events[0].work_unit_id == decoded_outcome.events[0].work_unit_id
    assert decoded_call.events[0].cached_input_tokens <= decoded_call.events[0].input_tokens


def test_the_example_cost_items_and_verdict_are_valid() -> None:
    _, outcome, item, shared, verdict = json_blocks()
    items = cost_codec.decode(orjson.dumps([item, shared]))
    assert not items.errors
    unit_item, shared_item = items.events
    assert unit_item.work_unit_id == outcome["work_unit_id"] and not unit_item.is_shared
    assert unit_item.cost == 3 * unit_item.unit_price  # quantity x unit price, exact
    assert shared_item.is_shared and shared_item.key.startswith("~shared:support:triage:")
    decoded = outcome_codec.decode(orjson.dumps(verdict))
    assert not decoded.errors and decoded.events[0].is_verdict
    assert decoded.events[0].work_unit_id == outcome["work_unit_id"]


def test_the_kcat_example_sends_a_valid_call_keyed_by_its_unit() -> None:
    line = re.search(r"echo '([^|]+)\|(\{.*?\})'", README)
    assert line is not None
    key, value = line.group(1), line.group(2)
    decoded = call_codec.decode(value.encode())
    assert not decoded.errors and decoded.events[0].work_unit_id == key
    assert "partitioner=murmur2_random" in README


COMMANDS = sorted(set(re.findall(r"^\| `tokenyield ([a-z-]+(?: [a-z-]+)?)", README, re.M)))
GROUPS = ("prices", "db", "schemas", "export")  # commands with actions: "prices quote"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_in_the_table_exists(command: str) -> None:
    words = shlex.split(command)
    words = words[:2] if words[0] in GROUPS else words[:1]
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*words, "--help"])
    assert exit_info.value.code == 0
