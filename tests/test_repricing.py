"""A price published for dates already priced, applied to the past with
``tokenyield prices reprice``, through a real worker: a counted correction."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from schemas.kafka_publisher import Publisher
from schemas.pricing import PriceEntry
from streams.feeds.price_feed import encode_price
from tests.conftest import ROOT, WorkerHandle
from tests.test_pipeline import produce

pytestmark = [pytest.mark.broker, pytest.mark.clickhouse]
DB = "tokenyield"


def test_reprice_applies_a_backdated_price_to_the_calls_already_priced(
        make_worker: Any, prefix: str) -> None:
    worker: WorkerHandle = make_worker().start()
    bootstrap = worker.env["TOKENYIELD_KAFKA_BOOTSTRAP"]
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    first = PriceEntry(provider="acme", model="m1", input_per_mtok=Decimal(1),
                       output_per_mtok=Decimal(1))
    # The provider's new price held from a day before the calls; it is published after
    # they were priced.
    later = first.model_copy(update={"input_per_mtok": Decimal(5), "output_per_mtok":
                                     Decimal(5), "effective_from": base - timedelta(days=1)})

    async def publish_calls() -> None:
        key, value = encode_price(first)
        await produce(bootstrap, f"{prefix}prices", value, key=key, partition=0)
        await asyncio.sleep(2)  # the price feed polls
        async with Publisher(bootstrap, topic_prefix=prefix) as publisher:
            for i in range(6):
                await publisher.call(
                    event_id=f"c{i}", work_unit_id=f"U{i % 3}",
                    occurred_at=(base + timedelta(seconds=10 * i)).isoformat(),
                    provider="acme", model="m1", input_tokens=1000, output_tokens=200,
                    team="support", workflow="triage")
            for u in range(3):
                await publisher.outcome(
                    event_id=f"o{u}", work_unit_id=f"U{u}",
                    occurred_at=(base + timedelta(seconds=90)).isoformat(), team="support",
                    workflow="triage", status="accepted")

    asyncio.run(publish_calls())
    worker.wait_for(f"SELECT toString(sum(cost)) FROM {DB}.model_calls FINAL", "0.0072")
    key, value = encode_price(later)
    asyncio.run(produce(bootstrap, f"{prefix}prices", value, key=key, partition=0))

    env = {**os.environ, **{k: v for k, v in worker.env.items() if k.startswith("TOKENYIELD_")}}
    command = [sys.executable, "-m", "streams.cli", "prices", "reprice",
               "--since", (base - timedelta(hours=1)).isoformat()]
    dry = subprocess.run([*command, "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "6 calls examined, 6 to reprice (+0.0288 USD)" in dry.stdout
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "published 6 repricing events" in done.stdout

    worker.wait_for(f"SELECT toString(sum(cost)) FROM {DB}.model_calls FINAL", "0.036")
    worker.wait_for(f"SELECT toString(sum(model_cost)) FROM {DB}.attributions_latest FINAL",
                    "0.036")
    worker.wait_for(f"SELECT toString(sum(spend)) FROM {DB}.v_window_totals "
                    f"WHERE window_seconds = 3600 AND scope = 'total'", "0.036")
    assert worker.scalar(f"SELECT count() FROM {DB}.model_calls FINAL") == 6
    assert worker.scalar(f"SELECT sum(calls) FROM {DB}.attributions_latest FINAL") == 6
    # A second run finds nothing left to do.
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120)
    assert "0 to reprice" in again.stdout, again.stdout + again.stderr
