"""The ``tokenyield`` command line. Every command has ``--help``.

Settings come from ``TOKENYIELD_*`` environment variables (or ``.env``); see
docs/CONFIGURATION.md. Commands that need Kafka use TOKENYIELD_KAFKA_BOOTSTRAP, or the
embedded broker of a running ``tokenyield worker``/``demo`` on the same data dir.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from schemas.errors import TokenyieldError
from streams.cli import (
    bench_command,
    budget_commands,
    data_commands,
    export_commands,
    price_commands,
    run_commands,
    workflow_commands,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenyield",
        description="Outcome attribution for AI spend: cost per accepted outcome, yield, "
                    "waste alerts, live.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_commands.register(sub)
    data_commands.register(sub)
    price_commands.register(sub)
    budget_commands.register(sub)
    workflow_commands.register(sub)
    export_commands.register(sub)
    bench_command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passes_through", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    handler: Callable[[argparse.Namespace], int | None] = args.handler
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = handler(args)
    except TokenyieldError as exc:
        print(f"tokenyield: {exc.message}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code or 0)
