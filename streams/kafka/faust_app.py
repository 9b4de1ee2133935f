"""Faust wiring: the app's configuration, its tables, two thin agents, a timer and the
revoke hook. What an agent does with a message is in ``handlers``; every send goes
through the ``Outlet``.

- ``attribute`` reads ``calls``, ``outcomes``, ``costs`` and ``ticks`` (co-partitioned):
  ``InputHandler``, the join in each partition's runtime.
- ``rollup`` reads ``window-partials`` (one partition): ``RollupHandler``, the global
  cost-per-outcome windows and the alert detectors.
- ``otlp`` (when ``TOKENYIELD_OTLP_TOPIC`` is set) reads the Collector's traces topic:
  ``OtlpHandler``, stateless, re-keys the spans' model calls onto ``calls``.

The agents run under a crashing supervisor: an exception in a handler stops the worker
(Faust's default would restart the agent, which would go on past a lost batch). The
unacknowledged messages are processed again by the next worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP
from mode import CrashingSupervisor

from schemas.outputs import Alert
from streams.clickhouse.sink import ClickHouseSink
from streams.core.workflows import WorkflowRegistry
from streams.feeds.price_feed import PriceBookHolder
from streams.kafka.handlers import (
    InputHandler,
    RollupHandler,
    consumer_lag,
    partition_runtime_factory,
    send_ticks,
)
from streams.kafka.otlp_handler import OtlpHandler
from streams.kafka.outlet import FaustProducer, Outlet
from streams.kafka.topics import Topics
from streams.ops.metrics import Metrics
from streams.runtime.partition_runtime import PartitionRuntime
from streams.runtime.rollup_runtime import RollupRuntime
from streams.settings import Settings

log = logging.getLogger(__name__)


class TableStore:
    """A Faust table as the runtime's ``StateStore`` (bytes in, bytes out)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: bytes) -> bytes | None:
        return self.table.get(key)

    def set(self, key: bytes, value: bytes) -> None:
        self.table[key] = value

    def delete(self, key: bytes) -> None:
        if key in self.table:
            del self.table[key]


def set_fetch_max_wait(milliseconds: int) -> None:
    """Make Faust's worker consumer use ``fetch_max_wait_ms = milliseconds``.

    faust-streaming (0.15) passes a fixed 1500 ms to aiokafka and offers no setting. The embedded
    broker holds a fetch for about that long even when data is waiting, so events sat up
    to 1.5 s before the engine saw them. The consumer is created, not started, here, and
    aiokafka reads the attribute when it starts; if a Faust upgrade renames the method,
    this raises at start-up rather than silently keeping 1.5 s."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = getattr(AIOKafkaConsumerThread._create_worker_consumer, "__wrapped__",
                       AIOKafkaConsumerThread._create_worker_consumer)

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = milliseconds
        return consumer

    create.__wrapped__ = original  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore[method-assign]


def faust_credentials(settings: Settings) -> Any:
    connection = settings.kafka()
    if connection.uses_sasl:
        return faust.SASLCredentials(
            username=connection.sasl_username,
            password=connection.sasl_password.get_secret_value()
            if connection.sasl_password else None,
            mechanism=connection.sasl_mechanism or "PLAIN",
            ssl_context=connection.ssl_context(),
        )
    if connection.uses_tls:
        return faust.SSLCredentials(connection.ssl_context())
    return None


@dataclass
class Services:
    """What the agents and the web views share: settings, sink, prices, metrics, the
    runtimes, and whom to tell of an alert (the webhook, when configured)."""

    settings: Settings
    sink: ClickHouseSink
    prices: PriceBookHolder
    metrics: Metrics
    rollup: RollupRuntime
    notify: Callable[[list[Alert]], None] | None = None
    workflows: Callable[[], WorkflowRegistry] | None = None  # the live registry
    runtimes: dict[int, PartitionRuntime] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    tables: list[Any] = field(default_factory=list)  # Faust tables, for memory figures
    topics: Topics = field(init=False)

    def __post_init__(self) -> None:
        self.topics = Topics(self.settings.topic_prefix, self.settings.partitions,
                             otlp=self.settings.otlp_topic)


def faust_app(settings: Settings, bootstrap: str) -> faust.App:
    """The Faust app's configuration: brokers, credentials, state store, timeouts and
    producer and consumer sizes. Offsets start at the earliest message and commits
    follow the manual acks (at least once; the checkpoints make it exactly once)."""
    set_fetch_max_wait(settings.fetch_max_wait_ms)
    return faust.App(
        settings.app_id,
        broker=[f"kafka://{host.strip()}" for host in bootstrap.split(",")],
        broker_credentials=faust_credentials(settings),
        store=settings.state_store,
        datadir=str(settings.data_dir / "faust"),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        broker_rebalance_timeout=settings.rebalance_timeout(),
        broker_session_timeout=max(10.0, settings.rebalance_timeout()),
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        table_standby_replicas=0,
        producer_linger=0.005,
        producer_max_batch_size=1024 * 1024,
        producer_max_request_size=8 * 1024 * 1024,
        consumer_max_fetch_size=8 * 1024 * 1024,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
    )


def state_table(app: faust.App, settings: Settings, name: str, partitions: int) -> TableStore:
    """A bytes-to-bytes table (RocksDB with its changelog topic, or memory in tests)."""
    rocksdb = settings.state_store.startswith("rocksdb")
    return TableStore(app.Table(name, key_type=bytes, value_type=bytes, partitions=partitions,
                                options=settings.rocksdb_options() if rocksdb else None))


def highwater_of(app: faust.App) -> Callable[[str, int], int | None]:
    """The consumer's end offset of a topic partition; None until it is assigned."""

    def highwater(topic: str, partition: int) -> int | None:
        try:
            return app.consumer.highwater(TP(topic, partition))
        except Exception:  # not started or not assigned (yet): nothing to report
            return None

    return highwater


def assignment_of(app: faust.App) -> list[tuple[str, int]]:
    try:
        return [(tp.topic, tp.partition) for tp in app.consumer.assignment()]
    except Exception:  # the consumer has not started yet
        return []


def build_app(settings: Settings, bootstrap: str, services: Services) -> faust.App:
    """The worker's app: configuration, tables, outlet, handlers, then the wiring."""
    app = faust_app(settings, bootstrap)
    topics = services.topics
    state = state_table(app, settings, "state", settings.partitions)
    rollup_state = state_table(app, settings, "rollup", 1)
    services.tables = [state.table, rollup_state.table]
    outlet = Outlet(FaustProducer(app), topics, services.metrics, services.notify)
    highwater = highwater_of(app)
    inputs = InputHandler(
        topics, outlet, state,
        partition_runtime_factory(settings, services.prices, services.sink, services.metrics,
                                  state, services.workflows),
        services.metrics, highwater, runtimes=services.runtimes,
        overlap=settings.checkpoint_overlap)
    rollup = RollupHandler(services.rollup, rollup_state, outlet)
    wire_agents(app, topics, inputs, rollup)
    if topics.otlp:
        wire_otlp_agent(app, topics, OtlpHandler(
            settings.otlp_config(), topics, FaustProducer(app), services.sink,
            services.metrics))
    wire_timer_and_revoke(app, settings, topics, outlet, inputs, rollup, services.metrics)
    return app


def wire_agents(app: faust.App, topics: Topics, input_handler: InputHandler,
                rollup_handler: RollupHandler) -> None:
    """Two thin loops: each message and its ack to a handler. Raw bytes in: the core
    decodes (and dead-letters) events itself, so a bad event never stops a stream."""
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
           "value_serializer": "raw"}

    @app.agent(app.topic(topics.calls, topics.outcomes, topics.costs, topics.ticks, **raw),
               supervisor_strategy=CrashingSupervisor)
    async def attribute(stream: faust.Stream) -> None:
        async for event in stream.noack().events():
            await input_handler.handle(event.message, event.value, event.ack)

    @app.agent(app.topic(topics.window_partials, **raw), supervisor_strategy=CrashingSupervisor)
    async def rollup(stream: faust.Stream) -> None:
        async for event in stream.noack().events():
            await rollup_handler.handle(event.message, event.value, event.ack)


def wire_otlp_agent(app: faust.App, topics: Topics, handler: OtlpHandler) -> None:
    """The stateless loop over the Collector's topic: each message and its ack to the
    handler, which acknowledges once the calls are on ``calls``."""

    @app.agent(app.topic(topics.otlp, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw"), supervisor_strategy=CrashingSupervisor)
    async def otlp(stream: faust.Stream) -> None:
        async for event in stream.noack().events():
            await handler.handle(event.message, event.value, event.ack)


def wire_timer_and_revoke(app: faust.App, settings: Settings, topics: Topics, outlet: Outlet,
                          inputs: InputHandler, rollup: RollupHandler,
                          metrics: Metrics) -> None:
    """The tick timer (idle partitions checkpoint and close windows; lag is measured)
    and the revoke hook (a revoked partition's runtime is dropped)."""
    highwater = highwater_of(app)

    @app.timer(interval=settings.tick_interval_seconds)
    async def tick() -> None:
        assignment = assignment_of(app)
        await send_ticks(outlet, topics, assignment)
        lag = consumer_lag(assignment, highwater, inputs, rollup.runtime, topics)
        for (topic, partition), behind in lag.items():
            metrics.consumer_lag.labels(topic, str(partition)).set(behind)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[TP], **_: Any) -> None:
        for tp in revoked:
            if tp.topic == topics.calls:
                inputs.forget(tp.partition)
            if tp.topic == topics.window_partials:
                rollup.forget()
