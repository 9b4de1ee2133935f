"""INLINE VIEWS (streams.clickhouse.inline_views): a migration flattens parameterized
views into the views that call them; the figures stay the nested views' and a copy
that went stale stops the migration run before it changes anything."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from schemas.errors import StorageError
from streams.clickhouse.client import migrate, migration_statements
from streams.clickhouse.inline_views import ViewCatalog
from tests.clickhouse_fixtures import loaded_database

DAYS = """CREATE TABLE IF NOT EXISTS {db}.spend (day Date, team String, cost Decimal(38, 18))
ENGINE = MergeTree ORDER BY (day, team);

-- The spend from a day on; a comment with a ) and a ' in it.
CREATE OR REPLACE VIEW {db}.v_spend_since AS
SELECT day, team, cost FROM {db}.spend  -- rows, not a call: spend has no parameters
WHERE day >= toDate({from_day:Date});

CREATE OR REPLACE VIEW {db}.v_team_since AS
SELECT team, sum(cost) AS cost
FROM {db}.v_spend_since(from_day = {from_day:Date})
WHERE team != {skip:String}
GROUP BY team;

CREATE OR REPLACE VIEW {db}.v_top_since AS
SELECT team, cost,
       (SELECT sum(cost) FROM {db}.v_spend_since(from_day = {from_day:Date})) AS total
FROM {db}.v_team_since(from_day = {from_day:Date}, skip = 'nobody, really')
ORDER BY cost DESC;

INSERT INTO {db}.spend VALUES ('2026-11-01', 'a', 1.5), ('2026-11-02', 'b', 2.25),
    ('2026-11-03', 'a', 0.25), ('2026-11-03', 'nobody, really', 9);
"""

QUERY = "SELECT * FROM {db}.v_top_since(from_day = '2026-11-02') ORDER BY team"


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def _definition(client: Client, database: str, view: str) -> str:
    return client.query(
        "SELECT create_table_query FROM system.tables WHERE database = %(d)s "
        "AND name = %(v)s", parameters={"d": database, "v": view}).result_rows[0][0]


@pytest.mark.clickhouse
def test_inlined_views_answer_as_the_nested_ones_without_calling_them(tmp_path: Path
                                                                     ) -> None:
    client = loaded_database().client
    nested, flat = "tokenyield_inline_nested", "tokenyield_inline_flat"
    for database in (nested, flat):
        client.command(f"DROP DATABASE IF EXISTS {database}")
    migrate(client, nested, _write(tmp_path / "nested", {"0001_days.sql": DAYS}))
    migrate(client, flat, _write(tmp_path / "flat", {
        "0001_days.sql": DAYS,
        "0002_inline.sql": "-- flatten\nINLINE VIEWS {db}.v_team_since,\n"
                           "    {db}.v_top_since;\n"}))
    want = client.query(QUERY.format(db=nested)).result_rows
    # The skipped team counts in the total (a scalar of the inner view), not in a row.
    assert want == [("a", Decimal("0.25"), Decimal("11.5")),
                    ("b", Decimal("2.25"), Decimal("11.5"))]
    assert client.query(QUERY.format(db=flat)).result_rows == want
    top = _definition(client, flat, "v_top_since")
    assert "v_team_since" not in top and "v_spend_since" not in top
    assert "v_spend_since" in _definition(client, nested, "v_top_since")
    # The parameter a caller passes reached the inlined body; the others stay parameters.
    assert "nobody, really" in top and "from_day" in top
    for database in (nested, flat):
        client.command(f"DROP DATABASE {database}")


def test_a_body_redefined_after_it_was_inlined_stops_the_run(tmp_path: Path) -> None:
    redefine = ("CREATE OR REPLACE VIEW {db}.v_spend_since AS\n"
                "SELECT day, team, cost * 2 AS cost FROM {db}.spend\n"
                "WHERE day >= toDate({from_day:Date});\n")
    stale = _write(tmp_path / "stale", {
        "0001_days.sql": DAYS, "0002_inline.sql": "INLINE VIEWS {db}.v_top_since;",
        "0003_doubled.sql": redefine})
    with pytest.raises(StorageError) as raised:
        migration_statements(stale)
    assert raised.value.fields["view"] == "v_top_since"
    assert raised.value.fields["inlined"] == "v_spend_since"
    assert "0003_doubled.sql" in raised.value.message
    # Inlining the caller again after the change is what the message asks for; then the
    # copy is current and the run goes ahead, with the new body inlined.
    (stale / "0004_inline.sql").write_text("INLINE VIEWS {db}.v_top_since;")
    statements = migration_statements(stale)
    assert "cost * 2" in statements["0004"][0] and "v_spend_since" not in statements["0004"][0]
    # Flattening an inlined view itself changes no body: its callers stay current.
    (stale / "0005_inline.sql").write_text("INLINE VIEWS {db}.v_spend_since;")
    migration_statements(stale)


@pytest.mark.parametrize(("statement", "message"), [
    ("INLINE VIEWS {db}.v_nowhere", "no earlier statement creates"),
    ("INLINE VIEWS v_top_since", "takes {db}.name"),
])
def test_an_inline_statement_that_names_no_view_is_refused(statement: str, message: str
                                                           ) -> None:
    catalog = ViewCatalog()
    catalog.statements(DAYS.split(";\n"), "0001_days.sql")
    with pytest.raises(StorageError, match=message):
        catalog.statements([statement], "0002_inline.sql")


def test_a_call_that_does_not_pass_a_parameter_is_refused() -> None:
    catalog = ViewCatalog()
    catalog.statements([
        "CREATE OR REPLACE VIEW {db}.v_a AS SELECT {x:UInt8} + {y:UInt8} AS s",
        "CREATE OR REPLACE VIEW {db}.v_b AS SELECT s FROM {db}.v_a(x = 1)",
    ], "0001.sql")
    with pytest.raises(StorageError, match="does not pass y") as raised:
        catalog.statements(["INLINE VIEWS {db}.v_b"], "0002.sql")
    assert raised.value.fields["parameter"] == "y"


def test_the_shipped_unit_panels_are_inlined_and_current() -> None:
    """Migration 0018 flattens every unit panel's view; the check passes over the
    shipped files (a later redefinition without INLINE VIEWS would fail here)."""
    statements = migration_statements()
    flat = {s.split(" AS\n", 1)[0].rsplit(".", 1)[1]: s for s in statements["0018"]}
    assert {"v_units_since", "v_cycle_time_since", "v_conversion_funnel_since",
            "v_unit_cost_spread_since", "v_work_units_between_by_day",
            "v_acceptance_by_cost_decile_since"} <= set(flat)
    for name, statement in flat.items():
        body = statement.split(" AS\n", 1)[1]
        for called in flat:
            assert f"{{db}}.{called}(" not in body, (name, called)
