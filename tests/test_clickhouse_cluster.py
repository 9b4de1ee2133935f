"""The clustered variant of the migrations (``streams.clickhouse.cluster``).

chdb cannot run a ClickHouse cluster (no Keeper, no remote servers), so what CI checks
is syntax and shape, not execution on a cluster:

* every transformed statement of every shipped migration (and of the runner's own
  ``schema_migrations``) parses as ClickHouse SQL: ``SELECT formatQuery(...)`` in chdb
  4.4 (engine 26.9). ``EXPLAIN SYNTAX`` would not do: it rejects ``CREATE DATABASE``
  (verified), while ``formatQuery`` parses every statement kind and raises on bad SQL;
* each has the expected shape: Replicated engines with the original version and
  is_deleted arguments, ``ON CLUSTER``, Distributed tables with the documented
  sharding keys, materialized views over local tables, untouched query parameters;
* a table without a sharding key, and every statement kind with no clustered form,
  fails the migration before it runs anything;
* on one node nothing changed: ``migrate`` executes exactly the statements it executed
  before the variant existed (a recording client), and the real migrate on chdb builds
  a plain single-node schema.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from schemas.errors import ConfigurationError, StorageError
from streams.clickhouse.client import MIGRATIONS_DIR, migrate, migration_statements, migrations
from streams.clickhouse.cluster import SHARDING_KEYS, ClusterSchema, clustered
from streams.settings import Settings
from tests.clickhouse_fixtures import LoadedClickHouse, loaded_clickhouse  # noqa: F401

CLUSTER = "tokenyield_cluster"
DATABASE = "tokenyield"
ON = f"ON CLUSTER '{CLUSTER}'"
ROOT = Path(__file__).resolve().parent.parent

# The sharding key of every table the shipped migrations create (docs/SCALING.md lists
# the same, and the test below holds the doc to it).
EXPECTED_KEYS = {
    "schema_migrations": "cityHash64(version)",
    "model_calls": "cityHash64(work_unit_id)",
    "outcomes": "cityHash64(work_unit_id)",
    "attributions": "cityHash64(work_unit_id)",
    "attributions_latest": "cityHash64(work_unit_id)",
    "work_units_by_day": "cityHash64(work_unit_id)",
    "cost_per_outcome_windows": "cityHash64(window_seconds, window_start, team, workflow)",
    "alerts": "cityHash64(alert_id)",
    "dead_letters": "cityHash64(dead_letter_id)",
    "late_events": "cityHash64(late_id)",
    "prices": "cityHash64(provider, price_key)",
    "budgets": "cityHash64(team, workflow, period)",
    "cost_items": "cityHash64(work_unit_id)",
    "workflows": "cityHash64(team, workflow)",
    "spend_forecasts": "cityHash64(team, workflow, budget)",
    "settled_units": "cityHash64(work_unit_id)",
    "settled_days": "cityHash64(day)",
    "settled_weeks": "cityHash64(week)",
    "settled_deciles": "cityHash64(week)",
    "model_usage_hourly": "rand()",
}
BOOTSTRAP = [
    "CREATE DATABASE IF NOT EXISTS {db}",
    "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version String, name String, "
    "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree "
    "ORDER BY version",
]


def _transform_all(cluster: str = CLUSTER) -> list[tuple[str, str, list[str]]]:
    """(source, original statement, its clustered statements) for the runner's own
    statements and every shipped migration, through one schema, as the runner does."""
    schema = ClusterSchema(cluster)
    out = [("bootstrap", s, clustered(s, cluster, schema)) for s in BOOTSTRAP]
    statements = migration_statements()  # INLINE VIEWS expanded, as the runner does
    for version, path in migrations():
        for statement in statements[version]:
            out.append((path.name, statement, clustered(statement, cluster, schema)))
    return out


TRANSFORMED = _transform_all()
OUTPUTS = [(source, n, statement) for source, _, outs in TRANSFORMED
           for n, statement in enumerate(outs)]


def _body(statement: str) -> str:
    """A statement without its leading comment lines, as the transform sees it."""
    lines = statement.strip().splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines.pop(0)
    return "\n".join(lines).strip()


def _by_name(kind: str, name: str) -> list[str]:
    """The clustered statements of the last original statement ``<kind> {db}.<name>``
    (``kind`` a regular expression)."""
    pattern = re.compile(rf"{kind} (?:IF NOT EXISTS )?\{{db\}}\.{name}\b")
    found = [outs for _, original, outs in TRANSFORMED if pattern.match(_body(original))]
    assert found, f"no {kind} {name} in the migrations"
    return found[-1]


def _format(client: Any, statement: str) -> str:
    sql = statement.replace("{db}", DATABASE)
    return client.query("SELECT formatQuery(%(q)s)", parameters={"q": sql}).result_rows[0][0]


# -- every statement parses ----------------------------------------------------------------

def test_every_shipped_statement_is_transformed() -> None:
    originals = sum(len(statements) for statements in migration_statements().values())
    assert len(TRANSFORMED) == originals + len(BOOTSTRAP)
    # Every MergeTree table became two statements, a rename four, an ALTER two.
    assert len(OUTPUTS) > len(TRANSFORMED)


@pytest.mark.parametrize(("source", "index", "statement"), OUTPUTS,
                         ids=[f"{s}-{i}-{' '.join(t.split()[:4])}" for s, i, t in OUTPUTS])
def test_transformed_statement_parses(loaded_clickhouse: LoadedClickHouse,  # noqa: F811
                                      source: str, index: int, statement: str) -> None:
    formatted = _format(loaded_clickhouse.client, statement)
    if statement.startswith("INSERT"):  # INSERT has no ON CLUSTER: it goes via Distributed
        assert "distributed_foreground_insert = 1" in formatted
    else:
        assert f"ON CLUSTER {CLUSTER}" in formatted, formatted[:200]


def test_the_syntax_check_can_fail(loaded_clickhouse: LoadedClickHouse) -> None:  # noqa: F811
    local = _by_name("CREATE TABLE", "model_calls")[0]
    broken = local.replace("ENGINE = ", "ENGINE = = ", 1)
    with pytest.raises(Exception, match=r"SYNTAX_ERROR|Syntax error"):
        _format(loaded_clickhouse.client, broken)


# -- shape ------------------------------------------------------------------------------------

def _created_tables() -> list[tuple[str, str, str, str]]:
    """Every MergeTree table created: (name, original, local, Distributed statement)."""
    tables = []
    for _, original, outs in TRANSFORMED:
        body = _body(original)
        match = re.match(r"CREATE TABLE (?:IF NOT EXISTS )?\{db\}\.(\w+)", body)
        if match and "MergeTree" in body:
            assert len(outs) == 2, match.group(1)
            tables.append((match.group(1), body, outs[0], outs[1]))
    return tables


CREATIONS = _created_tables()
CREATED = {name: (local, distributed) for name, _, local, distributed in CREATIONS}


def test_every_table_has_its_documented_sharding_key() -> None:
    assert set(CREATED) == set(EXPECTED_KEYS)
    for name, _, local, distributed in CREATIONS:
        assert distributed == (
            f"CREATE TABLE IF NOT EXISTS {{db}}.{name} {ON} AS {{db}}.{name}_local\n"
            f"ENGINE = Distributed('{CLUSTER}', '{{db}}', '{name}_local', "
            f"{EXPECTED_KEYS[name]})")
        assert local.startswith(f"CREATE TABLE IF NOT EXISTS {{db}}.{name}_local {ON}")


@pytest.mark.parametrize(("name", "engine", "args"), [
    ("model_calls", "ReplacingMergeTree", ""),
    ("attributions", "ReplacingMergeTree", ", version"),
    ("attributions_latest", "ReplacingMergeTree", ", version"),
    ("cost_per_outcome_windows", "ReplacingMergeTree", ", version"),
    ("prices", "ReplacingMergeTree", ", loaded_at"),
    ("budgets", "ReplacingMergeTree", ", updated_at, is_deleted"),
    ("model_usage_hourly", "AggregatingMergeTree", ""),
    ("schema_migrations", "ReplacingMergeTree", ""),
])
def test_local_tables_replicate_the_original_engine(name: str, engine: str, args: str) -> None:
    local = CREATED[name][0]
    path = f"/clickhouse/tables/{{shard}}/{{database}}/{name}_local/{{uuid}}"
    assert f"ENGINE = Replicated{engine}('{path}', '{{replica}}'{args})" in local


def test_settings_that_apply_stay_and_the_non_replicated_window_goes() -> None:
    for name, original, local, _ in CREATIONS:
        assert "non_replicated_deduplication_window" not in local, name
        if "ttl_only_drop_parts = 1" in original:
            assert "\nSETTINGS ttl_only_drop_parts = 1" in local, name
        # Columns, partitioning, sorting and TTL come through unchanged.
        if original.startswith(f"CREATE TABLE IF NOT EXISTS {{db}}.{name}\n("):
            columns = original[original.index("("):original.index("\nENGINE")]
            assert columns in local, name
        for clause in ("PARTITION BY", "ORDER BY", "TTL "):
            kept = [line for line in original.splitlines() if line.startswith(clause)]
            assert all(line in local.splitlines() for line in kept), (name, clause)


def test_a_table_copied_from_another_copies_the_local_one() -> None:
    local, _ = CREATED["attributions_latest"]
    assert " AS {db}.attributions_local\nENGINE = ReplicatedReplacingMergeTree(" in local


@pytest.mark.parametrize(("view", "target", "source"), [
    ("attributions_latest_mv", "attributions_latest", "attributions"),
    ("model_usage_hourly_mv", "model_usage_hourly", "model_calls"),
])
def test_materialized_views_read_and_write_local_tables(view: str, target: str,
                                                        source: str) -> None:
    [statement] = _by_name("CREATE MATERIALIZED VIEW", view)
    assert f"{{db}}.{view} {ON} TO {{db}}.{target}_local\n" in statement
    assert re.search(rf"FROM \{{db\}}\.{source}_local\b", statement)
    assert re.findall(r"\{db\}\.(\w+)", statement) == [view, f"{target}_local",
                                                        f"{source}_local"]


def test_views_keep_their_bodies_and_parameters_byte_for_byte() -> None:
    views = [(o, outs) for _, o, outs in TRANSFORMED
             if re.match(r"CREATE (OR REPLACE )?VIEW", _body(o))]
    assert len(views) >= 20  # the shipped migrations have 20; more may come
    for original, [statement] in views:
        body = _body(original)
        assert statement.replace(f" {ON}", "", 1) == body
        assert statement.count("{from_time:DateTime64(3, 'UTC')}") == \
            body.count("{from_time:DateTime64(3, 'UTC')}")
    ranged = _by_name("CREATE (?:OR REPLACE )?VIEW", "v_work_units_between")[0]
    assert ranged.count("{from_time:DateTime64(3, 'UTC')}") == 3
    assert ranged.count("{to_time:DateTime64(3, 'UTC')}") == 2


def test_query_parameters_reach_clickhouse_as_parameters(
        loaded_clickhouse: LoadedClickHouse) -> None:  # noqa: F811
    [view] = _by_name("CREATE (?:OR REPLACE )?VIEW", "v_attribution_coverage_between")
    formatted = _format(loaded_clickhouse.client, view)
    assert formatted.count("{from_time:DateTime64(3, 'UTC')}") == 2
    assert formatted.count("{to_time:DateTime64(3, 'UTC')}") == 1


def _outputs_of(source: str, prefix: str) -> list[str]:
    return next(outs for s, o, outs in TRANSFORMED if s == source
                and _body(o).startswith(prefix))


def test_the_rename_of_0004_moves_the_local_table_and_repoints_the_distributed_one() -> None:
    outs = _outputs_of("0004_ledger.sql", "RENAME TABLE")
    key = EXPECTED_KEYS["cost_per_outcome_windows"]
    assert outs == [
        f"SYSTEM FLUSH DISTRIBUTED {ON} {{db}}.cost_per_outcome_windows",
        f"DROP TABLE {{db}}.cost_per_outcome_windows {ON}",
        f"RENAME TABLE {{db}}.cost_per_outcome_windows_local TO "
        f"{{db}}.cost_per_outcome_windows_v1_local {ON}",
        f"CREATE TABLE {{db}}.cost_per_outcome_windows_v1 {ON} AS "
        f"{{db}}.cost_per_outcome_windows_v1_local\nENGINE = Distributed('{CLUSTER}', "
        f"'{{db}}', 'cost_per_outcome_windows_v1_local', {key})",
    ]


def test_the_copy_of_0004_goes_through_the_distributed_tables_synchronously() -> None:
    [insert] = _outputs_of("0004_ledger.sql", "INSERT INTO")
    assert insert.startswith(
        "INSERT INTO {db}.cost_per_outcome_windows SETTINGS "
        "parallel_distributed_insert_select = 0, distributed_foreground_insert = 1\nSELECT ")
    assert insert.endswith("FROM {db}.cost_per_outcome_windows_v1 FINAL")


def test_drops_remove_the_distributed_table_then_the_local_one() -> None:
    assert _outputs_of("0004_ledger.sql", "DROP TABLE IF EXISTS {db}.model_usage_hourly") == [
        f"DROP TABLE IF EXISTS {{db}}.model_usage_hourly {ON}",
        f"DROP TABLE IF EXISTS {{db}}.model_usage_hourly_local {ON}"]
    assert _outputs_of("0004_ledger.sql", "DROP VIEW") == [
        f"DROP VIEW IF EXISTS {{db}}.model_usage_hourly_mv {ON}"]


def test_alter_add_column_goes_to_the_local_and_the_distributed_table() -> None:
    local, distributed = _outputs_of("0004_ledger.sql", "ALTER TABLE")
    assert local.startswith(f"ALTER TABLE {{db}}.model_calls_local {ON}\n    ADD COLUMN")
    assert distributed.startswith(f"ALTER TABLE {{db}}.model_calls {ON}\n    ADD COLUMN")
    for column in ("reported_currency", "price_currency"):
        assert f"ADD COLUMN IF NOT EXISTS {column} LowCardinality(String)" in local
        assert f"ADD COLUMN IF NOT EXISTS {column} LowCardinality(String)" in distributed


def test_create_database_on_cluster() -> None:
    assert TRANSFORMED[0][2] == [f"CREATE DATABASE IF NOT EXISTS {{db}} {ON}"]


@pytest.mark.parametrize(("statement", "expected"), [
    ("ALTER TABLE {db}.alerts MODIFY TTL toDateTime(occurred_at) + INTERVAL 30 DAY",
     [f"ALTER TABLE {{db}}.alerts_local {ON} MODIFY TTL toDateTime(occurred_at) + "
      "INTERVAL 30 DAY"]),
    ("OPTIMIZE TABLE {db}.alerts FINAL", [f"OPTIMIZE TABLE {{db}}.alerts_local {ON} FINAL"]),
    ("SYSTEM STOP MERGES {db}.alerts", [f"SYSTEM STOP MERGES {ON} {{db}}.alerts_local"]),
    ("SYSTEM FLUSH LOGS", [f"SYSTEM FLUSH LOGS {ON}"]),
    ("TRUNCATE TABLE {db}.alerts", [f"TRUNCATE TABLE {{db}}.alerts_local {ON}"]),
    ("INSERT INTO {db}.budgets (team, workflow, period, amount, soft_share) "
     "VALUES ('a', '', 'daily', 1, 0.5)",
     ["INSERT INTO {db}.budgets (team, workflow, period, amount, soft_share) SETTINGS "
      "parallel_distributed_insert_select = 0, distributed_foreground_insert = 1 "
      "VALUES ('a', '', 'daily', 1, 0.5)"]),
    ("RENAME TABLE {db}.v_alerts TO {db}.v_alerts_old",
     [f"RENAME TABLE {{db}}.v_alerts TO {{db}}.v_alerts_old {ON}"]),
    ("INSERT INTO TABLE {db}.alerts SELECT * FROM {db}.alerts",
     ["INSERT INTO TABLE {db}.alerts SETTINGS parallel_distributed_insert_select = 0, "
      "distributed_foreground_insert = 1 SELECT * FROM {db}.alerts"]),
    # A join ON a column named cluster is not an ON CLUSTER clause.
    ("CREATE VIEW {db}.v_by_cluster AS SELECT a.team FROM {db}.alerts AS a "
     "JOIN {db}.budgets AS b ON cluster = b.team",
     [f"CREATE VIEW {{db}}.v_by_cluster {ON} AS SELECT a.team FROM {{db}}.alerts AS a "
      "JOIN {db}.budgets AS b ON cluster = b.team"]),
])
def test_other_statement_kinds(loaded_clickhouse: LoadedClickHouse,  # noqa: F811
                               statement: str, expected: list[str]) -> None:
    schema = _schema_after_shipped()
    assert clustered(statement, CLUSTER, schema) == expected
    for out in expected:
        _format(loaded_clickhouse.client, out)


def _schema_after_shipped() -> ClusterSchema:
    schema = ClusterSchema(CLUSTER)
    for s in BOOTSTRAP:
        clustered(s, CLUSTER, schema)
    for statements in migration_statements().values():
        for statement in statements:
            clustered(statement, CLUSTER, schema)
    return schema


def test_a_new_table_keyed_by_work_unit_is_sharded_by_it() -> None:
    schema = _schema_after_shipped()
    local, distributed = clustered(
        "CREATE TABLE IF NOT EXISTS {db}.unit_notes (work_unit_id String, note_id String, "
        "at DateTime64(3, 'UTC')) ENGINE = ReplacingMergeTree(at) "
        "ORDER BY (work_unit_id, note_id)", CLUSTER, schema)
    assert local.endswith("ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/"
                          "{shard}/{database}/unit_notes_local/{uuid}', '{replica}', at) "
                          "ORDER BY (work_unit_id, note_id)")
    assert distributed.endswith("'unit_notes_local', cityHash64(work_unit_id))")


# -- loud failures ------------------------------------------------------------------------------

def test_an_unknown_table_fails_naming_it_and_where_to_choose() -> None:
    schema = _schema_after_shipped()
    with pytest.raises(StorageError, match="no sharding key for table widgets") as caught:
        clustered("CREATE TABLE IF NOT EXISTS {db}.widgets (widget_id String, v UInt64) "
                  "ENGINE = ReplacingMergeTree(v) ORDER BY widget_id", CLUSTER, schema)
    assert caught.value.fields["table"] == "widgets"
    assert caught.value.fields["kind"] == "CREATE TABLE"
    assert "SHARDING_KEYS" in caught.value.message
    assert "widgets" not in schema.tables


def test_an_unknown_table_fails_the_migration_before_anything_runs(tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    (directory / "0099_widgets.sql").write_text(
        "-- a table nobody chose a sharding key for\n"
        "CREATE TABLE IF NOT EXISTS {db}.widgets (widget_id String, v UInt64)\n"
        "ENGINE = ReplacingMergeTree(v) ORDER BY widget_id;\n")
    client = RecordingClient()
    with pytest.raises(StorageError, match=r"0099_widgets.sql has no clustered form: "
                                           r"CREATE TABLE: no sharding key") as caught:
        migrate(client, DATABASE, directory, cluster=CLUSTER)
    assert caught.value.fields["migration"] == "0099_widgets.sql"
    assert caught.value.fields["table"] == "widgets"
    assert client.commands == [] and client.inserts == []
    # On one node the same migration is fine: nothing to shard.
    assert migrate(client, DATABASE, directory)[-1] == "0099"


def test_a_sharding_key_outside_the_order_by_fails() -> None:
    with pytest.raises(StorageError, match="uses alert_id, which its ORDER BY does not"):
        clustered("CREATE TABLE {db}.alerts (alert_id String, kind String) "
                  "ENGINE = ReplacingMergeTree ORDER BY kind", CLUSTER)
    assert SHARDING_KEYS["alerts"] == ("alert_id",)


@pytest.mark.parametrize(("statement", "message"), [
    ("GRANT SELECT ON {db}.* TO grafana", "GRANT SELECT ON: no clustered form"),
    ("EXCHANGE TABLES {db}.alerts AND {db}.prices", "EXCHANGE TABLES: no clustered form"),
    ("CREATE DICTIONARY {db}.d (k UInt64) PRIMARY KEY k SOURCE(NULL()) LAYOUT(FLAT()) "
     "LIFETIME(0)", "CREATE DICTIONARY: no clustered form"),
    ("CREATE TABLE {db}.scratch (a String) ENGINE = Memory",
     "engine Memory is not a non-replicated MergeTree"),
    ("CREATE TABLE {db}.scratch (a String) ENGINE = ReplicatedMergeTree('/p', 'r') "
     "ORDER BY a", "engine ReplicatedMergeTree is not a non-replicated MergeTree"),
    ("CREATE TABLE {db}.copy AS SELECT * FROM {db}.alerts",
     "CREATE TABLE ... AS SELECT"),
    ("CREATE TABLE {db}.copy (work_unit_id String)", "no ENGINE clause"),
    ("CREATE MATERIALIZED VIEW {db}.mv ENGINE = MergeTree ORDER BY a AS "
     "SELECT a FROM {db}.alerts", "an MV without TO"),
    ("CREATE MATERIALIZED VIEW {db}.mv REFRESH EVERY 1 MINUTE TO {db}.alerts AS "
     "SELECT * FROM {db}.alerts", "a refreshable MV"),
    ("CREATE MATERIALIZED VIEW {db}.mv TO {db}.alerts AS SELECT * FROM {db}.model_calls "
     "AS c JOIN {db}.outcomes AS o USING work_unit_id", "the MV reads 2 tables"),
    ("CREATE MATERIALIZED VIEW {db}.mv TO {db}.alerts AS SELECT * FROM {db}.model_calls",
     "FINAL on the target would miss duplicates"),
    ("ALTER TABLE {db}.widgets ADD COLUMN x String", "widgets is not a table created"),
    ("ALTER TABLE {db}.alerts FETCH PARTITION 202601 FROM '/x'",
     "ALTER command FETCH PARTITION has no clustered form"),
    ("DROP TABLE {db}.widgets", "widgets is not a table created"),
    ("DROP DICTIONARY {db}.d", "DROP DICTIONARY has no clustered form"),
    ("RENAME TABLE {db}.widgets TO {db}.gadgets", "widgets is not a table created"),
    ("INSERT INTO FUNCTION remote('h', 'db', 't') SELECT 1", "table function"),
    ("SYSTEM REFRESH VIEW {db}.v_alerts", "SYSTEM REFRESH VIEW has no clustered form"),
    ("CREATE TABLE tokenyield.alerts2 (a String) ENGINE = MergeTree ORDER BY a",
     r"expected a name \{db\}\.<name>"),
    ("CREATE VIEW {db}.v ON CLUSTER 'x' AS SELECT 1", "already says ON CLUSTER"),
    ("CREATE OR REPLACE TABLE {db}.alerts (a String) ENGINE = MergeTree ORDER BY a",
     "CREATE OR REPLACE TABLE: no clustered form"),
])
def test_statements_without_a_clustered_form_fail_naming_their_kind(
        statement: str, message: str) -> None:
    schema = _schema_after_shipped()
    with pytest.raises(StorageError, match=message) as caught:
        clustered(statement, CLUSTER, schema)
    assert caught.value.fields["kind"]
    assert caught.value.message.startswith(caught.value.fields["kind"])


def test_a_bad_cluster_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not a ClickHouse cluster name"):
        clustered("CREATE DATABASE {db}", "prod'; DROP DATABASE x --")
    with pytest.raises(Exception, match="clickhouse_cluster"):
        Settings(clickhouse_cluster="bad name", clickhouse_dsn="http://h:8123")


def test_a_cluster_needs_a_server_not_chdb(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="needs a ClickHouse server"):
        Settings(clickhouse_cluster="prod", data_dir=tmp_path)
    assert Settings(clickhouse_cluster="prod", data_dir=tmp_path,
                    clickhouse_dsn="http://ch:8123").clickhouse_cluster == "prod"


# -- one node: unchanged -------------------------------------------------------------------------

class RecordingClient:
    """Records what ``migrate`` executes; nothing is applied yet."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.inserts: list[tuple[str, list[list[str]], dict[str, Any]]] = []

    def command(self, sql: str) -> None:
        self.commands.append(sql)

    def query(self, sql: str) -> Any:
        class Result:
            result_rows: list[tuple[str]] = []
        return Result()

    def insert(self, table: str, data: list[list[str]], **kwargs: Any) -> None:
        self.inserts.append((table, data, kwargs))


def _before_the_variant(database: str) -> tuple[list[str], list[Any]]:
    """What ``migrate`` executed before the clustered variant existed: its two statements
    as they were written, then every file's statements (INLINE VIEWS expanded, as
    streams.clickhouse.inline_views writes them) with {db} replaced."""
    commands = [
        f"CREATE DATABASE IF NOT EXISTS {database}",
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version String, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version",
    ]
    inserts = []
    statements = migration_statements()
    for version, path in migrations():
        commands += [s.replace("{db}", database) for s in statements[version]]
        inserts.append((f"{database}.schema_migrations", [[version, path.stem]],
                        {"column_names": ["version", "name"]}))
    return commands, inserts


def test_single_node_executes_exactly_what_it_did_before(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    expected = _before_the_variant(DATABASE)
    unset = RecordingClient()
    migrate(unset, DATABASE)
    monkeypatch.setenv("TOKENYIELD_CLICKHOUSE_CLUSTER", "")
    empty = RecordingClient()
    migrate(empty, DATABASE, cluster=Settings(data_dir=tmp_path).clickhouse_cluster)
    for recorded in (unset, empty):
        assert (recorded.commands, recorded.inserts) == expected
    assert not any("ON CLUSTER" in c or "_local" in c for c in unset.commands)


def test_the_setting_switches_every_statement_to_its_clustered_form(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOKENYIELD_CLICKHOUSE_CLUSTER", CLUSTER)
    monkeypatch.setenv("TOKENYIELD_CLICKHOUSE_DSN", "http://ch:8123")
    settings = Settings(data_dir=tmp_path)
    client = RecordingClient()
    applied = migrate(client, settings.clickhouse_database, cluster=settings.clickhouse_cluster)
    assert applied == [v for v, _ in migrations()]
    expected = [s.replace("{db}", DATABASE) for _, _, outs in TRANSFORMED for s in outs]
    assert client.commands == expected
    assert all("{db}" not in c for c in client.commands)
    assert [kwargs for _, _, kwargs in client.inserts] == [
        {"column_names": ["version", "name"],
         "settings": {"distributed_foreground_insert": 1}}] * len(applied)


def test_single_node_migrate_on_chdb_builds_plain_tables(
        loaded_clickhouse: LoadedClickHouse) -> None:  # noqa: F811
    # chdb opens one path per process: a database of this test's own in that engine.
    client, database = loaded_clickhouse.client, "single_node_check"
    applied = migrate(client, database)
    assert applied == [v for v, _ in migrations()]
    assert migrate(client, database) == []
    rows = client.query(f"SELECT name, engine FROM system.tables WHERE database = "
                        f"'{database}'").result_rows
    engines = dict(rows)
    assert engines["model_calls"] == "ReplacingMergeTree"
    assert engines["cost_per_outcome_windows"] == "ReplacingMergeTree"
    assert engines["attributions_latest_mv"] == "MaterializedView"
    assert engines["model_usage_hourly"] == "View"
    assert not [name for name in engines if name.endswith("_local")]
    assert not [e for e in engines.values() if e.startswith(("Replicated", "Distributed"))]
    # The same schema as the shared database, which the fixture migrated the same way.
    shared = dict(client.query(f"SELECT name, engine FROM system.tables WHERE database = "
                               f"'{loaded_clickhouse.database}'").result_rows)
    assert engines == shared


# -- the doc shows what the code does ------------------------------------------------------------

def _scaling() -> str:
    return (ROOT / "docs" / "SCALING.md").read_text()


def test_scaling_doc_lists_every_sharding_key() -> None:
    scaling = _scaling()
    for name, key in EXPECTED_KEYS.items():
        assert f"| `{name}` | `{key}` |" in scaling, name


def test_scaling_doc_shows_the_transformed_windows_table() -> None:
    windows = [outs for source, original, outs in _transform_all("prod")
               if source == "0004_ledger.sql" and _body(original).startswith(
                   "CREATE TABLE IF NOT EXISTS {db}.cost_per_outcome_windows\n")]
    [[local, distributed]] = windows
    block = re.search(r"<!-- clustered-windows -->\n```sql\n(.*?)\n```", _scaling(), re.S)
    assert block is not None
    assert block.group(1) == f"{local};\n\n{distributed};"
