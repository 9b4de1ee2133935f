"""The report's value sections: what the spend is made of, whether the work held up,
who it served, how far it went down the conversion chain, whether dearer work bought
anything, the business case against the human baseline, and what to do per workflow.

Read from the value views (migrations 0006, 0008, 0009) through a ``Query`` callable;
sums stay Decimal until drawn. Each section draws "no data yet" rather than failing when
its view is empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from html import escape
from typing import Any

from streams.report.live_view import Query, literal, money
from streams.report.svg_charts import bar_chart

STAGE_LABELS = (("work_units", "work units"), ("output_accepted", "output accepted"),
                ("action_taken", "action taken"), ("outcome_realised", "outcome realised"),
                ("value_captured", "value captured"))


def _dec(value: Any) -> Decimal:
    return Decimal(0) if value is None else Decimal(str(value))


def _share(part: Any, whole: Any) -> str:
    whole = _dec(whole)
    return "-" if not whole else f"{_dec(part) / whole:.0%}"


@dataclass(frozen=True, slots=True)
class ValueData:
    costs: list[tuple[str, Decimal]]  # what the fully loaded cost is made of
    quality: list[list[Any]]  # team, workflow, decided, quality, latency, integrity, at risk
    customers: list[tuple[str, Decimal, int]]  # customer, fully loaded cost, accepted units
    funnel: dict[str, tuple[int, Decimal]]  # stage -> (units, their fully loaded cost)
    decile_workflow: str
    deciles: list[tuple[int, int, int, Decimal]]  # decile, units, accepted, mean cost
    plateau: list[str]  # messages of spend_plateau findings
    cases: list[list[Any]]  # team, workflow, owner, accepted, loaded, baseline, saved, tokens
    portfolio: list[list[Any]]  # team, workflow, owner, action, reason, yield
    forecasts: list[list[Any]]  # team, period end, spent, expected, low, high, method


def gather_value(query: Query, db: str, since: datetime | None = None) -> ValueData:
    hour = f"AND window_start >= {literal(since)}" if since else ""
    day = f"WHERE day >= toDate({literal(since)})" if since else ""
    day_and = f"AND day >= toDate({literal(since)})" if since else ""
    spend, human, shared = query(
        f"SELECT sum(spend), sum(human_cost), sum(shared_cost) FROM {db}.v_window_totals "
        f"WHERE window_seconds = 3600 AND scope = 'total' {hour}")[0]
    items_where = f"AND hour >= {literal(since)}" if since else ""
    kinds = query(f"SELECT kind, sum(amount) FROM {db}.v_cost_items_hourly WHERE shared = 0 "
                  f"{items_where} GROUP BY kind ORDER BY sum(amount) DESC")
    costs = [("model tokens", _dec(spend)), ("human review", _dec(human))]
    costs += [(f"{kind} (cost items)", _dec(amount)) for kind, amount in kinds]
    costs.append(("shared costs", _dec(shared)))
    costs = sorted((c for c in costs if c[1]), key=lambda c: -c[1])
    quality = query(
        f"SELECT team, workflow, sum(decided_units), sum(quality_failed_units), "
        f"sum(latency_failed_units), sum(integrity_failed_units), sum(value_at_risk) "
        f"FROM {db}.v_quality_by_workflow {day} GROUP BY team, workflow "
        f"ORDER BY sum(decided_units) DESC")
    dim_where = f"AND hour >= {literal(since)}" if since else ""
    customers = [(str(name), _dec(cost), int(accepted)) for name, cost, accepted in query(
        f"SELECT value, sum(fully_loaded_cost), sum(accepted_outcomes) "
        f"FROM {db}.v_dimension_hourly WHERE dimension = 'customer' {dim_where} "
        f"GROUP BY value ORDER BY sum(fully_loaded_cost) DESC LIMIT 10")]
    sums = query(
        f"SELECT sum(work_units), sum(output_accepted), sum(action_taken), "
        f"sum(outcome_realised), sum(value_captured), "
        f"sum(cost_per_work_unit * work_units), "
        f"sum(coalesce(cost_per_output_accepted, 0) * output_accepted), "
        f"sum(coalesce(cost_per_action_taken, 0) * action_taken), "
        f"sum(coalesce(cost_per_outcome_realised, 0) * outcome_realised), "
        f"sum(coalesce(cost_per_value_captured, 0) * value_captured) "
        f"FROM {db}.v_conversion_funnel {day}")[0]
    funnel = {name: (int(sums[i] or 0), _dec(sums[i + 5]))
              for i, (name, _) in enumerate(STAGE_LABELS)} if sums[0] else {}
    week = f"WHERE week >= toMonday(toDate({literal(since)}))" if since else ""
    top = query(f"SELECT team, workflow FROM {db}.v_acceptance_by_cost_decile {week} "
                f"GROUP BY team, workflow ORDER BY sum(units) DESC LIMIT 1")
    deciles: list[tuple[int, int, int, Decimal]] = []
    decile_workflow = ""
    plateau: list[str] = []
    if top:
        team, workflow = top[0]
        decile_workflow = f"{team}/{workflow}"
        more = f"AND week >= toMonday(toDate({literal(since)}))" if since else ""
        deciles = [(int(d), int(n), int(a), _dec(c)) for d, n, a, c in query(
            f"SELECT decile, sum(units), sum(accepted_units), "
            f"sum(mean_cost * units) / sum(units) FROM {db}.v_acceptance_by_cost_decile "
            f"WHERE team = '{_quote(team)}' AND workflow = '{_quote(workflow)}' {more} "
            f"GROUP BY decile ORDER BY decile")]
        plateau = [str(m) for (m,) in query(
            f"SELECT message FROM {db}.v_alerts WHERE kind = 'spend_plateau' "
            f"AND status = 'firing' ORDER BY last_change_at DESC LIMIT 5")]
    cases = query(
        f"SELECT team, workflow, any(owner), sum(accepted_units), sum(fully_loaded_cost), "
        f"sum(baseline_cost), sum(time_saved_minutes), sum(tokens) FROM {db}.v_business_case "
        f"WHERE baseline_cost IS NOT NULL {day_and} GROUP BY team, workflow "
        f"ORDER BY team, workflow")
    portfolio = query(f"SELECT team, workflow, owner, action, reason, yield_ratio "
                      f"FROM {db}.v_portfolio ORDER BY fully_loaded_cost DESC")
    forecasts = query(
        f"SELECT team, period_end, spent, expected, low, high, method "
        f"FROM {db}.v_spend_forecast_latest WHERE workflow = '' AND budget = '' "
        f"AND period_end = (SELECT max(period_end) FROM {db}.v_spend_forecast_latest) "
        f"ORDER BY expected DESC")
    return ValueData(costs, quality, customers, funnel, decile_workflow, deciles, plateau,
                     cases, portfolio, forecasts)


def _quote(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("'", "\\'")


def _table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p>No data yet.</p>"
    cells = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
                    for row in rows)
    return ("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"
            + cells + "</table>")


def render_value(data: ValueData, currency: str) -> str:
    parts = ["<section><h2>What the fully loaded cost is made of</h2>",
             bar_chart(f"Fully loaded cost by part ({currency})",
                       [(name, float(amount)) for name, amount in data.costs],
                       value_format="{:,.2f}"), "</section>"]
    quality_rows = [[f"{t}/{w}", f"{int(d):,}", _share(q, d), _share(lt, d), _share(i, d),
                     money(_dec(risk), currency, 2)]
                    for t, w, d, q, lt, i, risk in data.quality]
    parts += ["<section><h2>Did the work hold up?</h2>",
              bar_chart("Integrity failure rate by workflow (overturned by a later audit)",
                        [(f"{r[0]}/{r[1]}", float(_dec(r[5]) / _dec(r[2])) if r[2] else 0.0)
                         for r in data.quality], value_format="{:.1%}"),
              _table(["workflow", "decided", "under the quality bar", "too slow",
                      "overturned", "value at risk"], quality_rows), "</section>"]
    parts += ["<section><h2>Who the spend served</h2>",
              bar_chart(f"Fully loaded cost by customer, top 10 ({currency})",
                        [(name, float(cost)) for name, cost, _ in data.customers],
                        value_format="{:,.2f}"),
              _table(["customer", "fully loaded cost", "accepted outcomes",
                      "cost per accepted outcome"],
                     [[name, money(cost, currency, 2), f"{accepted:,}",
                       money(cost / accepted, currency, 4) if accepted else "-"]
                      for name, cost, accepted in data.customers]), "</section>"]
    funnel_bars = []
    previous = None
    for name, label in STAGE_LABELS:
        units, _ = data.funnel.get(name, (0, Decimal(0)))
        rate = f" ({_share(units, previous)} of the step before)" if previous else ""
        funnel_bars.append((f"{label}{rate}", float(units)))
        previous = units
    funnel_rows = [[label, f"{data.funnel[name][0]:,}",
                    money(data.funnel[name][1] / data.funnel[name][0], currency, 4)
                    if data.funnel[name][0] else "-"]
                   for name, label in STAGE_LABELS if name in data.funnel]
    parts += ["<section><h2>The conversion chain</h2>",
              bar_chart("Work units reaching each stage", funnel_bars if data.funnel else [],
                        value_format="{:,.0f}"),
              _table(["stage", "units", "fully loaded cost per unit that reached it"],
                     funnel_rows), "</section>"]
    decile_bars = [(f"decile {d} (mean {money(cost, currency, 4)})",
                    accepted / units if units else 0.0)
                   for d, units, accepted, cost in data.deciles]
    plateau = "".join(f"<p class=\"firing\">{escape(m)}</p>" for m in data.plateau) or (
        "<p>No spend plateau found: dearer units are accepted more often, or there are "
        "too few to tell.</p>" if data.deciles else "")
    parts += ["<section><h2>Does dearer work buy acceptance?</h2>",
              bar_chart(f"Acceptance rate by decile of cost per unit, "
                        f"{data.decile_workflow or 'no workflow yet'}", decile_bars,
                        value_format="{:.0%}"), plateau, "</section>"]
    roi_bars = [(f"{t}/{w}", float((_dec(base) - _dec(loaded)) / _dec(loaded)))
                for t, w, _, _, loaded, base, _, _ in data.cases if _dec(loaded)]
    case_rows = [[f"{t}/{w}", str(owner or "-"), f"{int(accepted):,}",
                  money(_dec(loaded), currency, 2), money(_dec(base), currency, 2),
                  f"{_dec(saved) / 60:,.1f} h",
                  f"{_dec(saved) / (_dec(tokens) / 1_000_000):,.1f} min" if _dec(tokens) else "-"]
                 for t, w, owner, accepted, loaded, base, saved, tokens in data.cases]
    parts += ["<section><h2>Against the human baseline</h2>",
              bar_chart("ROI against the human baseline: (baseline cost of the accepted "
                        "units - fully loaded cost) / fully loaded cost", roi_bars,
                        value_format="{:,.1f}x"),
              _table(["workflow", "owner", "accepted units", "fully loaded cost",
                      "baseline cost", "time saved", "time saved per million tokens"],
                     case_rows), "</section>"]
    forecast_rows = [[str(team), money(_dec(spent), currency, 2),
                      money(_dec(expected), currency, 2),
                      f"{money(_dec(low), currency, 2)} to {money(_dec(high), currency, 2)}",
                      str(method)]
                     for team, _, spent, expected, low, high, method in data.forecasts]
    month = f" for the month ending {data.forecasts[0][1]:%Y-%m-%d}" if data.forecasts else ""
    parts += [f"<section><h2>Month-end spend forecast{escape(month)}</h2>",
              bar_chart(f"Expected month-end spend by team ({currency}; the band is the "
                        f"5th to 95th percentile)",
                        [(f"{r[0]} ({money(_dec(r[4]), currency, 0)}-"
                          f"{money(_dec(r[5]), currency, 0)})", float(_dec(r[3])))
                         for r in data.forecasts], value_format="{:,.2f}"),
              _table(["team", "spent so far", "expected at month end", "90% band", "method"],
                     forecast_rows), "</section>"]
    parts += ["<section><h2>What to do per workflow</h2>",
              _table(["workflow", "owner", "action", "why"],
                     [[f"{t}/{w}", str(owner or "-"), str(action), str(reason)]
                      for t, w, owner, action, reason, _ in data.portfolio]), "</section>"]
    return "".join(parts)
