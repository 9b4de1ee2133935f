"""Long-running commands: the worker (and, below, demo, generator and benchmark)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from streams.cli.common import load_settings


def register(sub: Any) -> None:
    worker = sub.add_parser("worker", help="run a worker (embedded broker if no "
                                           "TOKENYIELD_KAFKA_BOOTSTRAP)")
    worker.set_defaults(handler=worker_command)


def worker_command(args: argparse.Namespace) -> int:
    from streams.worker import WorkerProcess

    settings = load_settings()
    logging.getLogger().setLevel(settings.log_level.upper())
    sys.argv = [sys.argv[0]]  # Faust's worker parses argv; give it none of ours
    WorkerProcess(settings).run()
    return 0
