"""The ``tokenyield`` command line (temporary: worker only)."""

from __future__ import annotations

import argparse
import logging
import sys

from streams.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tokenyield")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run a worker")
    args = parser.parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "worker":
        from streams.worker import WorkerProcess
        sys.argv = [sys.argv[0]]
        WorkerProcess(settings).run()
