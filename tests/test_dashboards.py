"""The Grafana provisioning: every dashboard panel, template variable and alert rule query
runs on chdb over generated traffic and returns what its panel or rule needs.

Queries are expanded as the Grafana ClickHouse plugin (grafana-clickhouse-datasource)
does before ClickHouse sees them:

1. in the browser, ``$__conditionalAll(condition, $var)`` becomes ``1=1`` when the
   variable is All (or empty), else ``condition`` (``applyConditionalAll``), then
   Grafana's template service replaces ``$var`` / ``${var}`` / ``${var:format}``;
2. in the plugin backend, the ``$__`` macros become SQL (``pkg/macros/macros.go``):
   ``$__timeFilter(c)`` is ``c >= toDateTime(from) AND c <= toDateTime(to)``,
   ``$__timeInterval(c)`` is ``toStartOfInterval(toDateTime(c), INTERVAL n second)``, ...

Alert rules run in the backend only: step 1 never happens for them.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadtest.grafana_sql import (
    DASHBOARD,
    Selection,
    TimeRange,
    expand_macros,
    load_dashboard,
    panels,
    render,
    variable_queries,
)
from tests.clickhouse_fixtures import DATABASE, TEAMS, LoadedClickHouse, loaded_clickhouse

pytestmark = pytest.mark.clickhouse

__all__ = ["loaded_clickhouse"]  # the fixture, imported for pytest

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "deploy" / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "clickhouse.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "tokenyield.yml"
ALERT_RULES = sorted((GRAFANA / "provisioning" / "alerting").glob("*.yml"))
USERS_XML = ROOT / "deploy" / "clickhouse" / "users.d" / "grafana.xml"
PLUGIN = "grafana-clickhouse-datasource"

REQUIRED_PANELS = {
    "Cost per accepted outcome", "Yield by workflow", "Value versus cost",
    "Value versus cost quadrant", "Attribution coverage", "Acceptance and human intervention",
    "Top spenders without outcomes", "Alerts", "Budget burn", "Budget burn-down",
}
NUMERIC = re.compile(r"^(Nullable\()?(U?Int\d+|Float\d+|Decimal)")
TEMPORAL = re.compile(r"^(Nullable\()?(DateTime|Date)")


def alert_queries() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in ALERT_RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for item in rule["data"]:
                    if item["datasourceUid"] != "__expr__":
                        found.append((rule["uid"], item))
    return found


# -- helpers over the loaded database ---------------------------------------------------------

def run(db: LoadedClickHouse, sql: str) -> tuple[list[str], list[str], list[tuple[Any, ...]]]:
    try:
        result = db.client.query(sql)
    except Exception as exc:  # show the expanded SQL with the error
        raise AssertionError(f"{exc}\n--- expanded SQL ---\n{sql}") from exc
    types = [t.name for t in result.column_types]
    return list(result.column_names), types, list(result.result_rows)


def dashboard_range(db: LoadedClickHouse, interval_seconds: int) -> TimeRange:
    return TimeRange(db.now - timedelta(days=2), db.now, interval_seconds)


def variable_options(db: LoadedClickHouse, selection: Selection,
                     time: TimeRange) -> dict[str, list[str]]:
    """Each variable's options, resolved in dashboard order (cascading)."""
    options: dict[str, list[str]] = {}
    for name, sql in variable_queries(load_dashboard()).items():
        _, _, rows = run(db, render(sql, selection, options, time))
        options[name] = [row[0] for row in rows]
    return options


def single_selection(db: LoadedClickHouse, time: TimeRange) -> Selection:
    """One team, one of its workflows, one of their models, picked from the variables."""
    selection = Selection(None, None, None)
    options = variable_options(db, selection, time)
    selection.team = [options["team"][0]]
    options = variable_options(db, selection, time)
    selection.workflow = [options["workflow"][0]]
    options = variable_options(db, selection, time)
    selection.model = [options["model"][0]]
    return selection


def check_result(panel: dict[str, Any], columns: list[str], types: list[str],
                 rows: list[tuple[Any, ...]], sql: str) -> None:
    title, kind = panel["title"], panel["type"]
    assert rows, f"{title}: no rows\n{sql}"
    numeric = [i for i, t in enumerate(types) if NUMERIC.match(t)]
    target = panel["targets"][0]
    if kind == "timeseries":
        assert target["format"] == 0, title
        assert columns[0] == "time" and TEMPORAL.match(types[0]), (title, columns, types)
        assert numeric, f"{title}: no numeric column"
        for i in numeric:
            assert any(row[i] is not None for row in rows), f"{title}: {columns[i]} all NULL"
        return
    assert target["format"] == 1, title
    if kind == "stat":
        assert len(rows) == 1 and numeric and rows[0][numeric[0]] is not None, title
    elif kind == "table":
        declared = [t for t in panel.get("transformations", []) if t["id"] == "organize"]
        assert declared, f"{title}: a table declares its columns in an organize transformation"
        assert set(columns) == set(declared[0]["options"]["indexByName"]), (title, columns)
    elif kind == "barchart":
        assert panel["options"]["xField"] in columns and numeric, title
    elif kind == "xychart":
        assert len(numeric) >= 2, f"{title}: an XY chart needs x and y numbers"
    else:
        raise AssertionError(f"{title}: panel type {kind} is not checked")


# -- static checks --------------------------------------------------------------------------

def test_dashboard_is_wired_to_the_provisioned_data_source() -> None:
    dashboard = load_dashboard()
    [source] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert source["type"] == PLUGIN and source["uid"] == "clickhouse"
    all_panels = panels(dashboard)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {p["title"] for p in all_panels} >= REQUIRED_PANELS
    for panel in all_panels:
        assert panel["datasource"] == {"type": PLUGIN, "uid": source["uid"]}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]
            assert target["editorType"] == "sql" and target["format"] in (0, 1)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in ("team", "workflow", "model"):
        variable = variables[name]
        assert variable["type"] == "query" and variable["multi"] and variable["includeAll"]
        assert variable["datasource"]["uid"] == source["uid"]
        assert variable["current"]["value"] == ["$__all"]
    assert variables["db"]["type"] == "constant"


def test_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in load_dashboard()["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                 for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, panel["title"]
        taken |= cells


def test_variables_are_quoted_and_guarded() -> None:
    """Multi-value variables are used as ``$__conditionalAll(x IN (${v:singlequote}), $v)``:
    an unquoted ``$team`` would break on values with quotes, and without the guard the
    All option would expand to a list of every value."""
    dashboard = load_dashboard()
    sqls = [t["rawSql"] for p in panels(dashboard) for t in p["targets"]]
    sqls += list(variable_queries(dashboard).values())
    for sql in sqls:
        guarded = re.sub(r"\$__conditionalAll\((\w+) IN \(\$\{(\w+):singlequote\}\), \$(\w+)\)",
                         lambda m: "" if m.group(2) == m.group(3) else m.group(0), sql)
        names = re.findall(r"\$\{?(\w+)", guarded)
        assert set(names) <= {"db", "__timeFilter", "__timeInterval", "__dateFilter",
                              "__fromTime", "__toTime"}, (names, sql)


def test_provisioning_matches_compose_and_the_readonly_user() -> None:
    [source] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert source["jsonData"]["host"] in services
    user = ET.parse(USERS_XML).getroot().find(f"users/{source['jsonData']['username']}")
    assert user is not None, "the data source's user is defined in users.d"
    password_env = user.find("password").get("from_env")  # type: ignore[union-attr]
    assert source["secureJsonData"]["password"] == f"${{{password_env}}}"
    for service in ("clickhouse", "grafana"):
        assert password_env in services[service]["environment"], service
    profile = ET.parse(USERS_XML).getroot().find(f"profiles/{user.findtext('profile')}")
    assert profile is not None and profile.findtext("readonly") == "1"
    constraint = profile.find("constraints/max_execution_time")
    assert constraint is not None and constraint.find("changeable_in_readonly") is not None
    assert DATABASE in user.findtext("grants/query", "")
    [provider] = yaml.safe_load(PROVIDERS.read_text())["providers"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    assert (ROOT / mounts[provider["options"]["path"]]).resolve() == DASHBOARD.parent
    assert (ROOT / mounts["/etc/grafana/provisioning"]).resolve() == GRAFANA / "provisioning"


def test_alert_rules_are_complete() -> None:
    assert ALERT_RULES
    uids = []
    for path in ALERT_RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                uids.append(rule["uid"])
                refs = {item["refId"]: item for item in rule["data"]}
                assert rule["condition"] in refs, rule["uid"]
                for item in rule["data"]:
                    model = item["model"]
                    if item["datasourceUid"] == "__expr__":
                        assert model.get("expression") in refs, rule["uid"]
                    else:
                        assert item["datasourceUid"] == "clickhouse"
                        assert model["editorType"] == "sql" and model["format"] in (0, 1)
                        # The backend alone runs rule queries: no browser-side expansion.
                        assert "$__conditionalAll" not in model["rawSql"], rule["uid"]
                        assert not re.search(r"\$\{|\$(?!__)\w", model["rawSql"]), rule["uid"]
    assert len(uids) == len(set(uids))
    assert {"tokenyield-budget-burn", "tokenyield-cpo-regression", "tokenyield-coverage-drop",
            "tokenyield-critical-alert"} <= set(uids)


# -- the queries, on data -------------------------------------------------------------------

@pytest.mark.parametrize("interval", [300, 3600])
def test_every_panel_returns_its_columns_with_all_selected(
        loaded_clickhouse: LoadedClickHouse, interval: int) -> None:
    db = loaded_clickhouse
    time = dashboard_range(db, interval)
    selection = Selection(None, None, None)
    options = variable_options(db, selection, time)
    assert set(options["team"]) == set(TEAMS)
    for panel in panels(load_dashboard()):
        sql = render(panel["targets"][0]["rawSql"], selection, options, time)
        check_result(panel, *run(db, sql), sql)


def test_every_panel_returns_its_columns_with_one_value_selected(
        loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    time = dashboard_range(db, 3600)
    selection = single_selection(db, time)
    options = variable_options(db, selection, time)
    assert options["team"] == sorted(TEAMS)  # the team list does not depend on a team
    assert set(options["workflow"]) <= set(TEAMS[selection.team[0]])  # type: ignore[index]
    for panel in panels(load_dashboard()):
        sql = render(panel["targets"][0]["rawSql"], selection, options, time)
        check_result(panel, *run(db, sql), sql)
        if "team" in sql and panel["type"] == "table":
            columns, _, rows = run(db, sql)
            if "team" in columns:
                assert {r[columns.index("team")] for r in rows} == set(selection.team), \
                    panel["title"]


def test_a_selection_narrows_the_figures(loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    time = dashboard_range(db, 3600)
    [spend_panel] = [p for p in panels(load_dashboard()) if p["title"] == "Model spend"]
    sql = spend_panel["targets"][0]["rawSql"]
    everything = Selection(None, None, None)
    total = run(db, render(sql, everything, variable_options(db, everything, time), time))[2]
    parts = 0.0
    for team in TEAMS:
        one = Selection([team], None, None)
        parts += run(db, render(sql, one, variable_options(db, one, time), time))[2][0][0]
    assert parts == pytest.approx(total[0][0])


def test_alert_rule_queries_return_labelled_values(loaded_clickhouse: LoadedClickHouse) -> None:
    db = loaded_clickhouse
    for uid, item in alert_queries():
        window = item["relativeTimeRange"]
        time = TimeRange(db.now - timedelta(seconds=window["from"]),
                         db.now - timedelta(seconds=window["to"]), 60)
        sql = expand_macros(item["model"]["rawSql"], time)
        columns, types, rows = run(db, sql)
        assert rows, f"{uid}: no rows on the generated data\n{sql}"
        assert columns[-1] == "value" and NUMERIC.match(types[-1]), (uid, columns, types)
        assert all(not NUMERIC.match(t) for t in types[:-1]), (uid, types)  # labels
        labels = [tuple(row[:-1]) for row in rows]
        assert len(labels) == len(set(labels)), f"{uid}: one row per alert instance"


def test_alert_rules_fire_where_the_data_says_so(loaded_clickhouse: LoadedClickHouse) -> None:
    """The generated data has a budget over its amount (support / triage, every past day)
    and a critical alert a minute before its end: those rules' thresholds are crossed."""
    db = loaded_clickhouse
    values: dict[str, list[float]] = {}
    for uid, item in alert_queries():
        window = item["relativeTimeRange"]
        time = TimeRange(db.now - timedelta(seconds=window["from"]),
                         db.now - timedelta(seconds=window["to"]), 60)
        rows = run(db, expand_macros(item["model"]["rawSql"], time))[2]
        values[uid] = [float(row[-1]) for row in rows if row[-1] is not None]
    assert len(values["tokenyield-critical-alert"]) == len(TEAMS)
    assert all(v > 0 for v in values["tokenyield-critical-alert"])
    assert all(0 <= v <= 1 for v in values["tokenyield-coverage-drop"])
    assert all(v > 0 for v in values["tokenyield-cpo-regression"])
    burn = db.rows(f"SELECT burn_share FROM {DATABASE}.v_budget_burn WHERE is_current = 1")
    assert sorted(values["tokenyield-budget-burn"]) == sorted(r["burn_share"] for r in burn)


# -- the expansion itself ---------------------------------------------------------------------

def test_expansion_follows_the_plugin() -> None:
    time = TimeRange(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                     datetime(2026, 1, 3, 3, 4, 5, tzinfo=UTC), 120)
    sql = ("SELECT $__timeInterval(t) AS time FROM x WHERE $__timeFilter(t) AND "
           "$__conditionalAll(team IN (${team:singlequote}), $team) AND "
           "$__conditionalAll(f(workflow, 1) IN (${workflow:singlequote}), ${workflow}) "
           "AND d >= $__fromTime AND $__dateFilter(d)")
    everything = render(sql, Selection(None, None, None), {"team": ["a"]}, time)
    assert everything == (
        "SELECT toStartOfInterval(toDateTime(t), INTERVAL 120 second) AS time FROM x WHERE "
        "t >= toDateTime(1767323045) AND t <= toDateTime(1767409445) AND 1=1 AND 1=1 "
        "AND d >= toDateTime(1767323045) AND "
        "d >= toDate('2026-01-02') AND d <= toDate('2026-01-03')")
    some = render(sql, Selection(["a", "o'b"], ["w"], None), {}, time)
    assert "team IN ('a','o\\'b')" in some and "f(workflow, 1) IN ('w')" in some
