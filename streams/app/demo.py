"""``tokenyield demo``: a worker on the embedded broker and chdb, fed realistic traffic,
with a live terminal view, shut down cleanly at the end.

The traffic is the load generator's scenario (several teams and workflows, catalog
prices, retries, acceptance, human review, a spend spike, a runaway work unit, a retry
storm and context bloat). First a few hours of history are replayed fast, so windows
close, baselines warm up and alerts can fire within a minute; then live traffic
continues at a steady rate until ``--duration`` or Ctrl-C.

The worker runs as its own process (``tokenyield worker``), exactly as in production;
the demo talks to it through its web port, since chdb allows one process per data
directory. If anything fails, the worker is still stopped and its log path printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from schemas.errors import ConfigurationError
from streams.app.processes import worker_dir
from streams.app.worker import running_worker
from streams.ops.worker_client import worker_sql
from streams.report.live_view import Snapshot, literal, render, snapshot
from streams.settings import Settings
from streams.traffic.generator import Progress, live_traffic, publish, publisher_for
from streams.traffic.scenarios import (
    ModelOption,
    Scenario,
    ValueTraffic,
    Workflow,
    encoded_events,
)

# The demo's workflows, each with an owner, a success bar and a business case, so the
# value views (business case, ROI against the human baseline, portfolio) have one.
DEMO_WORKFLOWS = [
    {"team": "support", "workflow": "triage", "owner": "support-ops",
     "min_quality_score": 0.75, "baseline_minutes_per_unit": 6, "baseline_rate_per_hour": 45,
     "target_cost_per_accepted_outcome": "0.50", "expected_value_per_unit": "4"},
    {"team": "support", "workflow": "reply-draft", "owner": "support-ops",
     "baseline_minutes_per_unit": 12, "baseline_rate_per_hour": 45,
     "target_cost_per_accepted_outcome": "2.50", "expected_value_per_unit": "9"},
    {"team": "sales", "workflow": "lead-research", "owner": "revops",
     "max_latency_ms": 40000, "baseline_cost_per_unit": "35",
     "target_cost_per_accepted_outcome": "6", "expected_value_per_unit": "60"},
    {"team": "legal", "workflow": "contract-review", "owner": "legal-ops",
     "min_quality_score": 0.8, "baseline_minutes_per_unit": 90, "baseline_rate_per_hour": 150,
     "target_cost_per_accepted_outcome": "20", "expected_value_per_unit": "180"},
    {"team": "eng", "workflow": "code-review", "owner": "dev-productivity",
     "baseline_minutes_per_unit": 25, "baseline_rate_per_hour": 90,
     "target_cost_per_accepted_outcome": "8"},
    {"team": "finance", "workflow": "invoice-matching", "owner": "finance-ops",
     "baseline_minutes_per_unit": 4, "baseline_rate_per_hour": 40,
     "target_cost_per_accepted_outcome": "0.30", "expected_value_per_unit": "2.5"},
]
# Settings the demo changes unless the environment sets them: a short deadline so
# attribution coverage moves within minutes, any free port for the web server, and the
# workflows above.
DEMO_DEFAULTS = {"TOKENYIELD_DEADLINE_SECONDS": "900", "TOKENYIELD_WEB_PORT": "0",
                 "TOKENYIELD_WORKFLOWS": json.dumps(DEMO_WORKFLOWS)}
EVENTS_PER_UNIT = 4.5  # the generator's average, to size rounds by rate
# Weeks of one workflow before the hours of history, so that the detectors that need days
# have them in the first minute: the spend forecast (14 days for its weekday pattern) and
# the spend plateau (7 closed days, 200 units a group). Acceptance does not depend on what
# a unit costs here, so its dearest units buy no more acceptance: a plateau.
WEEKS_WORKFLOW = Workflow(
    team="ops", name="incident-summary", weight=1.0, task_type="summarization",
    service="pager", owner="sre",
    models=(ModelOption(provider="openai", model="gpt-4o-mini", weight=1.0),),
    calls_median=2, calls_sigma=0.7,
    input_median=3000, output_median=300, token_sigma=0.7, acceptance=0.9,
    success_status="accepted", review_share=0.0, value_median=Decimal("3.00"),
    value_dimension="cost_avoided")
WEEKS_DAYS = 16
WEEKS_UNITS_PER_DAY = 350


@dataclass(frozen=True, slots=True)
class DemoOptions:
    duration_seconds: float | None = None  # None: until Ctrl-C
    history_hours: float = 3.0
    history_units: int = 6000
    history_seconds: float = 60.0  # wall time to replay the history in
    live_rate: float = 300.0  # events/s after the history
    seed: int = 7
    refresh_seconds: float = 2.0


@dataclass(frozen=True, slots=True)
class DemoSummary:
    published: int
    snapshot: Snapshot
    data_dir: Path
    clickhouse: str
    worker_log: Path


class WorkerProcessHandle:
    """The demo's ``tokenyield worker`` subprocess (``processes`` > 1: a group, started
    with ``--processes``; the web port is its first worker's)."""

    def __init__(self, settings: Settings, log_path: Path,
                 environment: dict[str, str] | None = None, processes: int = 1) -> None:
        self.settings = settings
        self.log_path = log_path
        self.environment = environment or {}  # settings for the worker, over the defaults
        self.processes = processes
        self.process: subprocess.Popen[bytes] | None = None
        self.web_port = 0

    def start(self, timeout: float, say: Callable[[str], None]) -> None:
        self.launch()
        self.wait_ready(timeout, say)

    def launch(self) -> None:
        env = {**os.environ}
        for name, value in DEMO_DEFAULTS.items():
            env.setdefault(name, value)
        env.update(self.environment)
        env["TOKENYIELD_DATA_DIR"] = str(self.settings.data_dir)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            group = ["--processes", str(self.processes)] if self.processes > 1 else []
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", *group], env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float, say: Callable[[str], None]) -> None:
        """Until the worker's web port answers and it owns partitions."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        stage = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigurationError(
                    f"the worker stopped during start-up; its log: {self.log_path}\n"
                    + self.log_path.read_text(errors="replace")[-2000:])
            info = running_worker(self.settings.data_dir)
            if info and (self.processes > 1 or int(info.get("pid", 0)) == self.process.pid):
                self.web_port = int(info["web_port"])
                if stage != "assigning":
                    stage = "assigning"
                    say(f"worker up (web port {self.web_port}); joining its consumer group")
                if all("tokenyield_consumer_lag{" in self._metrics(port)
                       for port in self.web_ports()):
                    return
            elif stage != "starting":
                stage = "starting"
                say("starting the broker, topics, ClickHouse schema and worker")
            time.sleep(0.3)
        raise ConfigurationError(f"the worker was not ready in {timeout:.0f}s; its log: "
                                 f"{self.log_path}")

    def web_ports(self) -> list[int]:
        """The web port of each worker of the group (one for a single worker)."""
        ports = [self.web_port]
        for index in range(1, self.processes):
            info = running_worker(worker_dir(self.settings, index))
            ports.append(int(info["web_port"]) if info else 0)
        return ports

    def metrics(self) -> str:
        """The metrics of every worker of the group (sums add up across them)."""
        return "".join(self._metrics(port) for port in self.web_ports())

    @staticmethod
    def _metrics(port: int) -> str:
        if not port:
            return ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics/",
                                        timeout=5) as response:
                return response.read().decode()
        except OSError:
            return ""

    def lag(self) -> int | None:
        """Messages not yet processed on the inputs and the window partials (where the
        latest tick may be in flight: one message there does not count)."""
        inputs = {self.settings.topic("calls"), self.settings.topic("outcomes")}
        found = re.findall(r'^tokenyield_consumer_lag\{[^}]*topic="([^"]+)"[^}]*\} ([0-9.e+]+)$',
                           self.metrics(), re.MULTILINE)
        if not found:
            return None
        return int(sum(float(v) if topic in inputs else max(0.0, float(v) - 1)
                       for topic, v in found))

    def settled(self, database: str, since: str) -> bool:
        """The last checkpoints have landed: every stored call's cost is in the windows."""
        calls, windows = self.query(
            f"SELECT (SELECT sum(cost) FROM {database}.model_calls FINAL "
            f"WHERE occurred_at >= {since}), (SELECT sum(spend) FROM "
            f"{database}.cost_per_outcome_windows FINAL WHERE window_seconds = (SELECT "
            f"min(window_seconds) FROM {database}.cost_per_outcome_windows) AND scope = 'total' "
            f"AND window_start >= {since})")[0]
        return bool(calls is not None and windows is not None and
                    Decimal(calls) == Decimal(windows))

    def query(self, sql: str) -> list[list[Any]]:
        rows: list[list[Any]] = worker_sql(self.web_port, sql)["rows"]
        return rows

    def stop(self, timeout: float = 60.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


class Demo:
    def __init__(self, settings: Settings, options: DemoOptions, out: TextIO = sys.stdout
                 ) -> None:
        self.settings = settings
        self.options = options
        self.out = out
        self.tty = out.isatty()
        self.stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        self.history_end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=15)
        # Whole hours: a window starting before ``since`` would hold calls after it.
        self.since = (self.history_end - timedelta(hours=options.history_hours)).replace(
            minute=0, second=0)
        self.published = 0
        self.phase = "starting"
        self.last: Snapshot = Snapshot()

    def say(self, text: str) -> None:
        print(f"tokenyield demo: {text}", file=self.out, flush=True)

    def run(self) -> DemoSummary:
        settings = self.settings
        if running_worker(settings.data_dir):
            raise ConfigurationError(
                f"a worker already runs on {settings.data_dir}: stop it, or set "
                f"TOKENYIELD_DATA_DIR to another directory for the demo")
        worker = WorkerProcessHandle(settings, settings.data_dir / "worker.log")
        try:
            worker.start(timeout=180, say=self.say)
            bootstrap = settings.kafka_bootstrap or self._embedded_bootstrap()
            asyncio.run(self._main(worker, bootstrap))
        except KeyboardInterrupt:
            self.say("interrupted")
        finally:
            self.say("stopping the worker (it checkpoints and flushes first)")
            worker.stop()
        return DemoSummary(self.published, self.last, settings.data_dir,
                           settings.clickhouse_display(), worker.log_path)

    def _embedded_bootstrap(self) -> str:
        info = running_worker(self.settings.data_dir)
        if not info:
            raise ConfigurationError("the worker stopped")
        return str(info["bootstrap"])

    async def _main(self, worker: WorkerProcessHandle, bootstrap: str) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, stop.set)
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        started = time.monotonic()
        traffic = asyncio.create_task(self._traffic(bootstrap))
        next_line = 0.0
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if self.options.duration_seconds is not None and \
                    elapsed >= self.options.duration_seconds:
                break
            if traffic.done() and traffic.exception() is not None:
                raise traffic.exception()  # type: ignore[misc]
            if worker.process is not None and worker.process.poll() is not None:
                raise ConfigurationError(f"the worker stopped; its log: {worker.log_path}")
            await self._refresh(worker, elapsed, final=False, print_line=elapsed >= next_line)
            if elapsed >= next_line:
                next_line = elapsed + 10
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.refresh_seconds)
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await traffic
        self.phase = "catching up"
        self.say("traffic stopped; waiting for the worker to process and store the rest")
        deadline = time.monotonic() + 300  # a loaded machine: the rows trail the input
        while time.monotonic() < deadline and (worker.lag() or 0) > 0:
            await asyncio.sleep(0.5)
        since = literal(self.since)
        settled = False
        while time.monotonic() < deadline and not settled:
            settled = await asyncio.to_thread(worker.settled, self.settings.clickhouse_database,
                                              since)
            if not settled:
                await asyncio.sleep(0.5)
        if not settled:
            self.say("the worker has not stored every window yet: the figures below may "
                     "still grow (run `tokenyield sql` again in a minute)")
        self.phase = "done"
        await self._refresh(worker, time.monotonic() - started, final=True, print_line=True)

    async def _refresh(self, worker: WorkerProcessHandle, elapsed: float, *, final: bool,
                       print_line: bool) -> None:
        try:
            self.last = await asyncio.to_thread(
                snapshot, worker.query, self.settings.clickhouse_database, self.since)
        except (ConfigurationError, OSError) as exc:
            if final:
                self.say(f"could not read ClickHouse: {exc}")
            return
        header = (f"tokenyield demo · {self.phase} · {elapsed:,.0f}s · "
                  f"{self.published:,} events published · data in {self.settings.data_dir}")
        if self.tty or final:
            screen = render(self.last, self.settings.currency, header)
            prefix = "\x1b[H\x1b[2J" if self.tty else "\n"
            print(prefix + screen + ("" if final else "\n\n  Ctrl-C to stop"),
                  file=self.out, flush=True)
        elif print_line:
            coverage = self.last.coverage
            self.say(f"{elapsed:,.0f}s {self.phase}: {self.published:,} events published, "
                     f"{self.last.calls:,} calls stored, {self.last.attributed_units:,} units "
                     f"attributed, {len(self.last.workflows)} workflows, "
                     f"{self.last.alerts_firing} alerts firing"
                     + (f", coverage {coverage:.0%}" if coverage is not None else ""))

    async def _traffic(self, bootstrap: str) -> None:
        options, settings = self.options, self.settings
        history_start = self.history_end - timedelta(hours=options.history_hours)
        weeks = Scenario(seed=options.seed, run_id=f"demo{self.stamp}-weeks",
                         work_units=WEEKS_DAYS * WEEKS_UNITS_PER_DAY,
                         span_seconds=WEEKS_DAYS * 86_400, end=history_start,
                         workflows=(WEEKS_WORKFLOW,), spend_spike=None, runaway=None,
                         retry_storm=None, context_bloat=None).clean()
        history = Scenario(seed=options.seed, run_id=f"demo{self.stamp}",
                           work_units=options.history_units,
                           span_seconds=int(options.history_hours * 3600),
                           end=self.history_end, value=ValueTraffic())
        history_wall = options.history_seconds
        if options.duration_seconds is not None:
            history_wall = min(history_wall, options.duration_seconds * 0.6)
        connection = settings.kafka(bootstrap)

        def progress(p: Progress) -> None:
            self.published = base + p.events

        async with publisher_for(connection, topic_prefix=settings.topic_prefix,
                                 partitions=settings.partitions) as publisher:
            base = 0
            self.phase = f"replaying {WEEKS_DAYS} days of one workflow"
            await publish(encoded_events(weeks), publisher, progress=progress,
                          progress_interval=0.5)
            base = self.published
            self.phase = f"replaying {options.history_hours:g} h of history"
            await publish(encoded_events(history), publisher, progress=progress,
                          replay_speed=history.span_seconds / history_wall,
                          progress_interval=0.5)
            base = self.published
            self.phase = f"live traffic at {options.live_rate:,.0f} events/s"

            def count(step: int) -> None:
                self.published += step

            # Runs until the demo cancels it.
            await live_traffic(publisher, options.live_rate, asyncio.Event(),
                               seed=options.seed, run_id=f"demo{self.stamp}-live",
                               on_events=count, value=ValueTraffic())


def tokenyield_command(cwd: Path | None = None) -> str:
    """How to type ``tokenyield`` in the folder the demo ran from: plain ``tokenyield`` when
    the shell finds this installation, else its path. ``python3 run.py demo`` installs into
    ``.venv``, which is not on PATH, so it prints ``.venv/bin/tokenyield``."""
    own = Path(sys.executable).parent / "tokenyield"  # not resolved: a venv's bin is a link
    found = shutil.which("tokenyield")
    if found is not None and (not own.exists() or Path(found).resolve() == own.resolve()):
        return "tokenyield"
    if not own.exists():
        return f"{shlex.quote(sys.executable)} -m streams.cli"
    try:
        return shlex.quote(str(own.relative_to(cwd or Path.cwd())))
    except ValueError:
        return shlex.quote(str(own))


def next_steps(summary: DemoSummary, settings: Settings) -> str:
    snap = summary.snapshot
    data_dir = summary.data_dir
    env = "" if data_dir == Path(".tokenyield").resolve() else \
        f"TOKENYIELD_DATA_DIR={shlex.quote(str(data_dir))} "
    command = tokenyield_command()
    return "\n".join([
        "",
        f"Done: {summary.published:,} events published; ClickHouse holds {snap.calls:,} calls, "
        f"{snap.attributed_units:,} attributed work units, {len(snap.alerts)} recent alerts.",
        f"Data: {data_dir} (ClickHouse: {summary.clickhouse}; worker log: "
        f"{summary.worker_log})",
        "",
        "What next:",
        f"  {env}{command} report     an HTML report with charts (opens offline)",
        f"  {env}{command} sql \"SELECT * FROM v_yield_by_workflow ORDER BY "
        "yield_ratio DESC\"",
        f"  {env}{command} sql \"SELECT kind, status, message FROM v_alerts\"",
        f"  {env}{command} worker     run the worker alone; send events with "
        f"`{command} publish` or schemas.kafka_publisher",
        "  docker compose up -d  production: Kafka, ClickHouse, Grafana (http://localhost:3000)",
    ])
