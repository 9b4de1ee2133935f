"""Coverage-guided fuzzing (atheris, libFuzzer) of what a worker does with a message.

    python -m tests.atheris_engine CORPUS_DIR -runs=20000 -dict=tests/atheris_engine.dict

One input is up to eight Kafka messages: the first byte says which are calls (bit set)
and which outcomes, the rest is split on ``SEPARATOR`` into message values. libFuzzer
mutates the seed envelopes (tests/test_reliability_atheris.py writes them) byte by byte
and keeps what reaches new code, so it finds near-valid events that hypothesis's
generated ones do not: a digit too many, a broken escape, a key cut short.

Every input goes through one engine as the worker would apply it; then a full
checkpoint is restored into a fresh engine and both are run to the end. The harness
raises (libFuzzer reports a crash, with the input saved) when:
- the engine raises on any message;
- an event is unaccounted for (received != rejected + late + duplicates + rerouted
  + applied);
- a dead letter lacks its reason or its source topic, partition and offset;
- an output cannot be encoded for its Kafka topic;
- the restored engine differs from the original (ledger, units, final attributions).
"""

from __future__ import annotations

import sys
from typing import Any

import atheris

with atheris.instrument_imports(include=["schemas", "streams.core"]):
    from schemas.codec import encode_models
    from schemas.pricing import PriceBook
    from streams.core.checkpoint import Checkpointer
    from streams.core.engine import Outputs, PartitionEngine, Source
    from streams.core.engine_config import EngineConfig

SEPARATOR = b"\n\x1e\n"
NOW_MS = 1_795_000_000_000  # 2026-11-18; seed events are stamped the day before
BOOK = PriceBook.load()
CONFIG = EngineConfig(partitions=1, deadline_seconds=3600, retention_seconds=3600,
                      allowed_lateness_seconds=120)


class InvariantBroken(AssertionError):
    """What the fuzzer reports as a crash."""


def new_engine(store: dict[bytes, bytes] | None = None) -> PartitionEngine:
    return PartitionEngine(0, CONFIG, lambda: BOOK, lambda: NOW_MS, store=store)


def messages(data: bytes) -> list[tuple[str, bytes]]:
    if not data:
        return []
    kinds, values = data[0], data[1:].split(SEPARATOR)[:8]
    return [("calls" if kinds >> i & 1 else "outcomes", value) for i, value in enumerate(values)]


def check_outputs(out: Outputs, topic: str, offset: int) -> None:
    for dead in out.dead_letters:
        if not dead.reason or not dead.error_kind:
            raise InvariantBroken(f"dead letter without a reason: {dead!r}")
        if (dead.source_topic, dead.partition, dead.offset) != (topic, 0, offset):
            raise InvariantBroken(f"dead letter with the wrong source: {dead!r}")
    for models in (out.attributions, out.alerts, out.dead_letters, out.late):
        if models:
            encode_models(models)  # raises if the worker could not send them


def balanced(engine: PartitionEngine) -> None:
    ledger = engine.ledger
    if ledger.received != (ledger.rejected + ledger.duplicates + ledger.rerouted
                           + ledger.applied):
        raise InvariantBroken(f"events unaccounted for: {ledger!r}")
    if sum(engine.applied_split()) != ledger.applied:
        raise InvariantBroken(f"applied events not in pending/attributed/unattributed: "
                              f"{engine.applied_split()} vs {ledger!r}")


def run_to_end(engine: PartitionEngine) -> list[Any]:
    """Move the event-time clock ten days on: every unit is decided and evicted."""
    engine.max_event_ms = max(engine.max_event_ms, NOW_MS) + 10 * 86_400_000
    out = engine.tick()
    return sorted(a.model_dump_json() for a in out.attributions)


def check(data: bytes) -> None:
    engine = new_engine()
    for offset, (kind, value) in enumerate(messages(data)):
        out = engine.process(kind, value, Source(kind, 0, offset))  # type: ignore[arg-type]
        check_outputs(out, kind, offset)
        balanced(engine)
    plan = Checkpointer(engine).plan(force_full=True)
    stored = dict(plan.batched + plan.writes)
    restored = new_engine(stored)
    Checkpointer(restored).restore(plan.meta[1], [
        stored[key] for key in Checkpointer.segment_keys(0, plan.meta[1])])
    if restored.ledger.dump() != engine.ledger.dump():
        raise InvariantBroken("the restored ledger differs")
    if sorted(restored.units.ids()) != sorted(engine.units.ids()):
        raise InvariantBroken("the restored units differ")
    if run_to_end(restored) != run_to_end(engine):
        raise InvariantBroken("the restored engine attributes differently")
    balanced(engine)


def fuzz_one_input(data: bytes) -> None:
    check(data)


def main(argv: list[str]) -> None:
    atheris.Setup(argv, fuzz_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
