"""``tokenyield bench``: throughput, latency, memory and scaling against baselines.

The benchmarks live in ``loadtest/`` (which imports the product, never the reverse),
so the command runs ``python -m loadtest.bench`` with its arguments; ``tokenyield bench
--help`` lists them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any


def register(sub: Any) -> None:
    bench = sub.add_parser(
        "bench", add_help=False,
        help="measure the engine against raw aiokafka and naive Faust, in one run "
             "(--help for its options)")
    bench.add_argument("-h", "--help", action=_BenchHelp, nargs=0,
                       help="the benchmark's own options")
    bench.set_defaults(handler=bench_command, passes_through=True)


class _BenchHelp(argparse.Action):
    """``tokenyield bench --help`` shows the benchmark's own options."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        parser.exit(subprocess.run([sys.executable, "-m", "loadtest.bench", "--help"]).returncode)


def bench_command(args: argparse.Namespace) -> int:
    return subprocess.run([sys.executable, "-m", "loadtest.bench", *args.extra]).returncode
