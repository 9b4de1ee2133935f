"""``tokenyield sql`` runs in the configured database, with or without a running worker.

A newcomer types ``tokenyield sql "SELECT count() FROM attributions_latest"``: the table
lives in ``TOKENYIELD_CLICKHOUSE_DATABASE``, so that is where an unqualified name must
resolve, both on the embedded chdb path (no worker) and when the query is forwarded to a
running worker's ``/sql/`` endpoint. Qualified names still reach other databases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

DATABASE = "ty_custom"  # not the default, so the setting is what is tested


def tokenyield_sql(env: dict[str, str], query: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", "sql", "--format", "json", query],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def rows(env: dict[str, str], query: str) -> list[dict[str, Any]]:
    done = tokenyield_sql(env, query)
    assert done.returncode == 0, done.stderr[-3000:]
    answer: list[dict[str, Any]] = json.loads(done.stdout)
    return answer


def assert_runs_in_the_configured_database(env: dict[str, str]) -> None:
    assert rows(env, "SELECT currentDatabase() AS db") == [{"db": DATABASE}]
    # Every view the README names resolves without a database prefix.
    assert rows(env, "SELECT count() AS n FROM attributions_latest") == [{"n": 0}]
    assert rows(env, "SELECT count() AS n FROM schema_migrations")[0]["n"] > 0
    # Qualified names still work, into this database and any other.
    assert rows(env, f"SELECT count() AS n FROM {DATABASE}.attributions_latest") == [{"n": 0}]
    assert rows(env, "SELECT name FROM system.databases WHERE name = 'system'") == \
        [{"name": "system"}]


@pytest.mark.clickhouse
def test_sql_without_a_worker_runs_in_the_configured_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENYIELD_")}
    env.update({"TOKENYIELD_DATA_DIR": str(tmp_path / "data"),
                "TOKENYIELD_CLICKHOUSE_DATABASE": DATABASE})
    before = tokenyield_sql(env, "SELECT count() FROM attributions_latest")
    # Before any migration the database does not exist: the error says how to make it.
    assert before.returncode != 0
    assert f"database {DATABASE} is created by `tokenyield db migrate`" in before.stderr
    migrated = subprocess.run([sys.executable, "-m", "streams.cli", "db", "migrate"], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    assert_runs_in_the_configured_database(env)


@pytest.mark.broker
@pytest.mark.clickhouse
def test_sql_through_a_running_worker_runs_in_the_configured_database(make_worker: Any) -> None:
    worker = make_worker(TOKENYIELD_CLICKHOUSE_DATABASE=DATABASE).start()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TOKENYIELD_")},
           **{k: v for k, v in worker.env.items() if k.startswith("TOKENYIELD_")}}
    assert (Path(worker.env["TOKENYIELD_DATA_DIR"]) / "worker.json").exists()  # forwarded
    assert_runs_in_the_configured_database(env)
    # The worker's own endpoint answers the same way.
    assert worker.scalar("SELECT currentDatabase()") == DATABASE
