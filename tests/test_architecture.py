"""The tree's architecture, checked: imports run one way, and the pure parts import no
Kafka, Faust or ClickHouse code (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Layers, lowest first: a module may import its own layer and the ones below.
LAYERS: list[tuple[str, int]] = [
    ("schemas", 0),  # the contract: events, outputs, codec, pricing, errors
    ("streams.core", 1),  # the pure engine, rollup and detectors
    ("streams.settings", 2),
    ("streams.runtime", 2),  # the runtimes and their ports
    ("streams.kafka", 3), ("streams.clickhouse", 3), ("streams.feeds", 3),
    ("streams.ops", 3), ("streams.report", 3), ("streams.traffic", 3),  # adapters
    ("streams.app", 4),  # the worker, the demo, repricing
    ("streams.cli", 5),
    ("streams", 5),  # streams/__main__.py runs the command line
    ("loadtest", 6),  # benchmarks import the product, never the reverse
]
#: What the pure layers must not import (the technology stays in the adapters).
TECHNOLOGY = {"faust", "mode", "aiokafka", "kafka", "clickhouse_connect", "chdb", "rocksdict",
              "aiohttp", "prometheus_client"}


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for prefix, layer in LAYERS:
        matches = module == prefix or module.startswith(prefix + ".")
        if matches and (best is None or len(prefix) > best[0]):
            best = (len(prefix), layer)
    return best[1] if best else None


def modules() -> dict[str, Path]:
    found = {}
    for package in ("schemas", "streams", "loadtest"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path) -> list[tuple[str, int]]:
    """Every absolute import of a file, with its line (those inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def test_every_module_has_a_layer() -> None:
    assert [m for m in modules() if layer_of(m) is None] == []


def test_imports_run_one_way() -> None:
    every = modules()
    wrong = []
    for name, path in every.items():
        mine = layer_of(name)
        assert mine is not None
        for target, line in imports(path):
            if target not in every:  # an attribute of a module, or a third party
                continue
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({name}, layer {mine}) imports "
                             f"{target} (layer {theirs})")
    assert wrong == []


def test_the_pure_layers_import_no_kafka_faust_or_clickhouse() -> None:
    wrong = []
    for name, path in modules().items():
        if (layer_of(name) or 0) > 2 or name == "schemas.kafka_publisher":
            continue  # the publisher is the contract's client library: it talks to Kafka
        for target, line in imports(path):
            if target.split(".")[0] in TECHNOLOGY:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert wrong == []


def test_the_check_finds_a_wrong_import(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text("from streams.app.worker import WorkerProcess\nimport faust\n")
    found = imports(source)
    assert ("streams.app.worker", 1) in found and ("faust", 2) in found
    assert layer_of("streams.core.engine") == 1 < layer_of("streams.app.worker")  # type: ignore[operator]
