"""Soak: a worker under steady traffic for a long while; RSS and lag must stay flat.

    python -m loadtest.soak --minutes 10 --rate 5000 --json soak.json --chart soak.html

Starts ``tokenyield worker`` on its own embedded broker and chdb (a temporary data dir,
or ``--data-dir``), publishes realistic generated traffic at ``--rate`` events/s with
current event times, and every ``--every`` seconds samples the resident memory of the
worker's process tree (the worker and its broker) and the consumer lag (from the
worker's /metrics/). Prints a line per sample, writes the series as JSON, and ends with
a verdict comparing the first and last thirds (medians): memory growth and lag.
Not part of the test suite: run it on demand (docs/RELIABILITY.md has the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from loadtest.generator import live_traffic, publisher_for
from streams.demo import WorkerProcessHandle
from streams.settings import Settings
from streams.worker import running_worker

# Steady state within minutes: units leave state a minute after their final outcome (the
# allowed lateness, which retention may not be shorter than, goes down to a minute too), and
# units without one expire after two minutes of event time, then leave a minute later.
SOAK_SETTINGS = {"TOKENYIELD_RETENTION_SECONDS": "60", "TOKENYIELD_DEADLINE_SECONDS": "120",
                 "TOKENYIELD_ALLOWED_LATENESS_SECONDS": "60"}


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (Linux /proc): the worker and
    its embedded broker, which keeps every message in memory."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
            children.setdefault(int(fields["PPid"]), []).append(int(fields["Pid"]))
        except (OSError, KeyError, ValueError):
            continue
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
        stack.extend(children.get(current, []))
    return total


def open_units(worker: WorkerProcessHandle) -> int:
    found = re.findall(r"^tokenyield_open_work_units\{[^}]*\} ([0-9.e+]+)$", worker.metrics(),
                       re.MULTILINE)
    return int(sum(float(v) for v in found))


async def traffic(settings: Settings, bootstrap: str, rate: float, stop: asyncio.Event,
                  counter: list[int]) -> None:
    def count(step: int) -> None:
        counter[0] += step

    async with publisher_for(settings.kafka(bootstrap), topic_prefix=settings.topic_prefix,
                             partitions=settings.partitions) as publisher:
        await live_traffic(publisher, rate, stop, run_id="soak", on_events=count)


async def soak(settings: Settings, worker: WorkerProcessHandle, minutes: float, rate: float,
               every: float) -> list[dict[str, Any]]:
    info = running_worker(settings.data_dir)
    bootstrap = settings.kafka_bootstrap or str(info["bootstrap"]) if info else ""
    stop = asyncio.Event()
    counter = [0]
    task = asyncio.create_task(traffic(settings, bootstrap, rate, stop, counter))
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    assert worker.process is not None
    while time.monotonic() - started < minutes * 60:
        await asyncio.sleep(every)
        if task.done():
            task.result()  # raises what stopped the traffic
        pid = worker.process.pid
        sample = {"seconds": round(time.monotonic() - started, 1), "published": counter[0],
                  "rss_mb": round(rss_bytes(pid) / 2**20, 1),
                  "broker_rss_mb": round((tree_rss_bytes(pid) - rss_bytes(pid)) / 2**20, 1),
                  "lag": await asyncio.to_thread(worker.lag),
                  "open_units": await asyncio.to_thread(open_units, worker)}
        samples.append(sample)
        print(f"{sample['seconds']:>7.0f}s  published {sample['published']:>10,}  "
              f"worker rss {sample['rss_mb']:>7.1f} MiB  broker rss "
              f"{sample['broker_rss_mb']:>7.1f} MiB  open units {sample['open_units']:>8,}  "
              f"lag {sample['lag']}", flush=True)
    stop.set()
    task.cancel()
    return samples


def verdict(samples: list[dict[str, Any]], rate: float) -> dict[str, Any]:
    """The middle third against the last: the first is the warm-up (state fills until
    units start leaving it: deadline, retention and the outcomes' delays)."""
    third = max(1, len(samples) // 3)
    first, last = samples[third:2 * third] or samples[:third], samples[-third:]
    rss_first = statistics.median(s["rss_mb"] for s in first)
    rss_last = statistics.median(s["rss_mb"] for s in last)
    lags = [s["lag"] or 0 for s in samples]
    lag_last = statistics.median(s["lag"] or 0 for s in last)
    units_first = statistics.median(s["open_units"] for s in first)
    units_last = statistics.median(s["open_units"] for s in last)
    elapsed = samples[-1]["seconds"] if samples else 0
    achieved = samples[-1]["published"] / elapsed if elapsed else 0
    return {
        "samples": len(samples), "target_rate": rate, "achieved_rate": round(achieved),
        "rss_middle_third_mb": rss_first, "rss_last_third_mb": rss_last,
        "rss_growth_ratio": round(rss_last / rss_first, 3) if rss_first else None,
        "open_units_middle_third": units_first, "open_units_last_third": units_last,
        "broker_rss_last_mb": samples[-1]["broker_rss_mb"] if samples else None,
        "lag_max": max(lags, default=0), "lag_last_third_median": lag_last,
        # Flat: memory within 15% (allocator arenas settle), and lag not building up
        # (under a second of traffic on the inputs at the end).
        "rss_flat": bool(rss_first and rss_last / rss_first < 1.15),
        "lag_flat": lag_last < max(rate, 1000),
    }


def chart_page(result: dict[str, Any]) -> str:
    """The series as an offline HTML page of line charts (memory, open units, lag)."""
    from html import escape

    from streams.report_svg import line_chart

    samples = result["samples"]
    start = datetime.now(UTC)
    at = [start + timedelta(seconds=s["seconds"]) for s in samples]

    def series(*keys: str) -> dict[str, list[tuple[datetime, float]]]:
        return {key: [(t, float(s[key] or 0)) for t, s in zip(at, samples, strict=True)]
                for key in keys}

    charts = [line_chart("Resident memory (MiB)", series("rss_mb", "broker_rss_mb"),
                         y_format="{:,.0f}"),
              line_chart("Open work units", series("open_units"), y_format="{:,.0f}"),
              line_chart("Consumer lag (messages)", series("lag"), y_format="{:,.0f}")]
    verdict = escape(json.dumps(result["verdict"], indent=2))
    return ("<!doctype html><meta charset='utf-8'><title>tokenyield soak</title>"
            "<body style='font-family:sans-serif'><h1>tokenyield soak</h1>"
            "<p>x axis: time since the start of the run</p>" + "".join(charts)
            + f"<h2>Verdict</h2><pre>{verdict}</pre></body>")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=5000.0, help="events per second")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the series here")
    parser.add_argument("--chart", type=Path, default=None,
                        help="write the series as an HTML page of charts here")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tokenyield-soak-"))
    settings = Settings(data_dir=data_dir)
    worker = WorkerProcessHandle(settings, data_dir / "worker.log", SOAK_SETTINGS)
    try:
        worker.start(timeout=180, say=lambda text: print(f"soak: {text}", flush=True))
        samples = asyncio.run(soak(settings, worker, args.minutes, args.rate, args.every))
    finally:
        worker.stop()
    result = {"verdict": verdict(samples, args.rate), "samples": samples,
              "data_dir": str(data_dir)}
    print(json.dumps(result["verdict"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.chart:
        args.chart.write_text(chart_page(result))
        print(f"charts written to {args.chart}")
    return 0 if result["verdict"]["rss_flat"] and result["verdict"]["lag_flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
