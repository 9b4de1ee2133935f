"""How the Faust app is put together, checked without a broker."""

from __future__ import annotations

from pathlib import Path

from streams.kafka.faust_app import Services, build_app
from streams.settings import Settings


async def test_the_worker_consumer_uses_the_configured_fetch_wait(tmp_path: Path) -> None:
    # Faust hard-codes fetch_max_wait_ms=1500; the embedded broker holds fetches that long,
    # which was most of the outcome-to-attribution latency.
    settings = Settings(data_dir=tmp_path, fetch_max_wait_ms=77, state_store="memory://")
    app = build_app(settings, "127.0.0.1:9", Services(settings, None, None, None, None))  # type: ignore[arg-type]
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == 77
    finally:
        await consumer.stop()  # never started: releases its client without connecting


def test_the_otlp_agent_reads_the_collector_topic_and_an_empty_name_turns_it_off(
        tmp_path: Path) -> None:
    def wiring(**options: str) -> tuple[set[str], list[str]]:
        settings = Settings(data_dir=tmp_path, state_store="memory://", **options)  # type: ignore[arg-type]
        services = Services(settings, None, None, None, None)  # type: ignore[arg-type]
        app = build_app(settings, "127.0.0.1:9", services)
        agents = {name.rsplit(".", 1)[-1] for name in app.agents}
        return agents, [spec.name for spec in services.topics.specs()]

    agents, topics = wiring()
    assert "otlp" in agents and "otlp_spans" in topics  # the Collector's default, unprefixed
    agents, topics = wiring(otlp_topic="")
    assert "otlp" not in agents and {"attribute", "rollup"} <= agents
    assert not [t for t in topics if "otlp" in t]
