"""``tokenyield bench``: the engine against its baselines, in one run on one broker.

Stages (each prints progress on stderr; the results go to stdout and, with --json, a file):

1. **engine**: N events pre-published in envelopes, then a real ``tokenyield worker``
   process (validation, exact pricing, join, windows, checkpoints, chdb sink) drains
   them; timed from partition assignment to the last row counted by the sink.
2. **raw**: an aiokafka + orjson loop reading the same messages: the Python ceiling.
3. **naive**: a Faust agent with a Record and a table update per event, on
   single-event messages (loadtest/naive_faust.py): the typical user's baseline.
4. **latency**: the engine's worker at a sustained rate (10,000 events/s): outcome
   publish to attribution on the topic, and to its row in ClickHouse (p50, p99).
5. **memory**: engine state per open work unit (tracemalloc of the pure engine with K
   units awaiting their outcome; and checkpoint bytes per unit).
6. **scaling**: the same N events drained by two worker processes (separate chdb
   paths, one consumer group) against one; then by ``tokenyield worker --processes N``
   for 2 and for the machine's cores (the embedded default: one chdb, written by the
   group's first worker).
7. **dashboards** (``--dashboards``): every Grafana panel's SQL over ``--calls`` calls
   in chdb (loadtest/dashboard_bench.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from loadtest import closed_units
from loadtest.cpu_meter import CoresUsed, CpuMeter
from schemas.pricing import PriceBook
from streams.app.demo import WorkerProcessHandle
from streams.core.checkpoint import Checkpointer
from streams.core.engine import PartitionEngine, Source
from streams.core.engine_config import EngineConfig
from streams.kafka.tansu_broker import EmbeddedBroker
from streams.settings import Settings
from streams.traffic.generator import publisher_for, run_benchmark
from streams.traffic.scenarios import Scenario, encoded_events, raw_events

PARTITIONS = 4


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def metric_sum(metrics: str, name: str, label: str = "") -> float:
    pattern = rf"^{name}\{{[^}}]*{label}[^}}]*\}} ([0-9.e+]+)$"
    return sum(float(v) for v in re.findall(pattern, metrics, re.MULTILINE))


def sink_rows(worker: WorkerProcessHandle) -> float:
    metrics = worker.metrics()
    return (metric_sum(metrics, "tokenyield_clickhouse_rows_total", 'table="model_calls"')
            + metric_sum(metrics, "tokenyield_clickhouse_rows_total", 'table="outcomes"'))


class Bench:
    def __init__(self, events: int, root: Path, quick: bool) -> None:
        self.events = events
        self.root = root
        self.quick = quick
        self.broker = EmbeddedBroker(log_path=root / "broker.log")
        self.results: dict[str, Any] = {}
        self.last_cores: CoresUsed | None = None  # of the last drain

    # -- plumbing ---------------------------------------------------------------------
    def worker(self, name: str, prefix: str, app_id: str | None = None,
               extra: dict[str, str] | None = None, processes: int = 1
               ) -> WorkerProcessHandle:
        data_dir = self.root / name
        settings = Settings(data_dir=data_dir, topic_prefix=prefix, partitions=PARTITIONS,
                            kafka_bootstrap=self.broker.bootstrap)
        environment = {
            "TOKENYIELD_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "TOKENYIELD_TOPIC_PREFIX": prefix, "TOKENYIELD_PARTITIONS": str(PARTITIONS),
            "TOKENYIELD_APP_ID": app_id or prefix.rstrip("."),
            "TOKENYIELD_REBALANCE_TIMEOUT_SECONDS": "2", "TOKENYIELD_LOG_LEVEL": "warning",
            "TOKENYIELD_DEADLINE_SECONDS": "86400", **(extra or {})}
        return WorkerProcessHandle(settings, data_dir / "worker.log", environment, processes)

    def prepublish(self, prefix: str, events: int, mode: str = "envelope") -> int:
        scenario = Scenario.for_events(events, seed=11, run_id=prefix.rstrip(".")).clean()
        report = asyncio.run(run_benchmark(self.broker.bootstrap, events, mode,  # type: ignore[arg-type]
                                           scenario=scenario, topic_prefix=prefix,
                                           partitions=PARTITIONS))
        say(f"published {report.generated:,} events to {prefix}* ({mode}, "
            f"{report.publish.events_per_second:,.0f} events/s)")
        return report.generated

    def drain(self, workers: list[WorkerProcessHandle], total: int, what: str) -> float:
        """Start the workers, then time them from the moment all own partitions to the
        sink's last row (what they stored before that moment is left out)."""
        for worker in workers:
            worker.launch()
        for worker in workers:
            worker.wait_ready(timeout=180, say=lambda text: None)
        started = time.monotonic()
        before = sum(sink_rows(w) for w in workers)
        meter = CpuMeter({"worker": [w.process.pid for w in workers if w.process],
                          "broker": [self.broker.process.pid] if self.broker.process else []})
        last_report = 0.0
        while True:
            done = sum(sink_rows(w) for w in workers)
            now = time.monotonic()
            if done >= total:
                break
            if now - last_report > 2:
                last_report = now
                say(f"{what}: {done:,.0f} of {total:,} events stored "
                    f"({done / max(now - started, 1e-9):,.0f}/s)")
            if now - started > 900:
                raise TimeoutError(f"{what}: only {done:,.0f} of {total:,} stored in 900 s")
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        self.last_cores = meter.stop()
        return (total - before) / elapsed

    def record_cores(self, prefix: str, rate: float) -> None:
        """The last drain's cores (workers, broker) and worker CPU per event, as
        ``<prefix>_worker_cores`` etc. (left out where CPU time cannot be read)."""
        used = self.last_cores
        if used is None:
            return
        self.results[f"{prefix}_worker_cores"] = round(used.cores("worker"), 2)
        self.results[f"{prefix}_broker_cores"] = round(used.cores("broker"), 2)
        self.results[f"{prefix}_worker_cpu_us_per_event"] = round(
            used.cores("worker") / rate * 1e6, 1)

    # -- stages -------------------------------------------------------------------------
    def stage_engine(self) -> None:
        total = self.prepublish("bench-engine.", self.events)
        worker = self.worker("engine", "bench-engine.")
        try:
            rate = self.drain([worker], total, "engine")
            self.results["engine_events_per_second"] = round(rate)
            self.record_cores("engine", rate)
            if self.last_cores is not None:
                # Two processes at one's CPU per event, on the cores this machine has.
                one = self.last_cores.cores("worker") + self.last_cores.cores("broker")
                self.results["speedup_ceiling_2_processes"] = round(
                    min(2, os.cpu_count() or 1) / max(one, 1.0), 2)
                say(f"engine: the worker used {self.last_cores.cores('worker'):.2f} cores and "
                    f"the broker {self.last_cores.cores('broker'):.2f}: two processes can "
                    f"reach {self.results['speedup_ceiling_2_processes']:.2f}x here at "
                    f"the same CPU per event")
            say(f"engine: {rate:,.0f} events/s end to end (to rows in chdb)")
            # First at a rate this worker sustains (half its measured throughput), then at
            # the goal's 10,000 events/s, which is a backlog if that is more than it can do.
            # The goal's rate is held for two minutes, as the goal says (a backlog, if any,
            # shows in the p99); the rate this worker sustains for 30 s.
            sustainable = max(500.0, min(10000.0, round(rate / 2, -2)))
            self.stage_latency(worker, sustainable, "latency_sustainable_", "lat-s",
                               seconds=8 if self.quick else 30)
            self.stage_latency(worker, 2000.0 if self.quick else 10000.0, "latency_", "lat",
                               seconds=8 if self.quick else 120)
        finally:
            worker.stop()
        self.total = total

    def stage_raw(self) -> None:
        total = self.total

        async def consume() -> float:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.broker.bootstrap, group_id=None,
                                        enable_auto_commit=False, max_partition_fetch_bytes=8 << 20,
                                        fetch_max_bytes=32 << 20)
            await consumer.start()
            try:
                parts = [TopicPartition(f"bench-engine.{kind}", p)
                         for kind in ("calls", "outcomes") for p in range(PARTITIONS)]
                consumer.assign(parts)
                await consumer.seek_to_beginning(*parts)
                count, started = 0, 0.0
                while count < total:
                    batches = await consumer.getmany(timeout_ms=1000, max_records=20000)
                    started = started or time.monotonic()
                    for records in batches.values():
                        for record in records:
                            value = orjson.loads(record.value)
                            count += len(value) if isinstance(value, list) else \
                                len(value.get("events", [value]))
                return total / (time.monotonic() - started)
            finally:
                await consumer.stop()

        rate = asyncio.run(consume())
        self.results["raw_events_per_second"] = round(rate)
        say(f"raw aiokafka + orjson: {rate:,.0f} events/s")

    def stage_naive(self) -> None:
        events = min(self.events, 6000 if self.quick else 30000)
        total = self.prepublish("bench-naive.", events, mode="single")
        status = self.root / "naive-status.json"
        env = {**os.environ, "NAIVE_BOOTSTRAP": self.broker.bootstrap,
               "NAIVE_PREFIX": "bench-naive.", "NAIVE_TOTAL": str(total),
               "NAIVE_STATUS": str(status)}
        log = open(self.root / "naive.log", "wb")  # noqa: SIM115 - closed below
        process = subprocess.Popen([sys.executable, "-m", "loadtest.naive_faust", "worker",
                                    "--loglevel", "warn", "--without-web"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=self.root, start_new_session=True)
        try:
            deadline = time.monotonic() + 900
            seen: dict[str, float] = {}
            last_report = 0.0
            while time.monotonic() < deadline:
                if status.exists():
                    seen = json.loads(status.read_text() or "{}")
                if seen.get("count", 0) >= total:
                    break
                if process.poll() is not None:
                    raise RuntimeError(f"the naive Faust app exited: {self.root / 'naive.log'}")
                if time.monotonic() - last_report > 2:
                    last_report = time.monotonic()
                    say(f"naive Faust: {seen.get('count', 0):,.0f} of {total:,} events")
                time.sleep(0.2)
            rate = (seen["count"] - 1) / max(seen["last"] - seen["first"], 1e-9)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()
        self.results["naive_events_per_second"] = round(rate)
        self.results["naive_events"] = total
        say(f"naive Faust: {rate:,.0f} events/s")

    def stage_latency(self, worker: WorkerProcessHandle, rate: float, prefix: str,
                      run_id: str, seconds: int, topics: str = "bench-engine.") -> None:
        """Publish at ``rate`` for ``seconds`` to the worker's ``topics`` (the Python
        publisher, which batches as services do), and time every outcome to its first
        attribution on the topic and to its row in ClickHouse."""
        units = int(rate * seconds / 4.5)
        scenario = Scenario(seed=5, run_id=run_id, work_units=units, span_seconds=seconds,
                            outcome_delay_max_seconds=60, end=None, lag_seconds=0).clean()
        published: dict[str, float] = {}

        async def run() -> None:
            async with publisher_for(self.broker.bootstrap, topic_prefix=topics,
                                     partitions=PARTITIONS) as publisher:
                started = time.monotonic()
                last_report = started
                sent = 0
                for event in encoded_events(scenario):  # made as sent: minutes of events
                    now = time.monotonic()
                    ahead = sent / rate - (now - started)
                    if ahead > 0.002:
                        await asyncio.sleep(ahead)
                    if now - last_report > 10:
                        last_report = now
                        say(f"latency: {sent:,} events published in {now - started:.0f} s "
                            f"of {seconds} at {rate:,.0f}/s")
                    topic = publisher.calls_topic if event.kind == "calls" \
                        else publisher.outcomes_topic
                    await publisher.publish_raw(topic, event.work_unit_id, event.value)
                    if event.kind == "outcomes":
                        published.setdefault(event.work_unit_id, time.time())
                    sent += 1
                await publisher.flush()
                achieved = sent / (time.monotonic() - started)
                self.results[f"{prefix}rate_events_per_second"] = round(achieved)
                self.results[f"{prefix}seconds"] = round(time.monotonic() - started)
                say(f"latency: published {sent:,} events at {achieved:,.0f}/s")

        # Where the cores go at this rate: the publisher (this process, its own threads
        # only), the worker's tree and the broker; and what the worker stored meanwhile.
        meter = CpuMeter({"worker": [worker.process.pid] if worker.process else [],
                          "broker": [self.broker.process.pid] if self.broker.process else []})
        stored_before, publisher_cpu = sink_rows(worker), time.process_time()
        asyncio.run(run())
        publisher_cpu = time.process_time() - publisher_cpu
        used, stored = meter.stop(), sink_rows(worker) - stored_before
        if used is not None and used.seconds > 0:
            self._record_latency_cores(prefix, used, publisher_cpu, stored)
        to_topic = asyncio.run(self._attribution_times(published, f"{topics}attributions"))
        deadline = time.monotonic() + 60
        rows: dict[str, float] = {}
        while time.monotonic() < deadline and len(rows) < len(published):
            found = worker.query(
                "SELECT work_unit_id, toUnixTimestamp64Milli(min(ingested_at)) FROM "
                f"tokenyield.attributions WHERE outcomes > 0 AND startsWith(work_unit_id, "
                f"'{run_id}-') "
                "GROUP BY work_unit_id")
            rows = {str(u): int(ms) / 1000 for u, ms in found}
            time.sleep(1)
        to_row = [rows[u] - t for u, t in published.items() if u in rows]
        r = self.results
        for name, values in (("attribution", to_topic), ("clickhouse_row", to_row)):
            values = sorted(values)
            if values:
                r[f"{prefix}{name}_p50_seconds"] = round(_pct(values, 50), 3)
                r[f"{prefix}{name}_p99_seconds"] = round(_pct(values, 99), 3)
        say(f"latency at {r.get(f'{prefix}rate_events_per_second')} events/s: outcome -> "
            f"attribution p50 {r.get(f'{prefix}attribution_p50_seconds')} s, p99 "
            f"{r.get(f'{prefix}attribution_p99_seconds')} s; -> ClickHouse row p50 "
            f"{r.get(f'{prefix}clickhouse_row_p50_seconds')} s, p99 "
            f"{r.get(f'{prefix}clickhouse_row_p99_seconds')} s")

    def _record_latency_cores(self, prefix: str, used: CoresUsed, publisher_cpu: float,
                              stored: float) -> None:
        """While publishing at a rate: each role's cores, the events the worker stored
        per second, its CPU per stored event, and the CPU per event a worker could spend
        at the published rate on the cores the publisher and the broker leave."""
        r = self.results
        publisher = publisher_cpu / used.seconds
        kept = stored / used.seconds
        r[f"{prefix}worker_cores"] = round(used.cores("worker"), 2)
        r[f"{prefix}broker_cores"] = round(used.cores("broker"), 2)
        r[f"{prefix}publisher_cores"] = round(publisher, 2)
        r[f"{prefix}worker_stored_events_per_second"] = round(kept)
        if kept > 0:
            r[f"{prefix}worker_cpu_us_per_event"] = round(used.cores("worker") / kept * 1e6, 1)
        rate = r.get(f"{prefix}rate_events_per_second", 0)
        left = max(0.0, (os.cpu_count() or 1) - publisher - used.cores("broker"))
        if rate > 0:
            r[f"{prefix}worker_cpu_us_per_event_affordable"] = round(left / rate * 1e6, 1)
        say(f"latency: while publishing, the publisher used {publisher:.2f} cores, the "
            f"broker {used.cores('broker'):.2f} and the worker {used.cores('worker'):.2f}, "
            f"storing {kept:,.0f} events/s; at {rate:,} events/s a worker could spend "
            f"{r.get(f'{prefix}worker_cpu_us_per_event_affordable', 0):,} µs of CPU per event "
            f"on the {left:.2f} cores left")

    async def _attribution_times(self, published: dict[str, float], topic: str
                                 ) -> list[float]:
        consumer = AIOKafkaConsumer(topic,
                                    bootstrap_servers=self.broker.bootstrap, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        first: dict[str, float] = {}
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(first) < len(published):
                batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for records in batches.values():
                    for record in records:
                        for row in orjson.loads(record.value):
                            unit = row["work_unit_id"]
                            if unit in published and row["outcomes"] > 0 and unit not in first:
                                first[unit] = record.timestamp / 1000
        finally:
            await consumer.stop()
        return [first[u] - published[u] for u in first]

    def stage_memory(self) -> None:
        units = 5000 if self.quick else 50000
        book = PriceBook.load()
        engine = PartitionEngine(0, EngineConfig(partitions=1), lambda: book,
                                 lambda: int(time.time() * 1000))
        scenario = Scenario(seed=3, run_id="mem", work_units=units, no_outcome_share=1.0,
                            span_seconds=3600).clean()
        calls = [e.data for e in raw_events(scenario) if e.kind == "calls"]
        batches = [orjson.dumps(calls[i:i + 500]) for i in range(0, len(calls), 500)]
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for offset, batch in enumerate(batches):
            engine.process("calls", batch, Source("calls", 0, offset))
        hot = tracemalloc.take_snapshot()
        # As in the worker, which checkpoints every second: a checkpoint parks the units
        # unused for ``park_after_checkpoints`` checkpoints as their serialized bytes.
        checkpointer = Checkpointer(engine)
        plan = checkpointer.plan()
        saved = sum(len(k) + len(v) for k, v in plan.writes) + sum(map(len, plan.meta))
        del plan  # written to the state store by now, in the worker
        for _ in range(engine.config.park_after_checkpoints):
            checkpointer.plan()
        gc.collect()
        parked = tracemalloc.take_snapshot()
        tracemalloc.stop()
        open_units = len(engine.units)

        def grown(after: tracemalloc.Snapshot) -> int:
            return sum(s.size_diff for s in after.compare_to(before, "filename"))

        r = self.results
        r["memory_bytes_per_open_unit"] = round(grown(parked) / open_units)
        r["memory_bytes_per_open_unit_hot"] = round(grown(hot) / open_units)
        r["checkpoint_bytes_per_open_unit"] = round(saved / open_units)
        r["memory_open_units"] = open_units
        r["memory_calls_per_unit"] = round(len(calls) / open_units, 2)
        say(f"memory: {r['memory_bytes_per_open_unit']:,} bytes per open unit between "
            f"checkpoints (parked), {r['memory_bytes_per_open_unit_hot']:,} while in use "
            f"({open_units:,} units, {len(calls) / open_units:.1f} calls each); "
            f"{r['checkpoint_bytes_per_open_unit']:,} bytes per unit in a checkpoint")
        closed = closed_units.measure(2000 if self.quick else 20000)
        r.update(closed)
        say(f"closed units: {closed['closed_unit_disk_bytes']:,} bytes on disk per unit "
            f"(RocksDB, compacted; {closed['closed_unit_summary_bytes']:,} bytes a summary "
            f"record), {closed['closed_unit_memory_bytes']:,} bytes of memory per unit "
            f"({closed['closed_units']:,} units, {closed['closed_unit_events']} events each)")

    def stage_scaling(self) -> None:
        total = self.prepublish("bench-scale.", self.events)
        workers = [self.worker(f"scale-{i}", "bench-scale.", app_id="bench-scale")
                   for i in range(2)]
        try:
            rate = self.drain(workers, total, "2 workers")
        finally:
            for w in workers:
                w.stop()
        one = self.results["engine_events_per_second"]
        self.results["two_workers_events_per_second"] = round(rate)
        self.record_cores("two_workers", rate)
        self.results["speedup_two_workers"] = round(rate / one, 2)
        say(f"2 workers: {rate:,.0f} events/s, {rate / one:.2f}x one")
        # The embedded default with the cores: `tokenyield worker --processes N`, one
        # chdb written by the first worker for all (streams.clickhouse.relay).
        for count in sorted({2, min(PARTITIONS, os.cpu_count() or 1)} - {1}):
            total = self.prepublish(f"bench-group{count}.", self.events)
            group = self.worker(f"group-{count}", f"bench-group{count}.", processes=count)
            try:
                rate = self.drain([group], total, f"--processes {count}")
                self.results[f"processes_{count}_events_per_second"] = round(rate)
                self.record_cores(f"processes_{count}", rate)
                self.results[f"speedup_processes_{count}"] = round(rate / one, 2)
                say(f"--processes {count} (one chdb): {rate:,.0f} events/s, "
                    f"{rate / one:.2f}x one")
                if count == 2:  # the goal's latency, on the cores: the embedded default
                    self.stage_latency(group, 2000.0 if self.quick else 10000.0,
                                       "processes_2_latency_", "lat-p2",
                                       seconds=8 if self.quick else 120,
                                       topics="bench-group2.")
            finally:
                group.stop()

    def run(self, stages: list[Callable[[], None]]) -> dict[str, Any]:
        self.broker.start()
        try:
            for stage in stages:
                stage()
        finally:
            self.broker.stop()
        r = self.results
        if "raw_events_per_second" in r:
            r["engine_over_raw"] = round(r["engine_events_per_second"]
                                         / r["raw_events_per_second"], 3)
        if "naive_events_per_second" in r:
            r["engine_over_naive"] = round(r["engine_events_per_second"]
                                           / r["naive_events_per_second"], 2)
        r["events"] = self.events
        r["environment"] = environment()
        return r


def _pct(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def environment() -> dict[str, Any]:
    from importlib.metadata import version

    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line)
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "cpu": cpu,
            "platform": platform.platform(),
            "packages": {p: version(p) for p in ("faust-streaming", "aiokafka", "chdb",
                                                  "clickhouse-connect", "orjson")}}


GOALS = [
    ("engine_events_per_second", ">=", 50000, "events/s end to end"),
    ("engine_over_naive", ">=", 15, "x the naive Faust baseline"),
    ("engine_over_raw", ">=", 0.2, "x the raw aiokafka ceiling"),
    ("latency_attribution_p99_seconds", "<", 1.0, "s p99 outcome -> attribution"),
    ("latency_clickhouse_row_p99_seconds", "<", 3.0, "s p99 outcome -> ClickHouse row"),
    ("memory_bytes_per_open_unit", "<", 1024, "bytes per open work unit"),
    ("closed_unit_disk_bytes", "<", 200, "bytes on disk per closed unit"),
    ("processes_2_latency_attribution_p99_seconds", "<", 1.0,
     "s p99 -> attribution, --processes 2"),
    ("speedup_two_workers", ">=", 1.7, "x from 1 to 2 workers"),
    ("speedup_processes_2", ">=", 1.7, "x from 1 to --processes 2"),
    ("dashboard_median_ms_worst_panel", "<", 300, "ms median, slowest panel"),
    ("dashboard_median_ms_worst_panel_30d", "<", 300, "ms, slowest panel over 30 days"),
    ("dashboard_median_ms_worst_panel_2d", "<", 100, "ms, slowest panel over 2 days"),
]


def summary(results: dict[str, Any]) -> str:
    lines = ["", "tokenyield bench: results", ""]
    for key, op, goal, unit in GOALS:
        if key not in results:
            continue
        value = results[key]
        met = value >= goal if op == ">=" else value < goal
        lines.append(f"  {key:<38} {value:>12,} {unit:<34} goal {op} {goal:<8} "
                     f"{'met' if met else 'NOT met'}")
    for key in ("raw_events_per_second", "naive_events_per_second",
                "two_workers_events_per_second", "speedup_ceiling_2_processes",
                *(f"{stage}_{figure}" for stage in ("engine", "two_workers", "processes_2")
                  for figure in ("worker_cores", "broker_cores", "worker_cpu_us_per_event")),
                *(key for n in range(2, PARTITIONS + 1) for key in (
                    f"processes_{n}_events_per_second", f"speedup_processes_{n}")),
                "latency_rate_events_per_second", "latency_seconds",
                *(f"{stage}{figure}" for stage in ("latency_", "processes_2_latency_")
                  for figure in ("publisher_cores", "broker_cores", "worker_cores",
                                 "worker_stored_events_per_second",
                                 "worker_cpu_us_per_event",
                                 "worker_cpu_us_per_event_affordable")),
                "latency_attribution_p50_seconds", "latency_clickhouse_row_p50_seconds",
                "processes_2_latency_rate_events_per_second", "processes_2_latency_seconds",
                "processes_2_latency_attribution_p50_seconds",
                "processes_2_latency_clickhouse_row_p50_seconds",
                "processes_2_latency_clickhouse_row_p99_seconds",
                "latency_sustainable_rate_events_per_second",
                "latency_sustainable_attribution_p50_seconds",
                "latency_sustainable_attribution_p99_seconds",
                "latency_sustainable_clickhouse_row_p50_seconds",
                "latency_sustainable_clickhouse_row_p99_seconds",
                "dashboard_calls", "dashboard_median_ms_worst_panel_2d_merged",
                "dashboard_median_ms_worst_panel_30d_merged",
                "dashboard_median_ms_worst_unit_panel_2d_unsettled",
                "dashboard_median_ms_worst_unit_panel_30d_unsettled",
                "dashboard_settle_seconds",
                "memory_bytes_per_open_unit_hot", "checkpoint_bytes_per_open_unit",
                "closed_unit_summary_bytes", "closed_unit_memory_bytes"):
        if key in results:
            lines.append(f"  {key:<38} {results[key]:>12,}")
    return "\n".join(lines)


def main(events: int, json_path: Path | None, quick: bool, dashboards: bool,
         calls: int, keep: bool = False) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="tokenyield-bench-"))
    try:
        bench = Bench(events, root, quick)
        stages = [bench.stage_engine, bench.stage_raw, bench.stage_naive, bench.stage_memory,
                  bench.stage_scaling]
        results = bench.run(stages)
        if dashboards:
            from loadtest.dashboard_bench import run_dashboards

            results.update(run_dashboards(calls, root / "dashboards", say))
    finally:
        if not keep:  # brokers' logs, chdb paths and worker logs: gigabytes in a full run
            shutil.rmtree(root, ignore_errors=True)
        else:
            say(f"work files kept in {root}")
    results["work_dir"] = str(root)
    print(summary(results))
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2, default=str))
        print(f"\nresults written to {json_path}")
    return results


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="tokenyield bench",
        description="Runs on its own embedded broker, in a temporary directory: the engine "
                    "as the worker runs it, a raw aiokafka + orjson loop, a naive Faust "
                    "agent, latency at a sustained rate, memory per open and per closed work "
                    "unit and the speed-up from one to two workers (docs/BENCHMARKS.md).")
    cli.add_argument("--events", type=int, default=300_000,
                     help="events for the throughput stages (default 300000)")
    cli.add_argument("--json", type=Path, default=None, help="also write results here")
    cli.add_argument("--quick", action="store_true",
                     help="a small smoke run (20000 events, short latency stage)")
    cli.add_argument("--dashboards", action="store_true",
                     help="also time every Grafana panel's SQL over --calls calls in chdb")
    cli.add_argument("--calls", type=int, default=10_000_000,
                     help="calls loaded for --dashboards (default 10000000)")
    cli.add_argument("--keep", action="store_true",
                     help="keep the work directory (logs, chdb data) for inspection")
    return cli


if __name__ == "__main__":
    options = parser().parse_args()
    events = 20_000 if options.quick and options.events == 300_000 else options.events
    main(events, options.json, options.quick, options.dashboards, options.calls, options.keep)
