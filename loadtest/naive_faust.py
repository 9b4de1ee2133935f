"""The typical user's baseline: a Faust agent with a ``faust.Record`` per event and a
table update per event, on single-event messages. Run by the benchmark as its own
process:

    NAIVE_BOOTSTRAP=host:port NAIVE_PREFIX=bench-naive. NAIVE_TOTAL=30000 \
    NAIVE_STATUS=/tmp/status.json python -m loadtest.naive_faust worker

It writes ``{"count", "first", "last"}`` (events and wall times) to the status file as
it goes, so the benchmark can time it without touching its loop.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import faust

BOOTSTRAP = os.environ.get("NAIVE_BOOTSTRAP", "localhost:9092")
PREFIX = os.environ.get("NAIVE_PREFIX", "bench-naive.")
TOTAL = int(os.environ.get("NAIVE_TOTAL", "0"))
STATUS = Path(os.environ.get("NAIVE_STATUS", "naive-status.json"))

app = faust.App(f"{PREFIX.rstrip('.')}-app", broker=f"kafka://{BOOTSTRAP}", store="memory://",
                topic_partitions=4, web_enabled=False, broker_rebalance_timeout=3.0,
                broker_session_timeout=10.0, broker_heartbeat_interval=1.0)


class Call(faust.Record, serializer="json"):
    event_id: str
    work_unit_id: str
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    team: str = ""
    workflow: str = ""


class Outcome(faust.Record, serializer="json"):
    event_id: str
    work_unit_id: str
    status: str = ""


spend = app.Table("naive-spend", default=float, partitions=4)
outcomes = app.Table("naive-outcomes", default=int, partitions=4)
seen = {"count": 0, "first": 0.0, "last": 0.0}


def tick() -> None:
    now = time.time()
    seen["count"] += 1
    seen["first"] = seen["first"] or now
    seen["last"] = now
    if seen["count"] % 1000 == 0 or seen["count"] == TOTAL:
        STATUS.write_text(json.dumps(seen))


@app.agent(app.topic(f"{PREFIX}calls", value_type=Call))
async def on_call(stream: faust.Stream) -> None:
    async for call in stream:
        # A float price, as a typical first version would have it.
        spend[call.work_unit_id] += (call.input_tokens * 2.5 + call.output_tokens * 10) / 1e6
        tick()


@app.agent(app.topic(f"{PREFIX}outcomes", value_type=Outcome))
async def on_outcome(stream: faust.Stream) -> None:
    async for outcome in stream:
        outcomes[outcome.work_unit_id] += 1
        tick()


if __name__ == "__main__":
    app.main()
