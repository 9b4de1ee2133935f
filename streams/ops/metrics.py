"""Prometheus metrics of a worker, served at ``/metrics`` on its web port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """One registry per worker (tests run several workers in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "tokenyield_events_in_total", "Events received, by topic", ["topic"], registry=r)
        self.messages_in = Counter(
            "tokenyield_messages_in_total", "Kafka messages received, by topic", ["topic"],
            registry=r)
        self.events_rejected = Counter(
            "tokenyield_events_rejected_total", "Events sent to dead-letter, by topic and kind",
            ["topic", "kind"], registry=r)
        self.events_late = Counter(
            "tokenyield_events_late_total",
            "Events older than their partition's clock: applied as corrections, audited",
            ["topic"],
            registry=r)
        self.events_duplicate = Counter(
            "tokenyield_events_duplicate_total",
            "Events seen before (same kind and event_id): counted, not applied again",
            registry=r)
        self.events_out = Counter(
            "tokenyield_events_out_total", "Records emitted, by topic", ["topic"], registry=r)
        self.consumer_lag = Gauge(
            "tokenyield_consumer_lag", "Messages not yet processed, by topic and partition",
            ["topic", "partition"], registry=r)
        self.open_work_units = Gauge(
            "tokenyield_open_work_units", "Work units held in state", ["partition"], registry=r)
        self.attribution_latency = Histogram(
            "tokenyield_attribution_latency_seconds",
            "From an outcome's publish time to its attribution being emitted",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=r)
        self.checkpoints = Counter(
            "tokenyield_checkpoints_total", "State checkpoints written", ["partition"],
            registry=r)
        self.checkpoint_seconds = Histogram(
            "tokenyield_checkpoint_seconds", "Time to write a checkpoint (sink + state)",
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 5, 30), registry=r)
        self.sink_rows = Counter(
            "tokenyield_clickhouse_rows_total", "Rows inserted into ClickHouse", ["table"],
            registry=r)
        self.sink_errors = Counter(
            "tokenyield_clickhouse_errors_total", "Failed ClickHouse operations", ["operation"],
            registry=r)
        self.alerts = Counter(
            "tokenyield_alerts_total", "Alerts emitted, by kind and status", ["kind", "status"],
            registry=r)
        self.memory = Gauge(
            "tokenyield_memory_bytes",
            "Worker memory by holder, sampled when /metrics is read: resident (the whole "
            "process), rocksdb_memtables, rocksdb_block_cache, rocksdb_table_readers, "
            "clickhouse (embedded chdb only), python_traced (only under tracemalloc)",
            ["holder"], registry=r)
        self.otlp_spans_skipped = Counter(
            "tokenyield_otlp_spans_skipped_total",
            "OTLP spans that are no model call (no GenAI usage, or an agent's aggregate), "
            "by source (topic or /v1/traces) and reason", ["source", "reason"], registry=r)
        self.http_requests = Counter(
            "tokenyield_http_requests_total", "Requests to the /v1 endpoints, by endpoint "
            "and status code", ["endpoint", "status"], registry=r)
        self.http_events = Counter(
            "tokenyield_http_events_total", "Events received over HTTP, by endpoint and "
            "result (accepted, rejected, ignored, failed)", ["endpoint", "result"],
            registry=r)
        self.budget_checks = Counter(
            "tokenyield_budget_checks_total", "Budget checks answered, by state (ok, soft, "
            "hard)", ["state"], registry=r)
        self.webhook_failures = Counter(
            "tokenyield_webhook_failures_total", "Alert webhooks given up after retries",
            registry=r)

    def checkpointed(self, partition: int, seconds: float, open_units: int) -> None:
        """A partition checkpoint completed (``runtime.ports.CheckpointObserver``)."""
        label = str(partition)
        self.checkpoints.labels(label).inc()
        self.checkpoint_seconds.observe(seconds)
        self.open_work_units.labels(label).set(open_units)
