"""Insert deduplication tokens drop an identical retry and nothing else.

A checkpoint whose batch read no message (the clock moved, and units expired) covers
no offset range. Before the token carried a digest of the rows, every such batch of a
partition had the token ``attributions|``, and ClickHouse dropped all but the first:
the second expired unit's attribution never reached ``attributions``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import orjson
import pytest

from loadtest.engine_into_clickhouse import EngineIntoClickHouse
from streams.clickhouse.client import migrate
from streams.clickhouse.sink import dedup_token
from streams.core.engine_config import EngineConfig
from streams.core.records import Outputs
from tests.clickhouse_fixtures import loaded_database
from tests.core_harness import T0, call

pytestmark = pytest.mark.clickhouse

DB = "tokenyield_tokens"


def test_checkpoints_that_read_no_message_all_reach_clickhouse() -> None:
    client = loaded_database().client
    migrate(client, DB)
    config = EngineConfig(partitions=1, deadline_seconds=60, retention_seconds=3600,
                          allowed_lateness_seconds=120)
    pipeline = EngineIntoClickHouse(client, DB, config, T0 + timedelta(days=5),
                                    retry_max_seconds=1)
    runtime = pipeline.runtimes[0]

    async def run() -> list[list[str]]:
        ticked = []
        for i, unit in enumerate(("A", "B", "C")):
            pipeline.apply("calls", 0, orjson.dumps(call(f"c-{unit}", unit, 1000 * i)))
            await pipeline.checkpoint()
            # Only the clock moves: past the unit's deadline, so it expires.
            runtime.engine.max_event_ms = int(
                (T0 + timedelta(seconds=1000 * i + 300)).timestamp() * 1000)
            ticked.append([a.work_unit_id for a in runtime.tick().attributions])
            assert not runtime.batch.ranges  # this batch covers no message
            await pipeline.checkpoint()
        return ticked

    try:
        assert asyncio.run(run()) == [["A"], ["B"], ["C"]]
    finally:
        pipeline.close()
    stored = client.query(f"SELECT work_unit_id, state FROM {DB}.attributions "
                          f"ORDER BY work_unit_id").result_rows
    assert stored == [("A", "unattributed"), ("B", "unattributed"), ("C", "unattributed")]


def test_an_identical_retry_has_the_same_token_and_other_rows_another() -> None:
    batch = Outputs()
    batch.cover("calls", 0, 7)
    same = dedup_token(batch, "attributions", b"rows")
    assert same == dedup_token(batch, "attributions", b"rows")
    assert same != dedup_token(batch, "attributions", b"other rows")
    assert same != dedup_token(batch, "alerts", b"rows")
    assert same.startswith("attributions|calls[0]:7-7|")
