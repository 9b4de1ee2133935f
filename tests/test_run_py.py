"""``run.py``: the demo installs the package only, the tests add their tools, one .venv.

pip and venv are replaced by recorders here (the real installs take minutes); what is
checked is which install each command asks for, and that the stamps keep a second run
from installing again until pyproject.toml changes.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run_py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, list[str]]:
    """run.py loaded against a project copy in ``tmp_path``, pip recorded, not run."""
    spec = importlib.util.spec_from_file_location("run_py_under_test", ROOT / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    venv_dir = project / ".venv"
    monkeypatch.setattr(module, "ROOT", project)
    monkeypatch.setattr(module, "VENV", venv_dir)
    monkeypatch.setattr(module, "PYTHON", venv_dir / "bin" / "python")
    monkeypatch.setattr(module, "SPECS", {"package": f"{project}",
                                          "test": f"{project}[test]"})
    installs: list[str] = []

    def fake_venv(path: Path, with_pip: bool) -> None:
        (path / "bin").mkdir(parents=True)
        (path / "bin" / "python").touch()

    def fake_run(command: list[str], check: bool = False, **_: Any) -> Any:
        if "-e" in command:
            installs.append(command[command.index("-e") + 1].removeprefix(str(project)))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(module.venv, "create", fake_venv)
    monkeypatch.setattr(module.subprocess, "run", fake_run)
    return module, installs


def command(module: ModuleType, name: str) -> None:
    module.install(module.NEEDS[name])


def test_the_demo_installs_the_package_only_and_the_tests_add_their_tools(
        run_py: tuple[ModuleType, list[str]]) -> None:
    module, installs = run_py
    command(module, "demo")
    assert installs == [""]  # `pip install -e .`: no test tools
    command(module, "demo")
    assert installs == [""]  # stamped: not again
    command(module, "test")
    assert installs == ["", "[test]"]  # a test run after a demo adds the test tools
    command(module, "test")
    command(module, "demo")  # the test install covers the demo's
    assert installs == ["", "[test]"]


def test_a_changed_pyproject_installs_again_and_drops_old_stamps(
        run_py: tuple[ModuleType, list[str]]) -> None:
    module, installs = run_py
    command(module, "test")
    (module.VENV / ".installed-0123456789abcdef").touch()  # the stamp format of before
    (module.ROOT / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '2'\n")
    command(module, "demo")
    assert installs == ["[test]", ""]
    assert [p.name for p in module.VENV.glob(".installed-*")] == [module.stamp("package").name]
    command(module, "test")
    assert installs == ["[test]", "", "[test]"]


def test_a_fresh_test_run_installs_the_test_tools_first(
        run_py: tuple[ModuleType, list[str]]) -> None:
    """.ci/run calls `run.py test` on a fresh clone: one install, with the test tools."""
    module, installs = run_py
    command(module, "test")
    assert installs == ["[test]"]
    assert module.installed("package") and module.installed("test")


def test_run_py_says_what_it_runs_and_needs_a_command() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "run.py")], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert "python3 run.py demo" in done.stderr and "python3 run.py test" in done.stderr
