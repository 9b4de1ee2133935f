"""``tokenyield workflows``: set, remove and list workflow rules (owner, success bar,
business case), live.

A rule set here goes to the compacted ``workflows`` topic: every worker judges success
by it from then on, without a restart, and it overrides a rule of the same team and
workflow from TOKENYIELD_WORKFLOWS. ``remove`` publishes a tombstone (the workflow goes
back to the default bar: accepted, resolved and completed count as success).
"""

from __future__ import annotations

import argparse
from datetime import date
from decimal import Decimal
from typing import Any

from schemas.events import OutcomeStatus
from streams.cli.common import load_settings, print_rules, publish_keyed
from streams.core.workflows import DEFAULT_SUCCESS, WorkflowRule
from streams.feeds.workflow_feed import encode_workflow

STATUSES: tuple[str, ...] = OutcomeStatus.__args__  # type: ignore[attr-defined]


def register(sub: Any) -> None:
    workflows = sub.add_parser("workflows", help="workflow rules (owner, success bar, "
                                                 "business case): set, remove, list")
    commands = workflows.add_subparsers(dest="workflows_command", required=True,
                                        metavar="ACTION")
    setting = commands.add_parser("set", help="set a workflow's rule (published to the "
                                              "workflows topic)")
    removing = commands.add_parser("remove", help="remove a workflow's rule")
    for action in (setting, removing):
        action.add_argument("--team", required=True)
        action.add_argument("--workflow", required=True)
    setting.add_argument("--owner", default="", help="who answers for it")
    setting.add_argument("--success-statuses", default=",".join(DEFAULT_SUCCESS),
                         help=f"outcome statuses that count as success, comma-separated "
                              f"(of {', '.join(STATUSES)}; default %(default)s)")
    setting.add_argument("--min-quality-score", type=float, default=None, metavar="SCORE",
                         help="a success needs a quality_score of at least this (0-1)")
    setting.add_argument("--max-latency-ms", type=int, default=None, metavar="MS",
                         help="a success needs every call of the unit at most this slow")
    setting.add_argument("--baseline-minutes-per-unit", type=Decimal, default=None,
                         help="human minutes a unit takes without AI")
    setting.add_argument("--baseline-rate-per-hour", type=Decimal, default=None,
                         help="what an hour of that human work costs")
    setting.add_argument("--baseline-cost-per-unit", type=Decimal, default=None,
                         help="or the baseline cost of a unit directly")
    setting.add_argument("--target-cost-per-accepted-outcome", type=Decimal, default=None)
    setting.add_argument("--expected-value-per-unit", type=Decimal, default=None)
    setting.add_argument("--started-on", type=date.fromisoformat, default=None,
                         metavar="YYYY-MM-DD", help="when the workflow's business case began")
    setting.set_defaults(handler=set_command)
    removing.set_defaults(handler=remove_command)
    listing = commands.add_parser("list", help="the rules in force (from ClickHouse)")
    listing.set_defaults(handler=list_command)


def set_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    statuses = tuple(s.strip() for s in args.success_statuses.split(",") if s.strip())
    rule = WorkflowRule.model_validate({
        "team": args.team, "workflow": args.workflow, "owner": args.owner,
        "success_statuses": statuses, "min_quality_score": args.min_quality_score,
        "max_latency_ms": args.max_latency_ms,
        "baseline_minutes_per_unit": args.baseline_minutes_per_unit,
        "baseline_rate_per_hour": args.baseline_rate_per_hour,
        "baseline_cost_per_unit": args.baseline_cost_per_unit,
        "target_cost_per_accepted_outcome": args.target_cost_per_accepted_outcome,
        "expected_value_per_unit": args.expected_value_per_unit,
        "started_on": args.started_on})
    publish_keyed(settings, settings.topic("workflows"), [encode_workflow(rule)])
    bar = [f"success: {', '.join(rule.success_statuses)}"]
    if rule.min_quality_score is not None:
        bar.append(f"quality >= {rule.min_quality_score}")
    if rule.max_latency_ms is not None:
        bar.append(f"latency <= {rule.max_latency_ms} ms")
    print(f"workflow {rule.key}: {'; '.join(bar)} -> {settings.topic('workflows')}")
    return 0


def remove_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    rule = WorkflowRule(team=args.team, workflow=args.workflow)
    publish_keyed(settings, settings.topic("workflows"), [(rule.key.encode(), None)])
    print(f"workflow {rule.key} removed -> {settings.topic('workflows')}")
    return 0


def list_command(args: argparse.Namespace) -> int:
    return print_rules(load_settings(), "workflows",
                       "team, workflow, owner, success_statuses, min_quality_score, "
                       "max_latency_ms, target_cost_per_accepted_outcome, updated_at",
                       "team, workflow")
