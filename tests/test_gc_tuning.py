"""The worker's garbage-collector tuning (``TOKENYIELD_GC_YOUNG_THRESHOLD``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streams.app.worker import tune_garbage_collector
from streams.settings import Settings


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().gc_young_threshold == 50_000
    monkeypatch.setenv("TOKENYIELD_GC_YOUNG_THRESHOLD", "0")
    assert Settings().gc_young_threshold == 0
    monkeypatch.setenv("TOKENYIELD_GC_YOUNG_THRESHOLD", "-1")
    with pytest.raises(ValueError, match="gc_young_threshold"):
        Settings()


@pytest.mark.usefixtures("restored_gc")
def test_a_threshold_collects_less_often_and_freezes_start_up() -> None:
    gc.unfreeze()
    _, middle, old = gc.get_threshold()
    kept = [[n] for n in range(1000)]  # start-up objects: frozen, never scanned again
    tune_garbage_collector(12_345)
    assert gc.get_threshold() == (12_345, middle, old)
    assert gc.get_freeze_count() >= len(kept)
    assert gc.isenabled()


@pytest.mark.usefixtures("restored_gc")
def test_zero_keeps_pythons_defaults() -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    tune_garbage_collector(0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
