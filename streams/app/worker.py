"""Start a worker: broker, topics, ClickHouse schema, the Faust app, then run it.

With ``TOKENYIELD_KAFKA_BOOTSTRAP`` empty, the worker starts the embedded broker and
wipes its Faust state first: that broker keeps nothing across a restart, and a state
store remembering offsets the new broker never had would stall recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust

from schemas.errors import ConfigurationError
from schemas.webhook_mapping import WebhookMapping, load_mappings
from streams.clickhouse.client import connect, migrate
from streams.clickhouse.relay import RELAY_SCHEME, execute
from streams.clickhouse.relay_server import RelayServer
from streams.clickhouse.settled_days import (
    SettleReport,
    days_to_settle,
    settle_day,
    settle_week,
    weeks_to_settle,
)
from streams.clickhouse.sink import ClickHouseSink
from streams.core.alerts import AlertEngine, BudgetRule
from streams.core.alerts.alert_config import BudgetRow
from streams.core.alerts.budget_check import BudgetIndex
from streams.core.records import Outputs
from streams.core.workflows import WorkflowRow
from streams.feeds.budget_feed import BudgetBook, follow_budgets
from streams.feeds.budget_state_feed import BudgetStateBook, follow_budget_states
from streams.feeds.price_feed import PriceBookHolder, follow_prices
from streams.feeds.workflow_feed import WorkflowBook, follow_workflows
from streams.kafka.faust_app import Services, build_app
from streams.kafka.keyed_sender import KeyedSender
from streams.kafka.outlet import FaustProducer
from streams.kafka.tansu_broker import EmbeddedBroker, free_port, write_broker_file
from streams.kafka.topics import Topics, ensure_topics
from streams.ops.http_auth import HttpAuth
from streams.ops.ingest import BUILT_IN_DIMENSIONS, IngestContext, register_ingest_views
from streams.ops.metrics import Metrics
from streams.ops.web import register_views
from streams.ops.webhook import AlertWebhook
from streams.runtime.rollup_runtime import RollupRuntime
from streams.settings import Settings

log = logging.getLogger(__name__)


def worker_file(data_dir: Path) -> Path:
    return data_dir / "worker.json"


def running_worker(data_dir: Path) -> dict[str, Any] | None:
    """Details of a live worker using ``data_dir``, if one is running."""
    try:
        info = json.loads(worker_file(data_dir).read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return info


def webhook_mappings(settings: Settings) -> dict[str, WebhookMapping]:
    """The mappings served at /v1/webhooks/{name}; a broken file stops the start."""
    directory = settings.webhook_mappings()
    if not directory.is_dir():
        if settings.webhook_mappings_dir is not None:
            raise ConfigurationError(
                f"TOKENYIELD_WEBHOOK_MAPPINGS_DIR {directory} is not a directory",
                setting="webhook_mappings_dir", value=str(directory))
        log.info("no webhook mappings (%s does not exist)", directory)
        return {}
    mappings = load_mappings(directory)
    log.info("webhook mappings from %s: %s", directory, ", ".join(sorted(mappings)) or "none")
    return mappings


def tune_garbage_collector(young_threshold: int) -> None:
    """Collect Python's cycles less often, and never scan what start-up built.

    The engine allocates a few small objects per event (cell lists, tuples, the unit's
    entries) and keeps most of them, so Python's default (a young collection every 700
    net allocations, each tenth one also scanning the middle generation) runs collections
    that free almost nothing: a third of the engine's time (docs/BENCHMARKS.md). The
    worker creates few reference cycles, so collecting every ``young_threshold``
    allocations holds only that much more garbage at most. Freezing moves the modules,
    the app and the price book out of every later collection. 0 keeps Python's
    defaults."""
    if young_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)


def faust_worker(app: faust.App, log_level: str) -> faust.Worker:
    """Faust's worker for ``app``, logging at ``log_level`` and nothing below it.

    Faust's worker draws a progress spinner on the terminal when the level is warning
    or above, and to spin it on every record it sets the root logger to DEBUG: every
    debug call of aiokafka and Faust then builds a record for a handler to drop, one per
    message sent and per fetch (1.7 % of a draining worker's time at warning,
    docs/BENCHMARKS.md). The worker runs as a service, so the spinner goes.
    """
    worker = faust.Worker(app, loglevel=log_level, quiet=True)
    worker.spinner = None
    return worker


def make_sink(settings: Settings, metrics: Metrics | None = None) -> ClickHouseSink:
    target = settings.clickhouse_target()
    password = settings.clickhouse_password.get_secret_value() \
        if settings.clickhouse_password else None

    def factory() -> Any:
        return connect(target, username=settings.clickhouse_username, password=password)

    return ClickHouseSink(
        factory, settings.clickhouse_database,
        retry_max_seconds=settings.sink_retry_max_seconds,
        reconnect_on_error=not target.startswith("chdb://"),
        on_error=(lambda op, exc: metrics.sink_errors.labels(op).inc()) if metrics else None,
        on_written=(lambda table, n, _s: metrics.sink_rows.labels(table).inc(n))
        if metrics else None,
    )


async def settle_periodically(sink: ClickHouseSink, settings: Settings) -> None:
    """Settle the quiet days of the unit panels (streams.clickhouse.settled_days) every
    interval, the first time soon after start. A failure is logged and the next interval
    tries again: the panels are exact without settled days, only slower."""
    interval = settings.dashboard_settle_interval_seconds
    delay = min(interval, 30.0)
    while True:
        await asyncio.sleep(delay)
        delay = interval
        try:
            report = await settle_once(sink, settings)
        except Exception as exc:
            log.warning("settling the dashboard's days failed (%s: %s); the panels read "
                        "those days live until the next run", type(exc).__name__,
                        str(exc)[:200])
            continue
        if report.failed:
            log.warning("settling the dashboard's days: %s", report.summary())
        elif report.settled or report.weeks:
            log.info("settling the dashboard's days: %s", report.summary())


async def settle_once(sink: ClickHouseSink, settings: Settings) -> SettleReport:
    """One settling run through the sink's client, one day per use of it, so that
    inserts wait for one day's copy at most."""
    database, started = settings.clickhouse_database, time.monotonic()
    today = datetime.now(UTC).date()
    report = SettleReport()
    pending, report.unchanged = await sink.call(lambda client: days_to_settle(
        client, database, today=today, horizon_days=settings.dashboard_settle_horizon_days))
    for day, sums in pending.items():
        await sink.call(lambda client, day=day, sums=sums: settle_day(
            client, database, day, sums, report, cluster=settings.clickhouse_cluster))
    weeks = await sink.call(lambda client: weeks_to_settle(
        client, database, today=today, horizon_days=settings.dashboard_settle_horizon_days))
    for week, sums in weeks.items():
        await sink.call(lambda client, week=week, sums=sums: settle_week(
            client, database, week, sums, report, cluster=settings.clickhouse_cluster))
    report.seconds = time.monotonic() - started
    return report


class WorkerProcess:
    """Everything one ``tokenyield worker`` process owns."""

    def __init__(self, settings: Settings, bootstrap: str | None = None) -> None:
        self.settings = settings
        self.broker: EmbeddedBroker | None = None
        self.bootstrap = bootstrap or settings.kafka_bootstrap
        self.web_port = settings.web_port or free_port()
        self.relay: RelayServer | None = None

    def prepare(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.bootstrap:
            self.broker = EmbeddedBroker(log_path=settings.data_dir / "broker.log").start()
            self.bootstrap = self.broker.bootstrap
            write_broker_file(settings.data_dir, self.broker)
            # The new broker has no topics and no offsets: stale local state must go.
            shutil.rmtree(settings.data_dir / "faust", ignore_errors=True)
            log.info("embedded broker listening on %s", self.bootstrap)
        topics = Topics(settings.topic_prefix, settings.partitions, otlp=settings.otlp_topic)
        created = asyncio.run(ensure_topics(settings.kafka(self.bootstrap), topics,
                                            settings.replication_factor,
                                            timeout=settings.kafka_connect_timeout_seconds))
        if created:
            log.info("created topics: %s", ", ".join(created))
        if settings.clickhouse_target().startswith(RELAY_SCHEME):
            self._shared_client = None  # the group's writer migrates its chdb
            return
        client = connect(settings.clickhouse_target(), username=settings.clickhouse_username,
                         password=settings.clickhouse_password.get_secret_value()
                         if settings.clickhouse_password else None)
        applied = migrate(client, settings.clickhouse_database,
                          cluster=settings.clickhouse_cluster)
        if applied:
            log.info("applied ClickHouse migrations %s", ", ".join(applied))
        if settings.clickhouse_target().startswith("chdb://"):
            self._shared_client = client  # chdb: one engine per process, reuse it
        else:
            client.close()
            self._shared_client = None

    def build(self) -> faust.App:
        settings = self.settings
        metrics = Metrics()
        sink = make_sink(settings, metrics)
        if getattr(self, "_shared_client", None) is not None:
            sink._client = self._shared_client
        token = settings.relay_token.get_secret_value() if settings.relay_token else ""
        if token:  # the writer of a --processes group: the others' inserts come here
            self.relay = RelayServer(
                token, lambda asked: sink.run_locked(lambda client: execute(client, asked)),
                port=settings.relay_port).start()
        prices = PriceBookHolder.from_catalog(
            settings.price_catalog, frozenset({settings.currency, *settings.fx_rates}))
        alerts = AlertEngine(settings.alert_config(), settings.currency)
        topics = Topics(settings.topic_prefix, settings.partitions, otlp=settings.otlp_topic)
        mappings = webhook_mappings(settings)  # before anything starts: a bad file stops it
        rollup = RollupRuntime(sink, alerts, currency=settings.currency,
                               idle_seconds=max(30.0, 10 * settings.checkpoint_interval_seconds),
                               interval_seconds=settings.checkpoint_interval_seconds,
                               topic=topics.window_partials, partitions=settings.partitions,
                               dimension_cap=settings.dimension_cap)
        webhook = None
        if settings.webhook_url is not None:
            webhook = AlertWebhook(
                settings.webhook_url, timeout_seconds=settings.webhook_timeout_seconds,
                retries=settings.webhook_retries,
                on_failure=lambda alert, reason: metrics.webhook_failures.inc())
            rollup.notify = webhook.notify
        settings_for_web = settings.model_copy(update={"web_port": self.web_port})
        workflows = WorkflowBook(settings.workflows)
        services = Services(settings_for_web, sink, prices, metrics, rollup,
                            notify=webhook.notify if webhook else None,
                            workflows=workflows.current)
        app = build_app(settings_for_web, self.bootstrap, services)
        register_views(app, services)
        connection = settings.kafka(self.bootstrap, client_id=f"{settings.app_id}-prices")

        @app.task
        async def price_feed() -> None:
            await follow_prices(connection, topics.prices, prices)

        @app.task
        async def publish_catalog() -> None:
            book = prices.current()
            await sink.write(Outputs(prices=[(e, book.version) for e in book.entries]))

        budgets = BudgetBook(settings.alert_config().budgets)
        budget_states = BudgetStateBook()
        budget_index = [BudgetIndex(budgets.rules())]  # replaced whenever the rules change

        @app.task
        async def budget_state_feed() -> None:
            await follow_budget_states(connection, topics.budget_state, budget_states)

        auth = HttpAuth(settings.http_tokens, settings.web_host)
        if auth.refusing:
            log.warning("TOKENYIELD_HTTP_TOKENS is empty and the web server listens on %s: "
                        "/v1/* refuses every request (set tokens to accept events)",
                        settings.web_host)
        register_ingest_views(app, IngestContext(
            auth=auth, sender=KeyedSender(FaustProducer(app), topics), metrics=metrics,
            max_body_bytes=settings.http_max_body_bytes, otlp=settings.otlp_config(),
            mappings=mappings, budget_index=lambda: budget_index[0],
            budget_states=budget_states, currency=settings.currency,
            dimensions=(*BUILT_IN_DIMENSIONS, *settings.dimensions)))
        budgets_ready = asyncio.Event()
        writes: set[asyncio.Task[None]] = set()

        def write_in_background(batch: Outputs) -> None:
            """A rule change's rows, written while the feed goes on (kept referenced
            until done, as asyncio asks)."""
            task = asyncio.get_running_loop().create_task(sink.write(batch))
            writes.add(task)
            task.add_done_callback(writes.discard)

        def budgets_changed(rules: tuple[BudgetRule, ...], rows: list[BudgetRow]) -> None:
            rollup.alerts.set_budgets(rules)  # the rollup may have replaced its engine
            budget_index[0] = BudgetIndex(rules)
            if budgets_ready.is_set():  # before, sync_budgets writes the whole set
                write_in_background(Outputs(budgets=rows, tag=str(time.time_ns())))

        @app.task
        async def budget_feed() -> None:
            await follow_budgets(connection, topics.budgets, budgets, budgets_changed,
                                 budgets_ready)

        @app.task
        async def sync_budgets() -> None:
            """Once the topic is read: the table holds exactly the rules in force."""
            await budgets_ready.wait()
            rules = budgets.rules()
            rollup.alerts.set_budgets(rules)
            await sink.write(Outputs(budgets=budgets.retire_others(await sink.call(
                lambda client: client.query(
                    f"SELECT team, workflow, period, amount, soft_share, dimension, value FROM "
                    f"{settings.clickhouse_database}.budgets FINAL").result_rows)),
                tag=str(time.time_ns())))

        workflows_ready = asyncio.Event()

        def workflows_changed(rows: list[WorkflowRow]) -> None:
            if workflows_ready.is_set():  # before, sync_workflows writes the whole set
                write_in_background(Outputs(workflows=rows, tag=str(time.time_ns())))

        @app.task
        async def workflow_feed() -> None:
            await follow_workflows(connection, topics.workflows, workflows, workflows_changed,
                                   workflows_ready)

        @app.task
        async def sync_workflows() -> None:
            """Once the topic is read: the table holds exactly the rules in force."""
            await workflows_ready.wait()
            stored = await sink.call(lambda client: client.query(
                f"SELECT team, workflow FROM {settings.clickhouse_database}.workflows "
                f"FINAL").result_rows)
            await sink.write(Outputs(workflows=workflows.sync_rows(stored),
                                     tag=str(time.time_ns())))

        if settings.dashboard_settle_interval_seconds > 0 and \
                not settings.clickhouse_target().startswith(RELAY_SCHEME):
            # A relayed worker leaves it to its group's writer, which owns the chdb.
            @app.task
            async def settle_dashboard_days() -> None:
                await settle_periodically(sink, settings)

        if webhook is not None:
            @app.on_before_shutdown.connect
            async def drain_webhook(app: faust.App, **kwargs: Any) -> None:
                # Deliveries in flight get their retries, within a bound.
                bound = settings.webhook_timeout_seconds * (settings.webhook_retries + 1) + 5
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(webhook.drain(), bound)

        self.services = services
        return app

    def run(self) -> None:
        try:
            self.prepare()
            app = self.build()
            worker_file(self.settings.data_dir).write_text(json.dumps({
                "pid": os.getpid(), "web_port": self.web_port, "bootstrap": self.bootstrap,
                "clickhouse": self.settings.clickhouse_display(), "started_at": time.time()}))
            tune_garbage_collector(self.settings.gc_young_threshold)
            faust_worker(app, self.settings.log_level).execute_from_commandline()
        finally:
            self.close()

    def close(self) -> None:
        if self.relay is not None:
            self.relay.stop()  # before the sink: a relayed insert in flight fails, retried later
        services = getattr(self, "services", None)
        if services is not None:
            services.sink.stop()
        with contextlib.suppress(FileNotFoundError):
            info = json.loads(worker_file(self.settings.data_dir).read_text())
            if info.get("pid") == os.getpid():
                worker_file(self.settings.data_dir).unlink()
        if self.broker is not None:
            self.broker.stop()
