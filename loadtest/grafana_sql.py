"""Grafana's expansion of the dashboard's SQL, as the ClickHouse plugin does it, so the
panels' queries can run outside Grafana: in tests (tests/test_dashboards.py) and in the
dashboard benchmark (``tokenyield bench --dashboards``).

1. in the browser, ``$__conditionalAll(condition, $var)`` becomes ``1=1`` when the
   variable is All (or empty), else ``condition``; then Grafana's template service
   replaces ``$var`` / ``${var}`` / ``${var:format}``;
2. in the plugin backend, the ``$__`` macros become SQL (``pkg/macros/macros.go``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

DATABASE = "tokenyield"
ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "ai-value.json"


# -- the plugin's expansion -------------------------------------------------------------

def macro_args(query: str, args_index: int) -> list[str]:
    """The plugin's ``getMacroArgs``: split at top-level commas up to the closing paren."""
    args: list[str] = []
    depth = 0
    last = 1
    rest = query[args_index:]
    for match in re.finditer(r"\(|\)|,", rest):
        token = match.group(0)
        depth += {"(": 1, ")": -1}.get(token, 0)
        if token == "," and depth == 1:
            args.append(rest[last:match.end() - 1])
            last = match.end()
        if depth == 0:
            args.append(rest[last:match.end() - 1])
            return args
    return []


def apply_conditional_all(sql: str, selected: dict[str, list[str] | None]) -> str:
    """The plugin's ``applyConditionalAll`` (innermost-last, like its lastIndexOf loop)."""
    macro = "$__conditionalAll("
    index = sql.rfind(macro)
    while index != -1:
        params = macro_args(sql, index + len(macro) - 1)
        assert len(params) == 2, f"$__conditionalAll needs two arguments: {sql[index:][:80]}"
        name = re.search(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+", params[1].strip())
        assert name is not None and name.group(0) in selected, params[1]
        phrase = params[0]
        if not selected[name.group(0)]:  # All ($__all) or nothing selected
            phrase = "1=1"
        sql = sql.replace(f"{macro}{params[0]},{params[1]})", phrase, 1)
        index = sql.rfind(macro)
    return sql


_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?::([^}]+))?\}")


def replace_variables(sql: str, values: dict[str, str | list[str]]) -> str:
    """Grafana's template service with the plugin's default formatter; names Grafana does
    not know (the ``$__`` macros) are left for the backend."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(5)
        if name not in values:
            return match.group(0)
        value = values[name]
        if fmt == "singlequote":
            items = value if isinstance(value, list) else [value]
            return ",".join("'" + v.replace("'", "\\'") + "'" for v in items)
        assert fmt is None, f"format {fmt} is not expanded here"
        return "'" + "','".join(value) + "'" if isinstance(value, list) else value

    return _VARIABLE.sub(one, sql)


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime
    interval_seconds: int


def expand_macros(sql: str, time: TimeRange) -> str:
    """The backend's ``$__`` macros (pkg/macros/macros.go)."""
    frm, to = int(time.start.timestamp()), int(time.end.timestamp())
    frm_ms, to_ms = int(time.start.timestamp() * 1000), int(time.end.timestamp() * 1000)
    interval = max(time.interval_seconds, 1)
    bare = {
        "fromTime": f"toDateTime({frm})", "toTime": f"toDateTime({to})",
        "fromTime_ms": f"fromUnixTimestamp64Milli({frm_ms})",
        "toTime_ms": f"fromUnixTimestamp64Milli({to_ms})",
        "interval_s": str(interval),
    }
    one_column = {
        "timeFilter": lambda c: f"{c} >= toDateTime({frm}) AND {c} <= toDateTime({to})",
        "timeFilter_ms": lambda c: (f"{c} >= fromUnixTimestamp64Milli({frm_ms}) AND "
                                    f"{c} <= fromUnixTimestamp64Milli({to_ms})"),
        "dateFilter": lambda c: (f"{c} >= toDate('{time.start:%Y-%m-%d}') AND "
                                 f"{c} <= toDate('{time.end:%Y-%m-%d}')"),
        "timeInterval": lambda c: (f"toStartOfInterval(toDateTime({c}), "
                                   f"INTERVAL {interval} second)"),
        "timeFrom": lambda c: f"{c} >= toDateTime({frm})",
        "timeTo": lambda c: f"{c} <= toDateTime({to})",
    }
    out = []
    position = 0
    for match in re.finditer(r"\$__(\w+)", sql):
        if match.start() < position:
            continue
        name = match.group(1)
        out.append(sql[position:match.start()])
        position = match.end()
        if name in one_column:
            args = macro_args(sql, match.end())
            assert len(args) == 1, f"$__{name} takes one argument"
            out.append(one_column[name](args[0].strip()))
            position = match.end() + len(args[0]) + 2
        elif name in bare:
            out.append(bare[name])
            if sql[position:position + 2] == "()":
                position += 2
        else:
            raise AssertionError(f"unknown macro $__{name}")
    out.append(sql[position:])
    return "".join(out)


@dataclass
class Selection:
    """What the dashboard's variables are set to: None means All."""

    team: list[str] | None
    workflow: list[str] | None
    model: list[str] | None

    def chosen(self) -> dict[str, list[str] | None]:
        return {"team": self.team, "workflow": self.workflow, "model": self.model}


def render(sql: str, selection: Selection, options: dict[str, list[str]], time: TimeRange,
           database: str = DATABASE) -> str:
    chosen = selection.chosen()
    sql = apply_conditional_all(sql, chosen)
    values: dict[str, str | list[str]] = {"db": database}
    for name, value in chosen.items():
        values[name] = options.get(name, []) if value is None else value
    return expand_macros(replace_variables(sql, values), time)


# -- the files --------------------------------------------------------------------------------

def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.extend([panel, *panel.get("panels", [])])
    return [p for p in found if p["type"] != "row"]


def variable_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["query"]["rawSql"] for v in dashboard["templating"]["list"]
            if v["type"] == "query"}
