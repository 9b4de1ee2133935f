"""The engine under live-shaped traffic, in one process: what a checkpoint costs per event.

``tokenyield bench`` drains a backlog of 500-event envelopes, where each unit's calls
come together and its outcome later. Live traffic is another shape: the Python publisher
sends what it has every ``linger_ms`` (about 25 events per envelope and partition at
10,000 events/s), and a unit's events arrive seconds apart, so a unit changes in most
checkpoints it lives through and each checkpoint serializes it whole again. This bench
replays the latency stage's scenario that way through ``PartitionEngine`` and a
checkpoint plan every ``--checkpoint-seconds`` of traffic per partition (what the worker
does with ``checkpoint_interval_seconds``), with no broker and no ClickHouse, and prints
for each envelope size and checkpoint interval, alternated over ``--rounds``:

- events/s through the engine and its checkpoints,
- the share of that time spent in the checkpoints' plans (``Checkpointer.plan`` and the
  pending units' rows, as the runtime takes them),
- unit states written per event (1.0: every event made its unit be written again).

``python -m loadtest.live_shape --rate 6000 --seconds 30``; docs/BENCHMARKS.md records
the figures. Nothing here is asserted in tests but that the figures are produced.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

import orjson

from schemas.partitioner import partition_for
from schemas.pricing import PriceBook
from streams.app.worker import tune_garbage_collector
from streams.core.checkpoint import Checkpointer
from streams.core.engine import PartitionEngine, Source
from streams.core.engine_config import EngineConfig
from streams.settings import Settings
from streams.traffic.scenarios import Scenario, raw_events

PARTITIONS = 4

Message = tuple[str, int, bytes, int]  # kind, partition, envelope, events in it


def live_messages(rate: int, seconds: int, per_message: int) -> list[Message]:
    """The latency stage's scenario in publication order, grouped per (topic,
    partition) into envelopes of ``per_message`` events as the publisher's buffers
    fill (the last, partial ones at the end)."""
    scenario = Scenario(seed=5, run_id="live-shape", work_units=max(1, int(rate * seconds / 4.5)),
                        span_seconds=seconds, outcome_delay_max_seconds=60, end=None,
                        lag_seconds=0).clean()
    buffers: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    found: list[Message] = []
    for raw in raw_events(scenario):
        key = (raw.kind, partition_for(raw.work_unit_id, PARTITIONS))
        buffer = buffers[key]
        buffer.append(raw.data)
        if len(buffer) >= per_message:
            found.append((key[0], key[1], orjson.dumps(buffer), len(buffer)))
            buffers[key] = []
    for (kind, partition), items in buffers.items():
        if items:
            found.append((kind, partition, orjson.dumps(items), len(items)))
    return found


def run_once(messages: list[Message], rate: int, checkpoint_seconds: float) -> dict[str, float]:
    """Every message through fresh engines, a plan every ``checkpoint_seconds`` of the
    rate's events per partition: events/s, plan share, unit writes per event."""
    book = PriceBook.load()
    config = EngineConfig(partitions=PARTITIONS)
    engines = {p: PartitionEngine(p, config, lambda: book, lambda: 2**50, store={})
               for p in range(PARTITIONS)}
    checkpointers = {p: Checkpointer(engine) for p, engine in engines.items()}
    per_checkpoint = max(1, int(rate / PARTITIONS * checkpoint_seconds))
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    since: dict[int, int] = defaultdict(int)
    in_plan, written, events = 0.0, 0, 0
    started = time.perf_counter()
    for kind, partition, value, count in messages:
        offset = offsets[(kind, partition)]
        offsets[(kind, partition)] += 1
        engines[partition].process(kind, value, Source(kind, partition, offset))  # type: ignore[arg-type]
        events += count
        since[partition] += count
        if since[partition] >= per_checkpoint:
            since[partition] = 0
            began = time.perf_counter()
            engines[partition].pending_units()
            written += checkpointers[partition].plan().units_written
            in_plan += time.perf_counter() - began
    elapsed = time.perf_counter() - started
    return {"events_per_second": events / elapsed, "plan_share": in_plan / elapsed,
            "unit_writes_per_event": written / max(1, events)}


def run(rate: int, seconds: int, envelopes: list[int], intervals: list[float],
        rounds: int, say: Any = None) -> dict[str, Any]:
    tune_garbage_collector(Settings().gc_young_threshold)
    shapes = [(size, interval) for size in envelopes for interval in intervals]
    messages = {size: live_messages(rate, seconds, size) for size in envelopes}
    samples: dict[tuple[int, float], list[dict[str, float]]] = defaultdict(list)
    for index in range(rounds):  # alternated: drift and warm-up spread over every shape
        for size, interval in shapes:
            samples[(size, interval)].append(run_once(messages[size], rate, interval))
            if say is not None:
                say(f"round {index + 1} of {rounds}: {size} events per envelope, "
                    f"a checkpoint every {interval:g} s")
    results: dict[str, Any] = {"rate": rate, "seconds": seconds, "rounds": rounds,
                               "events": sum(n for *_, n in messages[envelopes[0]]),
                               "shapes": []}
    for (size, interval), runs in samples.items():
        results["shapes"].append({
            "events_per_envelope": size, "checkpoint_seconds": interval,
            "events_per_second": round(statistics.median(r["events_per_second"] for r in runs)),
            **{name: round(statistics.median(r[name] for r in runs), 3)
               for name in ("plan_share", "unit_writes_per_event")}})
    return results


def table(results: dict[str, Any]) -> str:
    lines = [f"live-shaped traffic: {results['events']:,} events at {results['rate']:,}/s "
             f"over {results['seconds']} s, median of {results['rounds']} rounds", "",
             f"  {'events/envelope':>15} {'checkpoint s':>12} {'events/s':>10} "
             f"{'in plans':>9} {'unit writes/event':>18}"]
    for shape in results["shapes"]:
        lines.append(f"  {shape['events_per_envelope']:>15} {shape['checkpoint_seconds']:>12g} "
                     f"{shape['events_per_second']:>10,.0f} {shape['plan_share']:>8.1%} "
                     f"{shape['unit_writes_per_event']:>18.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    cli = argparse.ArgumentParser(prog="python -m loadtest.live_shape",
                                  description=(__doc__ or "").split("\n\n")[0])
    cli.add_argument("--rate", type=int, default=6000, help="events/s the traffic is shaped for")
    cli.add_argument("--seconds", type=int, default=30, help="seconds of traffic")
    cli.add_argument("--envelopes", type=int, nargs="+", default=[25, 500],
                     help="events per envelope (default: the publisher at 10k/s, and the bench's)")
    cli.add_argument("--checkpoint-seconds", type=float, nargs="+", default=[1.0, 4.0])
    cli.add_argument("--rounds", type=int, default=3)
    cli.add_argument("--json", default=None, help="also write the figures here")
    args = cli.parse_args(argv)
    results = run(args.rate, args.seconds, args.envelopes, args.checkpoint_seconds, args.rounds,
                  say=lambda text: print(f"live_shape: {text}", file=sys.stderr, flush=True))
    print(table(results))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
