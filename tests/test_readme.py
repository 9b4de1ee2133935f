"""The README's examples are real: its events validate, its commands exist."""

from __future__ import annotations

import os
import re
import shlex
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from schemas.codec import call_codec, cost_codec, outcome_codec
from schemas.ingest import decode_events
from schemas.outputs import BudgetState
from schemas.webhook_mapping import parse_mapping
from streams.cli import build_parser
from streams.core.alerts import BudgetRule
from streams.core.alerts.budget_check import check_budgets
from streams.core.alerts.budget_tracker import rule_id
from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


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
    _, outcome, item, shared, verdict, *_ = json_blocks()  # later ones: answers
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


# -- "Plug into what you already run": each example as printed ---------------------------


def yaml_blocks() -> list[Any]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", README, re.S)]


def block_with(key: str) -> Any:
    found = [block for block in yaml_blocks() + json_blocks() if key in block]
    assert len(found) == 1, f"one README block with {key!r}, found {len(found)}"
    return found[0]


def test_the_collector_config_exports_otlp_json_to_the_topic_the_worker_reads() -> None:
    config = block_with("exporters")
    kafka = config["exporters"]["kafka"]
    assert kafka["traces"] == {"topic": Settings.model_fields["otlp_topic"].default,
                               "encoding": "otlp_json"}
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["exporters"] == ["kafka"]
    assert set(pipeline["receivers"]) <= set(config["receivers"])
    assert set(pipeline["processors"]) <= set(config["processors"])


def test_the_events_example_gets_the_answer_printed_beside_it() -> None:
    request = re.search(r"curl -s (http://127\.0\.0\.1:6066/v1/events) .*?<<'NDJSON'\n(.*?)"
                        r"\nNDJSON\n", README, re.S)
    assert request is not None
    assert "application/x-ndjson" in request.group(0)
    decoded = decode_events(request.group(2).encode())
    answer = block_with("accepted")
    assert [r.to_json() for r in decoded.results] == answer["results"]
    assert (answer["accepted"], answer["rejected"]) == (len(decoded.routed), 1)


def test_the_helpdesk_mapping_example_turns_a_solved_ticket_into_an_outcome() -> None:
    mapping = parse_mapping(block_with("fields"), "README")
    ticket = {"ticket": {"id": 4712, "status": "solved", "satisfaction": "good",
                         "updated_at": "2026-11-23T09:16:40Z"}}
    outcome = mapping.apply_json(orjson.dumps(ticket)).outcome
    assert outcome is not None
    assert (outcome.work_unit_id, outcome.status, outcome.team, outcome.value) == (
        "ticket-4712", "accepted", "support", Decimal("4.20"))
    assert outcome.event_id == "helpdesk:4712:2026-11-23T09:16:40Z"
    ticket["ticket"]["satisfaction"] = None
    unrated = mapping.apply_json(orjson.dumps(ticket)).outcome
    assert unrated is not None and unrated.status == "resolved"
    ticket["ticket"]["status"] = "pending"
    assert mapping.apply_json(orjson.dumps(ticket)).ignored


def test_the_budget_check_answer_is_what_the_worker_answers() -> None:
    answer = block_with("allowed")
    verdict = answer["budgets"][0]
    rule = BudgetRule(team="support", period="daily", amount=Decimal(verdict["amount"]))
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    state = BudgetState(
        budget_id=rule_id(rule), team="support", period="daily", state="hard",
        amount=rule.amount, soft_share=rule.soft_share, spent=Decimal(verdict["spent"]),
        remaining=Decimal(0), currency="USD", period_start=datetime(2026, 12, 1, tzinfo=UTC),
        resets_at=datetime(2026, 12, 2, tzinfo=UTC), updated_at=now)
    checked = check_budgets([rule], {state.budget_id: state}, "support", "triage",
                            int(now.timestamp() * 1000), "USD")
    assert checked.to_json() == answer
    command = re.search(r"tokenyield budgets set (--team \S+ --period \S+ --amount \S+)", README)
    assert command is not None
    assert command.group(1) == f"--team support --period daily --amount {rule.amount}"


def test_the_litellm_proxy_config_loads_the_hook_as_the_proxy_does() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline
    from litellm.integrations.custom_logger import CustomLogger
    from litellm.proxy.types_utils.utils import get_instance_fn

    shipped = ROOT / "deploy" / "litellm" / "config.yaml"
    config = yaml.safe_load(shipped.read_text())
    assert block_with("litellm_settings") == config
    (callback,) = config["litellm_settings"]["callbacks"]
    # The proxy's own loader, given the config's path: the module beside the config.
    hook = get_instance_fn(callback, config_file_path=str(shipped))
    assert isinstance(hook, CustomLogger) and type(hook).__name__ == "TokenyieldBudgetHook"
    assert hook.url == os.environ.get("BUDGET_CHECK_URL", "http://127.0.0.1:6066")
    assert "cd deploy/litellm" in README and "litellm --config config.yaml" in README
