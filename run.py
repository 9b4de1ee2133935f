#!/usr/bin/env python3
"""The README's two commands, needing only Python 3.11+ and pip:

    python3 run.py demo     run tokenyield end to end (embedded broker and ClickHouse)
    python3 run.py test     run the test suite

The first use creates .venv and installs the project with its test tools into it
(again whenever pyproject.toml changes). Arguments after the command are passed on:
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


def install() -> None:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    stamp = VENV / f".installed-{digest}"
    if stamp.exists():
        return
    print(f"Installing tokenyield and its test tools into {VENV} (first run only; a few "
          f"minutes)...", flush=True)
    if not PYTHON.exists():
        venv.create(VENV, with_pip=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run([*pip, "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "--progress-bar", "on", "-e", f"{ROOT}[test]"], check=True)
    for old in VENV.glob(".installed-*"):
        old.unlink()
    stamp.touch()


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
    install()
    os.chdir(ROOT)
    try:
        return subprocess.run([*commands[sys.argv[1]], *sys.argv[2:]]).returncode
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
