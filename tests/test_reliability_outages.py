"""Outages of ClickHouse and of the broker: the worker waits, then loses and doubles
nothing. Real faults: a full disk under chdb, a frozen broker process, no broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka.tansu_broker import EmbeddedBroker, free_port
from tests.conftest import ROOT, WorkerHandle
from tests.stream_truth import publish_in_background, stream, truth

pytestmark = [pytest.mark.broker, pytest.mark.clickhouse, pytest.mark.slow]
DB = "tokenyield"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 96 MiB filesystem of its own, to fill up on purpose."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"this machine cannot mount a tmpfs to fill up: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    try:
        # Unbuffered: a buffered file's close flushes its tail into the full disk and
        # raises ENOSPC outside the suppress below (seen in a full CI run).
        out = open(filler, "wb", buffering=0)  # noqa: SIM115 (closed below, when full)
    except OSError as exc:
        # Seen once in a full CI run (not reproduced alone): say what filled the disk.
        sizes = sorted(((f.stat().st_size, str(f.relative_to(disk))) for f in
                        disk.rglob("*") if f.is_file()), reverse=True)[:15]
        pytest.fail(f"the disk was full before the filler ({exc}); largest files: {sizes}")
    chunk = b"\0" * (1 << 20)
    with out, contextlib.suppress(OSError):
        while True:
            out.write(chunk)  # a short write near the end; the next one raises ENOSPC
    return filler


async def committed(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offsets on ``topic``, summed (read without joining)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        total = 0
        for partition in partitions:
            total += await consumer.committed(TopicPartition(topic, partition)) or 0
        return total
    finally:
        await consumer.stop()


def check_exact(worker: WorkerHandle, expected: Any) -> None:
    worker.wait_for(f"SELECT count() FROM {DB}.model_calls FINAL", expected.calls, 120)
    worker.wait_for(f"SELECT count() FROM {DB}.outcomes FINAL", expected.outcomes, 60)
    worker.wait_for(f"SELECT count() FROM {DB}.attributions_latest FINAL",
                    len(expected.unit_outcomes), 60)
    worker.wait_for(f"SELECT sum(calls) FROM {DB}.cost_per_outcome_windows FINAL "
                    f"WHERE window_seconds = 3600 AND model = '*' AND agent = ''",
                    expected.calls, 60)
    assert Decimal(worker.scalar(f"SELECT sum(cost) FROM {DB}.model_calls FINAL")) == \
        expected.spend
    rows = worker.sql(f"SELECT work_unit_id, calls, outcomes, model_cost "
                      f"FROM {DB}.attributions_latest FINAL")
    assert {r[0]: (r[1], r[2], Decimal(r[3])) for r in rows} == {
        u: (expected.unit_calls.get(u, 0), expected.unit_outcomes[u],
            expected.unit_cost.get(u, Decimal(0))) for u in expected.unit_outcomes}
    # Outcomes reach the windows in later outboxes than their calls: wait for them too.
    worker.wait_for(f"SELECT sum(accepted_outcomes) FROM {DB}.cost_per_outcome_windows FINAL "
                    f"WHERE window_seconds = 3600 AND model = '*' AND agent = ''",
                    expected.accepted, 60)
    spend, accepted = worker.sql(
        f"SELECT sum(spend), sum(accepted_outcomes) FROM {DB}.cost_per_outcome_windows FINAL "
        f"WHERE window_seconds = 3600 AND model = '*' AND agent = ''")[0]
    assert (Decimal(spend), accepted) == (expected.spend, expected.accepted)


def test_a_full_clickhouse_disk_stops_the_partitions_and_loses_nothing(
        make_worker: Any, prefix: str, small_disk: Path) -> None:
    events = stream(units=800, seed=21)
    expected = truth(events)
    worker = make_worker(TOKENYIELD_CLICKHOUSE_DSN=f"chdb://{small_disk / 'clickhouse'}",
                         TOKENYIELD_SINK_RETRY_MAX_SECONDS="1").start()
    bootstrap = worker.env["TOKENYIELD_KAFKA_BOOTSTRAP"]
    group = worker.env["TOKENYIELD_APP_ID"]
    half = len(events) // 2
    thread, state = publish_in_background(bootstrap, prefix, events[:half], rate=4000)
    thread.join(60)
    worker.wait_for(f"SELECT count() > 0 FROM {DB}.model_calls", 1, 60)
    deadline = time.monotonic() + 30  # the first half is stored and its offsets committed
    while asyncio.run(committed(bootstrap, group, f"{prefix}calls")) == 0 and \
            time.monotonic() < deadline:
        time.sleep(0.5)

    filler = fill(small_disk)
    try:
        thread, state = publish_in_background(bootstrap, prefix, events[half:], rate=4000)
        thread.join(60)
        assert state["error"] is None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (worker.health() or {}).get("status") != \
                "degraded":
            time.sleep(0.5)
        health = worker.health() or {}
        assert health.get("status") == "degraded", health
        assert "NOT_ENOUGH_SPACE" in health["clickhouse_error"] or \
            "space" in health["clickhouse_error"].lower()
        # While inserts fail, the inputs' committed offsets stay where they are (after
        # the commit interval, for work acknowledged just before the disk filled).
        time.sleep(2)
        before = asyncio.run(committed(bootstrap, group, f"{prefix}calls"))
        time.sleep(4)
        assert asyncio.run(committed(bootstrap, group, f"{prefix}calls")) == before
        assert 'tokenyield_clickhouse_errors_total{operation="insert"}' in worker.metrics()
    finally:
        filler.unlink()
    check_exact(worker, expected)
    assert (worker.health() or {}).get("status") == "ok"
    # The rows are in; the acks follow at the partition's next message or tick (the
    # insert overlaps the stream) and the commit at Faust's next commit interval.
    deadline = time.monotonic() + 30
    while asyncio.run(committed(bootstrap, group, f"{prefix}calls")) <= before and \
            time.monotonic() < deadline:
        time.sleep(0.5)
    assert asyncio.run(committed(bootstrap, group, f"{prefix}calls")) > before


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(log_path=tmp_path / "own-broker.log").start()
    try:
        yield broker
    finally:
        if broker.process is not None and broker.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(broker.process.pid, signal.SIGCONT)
        broker.stop()


def test_a_frozen_broker_mid_run_delays_but_loses_nothing(
        make_worker: Any, prefix: str, own_broker: EmbeddedBroker) -> None:
    events = stream(units=800, seed=31)
    expected = truth(events)
    worker = make_worker(TOKENYIELD_KAFKA_BOOTSTRAP=own_broker.bootstrap).start()
    thread, state = publish_in_background(own_broker.bootstrap, prefix, events, rate=800,
                                          request_timeout_ms=60_000)
    while state["sent"] < len(events) // 3:
        time.sleep(0.05)
    assert own_broker.process is not None
    os.killpg(own_broker.process.pid, signal.SIGSTOP)  # no answers, connections hang
    time.sleep(8)
    os.killpg(own_broker.process.pid, signal.SIGCONT)
    thread.join(120)
    assert state["error"] is None, state["error"]
    check_exact(worker, expected)
    assert worker.process is not None and worker.process.poll() is None


def test_a_broker_that_is_not_there_at_start_is_waited_for(
        make_worker: Any, prefix: str, tmp_path: Path) -> None:
    port = free_port()
    handle = make_worker(TOKENYIELD_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}").launch()
    deadline = time.monotonic() + 30
    while "not reachable yet" not in handle.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "not reachable yet" in handle.log()
    assert f"127.0.0.1:{port}" in handle.log()
    assert handle.process is not None and handle.process.poll() is None  # waiting

    broker = EmbeddedBroker(port=port, log_path=tmp_path / "late-broker.log").start()
    try:
        events = stream(units=300, seed=41)
        expected = truth(events)
        deadline = time.monotonic() + 90
        while not handle.assigned() and time.monotonic() < deadline:
            time.sleep(0.3)
        thread, state = publish_in_background(broker.bootstrap, prefix, events, rate=3000)
        thread.join(60)
        assert state["error"] is None
        check_exact(handle, expected)
    finally:
        handle.stop()
        broker.stop()



BUGGY_WORKER = """
import streams.clickhouse.sink as sink

def broken_getter(record):
    raise TypeError("a column builder bug (simulated)")

# A bug in a column builder: every model_calls insert fails before it reaches ClickHouse.
sink.CALL_COLUMNS[:] = [(name, broken_getter if name == "input_tokens" else getter)
                        for name, getter in sink.CALL_COLUMNS]
from streams.cli import main
main(["worker"])
"""


class BuggyWorker(WorkerHandle):
    def launch(self) -> WorkerHandle:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-c", BUGGY_WORKER], env=self.env, cwd=ROOT,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self


def test_a_bug_in_a_column_builder_stops_the_worker_and_loses_nothing(
        make_worker: Any, prefix: str, tmp_path: Path) -> None:
    """Not retried for ever in "degraded": the worker stops with the error, having
    acknowledged nothing it did not store; a fixed worker then counts every event."""
    events = stream(units=300, seed=51)
    expected = truth(events)
    healthy = make_worker()
    buggy = BuggyWorker(healthy.env, healthy.data_dir, tmp_path / "buggy.log").start()
    bootstrap = buggy.env["TOKENYIELD_KAFKA_BOOTSTRAP"]
    thread, state = publish_in_background(bootstrap, prefix, events, rate=3000)
    thread.join(60)
    assert state["error"] is None
    assert buggy.process is not None
    try:
        code = buggy.process.wait(timeout=90)
    finally:
        buggy.kill()
    log = buggy.log()
    assert code != 0, log[-3000:]
    assert "SinkError" in log and "a column builder bug (simulated)" in log
    assert "fault in tokenyield, not in ClickHouse" in log
    assert asyncio.run(committed(bootstrap, buggy.env["TOKENYIELD_APP_ID"],
                                 f"{prefix}calls")) == 0
    check_exact(healthy.start(), expected)
