"""The demo's terminal view: cost per accepted outcome, yield and coverage by workflow,
and the latest alerts, read from ClickHouse every few seconds.

``snapshot`` runs the queries through any ``Query`` callable (the demo routes them
through the worker's /sql/ endpoint, as chdb allows one process per data directory);
``render`` is pure text. Money stays Decimal until it is formatted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

Query = Callable[[str], list[list[Any]]]


@dataclass(frozen=True, slots=True)
class Figures:
    """Summed window figures and the ratios of the sums (never averages of ratios)."""

    spend: Decimal
    fully_loaded_cost: Decimal
    value: Decimal  # of the accepted units (an overturned or failed unit's value is none)
    decided: int  # work units decided (by their deciding outcome)
    accepted: int  # ... and accepted by it
    linked_spend: Decimal
    unlinked_spend: Decimal

    @property
    def cost_per_accepted(self) -> Decimal | None:
        return self.fully_loaded_cost / self.accepted if self.accepted else None

    @property
    def yield_ratio(self) -> Decimal | None:
        return self.value / self.fully_loaded_cost if self.fully_loaded_cost else None

    @property
    def acceptance(self) -> Decimal | None:
        return Decimal(self.accepted) / self.decided if self.decided else None

    @property
    def coverage(self) -> Decimal | None:
        decided = self.linked_spend + self.unlinked_spend
        return self.linked_spend / decided if decided else None


@dataclass(frozen=True, slots=True)
class WorkflowLine(Figures):
    team: str = ""
    workflow: str = ""


@dataclass(frozen=True, slots=True)
class AlertLine:
    kind: str
    severity: str
    status: str
    subject: str
    message: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    calls: int = 0
    spend: Decimal = Decimal(0)
    attributed_units: int = 0
    unattributed_units: int = 0
    workflows: list[WorkflowLine] = field(default_factory=list)
    alerts: list[AlertLine] = field(default_factory=list)
    alerts_firing: int = 0

    @property
    def linked_spend(self) -> Decimal:
        return sum((w.linked_spend for w in self.workflows), Decimal(0))

    @property
    def coverage(self) -> Decimal | None:
        decided = self.linked_spend + sum((w.unlinked_spend for w in self.workflows),
                                          Decimal(0))
        return self.linked_spend / decided if decided else None


def literal(moment: datetime) -> str:
    return f"toDateTime64('{moment.strftime('%Y-%m-%d %H:%M:%S')}', 3, 'UTC')"


def snapshot(query: Query, database: str, since: datetime) -> Snapshot:
    """What happened from ``since`` (event time) on, as ClickHouse holds it now."""
    db, start = database, literal(since)
    calls, spend = query(f"SELECT count(), sum(cost) FROM {db}.model_calls FINAL "
                         f"WHERE occurred_at >= {start}")[0]
    attributed, unattributed = query(
        f"SELECT countIf(state != 'unattributed'), countIf(state = 'unattributed') "
        f"FROM {db}.attributions_latest FINAL WHERE last_event_at >= {start}")[0]
    rows = query(
        f"SELECT team, workflow, sum(spend), sum(fully_loaded_cost), sum(accepted_value), "
        f"sum(decided_units), sum(accepted_outcomes), sum(linked_spend), sum(unlinked_spend) "
        f"FROM {db}.cost_per_outcome_windows FINAL WHERE window_seconds = "
        f"(SELECT min(window_seconds) FROM {db}.cost_per_outcome_windows) AND scope = 'total' "
        f"AND window_start >= {start} GROUP BY team, workflow "
        f"ORDER BY sum(spend) DESC")
    workflows = [WorkflowLine(Decimal(r[2]), Decimal(r[3]), Decimal(r[4]), int(r[5]),
                              int(r[6]), Decimal(r[7]), Decimal(r[8]), team=str(r[0]),
                              workflow=str(r[1])) for r in rows]
    alert_rows = query(
        f"SELECT kind, severity, status, team, workflow, message FROM {db}.v_alerts "
        f"WHERE last_change_at >= {start} "
        f"ORDER BY status = 'firing' DESC, last_change_at DESC LIMIT 6")
    firing = query(f"SELECT countIf(status = 'firing') FROM {db}.v_alerts "
                   f"WHERE last_change_at >= {start}")[0][0]
    alerts = [AlertLine(str(r[0]), str(r[1]), str(r[2]),
                        "/".join(str(x) for x in r[3:5] if x), str(r[5])) for r in alert_rows]
    return Snapshot(int(calls), Decimal(spend or 0), int(attributed), int(unattributed),
                    workflows, alerts, int(firing))


def money(amount: Decimal | None, currency: str, places: int = 4) -> str:
    if amount is None:
        return "-"
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get(currency, currency + " ")
    return f"{symbol}{amount:,.{places}f}"


def share(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def ratio(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:,.1f}x"


def render(snap: Snapshot, currency: str, header: str, width: int = 100) -> str:
    """The whole screen as text (no control codes)."""
    lines = [header, ""]
    lines.append(f"  calls {snap.calls:,}   spend {money(snap.spend, currency, 2)}   "
                 f"work units attributed {snap.attributed_units:,}   without outcome "
                 f"{snap.unattributed_units:,}   attribution coverage {share(snap.coverage)}")
    lines.append("")
    head = (f"  {'team/workflow':<28}{'spend':>12}{'accepted':>10}{'accept %':>10}"
            f"{'cost/accepted':>15}{'yield':>9}{'coverage':>10}")
    lines += [head, "  " + "-" * (len(head) - 2)]
    if not snap.workflows:
        lines.append("  (no windows yet: the first ones appear within seconds)")
    for w in snap.workflows[:10]:
        coverage = w.coverage
        name = f"{w.team}/{w.workflow}"[:27]
        lines.append(f"  {name:<28}{money(w.spend, currency, 2):>12}{w.accepted:>10,}"
                     f"{share(w.acceptance):>10}{money(w.cost_per_accepted, currency):>15}"
                     f"{ratio(w.yield_ratio):>9}{share(coverage):>10}")
    lines += ["", f"  alerts ({snap.alerts_firing} firing), firing first, then latest:"]
    if not snap.alerts:
        lines.append("  (none yet)")
    for a in snap.alerts:
        text = f"  [{a.severity:<8}] {a.status:<8} {a.kind:<28} {a.subject:<24} {a.message}"
        lines.append(text if len(text) <= width else text[:width - 1] + "…")
    return "\n".join(lines)
