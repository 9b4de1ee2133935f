"""The bench's CPU meter over real processes: a tree's CPU time, children included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from loadtest.cpu_meter import CpuMeter, tree_cpu_seconds

# A parent that starts a child burning CPU for the given seconds, then waits for it.
_BURN = "import time\nend = time.process_time() + {0}\nwhile time.process_time() < end: pass\n"
_PARENT = ("import subprocess, sys\n"
           "subprocess.run([sys.executable, '-c', {0!r}])\n"
           "import time; time.sleep(30)\n")

def _wait_for_child(pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            if children.read().strip():
                return
        time.sleep(0.02)
    raise AssertionError("the child never started")


def test_a_tree_counts_its_descendants_cpu_and_an_idle_one_none() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT.format(_BURN.format(20))],
                              start_new_session=True)  # so the burning child dies with it
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _wait_for_child(parent.pid)
        meter = CpuMeter({"busy": [parent.pid], "idle": [idle.pid]})
        time.sleep(0.9)  # the child burns CPU all along (the parent sleeps)
        used = meter.stop()
        assert used is not None
        assert used.cpu_seconds["busy"] >= 0.4  # one core, shared with the test itself
        assert 0.4 <= used.cores("busy") <= 1.5
        assert used.cpu_seconds["idle"] < 0.1
        assert used.seconds >= 0.9
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        idle.kill()
        parent.wait()
        idle.wait()


def test_a_pid_that_is_gone_counts_nothing() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert tree_cpu_seconds([process.pid]) == 0.0
