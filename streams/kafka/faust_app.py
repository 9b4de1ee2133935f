"""Faust wiring: the app, its topics and tables, and two thin agents.

- ``attribute`` reads ``calls``, ``outcomes`` and ``ticks`` (co-partitioned) and hands
  each message to its partition's ``PartitionRuntime`` (the join, in the pure core).
- ``rollup`` reads ``window-partials`` (one partition) and merges the partitions'
  window cells into global cost-per-outcome windows, where the alert detectors run.

Acks are manual: a message is acknowledged only when the checkpoint covering it is
durable (see ``partition_runtime``), so Faust never commits past unsaved work.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
from faust.types import TP

from schemas.codec import encode_models
from streams.clickhouse.sink import ClickHouseSink
from streams.core.engine import EventKind, PartitionEngine
from streams.core.records import Outputs
from streams.core.windows import Outbox
from streams.feeds.price_feed import PriceBookHolder
from streams.kafka.topics import Topics
from streams.ops.metrics import Metrics
from streams.runtime.partition_runtime import PartitionRuntime
from streams.runtime.rollup_runtime import RollupRuntime
from streams.settings import Settings

log = logging.getLogger(__name__)

TICK = b""  # an empty message on an input topic: "time passed", nothing else


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


class Services:
    """What the agents share: settings, sink, prices, metrics and runtimes."""

    def __init__(self, settings: Settings, sink: ClickHouseSink, prices: PriceBookHolder,
                 metrics: Metrics, rollup: RollupRuntime) -> None:
        self.settings = settings
        self.sink = sink
        self.prices = prices
        self.metrics = metrics
        self.rollup = rollup
        self.topics = Topics(settings.topic_prefix, settings.partitions)
        self.runtimes: dict[int, PartitionRuntime] = {}
        self.started_at = time.time()
        self.notify: Any = lambda alerts: None  # the webhook, when configured
        self.tables: list[Any] = []  # the Faust tables, for their stores' memory figures


def build_app(settings: Settings, bootstrap: str, services: Services) -> faust.App:
    topics = services.topics
    metrics = services.metrics
    set_fetch_max_wait(settings.fetch_max_wait_ms)
    app = faust.App(
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
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
           "value_serializer": "raw"}
    inputs = app.topic(topics.calls, topics.outcomes, topics.ticks, **raw)
    partials = app.topic(topics.window_partials, **raw)

    def table(name: str, partitions: int) -> TableStore:
        rocksdb = settings.state_store.startswith("rocksdb")
        return TableStore(app.Table(name, key_type=bytes, value_type=bytes,
                                    partitions=partitions,
                                    options=settings.rocksdb_options() if rocksdb else None))

    state = table("state", settings.partitions)
    rollup_state = table("rollup", 1)
    services.tables = [state.table, rollup_state.table]
    kinds: dict[str, EventKind] = {topics.calls: "calls", topics.outcomes: "outcomes"}
    now_ms = lambda: int(time.time() * 1000)  # noqa: E731 - only for future-skew checks

    def runtime_for(partition: int) -> PartitionRuntime:
        runtime = services.runtimes.get(partition)
        if runtime is None:
            engine = PartitionEngine(partition, settings.engine_config(),
                                     services.prices.current, now_ms, store=state)
            runtime = PartitionRuntime(
                engine, services.sink, interval_seconds=settings.checkpoint_interval_seconds,
                max_events=settings.checkpoint_max_events, metrics=metrics)
            runtime.restore(state)
            engine.wait_for_inputs()
            services.runtimes[partition] = runtime
        return runtime

    def report_backlog(runtime: PartitionRuntime, partition: int,
                       reading: tuple[str, int] | None = None) -> None:
        """Tell the engine which inputs have messages not yet applied: such an input
        holds the event-time clock, so a backlog read faster on one topic than on the
        other makes nothing late. ``reading`` is the message about to be applied.
        Only "more to read" is trusted: the embedded broker may report a high-water
        mark below the true end (the last batch's base offset), never above it."""
        engine = runtime.engine
        for topic, kind in kinds.items():
            applied = engine.applied_offsets.get(topic, -1)
            if reading is not None and reading[0] == topic:
                applied = reading[1]
            try:
                highwater = app.consumer.highwater(TP(topic, partition))
            except Exception:  # not assigned (yet): the idle timer decides
                highwater = None
            engine.set_more_to_read(kind, highwater is not None and applied + 1 < highwater)

    async def emit(out: Outputs, partition: int) -> None:
        send = app.producer.send
        if out.attributions:
            await send(topics.attributions, None, encode_models(out.attributions), partition,
                       None, None)
            metrics.events_out.labels(topics.attributions).inc(len(out.attributions))
        if out.alerts:
            await send(topics.alerts, None, encode_models(out.alerts), 0, None, None)
            metrics.events_out.labels(topics.alerts).inc(len(out.alerts))
            for alert in out.alerts:
                metrics.alerts.labels(alert.kind, alert.status).inc()
            services.notify(out.alerts)
        if out.dead_letters:
            await send(topics.dead_letter, None, encode_models(out.dead_letters), partition,
                       None, None)
            for dead in out.dead_letters:
                metrics.events_rejected.labels(dead.source_topic, dead.error_kind).inc()
        if out.late:
            await send(topics.late, None, encode_models(out.late), partition, None, None)
            metrics.events_late.labels(out.late[0].source_topic).inc(len(out.late))
        for kind, unit_id, value in out.reroute:
            target = topics.calls if kind == "calls" else topics.outcomes
            await send(target, unit_id.encode(), value, None, None, None)

    async def send_outbox(outbox: Outbox) -> None:
        await app.producer.send(topics.window_partials, None, outbox.encode(), 0, None, None)

    async def flush() -> None:
        await app.producer.flush()

    @app.agent(inputs)
    async def attribute(stream: faust.Stream) -> None:
        async for event in stream.noack().events():
            message = event.message
            runtime = runtime_for(message.partition)
            topic = message.topic
            if topic == topics.ticks:
                report_backlog(runtime, message.partition)
                out = runtime.tick()
                if not len(out) and not runtime.checkpoint_pending():
                    event.ack()  # idle: nothing to save, nothing to say
                    continue
            elif runtime.already_applied(topic, message.offset):
                event.ack()  # covered by the restored checkpoint
                continue
            else:
                metrics.messages_in.labels(topic).inc()
                report_backlog(runtime, message.partition, (topic, message.offset))
                ledger = runtime.engine.ledger
                received, duplicates = ledger.received, ledger.duplicates
                out = runtime.apply(kinds[topic], topic, event.value, message.offset)
                ledger = runtime.engine.ledger
                metrics.events_in.labels(topic).inc(ledger.received - received)
                if ledger.duplicates > duplicates:
                    metrics.events_duplicate.inc(ledger.duplicates - duplicates)
                if out.attributions and kinds[topic] == "outcomes" and message.timestamp:
                    metrics.attribution_latency.observe(max(0.0, time.time() - message.timestamp))
            if len(out):
                await emit(out, message.partition)
            runtime.hold(event.ack)
            if runtime.checkpoint_due():
                await runtime.checkpoint(state, send_outbox, flush)

    @app.agent(partials)
    async def rollup(stream: faust.Stream) -> None:
        runtime = services.rollup
        async for event in stream.noack().events():
            if not runtime.restored:
                runtime.restore(rollup_state)
            message = event.message
            runtime.position = message.offset
            # The message's own time stamp is the rollup's "now": a replay decides alike.
            stamp_ms = int((message.timestamp or 0) * 1000)
            if event.value == TICK:
                runtime.tick(stamp_ms)
                if not runtime.checkpoint_pending():
                    event.ack()
                    continue
            elif runtime.already_applied(message.offset):
                event.ack()
                continue
            else:
                runtime.apply(Outbox.decode(event.value), message.offset, stamp_ms)
            runtime.hold(event.ack)
            if runtime.checkpoint_due():
                await runtime.checkpoint(rollup_state, emit_rollup, flush)

    async def emit_rollup(windows: list[Any], alerts: list[Any]) -> None:
        if windows:
            await app.producer.send(topics.windows, None, encode_models(windows), 0, None, None)
            metrics.events_out.labels(topics.windows).inc(len(windows))
        if alerts:
            await app.producer.send(topics.alerts, None, encode_models(alerts), 0, None, None)
            metrics.events_out.labels(topics.alerts).inc(len(alerts))
            for alert in alerts:
                metrics.alerts.labels(alert.kind, alert.status).inc()

    @app.timer(interval=settings.tick_interval_seconds)
    async def tick() -> None:
        # Ticks give idle partitions a turn to checkpoint and to close windows; they go
        # through the input stream because table writes must happen during iteration.
        for tp in app.consumer.assignment():
            if tp.topic == topics.ticks:
                await app.producer.send(topics.ticks, None, TICK, tp.partition, None, None)
            elif tp.topic == topics.window_partials:
                await app.producer.send(topics.window_partials, None, TICK, 0, None, None)
        update_lag(app, services)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[TP], **_: Any) -> None:
        # Unacknowledged work of a revoked partition is redone by its next owner from
        # the last checkpoint; keeping the runtime would let two workers write it.
        for tp in revoked:
            if tp.topic == topics.calls:
                services.runtimes.pop(tp.partition, None)
            if tp.topic == topics.window_partials:
                services.rollup.reset()

    app.services_ref = services  # type: ignore[attr-defined]
    return app


def update_lag(app: faust.App, services: Services) -> None:
    """Messages not yet processed: the end offset minus the last offset the engine (or
    the rollup) applied. Not Faust's read position: messages handed to a stream wait in
    its buffer, and counting them as done would report no lag while work queues up.
    Changelog topics (read only in recovery) and the tick topic are left out."""
    consumer = app.consumer
    try:
        assignment = consumer.assignment()
    except Exception:  # not started yet
        return
    topics: Topics = services.topics
    for tp in assignment:
        if tp.topic == topics.window_partials:
            applied = services.rollup.position
        elif tp.topic in (topics.calls, topics.outcomes):
            runtime = services.runtimes.get(tp.partition)
            applied = runtime.engine.applied_offsets.get(tp.topic, -1) if runtime else -1
        else:
            continue
        try:
            highwater = consumer.highwater(tp)
        except Exception:
            continue
        if highwater is None:
            continue
        lag = max(0, highwater - 1 - applied)
        services.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
