"""The sink retries failures of ClickHouse and stops on faults of its own (real chdb)."""

from __future__ import annotations

import asyncio
import time

import pytest
from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    DataError,
    OperationalError,
    ProgrammingError,
    StreamFailureError,
)

from schemas.errors import SinkError, StorageError
from schemas.events import ModelCall
from streams.clickhouse.client import migrate
from streams.clickhouse.sink import ClickHouseSink, is_storage_failure
from streams.core.records import CallRecord, Outputs
from tests.clickhouse_fixtures import LoadedClickHouse, loaded_clickhouse  # noqa: F401
from tests.core_harness import call

pytestmark = pytest.mark.clickhouse


def record(event_id: str, offset: int) -> CallRecord:
    return CallRecord(call=ModelCall.model_validate(call(event_id, "wu-sink", 0)),
                      cost_atto=10**15, computed_atto=10**15, price_book_version="test",
                      partition=0, offset=offset)


def batch(*records: CallRecord) -> Outputs:
    out = Outputs(calls=list(records))
    for r in records:
        out.cover("calls", 0, r.offset)
    return out


@pytest.mark.parametrize(("error", "retried"), [
    (StorageError("cannot open ClickHouse at http://ch:8123"), True),
    (OperationalError("connection refused"), True),
    (StreamFailureError("stream ended unexpectedly"), True),
    (ConnectionResetError(), True),
    (TimeoutError(), True),
    (DatabaseError("Code: 243. NOT_ENOUGH_SPACE"), True),
    (ProgrammingError("Insert data column count does not match column names"), False),
    (DataError("cannot convert"), False),
    (TypeError("unsupported operand"), False),
    (ValueError("invalid literal for int()"), False),
    (AttributeError("'NoneType' object has no attribute 'model'"), False),
])
def test_which_failures_are_retried(error: BaseException, retried: bool) -> None:
    assert is_storage_failure(error) is retried


def test_a_refusal_by_clickhouse_is_retried_until_the_rows_land(
        loaded_clickhouse: LoadedClickHouse) -> None:  # noqa: F811
    """The tables are missing (migrations not run yet): ClickHouse refuses, the sink
    waits and retries, and once they exist the same batch lands, once."""
    client = loaded_clickhouse.client
    database = "sink_retry"
    client.command(f"DROP DATABASE IF EXISTS {database}")
    errors: list[BaseException] = []

    def on_error(operation: str, exc: BaseException) -> None:
        errors.append(exc)
        if len(errors) == 2:  # the operator runs the migrations
            migrate(client, database)

    sink = ClickHouseSink(lambda: client, database, retry_max_seconds=0.05,
                          reconnect_on_error=False, on_error=on_error)
    rows = batch(record("s1", 0), record("s2", 1))
    asyncio.run(sink.write(rows))
    assert len(errors) == 2 and all(isinstance(e, DatabaseError) for e in errors)
    assert "UNKNOWN_DATABASE" in sink.last_error or "does not exist" in sink.last_error
    assert sink.failing_since is None  # healthy again
    assert client.query(f"SELECT count() FROM {database}.model_calls").result_rows == [(2,)]


def test_a_fault_in_a_column_builder_fails_at_once_with_a_clear_error(
        loaded_clickhouse: LoadedClickHouse) -> None:  # noqa: F811
    client = loaded_clickhouse.client
    database = "sink_fault"
    migrate(client, database)
    errors: list[BaseException] = []
    sink = ClickHouseSink(lambda: client, database, retry_max_seconds=30,
                          reconnect_on_error=False, on_error=lambda op, e: errors.append(e))
    good = record("f1", 0)
    # A row of the wrong type, as a bug in a column builder would make it.
    bad = record("f2", 1)
    bad.call = bad.call.model_copy(update={"input_tokens": "lots"})
    started = time.monotonic()
    with pytest.raises(SinkError) as caught:
        asyncio.run(sink.write(batch(good, bad)))
    assert time.monotonic() - started < 5  # not retried with backoff
    assert len(errors) == 1
    error = caught.value
    assert error.fields == {"table": "model_calls", "cause": "DataError"}
    assert "fault in tokenyield, not in ClickHouse" in error.message
    assert "processes the same input again" in error.message
    assert client.query(f"SELECT count() FROM {database}.model_calls").result_rows == [(0,)]
