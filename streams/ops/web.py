"""The worker's HTTP endpoints (Faust's web server, bound to ``TOKENYIELD_WEB_HOST``).

- ``GET /health/``: JSON status; 503 when ClickHouse inserts keep failing.
- ``GET /metrics/``: Prometheus text format; reading it samples the memory figures.
- ``POST /sql/`` with ``{"sql": "SELECT ..."}``: a read-only query against the worker's
  ClickHouse, in its configured database (qualified names reach others). With embedded
  chdb only the worker may open the data directory, so ``tokenyield sql`` routes through
  here while a worker runs.

The writer of a ``--processes`` group serves the group's inserts on a listener of its
own, not here (``streams.clickhouse.relay_server``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas.errors import QueryRefused
from streams.clickhouse.client import use_database
from streams.kafka.faust_app import Services
from streams.ops.memory_report import (
    clickhouse_bytes,
    python_traced_bytes,
    resident_bytes,
    rocksdb_bytes,
)

READ_ONLY = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN|EXISTS)\b", re.IGNORECASE)


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


def run_read_only(services: Services, sql: str) -> dict[str, Any]:
    """Run one read-only statement; return columns, types and rows as JSON values."""
    if not READ_ONLY.match(sql) or ";" in sql.strip().rstrip(";"):
        raise QueryRefused("only one SELECT, WITH, SHOW, DESCRIBE, EXPLAIN or EXISTS statement")
    # Unqualified names mean tokenyield's tables, as for `tokenyield sql` without a worker.
    client = use_database(services.sink.client(), services.settings.clickhouse_database)
    result = client.query(sql.strip().rstrip(";"))
    return {
        "columns": list(result.column_names),
        "types": [t.name for t in result.column_types],
        "rows": [[to_jsonable(v) for v in row] for row in result.result_rows],
    }


async def sample_memory(services: Services) -> None:
    """Set ``tokenyield_memory_bytes`` by holder (see streams/ops/memory_report.py)."""
    figures: dict[str, int | None] = {"resident": resident_bytes(),
                                      "python_traced": python_traced_bytes()}
    figures.update(rocksdb_bytes(services.tables))
    sink = services.sink
    if services.settings.clickhouse_target().startswith("chdb://") and sink.failing_since is None:
        # On the sink's thread, behind any insert in progress; bounded, and skipped while
        # inserts are failing, so a sink retrying an outage neither holds the scrape nor
        # queues queries behind its retries. Its failures show in the sink's own metrics.
        with contextlib.suppress(Exception):
            figures["clickhouse"] = await asyncio.wait_for(
                sink.call(clickhouse_bytes), timeout=2.0)
    for holder, value in figures.items():
        if value is not None:
            services.metrics.memory.labels(holder).set(value)


def register_views(app: faust.App, services: Services) -> None:
    @app.page("/health/")
    class Health(View):
        async def get(self, request: Request) -> Response:
            runtimes = services.runtimes
            now = time.monotonic()
            status = {
                "status": "ok",
                "uptime_seconds": round(time.time() - services.started_at, 1),
                "partitions": sorted(runtimes),
                "open_work_units": sum(len(r.engine.units) for r in runtimes.values()),
                "seconds_since_checkpoint": {
                    str(p): round(now - r.last_checkpoint, 1) for p, r in runtimes.items()},
                "clickhouse_failures": services.sink.failures,
                "price_book_version": services.prices.current().version,
            }
            sink = services.sink
            healthy = sink.failing_since is None
            if not healthy:
                # Inserts are being retried: nothing is lost, but input is not advancing.
                status["status"] = "degraded"
                status["clickhouse_failing_seconds"] = round(now - sink.failing_since, 1)
                status["clickhouse_error"] = sink.last_error
            return self.json(status, status=200 if healthy else 503)

    @app.page("/metrics/")
    class PrometheusMetrics(View):
        async def get(self, request: Request) -> Response:
            await sample_memory(services)
            return self.bytes(generate_latest(services.metrics.registry),
                              content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/sql/")
    class Sql(View):
        async def post(self, request: Request) -> Response:
            try:
                body = json.loads(await request.read())
                sql = str(body["sql"])
            except (ValueError, KeyError, TypeError):
                return self.json({"error": 'send {"sql": "SELECT ..."}'}, status=400)
            try:
                result = await services.sink.call(lambda _client: run_read_only(services, sql))
            except QueryRefused as exc:
                return self.json({"error": exc.message}, status=400)
            except Exception as exc:
                return self.json({"error": f"{type(exc).__name__}: {exc}"}, status=422)
            return self.json(result)
