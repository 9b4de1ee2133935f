"""Webhook mappings: the shipped GitHub pull_request mapping on realistic payloads, and
the mapping language's load-time and run-time errors."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from schemas.errors import TokenyieldError
from schemas.events import Outcome
from schemas.webhook_mapping import (
    MappingFailure,
    MappingResult,
    WebhookMappingError,
    load_mapping,
    load_mappings,
    parse_mapping,
)

ROOT = Path(__file__).resolve().parent.parent
GITHUB = load_mapping(ROOT / "deploy" / "webhooks" / "github_pull_request.yaml")
PR_ID = 2_187_334_101


def github_user(login: str, user_id: int) -> dict[str, Any]:
    return {"login": login, "id": user_id, "node_id": f"U_kgDO{user_id}",
            "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id}?v=4",
            "url": f"https://api.github.com/users/{login}",
            "html_url": f"https://github.com/{login}", "type": "User", "site_admin": False}


def pull_request_event(action: str, *, merged: bool = False, closed: bool = False,
                       labels: tuple[str, ...] = ("team:payments", "ai-assisted"),
                       closed_at: str = "2026-11-30T16:42:05Z") -> dict[str, Any]:
    """A ``pull_request`` delivery in the shape GitHub sends (trimmed of URL fields)."""
    author, merger = github_user("ana-dev", 5_120_331), github_user("lee-maint", 771_204)
    repository = {
        "id": 712_004_118, "node_id": "R_kgDOKnBxVg", "name": "checkout",
        "full_name": "acme/checkout", "private": True,
        "owner": {**github_user("acme", 90_112_733), "type": "Organization"},
        "html_url": "https://github.com/acme/checkout", "default_branch": "main",
        "language": "Python", "visibility": "private",
    }
    pull_request = {
        "url": "https://api.github.com/repos/acme/checkout/pulls/1487",
        "id": PR_ID, "node_id": "PR_kwDOKnBxVs6CX1nV",
        "html_url": "https://github.com/acme/checkout/pull/1487", "number": 1487,
        "state": "closed" if closed else "open", "locked": False,
        "title": "Retry card authorisation on 502", "user": author,
        "body": "Generated with the review agent; see trace.",
        "created_at": "2026-11-28T09:14:51Z", "updated_at": closed_at if closed
        else "2026-11-28T09:14:51Z",
        "closed_at": closed_at if closed else None,
        "merged_at": closed_at if merged else None,
        "merge_commit_sha": "9f2c4e1b7d8a6c5f4e3d2c1b0a9f8e7d6c5b4a39",
        "assignee": None, "assignees": [], "requested_reviewers": [], "requested_teams": [],
        "labels": [{"id": 6_001_000 + i, "node_id": f"LA_kwDO{i}", "name": name,
                    "color": "0e8a16", "default": False, "description": None}
                   for i, name in enumerate(labels)],
        "milestone": None, "draft": False,
        "head": {"label": "ana-dev:retry-502", "ref": "retry-502",
                 "sha": "c0ffee5e1b7d8a6c5f4e3d2c1b0a9f8e7d6c5b4a", "user": author,
                 "repo": repository},
        "base": {"label": "acme:main", "ref": "main",
                 "sha": "f00dfeed1b7d8a6c5f4e3d2c1b0a9f8e7d6c5b4a",
                 "user": repository["owner"], "repo": repository},
        "author_association": "MEMBER", "auto_merge": None, "active_lock_reason": None,
        "merged": merged, "mergeable": None, "rebaseable": None, "mergeable_state": "unknown",
        "merged_by": merger if merged else None, "comments": 3, "review_comments": 5,
        "maintainer_can_modify": False, "commits": 4, "additions": 118, "deletions": 37,
        "changed_files": 6,
    }
    return {"action": action, "number": 1487, "pull_request": pull_request,
            "repository": repository, "organization": {"login": "acme", "id": 90_112_733},
            "sender": merger if closed else author}


# -- the shipped GitHub mapping ------------------------------------------------------------


def test_a_merged_pull_request_is_an_accepted_outcome_for_the_pull_request() -> None:
    result = GITHUB.apply(pull_request_event("closed", merged=True, closed=True))

    assert result == MappingResult(outcome=Outcome(
        event_id=f"github:pr:{PR_ID}:closed:2026-11-30T16:42:05Z",
        work_unit_id="github:acme/checkout#1487",
        occurred_at=datetime(2026, 11, 30, 16, 42, 5, tzinfo=UTC),
        team="payments", workflow="code-review", status="accepted"))
    outcome = result.outcome
    assert outcome is not None and outcome.accepted
    # Every other field is the contract's default: nothing invented.
    assert (outcome.value, outcome.currency, outcome.is_final, outcome.schema_version) == (
        None, None, True, "1")
    assert outcome.human_review_minutes == Decimal(0)


def test_a_pull_request_closed_unmerged_is_rejected() -> None:
    payload = pull_request_event("closed", closed=True, labels=("team:search",),
                                 closed_at="2026-12-01T08:00:00Z")
    assert GITHUB.apply(payload) == MappingResult(outcome=Outcome(
        event_id=f"github:pr:{PR_ID}:closed:2026-12-01T08:00:00Z",
        work_unit_id="github:acme/checkout#1487",
        occurred_at=datetime(2026, 12, 1, 8, 0, tzinfo=UTC),
        team="search", workflow="code-review", status="rejected"))


def test_without_a_known_team_label_the_team_is_the_default() -> None:
    for labels in ((), ("bug",), ("team:unknown",)):
        result = GITHUB.apply(pull_request_event("closed", merged=True, closed=True,
                                                 labels=labels))
        assert result.outcome is not None and result.outcome.team == "platform", labels


@pytest.mark.parametrize("action", ["opened", "synchronize", "labeled", "reopened",
                                    "ready_for_review", "edited"])
def test_other_actions_are_ignored(action: str) -> None:
    assert GITHUB.apply(pull_request_event(action)) == MappingResult(ignored=True)


def test_a_redelivery_has_the_same_event_id_and_a_second_close_a_new_one() -> None:
    first = GITHUB.apply(pull_request_event("closed", closed=True))
    redelivered = GITHUB.apply(pull_request_event("closed", closed=True))
    closed_again = GITHUB.apply(pull_request_event("closed", merged=True, closed=True,
                                                   closed_at="2026-12-02T10:00:00Z"))
    assert first.outcome and redelivered.outcome and closed_again.outcome
    assert first.outcome.event_id == redelivered.outcome.event_id
    assert closed_again.outcome.event_id != first.outcome.event_id
    assert closed_again.outcome.work_unit_id == first.outcome.work_unit_id


def test_raw_bodies_decode_and_malformed_ones_are_errors() -> None:
    body = orjson.dumps(pull_request_event("closed", merged=True, closed=True))
    result = GITHUB.apply_json(body)
    assert result.outcome is not None and result.outcome.status == "accepted"

    broken = GITHUB.apply_json(body[:-10])
    assert broken.outcome is None and not broken.ignored
    assert broken.error is not None and broken.error.reason.startswith("payload is not JSON")

    assert GITHUB.apply([1, 2]) == MappingResult(error=MappingFailure(
        "payload must be a JSON object, got list"))


def test_a_closed_payload_without_closed_at_names_the_field_and_expression() -> None:
    payload = pull_request_event("closed", merged=True, closed=True)
    del payload["pull_request"]["closed_at"]
    expression = ("join('', ['github:pr:', to_string(pull_request.id), ':closed:', "
                  "pull_request.closed_at])")
    error = GITHUB.apply(payload).error
    assert error is not None and (error.field, error.expression) == ("event_id", expression)
    # The rest of the reason is jmespath's own message (its wording is the library's).
    assert error.reason.startswith(f"event_id (from `{expression}`): expression failed on "
                                   "this payload: In function join(), invalid type")


def test_a_state_the_map_does_not_know_is_an_error_not_a_guess() -> None:
    payload = pull_request_event("closed", closed=True)
    payload["pull_request"]["merged"] = "yes"
    assert GITHUB.apply(payload).error == MappingFailure(
        "status (from `pull_request.merged`): value 'yes' is not in its map ('true', 'false')",
        "status", "pull_request.merged")


def test_a_missing_merged_flag_is_a_required_field_error() -> None:
    payload = pull_request_event("closed", closed=True)
    del payload["pull_request"]["merged"]
    error = GITHUB.apply(payload).error
    assert error == MappingFailure(
        "status (from `pull_request.merged`): gave null and the field is required",
        "status", "pull_request.merged")


def test_a_value_the_contract_refuses_names_the_field_and_expression() -> None:
    payload = pull_request_event("closed", merged=True, closed=True)
    payload["pull_request"]["closed_at"] = "2026-11-30 16:42"  # no timezone
    payload["pull_request"]["merged_at"] = None
    error = GITHUB.apply(payload).error
    assert error is not None and (error.field, error.expression) == (
        "occurred_at", "pull_request.closed_at")
    assert error.reason == ("occurred_at (from `pull_request.closed_at`): "
                            "Input should have timezone info")


# -- the mapping language ------------------------------------------------------------------


DEAL = """
name: crm-deals
when: "event == 'deal.won' && deal.amount"
fields:
  event_id: "join(':', ['crm', to_string(deal.id), event])"
  work_unit_id: deal.lead_id
  occurred_at: deal.won_at
  team: "'sales'"
  workflow: {literal: lead-qualification}
  status:
    expr: deal.stage
    map: {won: accepted, "2": resolved, 3: completed, true: accepted}
  value: deal.amount
  currency: {expr: deal.currency, default: EUR}
  quality_score: {expr: deal.score, required: true}
  is_final: false
"""


def deal(**changes: Any) -> dict[str, Any]:
    payload = {"event": "deal.won", "deal": {
        "id": 981, "lead_id": 4411, "won_at": "2026-12-01T12:00:00+01:00",
        "stage": "won", "amount": 12.34, "currency": "USD", "score": 0.8}}
    payload["deal"].update(changes)
    return payload


def test_literals_defaults_money_and_integer_ids_fit_the_contract() -> None:
    mapping = parse_mapping(DEAL)
    assert mapping.apply(deal()) == MappingResult(outcome=Outcome(
        event_id="crm:981:deal.won", work_unit_id="4411",
        occurred_at=datetime(2026, 12, 1, 11, 0, tzinfo=UTC), team="sales",
        workflow="lead-qualification", status="accepted", value=Decimal("12.34"),
        currency="USD", value_dimension="revenue", quality_score=0.8, is_final=False))
    outcome = mapping.apply(deal(currency=None, amount=1234567.891)).outcome
    assert outcome is not None
    assert (outcome.value, outcome.currency) == (Decimal("1234567.891"), "EUR")


def test_map_keys_match_as_json_text() -> None:
    mapping = parse_mapping(DEAL)

    def status(stage: Any) -> str | None:
        outcome = mapping.apply(deal(stage=stage)).outcome
        return outcome.status if outcome else None

    assert [status(s) for s in ("2", 2, 2.0, 3, "3.0", True, "true")] == [
        "resolved", "resolved", "resolved", "completed", None, "accepted", "accepted"]
    error = mapping.apply(deal(stage=["won"])).error
    assert error is not None and error.reason == (
        "status (from `deal.stage`): value ['won'] is not in its map "
        "('won', '2', '3', 'true')")


def test_a_json_mapping_behaves_like_its_yaml_twin() -> None:
    as_json = parse_mapping(orjson.dumps(yaml.safe_load(DEAL), option=orjson.OPT_NON_STR_KEYS)
                            .decode())
    yaml_mapping = parse_mapping(DEAL)
    for stage in ("won", 2, True, "nope"):
        assert as_json.apply(deal(stage=stage)) == yaml_mapping.apply(deal(stage=stage))


def test_when_uses_jmespath_truth() -> None:
    mapping = parse_mapping(DEAL)
    assert mapping.apply(deal(amount=0)).outcome is not None  # 0 is true in JMESPath
    assert mapping.apply(deal(amount=None)).ignored
    assert mapping.apply({"event": "deal.lost", "deal": {}}).ignored


def test_an_optional_field_made_required_must_be_present() -> None:
    error = parse_mapping(DEAL).apply(deal(score=None)).error
    assert error == MappingFailure(
        "quality_score (from `deal.score`): gave null and the field is required",
        "quality_score", "deal.score")


def test_a_cross_field_rule_of_the_contract_is_reported() -> None:
    mapping = parse_mapping(DEAL.replace("currency: {expr: deal.currency, default: EUR}",
                                         "currency: deal.currency"))
    error = mapping.apply(deal(currency=None)).error
    assert error == MappingFailure("outcome: value need a currency")


def mapping_text(**fields: str) -> str:
    base = {"event_id": "id", "work_unit_id": "unit", "occurred_at": "at",
            "team": "'t'", "workflow": "'w'", "status": "'accepted'"}
    base.update(fields)
    lines = "\n".join(f"  {k}: {v}" for k, v in base.items() if v != "DROP")
    return f"name: test\nfields:\n{lines}\n"


@pytest.mark.parametrize("text, message", [
    ("name: [unclosed", "not YAML"),
    ("- a\n- b", "a mapping must be a YAML object"),
    ("name: x\nfield: {}\n", "unknown keys ['field']"),
    ("fields: {team: x}\n", "'name' must be non-empty text"),
    ("name: x\nfields: {}\n", "'fields' must map outcome fields"),
    (mapping_text(work_unit="x"), "'work_unit' is not an Outcome field (did you mean "
                                  "'work_unit_id'?)"),
    (mapping_text(status="DROP"), "the contract requires status"),
    (mapping_text(team='"a =="'), "team: `a ==` is not JMESPath"),
    (mapping_text(status="{expr: s, map: {1: accepted, '1': rejected}}"),
     "status: map keys '1' and another both read as '1'"),
    (mapping_text(team="upper(name)"), "team: `upper(name)`: unknown function upper()"),
    (mapping_text(team="join(name)"), "join() takes 2 arguments, got 1"),
    (mapping_text(team="not_null()"), "not_null() takes at least 1 arguments, got 0"),
    (mapping_text(team="{expr: a, literal: b}"), "give exactly one of expr and literal"),
    (mapping_text(team="{expr: a, mapping: {}}"), "team: unknown keys ['mapping']"),
    (mapping_text(team="{expr: a, required: false}"), "team is required by the contract"),
    (mapping_text(status="{literal: merged}"), "status: literal 'merged' is not valid"),
    (mapping_text(status="{expr: s, map: {m: merged}}"), "map value for 'm' 'merged' is "
                                                        "not valid"),
    (mapping_text(status="{literal: accepted, map: {a: accepted}}"), "map needs an expr"),
    (mapping_text(currency="{literal: usd}"), "currency: literal 'usd' is not valid"),
    (mapping_text(value="{expr: v, default: lots}"), "value: default 'lots' is not valid"),
    (mapping_text(team="{expr: 7}"), "team: expr must be text"),
    ("name: x\nwhen: [1]\nfields: {team: a}\n", "'when' must be a JMESPath expression"),
    ("name: x\nwhen: 'a ==' \nfields:\n" + mapping_text().split("fields:\n")[1],
     "when: `a ==` is not JMESPath"),
])
def test_a_bad_mapping_fails_at_load_with_the_field_and_expression(
        text: str, message: str) -> None:
    with pytest.raises(WebhookMappingError) as raised:
        parse_mapping(text, source="hooks/test.yaml")
    assert isinstance(raised.value, TokenyieldError)
    assert message in raised.value.message
    assert raised.value.fields["source"] == "hooks/test.yaml"


def test_load_errors_carry_fields_a_program_can_act_on() -> None:
    with pytest.raises(WebhookMappingError) as raised:
        parse_mapping(mapping_text(team="upper(name)"), source="x.yaml")
    assert raised.value.to_dict() == {
        "error": "WebhookMappingError",
        "message": "x.yaml: team: `upper(name)`: unknown function upper()",
        "source": "x.yaml", "mapping": "test", "field": "team", "expression": "upper(name)"}


def test_a_directory_of_mappings_loads_by_name_and_refuses_duplicates(tmp_path: Path) -> None:
    shipped = (ROOT / "deploy" / "webhooks" / "github_pull_request.yaml").read_text()
    (tmp_path / "github.yaml").write_text(shipped)
    (tmp_path / "deals.yml").write_text(DEAL)
    (tmp_path / "README.md").write_text("not a mapping")
    mappings = load_mappings(tmp_path)
    assert sorted(mappings) == ["crm-deals", "github-pull-requests"]

    (tmp_path / "github-copy.json").write_text(orjson.dumps(
        yaml.safe_load(shipped), option=orjson.OPT_NON_STR_KEYS).decode())
    with pytest.raises(WebhookMappingError, match="two webhook mappings are named "
                                                  "'github-pull-requests'"):
        load_mappings(tmp_path)


def test_applying_a_mapping_does_not_change_the_payload() -> None:
    payload = pull_request_event("closed", merged=True, closed=True)
    before = copy.deepcopy(payload)
    GITHUB.apply(payload)
    assert payload == before
