"""``tokenyield report``: one self-contained HTML page of what the spend produced.

Headline figures, cost per accepted outcome over time by workflow, yield by workflow,
attribution coverage over time, the value sections (``value_sections``: cost by part,
quality and integrity, customers, the conversion chain, acceptance by cost decile, the
business case, the portfolio), alerts by kind and the latest alerts, all read from
ClickHouse through a ``Query`` callable (directly, or through a running worker) and
drawn as inline SVG. Sums are Decimal; ratios become floats only to be drawn.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from html import escape
from typing import Any

from streams.report.live_view import Figures, Query, literal, money
from streams.report.svg_charts import Series, bar_chart, line_chart
from streams.report.value_sections import gather_value, render_value

MIN_HOURLY_POINTS = 6  # fewer hours than this: draw the finer windows instead


@dataclass(frozen=True, slots=True)
class Headline(Figures):
    work_units: int = 0
    alerts_firing: int = 0


def _window_size(query: Query, db: str, where: str) -> int:
    sizes = query(f"SELECT window_seconds, uniqExact(window_start) FROM "
                  f"{db}.cost_per_outcome_windows WHERE scope = 'total' {where} "
                  f"GROUP BY window_seconds ORDER BY window_seconds DESC")
    for size, points in sizes:
        if int(points) >= MIN_HOURLY_POINTS:
            return int(size)
    return int(sizes[-1][0]) if sizes else 3600


BUCKETS = (60, 300, 600, 900, 1800, 3600, 7200, 21600, 86400, 604800)
TARGET_POINTS = 48


def _bucket_seconds(size: int, rows: list[tuple[Any, ...]]) -> int:
    """The smallest bucket (a multiple of the window size) giving at most ~48 points."""
    if not rows:
        return size
    span = (max(r[0] for r in rows) - min(r[0] for r in rows)).total_seconds()
    for bucket in BUCKETS:
        if bucket >= size and bucket % size == 0 and span / bucket <= TARGET_POINTS:
            return bucket
    return BUCKETS[-1]


def _when(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def gather(query: Query, db: str, since: datetime | None = None) -> dict[str, Any]:
    """Everything the page shows, as plain data."""
    where = f"AND window_start >= {literal(since)}" if since else ""
    size = _window_size(query, db, where)
    rows = query(
        f"SELECT window_start, team, workflow, spend, fully_loaded_cost, accepted_value, "
        f"decided_units, "
        f"accepted_outcomes, linked_spend, unlinked_spend FROM {db}.cost_per_outcome_windows "
        f"FINAL WHERE window_seconds = {size} AND scope = 'total' {where} "
        f"ORDER BY window_start")
    parsed = [(_when(r[0]), f"{r[1]}/{r[2]}", *(Decimal(v) for v in r[3:])) for r in rows]
    bucket = _bucket_seconds(size, parsed)
    # Sums per (bucket, workflow) first, ratios of the sums after (never averages of
    # ratios): cost per accepted outcome = fully loaded cost / accepted outcomes.
    sums: dict[tuple[datetime, str], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 2)
    by_workflow: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 2)
    coverage_parts: dict[datetime, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 2)
    totals = [Decimal(0)] * 7
    for moment, name, spend, flc, value, outcomes, accepted, linked, unlinked in parsed:
        at = datetime.fromtimestamp(moment.timestamp() // bucket * bucket, tz=UTC)
        sums[(at, name)][0] += flc
        sums[(at, name)][1] += accepted
        by_workflow[name][0] += value
        by_workflow[name][1] += flc
        coverage_parts[at][0] += linked
        coverage_parts[at][1] += linked + unlinked
        for i, figure in enumerate((spend, flc, value, outcomes, accepted, linked, unlinked)):
            totals[i] += figure
    cpo: Series = defaultdict(list)
    for (at, name), (flc, accepted) in sorted(sums.items()):
        if accepted:
            cpo[name].append((at, float(flc / accepted)))
    units_where = f"WHERE last_event_at >= {literal(since)}" if since else ""
    work_units = int(query(f"SELECT count() FROM {db}.attributions_latest FINAL "
                           f"{units_where}")[0][0])
    alert_where = f"WHERE last_change_at >= {literal(since)}" if since else ""
    alerts = query(f"SELECT kind, severity, status, team, workflow, fired_at, message FROM "
                   f"{db}.v_alerts {alert_where} ORDER BY status = 'firing' DESC, "
                   f"last_change_at DESC LIMIT 25")
    kinds = query(f"SELECT kind, count() FROM {db}.v_alerts {alert_where} GROUP BY kind "
                  f"ORDER BY count() DESC, kind")
    firing = sum(1 for a in query(f"SELECT status FROM {db}.v_alerts {alert_where}")
                 if a[0] == "firing")
    headline = Headline(totals[0], totals[1], totals[2], int(totals[3]), int(totals[4]),
                        totals[5], totals[6], work_units=work_units, alerts_firing=firing)
    yields = sorted(((name, float(v / c)) for name, (v, c) in by_workflow.items() if c),
                    key=lambda item: -item[1])
    coverage: Series = {"attribution coverage": [
        (moment, float(linked / decided)) for moment, (linked, decided)
        in sorted(coverage_parts.items()) if decided]}
    return {"window_seconds": bucket, "cpo": dict(cpo), "yields": yields,
            "coverage": coverage if coverage["attribution coverage"] else {},
            "alerts": alerts, "alert_kinds": [(str(k), float(n)) for k, n in kinds],
            "headline": headline, "rows": len(rows), "value": gather_value(query, db, since)}


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:900px;color:#222}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:.6rem;margin:1.2rem 0}
.card{border:1px solid #e3e3e3;border-radius:6px;padding:.6rem .8rem}
.card b{display:block;font-size:1.35rem} .card span{color:#666;font-size:.85rem}
section{margin:1.6rem 0} table{border-collapse:collapse;width:100%;font-size:.85rem}
td,th{border-bottom:1px solid #eee;padding:.3rem;text-align:left;vertical-align:top}
.firing{color:#c00;font-weight:bold}
"""


def render(data: dict[str, Any], *, database: str, source: str, currency: str,
           generated: datetime | None = None) -> str:
    h: Headline = data["headline"]
    moment = generated or datetime.now(UTC)
    size = data["window_seconds"]
    unit = {60: "minute", 3600: "hour", 86400: "day"}.get(size, f"{size // 60} minutes")
    cards = [
        (money(h.spend, currency, 2), "AI spend"),
        (money(h.cost_per_accepted, currency, 4), "cost per accepted outcome"),
        ("-" if h.yield_ratio is None else f"{h.yield_ratio:,.2f}x", "yield (value / cost)"),
        ("-" if h.coverage is None else f"{h.coverage:.1%}", "attribution coverage"),
        (f"{h.accepted:,}", "accepted outcomes"),
        (f"{h.work_units:,}", "work units"),
        (money(h.value, currency, 2), "value of accepted work"),
        (f"{h.alerts_firing:,}", "alerts firing"),
    ]
    alert_rows = "".join(
        f"<tr><td class=\"{escape(str(status))}\">{escape(str(status))}</td>"
        f"<td>{escape(str(severity))}</td><td>{escape(str(kind))}</td>"
        f"<td>{escape('/'.join(str(x) for x in (team, workflow) if x))}</td>"
        f"<td>{escape(str(fired or ''))[:19]}</td><td>{escape(str(message))}</td></tr>"
        for kind, severity, status, team, workflow, fired, message in data["alerts"])
    return "".join([
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>tokenyield report</title><style>", CSS, "</style></head><body>",
        "<h1>What the AI spend produced</h1>",
        f"<p class=\"sub\">tokenyield report, {moment:%Y-%m-%d %H:%M} UTC, from "
        f"{escape(source)} (database {escape(database)}); {data['rows']:,} window rows, "
        f"per {escape(unit)}.</p>",
        "<div class=\"cards\">",
        "".join(f"<div class=\"card\"><b>{escape(v)}</b><span>{escape(label)}</span></div>"
                for v, label in cards),
        "</div>",
        "<section>", line_chart(f"Cost per accepted outcome ({currency}, fully loaded) by "
                                f"workflow, per {unit}", data["cpo"],
                                y_format="{:,.3f}"), "</section>",
        "<section>", bar_chart("Yield by workflow (value / fully loaded cost)",
                               data["yields"], value_format="{:,.2f}x"), "</section>",
        "<section>", line_chart(f"Attribution coverage (share of decided spend linked to an "
                                f"outcome), per {unit}", data["coverage"],
                                y_format="{:.0%}", y_max=1.0), "</section>",
        render_value(data["value"], currency) if "value" in data else "",
        "<section>", bar_chart("Alerts by kind", data["alert_kinds"], value_format="{:,.0f}"),
        "</section>",
        "<section><h2>Latest alerts</h2>",
        f"<table><tr><th>status</th><th>severity</th><th>kind</th><th>subject</th>"
        f"<th>fired</th><th>message</th></tr>{alert_rows}</table>" if alert_rows
        else "<p>No alerts.</p>",
        "</section></body></html>",
    ])
