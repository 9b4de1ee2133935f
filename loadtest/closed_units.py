"""What a closed (evicted) work unit costs: its summary's bytes, on disk and in memory.

Generated traffic runs through a pure ``PartitionEngine`` until every unit has its
outcome; the clock then moves past the retention so that every unit is evicted, and a
checkpoint writes the summaries. They are written into a real RocksDB (rocksdict, the
store Faust's tables use in the worker) and compacted, and the SST files' size is
divided by the number of units. Memory is measured with tracemalloc from before the
traffic to after the eviction's checkpoint: what the engine still holds for units
that are closed.

    python -m loadtest.closed_units --units 20000
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from schemas.pricing import PriceBook
from streams.core.checkpoint import Checkpointer
from streams.core.engine import PartitionEngine, Source
from streams.core.engine_config import EngineConfig
from streams.traffic.scenarios import Scenario, raw_events


class _Store(dict[bytes, bytes]):
    """The partition's table, in memory, as the engine reads it (get)."""


def measure(units: int) -> dict[str, Any]:
    """Two rounds of ``units`` units each, run to eviction: memory is compared between
    the end of the first round and the end of the second, so that tables grown once
    (and reused for the next units) do not count, only what closed units keep."""
    book = PriceBook.load()
    store = _Store()
    clock = {"now": int(time.time() * 1000)}
    engine = PartitionEngine(0, EngineConfig(partitions=1), lambda: book,
                             lambda: clock["now"], store=store)
    checkpointer = Checkpointer(engine)
    rounds = []
    for number in range(2):
        end = datetime.fromtimestamp(clock["now"] / 1000, tz=UTC)
        scenario = Scenario(seed=5 + number, run_id=f"closed{number}", work_units=units,
                            no_outcome_share=0.0, span_seconds=3600, end=end).clean()
        rounds.append(list(raw_events(scenario)))
        clock["now"] += 6 * 3_600_000
    gc.collect()
    tracemalloc.start()
    clock["now"] -= 12 * 3_600_000
    snapshots: list[tracemalloc.Snapshot] = []
    figures: dict[str, Any] = {}
    for events in rounds:
        clock["now"] += 6 * 3_600_000
        for kind in ("calls", "outcomes"):
            items = [e.data for e in events if e.kind == kind]
            for offset, start in enumerate(range(0, len(items), 500)):
                engine.process(kind, orjson.dumps(items[start:start + 500]),  # type: ignore[arg-type]
                               Source(kind, 0, offset))
        checkpointer.plan()
        engine.max_event_ms += 3 * 3_600_000  # past every unit's retention
        engine.tick()
        plan = checkpointer.plan()
        summaries = [(k, v) for k, v in plan.batched if k.startswith(b"s/")]
        for key, value in plan.batched:  # as the worker writes them
            store[key] = value
        figures = {
            "closed_units": len(summaries),
            "closed_unit_events": round(len(events) / max(1, len(summaries)), 2),
            "closed_unit_summary_bytes": round(
                sum(len(k) + len(v) for k, v in summaries) / max(1, len(summaries))),
            "closed_unit_disk_bytes": round(_on_disk(summaries) / max(1, len(summaries))),
        }
        del plan, summaries
        store.clear()  # on disk in the worker: not this process's memory
        gc.collect()
        snapshots.append(tracemalloc.take_snapshot())
    tracemalloc.stop()
    held = sum(s.size_diff for s in snapshots[1].compare_to(snapshots[0], "filename"))
    figures["closed_unit_memory_bytes"] = round(max(0, held) / max(1, figures["closed_units"]),
                                                1)
    figures["live_units_after_eviction"] = len(engine.units)
    return figures


def _on_disk(records: list[tuple[bytes, bytes]]) -> int:
    """Bytes of the compacted SST files holding ``records`` in RocksDB."""
    from rocksdict import Options, Rdict

    path = Path(tempfile.mkdtemp(prefix="tokenyield-summaries-"))
    try:
        db = Rdict(str(path), Options())
        for key, value in records:
            db[key] = value
        db.flush()
        db.compact_range(None, None)
        db.close()
        return sum(f.stat().st_size for f in path.glob("*.sst"))
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=20000)
    figures = measure(parser.parse_args(argv).units)
    for key, value in figures.items():
        print(f"{key:<28} {value:>12,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
