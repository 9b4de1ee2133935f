"""The rollup stage's capacity in cells per second (docs/SCALING.md, *The rollup stage*).

    python -m loadtest.rollup_bench --events 200000 --checkpoint-messages 4

The bench's generated traffic runs through one pure engine per partition; every
``--checkpoint-messages`` messages of a partition its window changes are taken as a
checkpoint does (an ``Outbox``, encoded as the rollup receives it). Then one
``WindowRollup`` applies them all, as the rollup agent does: decode, add, and at each
"checkpoint" of the rollup the running rows and the finished windows. Timed alone, in
one process, no Kafka and no sink: the figure is the stage's own ceiling.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from loadtest.sink_bench import PARTITIONS, messages
from schemas.pricing import PriceBook
from streams.core.engine import PartitionEngine, Source
from streams.core.engine_config import EngineConfig
from streams.core.rollup import WindowRollup
from streams.core.windows import Outbox


def outboxes(events: int, per_checkpoint: int) -> list[bytes]:
    book = PriceBook.load()
    engines = {p: PartitionEngine(p, EngineConfig(partitions=PARTITIONS), lambda: book,
                                  lambda: 2**50, store={}) for p in range(PARTITIONS)}
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    seen: dict[int, int] = defaultdict(int)
    found: list[bytes] = []
    for kind, partition, value, _ in messages(events):
        offset = offsets[(kind, partition)]
        offsets[(kind, partition)] += 1
        engine = engines[partition]
        engine.process(kind, value, Source(kind, partition, offset))  # type: ignore[arg-type]
        seen[partition] += 1
        if seen[partition] % per_checkpoint == 0:
            found.append(Outbox(partition, "bench", len(found), engine.clock_ms,
                                engine.book.take()).encode())
    for partition, engine in engines.items():
        found.append(Outbox(partition, "bench", len(found), engine.clock_ms,
                            engine.book.take()).encode())
    return found


def run(events: int, per_checkpoint: int, bodies: list[bytes] | None = None
        ) -> dict[str, float]:
    """Time the rollup over ``bodies`` (by default, new outboxes of ``events`` events)."""
    bodies = outboxes(events, per_checkpoint) if bodies is None else bodies
    cells = sum(len(Outbox.decode(body).cells) for body in bodies)
    rollup = WindowRollup("USD", partitions=PARTITIONS)
    started = time.perf_counter()
    rows = 0
    for index, body in enumerate(bodies):
        rollup.apply(Outbox.decode(body), now_ms=index)
        if index % PARTITIONS == PARTITIONS - 1:  # the rollup's own checkpoint
            rows += len(rollup.updates())
    rows += len(rollup.updates())
    elapsed = time.perf_counter() - started
    return {"outboxes": len(bodies), "cells": cells, "rows": rows,
            "seconds": round(elapsed, 3), "cells_per_second": round(cells / elapsed),
            "cells_per_outbox": round(cells / len(bodies), 1)}


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    cli.add_argument("--events", type=int, default=200_000)
    cli.add_argument("--checkpoint-messages", type=int, default=4,
                     help="messages of a partition per checkpoint (4 x 500 events)")
    arguments = cli.parse_args()
    for name, value in run(arguments.events, arguments.checkpoint_messages).items():
        print(f"{name:<20} {value:>12,}")
