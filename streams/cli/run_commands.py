"""Long-running commands: the worker, the demo and the traffic generator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from streams.cli.common import bootstrap_for, load_settings


def register(sub: Any) -> None:
    worker = sub.add_parser("worker", help="run a worker (embedded broker if no "
                                           "TOKENYIELD_KAFKA_BOOTSTRAP)")
    worker.add_argument(
        "--processes", type=int, default=1, metavar="N",
        help="run N worker processes of one consumer group (one per core; at most "
             "TOKENYIELD_PARTITIONS); with the embedded chdb the first one writes for all "
             "(docs/SCALING.md)")
    worker.set_defaults(handler=worker_command)

    demo = sub.add_parser(
        "demo", help="see it work: broker, worker, realistic traffic and a live view",
        description="Start a worker on the embedded broker and chdb (under "
                    "TOKENYIELD_DATA_DIR), replay a few hours of realistic traffic fast, "
                    "then keep live traffic flowing, with a live view of cost per accepted "
                    "outcome, yield, coverage and alerts. Stops at --duration or Ctrl-C.")
    demo.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                      help="stop after this long (default: run until Ctrl-C)")
    demo.add_argument("--history-hours", type=float, default=3.0,
                      help="event time replayed first, fast (default 3)")
    demo.add_argument("--history-units", type=int, default=6000,
                      help="work units in that history (default 6000)")
    demo.add_argument("--rate", type=float, default=300.0,
                      help="live events per second after the history (default 300)")
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(handler=demo_command)

    generate = sub.add_parser(
        "generate", help="publish realistic generated traffic (the load generator)",
        description="Generate calls and outcomes of several teams and workflows (retries, "
                    "outcome delays, duplicates, disorder, and unless --quiet a spend "
                    "spike, a runaway unit, a retry storm and context bloat) and publish "
                    "them to the configured Kafka, keyed by work unit.")
    generate.add_argument("--rate", type=float, default=None,
                          help="events per second (default: as fast as possible)")
    generate.add_argument("--units", type=int, default=2000,
                          help="work units per round (about 4.5 events each)")
    generate.add_argument("--span-seconds", type=int, default=3600,
                          help="event time a round covers, ending now (default 3600)")
    generate.add_argument("--seed", type=int, default=7)
    generate.add_argument("--mode", choices=["envelope", "single"], default="envelope",
                          help="envelopes of many events per message, or one per message")
    generate.add_argument("--quiet", action="store_true", help="no injected anomalies")
    generate.add_argument("--forever", action="store_true",
                          help="live traffic until stopped: event times of now, each event "
                               "sent when its time comes, at --rate (default 2000) events/s")
    generate.set_defaults(handler=generate_command)


def worker_command(args: argparse.Namespace) -> int:
    from streams.app.worker import WorkerProcess

    settings = load_settings()
    logging.getLogger().setLevel(settings.log_level.upper())
    processes = getattr(args, "processes", 1)
    if processes != 1:
        from streams.app.processes import ProcessGroup

        return ProcessGroup(settings, processes).run()
    sys.argv = [sys.argv[0]]  # Faust's worker parses argv; give it none of ours
    WorkerProcess(settings).run()
    return 0


def demo_command(args: argparse.Namespace) -> int:
    from streams.app.demo import Demo, DemoOptions, next_steps

    settings = load_settings()
    options = DemoOptions(duration_seconds=args.duration, history_hours=args.history_hours,
                          history_units=args.history_units, live_rate=args.rate,
                          seed=args.seed)
    summary = Demo(settings, options).run()
    print(next_steps(summary, settings))
    return 0


def generate_command(args: argparse.Namespace) -> int:
    from streams.traffic.generator import Progress, live_traffic, publisher_for, run_generator
    from streams.traffic.scenarios import Scenario

    settings = load_settings()
    connection = settings.kafka(bootstrap_for(settings))

    def progress(p: Progress) -> None:
        print(f"\r  {p.events:,} events ({p.calls:,} calls, {p.outcomes:,} outcomes), "
              f"{p.events_per_second:,.0f}/s", end="", file=sys.stderr, flush=True)

    async def once() -> int:
        stamp = datetime.now(UTC)
        scenario = Scenario(seed=args.seed, work_units=args.units,
                            span_seconds=args.span_seconds, end=stamp,
                            run_id=f"gen{stamp:%Y%m%d%H%M%S}")
        if args.quiet:
            scenario = scenario.quiet()
        report = await run_generator(connection, scenario, rate=args.rate, mode=args.mode,
                                     progress=progress, topic_prefix=settings.topic_prefix)
        print(f"\n{report.events:,} events in {report.messages:,} messages, "
              f"{report.events_per_second:,.0f} events/s", file=sys.stderr)
        return report.events

    async def forever() -> int:
        published = [0]

        def count(step: int) -> None:
            published[0] += step
            print(f"\r  {published[0]:,} events", end="", file=sys.stderr, flush=True)

        async with publisher_for(connection, args.mode,
                                 topic_prefix=settings.topic_prefix) as publisher:
            # Until Ctrl-C or SIGTERM: the CLI turns the interrupt into exit code 130.
            await live_traffic(publisher, args.rate or 2000.0, asyncio.Event(),
                               seed=args.seed, on_events=count,
                               run_id=f"gen{datetime.now(UTC):%Y%m%d%H%M%S}")
        return published[0]

    total = asyncio.run(forever() if args.forever else once())
    print(f"published {total:,} events to {settings.topic('calls')} and "
          f"{settings.topic('outcomes')}")
    return 0
