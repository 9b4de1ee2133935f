"""ClickHouse through clickhouse-connect: embedded chdb or a server, one code path.

``chdb:///abs/path`` opens an on-disk ClickHouse inside this process (one process per
path: a second one gets a lock error, see ``sql_via_worker``); ``http(s)://...`` talks
to a server; ``relay://:token@host:port`` reaches the chdb of a ``--processes`` group's
writer (``streams.clickhouse.relay``). Migrations in ``deploy/clickhouse/migrations``
are applied in order, once each, and recorded in ``schema_migrations``: ``tokenyield db
migrate`` and worker start-up both run them, and running them again changes nothing.
With a cluster name (``TOKENYIELD_CLICKHOUSE_CLUSTER``) the same files run in their
clustered form (``streams.clickhouse.cluster``).
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from schemas.errors import StorageError
from streams.clickhouse.cluster import ClusterSchema, clustered
from streams.clickhouse.inline_views import ViewCatalog
from streams.clickhouse.relay import RELAY_SCHEME, RelayClient
from streams.settings import mask_dsn

log = logging.getLogger(__name__)

def _migrations_dir() -> Path:
    """deploy/ in a checkout (or an editable install); else the copy a regular install
    puts under ``<prefix>/share/tokenyield/migrations`` (pyproject's data-files)."""
    checkout = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse" / "migrations"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "tokenyield" / "migrations"


MIGRATIONS_DIR = _migrations_dir()
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def connect(dsn: str, *, username: str | None = None, password: str | None = None) -> Client:
    """A client for ``dsn``; errors name the target without its credentials."""
    try:
        if dsn.startswith(RELAY_SCHEME):  # a --processes group's writer holds chdb
            return RelayClient(dsn)  # type: ignore[return-value]
        if dsn.startswith("chdb://"):
            path = dsn[len("chdb://"):]
            if path not in ("", "memory") and not path.startswith("/"):
                raise StorageError(f"chdb paths must be absolute, got {path!r}", dsn=mask_dsn(dsn))
            if path.startswith("/"):
                Path(path).mkdir(parents=True, exist_ok=True)
            return clickhouse_connect.get_client(dsn=dsn)
        parsed = urlparse(dsn)
        kwargs: dict[str, Any] = {"dsn": dsn, "connect_timeout": 10, "send_receive_timeout": 120}
        if username and not parsed.username:
            kwargs["username"] = username
        if password and not parsed.password:
            kwargs["password"] = password
        return clickhouse_connect.get_client(**kwargs)
    except StorageError:
        raise
    except Exception as exc:  # the driver raises many types; callers need one
        raise StorageError(f"cannot open ClickHouse at {mask_dsn(dsn)}: {_scrub(str(exc), dsn)}",
                           dsn=mask_dsn(dsn)) from exc


def use_database(client: Client, database: str) -> Client:
    """Make ``database`` the client's default, so unqualified table names in a query mean
    tokenyield's tables (qualified names still reach any database). On chdb the default
    is the handle's USE state; on a server it is sent with each request."""
    if client.database != database:
        client.database = database
    return client


def _scrub(text: str, dsn: str) -> str:
    parsed = urlparse(dsn)
    if parsed.password:
        text = text.replace(parsed.password, "***")
    return text


def split_statements(sql: str) -> list[str]:
    """Split a migration file on ``;`` at line ends, dropping comment-only chunks."""
    statements = []
    for chunk in re.split(r";\s*(?:\n|$)", sql):
        body = "\n".join(
            line for line in chunk.splitlines() if not line.strip().startswith("--")
        ).strip()
        if body:
            statements.append(chunk.strip())
    return statements


def migrations(directory: Path = MIGRATIONS_DIR) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise StorageError(f"migration file name {path.name} is not NNNN_name.sql")
        found.append((match.group(1), path))
    versions = [v for v, _ in found]
    if len(set(versions)) != len(versions):
        raise StorageError("two migrations share a version number", versions=versions)
    return found


def migration_statements(directory: Path = MIGRATIONS_DIR) -> dict[str, list[str]]:
    """Each migration's statements, by version, as the runner executes them on one node:
    ``INLINE VIEWS`` expanded (``streams.clickhouse.inline_views``), after checking that
    no inlined copy of a view went stale."""
    catalog = ViewCatalog()
    statements = {version: catalog.statements(split_statements(path.read_text()), path.name)
                  for version, path in migrations(directory)}
    catalog.check()
    return statements


# The runner's own statements, written like a migration ({db}): on one node they are
# exactly the statements it always ran; on a cluster they are transformed like the rest.
_BOOTSTRAP = (
    "CREATE DATABASE IF NOT EXISTS {db}",
    "CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
    "(version String, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
    "ENGINE = ReplacingMergeTree ORDER BY version",
)


def migrate(client: Client, database: str, directory: Path = MIGRATIONS_DIR, *,
            cluster: str = "") -> list[str]:
    """Apply pending migrations; return the versions applied now.

    ``cluster`` empty: one node, every statement as written. Otherwise every statement
    of every migration, applied or not, is first transformed for that cluster, in order
    (a transform needs what earlier migrations created), and all of them before anything
    runs: a migration with no clustered form stops the run before it changes the schema.
    """
    schema = ClusterSchema(cluster) if cluster else None
    bootstrap = list(_BOOTSTRAP)
    plans = migration_statements(directory)
    if schema is not None:
        bootstrap = _clustered(bootstrap, schema, "the runner's schema_migrations")
        plans = {version: _clustered(plans[version], schema, path.name)
                 for version, path in migrations(directory)}
    for statement in bootstrap:
        client.command(statement.replace("{db}", database))
    done = {row[0] for row in client.query(
        f"SELECT version FROM {database}.schema_migrations FINAL").result_rows}
    applied = []
    for version, path in migrations(directory):
        if version in done:
            continue
        for statement in plans[version]:
            try:
                client.command(statement.replace("{db}", database))
            except Exception as exc:
                raise StorageError(f"migration {path.name} failed: {exc}",
                                   migration=path.name) from exc
        if schema is None:
            client.insert(f"{database}.schema_migrations", [[version, path.stem]],
                          column_names=["version", "name"])
        else:
            # Through the Distributed table, synchronously: the record is on its shard
            # before the next migration runs (else a node lost with its send queue
            # would let the next run apply this migration again).
            client.insert(f"{database}.schema_migrations", [[version, path.stem]],
                          column_names=["version", "name"],
                          settings={"distributed_foreground_insert": 1})
        applied.append(version)
        log.info("applied ClickHouse migration %s", path.name)
    return applied


def _clustered(statements: list[str], schema: ClusterSchema, source: str) -> list[str]:
    """``statements`` in their clustered form; an error names where they came from."""
    try:
        return [out for statement in statements
                for out in clustered(statement, schema.cluster, schema)]
    except StorageError as exc:
        fields = {**exc.fields, "migration": source, "cluster": schema.cluster}
        raise StorageError(f"{source} has no clustered form: {exc.message}",
                           **fields) from exc
