"""The hot path's parts, each against its old way, in one process and one run:

- **decode**: the bench's envelopes through ``call_codec``/``outcome_codec`` (msgspec,
  ``schemas/fast_codec.py``) against the authoritative pydantic path (``decode_slow``);
- **engine**: the same messages through ``PartitionEngine.process`` (no Kafka, no sink),
  with the worker's collector tuning against Python's default collector;
- **insert**: the rows they produced written into chdb by ``ClickHouseSink`` as Arrow
  bodies (``streams/clickhouse/arrow_rows.py``) against clickhouse-connect's columns,
  into two fresh databases, a few checkpoints' worth per insert as the worker does.

``python -m loadtest.sink_bench --events 100000`` prints events/s (rows/s for inserts)
and the ratios; docs/BENCHMARKS.md records them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
from collections import defaultdict
from typing import Any

import orjson

from loadtest.engine_into_clickhouse import UnclosableClient
from schemas.codec import call_codec, outcome_codec
from schemas.partitioner import partition_for
from schemas.pricing import PriceBook
from streams.app.worker import tune_garbage_collector
from streams.clickhouse.client import connect, migrate
from streams.clickhouse.sink import ClickHouseSink
from streams.core.engine import PartitionEngine, Source
from streams.core.engine_config import EngineConfig
from streams.core.records import Outputs
from streams.settings import Settings
from streams.traffic.scenarios import Scenario, raw_events

PARTITIONS = 4
PER_MESSAGE = 500


def messages(events: int) -> list[tuple[str, int, bytes, int]]:
    """The bench's traffic as envelopes per input partition: (kind, partition, value,
    events), calls first as a backlog delivers them."""
    scenario = Scenario.for_events(events, seed=11, run_id="sinkbench").clean()
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for raw in raw_events(scenario):
        grouped[(raw.kind, partition_for(raw.work_unit_id, PARTITIONS))].append(raw.data)
    found = []
    for (kind, partition), items in sorted(grouped.items()):
        for start in range(0, len(items), PER_MESSAGE):
            chunk = items[start:start + PER_MESSAGE]
            found.append((kind, partition, orjson.dumps(chunk), len(chunk)))
    return found


def run(events: int) -> dict[str, Any]:
    found = messages(events)
    total = sum(n for *_, n in found)
    codecs = {"calls": call_codec, "outcomes": outcome_codec}
    results: dict[str, Any] = {"events": total}

    started = time.perf_counter()
    for kind, _, value, _ in found:
        codecs[kind].decode(value)
    fast = time.perf_counter() - started
    started = time.perf_counter()
    for kind, _, value, _ in found:
        codecs[kind].decode_slow(value)
    slow = time.perf_counter() - started
    results["decode_fast_events_per_second"] = round(total / fast)
    results["decode_pydantic_events_per_second"] = round(total / slow)
    results["decode_speedup"] = round(slow / fast, 2)

    # The engine as the worker runs it (its collector tuned, tune_garbage_collector) and
    # under Python's default collector, alternated: A B A B, the best of each.
    defaults = gc.get_threshold()
    young_threshold = Settings().gc_young_threshold
    rates: dict[bool, list[float]] = {False: [], True: []}
    try:
        for tuned in (False, True, False, True):
            gc.unfreeze()
            gc.set_threshold(*defaults)
            if tuned:
                tune_garbage_collector(young_threshold)
            elapsed, out = _engine_pass(found)
            rates[tuned].append(total / elapsed)
    finally:  # the inserts below run under Python's collector, as before
        gc.unfreeze()
        gc.set_threshold(*defaults)
    results["engine_events_per_second"] = round(max(rates[True]))
    results["engine_default_gc_events_per_second"] = round(max(rates[False]))
    results["engine_gc_speedup"] = round(max(rates[True]) / max(rates[False]), 2)

    client = connect(f"chdb://{tempfile.mkdtemp(prefix='tokenyield-sinkbench-')}")
    rows = len(out.calls) + len(out.outcomes) + len(out.attributions)
    for arrow in (False, True, False, True):  # alternated: warm-up and drift cancel out
        database = "arrow" if arrow else "columns"
        client.command(f"DROP DATABASE IF EXISTS {database}")
        migrate(client, database)
        sink = ClickHouseSink(lambda: UnclosableClient(client), database)
        sink.arrow = arrow
        batches = split(out, 8)
        started = time.perf_counter()
        for batch in batches:
            asyncio.run(sink.write(batch))
        elapsed = time.perf_counter() - started
        sink.stop()
        key = "insert_arrow_rows_per_second" if arrow else "insert_columns_rows_per_second"
        results[key] = round(rows / elapsed)
    results["insert_rows"] = rows
    results["insert_speedup"] = round(results["insert_arrow_rows_per_second"]
                                      / results["insert_columns_rows_per_second"], 2)
    return results


def _engine_pass(found: list[tuple[str, int, bytes, int]]) -> tuple[float, Outputs]:
    """Every message through fresh engines: (seconds, the outputs)."""
    book = PriceBook.load()
    engines = {p: PartitionEngine(p, EngineConfig(partitions=PARTITIONS), lambda: book,
                                  lambda: 2**50, store={}) for p in range(PARTITIONS)}
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    out = Outputs()
    started = time.perf_counter()
    for kind, partition, value, _ in found:
        offset = offsets[(kind, partition)]
        offsets[(kind, partition)] += 1
        step = engines[partition].process(kind, value, Source(kind, partition, offset))  # type: ignore[arg-type]
        out.extend(step)
        out.cover(kind, partition, offset)
    return time.perf_counter() - started, out


def split(out: Outputs, parts: int) -> list[Outputs]:
    """The rows as ``parts`` batches (checkpoints), each with its own token."""
    batches = [Outputs() for _ in range(parts)]
    for name in ("calls", "outcomes", "attributions"):
        rows = getattr(out, name)
        size = -(-len(rows) // parts)
        for index, batch in enumerate(batches):
            getattr(batch, name).extend(rows[index * size:(index + 1) * size])
    for index, batch in enumerate(batches):
        batch.cover("bench", index, index)
    return batches


if __name__ == "__main__":
    cli = argparse.ArgumentParser(prog="python -m loadtest.sink_bench")
    cli.add_argument("--events", type=int, default=100_000)
    print(json.dumps(run(cli.parse_args().events), indent=2))
