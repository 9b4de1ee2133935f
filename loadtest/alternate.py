"""Worker set-ups drained in alternation on one broker, for comparisons on a noisy machine.

    python -m loadtest.alternate --events 100000 one p2 one p2
    python -m loadtest.alternate one one:TOKENYIELD_CHECKPOINT_OVERLAP=false one ...

Each argument is a set-up: ``one`` (a worker), ``pN`` (``tokenyield worker --processes
N``, the embedded chdb written by the first) or ``two`` (two workers in one group, each
with its own chdb path), optionally followed by ``:NAME=value,...`` settings for it. Each
drains its own copy of the same generated traffic (the bench's ``drain``: from partition
assignment to the last row the sinks count), so alternating A B A B cancels most of the
drift of a shared machine; the ratios are printed against the first set-up.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from loadtest.bench import Bench, say


def _setup(text: str) -> tuple[str, dict[str, str]]:
    kind, _, extra = text.partition(":")
    settings = dict(item.split("=", 1) for item in extra.split(",") if item)
    if kind not in ("one", "two") and not (kind.startswith("p") and kind[1:].isdigit()):
        raise SystemExit(f"unknown set-up {kind!r}: one, two or pN")
    return kind, settings


def main(events: int, setups: list[str]) -> list[float]:
    bench = Bench(events, Path(tempfile.mkdtemp(prefix="tokenyield-alternate-")), quick=False)
    rates: list[float] = []
    bench.broker.start()
    try:
        for index, text in enumerate(setups):
            kind, extra = _setup(text)
            prefix = f"alt{index}."
            total = bench.prepublish(prefix, events)
            if kind == "two":
                workers = [bench.worker(f"w{index}-{n}", prefix, app_id=f"alt{index}",
                                        extra=extra) for n in range(2)]
            else:
                processes = 1 if kind == "one" else int(kind[1:])
                workers = [bench.worker(f"w{index}", prefix, extra=extra,
                                        processes=processes)]
            try:
                rates.append(bench.drain(workers, total, text))
            finally:
                for worker in workers:
                    worker.stop()
            say(f"{text}: {rates[-1]:,.0f} events/s")
    finally:
        bench.broker.stop()
    print(f"{'set-up':<48} {'events/s':>10} {'x first':>8}")
    for text, rate in zip(setups, rates, strict=True):
        print(f"{text:<48} {rate:>10,.0f} {rate / rates[0]:>8.2f}")
    return rates


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    cli.add_argument("--events", type=int, default=100_000)
    cli.add_argument("setups", nargs="+", help="one, two or pN, each optionally :NAME=value")
    arguments = cli.parse_args()
    main(arguments.events, arguments.setups)
