"""The documentation cannot silently fall behind the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from streams.ops.metrics import Metrics
from streams.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
CONFIGURATION = (ROOT / "docs" / "CONFIGURATION.md").read_text()
SETTINGS = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}


@pytest.mark.parametrize("variable", sorted(SETTINGS))
def test_every_setting_is_documented(variable: str) -> None:
    assert f"`{variable}`" in CONFIGURATION


@pytest.mark.parametrize("metric", Metrics().registry.collect(), ids=lambda m: m.name)
def test_every_worker_metric_is_documented(metric: Any) -> None:
    name = f"{metric.name}_total" if metric.type == "counter" else metric.name
    assert f"| `{name}` | {metric.type} |" in CONFIGURATION


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_variables_exist(doc: Path) -> None:
    named = set(re.findall(r"\bTOKENYIELD_[A-Z0-9_]+[A-Z0-9]\b", doc.read_text()))
    assert named <= SETTINGS, f"{doc.name} names unknown settings: {sorted(named - SETTINGS)}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_point_at_files(doc: Path) -> None:
    for target in re.findall(r"\]\((?!https?://|#|mailto:)([^)#\s]+)", doc.read_text()):
        assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
