"""``tokenyield budgets``: set, remove and list spend budgets, live.

A budget set here goes to the compacted ``budgets`` topic: every worker applies it at
once, without a restart, and it overrides a budget of the same team, workflow and
period from TOKENYIELD_BUDGETS. ``remove`` publishes a tombstone (which also silences a
budget from the settings until it is set again).
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from typing import Any

from streams.cli.common import load_settings, print_rules, publish_keyed
from streams.core.alerts.alert_config import BudgetRule
from streams.core.alerts.budget_tracker import rule_id
from streams.feeds.budget_feed import encode_budget


def register(sub: Any) -> None:
    budgets = sub.add_parser("budgets", help="spend budgets per team, workflow, user, "
                                             "customer or dimension: set, remove, list")
    commands = budgets.add_subparsers(dest="budgets_command", required=True,
                                      metavar="ACTION")
    for name, text in (("set", "set a budget (published to the budgets topic)"),
                       ("remove", "remove a budget")):
        action = commands.add_parser(name, help=text)
        action.add_argument("--team", default="",
                            help="the team (needed unless --dimension is given)")
        action.add_argument("--workflow", default="",
                            help="one workflow of the team (default: the whole team)")
        action.add_argument("--dimension", default="",
                            help="user, customer or a TOKENYIELD_DIMENSIONS key: a budget "
                                 "for one value of it (across teams unless --team)")
        action.add_argument("--value", default="", help="the dimension's value, e.g. acme")
        action.add_argument("--period", choices=["daily", "monthly"], required=True)
        if name == "set":
            action.add_argument("--amount", type=Decimal, required=True,
                                help="in the reporting currency (TOKENYIELD_CURRENCY)")
            action.add_argument("--soft-share", type=Decimal, default=Decimal("0.8"),
                                help="warn at this share of the amount (default 0.8)")
        action.set_defaults(handler=set_command if name == "set" else remove_command)
    listing = commands.add_parser("list", help="the budgets in force (from ClickHouse)")
    listing.set_defaults(handler=list_command)


def set_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    rule = BudgetRule(team=args.team, workflow=args.workflow, period=args.period,
                      amount=args.amount, soft_share=args.soft_share,
                      dimension=args.dimension, value=args.value)
    publish_keyed(settings, settings.topic("budgets"), [encode_budget(rule)])
    print(f"budget {rule_id(rule)}: {rule.amount} {settings.currency}, warning at "
          f"{rule.soft_share:.0%} -> {settings.topic('budgets')}")
    return 0


def remove_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    rule = BudgetRule(team=args.team, workflow=args.workflow, period=args.period,
                      amount=Decimal(1), dimension=args.dimension, value=args.value)
    publish_keyed(settings, settings.topic("budgets"), [(rule_id(rule).encode(), None)])
    print(f"budget {rule_id(rule)} removed -> {settings.topic('budgets')}")
    return 0


def list_command(args: argparse.Namespace) -> int:
    return print_rules(load_settings(), "budgets",
                       "team, workflow, dimension, value, period, amount, soft_share, "
                       "updated_at", "team, workflow, dimension, value, period")
