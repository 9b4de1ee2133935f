"""The topics tokenyield uses, and their creation with the Kafka admin API.

Inputs ``calls``, ``outcomes`` and ``costs`` (and the internal ``ticks``) must be
co-partitioned: same partition count, keyed by work unit with murmur2. The worker
creates whatever is missing and refuses to start when an existing input topic has
another partition count, because the join would silently miss events.

``budget-state`` (compacted, written by the rollup) holds where every budget stands;
every worker follows it to answer gateways. The OTLP topic (``TOKENYIELD_OTLP_TOPIC``,
the Collector's, so not prefixed) is created when missing, with the input topics'
partition count; an existing one may have any count (its spans are re-keyed by work
unit onto ``calls``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.errors import ConfigurationError
from schemas.kafka_options import KafkaConnection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False
    co_partitioned: bool = False


class Topics:
    """Names of every topic, after the prefix."""

    def __init__(self, prefix: str, partitions: int, otlp: str = "") -> None:
        self.prefix = prefix
        self.partitions = partitions
        self.calls = f"{prefix}calls"
        self.outcomes = f"{prefix}outcomes"
        self.costs = f"{prefix}costs"
        self.ticks = f"{prefix}ticks"
        self.prices = f"{prefix}prices"
        self.budgets = f"{prefix}budgets"
        self.budget_state = f"{prefix}budget-state"
        self.workflows = f"{prefix}workflows"
        self.attributions = f"{prefix}attributions"
        self.window_partials = f"{prefix}window-partials"
        self.windows = f"{prefix}windows"
        self.alerts = f"{prefix}alerts"
        self.dead_letter = f"{prefix}dead-letter"
        self.late = f"{prefix}late"
        self.otlp = otlp  # empty: no OTLP input

    def specs(self) -> list[TopicSpec]:
        n = self.partitions
        return [
            TopicSpec(self.calls, n, co_partitioned=True),
            TopicSpec(self.outcomes, n, co_partitioned=True),
            TopicSpec(self.costs, n, co_partitioned=True),
            TopicSpec(self.ticks, n, co_partitioned=True),
            TopicSpec(self.prices, 1, compacted=True),
            TopicSpec(self.budgets, 1, compacted=True),
            TopicSpec(self.workflows, 1, compacted=True),
            TopicSpec(self.attributions, n),
            TopicSpec(self.window_partials, 1),
            TopicSpec(self.windows, 1),
            TopicSpec(self.alerts, 1),
            TopicSpec(self.dead_letter, n),
            TopicSpec(self.late, n),
            TopicSpec(self.budget_state, 1, compacted=True),
            *([TopicSpec(self.otlp, n)] if self.otlp else []),
        ]


async def ensure_topics(connection: KafkaConnection, topics: Topics,
                        replication_factor: int = 1, timeout: float = 30.0) -> list[str]:
    """Create missing topics; check partition counts of existing co-partitioned ones."""
    admin = AIOKafkaAdminClient(**connection.aiokafka_kwargs(), request_timeout_ms=15000)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await admin.start()
            break
        except KafkaError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise ConfigurationError(
                    f"cannot reach Kafka at {connection.bootstrap} after {timeout:.0f} s: {exc} "
                    "(check TOKENYIELD_KAFKA_BOOTSTRAP and the broker)") from exc
            log.warning("Kafka at %s is not reachable yet (%s: %s); retrying for up to %.0f s",
                        connection.bootstrap, type(exc).__name__, exc, timeout)
            await admin.close()
            admin = AIOKafkaAdminClient(**connection.aiokafka_kwargs(),
                                        request_timeout_ms=15000)
            await asyncio.sleep(1.0)
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        specs = topics.specs()
        missing = [s for s in specs if s.name not in existing]
        if missing:
            new = [
                NewTopic(
                    name=s.name, num_partitions=s.partitions,
                    replication_factor=replication_factor,
                    topic_configs={"cleanup.policy": "compact"} if s.compacted else {},
                )
                for s in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
            created = [s.name for s in missing]
        described = await admin.describe_topics([s.name for s in specs if s.co_partitioned])
        for topic in described:
            count = len(topic.get("partitions", []))
            if count and count != topics.partitions:
                raise ConfigurationError(
                    f"topic {topic['topic']} has {count} partitions but "
                    f"TOKENYIELD_PARTITIONS is {topics.partitions}: calls, outcomes and costs must "
                    "be co-partitioned", topic=topic["topic"], partitions=count)
    finally:
        await admin.close()
    return created
