"""Any dimension (issue 16, point 4): user, customer and promoted attributes get window
rows of their own, exact, in any order, capped with an ``__other__`` bucket."""

from __future__ import annotations

import random
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest

from schemas.errors import ConfigurationError
from streams.core.engine_config import EngineConfig
from tests.core_harness import Harness, call, cost, outcome

NAMES = ("calls", "spend", "outcomes", "value", "decided_units", "accepted_outcomes",
         "accepted_value", "other_cost", "cost_items", "fully_loaded_cost")


def by_value(harness: Harness, dimension: str, size: int = 3600) -> dict[str, dict[str, Any]]:
    """A dimension's rows (plus corrections) added up over windows, by value."""
    found: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(Decimal))
    for key, window in harness.run.window_totals().items():
        prefix = f":dimension:{dimension}="
        if key.startswith(f"{size}:") and prefix in key:
            value = key.split(prefix, 1)[1]
            for name in NAMES:
                found[value][name] += window.get(name, 0)
    return {k: dict(v) for k, v in found.items()}


def total(harness: Harness, name: str, size: int = 3600) -> Any:
    return sum(w.get(name, 0) for k, w in harness.run.window_totals().items()
               if k.startswith(f"{size}:") and ":total:" in k)


def traffic() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i in range(30):
        unit = f"u{i}"
        customer = f"cust{i % 4}"
        attrs = {"role_tier": "gold" if i % 3 == 0 else "basic"}
        events.append(call(f"{unit}-c0", unit, 60 * i, customer=customer, user=f"user{i % 5}",
                           attributes=attrs))
        events.append(call(f"{unit}-c1", unit, 60 * i + 5, customer=customer,
                           attributes=attrs, input_tokens=3000))
        if i % 2 == 0:
            events.append(cost(f"{unit}-k", unit, 60 * i + 7, customer=customer,
                               amount="0.3"))
        if i % 5 != 4:
            # Half the outcomes name no customer: the unit's (from its first call) holds.
            named = {"customer": customer} if i % 2 else {}
            events.append(outcome(f"{unit}-o", unit, 60 * i + 30, **named,
                                  status="accepted" if i % 3 else "rejected"))
    return events


def run(events: list[dict[str, Any]], **config: Any) -> Harness:
    harness = Harness(partitions=3, dimensions=("role_tier",), **config)
    harness.send(events)
    harness.finish()
    return harness


def test_each_customer_gets_exact_spend_outcomes_and_decisions() -> None:
    harness = run(traffic())
    customers = by_value(harness, "customer")
    assert set(customers) == {"cust0", "cust1", "cust2", "cust3"}
    units = {a.work_unit_id: a for a in harness.run.attributions.values()}
    for name in customers:
        mine = [a for a in units.values() if a.work_unit_id[1:].isdigit()
                and int(a.work_unit_id[1:]) % 4 == int(name[-1])]
        figures = customers[name]
        assert figures["calls"] == sum(a.calls for a in mine)
        assert figures["spend"] == sum(a.model_cost for a in mine)
        assert figures["other_cost"] == sum(a.other_cost for a in mine)
        assert figures["accepted_outcomes"] == sum(a.accepted for a in mine)
        assert figures["decided_units"] == sum(a.outcome_status is not None for a in mine)
        assert figures["accepted_value"] == sum((a.accepted_value or 0) for a in mine)
    # Every call names a customer: the customers' rows add up to the totals.
    for name in ("calls", "spend", "other_cost", "accepted_outcomes", "decided_units"):
        assert sum(c[name] for c in customers.values()) == total(harness, name), name
    # A promoted attribute and the user: rows of their own.
    tiers = by_value(harness, "role_tier")
    assert set(tiers) == {"gold", "basic"}
    assert sum(t["spend"] for t in tiers.values()) == total(harness, "spend")
    users = by_value(harness, "user")
    assert set(users) == {f"user{i}" for i in range(5)}
    assert sum(u["calls"] for u in users.values()) == 30  # only first calls name a user


def test_the_same_events_in_any_order_give_the_same_dimension_rows() -> None:
    events = traffic()
    want = by_value(run(events), "customer")
    for seed in (1, 2, 3):
        shuffled = list(events)
        random.Random(seed).shuffle(shuffled)
        assert by_value(run(shuffled, input_idle_seconds=0), "customer") == want


def test_values_beyond_the_cap_are_summed_in_other_and_nothing_is_lost() -> None:
    harness = run(traffic(), dimension_cap=2)
    customers = by_value(harness, "customer")
    assert len(customers) == 3 and "__other__" in customers
    for name in ("calls", "spend", "accepted_outcomes"):
        assert sum(c[name] for c in customers.values()) == total(harness, name), name
    assert any(":dimension:customer=__other__" in row.window_id and row.final
               for row in harness.run.windows.values())


def test_a_late_call_reaches_its_customers_final_window_as_a_correction() -> None:
    harness = Harness(partitions=1, input_idle_seconds=0)
    harness.send([call("a", "U", 0, customer="acme"), call("b", "V", 7200, customer="acme")])
    harness.collect_windows()
    harness.send([call("late", "W", 30, customer="acme")])
    harness.finish()
    corrections = [r for r in harness.run.windows.values() if r.scope == "dimension"
                   and r.correction and r.window_seconds == 3600]
    assert corrections and corrections[0].dimension_value == "acme"
    assert by_value(harness, "customer")["acme"]["calls"] == 3


def test_dimensions_are_attribute_keys_and_at_most_five() -> None:
    with pytest.raises(ConfigurationError):
        EngineConfig(dimensions=("customer",))
    with pytest.raises(ConfigurationError):
        EngineConfig(dimensions=("cost-center",))
    with pytest.raises(ValueError):
        EngineConfig(dimensions=("a", "b", "c", "d", "e", "f"))
