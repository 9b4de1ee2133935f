"""Shared fixtures: the real embedded broker and real worker processes.

Tests that talk to Kafka start Tansu (one broker per test session; every test uses its
own topic prefix and consumer group, so they cannot see each other's data). Worker
tests run ``tokenyield worker`` as a separate process, as in production, so they can
also kill it with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.kafka.tansu_broker import EmbeddedBroker, free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as running:
        yield running


@pytest.fixture
def prefix() -> str:
    """A topic prefix (and app id) of this test's own."""
    return f"t{uuid.uuid4().hex[:8]}."


class WorkerHandle:
    """A ``tokenyield worker`` subprocess and the means to query and kill it."""

    def __init__(self, env: dict[str, str], data_dir: Path, log_path: Path) -> None:
        self.env = env
        self.data_dir = data_dir
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.web_port = int(env["TOKENYIELD_WEB_PORT"])

    def launch(self) -> WorkerHandle:
        """Start the process without waiting for it to be ready."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"], env=self.env, cwd=ROOT,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def start(self, timeout: float = 60.0, wait_partitions: bool = True) -> WorkerHandle:
        """Start the process and wait until it owns its partitions."""
        self.launch()
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()[-4000:]}")
            health = self.health()
            if health and (not wait_partitions or (
                    health.get("partitions") is not None and self.assigned())):
                return self
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready in {timeout}s:\n{self.log()[-4000:]}")

    def assigned(self) -> bool:
        metrics = self.metrics()
        return "tokenyield_consumer_lag{" in metrics

    def health(self) -> dict[str, Any] | None:
        """The health document, also when the worker answers 503 (degraded)."""
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.web_port}/health/", timeout=2) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                return json.loads(exc.read())
            except ValueError:
                return None
        except (OSError, ValueError):
            return None

    def metrics(self) -> str:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.web_port}/metrics/", timeout=2) as response:
                return response.read().decode()
        except OSError:
            return ""

    def sql(self, query: str) -> list[list[Any]]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}/sql/", data=json.dumps({"sql": query}).encode(),
            method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["rows"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(exc.read().decode()) from exc

    def scalar(self, query: str) -> Any:
        return self.sql(query)[0][0]

    def wait_for(self, query: str, expected: Any, timeout: float = 60.0) -> Any:
        """Poll ``query`` until its single value equals ``expected``."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.scalar(query)
            if value == expected:
                return value
            time.sleep(0.5)
        raise AssertionError(f"{query!r} stayed {value!r}, expected {expected!r}\n"
                             f"{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def worker_env(broker: EmbeddedBroker, prefix: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENYIELD_")}
    env.update({
        "TOKENYIELD_KAFKA_BOOTSTRAP": broker.bootstrap,
        "TOKENYIELD_TOPIC_PREFIX": prefix,
        "TOKENYIELD_APP_ID": prefix.rstrip("."),
        "TOKENYIELD_DATA_DIR": str(tmp_path / "data"),
        "TOKENYIELD_STATE_STORE": "rocksdb://",
        "TOKENYIELD_WEB_PORT": str(free_port()),
        "TOKENYIELD_PARTITIONS": "4",
        "TOKENYIELD_CHECKPOINT_INTERVAL_SECONDS": "0.5",
        "TOKENYIELD_TICK_INTERVAL_SECONDS": "0.25",
        "TOKENYIELD_REBALANCE_TIMEOUT_SECONDS": "2",
        "TOKENYIELD_LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
    })
    return env


@pytest.fixture
def make_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """Build (not start) worker handles sharing this test's settings."""
    handles: list[WorkerHandle] = []

    def factory(**overrides: str) -> WorkerHandle:
        env = {**worker_env, **overrides}
        handle = WorkerHandle(env, Path(env["TOKENYIELD_DATA_DIR"]),
                              tmp_path / f"worker-{len(handles)}.log")
        handles.append(handle)
        return handle

    yield factory
    for handle in handles:
        handle.stop(timeout=10)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)
