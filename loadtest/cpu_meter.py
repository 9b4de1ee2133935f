"""How many cores a bench stage used: CPU time of process trees, read from ``/proc``.

A speed-up from one worker process to two is bounded by the cores the one already uses.
On this 2-core machine a single worker is not one core: its Python thread, chdb's insert
and merge threads, and the broker beside it. If one worker and its broker use 1.2 cores,
two cannot do better than 2 / 1.2 = 1.67x at the same CPU per event, whatever the code
does. So the bench measures the cores of each drain and prints that ceiling beside the
goal (docs/BENCHMARKS.md).

A tree is a process and every process below it at the time of a reading (a
``--processes`` group's supervisor and its workers). Where ``/proc`` is absent (not
Linux), readings are ``None`` and the bench leaves the figures out; a process that
ended between two readings leaves its CPU time out, so a figure is never too high.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_table() -> dict[int, tuple[int, float]] | None:
    """pid -> (parent pid, user + system CPU seconds) of every process, or None."""
    if not (_PROC / "self" / "stat").exists():
        return None
    table: dict[int, tuple[int, float]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # ended while we read
            continue
        # The command name (field 2) is in parentheses and may hold spaces: split after it.
        fields = text.rsplit(")", 1)[1].split()
        parent, user, system = int(fields[1]), int(fields[11]), int(fields[12])
        table[int(entry.name)] = (parent, (user + system) / _TICKS_PER_SECOND)
    return table


def tree_cpu_seconds(roots: Sequence[int]) -> float | None:
    """CPU seconds used so far by the processes ``roots`` and all their descendants."""
    table = _process_table()
    if table is None:
        return None
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    seen: set[int] = set()
    pending = [pid for pid in roots if pid in table]
    while pending:
        pid = pending.pop()
        if pid not in seen:
            seen.add(pid)
            pending.extend(children.get(pid, ()))
    return sum(table[pid][1] for pid in seen)


@dataclass(frozen=True)
class CoresUsed:
    """CPU seconds and cores per role over one measured interval."""

    seconds: float
    cpu_seconds: Mapping[str, float]

    def cores(self, role: str) -> float:
        return self.cpu_seconds[role] / self.seconds if self.seconds > 0 else 0.0


class CpuMeter:
    """Started with the root pids of each role; ``stop()`` returns what each used since."""

    def __init__(self, roles: Mapping[str, Sequence[int]]) -> None:
        self._roles = {role: list(pids) for role, pids in roles.items()}
        self._started = time.monotonic()
        self._before = {role: tree_cpu_seconds(pids) for role, pids in self._roles.items()}

    def stop(self) -> CoresUsed | None:
        """None where CPU time cannot be read here."""
        seconds = time.monotonic() - self._started
        used: dict[str, float] = {}
        for role, pids in self._roles.items():
            before, after = self._before[role], tree_cpu_seconds(pids)
            if before is None or after is None:
                return None
            used[role] = max(0.0, after - before)
        return CoresUsed(seconds, used)
