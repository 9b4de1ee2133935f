"""``tokenyield worker --processes N``: one worker process per core, one command.

Faust scales by processes: N workers with one app id are one consumer group, and Kafka
splits the input partitions between them (so N is at most ``TOKENYIELD_PARTITIONS``
useful processes). This supervisor starts them and stops them together:

- **the broker**: with no ``TOKENYIELD_KAFKA_BOOTSTRAP``, the supervisor starts the one
  embedded broker and hands its address to every worker (and, as a single worker does
  with a new embedded broker, first wipes the Faust state the broker would not match);
- **state**: worker 0 keeps the data dir (its ``worker.json`` is what ``tokenyield sql``
  and ``status`` find); worker *i* gets ``<data dir>/workers/<i>`` for its Faust state;
- **ClickHouse**: with a server DSN every worker inserts on its own. The embedded chdb
  opens its path in one process only, so worker 0 is the group's *writer*: the others'
  DSN is ``relay://`` to its relay port, a listener of its own beside its event loop
  (``streams.clickhouse.relay_server``), where their inserts run on its ClickHouse
  client at once (``streams.clickhouse.relay``); acknowledgements still follow the
  insert, so the guarantees are unchanged. A ClickHouse server is the path for more
  than one machine, and the faster one on one machine (docs/SCALING.md);
- **web ports**: worker 0 on ``TOKENYIELD_WEB_PORT`` (a free one if 0), the others on
  free ports.

If any worker exits, the supervisor stops the others and exits with its code (a
supervisor such as systemd or Kubernetes restarts the group; unacknowledged input is
processed again, as after any crash).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from schemas.errors import ConfigurationError
from streams.kafka.tansu_broker import EmbeddedBroker, free_port, write_broker_file
from streams.settings import Settings

log = logging.getLogger(__name__)


def worker_dir(settings: Settings, index: int) -> Path:
    """Worker ``index``'s data dir (worker 0 keeps the group's)."""
    return settings.data_dir if index == 0 else settings.data_dir / "workers" / str(index)


def group_environments(settings: Settings, count: int, bootstrap: str, writer_port: int,
                       token: str, relay_port: int) -> list[dict[str, str]]:
    """The settings each worker of a group gets, over the supervisor's environment."""
    chdb = settings.clickhouse_target().startswith("chdb://")
    environments = []
    for index in range(count):
        env = {"TOKENYIELD_DATA_DIR": str(worker_dir(settings, index)),
               "TOKENYIELD_KAFKA_BOOTSTRAP": bootstrap,
               "TOKENYIELD_WEB_PORT": str(writer_port if index == 0 else 0)}
        if chdb:
            if index == 0:
                env["TOKENYIELD_CLICKHOUSE_DSN"] = settings.clickhouse_target()
                env["TOKENYIELD_RELAY_TOKEN"] = token
                env["TOKENYIELD_RELAY_PORT"] = str(relay_port)
            else:
                env["TOKENYIELD_CLICKHOUSE_DSN"] = f"relay://:{token}@127.0.0.1:{relay_port}"
        environments.append(env)
    return environments


class ProcessGroup:
    """N worker processes of one consumer group, started and stopped together."""

    def __init__(self, settings: Settings, count: int) -> None:
        if count < 1:
            raise ConfigurationError(f"--processes must be at least 1, got {count}")
        if count > settings.partitions:
            raise ConfigurationError(
                f"--processes {count} is more than the {settings.partitions} partitions "
                f"(TOKENYIELD_PARTITIONS): a worker beyond that would own none")
        self.settings = settings
        self.count = count
        self.processes: list[subprocess.Popen[bytes]] = []
        self.broker: EmbeddedBroker | None = None
        self._stopping = False

    def start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        bootstrap = settings.kafka_bootstrap
        if not bootstrap.strip():
            self.broker = EmbeddedBroker(log_path=settings.data_dir / "broker.log").start()
            bootstrap = self.broker.bootstrap
            write_broker_file(settings.data_dir, self.broker)
            for index in range(self.count):  # the new broker has no offsets
                shutil.rmtree(worker_dir(settings, index) / "faust", ignore_errors=True)
        writer_port = settings.web_port or free_port()
        token = secrets.token_urlsafe(32)
        relay_port = free_port()
        for index, env in enumerate(group_environments(settings, self.count, bootstrap,
                                                       writer_port, token, relay_port)):
            Path(env["TOKENYIELD_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"], env={**os.environ, **env}))
            log.info("worker %d of %d started (pid %d)", index + 1, self.count,
                     self.processes[-1].pid)

    def wait(self) -> int:
        """Until a worker exits (or a signal): then all stop; the first exit code."""
        code = 0
        while not self._stopping:
            for process in self.processes:
                status = process.poll()
                if status is not None:
                    code = status
                    if status != 0:
                        log.error("worker pid %d exited with %d: stopping the group",
                                  process.pid, status)
                    self._stopping = True
                    break
            else:
                time.sleep(0.2)
        self.stop()
        return code

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def run(self) -> int:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self._stopping = True

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            return self.wait()
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
