#!/usr/bin/env python3
"""The README's two commands, needing only Python 3.11+ and pip:

    python3 run.py demo     run tokenyield end to end (embedded broker and ClickHouse)
    python3 run.py test     run the test suite

The first use creates .venv and installs into it what the command needs: the project for
``demo``, the project and its test tools for ``test`` (again whenever pyproject.toml
changes; one .venv serves both). Arguments after the command are passed on:
``python3 run.py demo --duration 60``, ``python3 run.py test -k pricing``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"


#: What each command needs installed: the demo only the package, the tests its test tools
#: too (litellm, hypothesis...: minutes more on a fresh machine).
NEEDS = {"demo": "package", "test": "test"}
#: Each install covers itself and the ones before it.
COVERS = {"package": ("package",), "test": ("package", "test")}
SPECS = {"package": f"{ROOT}", "test": f"{ROOT}[test]"}


def stamp(level: str) -> Path:
    """The file that says ``level`` is installed for the current pyproject.toml."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    return VENV / f".installed-{level}-{digest}"


def installed(level: str) -> bool:
    return any(stamp(done).exists() for done, covered in COVERS.items() if level in covered)


def install(level: str) -> None:
    """Install what ``level`` needs into the one .venv, unless it is already there for
    this pyproject.toml (a change to it installs again)."""
    if installed(level):
        return
    what = "tokenyield" if level == "package" else "tokenyield and its test tools"
    print(f"Installing {what} into {VENV} (once; again when pyproject.toml changes)...",
          flush=True)
    if not PYTHON.exists():
        venv.create(VENV, with_pip=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run([*pip, "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "--progress-bar", "on", "-e", SPECS[level]], check=True)
    current = {stamp(done) for done in COVERS}
    for old in VENV.glob(".installed-*"):
        if old not in current:  # a stamp of an older pyproject.toml, or of the old format
            old.unlink()
    stamp(level).touch()


def main() -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - run by any python3, checked here
        print(f"tokenyield needs Python 3.11 or newer; this is {sys.version.split()[0]}",
              file=sys.stderr)
        return 2
    commands = {"demo": [str(BIN / "tokenyield"), "demo"],
                "test": [str(PYTHON), "-m", "pytest"]}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    install(NEEDS[sys.argv[1]])
    os.chdir(ROOT)
    try:
        return subprocess.run([*commands[sys.argv[1]], *sys.argv[2:]]).returncode
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
