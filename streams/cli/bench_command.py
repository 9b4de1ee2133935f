"""``tokenyield bench``: throughput, latency, memory and scaling against baselines."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    bench = sub.add_parser(
        "bench", help="measure the engine against raw aiokafka and naive Faust, in one run",
        description="Runs on its own embedded broker, in a temporary directory: the engine "
                    "as the worker runs it, a raw aiokafka + orjson loop, a naive Faust "
                    "agent, latency at a sustained rate, memory per open work unit and the "
                    "speed-up from one to two workers (docs/BENCHMARKS.md).")
    bench.add_argument("--events", type=int, default=300_000,
                       help="events for the throughput stages (default 300000)")
    bench.add_argument("--json", type=Path, default=None, help="also write results here")
    bench.add_argument("--quick", action="store_true",
                       help="a small smoke run (20000 events, short latency stage)")
    bench.add_argument("--dashboards", action="store_true",
                       help="also time every Grafana panel's SQL over --calls calls in chdb")
    bench.add_argument("--calls", type=int, default=10_000_000,
                       help="calls loaded for --dashboards (default 10000000)")
    bench.add_argument("--keep", action="store_true",
                       help="keep the work directory (logs, chdb data) for inspection")
    bench.set_defaults(handler=bench_command)


def bench_command(args: argparse.Namespace) -> int:
    from loadtest.bench import main

    events = 20_000 if args.quick and args.events == 300_000 else args.events
    main(events, args.json, args.quick, args.dashboards, args.calls, args.keep)
    return 0
