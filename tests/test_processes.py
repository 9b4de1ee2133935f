"""``tokenyield worker --processes N``: one consumer group of N processes, and the
embedded chdb written by the first of them for all (streams.app.processes and
streams.clickhouse.relay). End to end on the embedded broker and a real chdb."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DataError, OperationalError

from schemas.errors import ConfigurationError
from streams.app.processes import ProcessGroup, group_environments, worker_dir
from streams.clickhouse import relay
from streams.clickhouse.relay_server import RelayServer
from streams.kafka.tansu_broker import free_port, running_broker
from streams.ops.worker_client import worker_sql
from streams.settings import Settings
from streams.traffic.generator import run_benchmark
from streams.traffic.scenarios import Scenario
from tests.clickhouse_fixtures import LoadedClickHouse, loaded_clickhouse  # noqa: F401


def test_a_group_shares_one_broker_and_the_first_worker_writes_the_embedded_chdb(
        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, partitions=4)
    envs = group_environments(settings, 3, "127.0.0.1:9092", 7000, "secret", 7001)
    assert [e["TOKENYIELD_KAFKA_BOOTSTRAP"] for e in envs] == ["127.0.0.1:9092"] * 3
    assert [Path(e["TOKENYIELD_DATA_DIR"]) for e in envs] == [
        tmp_path, tmp_path / "workers" / "1", tmp_path / "workers" / "2"]
    assert envs[0]["TOKENYIELD_CLICKHOUSE_DSN"] == f"chdb://{tmp_path / 'clickhouse'}"
    assert envs[0]["TOKENYIELD_RELAY_TOKEN"] == "secret"
    assert envs[0]["TOKENYIELD_WEB_PORT"] == "7000"
    assert envs[0]["TOKENYIELD_RELAY_PORT"] == "7001"  # its own listener, not the web port
    for env in envs[1:]:
        assert env["TOKENYIELD_CLICKHOUSE_DSN"] == "relay://:secret@127.0.0.1:7001"
        assert "TOKENYIELD_RELAY_TOKEN" not in env and env["TOKENYIELD_WEB_PORT"] == "0"


def test_with_a_clickhouse_server_every_worker_inserts_on_its_own(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, partitions=4,
                        clickhouse_dsn="http://default:pw@ch:8123")  # type: ignore[arg-type]
    envs = group_environments(settings, 2, "k:9092", 7000, "secret", 7001)
    assert all("TOKENYIELD_CLICKHOUSE_DSN" not in e and "TOKENYIELD_RELAY_TOKEN" not in e
               for e in envs)  # the configured server, inherited


def test_more_processes_than_partitions_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="more than the 4 partitions"):
        ProcessGroup(Settings(data_dir=tmp_path, partitions=4), 5)


@pytest.mark.clickhouse
def test_the_relay_keeps_every_type_exact(loaded_clickhouse: LoadedClickHouse) -> None:  # noqa: F811
    client = loaded_clickhouse.client
    client.command("CREATE DATABASE IF NOT EXISTS relay_test")
    client.command("CREATE OR REPLACE TABLE relay_test.t (d Decimal(38, 18), t DateTime64(3, "
                   "'UTC'), day Date, b String, m Map(String, String), n Nullable(UInt64)) "
                   "ENGINE = MergeTree ORDER BY tuple()")
    lock = threading.Lock()

    def run(asked: dict[str, Any]) -> Any:
        with lock:
            return relay.execute(client, asked)

    server = RelayServer("tok", run).start()
    port = server.port
    try:
        remote = relay.RelayClient(f"relay://:tok@127.0.0.1:{port}")
        moment = datetime(2026, 12, 1, 10, 0, 0, 123000, tzinfo=UTC)
        remote.insert("relay_test.t", [[Decimal("123456789.123456789012345678")], [moment],
                                       [date(2026, 12, 1)], [b"\xff\x00raw"], [{"k": "v"}],
                                       [2**64 - 1]],
                      column_names=["d", "t", "day", "b", "m", "n"], column_oriented=True)
        result = remote.query("SELECT d, t, day, b, m, n FROM relay_test.t")
        assert result.column_names == ("d", "t", "day", "b", "m", "n")
        assert result.result_rows == client.query(
            "SELECT d, t, day, b, m, n FROM relay_test.t").result_rows
        d, t, day, _b, m, n = result.result_rows[0]
        assert (d, day, m, n) == (Decimal("123456789.123456789012345678"),
                                  date(2026, 12, 1), {"k": "v"}, 2**64 - 1)
        assert t.replace(tzinfo=UTC) == moment
        # ClickHouse refusing comes back as the sink treats it locally (a storage
        # failure: retried); a fault of ours comes back as one (not retried).
        with pytest.raises(OperationalError, match="on the writer: DatabaseError"):
            remote.query("SELECT no_such_column FROM relay_test.t")
        with pytest.raises(DataError, match="on the writer: DataError: the relay runs"):
            remote._call({"op": "drop"})
        with pytest.raises(DataError, match="Forbidden"):
            relay.RelayClient(f"relay://:wrong@127.0.0.1:{port}").query("SELECT 1")
        # Requests from several threads at once are each answered, none lost or mixed.
        with ThreadPoolExecutor(4) as pool:
            counts = list(pool.map(lambda i: remote.query(f"SELECT {i} + count() FROM "
                                                          f"relay_test.t").result_rows[0][0],
                                   range(12)))
        assert counts == [i + 1 for i in range(12)]
    finally:
        server.stop()
        client.command("DROP DATABASE IF EXISTS relay_test")
    with pytest.raises(OperationalError, match="unreachable"):  # down: retried
        relay.RelayClient(f"relay://:tok@127.0.0.1:{free_port()}").query("SELECT 1")


def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/", timeout=5) as answer:
        return json.loads(answer.read())


def _web_port(data_dir: Path) -> int | None:
    try:
        return int(json.loads((data_dir / "worker.json").read_text())["web_port"])
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.broker
@pytest.mark.clickhouse
@pytest.mark.slow
def test_two_processes_share_the_partitions_and_store_every_event_once(
        tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENYIELD_")}
    env.update({"TOKENYIELD_DATA_DIR": str(tmp_path), "TOKENYIELD_PARTITIONS": "4",
                "TOKENYIELD_TOPIC_PREFIX": "procs.", "TOKENYIELD_APP_ID": "procs",
                "TOKENYIELD_LOG_LEVEL": "warning", "TOKENYIELD_WEB_PORT": str(free_port()),
                "TOKENYIELD_REBALANCE_TIMEOUT_SECONDS": "2",
                "TOKENYIELD_CHECKPOINT_INTERVAL_SECONDS": "1"})
    log = (tmp_path / "group.log").open("wb")
    group = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--processes",
                              "2"], env=env, stdout=log, stderr=subprocess.STDOUT)
    settings = Settings(data_dir=tmp_path, partitions=4)
    try:
        deadline = time.monotonic() + 120
        ports: list[int | None] = [None, None]
        owned: list[list[int]] = [[], []]
        while time.monotonic() < deadline:
            assert group.poll() is None, (tmp_path / "group.log").read_text()[-3000:]
            ports = [_web_port(worker_dir(settings, i)) for i in range(2)]
            if all(ports):
                try:
                    owned = [_health(p)["partitions"] for p in ports if p]
                except OSError:
                    owned = [[], []]
                if all(owned) and sorted(owned[0] + owned[1]) == [0, 1, 2, 3]:
                    break
            time.sleep(0.5)
        assert all(owned), f"each worker owns partitions: {owned}"
        bootstrap = running_broker(tmp_path)
        assert bootstrap is not None
        scenario = Scenario.for_events(3000, seed=5, run_id="procs").clean()
        report = asyncio.run(run_benchmark(bootstrap, 3000, "envelope", scenario=scenario,
                                           topic_prefix="procs.", partitions=4))
        writer_port = ports[0]
        assert writer_port is not None
        stored = 0
        while time.monotonic() < deadline + 120:
            answer = worker_sql(writer_port, "SELECT (SELECT count() FROM model_calls FINAL)"
                                             " + (SELECT count() FROM outcomes FINAL)")
            stored = int(answer["rows"][0][0])
            if stored >= report.generated:
                break
            time.sleep(0.5)
        assert stored == report.generated
        # Both wrote: the second worker's rows went through the writer.
        second = worker_sql(writer_port, "SELECT uniqExact(kafka_partition) FROM model_calls")
        assert int(second["rows"][0][0]) == 4
    finally:
        group.send_signal(signal.SIGTERM)
        try:
            group.wait(60)
        except subprocess.TimeoutExpired:
            group.kill()
            group.wait()
        log.close()
    assert running_broker(tmp_path) is None  # the supervisor stopped its broker
