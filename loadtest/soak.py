"""Soak: a worker under steady traffic for a long while; memory and lag must stay flat.

    python -m loadtest.soak --minutes 20 --rate 1500 --json soak.json --chart soak.html

Starts ``tokenyield worker`` on its own embedded broker and chdb (a temporary data dir,
or ``--data-dir``) and publishes realistic generated traffic at ``--rate`` events/s with
current event times. Every ``--every`` seconds it samples the worker's resident memory
and its holders (RocksDB, chdb: ``tokenyield_memory_bytes``), the broker's memory, the
CPU each uses, the open work units and the consumer lag, in messages and in seconds of
input. Prints a line per sample, writes the series as JSON and charts (``--chart`` one
HTML page, ``--svg-dir`` one SVG each), and ends with a verdict comparing the middle
third with the last (medians). ``--from-json`` redraws a stored run.
Not part of the test suite: run it on demand (docs/RELIABILITY.md has the figures)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streams.app.demo import WorkerProcessHandle
from streams.app.worker import running_worker
from streams.ops.memory_report import resident_bytes
from streams.settings import Settings
from streams.traffic.generator import live_traffic, publisher_for

# Steady state within minutes: units leave state a minute after their final outcome (the
# allowed lateness, which retention may not be shorter than, goes down to a minute too), and
# units without one expire after two minutes of event time, then leave a minute later.
LAG_FLOOR_SECONDS = 3.0  # a lag this small is flat whatever it was before
SOAK_SETTINGS = {"TOKENYIELD_RETENTION_SECONDS": "60", "TOKENYIELD_DEADLINE_SECONDS": "120",
                 "TOKENYIELD_ALLOWED_LATENESS_SECONDS": "60"}


def rss_bytes(pid: int) -> int:
    return resident_bytes(pid) or 0


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc): the worker's embedded broker."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
            children.setdefault(int(fields["PPid"]), []).append(int(fields["Pid"]))
        except (OSError, KeyError, ValueError):
            continue
    found, stack = [], list(children.get(pid, []))
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def messages_in(metrics: str) -> float:
    found = re.findall(r"^tokenyield_messages_in_total\{[^}]*\} ([0-9.e+]+)$", metrics,
                       re.MULTILINE)
    return sum(float(v) for v in found)


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
    pid = worker.process.pid
    broker = descendants(pid)  # the embedded broker, which keeps every message in memory
    before = (started, cpu_seconds(pid), sum(map(cpu_seconds, broker)), 0.0)
    while time.monotonic() - started < minutes * 60:
        await asyncio.sleep(every)
        if task.done():
            task.result()  # raises what stopped the traffic
        metrics = await asyncio.to_thread(worker.metrics)
        holders = memory_holders(metrics)
        broker = descendants(pid)
        now = (time.monotonic(), cpu_seconds(pid), sum(map(cpu_seconds, broker)),
               messages_in(metrics))
        elapsed = now[0] - before[0]
        message_rate = (now[3] - before[3]) / elapsed
        lag = await asyncio.to_thread(worker.lag)
        sample = {"seconds": round(now[0] - started, 1), "published": counter[0],
                  "rss_mb": round(rss_bytes(pid) / 2**20, 1),
                  "broker_rss_mb": round(sum(map(rss_bytes, broker)) / 2**20, 1),
                  "lag": lag,
                  # Lag as seconds of input at the rate messages are arriving now.
                  "lag_seconds": round(lag / message_rate, 2)
                  if lag is not None and message_rate > 0 and before[3] else None,
                  "worker_cpu_pct": round(100 * (now[1] - before[1]) / elapsed, 1),
                  "broker_cpu_pct": round(100 * (now[2] - before[2]) / elapsed, 1),
                  "open_units": open_units(metrics),
                  **{f"{holder}_mb": value for holder, value in holders.items()
                     if holder != "resident"}}
        before = now
        samples.append(sample)
        print(f"{sample['seconds']:>7.0f}s  published {sample['published']:>10,}  "
              f"worker rss {sample['rss_mb']:>7.1f} MiB (rocksdb "
              f"{sample.get('rocksdb_memtables_mb', 0):>5.1f} memtables, chdb "
              f"{sample.get('clickhouse_mb', 0):>5.1f})  broker rss "
              f"{sample['broker_rss_mb']:>7.1f} MiB  open units {sample['open_units']:>8,}  "
              f"lag {sample['lag']} ({sample['lag_seconds']} s)  cpu worker "
              f"{sample['worker_cpu_pct']:.0f}% broker {sample['broker_cpu_pct']:.0f}%",
              flush=True)
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
    seconds_first = [s["lag_seconds"] for s in first if s.get("lag_seconds") is not None]
    seconds_last = [s["lag_seconds"] for s in last if s.get("lag_seconds") is not None]
    if seconds_first and seconds_last:
        # Flat: the lag at the end is a few seconds of input at most, or no more than half
        # again what it was in the middle. A lag that keeps doubling fails either way.
        lag_middle_s, lag_last_s = (statistics.median(seconds_first),
                                    statistics.median(seconds_last))
        lag_flat = lag_last_s <= max(LAG_FLOOR_SECONDS, 1.5 * lag_middle_s)
    else:  # samples without a message rate (older runs): under a second of events
        lag_middle_s = lag_last_s = None
        lag_flat = lag_last < max(rate, 1000)
    return {
        "samples": len(samples), "target_rate": rate, "achieved_rate": round(achieved),
        "rss_middle_third_mb": rss_first, "rss_last_third_mb": rss_last,
        "rss_growth_ratio": round(rss_last / rss_first, 3) if rss_first else None,
        "open_units_middle_third": units_first, "open_units_last_third": units_last,
        "growth_by_holder_mb": growth,
        "broker_rss_last_mb": samples[-1]["broker_rss_mb"] if samples else None,
        "lag_max": max(lags, default=0), "lag_last_third_median": lag_last,
        "lag_seconds_middle_third": lag_middle_s, "lag_seconds_last_third": lag_last_s,
        "worker_cpu_pct_last_third": _median(last, "worker_cpu_pct"),
        "broker_cpu_pct_last_third": _median(last, "broker_cpu_pct"),
        # Flat memory: within 15% (allocator arenas settle).
        "rss_flat": bool(rss_first and rss_last / rss_first < 1.15),
        "lag_flat": lag_flat,
    }


def _median(samples: list[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in samples if s.get(key) is not None]
    return statistics.median(values) if values else None


def charts(result: dict[str, Any]) -> dict[str, str]:
    """The series as SVG line charts: memory, memory by holder, open units, lag. The x
    axis is minutes:seconds since the start of the run."""
    from streams.report.svg_charts import line_chart

    samples = result["samples"]
    start = datetime(2000, 1, 1, tzinfo=UTC)  # only its minutes and seconds are shown
    at = [start + timedelta(seconds=s["seconds"]) for s in samples]

    def series(*keys: str) -> dict[str, list[tuple[datetime, float]]]:
        return {key: [(t, float(s.get(key) or 0)) for t, s in zip(at, samples, strict=True)]
                for key in keys}

    def chart(title: str, *keys: str, y_format: str = "{:,.0f}") -> str:
        return line_chart(title, series(*keys), y_format=y_format, x_format="{:%M:%S}")

    holders = sorted({key for s in samples for key in s
                      if key.endswith("_mb") and key not in ("rss_mb", "broker_rss_mb")})
    return {"memory": chart("Resident memory (MiB)", "rss_mb", "broker_rss_mb"),
            "memory-by-holder": chart("Worker memory by holder (MiB)", "rss_mb", *holders),
            "open-units": chart("Open work units", "open_units"),
            "lag": chart("Consumer lag (messages)", "lag"),
            "lag-seconds": chart("Consumer lag (seconds of input)", "lag_seconds",
                                 y_format="{:,.1f}"),
            "cpu": chart("CPU (% of one core)", "worker_cpu_pct", "broker_cpu_pct")}


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
