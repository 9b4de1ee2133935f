"""Kafka security settings reach the client, and secrets never reach a log or output."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.errors import ConfigurationError
from streams.settings import Settings
from tests.conftest import ROOT
from tests.stream_truth import publish_in_background

CA = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_tls_settings_reach_aiokafka(mechanism: str) -> None:
    settings = Settings(kafka_bootstrap="kafka-1:9093,kafka-2:9093",
                        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism=mechanism,
                        kafka_sasl_username="svc-tokenyield",
                        kafka_sasl_password=SecretStr("s3cr3t-sasl"), kafka_ssl_cafile=CA)
    kwargs = settings.kafka(settings.kafka_bootstrap).aiokafka_kwargs()
    assert kwargs["bootstrap_servers"] == "kafka-1:9093,kafka-2:9093"
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == mechanism
    assert kwargs["sasl_plain_username"] == "svc-tokenyield"
    assert kwargs["sasl_plain_password"] == "s3cr3t-sasl"
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert "s3cr3t-sasl" not in repr(settings) and "s3cr3t-sasl" not in str(settings)


def test_plaintext_sends_no_credentials_and_sasl_needs_them() -> None:
    kwargs = Settings(kafka_bootstrap="k:9092").kafka("k:9092").aiokafka_kwargs()
    assert kwargs["security_protocol"] == "PLAINTEXT"
    assert "sasl_plain_password" not in kwargs and "ssl_context" not in kwargs
    with pytest.raises((ConfigurationError, ValueError)):
        Settings(kafka_bootstrap="k:9092", kafka_security_protocol="SASL_PLAINTEXT",
                 kafka_sasl_mechanism="PLAIN", kafka_sasl_username="u")


SECRETS = {
    "TOKENYIELD_KAFKA_SASL_PASSWORD": "sasl-pw-7Qx2",
    "TOKENYIELD_CLICKHOUSE_PASSWORD": "ch-pw-9Lm4",
    "TOKENYIELD_WEBHOOK_URL": "http://127.0.0.1:9/services/T000/B000/hook-tok-3Zr8",
}
NEEDLES = ["sasl-pw-7Qx2", "ch-pw-9Lm4", "hook-tok-3Zr8"]


@pytest.mark.broker
@pytest.mark.clickhouse
def test_secrets_never_reach_the_logs_or_the_cli(make_worker: Any, prefix: str) -> None:
    # Debug logging, and a webhook that cannot be reached: its failures are logged.
    worker = make_worker(**SECRETS, TOKENYIELD_LOG_LEVEL="debug",
                         TOKENYIELD_KAFKA_SASL_USERNAME="svc",
                         TOKENYIELD_RUNAWAY_MAX_CALLS="3", TOKENYIELD_WEBHOOK_RETRIES="1",
                         TOKENYIELD_WEBHOOK_TIMEOUT_SECONDS="1").start()
    start = datetime.now(UTC) - timedelta(minutes=5)
    loop = [{"event_id": f"s{i}", "work_unit_id": "looping", "provider": "openai",
             "model": "gpt-4o", "team": "t", "workflow": "w", "input_tokens": 10,
             "occurred_at": (start + timedelta(seconds=i)).isoformat()} for i in range(6)]
    thread, state = publish_in_background(worker.env["TOKENYIELD_KAFKA_BOOTSTRAP"], prefix,
                                          loop, rate=100)
    thread.join(30)
    assert state["error"] is None
    deadline = time.monotonic() + 30
    while "alert webhook" not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "alert webhook" in worker.log()  # the failing delivery was logged...
    config = subprocess.run([sys.executable, "-m", "streams.cli", "config"], env=worker.env,
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert config.returncode == 0, config.stderr
    assert "TOKENYIELD_WEBHOOK_URL" in config.stdout or "webhook_url" in config.stdout
    worker.stop()
    text = worker.log() + config.stdout + config.stderr
    for needle in NEEDLES:  # ... and no secret anywhere
        assert needle not in text, f"{needle} leaked"
