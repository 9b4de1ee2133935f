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


def open_units(metrics: str) -> int:
    found = re.findall(r"^tokenyield_open_work_units\{[^}]*\} ([0-9.e+]+)$", metrics,
                       re.MULTILINE)
    return int(sum(float(v) for v in found))


def memory_holders(metrics: str) -> dict[str, float]:
    """The worker's ``tokenyield_memory_bytes`` by holder, in MiB."""
    found = re.findall(r'^tokenyield_memory_bytes\{holder="([^"]+)"\} ([0-9.e+]+)$', metrics,
                       re.MULTILINE)
    return {holder: round(float(value) / 2**20, 1) for holder, value in found}


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
        metrics = await asyncio.to_thread(worker.metrics)
        holders = memory_holders(metrics)
        sample = {"seconds": round(time.monotonic() - started, 1), "published": counter[0],
                  "rss_mb": round(rss_bytes(pid) / 2**20, 1),
                  "broker_rss_mb": round((tree_rss_bytes(pid) - rss_bytes(pid)) / 2**20, 1),
                  "lag": await asyncio.to_thread(worker.lag),
                  "open_units": open_units(metrics),
                  **{f"{holder}_mb": value for holder, value in holders.items()
                     if holder != "resident"}}
        samples.append(sample)
        print(f"{sample['seconds']:>7.0f}s  published {sample['published']:>10,}  "
              f"worker rss {sample['rss_mb']:>7.1f} MiB (rocksdb "
              f"{sample.get('rocksdb_memtables_mb', 0):>5.1f} memtables, chdb "
              f"{sample.get('clickhouse_mb', 0):>5.1f})  broker rss "
              f"{sample['broker_rss_mb']:>7.1f} MiB  open units {sample['open_units']:>8,}  "
              f"lag {sample['lag']}", flush=True)
    # An orderly stop: the traffic ends its rounds and flushes its publisher. Cancelling
    # it instead left the publisher's sends to asyncio.run's final cancel-all, which hung.
    stop.set()
    try:
        await asyncio.wait_for(task, timeout=60)
    except TimeoutError:
        print("soak: the traffic did not stop within 60 s; abandoning it", flush=True)
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
    holders = sorted({key for s in samples for key in s
                      if key.endswith("_mb") and key not in ("rss_mb", "broker_rss_mb")})
    growth = {key.removesuffix("_mb"): round(
        statistics.median(s.get(key) or 0 for s in last)
        - statistics.median(s.get(key) or 0 for s in first), 1) for key in holders}
    elapsed = samples[-1]["seconds"] if samples else 0
    achieved = samples[-1]["published"] / elapsed if elapsed else 0
    return {
        "samples": len(samples), "target_rate": rate, "achieved_rate": round(achieved),
        "rss_middle_third_mb": rss_first, "rss_last_third_mb": rss_last,
        "rss_growth_ratio": round(rss_last / rss_first, 3) if rss_first else None,
        "open_units_middle_third": units_first, "open_units_last_third": units_last,
        "growth_by_holder_mb": growth,
        "broker_rss_last_mb": samples[-1]["broker_rss_mb"] if samples else None,
        "lag_max": max(lags, default=0), "lag_last_third_median": lag_last,
        # Flat: memory within 15% (allocator arenas settle), and lag not building up
        # (under a second of traffic on the inputs at the end).
        "rss_flat": bool(rss_first and rss_last / rss_first < 1.15),
        "lag_flat": lag_last < max(rate, 1000),
    }


def charts(result: dict[str, Any]) -> dict[str, str]:
    """The series as SVG line charts: memory, memory by holder, open units, lag. The x
    axis is minutes:seconds since the start of the run."""
    from streams.report_svg import line_chart

    samples = result["samples"]
    start = datetime(2000, 1, 1, tzinfo=UTC)  # only its minutes and seconds are shown
    at = [start + timedelta(seconds=s["seconds"]) for s in samples]

    def series(*keys: str) -> dict[str, list[tuple[datetime, float]]]:
        return {key: [(t, float(s.get(key) or 0)) for t, s in zip(at, samples, strict=True)]
                for key in keys}

    def chart(title: str, *keys: str) -> str:
        return line_chart(title, series(*keys), y_format="{:,.0f}", x_format="{:%M:%S}")

    holders = sorted({key for s in samples for key in s
                      if key.endswith("_mb") and key not in ("rss_mb", "broker_rss_mb")})
    return {"memory": chart("Resident memory (MiB)", "rss_mb", "broker_rss_mb"),
            "memory-by-holder": chart("Worker memory by holder (MiB)", "rss_mb", *holders),
            "open-units": chart("Open work units", "open_units"),
            "lag": chart("Consumer lag (messages)", "lag")}


def chart_page(result: dict[str, Any]) -> str:
    """The charts and the verdict as one offline HTML page."""
    from html import escape

    verdict = escape(json.dumps(result["verdict"], indent=2))
    return ("<!doctype html><meta charset='utf-8'><title>tokenyield soak</title>"
            "<body style='font-family:sans-serif'><h1>tokenyield soak</h1>"
            "<p>x axis: minutes:seconds since the start of the run</p>"
            + "".join(charts(result).values())
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
    parser.add_argument("--svg-dir", type=Path, default=None,
                        help="write each chart as soak-<name>.svg into this folder")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="do not run: redraw the charts and verdict of a --json file")
    args = parser.parse_args(argv)
    if args.from_json:
        stored = json.loads(args.from_json.read_text())
        result = {**stored, "verdict": verdict(stored["samples"], stored["verdict"]["target_rate"])}
    else:
        result = run(args)
    print(json.dumps(result["verdict"], indent=2))
    if args.json and not args.from_json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.chart:
        args.chart.write_text(chart_page(result))
        print(f"charts written to {args.chart}")
    if args.svg_dir:
        args.svg_dir.mkdir(parents=True, exist_ok=True)
        for name, svg in charts(result).items():
            (args.svg_dir / f"soak-{name}.svg").write_text(svg)
        print(f"charts written to {args.svg_dir}/soak-*.svg")
    return 0 if result["verdict"]["rss_flat"] and result["verdict"]["lag_flat"] else 1


def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tokenyield-soak-"))
    settings = Settings(data_dir=data_dir)
    worker = WorkerProcessHandle(settings, data_dir / "worker.log", SOAK_SETTINGS)
    try:
        worker.start(timeout=180, say=lambda text: print(f"soak: {text}", flush=True))
        samples = asyncio.run(soak(settings, worker, args.minutes, args.rate, args.every))
    finally:
        worker.stop()
    return {"verdict": verdict(samples, args.rate), "samples": samples,
            "data_dir": str(data_dir)}


if __name__ == "__main__":
    sys.exit(main())
