"""The Arrow bodies (streams/clickhouse/arrow_rows.py) store exactly what
clickhouse-connect stores: the same rows, written both ways into two databases of one
chdb, read back cell by cell (real chdb, no mocks)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from loadtest.engine_into_clickhouse import UnclosableClient
from streams.clickhouse.arrow_rows import ArrowBodies, decimals
from streams.clickhouse.client import migrate
from streams.clickhouse.sink import ARROW_TABLES, TABLES, ClickHouseSink, merge_batches
from streams.core.records import Outputs
from tests.clickhouse_fixtures import LoadedClickHouse, loaded_clickhouse  # noqa: F401
from tests.core_harness import Harness, call, cost, outcome

pytestmark = pytest.mark.clickhouse


def varied_outputs() -> Outputs:
    """Every kind of hot row, with the unusual values: nulls, Unicode, amounts past 64
    bits in atto, negative values, 18 places, verdicts, strategic scores, cost items,
    attributes, maps of money by kind, and a window closing."""
    events: list[dict[str, Any]] = [
        call("c1", "U1", 0, user="ü-1", customer="acme", attributes={"k": "v", "é": "ß"}),
        call("c2", "U1", 1, reported_cost="12.345678901234567891", currency="USD",
             latency_ms=1234, service_tier="flex", agent="planner"),
        call("c3", "U2", 2.0015, input_tokens=10**9, output_tokens=10**9, status="error",
             attempt=2, system_prompt_tokens=10, context_tokens=20),
        call("c4", "U3", 3, model="acme-internal-llm", provider="acme"),  # unpriced
        cost("k1", "U1", 4, amount="0.000000000000000001"),
        cost("k2", "U2", 5, kind="gpu", quantity="3", unit_price="123456.125"),
        cost("k3", None, 6, amount="7"),  # shared
        outcome("o1", "U1", 10, value="99999.999999999999999999", quality_score=0.3,
                evidence_confidence=0.7, human_review_minutes="1.5", review_rate="60",
                baseline_cost="4.25", user="ü-1", customer="acme"),
        outcome("o2", "U2", 11, value="-3.5", status="rejected", is_final=False),
        outcome("o3", "U3", 12, value=None, currency=None, value_dimension="strategic",
                strategic_score="7.125"),
        outcome("v1", "U1", 20, status=None, value=None, verdict="overturned",
                value_at_risk="250.5"),
    ]
    harness = Harness()
    harness.send(events)
    # Pending units, one of them over three UTC days (its rows on the earlier two are
    # tombstones), as a checkpoint takes them for work_units_by_day.
    harness.send([call("p1", "P", 0, reported_cost="0.25", currency="USD"),
                  call("p2", "P", 2 * 86_400 + 7, agent="writer"),
                  cost("k9", "P", 8, amount="2.5")])  # fully loaded > model cost
    pending = [unit for engine in harness.engines.values() for unit in engine.pending_units()]
    harness.finish()
    out = harness.run.outputs
    out.pending_units = pending
    assert any(unit.last_ms // 86_400_000 - unit.first_ms // 86_400_000 == 2
               and unit.loaded_atto > unit.cost_atto for unit in pending)
    out.windows = list(harness.run.windows.values())  # the rollup's rows
    assert out.calls and out.outcomes and out.attributions and out.windows and out.cost_items
    return out


def write(client: Any, database: str, batch: Outputs, arrow: bool) -> None:
    client.command(f"DROP DATABASE IF EXISTS {database}")
    migrate(client, database)
    sink = ClickHouseSink(lambda: UnclosableClient(client), database,
                          reconnect_on_error=False)
    sink.arrow = arrow
    try:
        asyncio.run(sink.write(batch))
        if arrow:  # the test means nothing if a table quietly took the old path
            bodies = sink._bodies
            assert bodies is not None
            for _, table, spec in TABLES:
                if table in ARROW_TABLES:
                    assert bodies.types(table, spec) is not None, table
    finally:
        sink.stop()


def stored(client: Any, database: str, table: str) -> list[tuple[Any, ...]]:
    columns = [name for name, _ in client.query(
        "SELECT name, type FROM system.columns WHERE database = {d:String} AND "
        "table = {t:String} AND name != 'ingested_at' ORDER BY name",
        parameters={"d": database, "t": table}).result_rows]
    # toString: every type compared as ClickHouse prints it (exact decimals, ms times).
    listed = ", ".join(f"toString(`{c}`)" for c in columns)
    rows = client.query(f"SELECT {listed} FROM {database}.{table} ORDER BY {listed}")
    return [tuple(zip(columns, row, strict=True)) for row in rows.result_rows]


def test_arrow_bodies_store_what_clickhouse_connect_stores(
        loaded_clickhouse: LoadedClickHouse) -> None:  # noqa: F811
    client = loaded_clickhouse.client
    batch = varied_outputs()
    write(client, "arrow_new", batch, arrow=True)
    write(client, "arrow_old", batch, arrow=False)
    for table in sorted(ARROW_TABLES):
        new, old = stored(client, "arrow_new", table), stored(client, "arrow_old", table)
        assert new, table
        assert new == old, table
    for database in ("arrow_new", "arrow_old"):
        client.command(f"DROP DATABASE IF EXISTS {database}")


def test_an_unknown_column_type_sends_the_table_to_clickhouse_connect() -> None:
    bodies = ArrowBodies(lambda table: {"a": "String", "b": "IPv4"})
    assert bodies.body("t", [("a", str), ("b", str)], ["x"]) is None
    bodies = ArrowBodies(lambda table: {"a": "String"})
    assert bodies.body("t", [("a", str), ("b", str)], ["x"]) is None  # a column missing


def test_decimal_words_past_64_bits_and_negative() -> None:
    import pyarrow as pa

    kind = pa.decimal128(38, 18)
    values = [10**20 + 1, -(10**19), None, -1, 0, 2**63 - 1]
    assert decimals(values, kind).to_pylist() == [
        None if v is None else Decimal(v).scaleb(-18) for v in values]
    assert decimals([-5, 7], kind).to_pylist() == [Decimal("-5E-18"), Decimal("7E-18")]
    assert decimals([None, 7125000], pa.decimal128(9, 6)).to_pylist() == [
        None, Decimal("7.125000")]


def test_a_batch_keeps_only_the_latest_revision_of_each_attribution() -> None:
    harness = Harness()
    for event in (outcome("o1", "U", 0), call("c1", "U", 1), call("c2", "U", 2)):
        harness.send([event])  # one message each: one revision each
    out = harness.run.outputs
    revisions = [a.revision for a in out.attributions]
    assert len(revisions) == 3 and revisions == sorted(revisions)
    merged = merge_batches([out])
    assert [(a.attribution_id, a.revision, a.calls) for a in merged.attributions] == \
        [("U", revisions[-1], 2)]


def test_one_attribution_per_touched_unit_per_message() -> None:
    harness = Harness()
    harness.send([outcome("o1", "U", 0), outcome("o2", "V", 0)])
    out = harness.message("calls", [call("c1", "U", 1), call("c2", "V", 1),
                                    call("c3", "U", 2), call("c4", "U", 3)])
    assert sorted((a.attribution_id, a.calls) for a in out.attributions) == \
        [("U", 3), ("V", 1)]
